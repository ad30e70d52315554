package policy

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func intp(n int) *int { return &n }

// delays returns Delay(1..MaxAttempts+1) with a fixed random number.
func delays(r Retry, f float64) []time.Duration {
	var out []time.Duration
	for n := 1; ; n++ {
		d, ok := r.Delay(n, func() float64 { return f })
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

func TestParseRetry(t *testing.T) {
	s, m, h := time.Second, time.Minute, time.Hour
	tests := []struct {
		name     string
		cfg      RetryConfig
		exp      bool
		attempts int
		// delays with the largest random number below 1: the top of full
		// jitter's range, i.e. the ceiling, for the exponential form
		top []time.Duration
	}{
		{
			name: "no block is the default schedule", cfg: RetryConfig{},
			attempts: 8, top: []time.Duration{0, 5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h},
		},
		{
			name: "schedule", cfg: RetryConfig{Schedule: []string{"0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"}},
			attempts: 8, top: []time.Duration{0, 5 * s, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h},
		},
		{
			name: "schedule with a delayed first attempt and spaces", cfg: RetryConfig{Schedule: []string{" 1s", "1m30s "}},
			attempts: 2, top: []time.Duration{s, 90 * s},
		},
		{
			name: "exponential", cfg: RetryConfig{MaxAttempts: intp(8), Initial: "5s", Max: "10h"}, exp: true,
			attempts: 8, top: []time.Duration{0, 5 * s, 10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 320 * s},
		},
		{
			name: "exponential capped by max", cfg: RetryConfig{MaxAttempts: intp(6), Initial: "1s", Max: "5s"}, exp: true,
			attempts: 6, top: []time.Duration{0, s, 2 * s, 4 * s, 5 * s, 5 * s},
		},
		{
			name: "exponential, one attempt only", cfg: RetryConfig{MaxAttempts: intp(1)}, exp: true,
			attempts: 1, top: []time.Duration{0},
		},
		{
			name: "exponential defaults for missing fields", cfg: RetryConfig{Initial: "1m"}, exp: true,
			attempts: 8, top: []time.Duration{0, m, 2 * m, 4 * m, 8 * m, 16 * m, 32 * m, 64 * m},
		},
		{
			name: "max equal to initial", cfg: RetryConfig{MaxAttempts: intp(3), Initial: "2s", Max: "2s"}, exp: true,
			attempts: 3, top: []time.Duration{0, 2 * s, 2 * s},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRetry(tt.cfg)
			if err != nil {
				t.Fatalf("ParseRetry: %v", err)
			}
			if r.IsExponential() != tt.exp {
				t.Errorf("IsExponential = %v, want %v", r.IsExponential(), tt.exp)
			}
			if got := r.MaxAttempts(); got != tt.attempts {
				t.Errorf("MaxAttempts = %d, want %d", got, tt.attempts)
			}
			if got := delays(r, math.Nextafter(1, 0)); !slices.Equal(got, tt.top) {
				t.Fatalf("delays = %v, want %v", got, tt.top)
			}
			if tt.exp {
				// The bottom of the range is no wait at all.
				if got := delays(r, 0); !slices.Equal(got, make([]time.Duration, tt.attempts)) {
					t.Fatalf("delays with rnd 0 = %v, want all 0", got)
				}
			}
		})
	}
}

func TestParseRetryErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  RetryConfig
		want string // prefix of the error
	}{
		{"schedule and max_attempts", RetryConfig{MaxAttempts: intp(3), Schedule: []string{"1s"}}, "retry.schedule: cannot be combined with max_attempts"},
		{"schedule and initial, max", RetryConfig{Initial: "1s", Max: "2s", Schedule: []string{"1s"}}, "retry.schedule: cannot be combined with initial, max"},
		{"empty schedule", RetryConfig{Schedule: []string{}}, "retry.schedule: must list at least one delay"},
		{"bad schedule entry", RetryConfig{Schedule: []string{"0s", "5x"}}, `retry.schedule[1]: "5x" is not a duration`},
		{"unitless schedule entry", RetryConfig{Schedule: []string{"5"}}, `retry.schedule[0]: "5" is not a duration`},
		{"negative schedule entry", RetryConfig{Schedule: []string{"-1s"}}, `retry.schedule[0]: "-1s" is negative`},
		{"zero max_attempts", RetryConfig{MaxAttempts: intp(0)}, "retry.max_attempts: must be at least 1, got 0"},
		{"negative max_attempts", RetryConfig{MaxAttempts: intp(-2)}, "retry.max_attempts: must be at least 1, got -2"},
		{"bad initial", RetryConfig{Initial: "soon"}, `retry.initial: "soon" is not a duration`},
		{"zero initial", RetryConfig{Initial: "0s"}, "retry.initial: must be more than 0"},
		{"bad max", RetryConfig{Max: "1d"}, `retry.max: "1d" is not a duration`},
		{"max below initial", RetryConfig{Initial: "1m", Max: "30s"}, "retry.max: must be at least initial (1m0s), got 30s"},
		{"max below default initial", RetryConfig{Max: "1s"}, "retry.max: must be at least initial (5s), got 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRetry(tt.cfg)
			if err == nil {
				t.Fatalf("ParseRetry = %v, want an error starting %q", r, tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error = %q, want it to start %q", err, tt.want)
			}
		})
	}
}

// The config decodes from the JSON the engine makes of an HCL block.
func TestRetryConfigJSON(t *testing.T) {
	tests := []struct {
		json     string
		exp      bool
		attempts int
		wantErr  string
	}{
		{`{}`, false, 8, ""},
		{`{"schedule": ["1s", "2s", "3s"]}`, false, 3, ""},
		{`{"max_attempts": 4, "initial": "1s", "max": "1m"}`, true, 4, ""},
		{`{"max_attempts": 0}`, false, 0, "retry.max_attempts"},
		{`{"schedule": []}`, false, 0, "retry.schedule"},
		{`{"schedule": null}`, false, 8, ""},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			var cfg RetryConfig
			if err := json.Unmarshal([]byte(tt.json), &cfg); err != nil {
				t.Fatal(err)
			}
			r, err := ParseRetry(cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %s...", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.IsExponential() != tt.exp || r.MaxAttempts() != tt.attempts {
				t.Fatalf("got %v (%d attempts), want exponential=%v with %d", r, r.MaxAttempts(), tt.exp, tt.attempts)
			}
		})
	}
}

func TestDelayJitter(t *testing.T) {
	r, err := Exponential(10, 4*time.Second, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		attempt int
		rnd     float64
		want    time.Duration
		ok      bool
	}{
		{"first attempt is immediate", 1, 0.7, 0, true},
		{"bottom of the range", 2, 0, 0, true},
		{"middle", 2, 0.5, 2 * time.Second, true},
		{"top", 2, math.Nextafter(1, 0), 4 * time.Second, true},
		{"third attempt doubles", 3, 0.5, 4 * time.Second, true},
		{"capped at max", 10, 0.5, 30 * time.Second, true},
		{"random number above range is clamped", 3, 7, 8 * time.Second, true},
		{"negative random number is clamped", 3, -1, 0, true},
		{"NaN random number is clamped", 3, math.NaN(), 0, true},
		{"beyond max attempts", 11, 0.5, 0, false},
		{"attempt 0", 0, 0.5, 0, false},
		{"negative attempt", -3, 0.5, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := r.Delay(tt.attempt, func() float64 { return tt.rnd })
			if ok != tt.ok || got != tt.want {
				t.Fatalf("Delay(%d) = %v, %v; want %v, %v", tt.attempt, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestDelayFixedScheduleIgnoresRandom(t *testing.T) {
	r, err := Schedule(time.Second, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	rnd := func() float64 { calls++; return 0.5 }
	tests := []struct {
		attempt int
		want    time.Duration
		ok      bool
	}{{0, 0, false}, {1, time.Second, true}, {2, time.Minute, true}, {3, 0, false}}
	for _, tt := range tests {
		got, ok := r.Delay(tt.attempt, rnd)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Delay(%d) = %v, %v; want %v, %v", tt.attempt, got, ok, tt.want, tt.ok)
		}
	}
	if calls != 0 {
		t.Errorf("the fixed schedule drew %d random numbers", calls)
	}
}

// Large attempt numbers and caps do not overflow.
func TestDelayNoOverflow(t *testing.T) {
	huge := time.Duration(math.MaxInt64)
	tests := []struct {
		name             string
		attempts         int
		initial, maxWait time.Duration
		attempt          int
		want             time.Duration // with the top random number
	}{
		{"shift past 63 bits", 200, time.Second, 10 * time.Hour, 200, 10 * time.Hour},
		{"shift of exactly 62", 100, 1, huge, 64, 1 << 62},
		{"shift of 63", 100, 1, huge, 65, huge},
		{"initial near the top", 5, huge / 2, huge, 3, huge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Exponential(tt.attempts, tt.initial, tt.maxWait)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := r.Delay(tt.attempt, func() float64 { return math.Nextafter(1, 0) })
			if !ok || got < 0 || got > tt.want || float64(tt.want-got) > float64(tt.want)*1e-9 {
				t.Fatalf("Delay(%d) = %v, %v; want about %v", tt.attempt, got, ok, tt.want)
			}
		})
	}
}

// With the real random source every delay stays within its ceiling and the
// draws are spread over the range.
func TestDelayDefaultRandom(t *testing.T) {
	r, err := Exponential(3, time.Second, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var low, high int
	for range 2000 {
		d, ok := r.Delay(3, nil) // ceiling 2s
		if !ok || d < 0 || d > 2*time.Second {
			t.Fatalf("Delay(3) = %v, %v; want within [0, 2s]", d, ok)
		}
		if d < 500*time.Millisecond {
			low++
		}
		if d > 1500*time.Millisecond {
			high++
		}
	}
	// Each quarter should hold about 500 of 2000 draws.
	if low < 300 || high < 300 {
		t.Fatalf("draws not spread over [0, 2s]: %d in the bottom quarter, %d in the top", low, high)
	}
}

func TestDefaultScheduleIsACopy(t *testing.T) {
	s := DefaultSchedule()
	s[1] = time.Hour
	if d, _ := DefaultRetry().Delay(2, nil); d != 5*time.Second {
		t.Fatalf("changing DefaultSchedule()'s result changed the default: Delay(2) = %v", d)
	}
	in := []time.Duration{time.Second}
	r, _ := Schedule(in...)
	in[0] = time.Hour
	if d, _ := r.Delay(1, nil); d != time.Second {
		t.Fatalf("Schedule kept the caller's slice: Delay(1) = %v", d)
	}
	if !slices.Equal(DefaultSchedule(), []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}) {
		t.Fatalf("DefaultSchedule() = %v", DefaultSchedule())
	}
}

func TestRetryString(t *testing.T) {
	exp, _ := Exponential(8, 5*time.Second, 10*time.Hour)
	sched, _ := Schedule(0, 5*time.Second)
	tests := []struct {
		r    Retry
		want string
	}{
		{Retry{}, "schedule: 0s 5s 5m0s 30m0s 2h0m0s 5h0m0s 10h0m0s 10h0m0s"},
		{exp, "exponential: 8 attempts, initial 5s, max 10h0m0s"},
		{sched, "schedule: 0s 5s"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
