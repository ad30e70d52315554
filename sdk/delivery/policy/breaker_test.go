package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

func newBreaker(t *testing.T, cfg BreakerConfig) *Breaker {
	t.Helper()
	b, err := NewBreaker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bStep is one breaker call in a scenario, at t0 + at seconds.
type bStep struct {
	op  string // "allow", "ok" (Record success), "fail" (Record failure), "status" (only the state check)
	key string
	at  float64
	// allow: whether it is allowed and, when not, retryAt (seconds after t0)
	allowed bool
	retryAt float64
	// state expected after the step (asked with Status at the same time)
	state BreakerState
}

func join(parts ...[]bStep) []bStep {
	var out []bStep
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// fails is one failure of key "e" at each of the given times; the last one
// leaves the circuit in state last, the others closed.
func fails(last BreakerState, at ...float64) []bStep {
	var out []bStep
	for i, a := range at {
		st := BreakerClosed
		if i == len(at)-1 {
			st = last
		}
		out = append(out, bStep{"fail", "e", a, false, 0, st})
	}
	return out
}

// down is the default breaker against an endpoint that is down: a failure
// every 6 seconds from 0 opens the circuit at 30s (the 6th failure; the
// 5th at 24s came before the window was over), until 60s.
var down = fails(BreakerOpen, 0, 6, 12, 18, 24, 30)

// probes lets n probes through at time at and reports nothing.
func probes(n int, at float64) []bStep {
	var out []bStep
	for range n {
		out = append(out, bStep{"allow", "e", at, true, 0, BreakerHalfOpen})
	}
	return out
}

// probesFail lets the default 3 probes through at time at, all of which
// fail at time at+1: the circuit reopens.
func probesFail(at float64) []bStep {
	return join(probes(3, at), []bStep{
		{"fail", "e", at + 1, false, 0, BreakerHalfOpen},
		{"fail", "e", at + 1, false, 0, BreakerHalfOpen},
		{"fail", "e", at + 1, false, 0, BreakerOpen},
	})
}

func TestBreaker(t *testing.T) {
	tests := []struct {
		name  string
		cfg   BreakerConfig
		steps []bStep
	}{
		{
			name: "closed allows and a success forgets the failures",
			steps: join(
				[]bStep{{"allow", "e", 0, true, 0, BreakerClosed}},
				fails(BreakerClosed, 0, 5, 10, 15, 20, 25),
				[]bStep{{"ok", "e", 29, false, 0, BreakerClosed}},
				// 30s after the first failure, but the success counts the
				// window again from the next failure, at 31
				fails(BreakerClosed, 31, 35, 40, 45, 50, 55, 60),
				[]bStep{{"allow", "e", 60.999, true, 0, BreakerClosed}},
				fails(BreakerOpen, 61),
				[]bStep{{"allow", "e", 61, false, 91, BreakerOpen}},
			),
		},
		{
			name: "the count reached first: opens only once the window is over",
			steps: join(
				fails(BreakerClosed, 0, 0.1, 0.2, 0.3, 0.4, 10, 20, 29.999),
				[]bStep{{"allow", "e", 29.999, true, 0, BreakerClosed}},
				fails(BreakerOpen, 30),
				[]bStep{{"allow", "e", 30, false, 60, BreakerOpen}},
			),
		},
		{
			name: "the window over first: opens only at the 5th failure",
			steps: join(
				fails(BreakerClosed, 0, 40, 41, 42),
				[]bStep{{"allow", "e", 42.5, true, 0, BreakerClosed}},
				fails(BreakerOpen, 43),
				[]bStep{{"allow", "e", 43, false, 73, BreakerOpen}},
			),
		},
		{
			// Concurrent answers reach Record in any order, each with the
			// time it came back: the window runs from the earliest
			// failure to the latest.
			name: "failures reported out of order: the window spans the earliest to the latest",
			steps: join(
				fails(BreakerClosed, 30, 0, 10, 20),
				fails(BreakerOpen, 25),
				[]bStep{{"allow", "e", 30, false, 60, BreakerOpen}},
			),
		},
		{
			name: "open: turned away until the cooldown ends, per key",
			steps: join(down, []bStep{
				{"allow", "e", 30, false, 60, BreakerOpen},
				{"allow", "e", 59.999, false, 60, BreakerOpen},
				{"allow", "other", 40, true, 0, BreakerClosed},
				{"fail", "other", 40, false, 0, BreakerClosed},
			}),
		},
		{
			name: "half-open admits exactly the probes; the others ask again later",
			steps: join(down, probes(3, 60), []bStep{
				{"allow", "e", 60, false, 61, BreakerHalfOpen},
				{"allow", "e", 60.5, false, 61.5, BreakerHalfOpen},
				// the probes' deadline (60 + 1m) comes before 119.5 + 1s
				{"allow", "e", 119.5, false, 120, BreakerHalfOpen},
			}),
		},
		{
			name: "half-open: one success among the probes closes the circuit and resets the cooldown",
			steps: join(down, probes(3, 60), []bStep{
				{"fail", "e", 61, false, 0, BreakerHalfOpen},
				{"ok", "e", 62, false, 0, BreakerClosed},
				{"allow", "e", 62, true, 0, BreakerClosed},
				{"allow", "e", 62, true, 0, BreakerClosed},
				{"allow", "e", 62, true, 0, BreakerClosed},
				{"allow", "e", 62, true, 0, BreakerClosed},
				// the third probe's late failure is an ordinary failure
				{"fail", "e", 63, false, 0, BreakerClosed},
			},
				fails(BreakerClosed, 70, 80, 90),
				fails(BreakerOpen, 93),                               // 30s after the failure at 63
				[]bStep{{"allow", "e", 93, false, 123, BreakerOpen}}, // 30s again
			),
		},
		{
			name: "half-open: a success closes it whichever probe it answers",
			steps: join(down, probes(1, 60), []bStep{
				{"ok", "e", 61, false, 0, BreakerClosed},
			}),
		},
		{
			name: "half-open: a failed probe frees its place but is counted",
			steps: join(down, probes(3, 60), []bStep{
				{"fail", "e", 61, false, 0, BreakerHalfOpen},
				{"allow", "e", 61, true, 0, BreakerHalfOpen}, // a 4th probe
				{"allow", "e", 61, false, 62, BreakerHalfOpen},
				{"fail", "e", 62, false, 0, BreakerHalfOpen},
				{"fail", "e", 63, false, 0, BreakerOpen}, // the 3rd failure: 60s, until 123
				{"ok", "e", 64, false, 0, BreakerOpen},   // the 4th probe answers too late
				{"allow", "e", 122.9, false, 123, BreakerOpen},
			}),
		},
		{
			name: "all the probes failing doubles the cooldown up to 10 minutes",
			steps: join(down,
				probesFail(60), // 60s: until 121
				[]bStep{{"allow", "e", 120, false, 121, BreakerOpen}},
				probesFail(121), // 120s: until 242
				probesFail(242), // 240s: until 483
				probesFail(483), // 480s: until 964
				probesFail(964), // 960s capped to 600s: until 1565
				[]bStep{{"allow", "e", 1564.9, false, 1565, BreakerOpen}},
				probesFail(1565), // still 600s: until 2166
				[]bStep{{"allow", "e", 2165, false, 2166, BreakerOpen}},
				probes(3, 2166),
				[]bStep{
					{"fail", "e", 2167, false, 0, BreakerHalfOpen},
					{"ok", "e", 2167, false, 0, BreakerClosed},
				},
				// closed again: the next opening is for 30s
				fails(BreakerClosed, 3000, 3010, 3020, 3025),
				fails(BreakerOpen, 3030),
				[]bStep{{"allow", "e", 3030, false, 3060, BreakerOpen}},
			),
		},
		{
			name: "reports that arrive while open are ignored",
			steps: join(down, []bStep{
				{"ok", "e", 31, false, 0, BreakerOpen},
				{"fail", "e", 32, false, 0, BreakerOpen},
				{"allow", "e", 59, false, 60, BreakerOpen}, // not extended
				// half-open, no probe in flight: a late failure uses up nothing
				{"fail", "e", 61, false, 0, BreakerHalfOpen},
			}, probes(3, 61), []bStep{
				{"allow", "e", 61, false, 62, BreakerHalfOpen},
			}),
		},
		{
			name: "Allow finds the circuit open once the window is over, and counts the cooldown from then",
			steps: join(
				fails(BreakerClosed, 0, 1, 2, 3, 4),
				[]bStep{
					{"allow", "e", 29.999, true, 0, BreakerClosed},
					{"allow", "e", 45, false, 75, BreakerOpen},
					{"allow", "e", 74.9, false, 75, BreakerOpen},
					{"allow", "e", 75, true, 0, BreakerHalfOpen},
				},
			),
		},
		{
			name: "Status finds the circuit open too",
			steps: join(
				fails(BreakerClosed, 0, 1, 2, 3, 4),
				[]bStep{
					{"status", "e", 50, false, 0, BreakerOpen},
					{"ok", "e", 51, false, 0, BreakerOpen}, // too late: it is open
					{"allow", "e", 60, false, 80, BreakerOpen},
				},
			),
		},
		{
			name: "a lost probe frees its place after the probe timeout",
			steps: join(down, probes(1, 60), probes(1, 70), probes(1, 80), []bStep{
				// deadlines 120, 130, 140
				{"allow", "e", 119.5, false, 120, BreakerHalfOpen},
				{"allow", "e", 120, true, 0, BreakerHalfOpen}, // in place of the probe of 60
				{"allow", "e", 120, false, 121, BreakerHalfOpen},
				{"allow", "e", 129.5, false, 130, BreakerHalfOpen},
				{"fail", "e", 131, false, 0, BreakerHalfOpen}, // the probe of 70 was lost by now; takes 80's
				{"fail", "e", 132, false, 0, BreakerHalfOpen}, // takes the one of 120
				{"allow", "e", 132, true, 0, BreakerHalfOpen},
				{"allow", "e", 132, true, 0, BreakerHalfOpen},
				{"allow", "e", 132, true, 0, BreakerHalfOpen},
				{"allow", "e", 132, false, 133, BreakerHalfOpen},
				{"fail", "e", 133, false, 0, BreakerOpen}, // the 3rd failure: 60s, until 193
				{"allow", "e", 192, false, 193, BreakerOpen},
			}),
		},
		{
			name: "configured threshold, window, cooldown, cap, probes and probe timeout",
			cfg: BreakerConfig{Failures: intp(2), Window: "10s", Cooldown: "10s", MaxCooldown: "15s",
				Probes: intp(1), ProbeTimeout: "5s"},
			steps: []bStep{
				{"fail", "e", 0, false, 0, BreakerClosed},
				{"fail", "e", 9.9, false, 0, BreakerClosed},
				{"fail", "e", 10, false, 0, BreakerOpen}, // until 20
				{"allow", "e", 15, false, 20, BreakerOpen},
				{"allow", "e", 20, true, 0, BreakerHalfOpen},
				{"allow", "e", 20, false, 21, BreakerHalfOpen},
				{"allow", "e", 24.5, false, 25, BreakerHalfOpen},
				{"fail", "e", 24.6, false, 0, BreakerOpen}, // 20s capped to 15s
				{"allow", "e", 39, false, 39.6, BreakerOpen},
				{"allow", "e", 39.6, true, 0, BreakerHalfOpen},
				{"allow", "e", 44.6, true, 0, BreakerHalfOpen}, // the last one was lost
				{"ok", "e", 45, false, 0, BreakerClosed},
			},
		},
		{
			name: "a threshold of one still waits for the window",
			cfg:  BreakerConfig{Failures: intp(1)},
			steps: []bStep{
				{"fail", "e", 0, false, 0, BreakerClosed},
				{"allow", "e", 29, true, 0, BreakerClosed},
				{"allow", "e", 30, false, 60, BreakerOpen},
			},
		},
		{
			name: "a cooldown longer than the default cap raises the cap",
			cfg:  BreakerConfig{Failures: intp(1), Window: "1s", Cooldown: "15m", Probes: intp(1)},
			steps: []bStep{
				{"fail", "e", 0, false, 0, BreakerClosed},
				{"fail", "e", 1, false, 0, BreakerOpen},
				{"allow", "e", 901, true, 0, BreakerHalfOpen},
				{"fail", "e", 901, false, 0, BreakerOpen},
				{"allow", "e", 1800, false, 1801, BreakerOpen},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBreaker(t, tt.cfg)
			for i, s := range tt.steps {
				now := t0.Add(sec(s.at))
				switch s.op {
				case "allow":
					ok, retryAt := b.Allow(s.key, now)
					var want time.Time
					if !s.allowed {
						want = t0.Add(sec(s.retryAt))
					}
					if ok != s.allowed || !retryAt.Equal(want) {
						t.Fatalf("step %d: Allow(%s) at %vs = %v, %v; want %v, %v", i, s.key, s.at, ok, retryAt.Sub(t0), s.allowed, want.Sub(t0))
					}
				case "ok", "fail":
					b.Record(s.key, s.op == "ok", now)
				case "status":
				default:
					t.Fatalf("step %d: unknown op %q", i, s.op)
				}
				if got := b.Status(s.key, now).State; got != s.state {
					t.Fatalf("step %d (%s %s at %vs): state %v, want %v", i, s.op, s.key, s.at, got, s.state)
				}
			}
		})
	}
}

// The endpoint: it answers 503 to the first two attempts of every
// delivery (webhook-id) and 200 to the third. A few deliveries are in
// flight at a time, each retried 50–200 ms after a failure. The old rule
// (open after 5 consecutive failures, one probe) opened at once and then
// failed every probe, a fresh delivery, forever. Now the circuit never
// opens and every delivery is delivered at its third attempt.
func TestBreakerFlakyEndpointNeverOpens(t *testing.T) {
	const ep = "https://hooks.example.com/in"
	tests := []struct {
		name     string
		cfg      BreakerConfig
		inFlight int
	}{
		{"defaults, 3 in flight", BreakerConfig{}, 3},
		{"defaults, 8 in flight", BreakerConfig{}, 8},
		{"tight: 2 failures in 2s", BreakerConfig{Failures: intp(2), Window: "2s"}, 3},
		{"tight: 2 failures in 2s, one in flight", BreakerConfig{Failures: intp(2), Window: "2s"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBreaker(t, tt.cfg)
			rng := rand.New(rand.NewPCG(7, 11))
			between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }

			const deliveries = 90
			type event struct {
				at     time.Time
				d      int
				answer bool // the answer to the attempt sent; else it is due
			}
			var events []event
			attempts := make([]int, deliveries)
			delivered := make([]int, deliveries) // the attempt that succeeded
			next := 0
			start := func(at time.Time) {
				if next < deliveries {
					events = append(events, event{at: at, d: next})
					next++
				}
			}
			for i := range tt.inFlight {
				start(t0.Add(time.Duration(i) * 10 * time.Millisecond))
			}
			run, maxRun := 0, 0 // consecutive failures, as the old rule counted them
			var now time.Time
			for len(events) > 0 {
				i := 0
				for j, e := range events {
					if e.at.Before(events[i].at) {
						i = j
					}
				}
				e := events[i]
				events = slices.Delete(events, i, i+1)
				now = e.at
				if !e.answer {
					if ok, at := b.Allow(ep, now); !ok {
						t.Fatalf("delivery %d, attempt %d at +%v: turned away until +%v", e.d, attempts[e.d]+1, now.Sub(t0), at.Sub(t0))
					}
					attempts[e.d]++
					events = append(events, event{at: now.Add(between(10*time.Millisecond, 100*time.Millisecond)), d: e.d, answer: true})
				} else {
					success := attempts[e.d] >= 3
					b.Record(ep, success, now)
					if success {
						run = 0
						delivered[e.d] = attempts[e.d]
						start(now)
					} else {
						run++
						maxRun = max(maxRun, run)
						events = append(events, event{at: now.Add(between(50*time.Millisecond, 200*time.Millisecond)), d: e.d})
					}
				}
				if s := b.Status(ep, now); s.State != BreakerClosed {
					t.Fatalf("at +%v: the circuit is %v", now.Sub(t0), s.State)
				}
			}
			for d, n := range delivered {
				if n != 3 {
					t.Errorf("delivery %d: delivered at attempt %d, want 3", d, n)
				}
			}
			if tt.inFlight > 1 && maxRun < DefaultBreakerFailures {
				t.Errorf("at most %d consecutive failures: the scenario would not have opened the old breaker either", maxRun)
			}
			t.Logf("%d deliveries over %v, up to %d consecutive failures", deliveries, now.Sub(t0), maxRun)
		})
	}
}

// An endpoint that fails 40% of the attempts at random is never paused,
// however long the runs of failures that chance makes.
func TestBreakerRandomFailuresNeverOpen(t *testing.T) {
	const ep = "https://crm.example"
	tests := []struct {
		name string
		cfg  BreakerConfig
	}{
		{"defaults", BreakerConfig{}},
		{"3 failures in 20s", BreakerConfig{Failures: intp(3), Window: "20s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBreaker(t, tt.cfg)
			rng := rand.New(rand.NewPCG(2026, 3))
			now := t0
			run, maxRun := 0, 0
			var lastOK time.Time
			var maxDry time.Duration // the longest time without a success
			for i := range 10_000 {
				now = now.Add(time.Duration(rng.Int64N(int64(2 * time.Second)))) // 0 to 2s apart: about 2h45m in all
				if ok, at := b.Allow(ep, now); !ok {
					t.Fatalf("attempt %d at +%v: turned away until +%v", i, now.Sub(t0), at.Sub(t0))
				}
				done := now.Add(time.Duration(rng.Int64N(int64(time.Second))))
				success := rng.Float64() >= 0.4
				b.Record(ep, success, done)
				if success {
					run = 0
					lastOK = done
				} else {
					run++
					maxRun = max(maxRun, run)
					if !lastOK.IsZero() {
						maxDry = max(maxDry, done.Sub(lastOK))
					}
				}
				if s := b.Status(ep, done); s.State != BreakerClosed {
					t.Fatalf("attempt %d at +%v: the circuit is %v after %d failures in a row", i, done.Sub(t0), s.State, run)
				}
			}
			if maxRun < DefaultBreakerFailures {
				t.Errorf("at most %d consecutive failures: the old rule would not have opened either", maxRun)
			}
			t.Logf("over %v: up to %d consecutive failures, up to %v without a success", now.Sub(t0), maxRun, maxDry)
		})
	}
}

func TestBreakerStatus(t *testing.T) {
	b := newBreaker(t, BreakerConfig{})
	b.Record("e", false, t0)
	b.Record("e", false, t0.Add(time.Second))
	want := BreakerStatus{State: BreakerClosed, Failures: 2, FailingSince: t0}
	if got := b.Status("e", t0.Add(time.Second)); got != want {
		t.Fatalf("Status = %+v, want %+v", got, want)
	}
	for i := range 3 {
		b.Record("e", false, t0.Add(time.Duration(10+i)*time.Second))
	}
	want = BreakerStatus{State: BreakerClosed, Failures: 5, FailingSince: t0}
	if got := b.Status("e", t0.Add(29*time.Second)); got != want {
		t.Fatalf("Status before the window is over = %+v, want %+v", got, want)
	}
	// Open: FailingSince says since when nothing was accepted.
	want = BreakerStatus{State: BreakerOpen, OpenUntil: t0.Add(70 * time.Second), Cooldown: 30 * time.Second, FailingSince: t0}
	if got := b.Status("e", t0.Add(40*time.Second)); got != want {
		t.Fatalf("Status after the window = %+v, want %+v", got, want)
	}
	want.State = BreakerHalfOpen
	if got := b.Status("e", t0.Add(70*time.Second)); got != want {
		t.Fatalf("Status after the cooldown = %+v, want %+v", got, want)
	}
	b.Reset("e")
	if got := b.Status("e", t0); got != (BreakerStatus{}) {
		t.Fatalf("Status after Reset = %+v, want closed", got)
	}
	if ok, _ := b.Allow("e", t0.Add(70*time.Second)); !ok {
		t.Fatal("Allow after Reset = false")
	}
	b.Record("e", false, t0.Add(80*time.Second))
	if got := b.Status("e", t0.Add(80*time.Second)); got.Failures != 1 || !got.FailingSince.Equal(t0.Add(80*time.Second)) {
		t.Fatalf("Status after Reset and a failure = %+v, want 1 failure since +80s", got)
	}
	b.Record("e", true, t0.Add(81*time.Second))
	if got := b.Status("e", t0.Add(81*time.Second)); got != (BreakerStatus{}) {
		t.Fatalf("Status after a success = %+v, want closed with no failures", got)
	}
}

func TestBreakerReset(t *testing.T) {
	b := newBreaker(t, BreakerConfig{Failures: intp(1), Window: "1s"})
	for _, key := range []string{"e", "other"} {
		b.Record(key, false, t0)
		b.Record(key, false, t0.Add(time.Second))
	}
	b.Reset("e")
	if ok, _ := b.Allow("e", t0.Add(2*time.Second)); !ok {
		t.Fatal("Allow after Reset = false")
	}
	// the window starts again
	b.Record("e", false, t0.Add(2*time.Second))
	if s := b.Status("e", t0.Add(2500*time.Millisecond)); s.State != BreakerClosed {
		t.Fatalf("state %v half a window after Reset, want closed", s.State)
	}
	if ok, _ := b.Allow("other", t0.Add(2*time.Second)); ok {
		t.Fatal("Reset of one key closed another")
	}
}

func TestNilBreaker(t *testing.T) {
	var b *Breaker
	b.Record("e", false, t0)
	b.Reset("e")
	if ok, at := b.Allow("e", t0); !ok || !at.IsZero() {
		t.Fatalf("nil Allow = %v, %v", ok, at)
	}
	if s := b.Status("e", t0); s != (BreakerStatus{}) {
		t.Fatalf("nil Status = %+v", s)
	}
}

func TestNewBreakerErrors(t *testing.T) {
	tests := []struct {
		cfg  BreakerConfig
		want string
	}{
		{BreakerConfig{Failures: intp(0)}, "failures: must be at least 1, got 0"},
		{BreakerConfig{Window: "0s"}, "window: must be more than 0"},
		{BreakerConfig{Window: "soon"}, `window: "soon" is not a duration`},
		{BreakerConfig{Window: "-30s"}, `window: "-30s" is negative`},
		{BreakerConfig{Cooldown: "0s"}, "cooldown: must be more than 0"},
		{BreakerConfig{Cooldown: "soon"}, `cooldown: "soon" is not a duration`},
		{BreakerConfig{Cooldown: "-1s"}, `cooldown: "-1s" is negative`},
		{BreakerConfig{MaxCooldown: "10s"}, "max_cooldown: must be at least cooldown (30s), got 10s"},
		{BreakerConfig{Probes: intp(0)}, "probes: must be at least 1, got 0"},
		{BreakerConfig{Probes: intp(-2)}, "probes: must be at least 1, got -2"},
		{BreakerConfig{ProbeTimeout: "x"}, `probe_timeout: "x" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			b, err := NewBreaker(tt.cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("NewBreaker = %v, %v; want error %q", b, err, tt.want)
			}
		})
	}
}

// The new fields decode from a sink's circuit_breaker block.
func TestBreakerConfigJSON(t *testing.T) {
	var cfg BreakerConfig
	if err := json.Unmarshal([]byte(`{"failures": 2, "window": "1m", "probes": 1}`), &cfg); err != nil {
		t.Fatal(err)
	}
	b := newBreaker(t, cfg)
	b.Record("e", false, t0)
	b.Record("e", false, t0.Add(59*time.Second))
	if s := b.Status("e", t0.Add(59*time.Second)); s.State != BreakerClosed {
		t.Fatalf("state %v within the 1m window, want closed", s.State)
	}
	if ok, at := b.Allow("e", t0.Add(time.Minute)); ok || !at.Equal(t0.Add(90*time.Second)) {
		t.Fatalf("Allow after the window = %v, %v; want false, +90s", ok, at.Sub(t0))
	}
	if ok, _ := b.Allow("e", t0.Add(90*time.Second)); !ok {
		t.Fatal("the probe was turned away")
	}
	if ok, _ := b.Allow("e", t0.Add(90*time.Second)); ok {
		t.Fatal("a second probe was let through with probes = 1")
	}
}

// Many deliveries racing for a half-open circuit: exactly Probes of them are
// let through.
func TestBreakerProbesUnderConcurrency(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		t.Run(fmt.Sprint(n, " probes"), func(t *testing.T) {
			b := newBreaker(t, BreakerConfig{Failures: intp(1), Window: "1s", Probes: intp(n)})
			b.Record("e", false, t0)
			b.Record("e", false, t0.Add(time.Second))
			for round := range 20 {
				// Each round: the cooldown is over, 64 goroutines ask at once.
				now := t0.Add(time.Duration(round+1) * time.Hour)
				var allowed atomic.Int32
				var wg sync.WaitGroup
				for range 64 {
					wg.Go(func() {
						if ok, _ := b.Allow("e", now); ok {
							allowed.Add(1)
						}
					})
				}
				wg.Wait()
				if got := allowed.Load(); got != int32(n) {
					t.Fatalf("round %d: %d probes let through, want exactly %d", round, got, n)
				}
				for range n { // all the probes fail: open again
					b.Record("e", false, now)
				}
				if s := b.Status("e", now); s.State != BreakerOpen {
					t.Fatalf("round %d: state %v after all the probes failed, want open", round, s.State)
				}
			}
		})
	}
}

// Concurrent use from many goroutines on many keys is race-free; keys that
// always fail open, and a key whose deliveries all succeed never does.
func TestBreakerConcurrentKeys(t *testing.T) {
	b := newBreaker(t, BreakerConfig{})
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 500 {
				now := t0.Add(time.Duration(i) * 100 * time.Millisecond) // 50s in all
				bad := fmt.Sprintf("bad%d", g%4)
				if ok, _ := b.Allow(bad, now); ok {
					b.Record(bad, false, now)
				}
				if ok, _ := b.Allow("good", now); !ok {
					t.Errorf("the healthy endpoint was turned away")
					return
				}
				b.Record("good", true, now)
				_ = b.Status(bad, now)
			}
		})
	}
	wg.Wait()
	for g := range 4 {
		if s := b.Status(fmt.Sprintf("bad%d", g), t0.Add(50*time.Second)); s.State != BreakerOpen {
			t.Errorf("bad%d: state %v, want open", g, s.State)
		}
	}
	if s := b.Status("good", t0.Add(50*time.Second)); s != (BreakerStatus{}) {
		t.Errorf("good: %+v, want closed with no failures", s)
	}
}

// Idle circuits are forgotten once there are many; recent ones are not.
func TestBreakerSweep(t *testing.T) {
	b := newBreaker(t, BreakerConfig{Failures: intp(1), Window: "1s"})
	for i := range 3000 {
		key := fmt.Sprintf("old%d", i)
		b.Record(key, false, t0) // closed, one failure
		if i%2 == 0 {
			b.Record(key, false, t0.Add(time.Second)) // open for 30s
		}
	}
	late := t0.Add(time.Hour) // well past 2 × 10 minutes of idleness
	b.Record("open", false, late.Add(-2*time.Second))
	b.Record("open", false, late.Add(-time.Second)) // in its cooldown
	b.Record("failing", false, late.Add(-time.Second))
	for i := range 2000 {
		b.Record(fmt.Sprintf("new%d", i), false, late)
	}
	b.mu.Lock()
	var old int
	for k := range b.circuits {
		if strings.HasPrefix(k, "old") {
			old++
		}
	}
	_, open := b.circuits["open"]
	_, failing := b.circuits["failing"]
	b.mu.Unlock()
	if old != 0 {
		t.Fatalf("%d idle circuits kept after the sweep", old)
	}
	if !open || !failing {
		t.Fatalf("the sweep dropped a recent circuit (open kept: %v, failing kept: %v)", open, failing)
	}
	if s := b.Status("open", late); s.State != BreakerOpen {
		t.Fatalf("open: state %v after the sweep, want open", s.State)
	}
}
