package sinkwebhook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/webhook"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// batch decodes JSON records and adds ids and rendered url templates the
// way the engine does.
func batch(t *testing.T, ids []string, urls []string, records ...string) sdk.Batch {
	t.Helper()
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for _, r := range records {
		if err := dec.Append([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	rec := dec.Flush()
	fields := append([]arrow.Field(nil), rec.Schema().Fields()...)
	cols := append([]arrow.Array(nil), rec.Columns()...)
	add := func(name string, vals []string) {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		b.AppendValues(vals, nil)
		fields = append(fields, arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true})
		cols = append(cols, b.NewArray())
	}
	add(sdk.IDColumn, ids)
	if urls != nil {
		add(sdk.TemplateColumnPrefix+"url", urls)
	}
	return sdk.NewBatch(array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows()))
}

// configure makes a sink over an in-memory outbox, with fast retries and the
// private-network opt-in (the test servers are on loopback).
func configure(t *testing.T, cfg map[string]any, templates ...string) (*Sink, *delivery.MemoryOutbox) {
	t.Helper()
	full := map[string]any{"secret": secret, "signature": "standard", "timeout": "2s", "concurrency": 4,
		"allow_private_networks": true, "https_only": false,
		"retry": map[string]any{"schedule": []string{"0s", "10ms", "10ms", "10ms"}}}
	for k, v := range cfg {
		full[k] = v
	}
	data, _ := json.Marshal(full)
	out := delivery.NewMemoryOutbox()
	s := &Sink{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "crm", JSON: data, Templates: templates, Outbox: out}); err != nil {
		t.Fatal(err)
	}
	return s, out
}

// deliver writes the batch and waits until nothing is pending.
func deliver(t *testing.T, s *Sink, b sdk.Batch) {
	t.Helper()
	if err := s.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

type hit struct {
	path   string
	header http.Header
	body   string
}

// server answers each request with answer(n, w), n counting the attempts
// for that webhook-id.
func server(t *testing.T, answer func(n int, w http.ResponseWriter)) (*httptest.Server, func() []hit) {
	var mu sync.Mutex
	var hits []hit
	count := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		hits = append(hits, hit{path: r.URL.Path, header: r.Header.Clone(), body: string(body)})
		id := r.Header.Get("webhook-id")
		count[id]++
		n := count[id]
		mu.Unlock()
		answer(n, w)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []hit {
		mu.Lock()
		defer mu.Unlock()
		return append([]hit(nil), hits...)
	}
}

func TestSignedBodyIsTheRecord(t *testing.T) {
	srv, hits := server(t, func(int, http.ResponseWriter) {})
	s, out := configure(t, map[string]any{"url": srv.URL + "/hook", "headers": map[string]string{"X-Team": "retention"}})
	rec := `{"event":"classification.completed","row_id":"row_1","text":"Jag vill säga upp 📞","classifications":{"churn_risk":{"label":"High","confidence":0.91}}}`
	deliver(t, s, batch(t, []string{"row_1"}, nil, rec))
	h := hits()
	if len(h) != 1 || out.Status("row_1") != "delivered" {
		t.Fatalf("%d requests, status %q", len(h), out.Status("row_1"))
	}
	if h[0].body != rec {
		t.Errorf("body %s\nwant %s", h[0].body, rec)
	}
	sec, _ := webhook.ParseSecret(secret)
	if err := webhook.Verify(sec, h[0].header, []byte(h[0].body)); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
	if h[0].header.Get("webhook-id") != "row_1" || h[0].header.Get("X-Team") != "retention" || h[0].header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", h[0].header)
	}
}

func TestFailingFirstAttemptsKeepTheID(t *testing.T) {
	srv, hits := server(t, func(n int, w http.ResponseWriter) {
		if n <= 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	// The breaker would pause the endpoint after 5 failures in a row.
	s, out := configure(t, map[string]any{"url": srv.URL, "circuit_breaker": map[string]any{"failures": 100}})
	deliver(t, s, batch(t, []string{"a", "b"}, nil, `{"x":1}`, `{"x":2}`))
	per := map[string]int{}
	stamps := map[string]map[string]bool{}
	for _, h := range hits() {
		id := h.header.Get("webhook-id")
		per[id]++
		if stamps[id] == nil {
			stamps[id] = map[string]bool{}
		}
		stamps[id][h.header.Get("webhook-signature")] = true
	}
	if per["a"] != 4 || per["b"] != 4 || out.Status("a") != "delivered" || out.Status("b") != "delivered" {
		t.Fatalf("attempts per id: %v; status a=%s b=%s", per, out.Status("a"), out.Status("b"))
	}
	if log := out.Log["a"]; len(log) != 4 || log[0].StatusCode != 503 || log[3].StatusCode != 200 || log[0].Error == "" {
		t.Fatalf("delivery log %+v", log)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	srv, hits := server(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	s, _ := configure(t, map[string]any{"url": srv.URL})
	start := time.Now()
	deliver(t, s, batch(t, []string{"a"}, nil, `{"x":1}`))
	if el := time.Since(start); el < time.Second || len(hits()) != 2 {
		t.Fatalf("second attempt after %v (%d attempts); Retry-After said 1s", el, len(hits()))
	}
}

func TestOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answer   func(w http.ResponseWriter)
		attempts int
		status   string
		logWant  string
	}{
		{"400 goes to dead letter at once", func(w http.ResponseWriter) { http.Error(w, "bad payload", http.StatusBadRequest) }, 1, "dead", "400"},
		{"410 disables the endpoint", func(w http.ResponseWriter) { w.WriteHeader(http.StatusGone) }, 1, "dead", "410"},
		{"5xx until attempts run out", func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) }, 4, "dead", "502"},
		{"abort-message is not retried", func(w http.ResponseWriter) {
			w.Header().Set(DeliveryHeader, AbortMessage)
			w.WriteHeader(http.StatusServiceUnavailable)
		}, 1, "dead", "webhook-delivery: abort-message"},
		{"a redirect is not followed", func(w http.ResponseWriter) {
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(http.StatusFound)
		}, 4, "dead", "302"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := server(t, func(_ int, w http.ResponseWriter) { tc.answer(w) })
			s, out := configure(t, map[string]any{"url": srv.URL + "/hook"})
			deliver(t, s, batch(t, []string{"a"}, nil, `{"x":1}`))
			if n := len(hits()); n != tc.attempts || out.Status("a") != tc.status {
				t.Fatalf("%d attempts, status %q; want %d, %q", n, out.Status("a"), tc.attempts, tc.status)
			}
			for _, h := range hits() {
				if h.path != "/hook" {
					t.Errorf("followed a redirect to %s", h.path)
				}
			}
			if log := out.Log["a"]; len(log) == 0 || !strings.Contains(log[len(log)-1].Error, tc.logWant) {
				t.Errorf("log %+v", log)
			}
		})
	}
}

func TestGoneDisablesLaterDeliveries(t *testing.T) {
	srv, hits := server(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusGone) })
	s, out := configure(t, map[string]any{"url": srv.URL, "concurrency": 1})
	deliver(t, s, batch(t, []string{"a", "b", "c"}, nil, `{"x":1}`, `{"x":2}`, `{"x":3}`))
	if n := len(hits()); n != 1 {
		t.Fatalf("%d requests after 410, want 1", n)
	}
	for _, id := range []string{"a", "b", "c"} {
		if out.Status(id) != "dead" {
			t.Errorf("%s: %s", id, out.Status(id))
		}
	}
}

func TestLoopbackRefusedWithoutOptIn(t *testing.T) {
	t.Setenv("PIPELINE_ALLOW_PRIVATE_NETWORKS", "")
	srv, hits := server(t, func(int, http.ResponseWriter) {})
	data, _ := json.Marshal(map[string]any{"url": srv.URL, "secret": secret, "signature": "standard", "timeout": "2s", "concurrency": 1})
	err := (&Sink{}).Configure(context.Background(), sdk.Config{JSON: data})
	if err == nil || !strings.Contains(err.Error(), "allow_private_networks") {
		t.Fatalf("configure: %v", err)
	}
	// A templated URL is checked when the record is prepared, and a name
	// that resolves to loopback at dial time.
	s, out := configure(t, map[string]any{"url": "http://localhost:1/{{ x }}", "allow_private_networks": false}, "url")
	deliver(t, s, batch(t, []string{"a"}, []string{strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)}, `{"x":1}`))
	if len(hits()) != 0 {
		t.Fatal("a loopback endpoint was reached")
	}
	if log := out.Log["a"]; out.Status("a") != "dead" || len(log) != 1 || !strings.Contains(log[0].Error, "allow_private_networks") {
		t.Fatalf("status %q, log %+v: want dead at once, saying how to opt in", out.Status("a"), log)
	}
}

func TestEventTypeAndGitHubSignature(t *testing.T) {
	srv, hits := server(t, func(int, http.ResponseWriter) {})
	s, _ := configure(t, map[string]any{"url": srv.URL, "event": "churn.alert", "signature": "github", "secret": "It's a Secret to Everybody"})
	deliver(t, s, batch(t, []string{"a"}, nil, `{"event":"classification.completed","x":1}`))
	h := hits()[0]
	if h.body != `{"event":"churn.alert","x":1}` || h.header.Get(EventHeader) != "churn.alert" {
		t.Fatalf("body %s, event header %q", h.body, h.header.Get(EventHeader))
	}
	if err := webhook.VerifyScheme(webhook.SchemeGitHub, "It's a Secret to Everybody", h.header, []byte(h.body)); err != nil {
		t.Fatalf("github signature: %v", err)
	}
}

func TestSecretRotationSignsWithBoth(t *testing.T) {
	oldKey, _ := webhook.GenerateSecret()
	newKey, _ := webhook.GenerateSecret()
	srv, hits := server(t, func(int, http.ResponseWriter) {})
	s, _ := configure(t, map[string]any{"url": srv.URL, "secret": nil, "secrets": []string{newKey.Encode(), oldKey.Encode()}})
	deliver(t, s, batch(t, []string{"a"}, nil, `{"x":1}`))
	h := hits()[0]
	for _, k := range []webhook.Secret{oldKey, newKey} {
		if err := webhook.Verify(k, h.header, []byte(h.body)); err != nil {
			t.Errorf("a receiver with one of the secrets cannot verify: %v", err)
		}
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	srv, hits := server(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			time.Sleep(500 * time.Millisecond)
		}
	})
	s, out := configure(t, map[string]any{"url": srv.URL, "timeout": "100ms"})
	deliver(t, s, batch(t, []string{"a"}, nil, `{"x":1}`))
	if n := len(hits()); n != 2 || out.Status("a") != "delivered" {
		t.Fatalf("%d attempts, status %s", n, out.Status("a"))
	}
}

func TestURLTemplatePerRecord(t *testing.T) {
	srv, hits := server(t, func(int, http.ResponseWriter) {})
	s, _ := configure(t, map[string]any{"url": srv.URL + "/customers/{{ metadata.customer_id }}"}, "url")
	deliver(t, s, batch(t, []string{"a", "b"}, []string{srv.URL + "/customers/c1", srv.URL + "/customers/c2"}, `{"x":1}`, `{"x":2}`))
	paths := map[string]bool{}
	for _, h := range hits() {
		paths[h.path] = true
	}
	if !paths["/customers/c1"] || !paths["/customers/c2"] {
		t.Fatalf("paths %v", paths)
	}
}

func TestConfigureRejects(t *testing.T) {
	base := map[string]any{"url": "http://x.example", "secret": secret, "signature": "standard", "timeout": "1s", "concurrency": 1, "allow_private_networks": false}
	for name, change := range map[string]map[string]any{
		"url":        {"url": "ftp://x"},
		"secret":     {"secret": "whsec_!!!"},
		"timeout":    {"timeout": "soon"},
		"signature":  {"signature": "md5"},
		"rate_limit": {"rate_limit": "fast"},
		"retry":      {"retry": map[string]any{"schedule": []string{"soon"}}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := map[string]any{}
			for k, v := range base {
				cfg[k] = v
			}
			for k, v := range change {
				cfg[k] = v
			}
			data, _ := json.Marshal(cfg)
			err := (&Sink{}).Configure(context.Background(), sdk.Config{JSON: data})
			if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "MfKQ9r8") {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// The outbox keeps a payload as raw bytes; payloads written as JSON by
// earlier versions still read.
func TestPayloadEncoding(t *testing.T) {
	for _, p := range []payload{
		{URL: "https://crm.example/hooks"},
		{URL: "https://crm.example/c/{1}", Headers: map[string]string{"X-B": "2", "X-A": "1 ü"}, Body: []byte(`{"text":"Grüße 👋"}` + "\x00\xff")},
	} {
		got, err := decodePayload(p.encode())
		if err != nil || got.URL != p.URL || string(got.Body) != string(p.Body) || len(got.Headers) != len(p.Headers) {
			t.Fatalf("round trip of %+v: %+v, %v", p, got, err)
		}
		for k, v := range p.Headers {
			if got.Headers[k] != v {
				t.Errorf("header %s = %q, want %q", k, got.Headers[k], v)
			}
		}
	}
	legacy, _ := json.Marshal(payload{URL: "https://old.example", Body: []byte(`{"a":1}`)})
	if got, err := decodePayload(legacy); err != nil || got.URL != "https://old.example" || string(got.Body) != `{"a":1}` {
		t.Fatalf("legacy JSON payload: %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {9}, {payloadV1, 200}, {payloadV1, 1, 'x', 5}} {
		if _, err := decodePayload(bad); err == nil {
			t.Errorf("decodePayload(%q) accepted a broken payload", bad)
		}
	}
}

func FuzzDecodePayload(f *testing.F) {
	f.Add(payload{URL: "https://x", Headers: map[string]string{"a": "b"}, Body: []byte("{}")}.encode())
	f.Add([]byte(`{"url":"https://x","body":"e30="}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodePayload(data)
		if err != nil || len(data) == 0 || data[0] != payloadV1 {
			return
		}
		again, err := decodePayload(p.encode())
		if err != nil || again.URL != p.URL || string(again.Body) != string(p.Body) {
			t.Fatalf("re-encoded payload differs: %+v vs %+v (%v)", again, p, err)
		}
	})
}
