package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// flaky is a webhook endpoint whose answer the test switches.
type flaky struct {
	*receiver
	mu     sync.Mutex
	status int                     // answer for everything; 0: verify and accept
	only   map[string]int          // answer for these webhook-ids
	seen   map[string]map[int]bool // webhook-id -> distinct timestamps seen
}

func newFlaky(t *testing.T) *flaky {
	f := &flaky{receiver: newReceiver(t), only: map[string]int{}, seen: map[string]map[int]bool{}}
	f.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			code := f.status
			if c, ok := f.only[r.Header.Get("webhook-id")]; ok {
				code = c
			}
			f.mu.Unlock()
			if code != 0 {
				w.WriteHeader(code)
				return
			}
			inner.ServeHTTP(w, r)
		})
	})
	return f
}

func (f *flaky) set(status int) { f.mu.Lock(); f.status = status; f.mu.Unlock() }

func outboxHCL(input string) string {
	return fmt.Sprintf(`
pipeline { name = "churn" }

source "file" "calls" {
  path = %q
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.8"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
  retry {
    schedule = ["0s", "100ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]
  }
  circuit_breaker {
    failures = 100000
  }
}
`, input)
}

func wantHighChurn(t *testing.T) map[string]bool {
	want := map[string]bool{}
	for _, r := range readRecords(t, calls()) {
		if highChurn(r.value) {
			want[rowID(r.value)] = true
		}
	}
	return want
}

// The endpoint is down, the engine is SIGKILLed while it retries, the
// endpoint comes back, the engine runs again: everything arrives, with the
// same webhook-ids, and the source is not read again.
func TestOutboxSurvivesSIGKILLWhileTheEndpointIsDown(t *testing.T) {
	dir := t.TempDir()
	ep := newFlaky(t)
	ep.set(http.StatusServiceUnavailable)
	writeFile(t, filepath.Join(dir, "churn.hcl"), outboxHCL(calls()))

	cmd := exec.Command(bin("pipeline"), "run", "churn.hcl")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), ep.env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the outbox holds everything, the source position is
	// committed, and retries are under way.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		list := pipeline(t, dir, nil, "deliveries", "--json", "--status", "failed", "--limit", "1000", "churn.hcl")
		var ds []json.RawMessage
		json.Unmarshal([]byte(list.stdout), &ds)
		// Commits follow acks within 200 ms; wait for both.
		show := pipeline(t, dir, nil, "state", "show", "churn.hcl")
		if len(ds) == len(wantHighChurn(t)) && strings.Contains(show.stdout, " 1000 ") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	show := pipeline(t, dir, nil, "state", "show", "churn.hcl")
	if !strings.Contains(show.stdout, " 1000 ") {
		t.Fatalf("the source position should be committed once the deliveries are in the outbox:\n%s", show.stdout)
	}
	failed := pipeline(t, dir, nil, "deliveries", "--status", "failed", "--limit", "1000", "churn.hcl")
	if n := strings.Count(failed.stdout, " pending "); n != len(wantHighChurn(t)) {
		t.Fatalf("%d failed deliveries listed, want %d:\n%s", n, len(wantHighChurn(t)), failed.stdout)
	}
	if !strings.Contains(failed.stdout, "503 Service Unavailable") {
		t.Errorf("the log should show the 503s:\n%s", failed.stdout)
	}

	ep.set(0) // the endpoint is back
	res := pipeline(t, dir, ep.env(), "run", "--json", "churn.hcl")
	if res.code != 0 {
		t.Fatalf("second run: exit %d\n%s", res.code, res.stderr)
	}
	s := parseSummary(t, res)
	if s.Read != 0 {
		t.Errorf("second run read %d records: the source must not be read again", s.Read)
	}
	got := ep.ids()
	for id := range wantHighChurn(t) {
		if !got[id] {
			t.Errorf("%s never arrived", id)
		}
	}
	if len(got) != len(wantHighChurn(t)) || len(ep.failures) > 0 {
		t.Errorf("%d arrived, want %d; %d failed verification", len(got), len(wantHighChurn(t)), len(ep.failures))
	}
	if !strings.Contains(res.stderr, fmt.Sprintf("sink crm: %d delivered, 0 dead, 0 pending", len(wantHighChurn(t)))) {
		t.Errorf("summary:\n%s", res.stderr)
	}
}

// A 400 goes to the dead letter at once; replay sends it again with the
// same id once the endpoint accepts it.
func TestDeadLetterAndReplay(t *testing.T) {
	dir := t.TempDir()
	ep := newFlaky(t)
	victim := "row_6"
	if !wantHighChurn(t)[victim] {
		t.Fatalf("test data changed: %s is not a high-churn record", victim)
	}
	ep.only[victim] = http.StatusBadRequest
	writeFile(t, filepath.Join(dir, "churn.hcl"), outboxHCL(calls()))

	res := pipeline(t, dir, ep.env(), "run", "--json", "churn.hcl")
	if res.code != 2 { // completed, but a delivery went dead
		t.Fatalf("exit %d, want 2\n%s", res.code, res.stderr)
	}
	if ep.ids()[victim] || len(ep.ids()) != len(wantHighChurn(t))-1 {
		t.Fatalf("delivered %d; %s should be dead", len(ep.ids()), victim)
	}
	if !strings.Contains(res.stderr, "1 deliveries of sink crm are dead") {
		t.Errorf("the run should say what is dead:\n%s", res.stderr)
	}
	dead := pipeline(t, dir, nil, "deliveries", "--status", "dead", "--json", "churn.hcl")
	var ds []struct {
		ID  string `json:"id"`
		Log []struct {
			StatusCode int `json:"status_code"`
		} `json:"log"`
	}
	if err := json.Unmarshal([]byte(dead.stdout), &ds); err != nil || len(ds) != 1 || ds[0].ID != victim || len(ds[0].Log) != 1 || ds[0].Log[0].StatusCode != 400 {
		t.Fatalf("dead letter: %s (%v)", dead.stdout, err)
	}

	ep.mu.Lock()
	delete(ep.only, victim)
	ep.mu.Unlock()
	rep := pipeline(t, dir, ep.env(), "replay", "churn.hcl", "--sink", "crm")
	if rep.code != 0 || !strings.Contains(rep.stderr, "1 deliveries of sink crm queued again") {
		t.Fatalf("replay: exit %d\n%s", rep.code, rep.stderr)
	}
	if !ep.ids()[victim] {
		t.Fatalf("%s was not sent again\n%s", victim, rep.stderr)
	}
	if after := pipeline(t, dir, nil, "deliveries", "--status", "dead", "churn.hcl"); !strings.Contains(after.stdout, "no deliveries") {
		t.Fatalf("still dead after replay:\n%s", after.stdout)
	}
}

// Without the opt-in, a loopback endpoint is refused and dead-lettered;
// the refusal says how to opt in.
func TestLoopbackIsRefusedWithoutOptIn(t *testing.T) {
	dir := t.TempDir()
	ep := newFlaky(t)
	writeFile(t, filepath.Join(dir, "churn.hcl"), outboxHCL(calls()))
	cmd := exec.Command(bin("pipeline"), "validate", "churn.hcl")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), ep.env()...)
	for i, e := range cmd.Env {
		if strings.HasPrefix(e, "PIPELINE_ALLOW_PRIVATE_NETWORKS=") {
			cmd.Env[i] = "PIPELINE_ALLOW_PRIVATE_NETWORKS="
		}
	}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "allow_private_networks") || !strings.Contains(string(out), "loopback") {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	if ep.total() != 0 {
		t.Fatal("the endpoint was reached")
	}
}

// order_by delivers records with the same key one at a time, in source
// order, even when the first of them has to be retried.
func TestOrderByKeepsSourceOrderPerKey(t *testing.T) {
	dir := t.TempDir()
	ep := newFlaky(t)
	var mu sync.Mutex
	var order []string
	tries := map[string]int{}
	ep.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("webhook-id")
			mu.Lock()
			tries[id]++
			n := tries[id]
			if id != "r1" || n > 2 {
				order = append(order, id)
			}
			mu.Unlock()
			if id == "r1" && n <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			inner.ServeHTTP(w, r)
		})
	})
	var in strings.Builder
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(&in, `{"row_id":"r%d","metadata":{"customer_id":"c%d"}}`+"\n", i, 2-i%2)
	}
	input := filepath.Join(dir, "in.jsonl")
	writeFile(t, input, in.String())
	writeFile(t, filepath.Join(dir, "p.hcl"), fmt.Sprintf(`
source "file" "in" {
  path = %q
}
sink "webhook" "crm" {
  inputs   = [source.in]
  url      = env("CRM_WEBHOOK_URL")
  secret   = env("CRM_WEBHOOK_SECRET")
  order_by = "metadata.customer_id"
  retry {
    schedule = ["0s", "100ms", "100ms", "100ms"]
  }
}
`, input))
	if res := pipeline(t, dir, ep.env(), "run", "p.hcl"); res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	pos := map[string]int{}
	for i, id := range order {
		pos[id] = i
	}
	if len(pos) != 6 || !(pos["r1"] < pos["r3"] && pos["r3"] < pos["r5"]) || !(pos["r2"] < pos["r4"] && pos["r4"] < pos["r6"]) {
		t.Fatalf("arrival order %v: each customer's records must arrive in source order", order)
	}
	// c2's records did not wait for c1's retries.
	if pos["r2"] > pos["r1"] {
		t.Errorf("arrival order %v: c2 should not wait behind c1", order)
	}

	// A typo in the expression is a validate-time error at its column.
	writeFile(t, filepath.Join(dir, "bad.hcl"), fmt.Sprintf(`
source "file" "in" {
  path = %q
}
sink "webhook" "crm" {
  inputs   = [source.in]
  url      = "http://127.0.0.1:1/x"
  secret   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
  order_by = "metadata.customr_id"
}
`, input))
	res := pipeline(t, dir, nil, "validate", "bad.hcl")
	// The source's schema is a sample: a field it lacks may come later, so
	// the misspelling is a warning that suggests the field it resembles.
	if res.code != 0 || !strings.Contains(res.stderr, "Warning: Field \"metadata.customr_id\" is not in the sample") ||
		!strings.Contains(res.stderr, "bad.hcl:9:") || !strings.Contains(res.stderr, `Did you mean "metadata.customer_id"?`) {
		t.Fatalf("validate: exit %d\n%s", res.code, res.stderr)
	}
}

// --no-wait leaves pending deliveries queued and says how many.
func TestNoWaitLeavesPendingDeliveriesQueued(t *testing.T) {
	dir := t.TempDir()
	ep := newFlaky(t)
	ep.set(http.StatusServiceUnavailable)
	writeFile(t, filepath.Join(dir, "churn.hcl"), outboxHCL(calls()))
	res := pipeline(t, dir, ep.env(), "run", "--no-wait", "--json", "churn.hcl")
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	n := len(wantHighChurn(t))
	var s struct {
		Outbox map[string]struct{ Pending, Delivered int } `json:"outbox"`
	}
	json.Unmarshal([]byte(res.stdout), &s)
	if s.Outbox["crm"].Pending != n || !strings.Contains(res.stderr, fmt.Sprintf("%d deliveries of sink crm stay queued", n)) {
		t.Fatalf("outbox %+v\n%s", s.Outbox, res.stderr)
	}
	ep.set(0)
	again := pipeline(t, dir, ep.env(), "run", "--json", "churn.hcl")
	if again.code != 0 || len(ep.ids()) != n {
		t.Fatalf("the next run delivered %d of %d\n%s", len(ep.ids()), n, again.stderr)
	}
}
