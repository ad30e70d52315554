package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

const token = "s3cret-admin-token"

const churnHCL = `pipeline { name = "churn" }
source "file" "calls" {
  path = "calls.jsonl"
}
filter "high" {
  inputs = [source.calls]
  where  = "x > 1"
}
transform "enrich" {
  inputs = [filter.high]
  set    = { y = "x * 2" }
}
sink "webhook" "crm" {
  inputs = [transform.enrich]
  url    = "https://user:hunter2@crm.example/hook?api_key=k-123&v=1"
  secret = "whsec_dGVzdA=="
}
sink "file" "out" {
  inputs = [filter.high]
  path   = "out.jsonl"
}
`

// fakeBackend is serve as the API sees it.
type fakeBackend struct {
	mu      sync.Mutex
	ps      []Pipeline
	reloads int
	report  ReloadReport
}

func (b *fakeBackend) Pipelines() []Pipeline {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Pipeline(nil), b.ps...)
}

func (b *fakeBackend) Reload(context.Context) ReloadReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reloads++
	return b.report
}

// fixture is an admin server over a real state store.
type fixture struct {
	t       testing.TB
	store   *state.Store
	backend *fakeBackend
	srv     *httptest.Server
	now     time.Time
	router  routers.Router
	doc     *openapi3.T
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	file := filepath.Join(dir, "churn.hcl")
	if err := os.WriteFile(file, []byte(churnHCL), 0o644); err != nil {
		t.Fatal(err)
	}
	p, diags := config.Load(file)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	// The run log: an earlier run that succeeded, and one that a crash cut
	// short (its process died: the next run marks it interrupted).
	ctx := context.Background()
	started := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	id, err := st.BeginRun(ctx, "churn", started)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EndRun(ctx, id, started.Add(time.Minute), "succeeded", "", state.RunCounts{Read: 10, Filtered: 4, Delivered: 6}); err != nil {
		t.Fatal(err)
	}
	st.BeginRun(ctx, "churn", started.Add(time.Hour))
	b := &fakeBackend{ps: []Pipeline{{Name: "churn", File: file, State: "running", Config: p}}}
	f := &fixture{t: t, store: st, backend: b, now: time.Now().UTC().Truncate(time.Millisecond)}
	s := New(Options{Store: st, Backend: b, Token: token, Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "pipeline_records_read_total 10")
	})})
	f.srv = httptest.NewServer(s)
	t.Cleanup(f.srv.Close)
	loader := openapi3.NewLoader()
	f.doc, err = loader.LoadFromData(openAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3 document: %v", err)
	}
	f.doc.Servers = openapi3.Servers{{URL: f.srv.URL}}
	if f.router, err = legacy.NewRouter(f.doc); err != nil {
		t.Fatal(err)
	}
	return f
}

// seed stores deliveries of sink crm: n delivered ones d-0..d-(n-1), one
// retrying (r-1), one dead with a long response (x-1), and x-1 again in
// sink slack, also dead.
func (f *fixture) seed(n int) {
	f.t.Helper()
	ctx := context.Background()
	for _, sink := range []string{"crm", "slack"} {
		o := f.store.Outbox("churn", sink)
		if err := o.Begin(ctx); err != nil {
			f.t.Fatal(err)
		}
		var ds []state.Delivery
		if sink == "crm" {
			for i := range n {
				ds = append(ds, state.Delivery{ID: fmt.Sprintf("d-%d", i), Endpoint: "https://user:hunter2@crm.example?api_key=k-123", Payload: []byte(fmt.Sprintf(`{"customer":"c%d"}`, i))})
			}
			ds = append(ds, state.Delivery{ID: "r-1", Endpoint: "https://crm.example", Payload: []byte(`{"customer":"retry-me"}`)})
		}
		ds = append(ds, state.Delivery{ID: "x-1", Endpoint: "https://crm.example", Payload: []byte(`{"customer":"c-dead"}`)})
		if _, _, err := o.Enqueue(ctx, ds, f.now); err != nil {
			f.t.Fatal(err)
		}
		leased, _, err := o.Lease(ctx, f.now, 10000, 0, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		var rs []sdk.Result
		for i, d := range leased {
			at := f.now.Add(time.Duration(i) * time.Millisecond)
			switch {
			case strings.HasPrefix(d.ID, "d-"):
				rs = append(rs, sdk.Result{ID: d.ID, Attempt: sdk.Attempt{At: at, StatusCode: 200, Latency: 5 * time.Millisecond}, Outcome: sdk.Delivered})
			case d.ID == "r-1":
				rs = append(rs, sdk.Result{ID: d.ID, Attempt: sdk.Attempt{At: at, StatusCode: 503, Error: "503 Service Unavailable"}, Outcome: sdk.Retry, Next: f.now.Add(time.Hour)})
			default:
				rs = append(rs, sdk.Result{ID: d.ID, Attempt: sdk.Attempt{At: at, StatusCode: 400, Error: "400 Bad Request",
					Response: bytes.Repeat([]byte("e"), 5000)}, Outcome: sdk.Dead})
			}
		}
		if err := o.Record(ctx, rs, f.now); err != nil {
			f.t.Fatal(err)
		}
	}
}

// do sends a request and checks the answer against openapi.json.
func (f *fixture) do(method, path, tok string) (int, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	f.validate(req, resp, body)
	return resp.StatusCode, body
}

// validate checks a response against the documented one: its status code
// is listed and its body matches the schema.
func (f *fixture) validate(req *http.Request, resp *http.Response, body []byte) {
	f.t.Helper()
	if !strings.HasPrefix(req.URL.Path, "/api/") && req.URL.Path != "/healthz" && req.URL.Path != "/metrics" {
		return // the console's files
	}
	route, params, err := f.router.FindRoute(req)
	if err != nil {
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return // an undocumented path or method, refused as it should be
		}
		f.t.Errorf("%s %s: not in openapi.json: %v", req.Method, req.URL.Path, err)
		return
	}
	if route.Operation.Responses.Status(resp.StatusCode) == nil {
		f.t.Errorf("%s %s answered %d, which openapi.json does not list", req.Method, req.URL.Path, resp.StatusCode)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		f.t.Errorf("%s %s: the %d answer does not match openapi.json: %v\n%s", req.Method, req.URL.Path, resp.StatusCode, err, body)
	}
}

func (f *fixture) json(method, path string, want int, v any) {
	f.t.Helper()
	code, body := f.do(method, path, token)
	if code != want {
		f.t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	for _, tok := range []string{"", "wrong", token + "x"} {
		code, body := f.do("GET", "/api/pipelines", tok)
		if code != http.StatusUnauthorized || !strings.Contains(string(body), "token") {
			t.Errorf("token %q: %d %s, want 401", tok, code, body)
		}
	}
	if code, _ := f.do("GET", "/api/pipelines", token); code != 200 {
		t.Errorf("the right token: %d", code)
	}
	// No token configured: nothing is let in, also with an empty bearer.
	open := httptest.NewServer(New(Options{Store: f.store, Backend: f.backend}))
	defer open.Close()
	req, _ := http.NewRequest("GET", open.URL+"/api/pipelines", nil)
	req.Header.Set("Authorization", "Bearer ")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a server without a token let a request in: %d", resp.StatusCode)
	}
	// /healthz, /metrics and the console need no token.
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": "pipeline_records_read_total", "/": "<html"} {
		code, body := f.do("GET", path, "")
		if code != 200 || !strings.Contains(strings.ToLower(string(body)), strings.ToLower(want)) {
			t.Errorf("%s without a token: %d %.80s", path, code, body)
		}
	}
	code, body := f.do("GET", "/api/nope", token)
	if code != 404 || !strings.Contains(string(body), "no endpoint") {
		t.Errorf("an unknown endpoint: %d %s", code, body)
	}
}

// Every route is documented, and every documented operation is served.
func TestOpenAPICoversTheHandlers(t *testing.T) {
	f := newFixture(t)
	documented := map[string]bool{}
	for path, item := range f.doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	served := map[string]bool{"GET /healthz": true, "GET /metrics": true}
	for _, rt := range (&Server{}).api() {
		served[rt.pattern] = true
	}
	for k := range served {
		if !documented[k] {
			t.Errorf("%s is served but not in openapi.json", k)
		}
	}
	for k := range documented {
		if !served[k] {
			t.Errorf("%s is in openapi.json but not served", k)
		}
	}
	var doc map[string]any
	f.json("GET", "/api/openapi.json", 200, &doc)
	if doc["openapi"] != "3.0.3" {
		t.Errorf("served document: openapi = %v", doc["openapi"])
	}
}

func TestPipelines(t *testing.T) {
	f := newFixture(t)
	f.seed(3)
	var list struct{ Pipelines []pipelineJSON }
	f.json("GET", "/api/pipelines", 200, &list)
	if len(list.Pipelines) != 1 {
		t.Fatalf("%d pipelines", len(list.Pipelines))
	}
	p := list.Pipelines[0]
	if p.Name != "churn" || p.State != "running" || p.LastRun == nil || p.LastRun.Outcome != "running" || p.LastRun.EndedAt != nil || p.Graph != nil || p.Runs != nil {
		t.Errorf("pipeline: %+v", p)
	}
	var crm *sinkJSON
	for i := range p.Sinks {
		if p.Sinks[i].Name == "crm" {
			crm = &p.Sinks[i]
		}
	}
	if crm == nil || crm.Type != "webhook" || !crm.Action || crm.Deliveries != (countsJSON{Pending: 1, Retrying: 1, Delivered: 3, Dead: 1}) {
		t.Fatalf("sink crm: %+v", crm)
	}

	var one pipelineJSON
	f.json("GET", "/api/pipelines/churn", 200, &one)
	if one.Graph == nil {
		t.Fatal("no graph")
	}
	var nodes, edges []string
	for _, n := range one.Graph.Nodes {
		nodes = append(nodes, n.Kind+":"+n.ID+":"+n.Type)
	}
	for _, e := range one.Graph.Edges {
		edges = append(edges, e.From+">"+e.To)
	}
	slices.Sort(edges)
	if got := strings.Join(nodes, " "); got != "source:source.calls:file filter:filter.high: transform:transform.enrich: sink:sink.crm:webhook sink:sink.out:file" {
		t.Errorf("nodes: %s", got)
	}
	if got := strings.Join(edges, " "); got != "filter.high>sink.out filter.high>transform.enrich source.calls>filter.high transform.enrich>sink.crm" {
		t.Errorf("edges: %s", got)
	}
	if one.Runs == nil || len(*one.Runs) != 2 {
		t.Fatalf("runs: %+v", one.Runs)
	}
	if r := (*one.Runs)[1]; r.Outcome != "succeeded" || r.Counts.Read != 10 || r.EndedAt == nil || !r.EndedAt.Equal(time.Date(2026, 12, 1, 9, 1, 0, 0, time.UTC)) {
		t.Errorf("the earlier run: %+v", r)
	}
	// A new run marks the one still logged as running interrupted.
	f.store.BeginRun(context.Background(), "churn", time.Now())
	f.json("GET", "/api/pipelines/churn", 200, &one)
	if runs := *one.Runs; len(runs) != 3 || runs[0].Outcome != "running" || runs[1].Outcome != "interrupted" || runs[1].Error == "" {
		t.Errorf("after another run began: %+v", runs)
	}
	if code, _ := f.do("GET", "/api/pipelines/nope", token); code != 404 {
		t.Errorf("an unknown pipeline: %d", code)
	}
	// Secrets of the configuration and endpoint URLs appear nowhere.
	for _, path := range []string{"/api/pipelines", "/api/pipelines/churn", "/api/deliveries", "/api/deliveries?status=dead"} {
		_, body := f.do("GET", path, token)
		for _, secret := range []string{"hunter2", "k-123", "whsec_dGVzdA"} {
			if strings.Contains(string(body), secret) {
				t.Errorf("%s shows %q:\n%s", path, secret, body)
			}
		}
	}
}

func TestDeliveriesPagesAndFilters(t *testing.T) {
	f := newFixture(t)
	f.seed(7)
	type page struct {
		Deliveries []deliveryJSON
		NextCursor string `json:"next_cursor"`
	}
	// All of them, three at a time, newest change first, each once.
	var seen []string
	cursor := ""
	for range 10 {
		var p page
		f.json("GET", "/api/deliveries?limit=3&cursor="+cursor, 200, &p)
		for _, d := range p.Deliveries {
			seen = append(seen, d.Pipeline+"/"+d.Sink+"/"+d.ID)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if len(seen) != 10 {
		t.Fatalf("paged through %d deliveries, want 10: %v", len(seen), seen)
	}
	uniq := slices.Clone(seen)
	slices.Sort(uniq)
	if len(slices.Compact(uniq)) != 10 {
		t.Errorf("a delivery came twice: %v", seen)
	}
	var all page
	f.json("GET", "/api/deliveries?limit=1000", 200, &all)
	for i := 1; i < len(all.Deliveries); i++ {
		if all.Deliveries[i].UpdatedAt.After(all.Deliveries[i-1].UpdatedAt) {
			t.Errorf("not newest first: %v after %v", all.Deliveries[i].UpdatedAt, all.Deliveries[i-1].UpdatedAt)
		}
	}

	var dead page
	f.json("GET", "/api/deliveries?status=dead", 200, &dead)
	if len(dead.Deliveries) != 2 {
		t.Fatalf("dead: %+v", dead.Deliveries)
	}
	d := dead.Deliveries[0]
	if d.Status != "dead" || len(d.Log) != 1 || d.Log[0].StatusCode != 400 || len(d.Log[0].Response) != 4096 {
		t.Errorf("a dead delivery's attempt: %+v", d.Log)
	}
	var crmDead page
	f.json("GET", "/api/deliveries?status=dead&sink=crm", 200, &crmDead)
	if len(crmDead.Deliveries) != 1 || crmDead.Deliveries[0].Sink != "crm" {
		t.Errorf("dead of crm: %+v", crmDead.Deliveries)
	}
	var failed page
	f.json("GET", "/api/deliveries?status=failed", 200, &failed)
	if len(failed.Deliveries) != 1 || failed.Deliveries[0].ID != "r-1" || !failed.Deliveries[0].Retrying || failed.Deliveries[0].NextAt == nil {
		t.Errorf("failed (retrying): %+v", failed.Deliveries)
	}
	var q page
	f.json("GET", "/api/deliveries?q=RETRY-ME", 200, &q) // in the payload, any case
	if len(q.Deliveries) != 1 || q.Deliveries[0].ID != "r-1" {
		t.Errorf("q=RETRY-ME: %+v", q.Deliveries)
	}
	var recent, old page
	f.json("GET", "/api/deliveries?since=1h", 200, &recent)
	f.json("GET", "/api/deliveries?since="+f.now.Add(time.Hour).Format(time.RFC3339), 200, &old)
	if len(recent.Deliveries) != 10 || len(old.Deliveries) != 0 {
		t.Errorf("since: %d within the hour, %d after an hour from now", len(recent.Deliveries), len(old.Deliveries))
	}
	for _, bad := range []string{"status=lost", "since=yesterday", "cursor=garbage", "limit=0", "limit=x"} {
		if code, body := f.do("GET", "/api/deliveries?"+bad, token); code != 400 {
			t.Errorf("%s: %d %s, want 400", bad, code, body)
		}
	}
}

func TestDeliveryLookupAndReplay(t *testing.T) {
	f := newFixture(t)
	f.seed(2)
	var dead struct{ Deliveries []deliveryJSON }
	f.json("GET", "/api/deliveries?status=dead&sink=crm", 200, &dead)
	key := dead.Deliveries[0].Key
	var d deliveryJSON
	f.json("GET", "/api/deliveries/"+key, 200, &d)
	if d.ID != "x-1" || d.Sink != "crm" {
		t.Fatalf("by key: %+v", d)
	}
	// By id: d-0 is held by one sink; x-1 by two, so its key is needed.
	f.json("GET", "/api/deliveries/d-0", 200, &d)
	if d.ID != "d-0" || d.Status != "delivered" {
		t.Errorf("by id: %+v", d)
	}
	if code, body := f.do("GET", "/api/deliveries/x-1", token); code != 409 || !strings.Contains(string(body), "several sinks") {
		t.Errorf("an ambiguous id: %d %s", code, body)
	}
	if code, _ := f.do("GET", "/api/deliveries/nope", token); code != 404 {
		t.Errorf("an unknown delivery: %d", code)
	}

	var rep struct{ Replayed int }
	f.json("POST", "/api/deliveries/"+key+"/replay", 200, &rep)
	if rep.Replayed != 1 {
		t.Errorf("replayed %d", rep.Replayed)
	}
	f.json("GET", "/api/deliveries/"+key, 200, &d)
	if d.Status != "pending" || d.Attempts != 0 || len(d.Log) != 1 {
		t.Errorf("after a replay: %+v (the log is kept, attempts start again)", d)
	}
	if code, _ := f.do("POST", "/api/deliveries/"+key+"/replay", token); code != 409 {
		t.Errorf("replaying a pending delivery: %d, want 409", code)
	}
	// Bulk: dead by default, with the filters.
	f.json("POST", "/api/deliveries/replay?sink=slack", 200, &rep)
	if rep.Replayed != 1 {
		t.Errorf("bulk replay of slack's dead: %d", rep.Replayed)
	}
	f.json("POST", "/api/deliveries/replay?status=delivered&q=c1", 200, &rep)
	if rep.Replayed != 1 {
		t.Errorf("bulk replay of delivered matching c1: %d", rep.Replayed)
	}
	f.json("POST", "/api/deliveries/replay", 200, &rep)
	if rep.Replayed != 0 {
		t.Errorf("nothing dead is left, yet %d replayed", rep.Replayed)
	}
}

func TestPauseResume(t *testing.T) {
	f := newFixture(t)
	var st struct {
		Pipeline, Sink string
		Paused         bool
	}
	f.json("POST", "/api/pipelines/churn/sinks/crm/pause", 200, &st)
	if !st.Paused || st.Sink != "crm" {
		t.Errorf("pause: %+v", st)
	}
	paused, err := f.store.PausedSinks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := paused[state.SinkKey{Pipeline: "churn", Sink: "crm"}]; !ok || len(paused) != 1 {
		t.Errorf("stored pauses: %v", paused)
	}
	var p pipelineJSON
	f.json("GET", "/api/pipelines/churn", 200, &p)
	if p.State != "paused" {
		t.Errorf("state with a paused sink: %s", p.State)
	}
	for _, s := range p.Sinks {
		if s.Paused != (s.Name == "crm") {
			t.Errorf("sink %s: paused = %v", s.Name, s.Paused)
		}
	}
	f.json("POST", "/api/pipelines/churn/sinks/crm/resume", 200, &st)
	f.json("GET", "/api/pipelines/churn", 200, &p)
	if st.Paused || p.State != "running" {
		t.Errorf("after resume: %+v, state %s", st, p.State)
	}
	if code, body := f.do("POST", "/api/pipelines/churn/sinks/nope/pause", token); code != 404 || !strings.Contains(string(body), "crm") {
		t.Errorf("an unknown sink: %d %s", code, body)
	}
}

func TestReload(t *testing.T) {
	f := newFixture(t)
	f.backend.report = ReloadReport{Unchanged: []string{"churn"}, Errors: []FileErrors{{File: "broken.hcl",
		Diagnostics: []Diagnostic{{Severity: "error", Summary: "Unsupported argument", File: "broken.hcl", Line: 3, Column: 3}}}}}
	var rep ReloadReport
	f.json("POST", "/api/reload", 200, &rep)
	if f.backend.reloads != 1 || len(rep.Errors) != 1 || rep.Errors[0].Diagnostics[0].Line != 3 || rep.Added == nil {
		t.Errorf("reload: %+v (%d calls)", rep, f.backend.reloads)
	}
	if code, _ := f.do("GET", "/api/reload", token); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/reload: %d, want 405", code)
	}
}

// slowSource emits one batch of two records every 20 ms until the run
// drains.
type slowSource struct{}

func (slowSource) Read(ctx context.Context, _ []byte, fn func(host.ReadMsg) error) error {
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
		dec.Append([]byte(fmt.Sprintf(`{"n":%d,"x":5,"token":"t-%d"}`, 2*i, i)))
		dec.Append([]byte(fmt.Sprintf(`{"n":%d,"x":0}`, 2*i+1)))
		if err := fn(host.ReadMsg{Rec: dec.Flush(), Position: []byte(fmt.Sprint(i))}); err != nil {
			return err
		}
	}
}

type ackSink struct{}

func (ackSink) OpenStream(context.Context) (run.SinkStream, error) {
	s := &ackStream{acks: make(chan any, 64), done: make(chan struct{})}
	return s, nil
}

type ackStream struct {
	acks chan any
	done chan struct{}
	once sync.Once
}

func (s *ackStream) Send(rec arrow.RecordBatch, token any) error {
	rec.Release()
	s.acks <- token
	return nil
}
func (s *ackStream) Acks() <-chan any { return s.acks }
func (s *ackStream) Abort() error     { return nil }
func (s *ackStream) CloseSend() error { s.once.Do(func() { close(s.acks); close(s.done) }); return nil }
func (s *ackStream) Wait() error      { <-s.done; return nil }

func TestTail(t *testing.T) {
	f := newFixture(t)
	plan := &run.Plan{
		Pipeline: "churn",
		Sources:  []*run.Source{{Name: "calls", Plugin: slowSource{}}},
		Stages:   []run.Stage{&run.Filter{Name: "high", Where: "x > 1", Inputs: []string{"source.calls"}}},
		Sinks:    []*run.Sink{{Name: "out", Plugin: ackSink{}, Inputs: []string{"filter.high"}}},
	}
	drain := make(chan struct{})
	r, err := run.New(plan, run.Options{Store: f.store, Drain: drain})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	defer func() {
		close(drain)
		if err := <-done; err != nil && err != run.ErrInterrupted {
			t.Error(err)
		}
	}()
	f.backend.mu.Lock()
	f.backend.ps[0].Runner = r
	f.backend.mu.Unlock()

	req, _ := http.NewRequest("GET", f.srv.URL+"/api/pipelines/churn/nodes/filter.high/tail?n=3", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("tail: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			events = append(events, event+" "+data)
		}
	}
	if len(events) != 4 || !strings.HasPrefix(events[3], `end {"reason":"done","sent":3}`) {
		t.Fatalf("events:\n%s", strings.Join(events, "\n"))
	}
	for i, e := range events[:3] {
		var rec run.Tapped
		if err := json.Unmarshal([]byte(strings.TrimPrefix(e, "record ")), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Node != "filter.high" || !strings.Contains(string(rec.Record), `"x":5`) || !strings.Contains(string(rec.Record), `"token":"[redacted]"`) {
			t.Errorf("record %d: %s", i, e)
		}
	}
	for path, want := range map[string]int{
		"/api/pipelines/churn/nodes/filter.nope/tail":      404,
		"/api/pipelines/churn/nodes/source.calls/tail?n=0": 400,
		"/api/pipelines/nope/nodes/source.calls/tail":      404,
	} {
		if code, body := f.do("GET", path, token); code != want {
			t.Errorf("%s: %d %s, want %d", path, code, body, want)
		}
	}
	f.backend.mu.Lock()
	f.backend.ps[0].Runner = nil
	f.backend.mu.Unlock()
	if code, _ := f.do("GET", "/api/pipelines/churn/nodes/source.calls/tail", token); code != 409 {
		t.Errorf("tail of a pipeline not running: %d, want 409", code)
	}
}
