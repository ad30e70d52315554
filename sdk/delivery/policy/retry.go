package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// DefaultSchedule returns the retry schedule used when a sink has no retry
// block: 0s 5s 5m 30m 2h 5h 10h 10h, eight attempts, the first at once and
// the last 27h35m5s after it.
func DefaultSchedule() []time.Duration {
	return append([]time.Duration(nil), defaultSchedule...)
}

var defaultSchedule = []time.Duration{
	0,
	5 * time.Second,
	5 * time.Minute,
	30 * time.Minute,
	2 * time.Hour,
	5 * time.Hour,
	10 * time.Hour,
	10 * time.Hour,
}

// Defaults of the exponential form, used for the fields a retry block that
// sets at least one of max_attempts, initial and max leaves out.
const (
	DefaultMaxAttempts = 8
	DefaultInitial     = 5 * time.Second
	DefaultMax         = 10 * time.Hour
)

// RetryConfig is a sink's retry block as decoded from its configuration:
//
//	retry { max_attempts = 8  initial = "5s"  max = "10h" }
//	retry { schedule = ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"] }
//
// The zero RetryConfig (no block, or an empty one) means [DefaultRetry].
type RetryConfig struct {
	// MaxAttempts counts every attempt, the first included. A pointer, so
	// that an explicit 0 is an error rather than "unset".
	MaxAttempts *int   `json:"max_attempts,omitempty"`
	Initial     string `json:"initial,omitempty"`
	Max         string `json:"max,omitempty"`
	// Schedule is nil when absent; an explicit empty list is an error.
	Schedule []string `json:"schedule,omitempty"`
}

// Retry is a parsed retry policy: either a fixed schedule or exponential
// backoff with full jitter. The zero Retry is [DefaultRetry]. A Retry is an
// immutable value, safe to share between goroutines.
type Retry struct {
	schedule []time.Duration // fixed form; nil in the exponential form
	attempts int             // exponential form: attempts in all
	initial  time.Duration   // exponential form
	max      time.Duration   // exponential form
}

// DefaultRetry returns the policy of a sink without a retry block: the fixed
// [DefaultSchedule].
func DefaultRetry() Retry {
	return Retry{schedule: defaultSchedule}
}

// Exponential returns the exponential policy with the given number of
// attempts (the first included), initial delay and cap, checked as
// [ParseRetry] checks them.
func Exponential(maxAttempts int, initial, maxDelay time.Duration) (Retry, error) {
	switch {
	case maxAttempts < 1:
		return Retry{}, fmt.Errorf("retry.max_attempts: must be at least 1, got %d", maxAttempts)
	case initial <= 0:
		return Retry{}, fmt.Errorf("retry.initial: must be more than 0, got %s", initial)
	case maxDelay < initial:
		return Retry{}, fmt.Errorf("retry.max: must be at least initial (%s), got %s", initial, maxDelay)
	}
	return Retry{attempts: maxAttempts, initial: initial, max: maxDelay}, nil
}

// Schedule returns the fixed-schedule policy: attempt n waits schedule[n-1].
// Delays must not be negative and there must be at least one.
func Schedule(schedule ...time.Duration) (Retry, error) {
	if len(schedule) == 0 {
		return Retry{}, errors.New("retry.schedule: must list at least one delay")
	}
	for i, d := range schedule {
		if d < 0 {
			return Retry{}, fmt.Errorf("retry.schedule[%d]: must not be negative, got %s", i, d)
		}
	}
	return Retry{schedule: append([]time.Duration(nil), schedule...)}, nil
}

// ParseRetry checks a retry block and returns its policy.
//
//   - No field set: [DefaultRetry].
//   - schedule set: the fixed form; every entry must be a duration such as
//     "0s", "5m" or "10h" (Go syntax, not negative), and there must be at
//     least one.
//   - Any of max_attempts, initial, max set: the exponential form; fields left
//     out take [DefaultMaxAttempts], [DefaultInitial] and [DefaultMax].
//     max_attempts must be at least 1, initial more than 0, max at least
//     initial.
//   - schedule together with any exponential field: an error.
//
// Errors start with the offending field ("retry.initial: ...",
// "retry.schedule[2]: ...").
func ParseRetry(cfg RetryConfig) (Retry, error) {
	var exp []string
	if cfg.MaxAttempts != nil {
		exp = append(exp, "max_attempts")
	}
	if cfg.Initial != "" {
		exp = append(exp, "initial")
	}
	if cfg.Max != "" {
		exp = append(exp, "max")
	}
	if cfg.Schedule != nil && len(exp) > 0 {
		return Retry{}, fmt.Errorf("retry.schedule: cannot be combined with %s; use either a schedule or max_attempts/initial/max", strings.Join(exp, ", "))
	}
	if cfg.Schedule != nil {
		sched := make([]time.Duration, len(cfg.Schedule))
		for i, s := range cfg.Schedule {
			d, err := parseDuration(s)
			if err != nil {
				return Retry{}, fmt.Errorf("retry.schedule[%d]: %w", i, err)
			}
			sched[i] = d
		}
		return Schedule(sched...)
	}
	if len(exp) == 0 {
		return DefaultRetry(), nil
	}
	attempts, initial, maxDelay := DefaultMaxAttempts, DefaultInitial, DefaultMax
	if cfg.MaxAttempts != nil {
		attempts = *cfg.MaxAttempts
	}
	if cfg.Initial != "" {
		d, err := parseDuration(cfg.Initial)
		if err != nil {
			return Retry{}, fmt.Errorf("retry.initial: %w", err)
		}
		initial = d
	}
	if cfg.Max != "" {
		d, err := parseDuration(cfg.Max)
		if err != nil {
			return Retry{}, fmt.Errorf("retry.max: %w", err)
		}
		maxDelay = d
	}
	return Exponential(attempts, initial, maxDelay)
}

// parseDuration reads a non-negative Go duration such as "5s" or "10h".
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as \"5s\", \"5m\" or \"10h\"", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// IsExponential reports whether r is the exponential form.
func (r Retry) IsExponential() bool { return r.schedule == nil && r.attempts > 0 }

// MaxAttempts is the number of attempts in all, the first one included.
func (r Retry) MaxAttempts() int {
	if r.IsExponential() {
		return r.attempts
	}
	return len(r.sched())
}

func (r Retry) sched() []time.Duration {
	if r.schedule == nil {
		return defaultSchedule
	}
	return r.schedule
}

// Delay returns how long to wait before attempt number attempt (1-based),
// counted from the failure of the attempt before it, or for attempt 1 from
// when the delivery was queued. ok is false when attempt is outside
// 1..MaxAttempts(): the delivery has no attempt left and is dead.
//
// Fixed form: schedule[attempt-1], exactly.
//
// Exponential form: attempt 1 is immediate (0). Attempt n ≥ 2 is retry
// k = n-1 and waits a uniformly random duration in [0, min(max,
// initial·2^(k-1))] (full jitter): up to initial before the 2nd attempt,
// 2·initial before the 3rd, and so on, capped at max.
//
// rnd returns a number in [0, 1), as math/rand/v2.Float64 does; nil means
// math/rand/v2.Float64. Values outside [0, 1) are clamped. The fixed form
// never calls it.
func (r Retry) Delay(attempt int, rnd func() float64) (time.Duration, bool) {
	if attempt < 1 || attempt > r.MaxAttempts() {
		return 0, false
	}
	if !r.IsExponential() {
		return r.sched()[attempt-1], true
	}
	if attempt == 1 {
		return 0, true
	}
	ceiling := r.ceiling(attempt - 1)
	if rnd == nil {
		rnd = rand.Float64
	}
	f := rnd()
	if !(f >= 0) { // negative or NaN
		f = 0
	}
	d := time.Duration(f * (float64(ceiling) + 1))
	if d > ceiling || d < 0 {
		d = ceiling
	}
	return d, true
}

// ceiling is min(max, initial·2^(retry-1)) without overflowing.
func (r Retry) ceiling(retry int) time.Duration {
	shift := retry - 1
	if shift >= 63 || r.initial > r.max>>shift {
		return r.max
	}
	return r.initial << shift // ≤ max, so it did not overflow
}

// String describes the policy for logs, e.g.
// "exponential: 8 attempts, initial 5s, max 10h0m0s" or
// "schedule: 0s 5s 5m0s ...".
func (r Retry) String() string {
	if r.IsExponential() {
		return fmt.Sprintf("exponential: %d attempts, initial %s, max %s", r.attempts, r.initial, r.max)
	}
	parts := make([]string, len(r.sched()))
	for i, d := range r.sched() {
		parts[i] = d.String()
	}
	return "schedule: " + strings.Join(parts, " ")
}
