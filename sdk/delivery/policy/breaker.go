package policy

import (
	"fmt"
	"sync"
	"time"
)

// Circuit breaker defaults.
const (
	DefaultBreakerFailures = 5
	DefaultWindow          = 30 * time.Second
	DefaultCooldown        = 30 * time.Second
	DefaultMaxCooldown     = 10 * time.Minute
	DefaultProbes          = 3
	DefaultProbeTimeout    = time.Minute
)

// probeRecheck is how soon a delivery turned away because the probes are in
// flight is told to ask again: their answers usually come within the
// request timeout, and asking costs nothing.
const probeRecheck = time.Second

// BreakerConfig configures a [Breaker], as decoded from a sink's
// configuration. Every field is optional.
type BreakerConfig struct {
	// Failures is how many attempts must have failed, with none succeeding,
	// before the circuit opens (default 5, at least 1).
	Failures *int `json:"failures,omitempty"`
	// Window is how long the endpoint must have accepted nothing before the
	// circuit opens, counted from the first failure after the last success
	// (default "30s").
	Window string `json:"window,omitempty"`
	// Cooldown is how long the circuit first stays open (default "30s").
	Cooldown string `json:"cooldown,omitempty"`
	// MaxCooldown caps the cooldown, which doubles every time all the
	// probes fail (default "10m", or Cooldown if that is longer; at least
	// Cooldown).
	MaxCooldown string `json:"max_cooldown,omitempty"`
	// Probes is how many deliveries a half-open circuit lets through at a
	// time, and how many of them must fail to reopen it (default 3, at
	// least 1).
	Probes *int `json:"probes,omitempty"`
	// ProbeTimeout is how long a probe may go unreported before it is
	// presumed lost and another one is let through in its place (default
	// "1m"). Make it longer than the request timeout.
	ProbeTimeout string `json:"probe_timeout,omitempty"`
}

// BreakerState is a circuit's state.
type BreakerState int

const (
	// BreakerClosed: deliveries flow; failures since the last success are
	// counted.
	BreakerClosed BreakerState = iota
	// BreakerOpen: deliveries wait until the cooldown ends.
	BreakerOpen
	// BreakerHalfOpen: the cooldown is over; up to Probes probes are let
	// through at a time and everything else waits for their results.
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
	// Failures is the number of failures since the last success, while
	// closed (zero otherwise).
	Failures int
	// FailingSince is, while closed, the time of the first failure since
	// the last success (zero when none); while open or half-open, that of
	// the run of failures that opened the circuit: nothing was accepted
	// since.
	FailingSince time.Time
	// OpenUntil is when the current cooldown ends (zero when closed).
	OpenUntil time.Time
	// Cooldown is the length of the current (or last) cooldown (zero when
	// closed).
	Cooldown time.Duration
}

// Breaker is a circuit breaker per key (endpoint). It is concurrency-safe; a
// nil *Breaker always allows.
//
// It pauses an endpoint that accepts nothing, never one that accepts a
// steady share of what it is sent: a user's retry schedule keeps its
// meaning against an endpoint that fails some attempts (or, say, the first
// two attempts of every delivery) but not all. The rules:
//
//   - Closed: [Breaker.Allow] says yes. [Breaker.Record] counts the
//     failures since the last success and remembers when the first of them
//     happened; a success forgets both. The circuit opens once at least
//     Failures attempts have failed and none has succeeded for a whole
//     Window since the first of them: a 100% failure ratio over Window,
//     with a minimum count. Record checks this after counting a failure,
//     and Allow and [Breaker.Status] check it too, so an endpoint whose
//     last failure came before the window had elapsed is found open when
//     asked about after it has; the cooldown then counts from that moment.
//   - Open: Allow says no and returns the end of the cooldown as retryAt.
//     The cooldown is Cooldown at first. Reports that arrive now (answers
//     to requests sent before it opened) are ignored.
//   - Half-open: once the cooldown is over, Allow lets up to Probes
//     deliveries through at a time: the probes. While that many are
//     unreported, every other Allow says no, with retryAt 1 s later (or at
//     the earliest probe's deadline if that comes first). Any success
//     reported now closes the circuit and resets the cooldown to Cooldown.
//     A failure reported while probes are in flight uses up one of them;
//     once Probes probes have failed in this half-open period with no
//     success, the circuit reopens for twice the last cooldown, at most
//     MaxCooldown. A probe unreported for ProbeTimeout is presumed lost
//     and frees its place for another.
//
// The breaker counts nothing but what Record tells it; a delivery turned
// away by Allow was not attempted and must not use up a retry attempt.
//
// The caller's part: when the circuit is half-open, send as probes the
// deliveries (of those leased) that have already failed most, the highest
// attempt count first. An endpoint that only accepts retries (one that
// fails the first attempts of every delivery, e.g.) then closes the circuit
// at the first half-open, instead of failing probe after probe on fresh
// deliveries.
type Breaker struct {
	failures     int
	window       time.Duration
	cooldown     time.Duration
	maxCooldown  time.Duration
	probes       int
	probeTimeout time.Duration

	mu       sync.Mutex
	circuits map[string]*circuit
	sweepAt  int
}

// circuit is one key's state. A closed circuit with no failures since the
// last success is not kept.
type circuit struct {
	// closed
	failures     int       // since the last success
	failingSince time.Time // the earliest of them
	lastFailure  time.Time // the latest of them
	downSince    time.Time // while open or half-open: the first failure of the run that opened it

	// open or half-open
	open          bool
	until         time.Time     // end of the cooldown
	cooldown      time.Duration // length of the current or last cooldown
	inflight      []time.Time   // deadlines of the unreported probes, earliest first
	probeFailures int           // probes failed in this half-open period

	seen time.Time // last Allow, Record or Status, for sweeping
}

// NewBreaker checks cfg and returns a breaker with no open circuits. Errors
// start with the offending field ("cooldown: ...").
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	b := &Breaker{
		failures:     DefaultBreakerFailures,
		window:       DefaultWindow,
		cooldown:     DefaultCooldown,
		probes:       DefaultProbes,
		probeTimeout: DefaultProbeTimeout,
		circuits:     make(map[string]*circuit),
		sweepAt:      minSweep,
	}
	atLeastOne := func(field string, v *int, dst *int) error {
		if v == nil {
			return nil
		}
		if *v < 1 {
			return fmt.Errorf("%s: must be at least 1, got %d", field, *v)
		}
		*dst = *v
		return nil
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
	if err := atLeastOne("failures", cfg.Failures, &b.failures); err != nil {
		return nil, err
	}
	if err := positive("window", cfg.Window, &b.window); err != nil {
		return nil, err
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
	if err := atLeastOne("probes", cfg.Probes, &b.probes); err != nil {
		return nil, err
	}
	if err := positive("probe_timeout", cfg.ProbeTimeout, &b.probeTimeout); err != nil {
		return nil, err
	}
	return b, nil
}

// Allow reports whether a delivery to key may be attempted now. When it may
// not, retryAt is when to ask again; the delivery goes back to waiting with
// its attempts unchanged. When it may and the circuit is half-open, this
// delivery is a probe and its result must be reported with Record.
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
	b.check(c, now)
	switch {
	case !c.open:
		return true, time.Time{}
	case now.Before(c.until):
		return false, c.until
	}
	b.expire(c, now)
	if len(c.inflight) >= b.probes {
		return false, earliest(now.Add(probeRecheck), c.inflight[0])
	}
	// Deadlines are appended in the order of now, which callers may not
	// keep exactly; keep the slice sorted so that [0] is the earliest.
	deadline := now.Add(b.probeTimeout)
	i := len(c.inflight)
	for i > 0 && c.inflight[i-1].After(deadline) {
		i--
	}
	c.inflight = append(c.inflight, time.Time{})
	copy(c.inflight[i+1:], c.inflight[i:])
	c.inflight[i] = deadline
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
	}
	c.seen = now
	switch {
	case !c.open && success:
		// The endpoint accepts requests: forget its failures, even if the
		// window ran out meanwhile without anyone asking.
		delete(b.circuits, key)
	case !c.open:
		// Concurrent answers arrive in any order, each with the time it
		// came back: the failures span the earliest to the latest.
		if c.failures == 0 || now.Before(c.failingSince) {
			c.failingSince = now
		}
		if c.failures == 0 || now.After(c.lastFailure) {
			c.lastFailure = now
		}
		c.failures++
		b.check(c, c.lastFailure)
	case now.Before(c.until):
		// Open: a late answer to a request sent before the circuit opened.
	case success:
		// Half-open: the endpoint is up again.
		delete(b.circuits, key)
	default:
		b.expire(c, now)
		if len(c.inflight) == 0 {
			return // no probe is waiting for an answer: a late one
		}
		c.inflight = c.inflight[1:]
		c.probeFailures++
		if c.probeFailures >= b.probes {
			b.trip(c, min(2*c.cooldown, b.maxCooldown), now)
		}
	}
}

// check opens a closed circuit whose endpoint has accepted nothing for a
// whole window in which at least b.failures attempts failed. Called with
// b.mu held.
func (b *Breaker) check(c *circuit, now time.Time) {
	if !c.open && c.failures >= b.failures && now.Sub(c.failingSince) >= b.window {
		b.trip(c, b.cooldown, now)
	}
}

// expire frees the places of the probes presumed lost by now. Called with
// b.mu held.
func (b *Breaker) expire(c *circuit, now time.Time) {
	n := 0
	for n < len(c.inflight) && !now.Before(c.inflight[n]) {
		n++
	}
	if n > 0 {
		c.inflight = append(c.inflight[:0], c.inflight[n:]...)
	}
}

func (b *Breaker) trip(c *circuit, cooldown time.Duration, now time.Time) {
	if !c.open {
		c.downSince = c.failingSince
	}
	c.open = true
	c.failures = 0
	c.failingSince = time.Time{}
	c.cooldown = cooldown
	c.until = now.Add(cooldown)
	c.inflight = c.inflight[:0]
	c.probeFailures = 0
}

// Status describes key's circuit as of now. Like Allow, it opens a circuit
// whose window has run out.
func (b *Breaker) Status(key string, now time.Time) BreakerStatus {
	if b == nil {
		return BreakerStatus{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.circuits[key]
	if c == nil {
		return BreakerStatus{}
	}
	c.seen = now
	b.check(c, now)
	switch {
	case !c.open:
		return BreakerStatus{State: BreakerClosed, Failures: c.failures, FailingSince: c.failingSince}
	case now.Before(c.until):
		return BreakerStatus{State: BreakerOpen, OpenUntil: c.until, Cooldown: c.cooldown, FailingSince: c.downSince}
	}
	return BreakerStatus{State: BreakerHalfOpen, OpenUntil: c.until, Cooldown: c.cooldown, FailingSince: c.downSince}
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
// twice the longest of the maximum cooldown, the probe timeout and the
// window, once there are many, unless a cooldown or probe is still running.
// Called with b.mu held.
func (b *Breaker) maybeSweep(now time.Time) {
	if len(b.circuits) < b.sweepAt {
		return
	}
	idle := 2 * max(b.maxCooldown, b.probeTimeout, b.window)
	for k, c := range b.circuits {
		busy := c.open && (now.Before(c.until) || (len(c.inflight) > 0 && now.Before(c.inflight[len(c.inflight)-1])))
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
