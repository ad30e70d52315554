package transformhttp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/netguard"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// pkg is the plugin's main package, which TestTransform builds and starts
// as a process.
const pkg = "./cmd/transform-http"

// endpoint is a local model endpoint: it keeps every request body and
// answers with answer(records) or, when answer returns a status, with that.
type endpoint struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   []string
	requests atomic.Int32
}

func newEndpoint(t *testing.T, answer func(n int, records []json.RawMessage, w http.ResponseWriter)) *endpoint {
	t.Helper()
	e := &endpoint{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(e.requests.Add(1))
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusMethodNotAllowed)
			return
		}
		e.mu.Lock()
		e.bodies = append(e.bodies, string(body))
		e.mu.Unlock()
		var records []json.RawMessage
		if err := json.Unmarshal(body, &records); err != nil {
			http.Error(w, "not a JSON array: "+err.Error(), http.StatusBadRequest)
			return
		}
		answer(n, records, w)
	}))
	t.Cleanup(e.Close)
	return e
}

// takeBodies returns the bodies received so far and forgets them.
func (e *endpoint) takeBodies() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.bodies
	e.bodies = nil
	return out
}

// intentOf answers {"intent": …} from each record's text.
func intentOf(_ int, records []json.RawMessage, w http.ResponseWriter) {
	out := make([]any, len(records))
	for i, r := range records {
		var rec struct {
			Text string `json:"text"`
		}
		json.Unmarshal(r, &rec)
		switch {
		case strings.Contains(rec.Text, "refund"):
			out[i] = "refund"
		case rec.Text == "":
			out[i] = nil
		default:
			out[i] = "other"
		}
	}
	json.NewEncoder(w).Encode(out)
}

func cfgJSON(url string, extra string) string {
	c := `{"url": "` + url + `", "into": "classifications.intent", "batch_size": 100, "timeout": "5s", "concurrency": 4, "allow_private_networks": true, "retry": {"schedule": ["0s", "10ms", "10ms"]}`
	if extra != "" {
		c += ", " + extra
	}
	return c + "}"
}

var calls = []string{
	`{"row_id":"r1","text":"I want a refund","metadata":{"customer_id":"c1","plan":"pro"}}`,
	`{"row_id":"r2","text":"hello","metadata":{"customer_id":"c2"},"classifications":{"sentiment":"positive"}}`,
	`{"row_id":"r3","text":"refund now","n":3}`,
	`{"row_id":"r4","metadata":{"customer_id":"c4"}}`,
}

func checkBodies(t testing.TB, e *endpoint, want []string) {
	t.Helper()
	got := e.takeBodies()
	if len(got) != len(want) {
		t.Fatalf("the endpoint got %d requests, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("request %d body\n got %s\nwant %s", i+1, got[i], want[i])
		}
	}
}

func TestWholeRecordMergedNested(t *testing.T) {
	e := newEndpoint(t, intentOf)
	sdktest.TestTransform(t, func() sdk.Transform { return &Transform{} }, pkg, sdktest.TransformTest{
		Config:    cfgJSON(e.URL+"/classify", ""),
		Records:   calls,
		BatchRows: 2,
		Want: []string{
			`{"row_id":"r1","text":"I want a refund","metadata":{"customer_id":"c1","plan":"pro"},"classifications":{"intent":"refund"}}`,
			`{"row_id":"r2","text":"hello","metadata":{"customer_id":"c2"},"classifications":{"sentiment":"positive","intent":"other"}}`,
			`{"row_id":"r3","text":"refund now","n":3,"classifications":{"intent":"refund"}}`,
			`{"row_id":"r4","metadata":{"customer_id":"c4"},"classifications":{"intent":null}}`,
		},
		Check: func(t testing.TB, out []sdktest.Record) {
			// One request per input batch of two, each the whole records.
			checkBodies(t, e, []string{
				`[{"row_id":"r1","text":"I want a refund","metadata":{"customer_id":"c1","plan":"pro"}},{"row_id":"r2","text":"hello","metadata":{"customer_id":"c2"},"classifications":{"sentiment":"positive"}}]`,
				`[{"row_id":"r3","text":"refund now","n":3},{"row_id":"r4","metadata":{"customer_id":"c4"}}]`,
			})
		},
	})
}

func TestTopLevelIntoMixedResults(t *testing.T) {
	// Results of different JSON types: one raw JSON field, written back as
	// each result was; an existing field of that name is replaced.
	results := []string{`{"score":0.9,"tags":["a"]}`, `"plain"`, `42`, `null`}
	e := newEndpoint(t, func(_ int, records []json.RawMessage, w http.ResponseWriter) {
		io.WriteString(w, "["+strings.Join(results[:len(records)], ",")+"]")
	})
	sdktest.TestTransform(t, func() sdk.Transform { return &Transform{} }, pkg, sdktest.TransformTest{
		Config:    cfgJSON(e.URL, `"into": "label"`),
		Records:   []string{`{"row_id":"a","label":"old"}`, `{"row_id":"b"}`, `{"row_id":"c"}`, `{"row_id":"d","label":"old"}`},
		BatchRows: 4,
		Want: []string{
			`{"row_id":"a","label":{"score":0.9,"tags":["a"]}}`,
			`{"row_id":"b","label":"plain"}`,
			`{"row_id":"c","label":42}`,
			`{"row_id":"d","label":null}`,
		},
	})
}

func TestObjectResultsBecomeStruct(t *testing.T) {
	e := newEndpoint(t, func(_ int, records []json.RawMessage, w http.ResponseWriter) {
		out := make([]string, len(records))
		for i := range records {
			out[i] = fmt.Sprintf(`{"intent":"i%d","score":0.5}`, i)
		}
		io.WriteString(w, "["+strings.Join(out, ",")+"]")
	})
	tr := &Transform{}
	if err := tr.Configure(context.Background(), sdk.Config{Name: "t", JSON: []byte(cfgJSON(e.URL, `"into": "model.out"`))}); err != nil {
		t.Fatal(err)
	}
	recs, _, err := sdktest.Batches([]string{`{"row_id":"a"}`, `{"row_id":"b"}`}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer recs[0].Release()
	out, err := tr.Transform(context.Background(), sdk.NewBatch(recs[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Record.Release()
	if got, want := out.Record.Schema().Field(1).Type.String(), "struct<out: struct<intent: utf8 nullable, score: float64 nullable> nullable>"; got != want {
		t.Errorf("model is %s, want %s", got, want)
	}
	if out.ID(1) != "b" {
		t.Errorf("record 2 has id %q, want b", out.ID(1))
	}
}

func TestFieldsProjection(t *testing.T) {
	e := newEndpoint(t, intentOf)
	sdktest.TestTransform(t, func() sdk.Transform { return &Transform{} }, pkg, sdktest.TransformTest{
		Config:    cfgJSON(e.URL, `"fields": ["text", "metadata.customer_id"]`),
		Records:   calls,
		BatchRows: 4,
		Check: func(t testing.TB, out []sdktest.Record) {
			checkBodies(t, e, []string{
				`[{"text":"I want a refund","metadata":{"customer_id":"c1"}},{"text":"hello","metadata":{"customer_id":"c2"}},{"text":"refund now"},{"metadata":{"customer_id":"c4"}}]`,
			})
			if len(out) != 4 || !sdktest.SameJSON(out[0].JSON, `{"row_id":"r1","text":"I want a refund","metadata":{"customer_id":"c1","plan":"pro"},"classifications":{"intent":"refund"}}`) {
				t.Errorf("output %v", out)
			}
		},
	})
}

func TestFieldTree(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields []string
		want   string
	}{
		{"one", []string{"text"}, `{"text":"hi"}`},
		{"nested", []string{"m.a", "m.b"}, `{"m":{"a":1,"b":"x"}}`},
		{"whole object wins", []string{"m.a", "m"}, `{"m":{"a":1,"b":"x","c":{"d":true}}}`},
		{"deep", []string{"m.c.d", "text"}, `{"m":{"c":{"d":true}},"text":"hi"}`},
		{"absent", []string{"nope", "m.nope", "text.x"}, `{"m":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree, err := newFieldTree(tc.fields)
			if err != nil {
				t.Fatal(err)
			}
			recs, _, err := sdktest.Batches([]string{`{"text":"hi","m":{"a":1,"b":"x","c":{"d":true}}}`}, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer recs[0].Release()
			b := sdk.NewBatch(recs[0])
			if got := string(appendProjection(nil, arrowjson.NewEncoder(), tree.project(b.Record), 0)); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRetriesThenRecovers(t *testing.T) {
	// Each batch's request fails twice with 503 before it is answered.
	var failures sync.Map // body -> failures so far
	e := newEndpoint(t, func(_ int, records []json.RawMessage, w http.ResponseWriter) {
		key, _ := json.Marshal(records)
		v, _ := failures.LoadOrStore(string(key), new(atomic.Int32))
		if v.(*atomic.Int32).Add(1) <= 2 {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		intentOf(0, records, w)
	})
	sdktest.TestTransform(t, func() sdk.Transform { return &Transform{} }, pkg, sdktest.TransformTest{
		Config:    cfgJSON(e.URL, `"fields": ["text"]`),
		Records:   calls,
		BatchRows: 2,
		Want: []string{
			`{"row_id":"r1","text":"I want a refund","metadata":{"customer_id":"c1","plan":"pro"},"classifications":{"intent":"refund"}}`,
			`{"row_id":"r2","text":"hello","metadata":{"customer_id":"c2"},"classifications":{"sentiment":"positive","intent":"other"}}`,
			`{"row_id":"r3","text":"refund now","n":3,"classifications":{"intent":"refund"}}`,
			`{"row_id":"r4","metadata":{"customer_id":"c4"},"classifications":{"intent":null}}`,
		},
		Check: func(t testing.TB, out []sdktest.Record) {
			first := `[{"text":"I want a refund"},{"text":"hello"}]`
			second := `[{"text":"refund now"},{}]`
			// Three attempts each, the same bytes each time, in order.
			checkBodies(t, e, []string{first, first, first, second, second, second})
			failures.Clear()
		},
	})
}

func TestRetryAfterHonoured(t *testing.T) {
	e := newEndpoint(t, func(n int, records []json.RawMessage, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		intentOf(n, records, w)
	})
	tr := &Transform{}
	if err := tr.Configure(context.Background(), sdk.Config{Name: "t", JSON: []byte(cfgJSON(e.URL, ""))}); err != nil {
		t.Fatal(err)
	}
	var waited []time.Duration
	tr.sleep = func(ctx context.Context, d time.Duration) error { waited = append(waited, d); return nil }
	recs, _, _ := sdktest.Batches(calls[:1], 1)
	defer recs[0].Release()
	out, err := tr.Transform(context.Background(), sdk.NewBatch(recs[0]))
	if err != nil {
		t.Fatal(err)
	}
	out.Record.Release()
	if len(waited) != 2 || waited[0] != 0 || waited[1] != time.Second {
		t.Errorf("waited %v, want [0s 1s]: the 10ms of the schedule lengthened to the Retry-After", waited)
	}
}

// transformOne runs one batch of records through a Transform configured
// with cfg, outside the protocol, for the error cases.
func transformOne(t *testing.T, cfg string, records []string) (*Transform, error) {
	t.Helper()
	tr := &Transform{}
	if err := tr.Configure(context.Background(), sdk.Config{Name: "classify", JSON: []byte(cfg)}); err != nil {
		return tr, err
	}
	recs, _, err := sdktest.Batches(records, len(records))
	if err != nil {
		t.Fatal(err)
	}
	defer recs[0].Release()
	out, err := tr.Transform(context.Background(), sdk.NewBatch(recs[0]))
	if err == nil {
		out.Record.Release()
	}
	return tr, err
}

func TestWrongAnswerFailsTheBatch(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"too few", `["a","b"]`, "the response has 2 results for 3 records"},
		{"too many", `["a","b","c","d"]`, "the response has 4 results for 3 records"},
		{"not an array", `{"results":["a","b","c"]}`, "the response is not a JSON array of 3 results"},
		{"not JSON", `oops`, "the response is not a JSON array of 3 results"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEndpoint(t, func(_ int, _ []json.RawMessage, w http.ResponseWriter) { io.WriteString(w, tc.body) })
			// Credentials in the URL never reach a message.
			url := strings.Replace(e.URL, "http://", "http://user:hunter2@", 1) + "/classify?key=s3cret"
			records := []string{`{"row_id":"r1"}`, `{"row_id":"r2"}`, `{"row_id":"r3"}`, `{"row_id":"r4"}`}
			_, err := transformOne(t, cfgJSON(url, `"batch_size": 3, "concurrency": 1`), records)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, want := range []string{tc.want, `request 1 of 2 (records 1-3 of the batch, ids "r1" to "r3")`, "POST " + e.URL + "/classify:"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if strings.Contains(msg, "hunter2") || strings.Contains(msg, "s3cret") {
				t.Errorf("error %q shows the URL's credentials", msg)
			}
			if n := e.requests.Load(); n > 2 {
				t.Errorf("%d requests: a wrong answer is not retried", n)
			}
		})
	}
}

func TestClientErrorFailsAtOnce(t *testing.T) {
	e := newEndpoint(t, func(_ int, _ []json.RawMessage, w http.ResponseWriter) {
		http.Error(w, `{"error":"unknown field text"}`, http.StatusBadRequest)
	})
	_, err := transformOne(t, cfgJSON(e.URL, ""), calls)
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request") || !strings.Contains(err.Error(), "unknown field text") || !strings.Contains(err.Error(), "not retried") {
		t.Fatalf("error %v, want the 400 and its body", err)
	}
	if n := e.requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1: a 400 is not retried", n)
	}
}

func TestGivesUpAfterSchedule(t *testing.T) {
	e := newEndpoint(t, func(_ int, _ []json.RawMessage, w http.ResponseWriter) {
		http.Error(w, "down", http.StatusBadGateway)
	})
	_, err := transformOne(t, cfgJSON(e.URL, ""), calls)
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts: 502 Bad Gateway: down") {
		t.Fatalf("error %v, want it to give up after the schedule's 3 attempts", err)
	}
	if n := e.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

func TestConcurrencyKeepsOrder(t *testing.T) {
	var inFlight, most atomic.Int32
	e := newEndpoint(t, func(n int, records []json.RawMessage, w http.ResponseWriter) {
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if now <= m || most.CompareAndSwap(m, now) {
				break
			}
		}
		// Later requests tend to finish first.
		time.Sleep(time.Duration(20-n%20) * time.Millisecond)
		out := make([]json.RawMessage, len(records))
		for i, r := range records {
			var rec struct {
				N int `json:"n"`
			}
			json.Unmarshal(r, &rec)
			out[i] = json.RawMessage(fmt.Sprint(rec.N * 10))
		}
		json.NewEncoder(w).Encode(out)
	})
	var records, want []string
	for i := 0; i < 200; i++ {
		records = append(records, fmt.Sprintf(`{"row_id":"r%d","n":%d}`, i, i))
		want = append(want, fmt.Sprintf(`{"row_id":"r%d","n":%d,"times_ten":%d}`, i, i, i*10))
	}
	sdktest.TestTransform(t, func() sdk.Transform { return &Transform{} }, "", sdktest.TransformTest{
		Config:    cfgJSON(e.URL, `"into": "times_ten", "batch_size": 7, "concurrency": 8`),
		Records:   records,
		BatchRows: 100,
		Want:      want,
	})
	if most.Load() < 2 {
		t.Errorf("at most %d requests were in flight, want several", most.Load())
	}
	if most.Load() > 8 {
		t.Errorf("%d requests in flight, more than concurrency = 8", most.Load())
	}
}

func TestSSRFGuard(t *testing.T) {
	t.Setenv(netguard.EnvAllowPrivate, "")
	e := newEndpoint(t, intentOf)
	cfg := strings.Replace(cfgJSON(e.URL, ""), `"allow_private_networks": true`, `"allow_private_networks": false`, 1)
	_, err := transformOne(t, cfg, calls)
	if err == nil || !strings.Contains(err.Error(), "allow_private_networks") {
		t.Fatalf("error %v, want the loopback address refused with a pointer to allow_private_networks", err)
	}
	if n := e.requests.Load(); n != 0 {
		t.Errorf("%d requests reached the loopback server", n)
	}

	// The dial-time check, which holds whatever the URL check let through
	// (a public name that resolves to a private address): the URL is
	// swapped after Configure. Refused at once, not retried.
	tr := &Transform{}
	if err := tr.Configure(context.Background(), sdk.Config{Name: "t", JSON: []byte(strings.Replace(cfg, e.URL, "https://example.com", 1))}); err != nil {
		t.Fatal(err)
	}
	tr.cfg.URL = e.URL
	attempts := 0
	tr.sleep = func(ctx context.Context, d time.Duration) error { attempts++; return nil }
	recs, _, _ := sdktest.Batches(calls, 4)
	defer recs[0].Release()
	_, err = tr.Transform(context.Background(), sdk.NewBatch(recs[0]))
	if err == nil || !strings.Contains(err.Error(), "allow_private_networks") {
		t.Errorf("error %v, want the loopback address refused when dialled", err)
	}
	if attempts != 1 {
		t.Errorf("%d attempts, want 1: a refused address is not retried", attempts)
	}
	if n := e.requests.Load(); n != 0 {
		t.Errorf("%d requests reached the loopback server", n)
	}

	// Allowed, the same endpoint is called.
	if _, err := transformOne(t, cfgJSON(e.URL, ""), calls); err != nil {
		t.Fatalf("with allow_private_networks = true: %v", err)
	}
}

func TestConfigureErrors(t *testing.T) {
	for _, tc := range []struct{ name, cfg, want string }{
		{"bad into", `{"url": "https://example.com", "into": "a..b"}`, "into:"},
		{"reserved into", `{"url": "https://example.com", "into": "_pipeline_x"}`, "the engine's"},
		{"bad field", `{"url": "https://example.com", "into": "x", "fields": ["ok", ""]}`, "fields[1]"},
		{"batch size", `{"url": "https://example.com", "into": "x", "batch_size": 0}`, "batch_size"},
		{"concurrency", `{"url": "https://example.com", "into": "x", "concurrency": 0}`, "concurrency"},
		{"timeout", `{"url": "https://example.com", "into": "x", "timeout": "soon"}`, "timeout"},
		{"retry", `{"url": "https://example.com", "into": "x", "retry": {"schedule": []}}`, "retry"},
		{"url", `{"url": "ftp://example.com", "into": "x"}`, "url:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Transform{}).Configure(context.Background(), sdk.Config{Name: "t", JSON: []byte(tc.cfg)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one about %s", err, tc.want)
			}
		})
	}
}

func TestNestedIntoOverNonObject(t *testing.T) {
	e := newEndpoint(t, intentOf)
	_, err := transformOne(t, cfgJSON(e.URL, `"into": "text.intent"`), calls)
	if err == nil || !strings.Contains(err.Error(), `field "text" is utf8, not an object`) {
		t.Fatalf("error %v", err)
	}
}

func TestInfo(t *testing.T) {
	info := (&Transform{}).Info()
	if info.Kind != sdk.KindTransform || info.Type != "http" || info.Version == "" {
		t.Fatalf("info %+v", info)
	}
	types := map[string]sdk.Type{}
	for _, a := range info.Config {
		if a.Description == "" {
			t.Errorf("attribute %s has no description", a.Name)
		}
		types[a.Name] = a.Type
	}
	for name, want := range map[string]sdk.Type{
		"url": sdk.String, "fields": sdk.ListOf(sdk.String), "into": sdk.String, "batch_size": sdk.Number,
		"headers": sdk.MapOf(sdk.String), "timeout": sdk.Duration, "concurrency": sdk.Number,
		"allow_private_networks": sdk.Bool, "retry": "",
	} {
		if got, ok := types[name]; !ok || got != want {
			t.Errorf("attribute %s: type %q (declared %v), want %q", name, got, ok, want)
		}
	}
}

func TestHeadersSent(t *testing.T) {
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		io.WriteString(w, `["x"]`)
	}))
	defer srv.Close()
	if _, err := transformOne(t, cfgJSON(srv.URL, `"headers": {"Authorization": "Bearer tok"}`), calls[:1]); err != nil {
		t.Fatal(err)
	}
	if got := auth.Load(); got != "Bearer tok" {
		t.Errorf("Authorization %q", got)
	}
}
