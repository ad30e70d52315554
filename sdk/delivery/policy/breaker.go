package policy

import (
	"fmt"
	"sync"
	"time"
)

// Circuit breaker defaults.
const (
	DefaultBreakerFailures = 5
	DefaultCooldown        = 30 * time.Second
	DefaultMaxCooldown     = 10 * time.Minute
	DefaultProbeTimeout    = time.Minute
)

// probeRecheck is how soon a delivery turned away because a probe is in
// flight is told to ask again: the probe's answer usually comes within the
// request timeout, and asking costs nothing.
const probeRecheck = time.Second

// BreakerConfig configures a [Breaker], as decoded from a sink's
// configuration. Every field is optional.
type BreakerConfig struct {
	// Failures is how many consecutive failures open the circuit
	// (default 5, at least 1).
	Failures *int `json:"failures,omitempty"`
	// Cooldown is how long the circuit first stays open (default "30s").
	Cooldown string `json:"cooldown,omitempty"`
	// MaxCooldown caps the cooldown, which doubles with every failed probe
	// (default "10m", or Cooldown if that is longer; at least Cooldown).
	MaxCooldown string `json:"max_cooldown,omitempty"`
	// ProbeTimeout is how long a probe may go unreported before it is
	// presumed lost and another one is let through (default "1m"). Make it
	// longer than the request timeout.
	ProbeTimeout string `json:"probe_timeout,omitempty"`
}

// BreakerState is a circuit's state.
type BreakerState int

const (
	// BreakerClosed: deliveries flow; consecutive failures are counted.
	BreakerClosed BreakerState = iota
	// BreakerOpen: deliveries wait until the cooldown ends.
	BreakerOpen
	// BreakerHalfOpen: the cooldown is over; one probe is due or in flight
	// and everything else waits for its result.
	BreakerHalfOpen
)

// String returns "closed", "open" or "half-open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// BreakerStatus describes one key's circuit, for logs and status output.
type BreakerStatus struct {
	State BreakerState
	// Failures is the run of consecutive failures while closed.
	Failures int
	// OpenUntil is when the current cooldown ends (zero when closed).
	OpenUntil time.Time
	// Cooldown is the length of the current (or last) cooldown.
	Cooldown time.Duration
}

// Breaker is a circuit breaker per key (endpoint). It is concurrency-safe; a
// nil *Breaker always allows.
//
// The rules:
//
//   - Closed: [Breaker.Allow] says yes. Failures reported by
//     [Breaker.Record] are counted; a success resets the count. The
//     Failures-th consecutive failure opens the circuit for Cooldown.
//   - Open: Allow says no and returns the end of the cooldown as retryAt.
//     Reports that arrive now (from requests sent before it opened) are
//     ignored.
//   - Half-open: once the cooldown is over, the first Allow says yes: that
//     delivery is the probe. Until the probe is reported, every other Allow
//     says no, with retryAt 1 s later (or at the probe's deadline if that
//     comes first). The next report decides: success closes the circuit
//     and resets the cooldown; failure reopens it for twice the last
//     cooldown, at most MaxCooldown. A probe unreported for ProbeTimeout is
//     presumed lost and the next Allow lets another probe through.
//
// The breaker counts nothing but what Record tells it; a delivery turned
// away by Allow was not attempted and must not use up a retry attempt.
type Breaker struct {
	failures     int
	cooldown     time.Duration
	maxCooldown  time.Duration
	probeTimeout time.Duration

	mu       sync.Mutex
	circuits map[string]*circuit
	sweepAt  int
}

type circuit struct {
	failures      int           // consecutive, while closed
	open          bool          // open or half-open
	until         time.Time     // end of the cooldown
	cooldown      time.Duration // length of the current or last cooldown
	probing       bool          // a probe was let through and is unreported
	probeDeadline time.Time     // when that probe is presumed lost
	seen          time.Time     // last Allow or Record, for sweeping
}

// NewBreaker checks cfg and returns a breaker with no open circuits. Errors
// start with the offending field ("cooldown: ...").
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	b := &Breaker{
		failures:     DefaultBreakerFailures,
		cooldown:     DefaultCooldown,
		probeTimeout: DefaultProbeTimeout,
		circuits:     make(map[string]*circuit),
		sweepAt:      minSweep,
	}
	if cfg.Failures != nil {
		if *cfg.Failures < 1 {
			return nil, fmt.Errorf("failures: must be at least 1, got %d", *cfg.Failures)
		}
		b.failures = *cfg.Failures
	}
	positive := func(field, v string, dst *time.Duration) error {
		if v == "" {
			return nil
		}
		d, err := parseDuration(v)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if d == 0 {
			return fmt.Errorf("%s: must be more than 0", field)
		}
		*dst = d
		return nil
	}
	if err := positive("cooldown", cfg.Cooldown, &b.cooldown); err != nil {
		return nil, err
	}
	b.maxCooldown = max(DefaultMaxCooldown, b.cooldown)
	if err := positive("max_cooldown", cfg.MaxCooldown, &b.maxCooldown); err != nil {
		return nil, err
	}
	if b.maxCooldown < b.cooldown {
		return nil, fmt.Errorf("max_cooldown: must be at least cooldown (%s), got %s", b.cooldown, b.maxCooldown)
	}
	if err := positive("probe_timeout", cfg.ProbeTimeout, &b.probeTimeout); err != nil {
		return nil, err
	}
	return b, nil
}

// Allow reports whether a delivery to key may be attempted now. When it may
// not, retryAt is when to ask again; the delivery goes back to waiting with
// its attempts unchanged. When it may and the circuit is half-open, this
// delivery is the probe and its result must be reported with Record.
func (b *Breaker) Allow(key string, now time.Time) (ok bool, retryAt time.Time) {
	if b == nil {
		return true, time.Time{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.circuits[key]
	if c == nil {
		return true, time.Time{}
	}
	c.seen = now
	switch {
	case !c.open:
		return true, time.Time{}
	case now.Before(c.until):
		return false, c.until
	case c.probing && now.Before(c.probeDeadline):
		return false, earliest(now.Add(probeRecheck), c.probeDeadline)
	}
	c.probing = true
	c.probeDeadline = now.Add(b.probeTimeout)
	return true, time.Time{}
}

// Record reports the result of an attempt on key that Allow let through:
// success is false for an attempt [Classify] called RetryLater (no answer,
// 408, 425, 429, 3xx, 5xx) and true when the endpoint answered in a way
// that shows it is up (Delivered, and Dead or Gone from a status code).
// Attempts that never reached the endpoint (an SSRF guard's refusal) should
// not be reported.
func (b *Breaker) Record(key string, success bool, now time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.circuits[key]
	switch {
	case c == nil && success:
		return
	case c == nil:
		c = &circuit{seen: now}
		b.circuits[key] = c
		b.maybeSweep(now)
	case c.open && !c.probing:
		c.seen = now
		return // a late answer to a request sent before the circuit opened
	}
	c.seen = now
	if c.open { // the probe's answer
		if success {
			delete(b.circuits, key)
			return
		}
		b.trip(c, min(2*c.cooldown, b.maxCooldown), now)
		return
	}
	if success {
		delete(b.circuits, key)
		return
	}
	c.failures++
	if c.failures >= b.failures {
		b.trip(c, b.cooldown, now)
	}
}

func (b *Breaker) trip(c *circuit, cooldown time.Duration, now time.Time) {
	c.open = true
	c.failures = 0
	c.cooldown = cooldown
	c.until = now.Add(cooldown)
	c.probing = false
	c.probeDeadline = time.Time{}
}

// Status describes key's circuit as of now.
func (b *Breaker) Status(key string, now time.Time) BreakerStatus {
	if b == nil {
		return BreakerStatus{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.circuits[key]
	switch {
	case c == nil:
		return BreakerStatus{}
	case !c.open:
		return BreakerStatus{State: BreakerClosed, Failures: c.failures}
	case now.Before(c.until):
		return BreakerStatus{State: BreakerOpen, OpenUntil: c.until, Cooldown: c.cooldown}
	}
	return BreakerStatus{State: BreakerHalfOpen, OpenUntil: c.until, Cooldown: c.cooldown}
}

// Reset closes key's circuit and forgets its failures, e.g. when an operator
// re-enables the endpoint or replays its dead deliveries.
func (b *Breaker) Reset(key string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.circuits, key)
}

// maybeSweep forgets circuits nobody has asked about or reported on for
// twice the maximum cooldown, once there are many, unless a cooldown or
// probe is still running. Called with b.mu held.
func (b *Breaker) maybeSweep(now time.Time) {
	if len(b.circuits) < b.sweepAt {
		return
	}
	idle := 2 * max(b.maxCooldown, b.probeTimeout)
	for k, c := range b.circuits {
		busy := c.open && (now.Before(c.until) || (c.probing && now.Before(c.probeDeadline)))
		if !busy && now.Sub(c.seen) > idle {
			delete(b.circuits, k)
		}
	}
	b.sweepAt = max(minSweep, 2*len(b.circuits))
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
