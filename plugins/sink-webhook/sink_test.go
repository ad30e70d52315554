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

func configure(t *testing.T, cfg map[string]any, templates ...string) *Sink {
	t.Helper()
	full := map[string]any{"secret": secret, "timeout": "2s", "max_attempts": 4, "concurrency": 4}
	for k, v := range cfg {
		full[k] = v
	}
	data, _ := json.Marshal(full)
	s := &Sink{backoff: func(int) time.Duration { return 10 * time.Millisecond }}
	if err := s.Configure(context.Background(), sdk.Config{Name: "crm", JSON: data, Templates: templates}); err != nil {
		t.Fatal(err)
	}
	return s
}

type hit struct {
	path   string
	header http.Header
	body   string
}

// server answers with codes in turn for each webhook-id, then 200.
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
	s := configure(t, map[string]any{"url": srv.URL + "/hook", "headers": map[string]string{"X-Team": "retention"}})
	rec := `{"event":"classification.completed","row_id":"row_1","text":"Jag vill säga upp 📞","classifications":{"churn_risk":{"label":"High","confidence":0.91}}}`
	if err := s.Write(context.Background(), batch(t, []string{"row_1"}, nil, rec)); err != nil {
		t.Fatal(err)
	}
	h := hits()
	if len(h) != 1 {
		t.Fatalf("%d requests", len(h))
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

func TestRetriesKeepTheIDAndResign(t *testing.T) {
	srv, hits := server(t, func(n int, w http.ResponseWriter) {
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	s := configure(t, map[string]any{"url": srv.URL})
	b := batch(t, []string{"a", "b"}, nil, `{"x":1}`, `{"x":2}`)
	if err := s.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, h := range hits() {
		per[h.header.Get("webhook-id")]++
	}
	if per["a"] != 3 || per["b"] != 3 {
		t.Fatalf("attempts per id: %v, want 3 each", per)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	srv, _ := server(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	s := configure(t, map[string]any{"url": srv.URL})
	start := time.Now()
	if err := s.Write(context.Background(), batch(t, []string{"a"}, nil, `{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < time.Second {
		t.Fatalf("retried after %v, Retry-After said 1s", el)
	}
}

func TestPermanentFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter)
		want   string
	}{
		{"400 is not retried", func(w http.ResponseWriter) { http.Error(w, "bad payload", http.StatusBadRequest) }, "400 Bad Request: bad payload"},
		{"redirect is not followed", func(w http.ResponseWriter) {
			w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
			w.WriteHeader(http.StatusFound)
		}, "302 Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := server(t, func(_ int, w http.ResponseWriter) { tc.answer(w) })
			s := configure(t, map[string]any{"url": srv.URL})
			err := s.Write(context.Background(), batch(t, []string{"a"}, nil, `{"x":1}`))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "record a") {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if n := len(hits()); n != 1 {
				t.Fatalf("%d attempts, want 1", n)
			}
		})
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	srv, hits := server(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) })
	s := configure(t, map[string]any{"url": srv.URL, "max_attempts": 3})
	err := s.Write(context.Background(), batch(t, []string{"a"}, nil, `{"x":1}`))
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("got %v", err)
	}
	if n := len(hits()); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	srv, hits := server(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			time.Sleep(500 * time.Millisecond)
		}
	})
	s := configure(t, map[string]any{"url": srv.URL, "timeout": "100ms"})
	if err := s.Write(context.Background(), batch(t, []string{"a"}, nil, `{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if n := len(hits()); n != 2 {
		t.Fatalf("%d attempts, want 2", n)
	}
}

func TestURLTemplatePerRecord(t *testing.T) {
	srv, hits := server(t, func(int, http.ResponseWriter) {})
	s := configure(t, map[string]any{"url": srv.URL + "/customers/{{ metadata.customer_id }}"}, "url")
	b := batch(t, []string{"a", "b"}, []string{srv.URL + "/customers/c1", srv.URL + "/customers/c2"}, `{"x":1}`, `{"x":2}`)
	if err := s.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, h := range hits() {
		paths[h.path] = true
	}
	if !paths["/customers/c1"] || !paths["/customers/c2"] {
		t.Fatalf("paths %v", paths)
	}
}

func TestConfigureRejects(t *testing.T) {
	for name, cfg := range map[string]map[string]any{
		"url":     {"url": "ftp://x", "timeout": "1s", "max_attempts": 1, "concurrency": 1},
		"secret":  {"url": "http://x", "secret": "whsec_!!!", "timeout": "1s", "max_attempts": 1, "concurrency": 1},
		"timeout": {"url": "http://x", "timeout": "soon", "max_attempts": 1, "concurrency": 1},
	} {
		t.Run(name, func(t *testing.T) {
			data, _ := json.Marshal(cfg)
			err := (&Sink{}).Configure(context.Background(), sdk.Config{JSON: data})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("got %v", err)
			}
		})
	}
}
