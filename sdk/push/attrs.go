package push

import (
	"fmt"
	"net"
	"strings"

	"github.com/pipelinehq/pipeline/sdk"
)

// ListenAttributes are the attributes every push source takes: listen,
// path (defaultPath unless set), tls { cert_file key_file }, max_body and
// max_pending.
func ListenAttributes(defaultPath string) []sdk.Attribute {
	return []sdk.Attribute{
		{Name: "listen", Type: sdk.String, Required: true, Description: `Address to listen on, e.g. "127.0.0.1:8080" (":8080" for every interface).`},
		{Name: "path", Type: sdk.String, Default: defaultPath, Description: "The path records are POSTed to; GET /healthz answers too."},
		{Name: "tls", Description: "Serve HTTPS: { cert_file = \"…\"  key_file = \"…\" }.", Nested: []sdk.Attribute{
			{Name: "cert_file", Type: sdk.String, Required: true},
			{Name: "key_file", Type: sdk.String, Required: true},
		}},
		{Name: "max_body", Type: sdk.Number, Default: DefaultMaxBody, Description: "The largest body accepted, in bytes, after decompression (413 above it)."},
		{Name: "max_pending", Type: sdk.Number, Default: DefaultMaxPending, Description: "Accepted records not yet acked by every sink above which requests get 429 with Retry-After."},
	}
}

// ListenConfig decodes what ListenAttributes declare; embed it in a push
// source's config struct.
type ListenConfig struct {
	Listen string `json:"listen"`
	Path   string `json:"path"`
	TLS    *struct {
		CertFile string `json:"cert_file"`
		KeyFile  string `json:"key_file"`
	} `json:"tls"`
	MaxBody    int64 `json:"max_body"`
	MaxPending int64 `json:"max_pending"`
}

// Options checks the listen address and path and makes the server's
// options for the block named source.
func (c ListenConfig) Options(source string) (Options, error) {
	if err := CheckListen(c.Listen, c.Path); err != nil {
		return Options{}, err
	}
	opts := Options{Listen: c.Listen, Path: c.Path, MaxBody: c.MaxBody, MaxPending: c.MaxPending, Source: source}
	if c.TLS != nil {
		opts.CertFile, opts.KeyFile = c.TLS.CertFile, c.TLS.KeyFile
	}
	return opts, nil
}

// CheckListen checks a push source's listen address and path.
func CheckListen(listen, path string) error {
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return fmt.Errorf("listen: %q is not host:port: %v", listen, err)
	}
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("path: %q must start with /", path)
	}
	if path == "/healthz" {
		return fmt.Errorf("path: /healthz is the health check; records go elsewhere")
	}
	return nil
}
