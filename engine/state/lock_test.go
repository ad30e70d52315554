package state

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lockHelperEnv makes the test binary a child process that takes a lock and
// waits to be killed (TestLockOfAKilledProcessIsFree); its value is the state
// path, the pipeline is "churn".
const lockHelperEnv = "PIPELINE_STATE_LOCK_HELPER"

func init() {
	statePath := os.Getenv(lockHelperEnv)
	if statePath == "" {
		return
	}
	if _, err := LockPipeline(statePath, "churn"); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(3)
	}
	os.Stdout.WriteString("locked\n")
	select {} // until killed
}

func TestLockTwiceFailsNamingTheHolder(t *testing.T) {
	statePath := filepath.Join(t.TempDir(), "state.db")
	first, err := LockPipeline(statePath, "churn")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()

	_, err = LockPipeline(statePath, "churn")
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("second lock: %v, want a *LockedError", err)
	}
	host, _ := os.Hostname()
	if le.Holder == nil || le.Holder.PID != os.Getpid() || le.Holder.Host != host || le.Holder.Since.IsZero() || le.Holder.Command == "" {
		t.Fatalf("holder %+v, want pid %d on %s with a since and a command", le.Holder, os.Getpid(), host)
	}
	msg := err.Error()
	for _, want := range []string{`pipeline "churn" is already running on state ` + statePath, "pid " + strconv.Itoa(os.Getpid()), "on host " + host, " UTC", "wait for it to finish or stop it"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}

	// The lock file says who holds it.
	var h Holder
	data, err := os.ReadFile(first.Path())
	if err != nil || json.Unmarshal(data, &h) != nil || h.PID != os.Getpid() {
		t.Errorf("lock file %s holds %q (%v)", first.Path(), data, err)
	}
}

func TestLocksOfOtherPipelinesAreIndependent(t *testing.T) {
	statePath := filepath.Join(t.TempDir(), "state.db")
	a, err := LockPipeline(statePath, "churn")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := LockPipeline(statePath, "nightly")
	if err != nil {
		t.Fatalf("another pipeline on the same state: %v", err)
	}
	defer b.Close()
	c, err := LockPipeline(filepath.Join(t.TempDir(), "state.db"), "churn")
	if err != nil {
		t.Fatalf("the same pipeline on another state: %v", err)
	}
	c.Close()
}

func TestLockReleasedByCloseIsFree(t *testing.T) {
	statePath := filepath.Join(t.TempDir(), "state.db")
	l, err := LockPipeline(statePath, "churn")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if data, _ := os.ReadFile(l.Path()); len(data) != 0 {
		t.Errorf("a released lock file holds %q, want it empty", data)
	}
	again, err := LockPipeline(statePath, "churn")
	if err != nil {
		t.Fatalf("lock after Close: %v", err)
	}
	again.Close()
}

func TestLockOfAKilledProcessIsFree(t *testing.T) {
	statePath := filepath.Join(t.TempDir(), "state.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+statePath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, len("locked\n"))
	if _, err := out.Read(buf); err != nil || string(buf) != "locked\n" {
		t.Fatalf("the child did not lock: %q %v\n%s", buf, err, stderr.String())
	}

	_, err = LockPipeline(statePath, "churn")
	var le *LockedError
	if !errors.As(err, &le) || le.Holder == nil || le.Holder.PID != cmd.Process.Pid {
		t.Fatalf("while the child holds it: %v (holder %+v), want held by pid %d", err, le, cmd.Process.Pid)
	}

	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no chance to clean up
		t.Fatal(err)
	}
	cmd.Wait()
	l, err := LockPipeline(statePath, "churn")
	if err != nil {
		t.Fatalf("after the holder was killed: %v", err)
	}
	defer l.Close()
	var h Holder
	data, _ := os.ReadFile(l.Path())
	if json.Unmarshal(data, &h) != nil || h.PID != os.Getpid() {
		t.Errorf("the new holder's lock file holds %q, want pid %d", data, os.Getpid())
	}
}

func TestLockedErrorShowsTheDateOfAnOldLock(t *testing.T) {
	since := time.Date(2025, 11, 14, 9, 14, 3, 0, time.UTC)
	e := &LockedError{Pipeline: "churn", State: ".pipeline/state.db", Holder: &Holder{PID: 4242, Host: "build-1", Since: since, Command: "pipeline run churn.hcl"}}
	want := `pipeline "churn" is already running on state .pipeline/state.db (pid 4242 on host build-1 since 2025-11-14 09:14:03 UTC, command "pipeline run churn.hcl"); wait for it to finish or stop it`
	if e.Error() != want {
		t.Errorf("got  %s\nwant %s", e.Error(), want)
	}
}

func TestLockPathEscapesTheName(t *testing.T) {
	got := LockPath("/x/state.db", "my pipeline/1")
	if filepath.Dir(got) != "/x/state.db.locks" || strings.Contains(filepath.Base(got), "/") {
		t.Errorf("LockPath = %s", got)
	}
}
