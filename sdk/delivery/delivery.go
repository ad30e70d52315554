// Package delivery is the machinery every action sink shares (webhook,
// Slack, Zendesk): records become deliveries in the engine's durable outbox
// before their batch is acked, and a loop delivers them with retries,
// per-endpoint concurrency, rate limits and a circuit breaker, logging
// every attempt. A sink supplies only a Transport: how to turn a record
// into a delivery, and how to make one attempt.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

// Transport is an action sink's own part.
type Transport interface {
	// Prepare turns record i of b into a delivery. Its ID must be stable
	// for the record (use b.ID(i)); its Payload holds everything Send needs,
	// because a delivery may be sent by a later run, or replayed.
	Prepare(b sdk.Batch, i int) (sdk.Delivery, error)
	// Send makes one attempt. It must honour ctx.
	Send(ctx context.Context, d sdk.Delivery) Result
}

// BatchTransport is a Transport that sends several deliveries of one
// endpoint in one request (Zendesk's update_many). The loop hands it up to
// MaxBatch due deliveries at a time; each call counts as one request
// against the endpoint's concurrency and rate limit.
type BatchTransport interface {
	Transport
	MaxBatch() int
	// SendBatch returns one Result per delivery, in order.
	SendBatch(ctx context.Context, ds []sdk.Delivery) []Result
}

// Result is what one attempt got.
type Result struct {
	Status int         // HTTP status; 0 when there was no response
	Header http.Header // for Retry-After
	Body   []byte      // the start of the response body, for the log
	Err    error       // network error, or policy.Permanent(...)
	// Outcome overrides the classification of Status and Err when set
	// (e.g. Slack's 200 with "ok": false).
	Outcome *policy.Outcome
}

// Breaker is a per-endpoint circuit breaker (policy provides one).
type Breaker interface {
	// Allow is asked right before an attempt; in half-open state it lets
	// one probe through.
	Allow(endpoint string, now time.Time) (bool, time.Time)
	Record(endpoint string, success bool, now time.Time)
	// Status is a read-only look, for deciding what to lease.
	Status(endpoint string, now time.Time) policy.BreakerStatus
}

// Options tune the loop.
type Options struct {
	Retry       policy.Retry
	Concurrency int // per endpoint; 16 by default
	Limiter     *policy.Limiter
	Breaker     Breaker
	Log         *slog.Logger
	// Now and Sleep are the clock; tests replace them.
	Now func() time.Time
}

// Deliverer runs an outbox.
type Deliverer struct {
	t    Transport
	out  sdk.Outbox
	opts Options
	rnd  func() float64

	mu       sync.Mutex
	inflight map[string]int            // attempts under way, by endpoint
	queued   map[string][]sdk.Delivery // leased, waiting for a free slot, by endpoint
	gone     map[string]bool           // endpoints that answered 410 Gone
	kick     chan struct{}
	gen      uint64 // counts Enqueue calls
	started  bool
	cancel   context.CancelFunc
	done     chan struct{}
	wg       sync.WaitGroup
}

// New returns a Deliverer for out; a nil out keeps deliveries in memory,
// for tests without an engine.
func New(t Transport, out sdk.Outbox, opts Options) *Deliverer {
	if out == nil {
		out = NewMemoryOutbox()
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	if opts.Retry.MaxAttempts() == 0 {
		opts.Retry = policy.DefaultRetry()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Deliverer{t: t, out: out, opts: opts, rnd: rand.Float64,
		inflight: map[string]int{}, queued: map[string][]sdk.Delivery{}, gone: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// Enqueue prepares every record of b and stores the deliveries. When it
// returns nil the batch may be acked: the deliveries are durable.
func (d *Deliverer) Enqueue(ctx context.Context, b sdk.Batch) error {
	ds := make([]sdk.Delivery, 0, b.Len())
	// The schedule's first entry is the wait before the first attempt.
	var notBefore time.Time
	if first, ok := d.opts.Retry.Delay(1, d.rnd); ok && first > 0 {
		notBefore = d.opts.Now().Add(first)
	}
	for i := 0; i < b.Len(); i++ {
		del, err := d.t.Prepare(b, i)
		if err != nil {
			return fmt.Errorf("record %d (%s): %w", i+1, b.ID(i), err)
		}
		del.NotBefore = notBefore
		ds = append(ds, del)
	}
	if err := d.out.Enqueue(ctx, ds); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	d.mu.Lock()
	d.gen++
	d.mu.Unlock()
	d.Start()
	d.poke()
	return nil
}

func (d *Deliverer) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Start runs the delivery loop in the background, once.
func (d *Deliverer) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return
	}
	d.started = true
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.done = make(chan struct{})
	go d.loop(ctx)
}

// Stop ends the loop and waits for attempts in flight.
func (d *Deliverer) Stop() {
	d.mu.Lock()
	started := d.started
	d.mu.Unlock()
	if !started {
		return
	}
	d.cancel()
	<-d.done
	d.wg.Wait()
	d.mu.Lock()
	d.started = false // a later Enqueue or Drain starts it again
	queued := d.queued
	d.queued = map[string][]sdk.Delivery{}
	d.mu.Unlock()
	// Leased but never started: hand them back, due now.
	now := d.opts.Now()
	for _, q := range queued {
		for _, del := range q {
			if err := d.out.Record(context.Background(), del.ID, sdk.Attempt{}, sdk.Release, now); err != nil {
				d.opts.Log.Error("outbox release failed", "delivery", del.ID, "error", err.Error())
			}
		}
	}
}

// Close is an action sink's Close: it waits until every delivery has
// succeeded or is dead (unless wait is false: `pipeline run --no-wait`,
// `pipeline serve` shutting down), then stops the loop. Pending deliveries
// stay in the outbox for the next run.
func (d *Deliverer) Close(ctx context.Context, wait bool) error {
	if d == nil {
		return nil // never configured
	}
	defer d.Stop()
	if !wait {
		return nil
	}
	return d.Drain(ctx)
}

// Drain waits until nothing is pending (delivered or dead), or ctx ends.
func (d *Deliverer) Drain(ctx context.Context) error {
	d.Start()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pending, _, err := d.out.Pending(ctx)
		if err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Pending reports what is left in the outbox.
func (d *Deliverer) Pending(ctx context.Context) (pending, dead int, err error) {
	return d.out.Pending(ctx)
}

const maxLease = 64

func (d *Deliverer) loop(ctx context.Context) {
	defer close(d.done)
	// A lease that found nothing while some endpoints were skipped as busy
	// is not repeated with the same skip list until new deliveries are
	// enqueued or the wait for the next due one is over: a finished attempt
	// on a busy endpoint frees its slot (and so changes the list).
	var emptySkip string
	var emptyGen uint64
	timedOut := false
	for ctx.Err() == nil {
		skip, free := d.blocked()
		sort.Strings(skip)
		skipKey := strings.Join(skip, "\x00")
		d.mu.Lock()
		gen := d.gen
		d.mu.Unlock()
		repeat := len(skip) > 0 && skipKey == emptySkip && gen == emptyGen && !timedOut
		var ds []sdk.Delivery
		var next time.Time
		var err error
		if free > 0 && !repeat {
			// A batching transport gets full batches when enough is due.
			if bt, ok := d.t.(BatchTransport); ok {
				free = max(free, bt.MaxBatch())
			}
			ds, next, err = d.out.Lease(ctx, free, skip)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d.opts.Log.Error("outbox lease failed", "error", err.Error())
				next = d.opts.Now().Add(time.Second)
			}
		}
		if !repeat {
			emptySkip, emptyGen = "", 0
			if len(ds) == 0 && len(skip) > 0 {
				emptySkip, emptyGen = skipKey, gen
			}
		}
		d.mu.Lock()
		for _, del := range ds {
			d.queued[del.Endpoint] = append(d.queued[del.Endpoint], del)
		}
		d.mu.Unlock()
		d.dispatch(ctx)
		if len(ds) > 0 && len(ds) == free {
			continue // there may be more due right away
		}
		wait := time.Second
		if !next.IsZero() {
			if w := next.Sub(d.opts.Now()); w < wait {
				wait = max(w, time.Millisecond)
			}
		}
		timer := time.NewTimer(wait)
		timedOut = false
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-d.kick:
		case <-timer.C:
			timedOut = true
		}
		timer.Stop()
	}
}

// dispatch starts queued deliveries while their endpoint has a free slot.
func (d *Deliverer) dispatch(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ep, q := range d.queued {
		for len(q) > 0 && d.inflight[ep] < d.opts.Concurrency {
			n := 1
			if bt, ok := d.t.(BatchTransport); ok {
				n = min(len(q), max(1, bt.MaxBatch()))
			}
			group := q[:n:n]
			q = q[n:]
			d.inflight[ep]++
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				d.attempt(ctx, group)
				d.mu.Lock()
				d.inflight[ep]--
				d.mu.Unlock()
				d.poke()
			}()
		}
		if len(q) == 0 {
			delete(d.queued, ep)
		} else {
			d.queued[ep] = q
		}
	}
}

// blocked lists endpoints that get nothing now (at their concurrency limit,
// or paused by the breaker) and how many deliveries may start.
func (d *Deliverer) blocked() ([]string, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var skip []string
	total := 0
	now := d.opts.Now()
	for ep, n := range d.inflight {
		total += n + len(d.queued[ep])
		if n+len(d.queued[ep]) >= d.opts.Concurrency {
			skip = append(skip, ep)
		} else if d.opts.Breaker != nil && d.opts.Breaker.Status(ep, now).State == policy.BreakerOpen {
			skip = append(skip, ep)
		}
	}
	return skip, max(0, maxLease-total)
}

// attempt makes one attempt at a group of deliveries of one endpoint (a
// single one unless the Transport sends batches) and records the outcomes.
func (d *Deliverer) attempt(ctx context.Context, group []sdk.Delivery) {
	ep := group[0].Endpoint
	now := d.opts.Now()
	record := func(del sdk.Delivery, a sdk.Attempt, o sdk.Outcome, next time.Time) {
		if err := d.out.Record(context.WithoutCancel(ctx), del.ID, a, o, next); err != nil {
			d.opts.Log.Error("outbox record failed", "delivery", del.ID, "error", err.Error())
		}
	}
	releaseAll := func(at time.Time) {
		for _, del := range group {
			record(del, sdk.Attempt{}, sdk.Release, at)
		}
	}
	d.mu.Lock()
	gone := d.gone[ep]
	d.mu.Unlock()
	if gone {
		for _, del := range group {
			record(del, sdk.Attempt{At: now, Error: "endpoint disabled: it answered 410 Gone"}, sdk.Dead, time.Time{})
		}
		return
	}
	if d.opts.Breaker != nil {
		if ok, retryAt := d.opts.Breaker.Allow(ep, now); !ok {
			// Not an attempt: the breaker pauses the endpoint.
			releaseAll(retryAt)
			return
		}
	}
	if d.opts.Limiter != nil {
		if w := d.opts.Limiter.Reserve(ep, now); w > 0 {
			select {
			case <-time.After(w):
			case <-ctx.Done():
				releaseAll(now)
				return
			}
		}
	}
	start := d.opts.Now()
	var results []Result
	if bt, ok := d.t.(BatchTransport); ok && len(group) > 1 {
		results = bt.SendBatch(ctx, group)
	} else {
		results = []Result{d.t.Send(ctx, group[0])}
	}
	end := d.opts.Now()
	for i, del := range group {
		res := Result{Err: errors.New("the transport returned no result for this delivery")}
		if i < len(results) {
			res = results[i]
		}
		if ctx.Err() != nil && res.Err != nil && errors.Is(res.Err, context.Canceled) {
			record(del, sdk.Attempt{}, sdk.Release, start)
			continue
		}
		d.outcome(del, res, start, end, record)
	}
}

// outcome classifies one delivery's result and records it.
func (d *Deliverer) outcome(del sdk.Delivery, res Result, start, end time.Time, record func(sdk.Delivery, sdk.Attempt, sdk.Outcome, time.Time)) {
	a := sdk.Attempt{At: start, StatusCode: res.Status, Latency: end.Sub(start), Response: res.Body}
	if res.Err != nil {
		a.Error = res.Err.Error()
	} else if res.Status >= 300 {
		a.Error = fmt.Sprintf("%d %s", res.Status, http.StatusText(res.Status))
	}
	outcome := policy.Classify(res.Status, res.Err)
	if res.Outcome != nil {
		outcome = *res.Outcome
	}
	// The breaker learns whether the endpoint answers: any HTTP answer but
	// a retryable one is a sign of life; a refusal before sending (SSRF
	// guard, bad URL) says nothing about it.
	if d.opts.Breaker != nil && (res.Status != 0 || outcome == policy.RetryLater) {
		d.opts.Breaker.Record(del.Endpoint, outcome != policy.RetryLater, end)
	}
	switch outcome {
	case policy.Delivered:
		record(del, a, sdk.Delivered, time.Time{})
		return
	case policy.Gone:
		d.mu.Lock()
		d.gone[del.Endpoint] = true
		d.mu.Unlock()
		d.opts.Log.Error("endpoint answered 410 Gone: disabled; its deliveries go to the dead letter", "endpoint", del.Endpoint)
		record(del, a, sdk.Dead, time.Time{})
		return
	case policy.Dead:
		d.opts.Log.Warn("delivery failed for good", "delivery", del.ID, "error", a.Error)
		record(del, a, sdk.Dead, time.Time{})
		return
	}
	// Retry: the next attempt is number Attempts+2.
	delay, ok := d.opts.Retry.Delay(del.Attempts+2, d.rnd)
	if !ok {
		d.opts.Log.Warn("delivery failed: no attempts left", "delivery", del.ID, "attempts", del.Attempts+1, "error", a.Error)
		record(del, a, sdk.Dead, time.Time{})
		return
	}
	if ra, ok := policy.ParseRetryAfter(res.Header.Get("Retry-After"), end); ok {
		delay = policy.Wait(delay, ra)
	}
	d.opts.Log.Warn("delivery failed; will retry", "delivery", del.ID, "attempt", del.Attempts+1, "in", delay.String(), "error", a.Error)
	record(del, a, sdk.Retry, end.Add(delay))
}
