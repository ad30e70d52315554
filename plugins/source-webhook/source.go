// Package sourcewebhook is the built-in `source "webhook"`: inbound
// webhooks from labelling and classification platforms (Labelbox, Label
// Studio, Standard Webhooks senders), verified over the exact body bytes,
// deduplicated by delivery id, durable in the engine's inbox before they
// are answered.
package sourcewebhook

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/push"
	"github.com/pipelinehq/pipeline/sdk/webhook"
)

// Version is the plugin's version.
const Version = "1.0.0"

// Defaults.
const (
	DefaultDedupeWindow = 72 * time.Hour
	DefaultTolerance    = 5 * time.Minute
	// MetadataField is the field each record gets with the delivery's
	// metadata (id, event, received_at).
	MetadataField = "webhook"
)

// Source is the webhook source.
type Source struct {
	cfg      config
	verifier webhook.Verifier
	server   *push.Server
	// noIDWarned is when a delivery without its id_header was last logged
	// (unix nanoseconds).
	noIDWarned atomic.Int64
}

type config struct {
	push.ListenConfig
	Signature      string            `json:"signature"`
	Secret         string            `json:"secret"`
	Secrets        []string          `json:"secrets"`
	Tolerance      string            `json:"tolerance"`
	IDHeader       string            `json:"id_header"`
	EventHeader    string            `json:"event_header"`
	RequireHeaders map[string]string `json:"require_headers"`
	DedupeWindow   string            `json:"dedupe_window"`

	tolerance, dedupeWindow time.Duration
}

// Info describes the plugin.
func (s *Source) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSource,
		Type:        "webhook",
		Version:     Version,
		Description: "Inbound webhooks, one record per delivery: signature verified over the exact body, deduplicated by delivery id, durable before they are answered.",
		Push:        true,
		Config: append(push.ListenAttributes("/webhook"),
			sdk.Attribute{Name: "signature", Type: sdk.String, Default: "standard", Description: `"standard" (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature), "github" (X-Hub-Signature-256: sha256=<hex>), "hub-sha1" (X-Hub-Signature: sha1=<hex>, as Labelbox signs) or "none".`},
			sdk.Attribute{Name: "secret", Type: sdk.String, Description: "The shared secret: whsec_<base64> for standard, the string itself for github and hub-sha1."},
			sdk.Attribute{Name: "secrets", Type: sdk.ListOf(sdk.String), Description: "Several secrets during a rotation: a delivery signed with any of them is accepted."},
			sdk.Attribute{Name: "tolerance", Type: sdk.Duration, Default: "5m", Description: "standard: how far webhook-timestamp may be from now (replay protection)."},
			sdk.Attribute{Name: "id_header", Type: sdk.String, Description: "The header holding the delivery's id, the dedupe key (default: webhook-id for standard, X-GitHub-Delivery for github; none for the others). A delivery without it is accepted without dedupe, with a warning in the log."},
			sdk.Attribute{Name: "event_header", Type: sdk.String, Description: "The header naming the event (default: webhook-event-type for standard, X-GitHub-Event for github)."},
			sdk.Attribute{Name: "require_headers", Type: sdk.MapOf(sdk.String), Description: "Headers every delivery must carry with exactly these values (compared in constant time), e.g. a shared token for senders that do not sign (Label Studio)."},
			sdk.Attribute{Name: "dedupe_window", Type: sdk.Duration, Default: "72h", Description: "A delivery whose id was accepted this recently is answered 200 and not stored again."},
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
	scheme, err := webhook.ParseScheme(s.cfg.Signature)
	if err != nil {
		return fmt.Errorf("signature: %v", err)
	}
	secrets := s.cfg.Secrets
	if s.cfg.Secret != "" {
		if len(secrets) > 0 {
			return fmt.Errorf("secret and secrets: give one secret, or several in secrets during a rotation, not both")
		}
		secrets = []string{s.cfg.Secret}
	}
	if scheme != webhook.SchemeNone && len(secrets) == 0 {
		return fmt.Errorf("secret: signature %q needs the shared secret (or secrets); use signature = \"none\" with require_headers for senders that do not sign", scheme)
	}
	if s.verifier, err = webhook.NewVerifier(scheme, secrets...); err != nil {
		return fmt.Errorf("secret: %v", err)
	}
	if scheme == webhook.SchemeNone && len(s.cfg.RequireHeaders) == 0 {
		cfg.Warn("signature: \"none\" without require_headers accepts a delivery from anyone who can reach %s; set require_headers to a shared header value, or use a signature", s.cfg.Listen)
	}
	if s.cfg.IDHeader == "" {
		switch scheme {
		case webhook.SchemeStandard:
			s.cfg.IDHeader = "webhook-id"
		case webhook.SchemeGitHub:
			s.cfg.IDHeader = "X-GitHub-Delivery"
		}
	}
	if s.cfg.EventHeader == "" {
		switch scheme {
		case webhook.SchemeStandard:
			s.cfg.EventHeader = "webhook-event-type"
		case webhook.SchemeGitHub:
			s.cfg.EventHeader = "X-GitHub-Event"
		}
	}
	if s.cfg.tolerance, err = duration("tolerance", s.cfg.Tolerance, DefaultTolerance); err != nil {
		return err
	}
	if s.cfg.dedupeWindow, err = duration("dedupe_window", s.cfg.DedupeWindow, DefaultDedupeWindow); err != nil {
		return err
	}
	opts.CheckHeader = s.checkHeader
	s.server = push.New(opts, cfg.Inbox, s.accept)
	return nil
}

func duration(name, text string, def time.Duration) (time.Duration, error) {
	if text == "" {
		return def, nil
	}
	d, err := time.ParseDuration(text)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q is not a duration such as \"5m\"", name, text)
	}
	return d, nil
}

// checkHeader checks the required headers, in constant time, before the
// body is read: a delivery without them is 401 whatever it sent.
func (s *Source) checkHeader(h http.Header) error {
	names := make([]string, 0, len(s.cfg.RequireHeaders))
	for name := range s.cfg.RequireHeaders {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if subtle.ConstantTimeCompare([]byte(h.Get(name)), []byte(s.cfg.RequireHeaders[name])) != 1 {
			return push.Errorf(http.StatusUnauthorized, "missing or wrong %s header", name)
		}
	}
	return nil
}

// accept verifies a delivery and makes it one record.
func (s *Source) accept(r *push.Request) (*push.Accepted, error) {
	// The required headers (again: accept is also called on its own), then
	// the signature over the body exactly as it was sent, then what the
	// body is: an unauthenticated sender learns nothing but 401.
	if err := s.checkHeader(r.Header); err != nil {
		return nil, err
	}
	if err := s.verifier.Verify(r.Header, r.Raw, webhook.WithTolerance(s.cfg.tolerance), webhook.WithClock(func() time.Time { return r.Received })); err != nil {
		return nil, push.Errorf(http.StatusUnauthorized, "signature: %v", err)
	}
	if ct := r.Header.Get("Content-Type"); !push.IsJSON(ct) {
		return nil, push.Errorf(http.StatusUnsupportedMediaType, "Content-Type %q is not supported: a webhook's body is one JSON object (application/json, or a +json type)", ct)
	}
	id := ""
	if s.cfg.IDHeader != "" {
		id = r.Header.Get(s.cfg.IDHeader)
		if id == "" {
			s.warnNoID()
		}
	}
	event := ""
	if s.cfg.EventHeader != "" {
		event = r.Header.Get(s.cfg.EventHeader)
	}
	rec, err := Record(r.Body, id, event, r.Received)
	if err != nil {
		return nil, err
	}
	acc := &push.Accepted{Records: [][]byte{rec}, DuplicateStatus: http.StatusOK}
	if id != "" {
		acc.Key, acc.KeyWindow = "delivery:"+id, s.cfg.dedupeWindow
	}
	return acc, nil
}

// warnNoID logs, at most once a minute, that a delivery came without its
// id_header. It is accepted all the same, without dedupe: refusing it
// would lose a verified delivery (a sender that never sends the header
// retries until it gives up), while a redelivery stored twice is at worst
// a duplicate, as at-least-once allows; the log says why one appears.
func (s *Source) warnNoID() {
	now, last := time.Now().UnixNano(), s.noIDWarned.Load()
	if now-last < int64(time.Minute) || !s.noIDWarned.CompareAndSwap(last, now) {
		return
	}
	sdk.Logger().Warn("a delivery came without its id header: it is accepted, but a redelivery of it will be stored again (no dedupe); check id_header", "header", s.cfg.IDHeader)
}

// Record makes a delivery's body one record: the body's fields, and the
// delivery's metadata in the field "webhook" (id, event, received_at;
// a body field of that name is replaced). The body must be a JSON object.
func Record(body []byte, id, event string, received time.Time) ([]byte, error) {
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] != '{' {
		return nil, push.Errorf(http.StatusBadRequest, "a webhook's body is one JSON object")
	}
	recs, err := push.ParseRecords(push.ContentJSON, body)
	if err != nil {
		return nil, err
	}
	if len(recs) != 1 || !bytes.HasPrefix(recs[0], []byte("{")) {
		return nil, push.Errorf(http.StatusBadRequest, "a webhook's body is one JSON object")
	}
	meta := map[string]string{"received_at": received.UTC().Format(time.RFC3339Nano)}
	if id != "" {
		meta["id"] = id
	}
	if event != "" {
		meta["event"] = event
	}
	metaJSON, _ := json.Marshal(meta)
	obj := recs[0]
	if bytes.Contains(obj, []byte(`"`+MetadataField+`"`)) {
		// The body may have a field of that name: rebuild the object.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(obj, &m); err != nil {
			return nil, push.Errorf(http.StatusBadRequest, "invalid JSON: %v", err)
		}
		m[MetadataField] = metaJSON
		out, _ := json.Marshal(m)
		return checked(out)
	}
	var out []byte
	if strings.TrimSpace(string(obj)) == "{}" {
		out = append(append([]byte(`{"`+MetadataField+`":`), metaJSON...), '}')
	} else {
		out = append(append(append(obj[:len(obj)-1:len(obj)-1], `,"`+MetadataField+`":`...), metaJSON...), '}')
	}
	return checked(out)
}

// checked runs a record through the decoder the source reads it with.
func checked(rec []byte) ([]byte, error) {
	recs, err := push.ParseRecords(push.ContentJSON, rec)
	if err != nil {
		return nil, err
	}
	return recs[0], nil
}

// Read serves deliveries until ctx ends, emitting what is accepted.
func (s *Source) Read(ctx context.Context, from []byte, emit sdk.Emitter) error {
	return s.server.Read(ctx, from, emit)
}
