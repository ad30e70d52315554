// Package transformhttp is the built-in `transform "http"`: it POSTs the
// records of each batch, batch_size at a time, to an enrichment or model
// endpoint as a JSON array, and merges the endpoint's answers (a JSON array
// of the same length and order) into the records under `into`.
package transformhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
	"github.com/pipelinehq/pipeline/sdk/netguard"
)

// Version is the plugin's version.
const Version = "0.1.0"

// MaxResponseBytes caps one response body: an endpoint that answers more
// than this for batch_size records is broken, and reading on would only
// exhaust memory.
const MaxResponseBytes = 256 << 20

// defaultRetry is the schedule without a retry block. It is shorter than the
// action sinks' (which reaches 10h): a transform has no outbox, so the run
// waits for it, and after this the run fails and the batch is done again on
// the next run.
var defaultRetry = []time.Duration{0, time.Second, 5 * time.Second, 30 * time.Second}

var _ sdk.Transform = (*Transform)(nil)

type config struct {
	URL          string              `json:"url"`
	Fields       []string            `json:"fields"`
	Into         string              `json:"into"`
	BatchSize    int                 `json:"batch_size"`
	Headers      map[string]string   `json:"headers"`
	Timeout      string              `json:"timeout"`
	Concurrency  int                 `json:"concurrency"`
	Retry        *policy.RetryConfig `json:"retry"`
	AllowPrivate bool                `json:"allow_private_networks"`
	HTTPSOnly    bool                `json:"https_only"`
}

// Transform calls an HTTP endpoint for every batch_size records.
type Transform struct {
	cfg      config
	name     string
	endpoint string // the URL without credentials or query, for messages
	into     []string
	fields   *fieldTree // nil: the whole record
	timeout  time.Duration
	retry    policy.Retry
	guard    netguard.Options
	client   http.RoundTripper
	// sleep waits between attempts; tests may replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

// Info describes the plugin.
func (t *Transform) Info() sdk.Info {
	retry := delivery.RetryAttribute()
	retry.Description = `Retry policy for 5xx, 408, 425, 429 and network errors, shared with the action sinks: { schedule = ["0s", "1s", "5s", "30s"] } (the default here) or { max_attempts = 4  initial = "1s"  max = "30s" } (exponential, full jitter). Retry-After is honoured. When the attempts run out the run fails.`
	return sdk.Info{
		Kind:        sdk.KindTransform,
		Type:        "http",
		Version:     Version,
		Description: "POSTs records in batches as a JSON array to an enrichment or model endpoint and merges each answer into its record under `into`.",
		Config: []sdk.Attribute{
			{Name: "url", Type: sdk.String, Required: true, Description: "Endpoint URL. It receives a JSON array of records (POST) and answers a JSON array of results, one per record, in the same order."},
			{Name: "fields", Type: sdk.ListOf(sdk.String), Description: `Send only these fields (dotted paths such as "metadata.customer_id", nested in the request as the path says). Default: the whole record.`},
			{Name: "into", Type: sdk.String, Required: true, Description: `Where each result is merged (a dotted path such as "classifications.intent"): a new or replaced field; a nested path creates or extends objects.`},
			{Name: "batch_size", Type: sdk.Number, Default: 100, Description: "Records per request."},
			{Name: "headers", Type: sdk.MapOf(sdk.String), Description: `Extra request headers, e.g. { Authorization = "Bearer ${env("MODEL_TOKEN")}" }.`},
			{Name: "timeout", Type: sdk.Duration, Default: "10s", Description: "Per-request timeout (each attempt)."},
			{Name: "concurrency", Type: sdk.Number, Default: 4, Description: "Requests in flight at once for one input batch; the output keeps the input order."},
			retry,
			{Name: "allow_private_networks", Type: sdk.Bool, Default: false, Description: "Allow loopback, private and link-local addresses (off by default: SSRF guard). PIPELINE_ALLOW_PRIVATE_NETWORKS=1 does the same."},
			{Name: "https_only", Type: sdk.Bool, Default: false, Description: "Refuse plain http URLs."},
		},
	}
}

// Configure checks the block.
func (t *Transform) Configure(_ context.Context, cfg sdk.Config) error {
	t.cfg = config{BatchSize: 100, Timeout: "10s", Concurrency: 4}
	if err := cfg.Decode(&t.cfg); err != nil {
		return err
	}
	t.name = cfg.Name
	t.guard = netguard.Options{AllowPrivate: t.cfg.AllowPrivate, HTTPSOnly: t.cfg.HTTPSOnly}.WithEnv()
	if err := t.guard.CheckURL(t.cfg.URL); err != nil {
		return fmt.Errorf("url: %w", err)
	}
	t.endpoint = redact(t.cfg.URL)
	into, err := parsePath(t.cfg.Into)
	if err != nil {
		return fmt.Errorf("into: %w", err)
	}
	if sdk.IsReserved(into[0]) {
		return fmt.Errorf("into: %q: names starting with %q are the engine's", t.cfg.Into, sdk.ReservedPrefix)
	}
	t.into = into
	if t.cfg.Fields != nil {
		if len(t.cfg.Fields) == 0 {
			return errors.New("fields: list at least one field, or leave fields out to send the whole record")
		}
		if t.fields, err = newFieldTree(t.cfg.Fields); err != nil {
			return err
		}
	}
	if t.cfg.BatchSize < 1 {
		return fmt.Errorf("batch_size must be at least 1, got %d", t.cfg.BatchSize)
	}
	if t.cfg.Concurrency < 1 {
		return fmt.Errorf("concurrency must be at least 1, got %d", t.cfg.Concurrency)
	}
	d, err := time.ParseDuration(t.cfg.Timeout)
	if err != nil || d <= 0 {
		return fmt.Errorf("timeout %q is not a duration such as \"10s\"", t.cfg.Timeout)
	}
	t.timeout = d
	if t.cfg.Retry != nil {
		if t.retry, err = policy.ParseRetry(*t.cfg.Retry); err != nil {
			return fmt.Errorf("retry: %w", err)
		}
	} else if t.retry, err = policy.Schedule(defaultRetry...); err != nil {
		return err
	}
	transport := t.guard.Transport()
	transport.MaxIdleConnsPerHost = t.cfg.Concurrency
	// A request's headers and body go out in one write.
	transport.WriteBufferSize = 64 << 10
	// The transport, not an http.Client: a redirect is not followed (it is
	// retried as a failure, then fails the run), and the timeout is the
	// attempt's context.
	t.client = transport
	if t.sleep == nil {
		t.sleep = delivery.Sleep
	}
	return nil
}

// Transform sends b's records in requests of batch_size, up to concurrency
// at a time, and merges the answers in record order.
func (t *Transform) Transform(ctx context.Context, b sdk.Batch) (sdk.Batch, error) {
	n := b.Len()
	if n == 0 {
		return b, nil
	}
	size := t.cfg.BatchSize
	reqs := (n + size - 1) / size
	results := make([]json.RawMessage, n)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		failed   = -1 // the request of firstErr
	)
	fail := func(r int, err error) {
		mu.Lock()
		defer mu.Unlock()
		// The earliest failed request is reported, but not for the
		// cancellation the first failure caused.
		if firstErr != nil && errors.Is(err, context.Canceled) {
			return
		}
		if firstErr == nil || r < failed {
			firstErr, failed = err, r
		}
		cancel()
	}
	var proj []member // the fields to send, resolved once for the batch
	if t.fields != nil {
		proj = t.fields.project(b.Record)
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(t.cfg.Concurrency, reqs); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			enc := arrowjson.NewEncoder() // not safe for concurrent use: one per worker
			hint := 0
			for r := range work {
				from, to := r*size, min((r+1)*size, n)
				// A fresh buffer per request: the transport may still be
				// reading the last one after RoundTrip has returned.
				body := t.body(make([]byte, 0, hint), enc, b, proj, from, to)
				hint = len(body) + len(body)/8
				if err := t.call(ctx, body, results[from:to]); err != nil {
					fail(r, fmt.Errorf("%s: %w", describeRequest(b, r, reqs, from, to), err))
				}
			}
		}()
	}
feed:
	for r := 0; r < reqs; r++ {
		select {
		case work <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return b, firstErr
	}
	if err := ctx.Err(); err != nil {
		return b, err
	}
	out, err := merge(b, t.into, results)
	if err != nil {
		return b, fmt.Errorf("POST %s: %w", t.endpoint, err)
	}
	return out, nil
}

// describeRequest names request r for messages: its records (1-based within
// the batch) and their ids, so the user can find them in the input.
func describeRequest(b sdk.Batch, r, reqs, from, to int) string {
	s := fmt.Sprintf("request %d of %d (records %d-%d of the batch", r+1, reqs, from+1, to)
	if first, last := b.ID(from), b.ID(to-1); first != "" {
		s += fmt.Sprintf(", ids %q to %q", first, last)
	}
	return s + ")"
}

// body appends the JSON array of records [from, to) to dst: whole, or
// their fields (proj) when fields is set.
func (t *Transform) body(dst []byte, enc *arrowjson.Encoder, b sdk.Batch, proj []member, from, to int) []byte {
	dst = append(dst, '[')
	for i := from; i < to; i++ {
		if i > from {
			dst = append(dst, ',')
		}
		if t.fields == nil {
			dst = enc.AppendRow(dst, b.Record, i)
		} else {
			dst = appendProjection(dst, enc, proj, i)
		}
	}
	return append(dst, ']')
}

// call POSTs body until it is answered or the retry policy gives up, and
// puts the answer's results into out, which holds one slot per record sent.
func (t *Transform) call(ctx context.Context, body []byte, out []json.RawMessage) error {
	var last error
	var retryAfter time.Duration
	for attempt := 1; ; attempt++ {
		delay, ok := t.retry.Delay(attempt, nil)
		if !ok {
			return fmt.Errorf("gave up after %d attempts: %w", attempt-1, last)
		}
		if err := t.sleep(ctx, policy.Wait(delay, retryAfter)); err != nil {
			if last != nil {
				return fmt.Errorf("%w (last attempt: %v)", err, last)
			}
			return err
		}
		status, header, data, err := t.post(ctx, body)
		switch policy.Classify(status, err) {
		case policy.Delivered:
			return t.parse(data, out)
		case policy.RetryLater:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			last = err
			if err == nil {
				last = statusError(status, data)
			}
			retryAfter = 0
			if d, ok := policy.ParseRetryAfter(header.Get("Retry-After"), time.Now()); ok {
				retryAfter = d
			}
		default:
			if err != nil {
				return err
			}
			return fmt.Errorf("%w; it is not retried: fix the request or the endpoint", statusError(status, data))
		}
	}
}

// post makes one attempt. status is 0 when there was no response.
func (t *Transform) post(ctx context.Context, body []byte) (status int, header http.Header, data []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, policy.Permanent(fmt.Errorf("POST %s: %w", t.endpoint, err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "pipeline-transform-http/"+Version)
	for k, v := range t.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := t.client.RoundTrip(req)
	if err != nil {
		return 0, nil, nil, t.describe(err)
	}
	defer resp.Body.Close()
	data, err = readBody(resp.Body, resp.ContentLength)
	if err != nil {
		return 0, nil, nil, t.describe(err) // a broken body is retried like a broken connection
	}
	if len(data) > MaxResponseBytes {
		return resp.StatusCode, resp.Header, nil, policy.Permanent(fmt.Errorf("POST %s: the response is larger than %d MiB", t.endpoint, MaxResponseBytes>>20))
	}
	return resp.StatusCode, resp.Header, data, nil
}

// parse checks a 2xx answer: a JSON array with one result per record sent,
// which it puts into out (slices of data).
func (t *Transform) parse(data []byte, out []json.RawMessage) error {
	n, ok := splitArray(data, out)
	if !ok {
		return fmt.Errorf("POST %s: the response is not a JSON array of %d results (%s): the endpoint must answer one result per record, in order", t.endpoint, len(out), snippet(data))
	}
	if n != len(out) {
		return fmt.Errorf("POST %s: the response has %d results for %d records: the endpoint must answer one result per record, in order", t.endpoint, n, len(out))
	}
	return nil
}

// readBody reads a response body of up to MaxResponseBytes (one byte more
// says it is larger), in one allocation when its length is known.
func readBody(body io.Reader, length int64) ([]byte, error) {
	if length < 0 || length > MaxResponseBytes {
		return io.ReadAll(io.LimitReader(body, MaxResponseBytes+1))
	}
	// One byte more than announced, so that the end is seen in one read.
	b := bytes.NewBuffer(make([]byte, 0, length+1))
	_, err := b.ReadFrom(io.LimitReader(body, MaxResponseBytes+1))
	return b.Bytes(), err
}

func statusError(status int, body []byte) error {
	msg := fmt.Sprintf("%d %s", status, http.StatusText(status))
	if s := snippet(body); s != "" {
		msg += ": " + s
	}
	return errors.New(msg)
}

// snippet is the start of a response body, for messages.
func snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// describe turns a client error into a message without secrets; a refused
// address is permanent, everything else is retried.
func (t *Transform) describe(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, netguard.ErrBlocked) || errors.Is(err, netguard.ErrInvalidURL) {
		return policy.Permanent(fmt.Errorf("POST %s: %w", t.endpoint, err))
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("POST %s: timed out after %s: %w", t.endpoint, t.timeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("POST %s: %w", t.endpoint, err)
}

// redact drops credentials and the query from a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid url>"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return strings.TrimSuffix(u.String(), "?")
}
