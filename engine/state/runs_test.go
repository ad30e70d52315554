package state

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// The run log keeps the last runs of each pipeline, newest first; a run
// still logged as running when the next begins was cut short.
func TestRunLog(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	for i := range keptRuns + 5 {
		id, err := s.BeginRun(ctx, "p", t0.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			s.EndRun(ctx, id, t0.Add(time.Duration(i)*time.Minute+time.Second), "succeeded", "", RunCounts{Read: int64(i)})
		}
	}
	other, _ := s.BeginRun(ctx, "q", t0)
	runs, err := s.Runs(ctx, "p", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != keptRuns {
		t.Fatalf("%d runs kept, want %d", len(runs), keptRuns)
	}
	newest := runs[0]
	if newest.Outcome != "succeeded" || newest.Counts.Read != keptRuns+4 || !newest.StartedAt.Equal(t0.Add((keptRuns+4)*time.Minute)) {
		t.Errorf("newest: %+v", newest)
	}
	if r := runs[1]; r.Outcome != "interrupted" || r.Error == "" || !r.EndedAt.IsZero() {
		t.Errorf("a run that never ended, followed by another: %+v", r)
	}
	q, _ := s.Runs(ctx, "q", 10)
	if len(q) != 1 || q[0].ID != other || q[0].Outcome != "running" {
		t.Errorf("another pipeline's run: %+v", q)
	}
}
