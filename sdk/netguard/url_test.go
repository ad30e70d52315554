package netguard

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckURL(t *testing.T) {
	var (
		none    = Options{}
		https   = Options{HTTPSOnly: true}
		private = Options{AllowPrivate: true}
	)
	tests := []struct {
		name   string
		opts   Options
		url    string
		want   error  // nil, ErrInvalidURL or ErrBlocked
		reason string // for ErrBlocked: prefix of BlockedError.Reason
	}{
		{"public https", none, "https://hooks.example.com/services/T0/B0/s3cret", nil, ""},
		{"public http", none, "http://example.com:8080/hook?token=s3cret", nil, ""},
		{"scheme case folded", none, "HTTPS://Example.COM/hook", nil, ""},
		{"public literal IPv4", none, "https://8.8.8.8/hook", nil, ""},
		{"public literal IPv6", none, "https://[2001:4860::8888]:8443/hook", nil, ""},
		{"https with HTTPSOnly", https, "https://example.com/hook", nil, ""},

		{"ftp scheme", none, "ftp://example.com/file", ErrInvalidURL, ""},
		{"javascript scheme", none, "javascript:alert(1)", ErrInvalidURL, ""},
		{"no scheme", none, "example.com/hook", ErrInvalidURL, ""},
		{"missing host", none, "http:///hook", ErrInvalidURL, ""},
		{"empty authority", none, "https://", ErrInvalidURL, ""},
		{"opaque", none, "http:example.com", ErrInvalidURL, ""},
		{"only a port", none, "http://:8080/hook", ErrInvalidURL, ""},
		{"http with HTTPSOnly", https, "http://example.com/hook", ErrInvalidURL, ""},
		{"http with HTTPSOnly and AllowPrivate", Options{HTTPSOnly: true, AllowPrivate: true}, "http://127.0.0.1/", ErrInvalidURL, ""},
		{"port zero", none, "https://example.com:0/", ErrInvalidURL, ""},
		{"port too large", none, "https://example.com:70000/", ErrInvalidURL, ""},
		{"unparseable", none, "http://exa mple.com/s3cret", ErrInvalidURL, ""},
		{"bad escape", none, "http://example.com/%zz?token=s3cret", ErrInvalidURL, ""},

		{"literal RFC 1918", none, "http://10.0.0.5/hook", ErrBlocked, "private network (RFC 1918)"},
		{"literal 192.168", none, "https://192.168.1.10:8443/hook", ErrBlocked, "private network (RFC 1918)"},
		{"literal loopback", none, "http://127.0.0.1:8080/", ErrBlocked, "loopback"},
		{"literal IPv6 loopback", none, "http://[::1]:8080/", ErrBlocked, "loopback"},
		{"metadata", none, "http://169.254.169.254/latest/meta-data/", ErrBlocked, "cloud metadata endpoint"},
		{"mapped metadata", none, "http://[::ffff:169.254.169.254]/", ErrBlocked, "cloud metadata endpoint"},
		{"link-local with zone", none, "http://[fe80::1%25eth0]/", ErrBlocked, "link-local"},
		{"CGNAT", none, "http://100.64.1.1/", ErrBlocked, "carrier-grade NAT"},
		{"unspecified", none, "http://0.0.0.0:8080/", ErrBlocked, "unspecified address"},
		{"localhost", none, "http://localhost:8080/hook", ErrBlocked, "loopback"},
		{"localhost with trailing dot and case", none, "http://LocalHost.:8080/", ErrBlocked, "loopback"},
		{"name under .localhost", none, "http://api.localhost/", ErrBlocked, "loopback"},

		// IPv4 shorthands are ambiguous; refused even with AllowPrivate.
		{"short IPv4", none, "http://127.1/", ErrInvalidURL, ""},
		{"decimal IPv4", none, "http://2130706433/", ErrInvalidURL, ""},
		{"hex IPv4", private, "http://0x7f000001/", ErrInvalidURL, ""},
		{"hex dotted IPv4", private, "http://0x7f.0.0.1/", ErrInvalidURL, ""},
		{"octal-looking", none, "http://0177.0.0.1/", ErrInvalidURL, ""},
		{"numeric TLD", none, "http://example.123/", ErrInvalidURL, ""},
		{"digits inside a name are fine", none, "https://1password.example/", nil, ""},

		{"AllowPrivate lets loopback through", private, "http://127.0.0.1:8080/", nil, ""},
		{"AllowPrivate lets localhost through", private, "http://localhost:8080/", nil, ""},
		{"AllowPrivate lets RFC 1918 through", private, "http://10.0.0.5/hook", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.CheckURL(tt.url)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckURL(%q) = %v, want nil", tt.url, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("CheckURL(%q) = %v, want %v", tt.url, err, tt.want)
			}
			other := ErrBlocked
			if tt.want == ErrBlocked {
				other = ErrInvalidURL
			}
			if errors.Is(err, other) {
				t.Errorf("error %v is also %v", err, other)
			}
			if tt.reason != "" {
				var be *BlockedError
				if !errors.As(err, &be) {
					t.Fatalf("error %T is not a *BlockedError", err)
				}
				if !strings.HasPrefix(be.Reason, tt.reason) {
					t.Errorf("Reason = %q, want prefix %q", be.Reason, tt.reason)
				}
				if !strings.Contains(err.Error(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1") {
					t.Errorf("error %q does not say how to opt in", err)
				}
			}
			// The URL's path and query may be secret: never echoed.
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "/hook") {
				t.Errorf("error %q repeats the URL", err)
			}
		})
	}
}
