package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// freeAddr is a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func pushHCL(listen, url, secret string) string {
	return fmt.Sprintf(`
pipeline { name = "push" }

source "http" "push" {
  listen = %q
  path   = "/v1/records"
  token  = env("INGEST_TOKEN")
}

filter "risky" {
  inputs = [source.push]
  where  = "score > 0.5"
}

sink "webhook" "crm" {
  inputs = [filter.risky]
  url    = %q
  secret = %q
}
`, listen, url, secret)
}

type pushAnswer struct {
	status int
	body   string
	header http.Header
}

func post(t *testing.T, url, contentType string, body []byte, header map[string]string) pushAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return pushAnswer{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func waitHealthy(t *testing.T, base string, l *liveRun) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-l.exited:
			t.Fatalf("the run ended before serving (exit %d)\n%s", l.code, l.stderr())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s/healthz never answered 200\n%s", base, l.stderr())
}

// Records POSTed to source "http" as JSON lines, a JSON array and a gzip'd
// object go through the filter to a verifying webhook receiver: exactly the
// matching ones arrive, with the ids the 202s named and the posted fields;
// refused requests store nothing.
func TestHTTPPushToWebhook(t *testing.T) {
	rcv := newReceiver(t)
	dir := t.TempDir()
	listen := freeAddr(t)
	writeFile(t, filepath.Join(dir, "push.hcl"), pushHCL(listen, rcv.srv.URL+"/crm", rcv.secret.Encode()))
	l := startLive(t, dir, []string{"INGEST_TOKEN=s3cret"}, nil, "run", "--state", filepath.Join(dir, "state.db"), "push.hcl")
	base := "http://" + listen
	waitHealthy(t, base, l)
	url := base + "/v1/records"
	auth := map[string]string{"Authorization": "Bearer s3cret"}

	// Refused, each storing nothing.
	for _, c := range []struct {
		name, ct string
		body     []byte
		header   map[string]string
		status   int
		says     string
	}{
		{"no token", "application/x-ndjson", []byte(`{"row_id":"x1","score":0.9}`), nil, 401, "token"},
		{"wrong token", "application/x-ndjson", []byte(`{"row_id":"x2","score":0.9}`), map[string]string{"Authorization": "Bearer nope"}, 401, "token"},
		{"bad line", "application/x-ndjson", []byte("{\"row_id\":\"x3\",\"score\":0.9}\n{\"row_id\": \"x4\", \"score\": }\n"), auth, 400, "line 2, column"},
		{"not an object", "application/json", []byte(`[{"row_id":"x5","score":0.9}, 3]`), auth, 400, "record 2"},
		{"unsupported type", "text/csv", []byte("row_id,score\nx6,0.9\n"), auth, 415, "text/csv"},
	} {
		a := post(t, url, c.ct, c.body, c.header)
		if a.status != c.status || !strings.Contains(a.body, c.says) {
			t.Errorf("%s: %d %s; want %d saying %q", c.name, a.status, a.body, c.status, c.says)
		}
	}

	// Each record as posted, in the order the 202s name their ids.
	var posted []string
	var lines strings.Builder
	for i := 1; i <= 6; i++ {
		rec := fmt.Sprintf(`{"row_id":"n%d","score":%.1f,"meta":{"k":"v%d","tags":["t%d",null],"n":%d.5},"ok":%t}`, i, float64(i)/6, i, i, i, i%2 == 0)
		posted = append(posted, rec)
		lines.WriteString(rec + "\n")
	}
	array := []string{`{"row_id":"a1","score":0.7,"text":"caf\u00e9 \"quoted\"\nline"}`, `{"row_id":"a2","score":0.2}`}
	posted = append(posted, array...)
	single := `{"score": 0.99, "text": "no row_id: the id comes from the request", "when": "2026-12-03T10:00:00Z"}`
	posted = append(posted, single)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(single))
	zw.Close()
	posts := []struct {
		ct     string
		body   []byte
		header map[string]string
		n      int
	}{
		{"application/x-ndjson", []byte(lines.String()), auth, 6},
		{"application/json", []byte("[" + strings.Join(array, ",\n ") + "]"), auth, 2},
		{"application/json", gz.Bytes(), map[string]string{"Authorization": "Bearer s3cret", "Content-Encoding": "gzip"}, 1},
	}
	var ids []string
	for _, p := range posts {
		a := post(t, url, p.ct, p.body, p.header)
		var got struct {
			Accepted int      `json:"accepted"`
			IDs      []string `json:"ids"`
		}
		if a.status != http.StatusAccepted || json.Unmarshal([]byte(a.body), &got) != nil || got.Accepted != p.n || len(got.IDs) != p.n {
			t.Fatalf("post: %d %s; want 202 with %d ids", a.status, a.body, p.n)
		}
		ids = append(ids, got.IDs...)
	}
	postedByID := map[string]string{}
	fields := map[string]bool{} // every field of any posted record
	for i, id := range ids {
		postedByID[id] = posted[i]
		var m map[string]any
		json.Unmarshal([]byte(posted[i]), &m)
		for k := range m {
			fields[k] = true
		}
	}
	// n4, n5, n6 (score > 0.5), a1, and the gzip'd record.
	want := []string{"n4", "n5", "n6", "a1", ids[len(ids)-1]}
	waitFor(t, "the matching records at the receiver", 30*time.Second, func() bool { return len(rcv.ids()) >= len(want) })
	// A marker posted last: once it is there, the records read before it
	// have been routed too (instead of sleeping for what may still come).
	marker(t, url, auth, "m1", rcv)
	got := rcv.ids()
	delete(got, "m1")
	if len(got) != len(want) {
		t.Errorf("the receiver got %v, want %v", sortedKeys(got), want)
	}
	for _, id := range want {
		body, ok := rcv.body(id)
		if !ok {
			t.Errorf("%s did not arrive (got %v)", id, sortedKeys(got))
			continue
		}
		if diff := fieldDiff([]byte(postedByID[id]), body, fields); diff != "" {
			t.Errorf("%s: the delivered body differs from the posted record: %s\nposted:    %s\ndelivered: %s", id, diff, postedByID[id], body)
		}
	}

	// SIGINT: stops accepting, drains, commits, exits 130.
	code, _ := l.signal(syscall.SIGINT)
	if code != 130 {
		t.Fatalf("exit %d after SIGINT, want 130\n%s", code, l.stderr())
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the push API still answers after the run ended")
	}
	// A restart delivers nothing again: everything was acked and committed.
	before := rcv.total()
	l = startLive(t, dir, []string{"INGEST_TOKEN=s3cret"}, nil, "run", "--state", filepath.Join(dir, "state.db"), "push.hcl")
	waitHealthy(t, base, l)
	// The restarted run reads the inbox from its checkpoint in order: by
	// the time a new marker arrives, anything it re-read has been sent.
	marker(t, url, auth, "m2", rcv)
	if n := rcv.total(); n != before+1 {
		t.Errorf("a restart sent %d deliveries again", n-before-1)
	}
	l.signal(syscall.SIGTERM)
}

// fieldDiff compares a delivered body with the record as posted, field for
// field, by JSON value: "" when every posted field arrived with its value
// and nothing else did, except a null field that another record posted
// (records read in one batch share its merged schema).
func fieldDiff(posted, delivered []byte, others map[string]bool) string {
	var p, d map[string]any
	if err := json.Unmarshal(posted, &p); err != nil {
		return "posted: " + err.Error()
	}
	if err := json.Unmarshal(delivered, &d); err != nil {
		return "delivered: " + err.Error()
	}
	var diffs []string
	for k, v := range p {
		dv, ok := d[k]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s is missing", k))
			continue
		}
		if pj, dj := mustJSON(v), mustJSON(dv); pj != dj {
			diffs = append(diffs, fmt.Sprintf("%s is %s, posted %s", k, dj, pj))
		}
	}
	for k, v := range d {
		if _, ok := p[k]; !ok && (v != nil || !others[k]) {
			diffs = append(diffs, fmt.Sprintf("%s = %s was not posted", k, mustJSON(v)))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// marker posts one matching record with row_id id and waits until it
// arrives at rcv.
func marker(t *testing.T, url string, auth map[string]string, id string, rcv *receiver) {
	t.Helper()
	if a := post(t, url, "application/x-ndjson", []byte(`{"row_id":"`+id+`","score":0.99}`), auth); a.status != http.StatusAccepted {
		t.Fatalf("marker %s: %d %s", id, a.status, a.body)
	}
	waitFor(t, "marker "+id, 30*time.Second, func() bool { return rcv.ids()[id] })
}

// The engine's process group is SIGKILLed while a client posts, retrying
// each request with its Idempotency-Key until it gets a 202; after a
// restart every record that got a 202 reaches the sink, and nothing else.
func TestHTTPPushSurvivesSIGKILL(t *testing.T) {
	rcv := newReceiver(t)
	dir := t.TempDir()
	listen := freeAddr(t)
	writeFile(t, filepath.Join(dir, "push.hcl"), fmt.Sprintf(`
pipeline { name = "push-kill" }
source "http" "push" { listen = %q }
sink "webhook" "crm" {
  inputs = [source.push]
  url    = %q
  secret = %q
}
`, listen, rcv.srv.URL+"/crm", rcv.secret.Encode()))
	start := func() *exec.Cmd {
		cmd := exec.Command(bin("pipeline"), "run", "--state", filepath.Join(dir, "state.db"), "push.hcl")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		return cmd
	}
	url := "http://" + listen + "/v1/records"
	const requests, perRequest = 60, 20
	var mu sync.Mutex
	accepted := map[string]bool{}
	okRequests := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := 0; k < requests; k++ {
			var body strings.Builder
			for i := 0; i < perRequest; i++ {
				fmt.Fprintf(&body, `{"row_id":"c%d-%d","n":%d}`+"\n", k, i, i)
			}
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body.String()))
				req.Header.Set("Content-Type", "application/x-ndjson")
				req.Header.Set("Idempotency-Key", fmt.Sprintf("req-%d", k))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue // down: retry with the same key
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					continue
				}
				var got struct {
					IDs []string `json:"ids"`
				}
				json.Unmarshal(b, &got)
				mu.Lock()
				for _, id := range got.IDs {
					accepted[id] = true
				}
				okRequests++
				mu.Unlock()
				break
			}
		}
	}()
	cmd := start()
	waitFor(t, "15 accepted requests", 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return okRequests >= 15 })
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	mu.Lock()
	atKill := okRequests
	mu.Unlock()
	start()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the client did not get its requests accepted")
	}
	mu.Lock()
	defer mu.Unlock()
	if okRequests != requests || len(accepted) != requests*perRequest {
		t.Fatalf("%d requests accepted with %d ids, want %d and %d", okRequests, len(accepted), requests, requests*perRequest)
	}
	waitFor(t, "every accepted record at the receiver", time.Minute, func() bool { return len(rcv.ids()) >= len(accepted) })
	got := rcv.ids()
	for id := range accepted {
		if !got[id] {
			t.Errorf("%s got a 202 but never arrived", id)
		}
	}
	for id := range got {
		if !accepted[id] {
			t.Errorf("%s arrived but no 202 named it", id)
		}
	}
	t.Logf("killed after %d accepted requests; %d deliveries for %d records", atKill, rcv.total(), len(got))
}

// A sink that stopped acking holds accepted records pending: past
// max_pending requests get 429 with Retry-After and store nothing; once the
// sink is back, acceptance resumes and every accepted record arrives.
func TestHTTPPush429WhileTheSinkIsDown(t *testing.T) {
	dir := t.TempDir()
	listen := freeAddr(t)
	hold := filepath.Join(dir, "sink-is-down")
	writeFile(t, hold, "")
	out := filepath.Join(dir, "ids.txt")
	writeFile(t, filepath.Join(dir, "push.hcl"), fmt.Sprintf(`
pipeline { name = "push-429" }
plugin "sink" "crashy" { command = %q }
source "http" "push" {
  listen      = %q
  max_pending = 50
}
sink "crashy" "ids" {
  inputs = [source.push]
  path   = %q
}
`, bin("sink-crashy"), listen, out))
	l := startLive(t, dir, []string{"CRASHY_HOLD_WHILE=" + hold}, nil, "run", "--state", filepath.Join(dir, "state.db"), "push.hcl")
	waitHealthy(t, "http://"+listen, l)
	url := "http://" + listen + "/v1/records"
	batch := func(k int) []byte {
		var b strings.Builder
		for i := 0; i < 10; i++ {
			fmt.Fprintf(&b, `{"row_id":"r%d-%d"}`+"\n", k, i)
		}
		return []byte(b.String())
	}
	var accepted []int
	var refused pushAnswer
	for k := 0; k < 20 && refused.status == 0; k++ {
		a := post(t, url, "application/x-ndjson", batch(k), nil)
		switch a.status {
		case http.StatusAccepted:
			accepted = append(accepted, k)
		case http.StatusTooManyRequests:
			refused = a
		default:
			t.Fatalf("post %d: %d %s", k, a.status, a.body)
		}
	}
	if refused.status != http.StatusTooManyRequests || refused.header.Get("Retry-After") == "" || len(accepted) != 5 {
		t.Fatalf("accepted %d requests of 10 records, then %d (Retry-After %q) %s; want 5, then 429 with Retry-After",
			len(accepted), refused.status, refused.header.Get("Retry-After"), refused.body)
	}
	// The sink comes back: what was held is acked and committed, and
	// requests are accepted again.
	os.Remove(hold)
	waitFor(t, "acceptance to resume", 30*time.Second, func() bool {
		if a := post(t, url, "application/x-ndjson", batch(100), map[string]string{"Idempotency-Key": "resume"}); a.status == http.StatusAccepted {
			return true
		}
		return false
	})
	waitFor(t, "every accepted record in the sink", 30*time.Second, func() bool {
		b, _ := os.ReadFile(out)
		return strings.Count(string(b), "\n") >= 60
	})
	b, _ := os.ReadFile(out)
	got := strings.Fields(string(b))
	seen := map[string]bool{}
	for _, id := range got {
		seen[id] = true
	}
	for _, k := range append(accepted, 100) {
		for i := 0; i < 10; i++ {
			if id := fmt.Sprintf("r%d-%d", k, i); !seen[id] {
				t.Errorf("%s was accepted but is not in the sink", id)
			}
		}
	}
	if seen["r5-0"] {
		t.Error("the refused request's records reached the sink")
	}
	l.signal(syscall.SIGINT)
}

// pipeline serve runs a push source continuously next to the others, and
// its metrics count requests by status, accepted and pending records: while
// a sink holds the records they are pending, and the oldest has an age;
// once it acks them, nothing is.
func TestServeRunsPushSourcesWithMetrics(t *testing.T) {
	rcv := newReceiver(t)
	dir := t.TempDir()
	listen := freeAddr(t)
	hold := filepath.Join(dir, "sink-is-held")
	writeFile(t, hold, "")
	os.MkdirAll(filepath.Join(dir, "pipelines"), 0o755)
	writeFile(t, filepath.Join(dir, "pipelines", "push.hcl"), pushHCL(listen, rcv.srv.URL+"/crm", rcv.secret.Encode())+fmt.Sprintf(`
plugin "sink" "crashy" { command = %q }
sink "crashy" "held" {
  inputs = [source.push]
  path   = %q
}
`, bin("sink-crashy"), filepath.Join(dir, "held.txt")))
	l := startLive(t, dir, []string{"INGEST_TOKEN=tok", "CRASHY_HOLD_WHILE=" + hold}, nil, "serve", "--poll", "200ms", "--metrics-addr", "127.0.0.1:0", "pipelines")
	base := "http://" + listen
	waitFor(t, "the push API", 30*time.Second, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	auth := map[string]string{"Authorization": "Bearer tok"}
	for i := 0; i < 3; i++ {
		body := fmt.Sprintf(`{"row_id":"s%d","score":0.9}`+"\n"+`{"row_id":"q%d","score":0.1}`, i, i)
		if a := post(t, base+"/v1/records", "application/x-ndjson", []byte(body), auth); a.status != http.StatusAccepted {
			t.Fatalf("post: %d %s", a.status, a.body)
		}
	}
	post(t, base+"/v1/records", "application/x-ndjson", []byte(`{"row_id":"x"}`), nil) // 401
	waitFor(t, "the matching records", 30*time.Second, func() bool { return len(rcv.ids()) == 3 })

	m := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+/metrics)`).FindStringSubmatch(l.stderr())
	if m == nil {
		t.Fatalf("no metrics address logged:\n%s", l.stderr())
	}
	metrics := func() string {
		resp, err := http.Get(m[1])
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	gauge := func(body, name string) float64 {
		g := regexp.MustCompile(`(?m)^` + name + `\{pipeline="push",source="push"\} (\S+)$`).FindStringSubmatch(body)
		if g == nil {
			return -1
		}
		v, err := strconv.ParseFloat(g[1], 64)
		if err != nil {
			return -1
		}
		return v
	}
	// The held sink has acked nothing: all 6 records are pending, the
	// oldest since the first post.
	waitFor(t, "6 pending records with an age in the metrics", 10*time.Second, func() bool {
		body := metrics()
		return gauge(body, "pipeline_push_records_pending") == 6 && gauge(body, "pipeline_push_oldest_pending_age_seconds") > 0
	})
	os.Remove(hold)
	wants := []string{
		`pipeline_push_requests_total{code="202",pipeline="push",source="push"} 3`,
		`pipeline_push_requests_total{code="401",pipeline="push",source="push"} 1`,
		`pipeline_push_records_accepted_total{pipeline="push",source="push"} 6`,
		`pipeline_push_records_pending{pipeline="push",source="push"} 0`,
		`pipeline_push_oldest_pending_age_seconds{pipeline="push",source="push"} 0`,
	}
	var body []byte
	waitFor(t, "the push metrics", 10*time.Second, func() bool {
		resp, err := http.Get(m[1])
		if err != nil {
			return false
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range wants {
			if !strings.Contains(string(body), w) {
				return false
			}
		}
		return true
	})
	l.signal(syscall.SIGTERM)
}

// SIGINT while a sink holds what was read: the push API stops accepting
// (503 with Retry-After, /healthz 503) but keeps listening while the run
// drains and commits; once the sink acks, the run exits 130 and every
// record that got a 202 reached the sink.
func TestHTTPPush503WhileDraining(t *testing.T) {
	dir := t.TempDir()
	listen := freeAddr(t)
	hold := filepath.Join(dir, "sink-is-held")
	writeFile(t, hold, "")
	out := filepath.Join(dir, "ids.txt")
	writeFile(t, filepath.Join(dir, "push.hcl"), fmt.Sprintf(`
pipeline { name = "push-drain" }
plugin "sink" "crashy" { command = %q }
source "http" "push" { listen = %q }
sink "crashy" "ids" {
  inputs = [source.push]
  path   = %q
}
`, bin("sink-crashy"), listen, out))
	l := startLive(t, dir, []string{"CRASHY_HOLD_WHILE=" + hold}, nil,
		"run", "--progress-interval", "50ms", "--state", filepath.Join(dir, "state.db"), "push.hcl")
	base := "http://" + listen
	waitHealthy(t, base, l)
	url := base + "/v1/records"
	var accepted []string
	for k := 0; k < 3; k++ {
		var b strings.Builder
		for i := 0; i < 10; i++ {
			fmt.Fprintf(&b, `{"row_id":"d%d-%d","n":%d}`+"\n", k, i, i)
		}
		a := post(t, url, "application/x-ndjson", []byte(b.String()), nil)
		var got struct {
			IDs []string `json:"ids"`
		}
		if a.status != http.StatusAccepted || json.Unmarshal([]byte(a.body), &got) != nil || len(got.IDs) != 10 {
			t.Fatalf("post %d: %d %s", k, a.status, a.body)
		}
		accepted = append(accepted, got.IDs...)
	}
	// Every accepted record was read into the run (the sink holds it)
	// before the signal: they are what the drain delivers.
	l.waitLine("the 30 records read", 30*time.Second, func(s string) bool { return strings.Contains(s, "read 30 ") })
	signalled := time.Now()
	if err := l.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	l.waitUntil("/healthz to say the source is shutting down", 30*time.Second, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("/healthz during the drain: %v (the listener must stay open until the run has committed)", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "shutting down")
	})
	for i := 0; i < 3; i++ {
		a := post(t, url, "application/x-ndjson", []byte(`{"row_id":"late"}`), nil)
		if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
			t.Fatalf("a post during the drain: %d (Retry-After %q) %s; want 503 with Retry-After", a.status, a.header.Get("Retry-After"), a.body)
		}
	}
	select {
	case <-l.exited:
		t.Fatalf("the run exited (%d) while the sink still held its records\n%s", l.code, l.stderr())
	default:
	}
	os.Remove(hold)
	if code, _ := l.await(signalled); code != 130 {
		t.Fatalf("exit %d after SIGINT, want 130\n%s", code, l.stderr())
	}
	b, _ := os.ReadFile(out)
	seen := map[string]bool{}
	for _, id := range strings.Fields(string(b)) {
		seen[id] = true
	}
	for _, id := range accepted {
		if !seen[id] {
			t.Errorf("%s got a 202 before the signal but did not reach the sink", id)
		}
	}
	if seen["late"] {
		t.Error("a record refused with 503 reached the sink")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the push API still answers after the run ended")
	}
}
