package policy

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// ms is a duration in milliseconds, or a time that many ms after t0.
func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }
func at(n int) time.Time     { return t0.Add(ms(n)) }

func TestParseRate(t *testing.T) {
	tests := []struct {
		in       string
		want     Rate
		interval time.Duration
		str      string
	}{
		{"50/s", Rate{50, time.Second}, 20 * time.Millisecond, "50/s"},
		{"600/m", Rate{600, time.Minute}, 100 * time.Millisecond, "600/m"},
		{"10/h", Rate{10, time.Hour}, 6 * time.Minute, "10/h"},
		{"2.5/s", Rate{2.5, time.Second}, 400 * time.Millisecond, "2.5/s"},
		{"1/s", Rate{1, time.Second}, time.Second, "1/s"},
		{"0.5/m", Rate{0.5, time.Minute}, 2 * time.Minute, "0.5/m"},
		{" 3 / sec ", Rate{3, time.Second}, 333333333 * time.Nanosecond, "3/s"},
		{"100/minute", Rate{100, time.Minute}, 600 * time.Millisecond, "100/m"},
		{"7/Hour", Rate{7, time.Hour}, 514285714286 * time.Nanosecond, "7/h"},
		{"1000000/s", Rate{1e6, time.Second}, time.Microsecond, "1000000/s"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || got.Interval() != tt.interval || got.String() != tt.str {
				t.Fatalf("ParseRate = %+v (interval %v, %q), want %+v (interval %v, %q)", got, got.Interval(), got.String(), tt.want, tt.interval, tt.str)
			}
		})
	}
}

func TestParseRateErrors(t *testing.T) {
	tests := []struct{ in, why string }{
		{"", `no "/"`},
		{"50", `no "/"`},
		{"50/", "unknown unit"},
		{"50/d", "unknown unit"},
		{"50/ms", "unknown unit"},
		{"/s", "not a number"},
		{"fast/s", "not a number"},
		{"NaN/s", "not a number"},
		{"Inf/s", "not a number"},
		{"0/s", "more than 0"},
		{"-5/s", "more than 0"},
		{"2000000/s", "too high"},
		{"5/s/s", "unknown unit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRate(tt.in)
			if err == nil {
				t.Fatalf("ParseRate(%q) = %v, want an error", tt.in, r)
			}
			if !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
				t.Fatalf("error %q does not quote the input and say %q", err, tt.why)
			}
		})
	}
}

// step is one limiter call in a scenario.
type limStep struct {
	op   string // "reserve", "allow" or "pause"
	key  string
	at   int // ms after t0
	want int // reserve: wait in ms; allow: 1 true, 0 false; pause: until, ms after t0
}

func TestLimiter(t *testing.T) {
	tests := []struct {
		name  string
		rate  Rate
		burst int
		steps []limStep
	}{
		{
			name: "1/s paces one per second", rate: SlackPerChannel, burst: 1,
			steps: []limStep{
				{"reserve", "C1", 0, 0},
				{"reserve", "C1", 0, 1000},
				{"reserve", "C1", 0, 2000},
				{"reserve", "C1", 500, 2500}, // the 4th slot is at 3000
				{"reserve", "C1", 10000, 0},  // idle again
				{"reserve", "C1", 10400, 600},
			},
		},
		{
			name: "keys are independent", rate: SlackPerChannel, burst: 1,
			steps: []limStep{
				{"reserve", "C1", 0, 0},
				{"reserve", "C2", 0, 0},
				{"reserve", "C1", 0, 1000},
				{"reserve", "C2", 100, 900},
				{"reserve", "C3", 100, 0},
			},
		},
		{
			name: "fractional rate", rate: Rate{2.5, time.Second}, burst: 1,
			steps: []limStep{
				{"reserve", "k", 0, 0},
				{"reserve", "k", 0, 400},
				{"reserve", "k", 0, 800},
				{"reserve", "k", 1000, 200},
			},
		},
		{
			name: "burst after idling", rate: Rate{10, time.Second}, burst: 3,
			steps: []limStep{
				{"reserve", "k", 0, 0},
				{"reserve", "k", 0, 0},
				{"reserve", "k", 0, 0},
				{"reserve", "k", 0, 100},
				{"reserve", "k", 0, 200},
				{"reserve", "k", 1000, 0}, // budget full again
				{"reserve", "k", 1000, 0},
				{"reserve", "k", 1000, 0},
				{"reserve", "k", 1000, 100},
			},
		},
		{
			name: "burst refills one slot per interval", rate: Rate{10, time.Second}, burst: 3,
			steps: []limStep{
				{"reserve", "k", 0, 0},
				{"reserve", "k", 0, 0},
				{"reserve", "k", 0, 0},
				{"reserve", "k", 100, 0}, // one slot came back
				{"reserve", "k", 100, 100},
			},
		},
		{
			name: "allow takes only free slots", rate: SlackPerChannel, burst: 1,
			steps: []limStep{
				{"allow", "k", 0, 1},
				{"allow", "k", 0, 0},
				{"allow", "k", 999, 0},
				{"allow", "k", 1000, 1},
				{"reserve", "k", 1000, 1000}, // the refusals took nothing
			},
		},
		{
			name: "pause holds a key back, then pacing resumes", rate: SlackPerChannel, burst: 1,
			steps: []limStep{
				{"reserve", "C1", 0, 0},
				{"pause", "C1", 0, 30000},
				{"reserve", "C1", 100, 29900},
				{"reserve", "C1", 100, 30900},
				{"reserve", "C2", 100, 0}, // other keys are not paused
				{"allow", "C1", 29000, 0},
			},
		},
		{
			name: "an earlier pause changes nothing", rate: SlackPerChannel, burst: 1,
			steps: []limStep{
				{"pause", "k", 0, 5000},
				{"pause", "k", 0, 2000},
				{"reserve", "k", 0, 5000},
			},
		},
		{
			name: "pause with burst: no burst right after it", rate: Rate{10, time.Second}, burst: 3,
			steps: []limStep{
				{"pause", "k", 0, 1000},
				{"reserve", "k", 0, 1000},
				{"reserve", "k", 0, 1100},
			},
		},
		{
			name: "zero rate limits nothing but honours a pause", rate: Rate{}, burst: 1,
			steps: []limStep{
				{"reserve", "k", 0, 0},
				{"reserve", "k", 0, 0},
				{"allow", "k", 0, 1},
				{"pause", "k", 0, 2000},
				{"reserve", "k", 500, 1500},
				{"reserve", "k", 500, 1500},
				{"allow", "k", 1999, 0},
				{"allow", "k", 2000, 1},
				{"reserve", "k", 2000, 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.rate, tt.burst)
			for i, s := range tt.steps {
				switch s.op {
				case "reserve":
					if got := l.Reserve(s.key, at(s.at)); got != ms(s.want) {
						t.Fatalf("step %d: Reserve(%s) at %dms = %v, want %v", i, s.key, s.at, got, ms(s.want))
					}
				case "allow":
					if got := l.Allow(s.key, at(s.at)); got != (s.want == 1) {
						t.Fatalf("step %d: Allow(%s) at %dms = %v, want %v", i, s.key, s.at, got, s.want == 1)
					}
				case "pause":
					l.Pause(s.key, at(s.want))
				}
			}
		})
	}
}

func TestNilLimiter(t *testing.T) {
	var l *Limiter
	l.Pause("k", at(5000))
	if w := l.Reserve("k", t0); w != 0 {
		t.Errorf("nil Reserve = %v", w)
	}
	if !l.Allow("k", t0) {
		t.Error("nil Allow = false")
	}
}

// Concurrent reservations at the same instant get distinct, evenly spaced
// slots: no two requests share one.
func TestLimiterConcurrent(t *testing.T) {
	const n = 64
	l := NewLimiter(Rate{50, time.Second}, 1)
	waits := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { waits[i] = l.Reserve("endpoint", t0) })
	}
	wg.Wait()
	slices.Sort(waits)
	for i, w := range waits {
		if w != time.Duration(i)*20*time.Millisecond {
			t.Fatalf("sorted waits = %v, want 0, 20ms, 40ms, ...", waits)
		}
	}
}

// Over any stretch, a 600/m limiter with burst 1 lets through at most one
// request per 100 ms, however the callers arrive.
func TestLimiterNeverExceedsRate(t *testing.T) {
	l := NewLimiter(Rate{600, time.Minute}, 1)
	var sends []time.Time
	now := t0
	for i := range 500 {
		now = now.Add(time.Duration(i%7) * 13 * time.Millisecond) // irregular arrivals
		sends = append(sends, now.Add(l.Reserve("k", now)))
	}
	slices.SortFunc(sends, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(sends); i++ {
		if gap := sends[i].Sub(sends[i-1]); gap < 100*time.Millisecond {
			t.Fatalf("sends %d and %d only %v apart", i-1, i, gap)
		}
	}
}

// Keys whose budget is full again are forgotten once there are many, and a
// forgotten key behaves like a new one.
func TestLimiterSweep(t *testing.T) {
	l := NewLimiter(SlackPerChannel, 1)
	for i := range 5000 {
		l.Reserve(fmt.Sprintf("k%d", i), t0)
	}
	l.Pause("paused", at(60_000))
	// Two seconds on, those budgets are full again; new keys arrive until
	// the map reaches the sweep threshold (it doubles after each sweep:
	// 1024, 2048, 4096, 8192).
	for i := range 3200 {
		l.Reserve(fmt.Sprintf("n%d", i), at(2000))
	}
	l.mu.Lock()
	n := len(l.tat)
	_, keptPause := l.tat["paused"]
	var old int
	for k := range l.tat {
		if strings.HasPrefix(k, "k") {
			old++
		}
	}
	l.mu.Unlock()
	if old != 0 || n > 3201 {
		t.Fatalf("%d keys kept after the sweep, %d of them idle; want only the 3200 new ones and the paused one", n, old)
	}
	if !keptPause {
		t.Fatal("the sweep dropped a paused key")
	}
	if w := l.Reserve("paused", at(2000)); w != ms(58000) {
		t.Fatalf("paused key after the sweep: wait %v, want 58s", w)
	}
	if w := l.Reserve("k17", at(2000)); w != 0 {
		t.Fatalf("forgotten key: wait %v, want 0", w)
	}
}
