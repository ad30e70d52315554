// Package receive is the logic behind `pipeline receive`: a local webhook
// receiver that verifies signatures (Standard Webhooks, GitHub's
// X-Hub-Signature-256 or the older X-Hub-Signature, see [webhook.Scheme]) and
// prints one line per delivery, for trying pipelines out.
package receive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pipelinehq/pipeline/sdk/webhook"
)

// DefaultMaxBodyBytes is the largest body accepted when Options.MaxBodyBytes
// is zero.
const DefaultMaxBodyBytes = 10 << 20

// Options configures a Handler.
type Options struct {
	// Scheme is the signature scheme deliveries are checked against; the
	// zero Scheme means webhook.SchemeStandard. webhook.SchemeNone switches
	// verification off (Secret is then ignored). A Scheme that is not one of
	// webhook.Schemes() is a configuration error: every POST is answered 500
	// and printed as rejected, so nothing passes unverified by accident.
	Scheme webhook.Scheme
	// Secret is the key deliveries are verified with, as Scheme.ParseSecret
	// returns it from what the user typed: for standard the decoded
	// "whsec_…" key (the same as webhook.ParseSecret), for github and
	// hub-sha1 the bytes of the plain-string secret. The zero Secret switches
	// verification off: every POST is accepted with 200 and printed as
	// unverified ("?").
	Secret webhook.Secret
	// Tolerance is how far a delivery's timestamp may be from now;
	// zero means webhook.DefaultTolerance. Only the standard scheme has a
	// timestamp.
	Tolerance time.Duration
	// JSON makes the handler write each accepted delivery's body to Out as
	// one JSON line (compacted; a body that is not JSON is written as a JSON
	// string) instead of a summary line. Rejected deliveries are not written
	// to Out in this mode.
	JSON bool
	// Out receives the output; nil means os.Stdout.
	Out io.Writer
	// Log, in JSON mode, receives the summary line of every delivery,
	// rejected ones included, so that Out carries only data (the CLI passes
	// os.Stderr). Nil means none. Unused when JSON is false.
	Log io.Writer
	// MaxBodyBytes limits the body size; larger deliveries get 413.
	// Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Now is the clock for timestamps, both in verification and in printed
	// lines; nil means time.Now.
	Now func() time.Time
}

// Handler is an http.Handler that verifies and prints webhook deliveries. It
// accepts POST on any path and is safe for concurrent use.
type Handler struct {
	opts      Options
	verifier  webhook.Verifier // used when verify is set
	verify    bool
	badConfig error      // non-nil: every POST is answered 500 with it
	mu        sync.Mutex // serialises writes to opts.Out and opts.Log
	received  atomic.Int64
	verified  atomic.Int64
	rejected  atomic.Int64
}

// NewHandler returns a Handler for opts.
func NewHandler(opts Options) *Handler {
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{opts: opts}
	scheme, err := webhook.ParseScheme(string(opts.Scheme))
	switch {
	case err != nil:
		h.badConfig = err
	case scheme == webhook.SchemeNone || opts.Secret.IsZero():
		// verification off
	default:
		// Cannot fail: the scheme is known and the secret is not zero.
		h.verifier, h.badConfig = scheme.Verifier(opts.Secret)
		h.verify = h.badConfig == nil
	}
	h.opts.Scheme = scheme
	return h
}

// Stats returns how many POST deliveries arrived, how many passed
// verification and how many were rejected. With verification off, accepted
// deliveries count as received only. Requests with another method are not
// counted.
func (h *Handler) Stats() (received, verified, rejected int64) {
	return h.received.Load(), h.verified.Load(), h.rejected.Load()
}

// status marks in summary lines.
const (
	markVerified   = "✓"
	markRejected   = "✗"
	markUnverified = "?"
)

// ServeHTTP handles one delivery: 405 unless POST; 413 if the body is over
// the limit; 500 if Options.Scheme is unknown; 401 with a short reason if
// verification fails; else 200. Every POST is printed.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed: deliveries are POST", http.StatusMethodNotAllowed)
		return
	}
	h.received.Add(1)
	now := h.opts.Now()

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		code, reason := http.StatusBadRequest, "cannot read body"
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			code, reason = http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", mbe.Limit)
		}
		h.reject(w, r, now, body, code, reason)
		return
	}

	if h.badConfig != nil {
		h.reject(w, r, now, body, http.StatusInternalServerError, strings.TrimPrefix(h.badConfig.Error(), "webhook: "))
		return
	}
	mark := markUnverified
	if h.verify {
		err := h.verifier.Verify(r.Header, body,
			webhook.WithTolerance(h.opts.Tolerance), webhook.WithClock(h.opts.Now))
		if err != nil {
			h.reject(w, r, now, body, http.StatusUnauthorized, strings.TrimPrefix(err.Error(), "webhook: "))
			return
		}
		mark = markVerified
		h.verified.Add(1)
	}

	line := summary(now, mark, r, len(body), fields(body))
	if h.opts.JSON {
		h.write(jsonLine(body), line)
	} else {
		h.write(line, nil)
	}
	w.WriteHeader(http.StatusOK)
}

// reject counts, prints and answers a delivery that failed.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, now time.Time, body []byte, code int, reason string) {
	h.rejected.Add(1)
	line := summary(now, markRejected, r, len(body), strconv.Itoa(code)+" "+reason)
	if h.opts.JSON {
		h.write(nil, line)
	} else {
		h.write(line, nil)
	}
	http.Error(w, reason, code)
}

// write writes out to Out and logLine to Log (if set), as one critical
// section so that concurrent deliveries never interleave.
func (h *Handler) write(out, logLine []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(out) > 0 {
		_, _ = h.opts.Out.Write(out) // nowhere better to report a failing terminal
	}
	if len(logLine) > 0 && h.opts.Log != nil {
		_, _ = h.opts.Log.Write(logLine)
	}
}

// summary formats one delivery as
//
//	2025-11-14T09:22:47Z  ✓ msg_… POST /hook  412 B  event=… row_id=…
func summary(now time.Time, mark string, r *http.Request, size int, tail string) []byte {
	id := sanitize(r.Header.Get(webhook.HeaderID), 80)
	if id == "" {
		id = "-"
	}
	path := sanitize(r.URL.Path, 200)
	if path == "" {
		path = "/"
	}
	var b bytes.Buffer
	b.WriteString(now.UTC().Format(time.RFC3339))
	b.WriteString("  ")
	b.WriteString(mark)
	b.WriteByte(' ')
	b.WriteString(id)
	b.WriteByte(' ')
	b.WriteString(r.Method)
	b.WriteByte(' ')
	b.WriteString(path)
	b.WriteString("  ")
	b.WriteString(formatSize(size))
	if tail != "" {
		b.WriteString("  ")
		b.WriteString(tail)
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// summaryKeys are the body fields a summary line shows, in this order, when
// the body is a JSON object that has them.
var summaryKeys = []string{"event", "type", "row_id"}

// fields returns "event=… row_id=…" for a JSON object body, "items=N" for a
// JSON array, "" for anything else.
func fields(body []byte) string {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return ""
	}
	switch trimmed[0] {
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(body, &items) != nil {
			return ""
		}
		return "items=" + strconv.Itoa(len(items))
	case '{':
		var obj map[string]json.RawMessage
		if json.Unmarshal(body, &obj) != nil {
			return ""
		}
		var parts []string
		for _, k := range summaryKeys {
			if v, ok := scalar(obj[k]); ok {
				parts = append(parts, k+"="+v)
			}
		}
		return strings.Join(parts, " ")
	}
	return ""
}

// scalar renders a JSON string, number or boolean for a summary line.
func scalar(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 {
		return "", false
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return "", false
	}
	switch v := v.(type) {
	case string:
		return sanitize(v, 80), true
	case float64, bool:
		return string(raw), true
	}
	return "", false
}

// sanitize makes text from the network safe and compact for a terminal:
// text that is not a plain token (spaces, quotes, control characters,
// invalid UTF-8) is Go-quoted, so escape sequences cannot reach the
// terminal, and long text is cut to max runes.
func sanitize(s string, max int) string {
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	plain := utf8.ValidString(s)
	for _, r := range s {
		if !plain {
			break
		}
		plain = unicode.IsPrint(r) && r != ' ' && r != '"' && r != '\\'
	}
	if plain {
		return s
	}
	return strconv.Quote(s)
}

func formatSize(n int) string {
	switch {
	case n < 1<<10:
		return strconv.Itoa(n) + " B"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	default:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
}

// jsonLine returns body as one line of JSON: compacted when it is JSON,
// otherwise encoded as a JSON string.
func jsonLine(body []byte) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, body); err != nil || b.Len() == 0 {
		b.Reset()
		s, _ := json.Marshal(string(body)) // a string always marshals
		b.Write(s)
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// ShutdownTimeout bounds how long Serve waits for in-flight requests after
// its context is cancelled.
const ShutdownTimeout = 5 * time.Second

// Serve listens on addr and serves h until ctx is cancelled, then shuts down
// gracefully and returns nil. ready, if not nil, is called with the bound
// address (useful with port 0) once connections are being accepted. Errors
// from listening or serving are returned.
func Serve(ctx context.Context, addr string, h http.Handler, ready func(addr string)) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr().String())
	}

	select {
	case err := <-served:
		return err // Serve stopped by itself; never ErrServerClosed here
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-served
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("receive: shutting down: %w", err)
	}
	return nil
}
