package policy

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func sec(n float64) time.Duration { return time.Duration(n * float64(time.Second)) }

// bStep is one breaker call in a scenario, at t0 + at seconds.
type bStep struct {
	op  string // "allow", "ok" (Record success), "fail" (Record failure)
	key string
	at  float64
	// allow: whether it is allowed and, when not, retryAt (seconds after t0)
	allowed bool
	retryAt float64
	// state expected after the step
	state BreakerState
}

func TestBreaker(t *testing.T) {
	five := []bStep{
		{"fail", "e", 0, false, 0, BreakerClosed},
		{"fail", "e", 0, false, 0, BreakerClosed},
		{"fail", "e", 0, false, 0, BreakerClosed},
		{"fail", "e", 0, false, 0, BreakerClosed},
		{"fail", "e", 0, false, 0, BreakerOpen}, // the 5th opens it until 30s
	}
	join := func(parts ...[]bStep) []bStep {
		var out []bStep
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name  string
		cfg   BreakerConfig
		steps []bStep
	}{
		{
			name: "closed allows and counts only consecutive failures",
			steps: []bStep{
				{"allow", "e", 0, true, 0, BreakerClosed},
				{"fail", "e", 0, false, 0, BreakerClosed},
				{"fail", "e", 0, false, 0, BreakerClosed},
				{"fail", "e", 0, false, 0, BreakerClosed},
				{"fail", "e", 0, false, 0, BreakerClosed},
				{"ok", "e", 0, false, 0, BreakerClosed}, // resets the run
				{"fail", "e", 1, false, 0, BreakerClosed},
				{"fail", "e", 1, false, 0, BreakerClosed},
				{"fail", "e", 1, false, 0, BreakerClosed},
				{"fail", "e", 1, false, 0, BreakerClosed},
				{"allow", "e", 1, true, 0, BreakerClosed},
			},
		},
		{
			name: "opens after five, turns away until the cooldown ends",
			steps: join(five, []bStep{
				{"allow", "e", 0, false, 30, BreakerOpen},
				{"allow", "e", 29.999, false, 30, BreakerOpen},
				{"allow", "other", 10, true, 0, BreakerClosed}, // per key
			}),
		},
		{
			name: "exactly one probe; its success closes",
			steps: join(five, []bStep{
				{"allow", "e", 30, true, 0, BreakerHalfOpen}, // the probe
				{"allow", "e", 30, false, 31, BreakerHalfOpen},
				{"allow", "e", 30.5, false, 31.5, BreakerHalfOpen},
				{"ok", "e", 31, false, 0, BreakerClosed},
				{"allow", "e", 31, true, 0, BreakerClosed},
				{"allow", "e", 31, true, 0, BreakerClosed},
				// the cooldown starts again from 30s next time
				{"fail", "e", 40, false, 0, BreakerClosed},
				{"fail", "e", 40, false, 0, BreakerClosed},
				{"fail", "e", 40, false, 0, BreakerClosed},
				{"fail", "e", 40, false, 0, BreakerClosed},
				{"fail", "e", 40, false, 0, BreakerOpen},
				{"allow", "e", 40, false, 70, BreakerOpen},
			}),
		},
		{
			name: "failed probes double the cooldown up to 10 minutes",
			steps: join(five, []bStep{
				{"allow", "e", 30, true, 0, BreakerHalfOpen},
				{"fail", "e", 31, false, 0, BreakerOpen}, // 60s: until 91
				{"allow", "e", 90, false, 91, BreakerOpen},
				{"allow", "e", 91, true, 0, BreakerHalfOpen},
				{"fail", "e", 91, false, 0, BreakerOpen}, // 120s: until 211
				{"allow", "e", 211, true, 0, BreakerHalfOpen},
				{"fail", "e", 211, false, 0, BreakerOpen}, // 240s: until 451
				{"allow", "e", 451, true, 0, BreakerHalfOpen},
				{"fail", "e", 451, false, 0, BreakerOpen}, // 480s: until 931
				{"allow", "e", 931, true, 0, BreakerHalfOpen},
				{"fail", "e", 931, false, 0, BreakerOpen}, // 960s capped to 600s: until 1531
				{"allow", "e", 1530, false, 1531, BreakerOpen},
				{"allow", "e", 1531, true, 0, BreakerHalfOpen},
				{"fail", "e", 1531, false, 0, BreakerOpen}, // still 600s
				{"allow", "e", 2130, false, 2131, BreakerOpen},
				{"allow", "e", 2131, true, 0, BreakerHalfOpen},
				{"ok", "e", 2132, false, 0, BreakerClosed},
			}),
		},
		{
			name: "late answers while open are ignored",
			steps: join(five, []bStep{
				{"ok", "e", 1, false, 0, BreakerOpen},
				{"fail", "e", 2, false, 0, BreakerOpen},
				{"allow", "e", 29, false, 30, BreakerOpen}, // not extended
				{"ok", "e", 31, false, 0, BreakerHalfOpen}, // no probe was let through
				{"allow", "e", 31, true, 0, BreakerHalfOpen},
			}),
		},
		{
			name: "a lost probe is replaced after the probe timeout",
			steps: join(five, []bStep{
				{"allow", "e", 30, true, 0, BreakerHalfOpen},
				{"allow", "e", 89.5, false, 90, BreakerHalfOpen}, // recheck capped at the deadline
				{"allow", "e", 90, true, 0, BreakerHalfOpen},     // a new probe
				{"allow", "e", 90, false, 91, BreakerHalfOpen},
				{"fail", "e", 92, false, 0, BreakerOpen},
				{"allow", "e", 151, false, 152, BreakerOpen},
			}),
		},
		{
			name: "configured threshold, cooldown and cap",
			cfg:  BreakerConfig{Failures: intp(2), Cooldown: "10s", MaxCooldown: "15s", ProbeTimeout: "5s"},
			steps: []bStep{
				{"fail", "e", 0, false, 0, BreakerClosed},
				{"fail", "e", 0, false, 0, BreakerOpen},
				{"allow", "e", 5, false, 10, BreakerOpen},
				{"allow", "e", 10, true, 0, BreakerHalfOpen},
				{"allow", "e", 14.5, false, 15, BreakerHalfOpen},
				{"fail", "e", 14.6, false, 0, BreakerOpen}, // 20s capped to 15s
				{"allow", "e", 29, false, 29.6, BreakerOpen},
			},
		},
		{
			name: "threshold of one",
			cfg:  BreakerConfig{Failures: intp(1)},
			steps: []bStep{
				{"fail", "e", 0, false, 0, BreakerOpen},
				{"allow", "e", 0, false, 30, BreakerOpen},
			},
		},
		{
			name: "cooldown longer than the default cap raises the cap",
			cfg:  BreakerConfig{Failures: intp(1), Cooldown: "15m"},
			steps: []bStep{
				{"fail", "e", 0, false, 0, BreakerOpen},
				{"allow", "e", 900, true, 0, BreakerHalfOpen},
				{"fail", "e", 900, false, 0, BreakerOpen},
				{"allow", "e", 1799, false, 1800, BreakerOpen},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewBreaker(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
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
				}
				if got := b.Status(s.key, now).State; got != s.state {
					t.Fatalf("step %d (%s %s at %vs): state %v, want %v", i, s.op, s.key, s.at, got, s.state)
				}
			}
		})
	}
}

func TestBreakerStatus(t *testing.T) {
	b, _ := NewBreaker(BreakerConfig{})
	b.Record("e", false, t0)
	b.Record("e", false, t0)
	if got, want := b.Status("e", t0), (BreakerStatus{State: BreakerClosed, Failures: 2}); got != want {
		t.Fatalf("Status = %+v, want %+v", got, want)
	}
	for range 3 {
		b.Record("e", false, t0)
	}
	want := BreakerStatus{State: BreakerOpen, OpenUntil: t0.Add(30 * time.Second), Cooldown: 30 * time.Second}
	if got := b.Status("e", t0.Add(time.Second)); got != want {
		t.Fatalf("Status = %+v, want %+v", got, want)
	}
	want.State = BreakerHalfOpen
	if got := b.Status("e", t0.Add(30*time.Second)); got != want {
		t.Fatalf("Status after the cooldown = %+v, want %+v", got, want)
	}
	b.Reset("e")
	if got := b.Status("e", t0); got != (BreakerStatus{}) {
		t.Fatalf("Status after Reset = %+v, want closed", got)
	}
	if ok, _ := b.Allow("e", t0); !ok {
		t.Fatal("Allow after Reset = false")
	}
}

func TestNilBreaker(t *testing.T) {
	var b *Breaker
	b.Record("e", false, t0)
	b.Reset("e")
	if ok, at := b.Allow("e", t0); !ok || !at.IsZero() {
		t.Fatalf("nil Allow = %v, %v", ok, at)
	}
	if s := b.Status("e", t0); s.State != BreakerClosed {
		t.Fatalf("nil Status = %+v", s)
	}
}

func TestNewBreakerErrors(t *testing.T) {
	tests := []struct {
		cfg  BreakerConfig
		want string
	}{
		{BreakerConfig{Failures: intp(0)}, "failures: must be at least 1, got 0"},
		{BreakerConfig{Cooldown: "0s"}, "cooldown: must be more than 0"},
		{BreakerConfig{Cooldown: "soon"}, `cooldown: "soon" is not a duration`},
		{BreakerConfig{Cooldown: "-1s"}, `cooldown: "-1s" is negative`},
		{BreakerConfig{MaxCooldown: "10s"}, "max_cooldown: must be at least cooldown (30s), got 10s"},
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

// Many deliveries racing for a half-open circuit: exactly one is the probe.
func TestBreakerOneProbeUnderConcurrency(t *testing.T) {
	b, _ := NewBreaker(BreakerConfig{Failures: intp(1)})
	b.Record("e", false, t0)
	for round := range 20 {
		// Each round: the cooldown is over, 64 goroutines ask at once.
		now := t0.Add(time.Duration(round+1) * time.Hour)
		var probes atomic.Int32
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				if ok, _ := b.Allow("e", now); ok {
					probes.Add(1)
				}
			})
		}
		wg.Wait()
		if n := probes.Load(); n != 1 {
			t.Fatalf("round %d: %d probes let through, want exactly 1", round, n)
		}
		b.Record("e", false, now) // the probe failed: open again
	}
}

// Concurrent use from many goroutines on many keys is race-free, and a key
// whose deliveries all succeed is never opened.
func TestBreakerConcurrentKeys(t *testing.T) {
	b, _ := NewBreaker(BreakerConfig{})
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 500 {
				now := t0.Add(time.Duration(i) * time.Millisecond)
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
		if s := b.Status(fmt.Sprintf("bad%d", g), t0.Add(time.Second)); s.State != BreakerOpen {
			t.Errorf("bad%d: state %v, want open", g, s.State)
		}
	}
}

// Idle circuits are forgotten once there are many; running cooldowns are
// not.
func TestBreakerSweep(t *testing.T) {
	b, _ := NewBreaker(BreakerConfig{Failures: intp(1)})
	for i := range 3000 {
		b.Record(fmt.Sprintf("old%d", i), false, t0) // each opens for 30s
	}
	late := t0.Add(time.Hour) // well past 2 × 10 minutes of idleness
	b.Record("fresh", false, late.Add(-time.Second))
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
	_, fresh := b.circuits["fresh"]
	b.mu.Unlock()
	if old != 0 {
		t.Fatalf("%d idle circuits kept after the sweep", old)
	}
	if !fresh {
		t.Fatal("the sweep dropped a circuit in its cooldown")
	}
}
