package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// retentionRecords writes n classified records with a large text each
// (so that their payloads dominate the state file), ids row_1...row_n.
func retentionRecords(t *testing.T, path string, n, textBytes int) {
	t.Helper()
	var b strings.Builder
	const phrase = "I want to cancel, I found a better deal. "
	text := strings.Repeat(phrase, textBytes/len(phrase)+1)[:textBytes]
	for i := 1; i <= n; i++ {
		line, _ := json.Marshal(map[string]any{
			"event": "classification.completed", "row_id": fmt.Sprintf("row_%d", i), "text": text,
			"classifications": map[string]any{"churn_risk": map[string]any{"label": "High", "confidence": 0.91}},
		})
		b.Write(line)
		b.WriteByte('\n')
	}
	writeFile(t, path, b.String())
}

// retentionHCL is a webhook pipeline with its retention block.
func retentionHCL(name, input, retry, retention string) string {
	return fmt.Sprintf(`
pipeline { name = %q }

source "file" "calls" {
  path = %q
}

sink "webhook" "crm" {
  inputs = [source.calls]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
  retry {
    %s
  }
  retention {
    %s
  }
}
`, name, input, retry, strings.ReplaceAll(retention, "  ", "\n    "))
}

// rejecting answers 400 to some webhook-ids (they go dead) and counts
// every request by id.
type rejecting struct {
	*receiver
	mu       sync.Mutex
	reject   map[string]bool
	requests map[string]int
}

func newRejecting(t *testing.T, ids ...string) *rejecting {
	r := &rejecting{receiver: newReceiver(t), reject: map[string]bool{}, requests: map[string]int{}}
	for _, id := range ids {
		r.reject[id] = true
	}
	r.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			id := req.Header.Get("webhook-id")
			r.mu.Lock()
			r.requests[id]++
			no := r.reject[id]
			r.mu.Unlock()
			if no {
				http.Error(w, "rejected by the test", http.StatusBadRequest)
				return
			}
			inner.ServeHTTP(w, req)
		})
	})
	return r
}

func (r *rejecting) accept() { r.mu.Lock(); r.reject = map[string]bool{}; r.mu.Unlock() }

func (r *rejecting) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.requests))
	for id, n := range r.requests {
		out[id] = n
	}
	return out
}

// outboxRow is one delivery as the state file holds it.
type outboxRow struct {
	pipeline, status string
	payload          int
}

func readOutbox(t *testing.T, path string) map[string]outboxRow {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT pipeline, id, status, length(payload) FROM deliveries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]outboxRow{}
	for rows.Next() {
		var r outboxRow
		var id string
		if err := rows.Scan(&r.pipeline, &id, &r.status, &r.payload); err != nil {
			t.Fatal(err)
		}
		out[r.pipeline+"/"+id] = r
	}
	return out
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	var n int64
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

var vacuumLine = regexp.MustCompile(`^removed ([\d,]+) delivered payloads, ([\d,]+) attempts, ([\d,]+) dead deliveries; state file ([\d.]+ MB) → ([\d.]+ MB)\n$`)

func atoiCommas(s string) int { n, _ := strconv.Atoi(strings.ReplaceAll(s, ",", "")); return n }

// A webhook pipeline delivers large records; once they are past the
// sink's retention, `pipeline state vacuum` drops their payloads and
// shrinks the state file, leaves dead (still replayable) and pending
// deliveries alone, and later runs, even a --full-refresh, send nothing
// twice.
func TestRetentionVacuumDropsDeliveredPayloads(t *testing.T) {
	dir := t.TempDir()
	const n, textBytes = 40, 100_000
	input := filepath.Join(dir, "calls.jsonl")
	retentionRecords(t, input, n, textBytes)
	dead := []string{"row_1", "row_2", "row_3"}
	rcv := newRejecting(t, dead...)
	// One attempt each: a 400 is dead at once.
	writeFile(t, filepath.Join(dir, "ret.hcl"), retentionHCL("ret", input, `schedule = ["0s"]`, `delivered = "1s"  dead = "1h"`))
	// Another pipeline on the same state whose deliveries are not due for
	// an hour: they stay pending.
	queuedInput := filepath.Join(dir, "queued.jsonl")
	retentionRecords(t, queuedInput, 5, textBytes)
	writeFile(t, filepath.Join(dir, "queued.hcl"), retentionHCL("queued", queuedInput, `schedule = ["1h"]`, `delivered = "1s"  attempts = "1s"  dead = "1s"`))
	statePath := filepath.Join(dir, ".pipeline", "state.db")

	run := pipeline(t, dir, rcv.env(), "run", "--json", "ret.hcl")
	if run.code != 2 { // 2: some deliveries are dead
		t.Fatalf("run: exit %d\n%s", run.code, run.stderr)
	}
	if s := parseSummary(t, run); s.Read != n {
		t.Fatalf("run read %d records, want %d\n%s", s.Read, n, run.stderr)
	}
	if q := pipeline(t, dir, rcv.env(), "run", "--no-wait", "queued.hcl"); q.code != 0 {
		t.Fatalf("queued run: exit %d\n%s", q.code, q.stderr)
	}
	sent := rcv.counts()
	if len(sent) != n {
		t.Fatalf("the endpoint got %d distinct deliveries, want %d", len(sent), n)
	}
	before := readOutbox(t, statePath)
	sizeBefore := fileSize(t, statePath)

	// Poll vacuum until every delivered payload is past its second.
	var payloads, attempts, deadRemoved int
	var vacuum string
	deadline := time.Now().Add(60 * time.Second)
	for payloads < n-len(dead) {
		if time.Now().After(deadline) {
			t.Fatalf("vacuum removed %d delivered payloads by the deadline, want %d\nlast: %s", payloads, n-len(dead), vacuum)
		}
		v := pipeline(t, dir, nil, "state", "vacuum")
		m := vacuumLine.FindStringSubmatch(v.stdout)
		if v.code != 0 || m == nil {
			t.Fatalf("vacuum: exit %d\nstdout: %q\nstderr: %s", v.code, v.stdout, v.stderr)
		}
		payloads += atoiCommas(m[1])
		attempts += atoiCommas(m[2])
		deadRemoved += atoiCommas(m[3])
		if atoiCommas(m[1]) > 0 {
			vacuum = strings.TrimSpace(v.stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("pipeline state vacuum: %s", vacuum)
	if payloads != n-len(dead) || deadRemoved != 0 {
		t.Fatalf("vacuum removed %d payloads and %d dead deliveries, want %d and 0", payloads, deadRemoved, n-len(dead))
	}
	sizeAfter := fileSize(t, statePath)
	if sizeAfter >= sizeBefore/2 {
		t.Fatalf("state file %d → %d bytes: want it at least halved", sizeBefore, sizeAfter)
	}
	t.Logf("state file %d → %d bytes", sizeBefore, sizeAfter)

	after := readOutbox(t, statePath)
	if len(after) != len(before) {
		t.Fatalf("%d deliveries before vacuum, %d after: rows must stay", len(before), len(after))
	}
	counts := map[string]int{}
	for key, r := range after {
		b := before[key]
		counts[r.pipeline+" "+r.status]++
		switch {
		case r.status != b.status:
			t.Errorf("%s: status %s → %s", key, b.status, r.status)
		case r.status == "delivered" && r.payload != 0:
			t.Errorf("%s: delivered, and its payload (%d bytes) is still there", key, r.payload)
		case r.status != "delivered" && (r.payload != b.payload || r.payload < textBytes):
			t.Errorf("%s: %s, payload %d → %d bytes: want it kept", key, r.status, b.payload, r.payload)
		}
	}
	if want := map[string]int{"ret delivered": n - len(dead), "ret dead": len(dead), "queued pending": 5}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Fatalf("deliveries by status %v, want %v", counts, want)
	}

	// Later runs send nothing twice: an incremental one reads nothing new,
	// and a --full-refresh one finds every id stored (dedupe does not
	// need the payload).
	for _, args := range [][]string{{"run", "ret.hcl"}, {"run", "--full-refresh", "ret.hcl"}} {
		if r := pipeline(t, dir, rcv.env(), args...); r.code != 0 && r.code != 2 {
			t.Fatalf("%v: exit %d\n%s", args, r.code, r.stderr)
		}
		if got := rcv.counts(); fmt.Sprint(got) != fmt.Sprint(sent) {
			t.Fatalf("%v sent again: requests %v, before %v", args, got, sent)
		}
	}

	// Dead deliveries are still inside their retention: replay sends them.
	rcv.accept()
	rep := pipeline(t, dir, rcv.env(), "replay", "ret.hcl", "--sink", "crm")
	if rep.code != 0 || !strings.Contains(rep.stderr, fmt.Sprintf("%d deliveries of sink crm queued again", len(dead))) {
		t.Fatalf("replay: exit %d\n%s", rep.code, rep.stderr)
	}
	for _, id := range dead {
		if !rcv.ids()[id] {
			t.Errorf("%s was not delivered by the replay", id)
		}
	}
}

// While a run holds the state file, vacuum refuses at once and says why.
func TestRetentionVacuumRefusesWhileRunning(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "calls.jsonl")
	retentionRecords(t, input, 1, 100)
	writeFile(t, filepath.Join(dir, "ret.hcl"), retentionHCL("ret", input, `schedule = ["0s"]`, ``))
	rcv := newReceiver(t)
	if r := pipeline(t, dir, rcv.env(), "run", "ret.hcl"); r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	// The next run's delivery waits at the endpoint, so the run holds the
	// state until the test lets it go.
	hold, arrived := make(chan struct{}), make(chan struct{}, 16)
	t.Cleanup(func() { close(hold) })
	rcv.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			select {
			case arrived <- struct{}{}:
			default:
			}
			select {
			case <-hold:
			case <-req.Context().Done():
			}
			inner.ServeHTTP(w, req)
		})
	})
	retentionRecords(t, input, 2, 100)
	cmd := exec.Command(bin("pipeline"), "run", "ret.hcl")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), rcv.env()...)
	var runErr strings.Builder
	cmd.Stderr = &runErr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Its delivery reaching the endpoint means the run holds its lock.
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait() // runErr is the run's until then
		t.Fatalf("the run's delivery never arrived\n%s", runErr.String())
	}
	v := pipeline(t, dir, nil, "state", "vacuum")
	if v.code != 75 || !strings.Contains(v.stderr, `pipeline "ret" is already running`) {
		t.Fatalf("vacuum while a run holds the state: exit %d\nstdout: %s\nstderr: %s", v.code, v.stdout, v.stderr)
	}
	t.Logf("vacuum refused: %s", strings.TrimSpace(v.stderr))
}

// A bad retention value is a config error that points at the attribute.
func TestRetentionBadValueIsAConfigError(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "calls.jsonl")
	retentionRecords(t, input, 1, 100)
	writeFile(t, filepath.Join(dir, "ret.hcl"), retentionHCL("ret", input, `schedule = ["0s"]`, `delivered = "a week"`))
	rcv := newReceiver(t)
	v := pipeline(t, dir, rcv.env(), "validate", "ret.hcl")
	if v.code == 0 || !strings.Contains(v.stderr, `retention: delivered: "a week" is not a duration`) || !strings.Contains(v.stderr, "ret.hcl:16") {
		t.Fatalf("validate: exit %d\n%s", v.code, v.stderr)
	}
}

// `pipeline run` prunes in the background with the sink's retention: a
// later run drops the payloads an earlier one delivered, once they are
// past it, without sending anything again.
func TestRetentionRunPrunesInTheBackground(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "calls.jsonl")
	retentionRecords(t, input, 5, 50_000)
	writeFile(t, filepath.Join(dir, "ret.hcl"), retentionHCL("ret", input, `schedule = ["0s"]`, `delivered = "1s"`))
	rcv := newRejecting(t)
	statePath := filepath.Join(dir, ".pipeline", "state.db")
	if r := pipeline(t, dir, rcv.env(), "run", "ret.hcl"); r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	sent := rcv.counts()
	deadline := time.Now().Add(60 * time.Second)
	for {
		pruned := 0
		for _, r := range readOutbox(t, statePath) {
			if r.status == "delivered" && r.payload == 0 {
				pruned++
			}
		}
		if pruned == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 5 delivered payloads pruned by later runs", pruned)
		}
		if r := pipeline(t, dir, rcv.env(), "run", "ret.hcl"); r.code != 0 {
			t.Fatalf("later run: exit %d\n%s", r.code, r.stderr)
		}
	}
	if got := rcv.counts(); fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("later runs sent again: requests %v, before %v", got, sent)
	}
}
