package schedule

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

func mustParse(t *testing.T, spec string) cron.Schedule {
	t.Helper()
	s, err := cron.ParseStandard(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// syncBuffer is a log destination the test reads while the scheduler writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// harness runs a scheduler on a fake clock.
type harness struct {
	t     *testing.T
	clock *FakeClock
	s     *Scheduler
	log   *syncBuffer

	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, start time.Time) *harness {
	h := &harness{t: t, clock: NewFakeClock(start), log: &syncBuffer{}}
	h.s = New(h.clock, slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.s.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		<-h.done
	})
}

// settle waits until every job's loop waits on the clock again: n waiters.
func (h *harness) settle(n int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.clock.BlockUntil(ctx, n); err != nil {
		h.t.Fatalf("the scheduler does not wait on the clock: %v\n%s", err, h.log.String())
	}
}

// idle waits until no job's run is going: the fake clock moves instantly, so
// a test that advances before a run returned would see the next firing
// skipped.
func (h *harness) idle() {
	h.t.Helper()
	waitUntil(h.t, "the runs to end", func() bool {
		for _, j := range h.s.jobs {
			if j.running.Load() {
				return false
			}
		}
		return true
	})
}

// stop cancels the scheduler and waits for Run to return.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Fatal(err)
		}
		h.done <- nil // for Cleanup
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
}

// recorder is a job that records when each run was scheduled.
type recorder struct {
	mu    sync.Mutex
	times []time.Time
}

func (r *recorder) run(ctx context.Context) {
	at, ok := Scheduled(ctx)
	if !ok {
		panic("no scheduled time in ctx")
	}
	r.mu.Lock()
	r.times = append(r.times, at)
	r.mu.Unlock()
}

func (r *recorder) got() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.times...)
}

func TestDailyUTCFiresAtTwoAndNotBetween(t *testing.T) {
	start := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	h := newHarness(t, start)
	var rec recorder
	h.s.Add(Job{Name: "nightly", Schedule: mustParse(t, "0 2 * * *"), Run: rec.run})
	h.start()
	// Walk three days in 7-minute steps: no step lands on 02:00 exactly,
	// so a firing at any other time would show.
	for h.clock.Now().Before(start.Add(72 * time.Hour)) {
		h.settle(1)
		h.idle()
		h.clock.Advance(7 * time.Minute)
	}
	h.settle(1)
	h.stop()
	want := []time.Time{
		time.Date(2026, 1, 11, 2, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 12, 2, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 13, 2, 0, 0, 0, time.UTC),
	}
	assertTimes(t, rec.got(), want)
}

func TestAdvanceToNextLandsOnFirings(t *testing.T) {
	h := newHarness(t, time.Date(2026, 1, 10, 2, 0, 0, 0, time.UTC)) // exactly on a firing: not run
	var rec recorder
	h.s.Add(Job{Name: "nightly", Schedule: mustParse(t, "0 2 * * *"), Run: rec.run})
	h.start()
	var at []time.Time
	for range 3 {
		h.settle(1)
		h.idle()
		now, _ := h.clock.AdvanceToNext()
		at = append(at, now)
	}
	h.settle(1)
	h.stop()
	want := []time.Time{
		time.Date(2026, 1, 11, 2, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 12, 2, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 13, 2, 0, 0, 0, time.UTC),
	}
	assertTimes(t, at, want)
	assertTimes(t, rec.got(), want)
}

// Across both of New York's daylight-saving changes, a 02:00 job fires once
// a day at local 02:00, and at 03:00 on the day 02:00 does not exist.
func TestNewYorkAcrossDST(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	for _, tc := range []struct {
		name  string
		spec  string
		start time.Time
		want  []string
	}{
		{"spring forward", "0 2 * * *", time.Date(2026, 3, 6, 12, 0, 0, 0, ny), []string{
			"2026-03-07T02:00:00-05:00", // EST
			"2026-03-08T03:00:00-04:00", // 02:00 is skipped: when the jump ends
			"2026-03-09T02:00:00-04:00", // EDT
			"2026-03-10T02:00:00-04:00",
		}},
		{"fall back", "0 2 * * *", time.Date(2026, 10, 30, 12, 0, 0, 0, ny), []string{
			"2026-10-31T02:00:00-04:00",
			"2026-11-01T02:00:00-05:00", // 02:00 happens once, in EST
			"2026-11-02T02:00:00-05:00",
			"2026-11-03T02:00:00-05:00",
		}},
		{"fall back, repeated hour", "30 1 * * *", time.Date(2026, 10, 30, 12, 0, 0, 0, ny), []string{
			"2026-10-31T01:30:00-04:00",
			"2026-11-01T01:30:00-04:00", // once, not again at 01:30 EST
			"2026-11-02T01:30:00-05:00",
			"2026-11-03T01:30:00-05:00",
		}},
		{"spring forward, every 15 minutes", "*/15 * * * *", time.Date(2026, 3, 8, 1, 30, 0, 0, ny), []string{
			"2026-03-08T01:45:00-05:00",
			"2026-03-08T03:00:00-04:00", // 02:00 to 02:45 do not exist: once when the jump ends
			"2026-03-08T03:15:00-04:00",
			"2026-03-08T03:30:00-04:00",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.start.UTC())
			var rec recorder
			h.s.Add(Job{Name: "ny", Schedule: mustParse(t, tc.spec), Location: ny, Run: rec.run})
			h.start()
			for range tc.want {
				h.settle(1)
				h.idle()
				h.clock.AdvanceToNext()
			}
			h.settle(1)
			h.stop()
			var got []string
			for _, at := range rec.got() {
				got = append(got, at.In(ny).Format(time.RFC3339))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("fired at\n  %v\nwant\n  %v", got, tc.want)
			}
		})
	}
}

// A run that outlasts the interval makes the next firings skip, logged; the
// job never runs twice at once and runs again once the slow run is done.
func TestSlowJobSkipsAndNeverOverlaps(t *testing.T) {
	h := newHarness(t, time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC))
	var cur, maxCur, started atomic.Int32
	release := make(chan struct{})
	var skipped []time.Time
	var skipMu sync.Mutex
	h.s.Add(Job{
		Name:     "slow",
		Schedule: mustParse(t, "* * * * *"),
		Run: func(ctx context.Context) {
			n := cur.Add(1)
			for m := maxCur.Load(); n > m && !maxCur.CompareAndSwap(m, n); m = maxCur.Load() {
			}
			if started.Add(1) == 1 {
				<-release // the first run is slow
			}
			cur.Add(-1)
		},
		OnSkip: func(at time.Time) {
			skipMu.Lock()
			skipped = append(skipped, at)
			skipMu.Unlock()
		},
	})
	h.start()
	h.settle(1)
	h.clock.AdvanceToNext() // 00:01: the slow run starts
	waitUntil(t, "the first run to start", func() bool { return started.Load() == 1 })
	for range 3 { // 00:02, 00:03, 00:04: skipped
		h.settle(1)
		h.clock.AdvanceToNext()
	}
	h.settle(1)
	close(release)
	j := h.s.jobs[0]
	waitUntil(t, "the slow run to end", func() bool { return !j.running.Load() })
	h.clock.AdvanceToNext() // 00:05 runs again
	h.settle(1)
	waitUntil(t, "the second run", func() bool { return started.Load() == 2 })
	h.stop()

	if m := maxCur.Load(); m != 1 {
		t.Errorf("max concurrent runs = %d, want 1", m)
	}
	skipMu.Lock()
	defer skipMu.Unlock()
	assertTimes(t, skipped, []time.Time{
		time.Date(2026, 1, 10, 0, 2, 0, 0, time.UTC),
		time.Date(2026, 1, 10, 0, 3, 0, 0, time.UTC),
		time.Date(2026, 1, 10, 0, 4, 0, 0, time.UTC),
	})
	if n := strings.Count(h.log.String(), "previous run still going; skipping"); n != 3 {
		t.Errorf("%d skip lines logged, want 3:\n%s", n, h.log.String())
	}
}

// Cancelling stops the firings at once and Run waits for the run going on.
func TestCancelStopsSchedulingAndWaitsForRun(t *testing.T) {
	h := newHarness(t, time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC))
	var runs atomic.Int32
	inRun := make(chan struct{})
	release := make(chan struct{})
	var sawCancel atomic.Bool
	h.s.Add(Job{Name: "long", Schedule: mustParse(t, "@every 10s"), Run: func(ctx context.Context) {
		if runs.Add(1) == 1 {
			close(inRun)
			<-ctx.Done() // the run learns the scheduler stops...
			sawCancel.Store(true)
			<-release // ...and takes its time to wind down
		}
	}})
	h.start()
	h.settle(1)
	h.clock.AdvanceToNext()
	<-inRun
	h.settle(1)
	h.cancel()
	select {
	case <-h.done:
		t.Fatal("Run returned while a run was still going")
	case <-time.After(100 * time.Millisecond):
	}
	waitUntil(t, "the run to see the cancel", sawCancel.Load)
	// Nothing more fires, however far the clock goes.
	h.clock.Advance(time.Hour)
	close(release)
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatal(err)
		}
		h.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return once the run ended")
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
}

func TestRunRejectsIncompleteJob(t *testing.T) {
	s := New(NewFakeClock(time.Now()), nil)
	s.Add(Job{Name: "x", Run: func(context.Context) {}})
	if err := s.Run(context.Background()); err == nil {
		t.Error("a job without a schedule was accepted")
	}
}

func TestNextZones(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	// "0 2 * * *" in Berlin in summer is 00:00 UTC, and nil means UTC.
	from := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	if got, want := Next(mustParse(t, "0 2 * * *"), berlin, from), time.Date(2026, 7, 2, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Berlin: %v, want %v", got.UTC(), want)
	}
	if got, want := Next(mustParse(t, "0 2 * * *"), nil, from), time.Date(2026, 7, 2, 2, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("UTC: %v, want %v", got.UTC(), want)
	}
	// Durations ignore the zone.
	if got, want := Next(mustParse(t, "@every 90s"), berlin, from), from.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("@every: %v, want %v", got, want)
	}
	// Never is the zero time.
	if got := Next(mustParse(t, "0 0 30 2 *"), berlin, from); !got.IsZero() {
		t.Errorf("Feb 30: %v", got)
	}
}

func assertTimes(t *testing.T, got, want []time.Time) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Equal(want[i])
	}
	if !ok {
		t.Errorf("times\n  got  %v\n  want %v", got, want)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
