package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// churnHCL is pipelines/churn.hcl's shape with a test input and batch size.
func churnHCL(input string, batchRows int, extra string) string {
	return fmt.Sprintf(`
pipeline { name = "churn" }

source "file" "calls" {
  path       = %q
  batch_rows = %d
  %s
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.8"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
}
`, input, batchRows, extra)
}

func calls() string { return filepath.Join(repoRoot(), "testdata", "calls.jsonl") }

func TestEndToEndWebhookGetsExactlyTheFilteredRecords(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t)
	writeFile(t, filepath.Join(dir, "churn.hcl"), churnHCL(calls(), 128, ""))

	res := pipeline(t, dir, rcv.env(), "run", "--json", "churn.hcl")
	if res.code != 0 {
		t.Fatalf("run exited %d\n%s", res.code, res.stderr)
	}
	records := readRecords(t, calls())
	want := map[string]string{}
	for _, r := range records {
		if highChurn(r.value) {
			want[rowID(r.value)] = r.raw
		}
	}
	if len(want) < 50 {
		t.Fatalf("test data has only %d matching records", len(want))
	}
	got := rcv.ids()
	if len(got) != len(want) {
		t.Errorf("receiver got %d records, want %d", len(got), len(want))
	}
	for id, raw := range want {
		body, ok := rcv.body(id)
		if !ok {
			t.Errorf("record %s was not delivered", id)
			continue
		}
		if !jsonEqual(body, []byte(raw)) {
			t.Errorf("record %s: body differs from the input record\n got: %s\nwant: %s", id, body, raw)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("record %s should have been filtered out", id)
		}
	}
	if len(rcv.failures) > 0 {
		t.Errorf("%d deliveries failed verification: %v", len(rcv.failures), rcv.failures[0])
	}
	s := parseSummary(t, res)
	if s.Read != int64(len(records)) || s.Delivered != int64(len(want)) || s.Filtered != int64(len(records)-len(want)) {
		t.Errorf("summary %+v; want read %d, delivered %d", s, len(records), len(want))
	}
	if !strings.Contains(res.stderr, "churn done: read 1,000") {
		t.Errorf("no summary line on stderr:\n%s", res.stderr)
	}
}

func TestIncrementalRunsDeliverOnlyNewRecords(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t)
	input := copyFile(t, calls(), dir)
	writeFile(t, filepath.Join(dir, "churn.hcl"), churnHCL(input, 100, ""))

	first := parseSummary(t, pipeline(t, dir, rcv.env(), "run", "--json", "churn.hcl"))
	if first.Delivered == 0 || int(first.Delivered) != rcv.total() {
		t.Fatalf("first run: %+v, receiver got %d", first, rcv.total())
	}
	rcv.reset()
	second := parseSummary(t, pipeline(t, dir, rcv.env(), "run", "--json", "churn.hcl"))
	if second.Read != 0 || second.Delivered != 0 || rcv.total() != 0 {
		t.Fatalf("second run on unchanged input: %+v, receiver got %d", second, rcv.total())
	}

	// Append 10 records, some of them matching.
	var extra bytes.Buffer
	wantNew := map[string]bool{}
	for i := 0; i < 10; i++ {
		label, conf := "High", 0.95
		if i%3 == 0 {
			label, conf = "Low", 0.2
		}
		id := fmt.Sprintf("row_new_%d", i)
		fmt.Fprintf(&extra, `{"event":"classification.completed","row_id":%q,"text":"Jag säger upp avtalet","classifications":{"churn_risk":{"label":%q,"confidence":%v}},"metadata":{"queue":"retention"}}`+"\n", id, label, conf)
		if label == "High" {
			wantNew[id] = true
		}
	}
	f, err := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(extra.Bytes())
	f.Close()

	rcv.reset()
	third := parseSummary(t, pipeline(t, dir, rcv.env(), "run", "--json", "churn.hcl"))
	if third.Read != 10 || third.Delivered != int64(len(wantNew)) {
		t.Fatalf("third run: %+v, want read 10, delivered %d", third, len(wantNew))
	}
	got := rcv.ids()
	for id := range wantNew {
		if !got[id] {
			t.Errorf("new record %s not delivered", id)
		}
	}
	if len(got) != len(wantNew) {
		t.Errorf("delivered %v, want %v", got, wantNew)
	}

	// --full-refresh starts over.
	rcv.reset()
	full := parseSummary(t, pipeline(t, dir, rcv.env(), "run", "--json", "--full-refresh", "churn.hcl"))
	if full.Read != 1010 || full.Delivered != first.Delivered+int64(len(wantNew)) {
		t.Fatalf("full refresh: %+v", full)
	}
}

func TestSIGKILLMidRunLosesNothing(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t)
	rcv.setDelay(20 * time.Millisecond)
	writeFile(t, filepath.Join(dir, "churn.hcl"), churnHCL(calls(), 20, ""))

	cmd := exec.Command(bin("pipeline"), "run", "churn.hcl")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), rcv.env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for rcv.total() < 20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	before := len(rcv.ids())
	if before == 0 {
		t.Fatal("nothing was delivered before the kill")
	}

	rcv.setDelay(0)
	res := pipeline(t, dir, rcv.env(), "run", "--json", "churn.hcl")
	if res.code != 0 {
		t.Fatalf("second run exited %d\n%s", res.code, res.stderr)
	}
	want := 0
	for _, r := range readRecords(t, calls()) {
		if highChurn(r.value) {
			want++
			if !rcv.ids()[rowID(r.value)] {
				t.Errorf("record %s was never delivered", rowID(r.value))
			}
		}
	}
	if before >= want {
		t.Fatalf("the kill came too late to test anything: %d of %d delivered", before, want)
	}
	t.Logf("%d of %d delivered before SIGKILL; %d attempts in all", before, want, rcv.total())
}

func TestSignalDrainsCommitsAndExits(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		t.Run(tc.sig.String(), func(t *testing.T) { testSignalDrain(t, tc.sig, tc.code) })
	}
}

func testSignalDrain(t *testing.T, sig syscall.Signal, code int) {
	dir := t.TempDir()
	rcv := newReceiver(t)
	rcv.setDelay(20 * time.Millisecond)
	writeFile(t, filepath.Join(dir, "churn.hcl"), churnHCL(calls(), 20, ""))

	cmd := exec.Command(bin("pipeline"), "run", "churn.hcl")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), rcv.env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for rcv.total() < 10 {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(sig)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != code {
		t.Fatalf("exit: %v, want status %d\n%s", err, code, stderr.String())
	}
	first := rcv.ids()
	delivered := len(first)
	show := pipeline(t, dir, nil, "state", "show", "churn.hcl")
	if !strings.Contains(show.stdout, "churn") || !strings.Contains(show.stdout, "calls") {
		t.Fatalf("no checkpoint after the drain:\n%s%s", show.stdout, show.stderr)
	}
	// The drain stopped waiting for the outbox: what was not delivered stays
	// queued. The next run reads nothing again, sends what stayed queued,
	// and nothing the drained run delivered, but the few requests cut off
	// in flight (at most the sink's concurrency) may arrive twice.
	rcv.setDelay(0)
	rcv.reset()
	res := pipeline(t, dir, rcv.env(), "run", "--json", "churn.hcl")
	s := parseSummary(t, res)
	want := 0
	for _, r := range readRecords(t, calls()) {
		if highChurn(r.value) {
			want++
		}
	}
	second := rcv.ids()
	union, twice := map[string]bool{}, 0
	for id := range first {
		union[id] = true
	}
	for id := range second {
		if union[id] {
			twice++
		}
		union[id] = true
	}
	if s.Read != 0 || len(union) != want || twice > 16 {
		t.Fatalf("drained run delivered %d, next run read %d and delivered %d (%d again); want %d in all, read 0, at most 16 again", delivered, s.Read, len(second), twice, want)
	}
}

func TestStateShowAndReset(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t)
	writeFile(t, filepath.Join(dir, "churn.hcl"), churnHCL(calls(), 500, ""))
	state := filepath.Join(dir, "custom", "state.db")
	if r := pipeline(t, dir, rcv.env(), "run", "--state", state, "churn.hcl"); r.code != 0 {
		t.Fatalf("run: %s", r.stderr)
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("--state was not used: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".pipeline")); !os.IsNotExist(err) {
		t.Fatalf("the default state was written despite --state")
	}
	show := pipeline(t, dir, nil, "state", "show", "--state", state, "churn.hcl")
	if !strings.Contains(show.stdout, "1000") {
		t.Fatalf("state show:\n%s", show.stdout)
	}
	reset := pipeline(t, dir, nil, "state", "reset", "--state", state, "churn.hcl")
	if reset.code != 0 || !strings.Contains(reset.stdout, "1 checkpoints removed") {
		t.Fatalf("state reset: %s %s", reset.stdout, reset.stderr)
	}
	rcv.reset()
	again := parseSummary(t, pipeline(t, dir, rcv.env(), "run", "--json", "--state", state, "churn.hcl"))
	if again.Read != 1000 {
		t.Fatalf("after reset the run read %d records, want 1000", again.Read)
	}
}
