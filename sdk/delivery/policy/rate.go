package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rate is a number of requests per period, as in rate_limit = "50/s". The
// zero Rate means no limit.
type Rate struct {
	Count float64       // requests per Per; more than 0
	Per   time.Duration // time.Second, time.Minute or time.Hour from ParseRate
}

// SlackPerChannel is Slack's pacing: one message per second per channel (per
// webhook URL in incoming-webhook mode).
var SlackPerChannel = Rate{Count: 1, Per: time.Second}

// ParseRate reads a rate such as "50/s", "600/m", "10/h" or "2.5/s": a
// positive decimal count, a slash, and a unit s, m or h (also sec, second,
// min, minute, hour). Spaces around the parts are ignored. The interval
// between requests (Per/Count) must be at least a microsecond.
func ParseRate(s string) (Rate, error) {
	bad := func(why string) (Rate, error) {
		return Rate{}, fmt.Errorf("rate %q: %s; want a count per s, m or h such as \"50/s\", \"600/m\" or \"10/h\"", s, why)
	}
	count, unit, ok := strings.Cut(s, "/")
	if !ok {
		return bad("no \"/\"")
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(count), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return bad("the count is not a number")
	}
	if n <= 0 {
		return bad("the count must be more than 0")
	}
	var per time.Duration
	switch strings.ToLower(strings.TrimSpace(unit)) {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		return bad("unknown unit")
	}
	r := Rate{Count: n, Per: per}
	if r.Interval() < time.Microsecond {
		return bad("too high")
	}
	return r, nil
}

// IsZero reports whether r is the zero Rate, meaning no limit.
func (r Rate) IsZero() bool { return r.Count <= 0 || r.Per <= 0 }

// Interval is the time between two requests at this rate (Per/Count), 0 for
// no limit.
func (r Rate) Interval() time.Duration {
	if r.IsZero() {
		return 0
	}
	return time.Duration(math.Round(float64(r.Per) / r.Count))
}

// String returns the rate as ParseRate reads it, e.g. "50/s", "2.5/s".
func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	unit := r.Per.String()
	switch r.Per {
	case time.Second:
		unit = "s"
	case time.Minute:
		unit = "m"
	case time.Hour:
		unit = "h"
	}
	return strconv.FormatFloat(r.Count, 'f', -1, 64) + "/" + unit
}

// Limiter paces requests per key (an endpoint, a Slack channel, a Zendesk
// account): every key has its own budget of Rate, independent of the
// others. It is concurrency-safe, and a nil *Limiter allows everything.
//
// The rule (GCRA, a token bucket in disguise): requests to one key are spaced
// Rate.Interval() apart, except that a key that has been idle may send up to
// burst requests at once. With burst 1 (the default), "1/s" means no two
// requests within a second of each other and "600/m" one every 100 ms, so no
// window of any length sees more than its share plus one.
//
// Memory: a key whose budget is full again is dropped, lazily, once the
// number of keys passes a threshold; a dropped key behaves exactly as a new
// one.
type Limiter struct {
	interval time.Duration
	slack    time.Duration // (burst-1)·interval
	mu       sync.Mutex
	tat      map[string]time.Time // theoretical arrival time of the next request
	sweepAt  int
}

const minSweep = 1024

// NewLimiter returns a limiter of rate r per key allowing bursts of up to
// burst requests (less than 1 counts as 1). A zero r limits nothing.
func NewLimiter(r Rate, burst int) *Limiter {
	burst = max(burst, 1)
	iv := r.Interval()
	return &Limiter{
		interval: iv,
		slack:    time.Duration(burst-1) * iv,
		tat:      make(map[string]time.Time),
		sweepAt:  minSweep,
	}
}

// Reserve books the next request slot of key and returns how long from now
// the caller must wait before sending it (0: send now). The slot is taken
// whatever the caller then does, so call it only for a request about to be
// sent (after the circuit breaker allowed it). Concurrent callers get
// distinct slots: with burst 1 and interval T, n callers at the same instant
// get 0, T, 2T, ..., (n-1)T.
func (l *Limiter) Reserve(key string, now time.Time) time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tat := l.next(key, now)
	l.take(key, tat, now)
	return max(tat.Sub(now)-l.slack, 0)
}

// Allow takes key's next slot and reports true if it can be used now;
// otherwise it takes nothing and reports false.
func (l *Limiter) Allow(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tat := l.next(key, now)
	if tat.Sub(now) > l.slack {
		return false
	}
	l.take(key, tat, now)
	return true
}

// Pause holds back key's requests until `until`: the next slot is no earlier
// than that, and later ones follow at the usual interval. Use it when the
// endpoint said to slow down for everyone, not just one delivery: a 429's
// Retry-After on a Slack channel, or [RateLimitPause] on a Zendesk account.
// An earlier pause than the one in force changes nothing. It works on a
// limiter with a zero Rate too.
func (l *Limiter) Pause(key string, until time.Time) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := until.Add(l.slack); t.After(l.tat[key]) {
		l.tat[key] = t
	}
}

// next is key's theoretical arrival time, no earlier than now. Called with
// l.mu held.
func (l *Limiter) next(key string, now time.Time) time.Time {
	tat, ok := l.tat[key]
	if !ok || tat.Before(now) {
		return now
	}
	return tat
}

// take books the slot at tat. Called with l.mu held.
func (l *Limiter) take(key string, tat, now time.Time) {
	if l.interval <= 0 {
		return // no limit: only a Pause is ever stored
	}
	l.tat[key] = tat.Add(l.interval)
	l.maybeSweep(now)
}

// maybeSweep drops keys whose budget is full again once there are many.
// Called with l.mu held.
func (l *Limiter) maybeSweep(now time.Time) {
	if len(l.tat) < l.sweepAt {
		return
	}
	for k, tat := range l.tat {
		if !tat.After(now) {
			delete(l.tat, k)
		}
	}
	l.sweepAt = max(minSweep, 2*len(l.tat))
}
