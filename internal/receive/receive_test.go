package receive

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk/webhook"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

var (
	clock    = time.Date(2025, 11, 14, 9, 22, 47, 0, time.UTC)
	fixedNow = func() time.Time { return clock }
	record   = `{"event":"classification.completed","timestamp":"2025-11-14T09:22:47Z","dataset_id":"ds_7f3a9b2c","row_id":"row_90312","text":"Jag vill säga upp mitt abonnemang, Telia erbjuder bättre pris","classifications":{"churn_risk":{"label":"High","confidence":0.91}}}`
)

func secret(t *testing.T) webhook.Secret {
	t.Helper()
	s, err := webhook.ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signer returns a Signer for scheme with secrets as a user writes them.
func signer(t *testing.T, scheme webhook.Scheme, secrets ...string) webhook.Signer {
	t.Helper()
	s, err := webhook.NewSigner(scheme, secrets...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// syncBuffer is a bytes.Buffer that the race detector will not complain
// about when read after concurrent handler writes; the handler itself must
// serialise its writes, which the concurrency test checks separately.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type delivery struct {
	method  string
	path    string
	body    string
	signed  string // body that was signed; empty: body
	id      string
	ts      time.Time
	headers func(h http.Header)
}

func (d delivery) request(t *testing.T, signer webhook.Signer) *http.Request {
	t.Helper()
	method := d.method
	if method == "" {
		method = http.MethodPost
	}
	path := d.path
	if path == "" {
		path = "/hook"
	}
	req := httptest.NewRequest(method, path, strings.NewReader(d.body))
	signed := d.signed
	if signed == "" {
		signed = d.body
	}
	id := d.id
	if id == "" {
		id = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	}
	ts := d.ts
	if ts.IsZero() {
		ts = clock
	}
	signer.Sign(req.Header, id, ts, []byte(signed))
	if d.headers != nil {
		d.headers(req.Header)
	}
	return req
}

func TestHandler(t *testing.T) {
	s := secret(t)
	std := signer(t, webhook.SchemeStandard, testSecret)
	tests := []struct {
		name     string
		json     bool
		d        delivery
		wantCode int
		wantBody string // substring of the response body
		wantOut  string // exact output; "" means nothing is written
		wantLog  string // exact Log output (JSON mode)
		stats    [3]int64
	}{
		{
			name:     "good delivery",
			d:        delivery{body: record},
			wantCode: http.StatusOK,
			wantOut:  "2025-11-14T09:22:47Z  ✓ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  event=classification.completed row_id=row_90312\n",
			stats:    [3]int64{1, 1, 0},
		},
		{
			name:     "good delivery, other path, no known fields",
			d:        delivery{path: "/a/b?x=1", body: `{"hello":"world"}`, id: "row_1"},
			wantCode: http.StatusOK,
			wantOut:  "2025-11-14T09:22:47Z  ✓ row_1 POST /a/b  17 B\n",
			stats:    [3]int64{1, 1, 0},
		},
		{
			name:     "array body, size in KiB",
			d:        delivery{body: "[" + strings.Repeat(`{"row_id":"row_1"},`, 100) + `{}]`},
			wantCode: http.StatusOK,
			wantOut:  "2025-11-14T09:22:47Z  ✓ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  1.9 KiB  items=101\n",
			stats:    [3]int64{1, 1, 0},
		},
		{
			name:     "fields with spaces and control characters are quoted",
			d:        delivery{body: `{"event":"a b","type":7,"row_id":"x\u001b[31my"}`, id: "id\x01"},
			wantCode: http.StatusOK,
			wantOut:  `2025-11-14T09:22:47Z  ✓ "id\x01" POST /hook  48 B  event="a b" type=7 row_id="x\x1b[31my"` + "\n",
			stats:    [3]int64{1, 1, 0},
		},
		{
			name:     "tampered body",
			d:        delivery{body: strings.Replace(record, "0.91", "0.99", 1), signed: record},
			wantCode: http.StatusUnauthorized,
			wantBody: "invalid signature",
			wantOut:  "2025-11-14T09:22:47Z  ✗ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  401 invalid signature\n",
			stats:    [3]int64{1, 0, 1},
		},
		{
			name:     "stale timestamp",
			d:        delivery{body: record, ts: clock.Add(-10 * time.Minute)},
			wantCode: http.StatusUnauthorized,
			wantBody: "timestamp too old",
			wantOut:  "2025-11-14T09:22:47Z  ✗ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  401 timestamp too old: sent 10m0s ago, tolerance 5m0s\n",
			stats:    [3]int64{1, 0, 1},
		},
		{
			name:     "timestamp from the future",
			d:        delivery{body: record, ts: clock.Add(time.Hour)},
			wantCode: http.StatusUnauthorized,
			wantBody: "timestamp too new",
			wantOut:  "2025-11-14T09:22:47Z  ✗ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  401 timestamp too new: sent 1h0m0s in the future, tolerance 5m0s\n",
			stats:    [3]int64{1, 0, 1},
		},
		{
			name: "missing headers",
			d: delivery{body: record, headers: func(h http.Header) {
				h.Del(webhook.HeaderID)
				h.Del(webhook.HeaderSignature)
			}},
			wantCode: http.StatusUnauthorized,
			wantBody: "missing required headers: webhook-id, webhook-signature",
			wantOut:  "2025-11-14T09:22:47Z  ✗ - POST /hook  260 B  401 missing required headers: webhook-id, webhook-signature\n",
			stats:    [3]int64{1, 0, 1},
		},
		{
			name:     "GET",
			d:        delivery{method: http.MethodGet},
			wantCode: http.StatusMethodNotAllowed,
			wantBody: "method not allowed",
			stats:    [3]int64{0, 0, 0},
		},
		{
			name:     "body too large",
			d:        delivery{body: strings.Repeat("x", 5000)},
			wantCode: http.StatusRequestEntityTooLarge,
			wantOut:  "2025-11-14T09:22:47Z  ✗ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  4.0 KiB  413 body larger than 4096 bytes\n",
			stats:    [3]int64{1, 0, 1},
		},
		{
			name:     "json mode prints the exact body",
			json:     true,
			d:        delivery{body: record},
			wantCode: http.StatusOK,
			wantOut:  record + "\n",
			wantLog:  "2025-11-14T09:22:47Z  ✓ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  event=classification.completed row_id=row_90312\n",
			stats:    [3]int64{1, 1, 0},
		},
		{
			name:     "json mode compacts a multi-line body",
			json:     true,
			d:        delivery{body: "{\n  \"row_id\": \"row_1\",\n  \"n\": [1, 2]\n}\n"},
			wantCode: http.StatusOK,
			wantOut:  `{"row_id":"row_1","n":[1,2]}` + "\n",
			wantLog:  "2025-11-14T09:22:47Z  ✓ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  39 B  row_id=row_1\n",
			stats:    [3]int64{1, 1, 0},
		},
		{
			name:     "json mode writes a non-JSON body as a JSON string",
			json:     true,
			d:        delivery{body: "plain\ntext"},
			wantCode: http.StatusOK,
			wantOut:  `"plain\ntext"` + "\n",
			wantLog:  "2025-11-14T09:22:47Z  ✓ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  10 B\n",
			stats:    [3]int64{1, 1, 0},
		},
		{
			name:     "json mode keeps rejected bodies out of Out",
			json:     true,
			d:        delivery{body: record, signed: "other"},
			wantCode: http.StatusUnauthorized,
			wantLog:  "2025-11-14T09:22:47Z  ✗ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  401 invalid signature\n",
			stats:    [3]int64{1, 0, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, log bytes.Buffer
			h := NewHandler(Options{Secret: s, JSON: tt.json, Out: &out, Log: &log, Now: fixedNow, MaxBodyBytes: 4096})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, tt.d.request(t, std))

			if rec.Code != tt.wantCode {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tt.wantCode, rec.Body.String())
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("response body = %q, want it to contain %q", rec.Body.String(), tt.wantBody)
			}
			if tt.wantCode == http.StatusMethodNotAllowed && rec.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want POST", rec.Header().Get("Allow"))
			}
			if out.String() != tt.wantOut {
				t.Errorf("Out:\n got %q\nwant %q", out.String(), tt.wantOut)
			}
			if log.String() != tt.wantLog {
				t.Errorf("Log:\n got %q\nwant %q", log.String(), tt.wantLog)
			}
			if r, v, j := h.Stats(); [3]int64{r, v, j} != tt.stats {
				t.Errorf("Stats() = %d, %d, %d, want %v", r, v, j, tt.stats)
			}
			if strings.Contains(out.String()+log.String()+rec.Body.String(), strings.TrimPrefix(testSecret, "whsec_")) {
				t.Error("the secret appears in the output")
			}
		})
	}
}

func TestHandlerWithoutSecret(t *testing.T) {
	var out bytes.Buffer
	h := NewHandler(Options{Out: &out, Now: fixedNow})
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(record)) // unsigned
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	want := "2025-11-14T09:22:47Z  ? - POST /  260 B  event=classification.completed row_id=row_90312\n"
	if out.String() != want {
		t.Errorf("Out:\n got %q\nwant %q", out.String(), want)
	}
	if r, v, j := h.Stats(); r != 1 || v != 0 || j != 0 {
		t.Errorf("Stats() = %d, %d, %d, want 1, 0, 0", r, v, j)
	}
}

func TestHandlerTolerance(t *testing.T) {
	s := secret(t)
	tests := []struct {
		tolerance time.Duration
		age       time.Duration
		want      int
	}{
		{0, 4 * time.Minute, http.StatusOK},
		{0, 6 * time.Minute, http.StatusUnauthorized},
		{time.Hour, 59 * time.Minute, http.StatusOK},
		{30 * time.Second, time.Minute, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("tolerance %v age %v", tt.tolerance, tt.age), func(t *testing.T) {
			h := NewHandler(Options{Secret: s, Tolerance: tt.tolerance, Out: io.Discard, Now: fixedNow})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, delivery{body: record, ts: clock.Add(-tt.age)}.request(t, signer(t, webhook.SchemeStandard, testSecret)))
			if rec.Code != tt.want {
				t.Errorf("status = %d, want %d", rec.Code, tt.want)
			}
		})
	}
}

// Concurrent deliveries must each produce one whole line.
func TestHandlerConcurrentWritesAreSerialised(t *testing.T) {
	s := secret(t)
	var out lineChecker
	h := NewHandler(Options{Secret: s, Out: &out, Now: fixedNow})
	srv := httptest.NewServer(h)
	defer srv.Close()

	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"event":"classification.completed","row_id":"row_%d"}`, i)
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", strings.NewReader(body))
			webhook.SetHeaders(req.Header, s, fmt.Sprintf("row_%d", i), clock, []byte(body))
			if i%4 == 0 {
				req.Header.Set(webhook.HeaderSignature, "v1,AAAA")
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()

	if o := out.overlaps.Load(); o > 0 {
		t.Errorf("%d writes to Out overlapped another", o)
	}
	r, v, j := h.Stats()
	if r != n || v != n-n/4 || j != n/4 {
		t.Errorf("Stats() = %d, %d, %d, want %d, %d, %d", r, v, j, n, n-n/4, n/4)
	}
	lines := out.lines()
	if len(lines) != n {
		t.Fatalf("%d lines, want %d", len(lines), n)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 6 {
			t.Errorf("malformed line %q", l)
			continue
		}
		mark, id := f[1], f[2]
		want := "row_id=" + id
		if mark == "✗" {
			want = "401 invalid signature"
		}
		if !strings.HasSuffix(l, want) {
			t.Errorf("line %q does not end in %q", l, want)
		}
		seen[id] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct ids in output, want %d", len(seen), n)
	}
}

// lineChecker counts Write calls that overlap another.
type lineChecker struct {
	busy     sync.Mutex
	overlaps atomic.Int64
	mu       sync.Mutex
	buf      bytes.Buffer
}

func (c *lineChecker) Write(p []byte) (int, error) {
	if c.busy.TryLock() {
		defer c.busy.Unlock()
	} else {
		c.overlaps.Add(1)
	}
	time.Sleep(100 * time.Microsecond) // widen the window for overlap
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *lineChecker) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Split(strings.TrimSuffix(c.buf.String(), "\n"), "\n")
}

func TestServe(t *testing.T) {
	s := secret(t)
	var out syncBuffer
	h := NewHandler(Options{Secret: s, Out: &out})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", h, func(a string) { addrc <- a }) }()

	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("Serve returned early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("ready was not called")
	}
	if strings.HasSuffix(addr, ":0") || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("ready got %q, want the bound 127.0.0.1 address", addr)
	}

	body := []byte(record)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/hook", bytes.NewReader(body))
	webhook.SetHeaders(req.Header, s, "row_90312", time.Now(), body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if !strings.Contains(out.String(), "✓ row_90312 POST /hook") {
		t.Errorf("output %q lacks the delivery", out.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := http.Post("http://"+addr+"/hook", "application/json", strings.NewReader("{}")); err == nil {
		t.Error("server still accepts connections after shutdown")
	}
}

func TestServeListenError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	called := false
	err := Serve(ctx, "256.0.0.1:bad", http.NotFoundHandler(), func(string) { called = true })
	if err == nil {
		t.Fatal("Serve on a bad address returned nil")
	}
	if called {
		t.Error("ready was called although listening failed")
	}
}
