package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// generated writes n JSONL records with distinct row_ids.
func generated(t *testing.T, dir string, n int) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"row_id":"r%06d","n":%d,"classifications":{"churn_risk":{"label":"High","confidence":0.9}}}`+"\n", i, i)
	}
	path := filepath.Join(dir, "in.jsonl")
	writeFile(t, path, b.String())
	return path
}

func twoSinksHCL(input, ids, out, extra string) string {
	return fmt.Sprintf(`
pipeline { name = "two" }

plugin "sink" "crashy" {
  command = %q
}

source "file" "in" {
  path       = %q
  batch_rows = 500
}

sink "crashy" "slow" {
  inputs = [source.in]
  path   = %q
}

sink "file" "out" {
  inputs = [source.in]
  path   = %q
  format = "jsonl"
}
%s
`, bin("sink-crashy"), input, ids, out, extra)
}

// rowIDs counts each row_id in a JSONL file.
func rowIDs(t *testing.T, path string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var v struct {
			RowID string `json:"row_id"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("%s: %v: %q", path, err, line)
		}
		out[v.RowID]++
	}
	return out
}

var aheadRE = regexp.MustCompile(`\bout \+(\d+)`)

// One sink's progress does not hold the other back: after a SIGKILL, the
// fast sink is not sent again what it had acked while the slow one had not
// (issue 10, item 4). The slow sink stops acking after 4 batches; the run
// is killed once the file sink has acked and committed all it was sent.
func TestSIGKILLResendsEachSinkOnlyWhatItHadNotAcked(t *testing.T) {
	const total = 20000
	dir := t.TempDir()
	input := generated(t, dir, total)
	ids, out := filepath.Join(dir, "ids.txt"), filepath.Join(dir, "out.jsonl")
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, twoSinksHCL(input, ids, out, ""))
	state := filepath.Join(dir, "state.db")

	cmd := exec.Command(bin("pipeline"), "run", "--state", state, hcl)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CRASHY_BLOCK_AFTER=4")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

	// Wait until everything the file sink wrote is acked and committed as
	// its own progress: 2,000 records are committed for both sinks (the
	// slow one acked 4 batches of 500), the file sink is ahead by the rest.
	var written, ahead int
	deadline := time.Now().Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("the file sink never settled: %d lines written, %d committed ahead\nrun's stderr:\n%s", written, ahead, stderr.String())
		}
		select {
		case err := <-done:
			t.Fatalf("the run ended before the kill (%v):\n%s", err, stderr.String())
		default:
		}
		data, _ := os.ReadFile(out)
		written = strings.Count(string(data), "\n")
		if written <= 2000 {
			time.Sleep(50 * time.Millisecond)
			continue // not yet past what the slow sink acks
		}
		show := pipeline(t, dir, nil, "state", "show", "--state", state)
		if m := aheadRE.FindStringSubmatch(show.stdout); m != nil {
			ahead, _ = strconv.Atoi(m[1])
		}
		if written > 2000 && ahead == written-2000 && strings.Contains(show.stdout, " 2000 ") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	if written >= total {
		t.Fatalf("the file sink got everything before the kill (%d lines); the slow sink did not hold the run back", written)
	}

	r := pipeline(t, dir, nil, "run", "--state", state, hcl)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	got := rowIDs(t, out)
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	if len(got) != total || dups != 0 {
		t.Fatalf("out.jsonl holds %d distinct records (want %d) and %d duplicates (want 0: the file sink had acked all %d lines it wrote before the kill)", len(got), total, dups, written)
	}
	slow := map[string]bool{}
	for _, id := range lines(t, ids) {
		slow[id] = true
	}
	if len(slow) != total {
		t.Fatalf("the slow sink has %d distinct records, want %d", len(slow), total)
	}
	t.Logf("file sink: %d lines before the kill, none sent again; slow sink got the %d records it had not acked", written, total-2000)
}

// A failing sink stops the run, but the others finish what they were sent
// (an action sink delivers what it queued) and keep it: the next run sends
// them only what is new to them (issue 10, item 5).
func TestFailingSinkLetsTheOthersFinish(t *testing.T) {
	const total = 5000
	dir := t.TempDir()
	input := generated(t, dir, total)
	ids, out := filepath.Join(dir, "ids.txt"), filepath.Join(dir, "out.jsonl")
	rcv := newReceiver(t)
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, twoSinksHCL(input, ids, out, `
sink "webhook" "crm" {
  inputs = [source.in]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
}
`))
	state := filepath.Join(dir, "state.db")
	r := pipeline(t, dir, append(rcv.env(), "CRASHY_FAIL_AFTER=2"), "run", "--state", state, hcl)
	if r.code == 0 {
		t.Fatalf("the run succeeded although sink slow failed\n%s", r.stderr)
	}
	for _, want := range []string{"sink slow failed", "failing on purpose on batch 3", "Fix the cause and run again"} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("stderr does not say %q:\n%s", want, r.stderr)
		}
	}
	// Every delivery the webhook sink queued in the failed run was made.
	sum := pipeline(t, dir, nil, "deliveries", "--summary", "--json", "--state", state)
	var eps []struct {
		Pending, Delivered, Dead int
	}
	if err := json.Unmarshal([]byte(sum.stdout), &eps); err != nil || len(eps) != 1 {
		t.Fatalf("deliveries --summary --json: %v\n%s%s", err, sum.stdout, sum.stderr)
	}
	if eps[0].Pending != 0 || eps[0].Delivered == 0 || eps[0].Delivered != len(rcv.ids()) {
		t.Fatalf("after the failed run the outbox has %d pending, %d delivered; the endpoint got %d", eps[0].Pending, eps[0].Delivered, len(rcv.ids()))
	}
	firstOut := len(rowIDs(t, out))
	firstDelivered := rcv.total()

	r = pipeline(t, dir, rcv.env(), "run", "--state", state, hcl)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	got := rowIDs(t, out)
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	if len(got) != total || dups != 0 {
		t.Fatalf("out.jsonl: %d distinct (want %d), %d duplicates (want 0; it had %d records after the failed run)", len(got), total, dups, firstOut)
	}
	if len(rcv.ids()) != total || rcv.total() != total {
		t.Fatalf("the endpoint got %d distinct deliveries in %d requests, want %d in %d (%d before the rerun)", len(rcv.ids()), rcv.total(), total, total, firstDelivered)
	}
}

// syncBuffer is a bytes.Buffer safe for a process to write while a test reads it.
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
