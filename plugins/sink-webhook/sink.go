// Package sinkwebhook is the built-in `sink "webhook"`: one signed POST per
// record (Standard Webhooks), retried with backoff on transient failures.
package sinkwebhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/webhook"
)

// Version is the plugin's version.
const Version = "0.1.0"

var _ sdk.Sink = (*Sink)(nil)

// Sink posts records to an HTTP endpoint.
type Sink struct {
	cfg struct {
		URL         string            `json:"url"`
		Secret      string            `json:"secret"`
		Headers     map[string]string `json:"headers"`
		Timeout     string            `json:"timeout"`
		MaxAttempts int               `json:"max_attempts"`
		Concurrency int               `json:"concurrency"`
	}
	name    string
	secret  webhook.Secret
	timeout time.Duration
	client  *http.Client
	tpl     sdk.Config
	// sleep waits between attempts; tests shorten it.
	backoff func(attempt int) time.Duration
	now     func() time.Time
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "webhook",
		Version:     Version,
		Description: "POSTs each record as a JSON body, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).",
		Config: []sdk.Attribute{
			{Name: "url", Type: sdk.String, Required: true, Template: true, Description: "Endpoint URL; may hold {{ }} placeholders."},
			{Name: "secret", Type: sdk.String, Description: "Signing secret, whsec_<base64>. Without it, requests are not signed."},
			{Name: "headers", Type: sdk.MapOf(sdk.String), Template: true, Description: "Extra request headers."},
			{Name: "timeout", Type: sdk.String, Default: "10s", Description: "Per-request timeout."},
			{Name: "max_attempts", Type: sdk.Number, Default: 5, Description: "Attempts per record before the run fails."},
			{Name: "concurrency", Type: sdk.Number, Default: 16, Description: "Requests in flight at once."},
		},
	}
}

// Configure checks the block.
func (s *Sink) Configure(_ context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	s.name = cfg.Name
	s.tpl = cfg
	if !cfg.HasTemplate("url") {
		u, err := url.Parse(s.cfg.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("url %q is not an http(s) URL", s.cfg.URL)
		}
	}
	if s.cfg.Secret != "" {
		sec, err := webhook.ParseSecret(s.cfg.Secret)
		if err != nil {
			return fmt.Errorf("secret: %w", err)
		}
		s.secret = sec
	}
	d, err := time.ParseDuration(s.cfg.Timeout)
	if err != nil || d <= 0 {
		return fmt.Errorf("timeout %q is not a duration such as \"10s\"", s.cfg.Timeout)
	}
	s.timeout = d
	if s.cfg.MaxAttempts < 1 {
		return fmt.Errorf("max_attempts must be at least 1")
	}
	if s.cfg.Concurrency < 1 {
		return fmt.Errorf("concurrency must be at least 1")
	}
	s.client = &http.Client{
		Timeout: s.timeout,
		// A redirect is a failure, not something to follow with the body.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: s.cfg.Concurrency,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	if s.backoff == nil {
		s.backoff = defaultBackoff
	}
	if s.now == nil {
		s.now = time.Now
	}
	return nil
}

// defaultBackoff is exponential with full jitter: up to 0.5 s, 1 s, 2 s, ...
// capped at 30 s.
func defaultBackoff(attempt int) time.Duration {
	max := 500 * time.Millisecond << (attempt - 1)
	if max > 30*time.Second || max <= 0 {
		max = 30 * time.Second
	}
	return time.Duration(rand.Int64N(int64(max))) + 50*time.Millisecond
}

// Write posts every record of the batch and returns once all were accepted.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	enc := arrowjson.NewEncoder()
	bodies := make([][]byte, b.Len())
	for i := range bodies {
		bodies[i] = enc.AppendRow(nil, b.Record, i)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, s.cfg.Concurrency)
	for i := range bodies {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.deliver(ctx, b, i, bodies[i]); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
					cancel()
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// deliver sends one record until it is accepted, attempts run out, or the
// endpoint refuses it for good.
func (s *Sink) deliver(ctx context.Context, b sdk.Batch, i int, body []byte) error {
	target := s.cfg.URL
	if u, ok := b.Template("url", i); ok {
		target = u
	}
	id := b.ID(i)
	var lastErr error
	for attempt := 1; attempt <= s.cfg.MaxAttempts; attempt++ {
		wait, err := s.attempt(ctx, target, id, b, i, body)
		if err == nil {
			return nil
		}
		lastErr = err
		var perm *permanentError
		if errors.As(err, &perm) || ctx.Err() != nil {
			break
		}
		if attempt == s.cfg.MaxAttempts {
			break
		}
		if wait == 0 {
			wait = s.backoff(attempt)
		}
		sdk.Logger().Warn("delivery failed; retrying", "record", id, "attempt", attempt, "in", wait.String(), "error", err.Error())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("record %s: %w", id, lastErr)
}

type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

// attempt makes one request. It returns how long the endpoint asked to wait
// (Retry-After) and a *permanentError for answers that retrying won't fix.
func (s *Sink) attempt(ctx context.Context, target, id string, b sdk.Batch, i int, body []byte) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, &permanentError{msg: fmt.Sprintf("bad url %q: %v", target, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pipeline-webhook/"+Version)
	for k, v := range s.cfg.Headers {
		if rendered, ok := b.Template("headers."+k, i); ok {
			v = rendered
		}
		req.Header.Set(k, v)
	}
	if !s.secret.IsZero() {
		webhook.SetHeaders(req.Header, s.secret, id, s.now(), body)
	} else {
		req.Header.Set("webhook-id", id)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, fmt.Errorf("POST %s: timed out after %s", redact(target), s.timeout)
		}
		return 0, fmt.Errorf("POST %s: %w", redact(target), errors.Unwrap(err))
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return 0, nil
	case code == http.StatusTooManyRequests || code >= 500:
		return retryAfter(resp.Header.Get("Retry-After"), s.now()), fmt.Errorf("POST %s: %s: %s", redact(target), resp.Status, bytes.TrimSpace(snippet))
	default:
		return 0, &permanentError{msg: fmt.Sprintf("POST %s: %s: %s", redact(target), resp.Status, bytes.TrimSpace(snippet))}
	}
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redact drops credentials and the query from a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid url>"
	}
	u.User = nil
	u.RawQuery = ""
	return u.String()
}
