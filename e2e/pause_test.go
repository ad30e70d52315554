package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pendingDeliveries is how many deliveries of sink crm of pipeline churn
// `pipeline deliveries` lists as pending.
func pendingDeliveries(t *testing.T, dir string) int {
	t.Helper()
	res := pipeline(t, dir, nil, "deliveries", "--pipeline", "churn", "--sink", "crm", "--status", "pending", "--limit", "0", "--json")
	if res.code != 0 {
		t.Fatalf("deliveries: exit %d\n%s", res.code, res.stderr)
	}
	var list []struct{ ID, Status string }
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil {
		t.Fatalf("deliveries --json: %v\n%s", err, res.stdout)
	}
	return len(list)
}

// pipelineWithin is pipeline with a deadline: a command that hangs fails the
// test instead of the whole run.
func pipelineWithin(t *testing.T, d time.Duration, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("pipeline"), args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), env...)
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("pipeline %v did not end within %v\n%s", args, d, stderr.String())
	}
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("pipeline %v: %v", args, err)
	}
	return res
}

// A sink paused from the CLI before `pipeline serve` starts: serve reads
// the records and queues every delivery, sends none; `pipeline resume`,
// from the CLI while serve runs, sends them all.
func TestPauseHoldsDeliveriesUntilResumeWhileServing(t *testing.T) {
	dir := t.TempDir()
	ep := newReceiver(t)
	os.MkdirAll(filepath.Join(dir, "pipelines"), 0o755)
	file := filepath.Join("pipelines", "churn.hcl")
	writeFile(t, filepath.Join(dir, file), outboxHCL(copyFile(t, calls(), dir)))

	// Wrong invocations say what is wrong.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pause", file}, 2, "--sink is required"},
		{[]string{"pause", file, "--sink", "crn"}, 1, `pipeline churn has no sink "crn"; did you mean "crm"?`},
		{[]string{"resume", file, "--sink", "nope"}, 1, `pipeline churn has no sink "nope"; its sinks are crm`},
	} {
		if res := pipeline(t, dir, ep.env(), tc.args...); res.code != tc.code || !strings.Contains(res.stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit %d and %q", tc.args, res.code, res.stderr, tc.code, tc.want)
		}
	}

	res := pipeline(t, dir, ep.env(), "pause", file, "--sink", "crm")
	if res.code != 0 || !strings.Contains(res.stderr, `paused sink crm of pipeline churn: deliveries stay in its outbox until "pipeline resume"`) {
		t.Fatalf("pause: exit %d\n%s", res.code, res.stderr)
	}

	l := startLive(t, dir, ep.env(), nil, "serve", "--poll", "200ms", "pipelines")

	want := wantHighChurn(t)
	waitFor(t, "every matching record queued", 30*time.Second, func() bool { return pendingDeliveries(t, dir) == len(want) })
	// Queued, not sent: for a couple of seconds more, nothing arrives.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if n := ep.total(); n != 0 {
			t.Fatalf("%d deliveries arrived while the sink was paused\n%s", n, l.stderr())
		}
	}
	if n := pendingDeliveries(t, dir); n != len(want) {
		t.Fatalf("%d pending while paused, want %d", n, len(want))
	}

	res = pipeline(t, dir, ep.env(), "resume", file, "--sink", "crm")
	if res.code != 0 || !strings.Contains(res.stderr, "resumed sink crm of pipeline churn") {
		t.Fatalf("resume: exit %d\n%s", res.code, res.stderr)
	}
	waitFor(t, "every matching record after resume", 30*time.Second, func() bool { return len(ep.ids()) == len(want) })
	for id := range want {
		if !ep.ids()[id] {
			t.Fatalf("%s did not arrive", id)
		}
	}
	waitFor(t, "nothing pending after resume", 10*time.Second, func() bool { return pendingDeliveries(t, dir) == 0 })

	if code, _ := l.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM\n%s", code, l.stderr())
	}
	if n := ep.total(); n != len(want) {
		t.Fatalf("%d attempts arrived for %d deliveries", n, len(want))
	}
}

// `pipeline run`, which waits for its deliveries, does not wait for a
// paused sink's: it ends with exit 0, sends nothing, and leaves them queued
// for after the resume.
func TestRunWithAPausedSinkEndsAndSendsNothing(t *testing.T) {
	dir := t.TempDir()
	ep := newReceiver(t)
	writeFile(t, filepath.Join(dir, "churn.hcl"), outboxHCL(calls()))
	if res := pipeline(t, dir, nil, "pause", "churn.hcl", "--sink", "crm"); res.code != 0 {
		t.Fatalf("pause: exit %d\n%s", res.code, res.stderr)
	}
	// Pausing twice is fine.
	if res := pipeline(t, dir, nil, "pause", "churn.hcl", "--sink", "crm"); res.code != 0 {
		t.Fatalf("pause again: exit %d\n%s", res.code, res.stderr)
	}
	n := len(wantHighChurn(t))
	res := pipelineWithin(t, 60*time.Second, dir, ep.env(), "run", "--json", "churn.hcl")
	if res.code != 0 {
		t.Fatalf("run with a paused sink: exit %d\n%s", res.code, res.stderr)
	}
	var s struct {
		Outbox map[string]struct {
			Queued, Pending, Delivered int
			Paused                     bool
		} `json:"outbox"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &s); err != nil {
		t.Fatalf("run --json: %v\n%s", err, res.stdout)
	}
	if crm := s.Outbox["crm"]; crm.Queued != n || crm.Pending != n || crm.Delivered != 0 || !crm.Paused {
		t.Fatalf("outbox %+v, want %d queued and pending, paused\n%s", s.Outbox, n, res.stderr)
	}
	if got := ep.total(); got != 0 {
		t.Fatalf("%d deliveries arrived from a paused sink", got)
	}
	if got := pendingDeliveries(t, dir); got != n {
		t.Fatalf("%d pending after the run, want %d", got, n)
	}

	if res := pipeline(t, dir, nil, "resume", "churn.hcl", "--sink", "crm"); res.code != 0 {
		t.Fatalf("resume: exit %d\n%s", res.code, res.stderr)
	}
	if res := pipeline(t, dir, nil, "resume", "churn.hcl", "--sink", "crm"); res.code != 0 || !strings.Contains(res.stderr, "was not paused") {
		t.Fatalf("resume again: exit %d\n%s", res.code, res.stderr)
	}
	again := pipelineWithin(t, 60*time.Second, dir, ep.env(), "run", "churn.hcl")
	if again.code != 0 || len(ep.ids()) != n {
		t.Fatalf("the run after resume: exit %d, %d of %d delivered\n%s", again.code, len(ep.ids()), n, again.stderr)
	}
}

// Only action sinks can be paused.
func TestPauseRefusesASinkWithoutAnOutbox(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "files.hcl"), `
pipeline { name = "files" }
source "file" "calls" {
  path = "`+calls()+`"
}
sink "file" "out" {
  inputs = [source.calls]
  path   = "out/calls.jsonl"
}
`)
	res := pipeline(t, dir, nil, "pause", "files.hcl", "--sink", "out")
	if res.code != 1 || !strings.Contains(res.stderr, `sink out is a "file" sink, which writes its batches directly and has no outbox`) {
		t.Fatalf("pause of a file sink: exit %d\n%s", res.code, res.stderr)
	}
}
