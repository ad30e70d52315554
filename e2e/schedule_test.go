package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A pipeline with a schedule runs on it under serve: each firing reads what
// is new since the last run, delivers it once, and logs a summary line;
// SIGTERM stops serve with exit 0.
func TestScheduleServeRunsOnSchedule(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "data", "in.jsonl")
	out := filepath.Join(dir, "data", "out.jsonl")
	line := func(i int) string { return fmt.Sprintf(`{"row_id":"r%d","n":%d}`, i, i) }
	var first []string
	for i := 1; i <= 3; i++ {
		first = append(first, line(i))
	}
	writeFile(t, in, strings.Join(first, "\n")+"\n")
	writeFile(t, filepath.Join(dir, "pipelines", "sched.hcl"), fmt.Sprintf(`
pipeline {
  name     = "sched"
  schedule = "@every 2s"
}
source "file" "in" {
  path = %q
}
sink "file" "out" {
  inputs = [source.in]
  path   = %q
}
`, in, out))

	l := startLive(t, dir, nil, nil, "serve", "pipelines", "--metrics-addr=")

	// rows returns the row_ids in the output, in order.
	rows := func() []string {
		data, err := os.ReadFile(out)
		if err != nil {
			return nil
		}
		var ids []string
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if l != "" {
				ids = append(ids, l)
			}
		}
		return ids
	}
	summaries := func() int { return strings.Count(l.stderr(), `msg="scheduled run succeeded"`) }

	waitFor(t, "the first run's records", 10*time.Second, func() bool { return len(rows()) >= 3 })
	waitFor(t, "the first run's summary", 5*time.Second, func() bool { return summaries() >= 1 })
	if got := summaries(); got > 1 {
		// A run after the first one reads nothing new: nothing more out.
		if n := len(rows()); n != 3 {
			t.Fatalf("%d records out after the first run, want 3", n)
		}
	}

	// Records appended between runs are picked up by the next one.
	f, err := os.OpenFile(in, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4; i <= 5; i++ {
		fmt.Fprintln(f, line(i))
	}
	f.Close()
	before := summaries()
	waitFor(t, "the appended records", 10*time.Second, func() bool { return len(rows()) >= 5 })
	// One more run after the one that delivered them: still no duplicates.
	waitFor(t, "another run", 10*time.Second, func() bool { return summaries() >= before+2 })

	got := rows()
	var want []string
	for i := 1; i <= 5; i++ {
		want = append(want, line(i))
	}
	if len(got) != len(want) {
		t.Fatalf("%d records out, want %d (exactly once each):\n%s\nstderr:\n%s", len(got), len(want), strings.Join(got, "\n"), l.stderr())
	}
	for i := range want {
		if !jsonEqual([]byte(got[i]), []byte(want[i])) {
			t.Errorf("record %d: got %s, want %s", i+1, got[i], want[i])
		}
	}

	log := l.stderr()
	for _, s := range []string{
		`msg=scheduled pipeline=sched`,
		`schedule="@every 2s"`,
		`pipeline=sched`,
		`read=3 filtered=0 delivered.out=3`,
		`read=2 filtered=0 delivered.out=2`,
		`read=0 filtered=0 delivered.out=0`,
		`duration=`,
	} {
		if !strings.Contains(log, s) {
			t.Errorf("stderr lacks %q:\n%s", s, log)
		}
	}
	if strings.Contains(log, "scheduled run failed") {
		t.Errorf("a run failed:\n%s", log)
	}

	// A run that fails is logged, and the next firing runs normally: the
	// file is read again at every firing.
	hcl := filepath.Join(dir, "pipelines", "sched.hcl")
	good, err := os.ReadFile(hcl)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, hcl, string(good)+"\nsink \"file\" \"broken\" {\n")
	waitFor(t, "a failed run", 10*time.Second, func() bool { return strings.Contains(l.stderr(), `msg="scheduled run failed"`) })
	if !strings.Contains(l.stderr(), `error="the pipeline has errors"`) {
		t.Errorf("the failed run's summary lacks its error:\n%s", l.stderr())
	}
	writeFile(t, hcl, string(good))
	before = summaries()
	waitFor(t, "a run after the failed one", 10*time.Second, func() bool { return summaries() > before })

	if code, _ := l.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM\n%s", code, l.stderr())
	}
	if n := len(rows()); n != 5 {
		t.Errorf("%d records out after shutdown, want 5", n)
	}
}
