package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// One pipeline runs once at a time on one state store (issue 10, item 1).

// exitLocked is the exit code of a run refused because the pipeline is
// already running on its state store.
const exitLocked = 75

// lockPipelineHCL sends every record of input both to a webhook (the
// receiver) and to a JSONL file.
func lockPipelineHCL(name, input, out string) string {
	return fmt.Sprintf(`
pipeline { name = %q }

source "file" "in" {
  path = %q
}

sink "webhook" "crm" {
  inputs  = [source.in]
  url     = env("CRM_WEBHOOK_URL")
  secret  = env("CRM_WEBHOOK_SECRET")
  timeout = "60s"
}

sink "file" "out" {
  inputs = [source.in]
  path   = %q
}
`, name, input, out)
}

// gate holds every request to the receiver until opened, so that a run
// started against it is reliably still running.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func gateReceiver(t *testing.T, rcv *receiver) *gate {
	g := &gate{ch: make(chan struct{})}
	rcv.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-g.ch
			inner.ServeHTTP(w, r)
		})
	})
	// Before the receiver's own cleanup, which waits for its handlers.
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// lockHolder is what a lock file says while its pipeline runs.
type lockHolder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Since   time.Time `json:"since"`
	Command string    `json:"command"`
}

// awaitLock waits until the lock file of pipeline on statePath names a
// holder, and returns it.
func awaitLock(t *testing.T, statePath, pipeline string, l *liveRun) lockHolder {
	t.Helper()
	path := filepath.Join(statePath+".locks", pipeline+".lock")
	deadline := time.Now().Add(runBound)
	for time.Now().Before(deadline) {
		var h lockHolder
		if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &h) == nil && h.PID != 0 {
			return h
		}
		if l != nil && l.finish(0) {
			t.Fatalf("the run ended (exit %d) before %s named its holder\nstderr:\n%s", l.code, path, l.stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s named no holder within %s", path, runBound)
	return lockHolder{}
}

// checkRefused checks that r is a refusal naming holder h.
func checkRefused(t *testing.T, what string, r result, pipeline, statePath string, h lockHolder) {
	t.Helper()
	if r.code != exitLocked {
		t.Errorf("%s: exit %d, want %d\nstderr:\n%s", what, r.code, exitLocked, r.stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("pipeline %q is already running on state %s", pipeline, statePath),
		fmt.Sprintf("pid %d on host %s since ", h.PID, h.Host),
		h.Since.UTC().Format("15:04:05 UTC"), // after the date when the lock is from another day
		"wait for it to finish or stop it",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("%s: stderr lacks %q:\n%s", what, want, r.stderr)
		}
	}
}

func attemptsOf(rcv *receiver, id string) int {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return rcv.attempts[id]
}

func jsonlLines(t *testing.T, path string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range readRecords(t, path) {
		out[rowID(r.value)]++
	}
	return out
}

func TestLockSecondRunOfAPipelineRefusesWhileTheFirstRuns(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	want := writeScored(t, input, 300, 300, nil)
	writeFile(t, filepath.Join(dir, "p.hcl"), lockPipelineHCL("locked", input, "out.jsonl"))
	statePath := "state.db" // relative, as users write it: the message repeats it
	rcv := newReceiver(t)
	g := gateReceiver(t, rcv)

	first := startLive(t, dir, rcv.env(), nil, "run", "--state", statePath, "p.hcl")
	h := awaitLock(t, filepath.Join(dir, statePath), "locked", first)
	host, _ := os.Hostname()
	if h.PID != first.cmd.Process.Pid || h.Host != host || !strings.Contains(h.Command, "run --state state.db p.hcl") {
		t.Errorf("lock file: %+v, want pid %d on %s running the first run", h, first.cmd.Process.Pid, host)
	}

	// The first run cannot end while the gate is shut: the second returns
	// while it holds the lock, so it did not wait for it.
	second := pipeline(t, dir, rcv.env(), "run", "--state", statePath, "p.hcl")
	checkRefused(t, "second run", second, "locked", statePath, h)
	reset := pipeline(t, dir, nil, "--state", statePath, "state", "reset", "p.hcl")
	checkRefused(t, "state reset", reset, "locked", statePath, h)
	if first.finish(0) {
		t.Fatalf("the first run ended while its deliveries were held\nstderr:\n%s", first.stderr())
	}

	g.open()
	if code := first.wait(); code != 0 {
		t.Fatalf("first run: exit %d\nstderr:\n%s", code, first.stderr())
	}
	lines := jsonlLines(t, filepath.Join(dir, "out.jsonl"))
	for _, id := range want {
		if lines[id] != 1 {
			t.Errorf("out.jsonl holds %s %d times, want once", id, lines[id])
		}
		if n := attemptsOf(rcv, id); n != 1 {
			t.Errorf("the webhook got %s %d times, want once", id, n)
		}
	}
	if len(lines) != len(want) || rcv.total() != len(want) {
		t.Errorf("out.jsonl holds %d records, the webhook got %d; want %d each", len(lines), rcv.total(), len(want))
	}

	// Released: the next run starts (and has nothing new to send).
	again := pipeline(t, dir, rcv.env(), "run", "--state", statePath, "p.hcl")
	if again.code != 0 || rcv.total() != len(want) {
		t.Errorf("run after the first finished: exit %d, webhook total %d (want 0, %d)\nstderr:\n%s", again.code, rcv.total(), len(want), again.stderr)
	}
}

func TestLockOtherPipelinesOnTheSameStateRunAlongside(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	want := writeScored(t, input, 200, 200, nil)
	writeFile(t, filepath.Join(dir, "held.hcl"), lockPipelineHCL("held", input, "held.jsonl"))
	writeFile(t, filepath.Join(dir, "other.hcl"), fmt.Sprintf(`
pipeline { name = "other" }

source "file" "in" {
  path = %q
}

sink "file" "out" {
  inputs = [source.in]
  path   = "other.jsonl"
}
`, input))
	statePath := filepath.Join(dir, "state.db")
	rcv := newReceiver(t)
	g := gateReceiver(t, rcv)

	held := startLive(t, dir, rcv.env(), nil, "run", "--state", statePath, "held.hcl")
	awaitLock(t, statePath, "held", held)
	other := pipeline(t, dir, nil, "run", "--state", statePath, "other.hcl")
	if other.code != 0 {
		t.Fatalf("the other pipeline, while held runs: exit %d\nstderr:\n%s", other.code, other.stderr)
	}
	if lines := jsonlLines(t, filepath.Join(dir, "other.jsonl")); len(lines) != len(want) {
		t.Errorf("other.jsonl holds %d records, want %d", len(lines), len(want))
	}
	if held.finish(0) {
		t.Fatalf("held ended while its deliveries were held\nstderr:\n%s", held.stderr())
	}
	g.open()
	if code := held.wait(); code != 0 {
		t.Fatalf("held: exit %d\nstderr:\n%s", code, held.stderr())
	}
}

func TestLockOfAKilledRunDoesNotBlockTheNext(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	want := writeScored(t, input, 100, 100, nil)
	writeFile(t, filepath.Join(dir, "p.hcl"), lockPipelineHCL("killed", input, "out.jsonl"))
	statePath := filepath.Join(dir, "state.db")
	rcv := newReceiver(t)
	g := gateReceiver(t, rcv)

	first := startLive(t, dir, rcv.env(), nil, "run", "--state", statePath, "p.hcl")
	h := awaitLock(t, statePath, "killed", first)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !first.finish(runBound) {
		t.Fatal("the killed run did not end")
	}
	// The lock file still names the dead holder; the lock went with it.
	if data, _ := os.ReadFile(filepath.Join(statePath+".locks", "killed.lock")); !strings.Contains(string(data), `"pid":`+strconv.Itoa(h.PID)) {
		t.Errorf("lock file after the kill: %q, want it to still name pid %d", data, h.PID)
	}

	g.open()
	next := pipeline(t, dir, rcv.env(), "run", "--state", statePath, "p.hcl")
	if next.code != 0 {
		t.Fatalf("the run after a SIGKILLed one: exit %d, want 0\nstderr:\n%s", next.code, next.stderr)
	}
	got := rcv.ids()
	for _, id := range want {
		if !got[id] {
			t.Errorf("%s was never delivered", id)
		}
	}
}

func TestLockServeHoldsThePipelinesItRuns(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	writeScored(t, input, 50, 50, nil)
	pipelines := filepath.Join(dir, "pipelines")
	writeFile(t, filepath.Join(pipelines, "busy.hcl"), lockPipelineHCL("busy", input, "busy.jsonl"))
	writeFile(t, filepath.Join(pipelines, "served.hcl"), fmt.Sprintf(`
pipeline { name = "served" }

source "file" "in" {
  path = %q
}

sink "file" "out" {
  inputs = [source.in]
  path   = "served.jsonl"
}
`, input))
	statePath := filepath.Join(dir, "state.db")
	rcv := newReceiver(t)
	g := gateReceiver(t, rcv)

	// busy is already running when serve starts: serve serves the other.
	busy := startLive(t, dir, rcv.env(), nil, "run", "--state", statePath, filepath.Join(pipelines, "busy.hcl"))
	busyHolder := awaitLock(t, statePath, "busy", busy)
	// serve with nothing it can start has nothing to do.
	alone := pipeline(t, dir, rcv.env(), "serve", "--state", statePath, "--metrics-addr", "", filepath.Join(pipelines, "busy.hcl"))
	if alone.code != exitLocked || !strings.Contains(alone.stderr, fmt.Sprintf("pid %d on host %s", busyHolder.PID, busyHolder.Host)) {
		t.Errorf("serve of busy alone: exit %d, want %d naming pid %d\nstderr:\n%s", alone.code, exitLocked, busyHolder.PID, alone.stderr)
	}
	serve := startLive(t, dir, rcv.env(), nil, "serve", "--state", statePath, "--metrics-addr", "", "--poll", "200ms", pipelines)
	line := serve.waitLine("busy failing to start", runBound, func(l string) bool {
		return strings.Contains(l, "pipeline failed to start") && strings.Contains(l, "pipeline=busy")
	})
	if !strings.Contains(line, fmt.Sprintf("pid %d on host %s", busyHolder.PID, busyHolder.Host)) {
		t.Errorf("serve's line does not name busy's holder (pid %d):\n%s", busyHolder.PID, line)
	}
	served := awaitLock(t, statePath, "served", serve)
	if served.PID != serve.cmd.Process.Pid {
		t.Errorf("served's lock is held by pid %d, want serve's %d", served.PID, serve.cmd.Process.Pid)
	}
	refused := pipeline(t, dir, nil, "run", "--state", statePath, filepath.Join(pipelines, "served.hcl"))
	checkRefused(t, "run of a pipeline serve runs", refused, "served", statePath, served)

	g.open()
	if code := busy.wait(); code != 0 {
		t.Errorf("busy: exit %d\nstderr:\n%s", code, busy.stderr())
	}
	if code, _ := serve.signal(syscall.SIGTERM); code != 0 {
		t.Errorf("serve: exit %d after SIGTERM\nstderr:\n%s", code, serve.stderr())
	}
	// Stopped: its pipelines are free again.
	if r := pipeline(t, dir, nil, "run", "--state", statePath, filepath.Join(pipelines, "served.hcl")); r.code != 0 {
		t.Errorf("run of served after serve stopped: exit %d\nstderr:\n%s", r.code, r.stderr)
	}
}
