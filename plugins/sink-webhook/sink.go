// Package sinkwebhook is the built-in `sink "webhook"`: one signed POST per
// record. Deliveries go through the engine's outbox (sdk/delivery): they are
// stored before the batch is acked and retried on a schedule, across
// restarts, until delivered or dead.
package sinkwebhook

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
	"github.com/pipelinehq/pipeline/sdk/netguard"
	"github.com/pipelinehq/pipeline/sdk/webhook"
)

// Version is the plugin's version.
const Version = "0.2.0"

// EventHeader carries the event type when `event` is set.
const EventHeader = "webhook-event-type"

// A response with DeliveryHeader set to AbortMessage (Svix's convention)
// sends its delivery to the dead letter at once, whatever its status.
const (
	DeliveryHeader = "webhook-delivery"
	AbortMessage   = "abort-message"
)

var (
	_ sdk.Sink           = (*Sink)(nil)
	_ sdk.SinkCloser     = (*Sink)(nil)
	_ delivery.Transport = (*Sink)(nil)
)

type config struct {
	URL          string                    `json:"url"`
	Secret       string                    `json:"secret"`
	Secrets      []string                  `json:"secrets"`
	Signature    string                    `json:"signature"`
	Event        string                    `json:"event"`
	Headers      map[string]string         `json:"headers"`
	Timeout      string                    `json:"timeout"`
	Concurrency  int                       `json:"concurrency"`
	RateLimit    string                    `json:"rate_limit"`
	RateScope    string                    `json:"rate_limit_scope"`
	Retry        *policy.RetryConfig       `json:"retry"`
	AllowPrivate bool                      `json:"allow_private_networks"`
	HTTPSOnly    bool                      `json:"https_only"`
	Breaker      *policy.BreakerConfig     `json:"circuit_breaker"`
	Retention    *delivery.RetentionConfig `json:"retention"`
}

// Sink posts records to an HTTP endpoint.
type Sink struct {
	cfg     config
	name    string
	signer  webhook.Signer
	timeout time.Duration
	client  http.RoundTripper
	guard   netguard.Options
	tpl     sdk.Config
	noWait  bool
	d       *delivery.Deliverer
	// enc encodes bodies; Prepare is called for one batch at a time, so one
	// encoder (and its plan for the batch's schema) serves all its rows.
	enc *arrowjson.Encoder
	// lastRec and lastBody are the batch the encoder last saw and that
	// batch without its own event field (when `event` is set).
	lastRec, lastBody arrow.RecordBatch
	// now is the clock for signatures; tests replace it.
	now func() time.Time
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "webhook",
		Version:     Version,
		Description: "POSTs each record as a JSON body, signed (Standard Webhooks by default), from a durable outbox with retries.",
		Config: []sdk.Attribute{
			{Name: "url", Type: sdk.String, Required: true, Template: true, Description: "Endpoint URL; may hold {{ }} placeholders."},
			{Name: "secret", Type: sdk.String, Description: "Signing secret: whsec_<base64> for standard, the shared string for github and hub-sha1."},
			{Name: "secrets", Type: sdk.ListOf(sdk.String), Description: "Several secrets during a rotation, newest first; each signs (standard) or the first signs (github, hub-sha1)."},
			{Name: "signature", Type: sdk.String, Default: "standard", Description: `"standard" (Standard Webhooks), "github" (X-Hub-Signature-256), "hub-sha1" (X-Hub-Signature) or "none".`},
			{Name: "event", Type: sdk.String, Description: "Event type, sent in the webhook-event-type header and as the body's event field."},
			{Name: "headers", Type: sdk.MapOf(sdk.String), Template: true, Description: "Extra request headers; values may hold {{ }} placeholders."},
			{Name: "timeout", Type: sdk.Duration, Default: "10s", Description: "Per-request timeout."},
			{Name: "concurrency", Type: sdk.Number, Default: 16, Description: "Requests in flight at once per endpoint."},
			{Name: "rate_limit", Type: sdk.String, Description: `Most requests per endpoint, e.g. "50/s" or "600/m".`},
			delivery.ScopeAttribute(),
			{Name: "order_by", Type: sdk.String, Expression: true, Description: "An expression (e.g. metadata.customer_id): records with the same value are delivered one at a time, in source order."},
			delivery.RetryAttribute(),
			delivery.BreakerAttribute("an endpoint"),
			delivery.RetentionAttribute(),
			{Name: "allow_private_networks", Type: sdk.Bool, Default: false, Description: "Allow loopback, private and link-local addresses (off by default: SSRF guard). PIPELINE_ALLOW_PRIVATE_NETWORKS=1 does the same."},
			{Name: "https_only", Type: sdk.Bool, Default: false, Description: "Refuse plain http URLs."},
		},
	}
}

// Configure checks the block.
func (s *Sink) Configure(_ context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	s.name, s.tpl, s.noWait = cfg.Name, cfg, cfg.NoWait
	s.guard = netguard.Options{AllowPrivate: s.cfg.AllowPrivate, HTTPSOnly: s.cfg.HTTPSOnly}.WithEnv()
	if !cfg.HasTemplate("url") {
		if err := s.guard.CheckURL(s.cfg.URL); err != nil {
			return fmt.Errorf("url: %w", err)
		}
	}
	scheme, err := webhook.ParseScheme(s.cfg.Signature)
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	secrets := s.cfg.Secrets
	if s.cfg.Secret != "" {
		secrets = append([]string{s.cfg.Secret}, secrets...)
	}
	if scheme == webhook.SchemeNone && len(secrets) > 0 {
		return errors.New(`secret: signature = "none" takes no secret`)
	}
	if scheme != webhook.SchemeNone && len(secrets) == 0 {
		return fmt.Errorf(`secret: signature = %q needs a secret (or set signature = "none")`, scheme)
	}
	if s.signer, err = webhook.NewSigner(scheme, secrets...); err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	d, err := time.ParseDuration(s.cfg.Timeout)
	if err != nil || d <= 0 {
		return fmt.Errorf("timeout %q is not a duration such as \"10s\"", s.cfg.Timeout)
	}
	s.timeout = d
	if s.cfg.Concurrency < 1 {
		return errors.New("concurrency must be at least 1")
	}
	opts := delivery.Options{Concurrency: s.cfg.Concurrency, Log: sdk.Logger().With("sink", s.name)}
	if opts.Retry, opts.Breaker, err = delivery.Policies(s.cfg.Retry, s.cfg.Breaker); err != nil {
		return err
	}
	if opts.Retention, err = delivery.ParseRetention(s.cfg.Retention); err != nil {
		return err
	}
	if err := delivery.CheckScope(s.cfg.RateScope); err != nil {
		return err
	}
	if s.cfg.RateLimit != "" {
		rate, err := policy.ParseRate(s.cfg.RateLimit)
		if err != nil {
			return fmt.Errorf("rate_limit: %w", err)
		}
		local := policy.NewLimiter(rate, 1)
		opts.Limiter = local
		if s.cfg.RateScope == delivery.ScopeCluster {
			opts.Limiter = delivery.SharedLimiter(cfg.Outbox, local, rate, 1, opts.Log)
		}
	}
	transport := s.guard.Transport()
	transport.MaxIdleConnsPerHost = s.cfg.Concurrency
	// The transport, not an http.Client: a redirect is a failure, not
	// something to follow with the body, and the per-request timeout is the
	// request's context.
	s.client = transport
	if s.now == nil {
		s.now = time.Now
	}
	s.d = delivery.New(s, cfg.Outbox, opts)
	return nil
}

// payload is what the outbox keeps for one delivery: everything needed to
// send it again, byte for byte, from a later run or a replay.
type payload struct {
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"` // the rendered template headers
	Body    []byte            `json:"body"`
}

// payloadV1 starts an encoded payload: the URL, the header pairs (each
// length-prefixed with a uvarint, sorted by name) and the body's raw bytes
// to the end. Outboxes written before it hold JSON, which starts with '{'.
const payloadV1 = 1

func (p payload) encode() []byte {
	n := 1 + binary.MaxVarintLen64*(2+2*len(p.Headers)) + len(p.URL) + len(p.Body)
	for k, v := range p.Headers {
		n += len(k) + len(v)
	}
	out := make([]byte, 0, n)
	out = append(out, payloadV1)
	str := func(s string) { out = append(binary.AppendUvarint(out, uint64(len(s))), s...) }
	str(p.URL)
	out = binary.AppendUvarint(out, uint64(len(p.Headers)))
	keys := make([]string, 0, len(p.Headers))
	for k := range p.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		str(k)
		str(p.Headers[k])
	}
	return append(out, p.Body...)
}

func decodePayload(data []byte) (payload, error) {
	var p payload
	if len(data) > 0 && data[0] == '{' {
		err := json.Unmarshal(data, &p)
		return p, err
	}
	if len(data) == 0 || data[0] != payloadV1 {
		return p, errors.New("unknown payload encoding")
	}
	rest := data[1:]
	str := func() (string, error) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return "", errors.New("truncated payload")
		}
		s := string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
		return s, nil
	}
	var err error
	if p.URL, err = str(); err != nil {
		return p, err
	}
	nh, k := binary.Uvarint(rest)
	if k <= 0 || nh > uint64(len(rest)) {
		return p, errors.New("truncated payload")
	}
	rest = rest[k:]
	for i := uint64(0); i < nh; i++ {
		key, err := str()
		if err != nil {
			return p, err
		}
		v, err := str()
		if err != nil {
			return p, err
		}
		if p.Headers == nil {
			p.Headers = map[string]string{}
		}
		p.Headers[key] = v
	}
	p.Body = rest
	return p, nil
}

// Write stores the batch's deliveries in the outbox; the batch is acked
// once they are durable there.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	return s.d.Enqueue(ctx, b)
}

// Close waits until every delivery has succeeded or is dead, unless the run
// asked not to wait.
func (s *Sink) Close(ctx context.Context) error { return s.d.Close(ctx, !s.noWait) }

// Prepare implements delivery.Transport: the record's body, rendered URL
// and headers.
func (s *Sink) Prepare(b sdk.Batch, i int) (sdk.Delivery, error) {
	p := payload{URL: s.cfg.URL}
	if u, ok := b.Template("url", i); ok {
		// A rendered URL that is not allowed (a private address, http with
		// https_only) fails its first attempt for good: dead letter, not a
		// failed run.
		p.URL = u
	}
	for k := range s.cfg.Headers {
		if v, ok := b.Template("headers."+k, i); ok {
			if p.Headers == nil {
				p.Headers = map[string]string{}
			}
			p.Headers[k] = v
		}
	}
	p.Body = s.body(b.Record, i)
	data := p.encode()
	endpoint := p.URL
	if u, err := url.Parse(p.URL); err == nil {
		endpoint = u.Scheme + "://" + u.Host
	}
	d := sdk.Delivery{ID: b.ID(i), Endpoint: endpoint, Payload: data}
	if key, ok := b.Template("order_by", i); ok {
		d.OrderKey = key // empty (the field is null): not ordered
	}
	return d, nil
}

// body encodes record i; with `event` set, the body's event field is that
// event, first.
func (s *Sink) body(rec arrow.RecordBatch, i int) []byte {
	if s.enc == nil {
		s.enc = arrowjson.NewEncoder()
	}
	if s.cfg.Event == "" {
		return s.enc.AppendRow(nil, rec, i)
	}
	if rec != s.lastRec {
		if s.lastBody != nil && s.lastBody != s.lastRec {
			s.lastBody.Release()
		}
		s.lastRec, s.lastBody = rec, rec
		if idx := rec.Schema().FieldIndices("event"); len(idx) > 0 {
			s.lastBody = without(rec, idx[0])
		}
	}
	obj := s.enc.AppendRow(nil, s.lastBody, i)
	out := append([]byte(`{"event":`), arrowjson.AppendString(nil, s.cfg.Event)...)
	if len(obj) > 2 {
		out = append(out, ',')
	}
	return append(out, obj[1:]...)
}

func without(rec arrow.RecordBatch, col int) arrow.RecordBatch {
	fields := append(append([]arrow.Field(nil), rec.Schema().Fields()[:col]...), rec.Schema().Fields()[col+1:]...)
	cols := append(append([]arrow.Array(nil), rec.Columns()[:col]...), rec.Columns()[col+1:]...)
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows())
}

// Send implements delivery.Transport: one signed POST.
func (s *Sink) Send(ctx context.Context, d sdk.Delivery) delivery.Result {
	p, err := decodePayload(d.Payload)
	if err != nil {
		return delivery.Result{Err: policy.Permanent(fmt.Errorf("unreadable outbox entry: %w", err))}
	}
	if err := s.guard.CheckURL(p.URL); err != nil {
		return delivery.Result{Err: policy.Permanent(fmt.Errorf("url: %w", err))}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL, bytes.NewReader(p.Body))
	if err != nil {
		return delivery.Result{Err: policy.Permanent(fmt.Errorf("bad url: %w", err))}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pipeline-webhook/"+Version)
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	if s.cfg.Event != "" {
		req.Header.Set(EventHeader, s.cfg.Event)
	}
	req.Header.Set("webhook-id", d.ID)
	// Signed per attempt: the timestamp is the attempt's, the bytes are the
	// bytes sent.
	s.signer.Sign(req.Header, d.ID, s.now(), p.Body)
	resp, err := s.client.RoundTrip(req)
	if err != nil {
		return delivery.Result{Err: describe(err, p.URL, s.timeout)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	res := delivery.Result{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if resp.StatusCode >= 300 && strings.EqualFold(resp.Header.Get(DeliveryHeader), AbortMessage) {
		// Svix's convention: the endpoint says retrying cannot help.
		dead := policy.Dead
		res.Outcome = &dead
		res.Err = fmt.Errorf("%d %s: the endpoint answered %s: %s, so it is not retried", resp.StatusCode, http.StatusText(resp.StatusCode), DeliveryHeader, AbortMessage)
	}
	return res
}

// describe turns a client error into a message without secrets, keeping
// what Classify needs (timeouts and blocked addresses).
func describe(err error, target string, timeout time.Duration) error {
	if errors.Is(err, netguard.ErrBlocked) {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return policy.Permanent(fmt.Errorf("POST %s: %w", redact(target), err))
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("POST %s: timed out after %s: %w", redact(target), timeout, context.DeadlineExceeded)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("POST %s: %w", redact(target), err)
}

// redact drops credentials and the query from a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid url>"
	}
	u.User = nil
	u.RawQuery = ""
	return strings.TrimSuffix(u.String(), "?")
}
