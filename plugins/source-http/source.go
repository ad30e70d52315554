// Package sourcehttp is the built-in `source "http"`: a push API. Clients
// POST records (a JSON object, an array of objects, or JSON lines, gzip or
// not); they are answered 202 only once the records are durable in the
// engine's state store, with the ids the sinks will see.
package sourcehttp

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/push"
)

// Version is the plugin's version.
const Version = "1.0.0"

// IdempotencyWindow is how long an Idempotency-Key dedupes.
const IdempotencyWindow = 24 * time.Hour

// Source is the http push source.
type Source struct {
	cfg    config
	server *push.Server
}

type config struct {
	push.ListenConfig
	Token string `json:"token"`
}

// Info describes the plugin.
func (s *Source) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSource,
		Type:        "http",
		Version:     Version,
		Description: "A push API: POST a JSON object, an array of objects or JSON lines; 202 once durable, with the records' ids.",
		Push:        true,
		Config: append(push.ListenAttributes("/v1/records"),
			sdk.Attribute{Name: "token", Type: sdk.String, Description: "When set, requests need Authorization: Bearer <token> (401 otherwise)."},
		),
	}
}

// Configure checks the block.
func (s *Source) Configure(ctx context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	opts, err := s.cfg.Options(cfg.Name)
	if err != nil {
		return err
	}
	opts.CheckHeader = s.checkHeader
	s.server = push.New(opts, cfg.Inbox, s.accept)
	return nil
}

// checkHeader checks the token, then the content type, before anything of
// the body is read or decompressed: a client without the token gets 401
// whatever it sent.
func (s *Source) checkHeader(h http.Header) error {
	if s.cfg.Token != "" {
		got, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) != 1 {
			return push.Errorf(http.StatusUnauthorized, "missing or wrong token: send Authorization: Bearer <token>")
		}
	}
	return push.CheckContentType(h.Get("Content-Type"))
}

// accept splits the body into records (the token is checked already).
func (s *Source) accept(r *push.Request) (*push.Accepted, error) {
	recs, err := push.ParseRecords(r.Header.Get("Content-Type"), r.Body)
	if err != nil {
		return nil, err
	}
	acc := &push.Accepted{Records: recs}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		acc.Key, acc.KeyWindow = "idempotency:"+key, IdempotencyWindow
	}
	return acc, nil
}

// Read serves the push API until ctx ends, emitting what is accepted.
func (s *Source) Read(ctx context.Context, from []byte, emit sdk.Emitter) error {
	return s.server.Read(ctx, from, emit)
}
