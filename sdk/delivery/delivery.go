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
	Limiter     Limiter
	Breaker     Breaker
	Log         *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Sleep waits d, or until ctx ends (then it reports false), before a
	// send the Limiter paced; tests replace it along with Now.
	Sleep func(ctx context.Context, d time.Duration) bool
	// Retention is told to the outbox as the loop starts, when the outbox
	// is an sdk.RetentionSetter (zero fields: its defaults).
	Retention sdk.Retention
}

// Deliverer runs an outbox.
type Deliverer struct {
	t    Transport
	out  sdk.Outbox
	opts Options
	rnd  func() float64
	// capacity bounds the deliveries leased and not yet recorded, and
	// perEndpoint those of one endpoint (so that a slow endpoint's backlog
	// leaves room for the others); heldBytes their payloads.
	capacity, perEndpoint int

	mu       sync.Mutex
	inflight map[string]int            // attempts under way, by endpoint
	queued   map[string][]sdk.Delivery // leased, waiting for a free slot (or a closed circuit), by endpoint
	held     int                       // bytes of payload leased and not finished
	gone     map[string]bool           // endpoints that answered 410 Gone
	reported map[string]sdk.Circuit    // the circuit state last reported, by endpoint
	kick     chan struct{}
	idle     chan struct{} // the loop holds nothing: Drain asks the outbox again
	gen      uint64        // counts Enqueue calls and recorded flushes
	started  bool
	cancel   context.CancelFunc
	done     chan struct{}
	wg       sync.WaitGroup
	rec      *recorder
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
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	return &Deliverer{t: t, out: out, opts: opts, rnd: rand.Float64,
		capacity: max(minCapacity, 64*opts.Concurrency), perEndpoint: max(minCapacity, 64*opts.Concurrency) / 2,
		inflight: map[string]int{}, queued: map[string][]sdk.Delivery{}, gone: map[string]bool{},
		reported: map[string]sdk.Circuit{}, kick: make(chan struct{}, 1), idle: make(chan struct{}, 1)}
}

// minCapacity is the fewest deliveries the loop holds leased, half of them
// at most for one endpoint: most deliveries are leased as they are
// enqueued and sent without being read back from the outbox. maxHeldBytes
// bounds their payloads; leaseBatch is the most one lease asks for of one
// endpoint; enqueueChunk the most deliveries one outbox write stores, so
// that the first of a large batch go out while the rest are stored.
const (
	minCapacity  = 16384
	maxHeldBytes = 64 << 20
	leaseBatch   = 1024
	enqueueChunk = 1024
)

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
	d.Start()
	for len(ds) > 0 {
		chunk := ds[:min(len(ds), enqueueChunk)]
		ds = ds[len(chunk):]
		if notBefore.IsZero() {
			d.askLease(chunk)
		}
		leased, err := d.out.Enqueue(ctx, chunk)
		if err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		d.mu.Lock()
		for _, i := range leased {
			del := chunk[i]
			del.Lease = false
			d.queued[del.Endpoint] = append(d.queued[del.Endpoint], del)
			d.held += len(del.Payload)
		}
		d.mu.Unlock()
		d.changed()
	}
	return nil
}

// holding counts the deliveries held (queued or in flight) per endpoint and
// in all. Called with d.mu held.
func (d *Deliverer) holding() (per map[string]int, total int) {
	per = map[string]int{}
	for ep, q := range d.queued {
		per[ep] += len(q)
		total += len(q)
	}
	for ep, n := range d.inflight {
		per[ep] += n
		total += n
	}
	return per, total
}

// askLease marks the deliveries that the loop has room for, to be leased
// as they are enqueued: they are sent from here without reading them back
// from the outbox. The room is not reserved; a lease in between can go over
// the limits by at most one batch.
func (d *Deliverer) askLease(ds []sdk.Delivery) {
	d.mu.Lock()
	defer d.mu.Unlock()
	per, total := d.holding()
	bytes := d.held
	now := d.opts.Now()
	open := map[string]bool{}
	for i := range ds {
		del := &ds[i]
		if total >= d.capacity || bytes >= maxHeldBytes {
			return
		}
		ep := del.Endpoint
		if del.OrderKey != "" || d.gone[ep] || per[ep] >= d.perEndpoint {
			continue
		}
		if d.opts.Breaker != nil {
			o, ok := open[ep]
			if !ok {
				o = d.opts.Breaker.Status(ep, now).State == policy.BreakerOpen
				open[ep] = o
			}
			if o {
				continue
			}
		}
		del.Lease = true
		total++
		per[ep]++
		bytes += len(del.Payload)
	}
}

// changed wakes the loop after the outbox changed (new deliveries, or
// results recorded that may free deliveries waiting behind an order key).
func (d *Deliverer) changed() {
	d.mu.Lock()
	d.gen++
	d.mu.Unlock()
	d.poke()
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
	d.rec = newRecorder(d.out, d.opts.Log, d.flushed)
	go d.loop(ctx)
	go d.setRetention(ctx)
}

// Stop ends the loop, waits for the attempts in flight, hands back what it
// leased but did not start, and returns once every result is recorded.
func (d *Deliverer) Stop() {
	d.mu.Lock()
	started, rec := d.started, d.rec
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
	d.held = 0
	d.mu.Unlock()
	// Leased but never started: hand them back, due now.
	now := d.opts.Now()
	for _, q := range queued {
		for _, del := range q {
			rec.add(del, sdk.Result{ID: del.ID, Outcome: sdk.Release, Next: now, Prior: del.Attempts})
		}
	}
	rec.close()
}

// Close is an action sink's Close: it waits until every delivery has
// succeeded or is dead (unless wait is false: `pipeline run --no-wait`,
// `pipeline serve` shutting down, or the engine asks it to stop waiting
// because the run was interrupted), then stops the loop. Pending
// deliveries stay in the outbox for the next run.
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

// drainPoll is how often Drain asks the outbox how much is left, besides
// whenever the loop has nothing in hand.
const drainPoll = 100 * time.Millisecond

// Drain waits until nothing is pending (delivered or dead), the engine asks
// it to stop waiting (the run was interrupted: it returns nil and the rest
// stays queued), the sink is paused (`pipeline pause`: nothing would go out
// until it is resumed, so it returns nil and the rest stays queued), or
// ctx ends.
func (d *Deliverer) Drain(ctx context.Context) error {
	d.Start()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		st, err := d.out.Pending(ctx)
		if err != nil {
			return err
		}
		if st.Pending == 0 || st.StopWaiting || st.Paused {
			if st.Paused && st.Pending > 0 {
				d.opts.Log.Info("sink paused: not waiting for its pending deliveries; they stay queued until it is resumed", "pending", st.Pending)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-d.idle:
		}
	}
}

// flushed follows every write of results: it wakes the loop (a slot or an
// order key may be free), and Drain when nothing is left in hand.
func (d *Deliverer) flushed(ordered bool) {
	if ordered {
		d.changed()
	} else {
		d.poke()
	}
	d.mu.Lock()
	idle := len(d.queued) == 0 && d.held == 0
	for _, n := range d.inflight {
		idle = idle && n == 0
	}
	d.mu.Unlock()
	if idle {
		select {
		case d.idle <- struct{}{}:
		default:
		}
	}
}

// Pending reports what is left in the outbox.
func (d *Deliverer) Pending(ctx context.Context) (pending, dead int, err error) {
	st, err := d.out.Pending(ctx)
	return st.Pending, st.Dead, err
}

func (d *Deliverer) loop(ctx context.Context) {
	defer close(d.done)
	// A lease that found nothing while some endpoints were skipped is not
	// repeated with the same skip list until the outbox changes or the wait
	// for the next due one is over: a finished attempt on a busy endpoint
	// frees its slot (and so changes the list).
	var emptySkip string
	var emptyGen uint64
	timedOut := false
	pauses, _ := d.out.(sdk.PauseReporter)
	var pauseChecked time.Time
	for ctx.Err() == nil {
		// A sink paused while it holds leased deliveries that have not
		// started hands them back: the outbox leases nothing more, and
		// these stay pending until it is resumed. (Real time: a check is
		// cheap, and a test's clock may stand still.)
		if pauses != nil && time.Since(pauseChecked) >= pauseCheck && d.holdsQueued() {
			pauseChecked = time.Now()
			if paused, err := pauses.Paused(ctx); err == nil && paused {
				d.handBack()
			}
		}
		wake := d.dispatch(ctx)
		skip, free, ready := d.blocked()
		sort.Strings(skip)
		skipKey := strings.Join(skip, "\x00")
		d.mu.Lock()
		gen := d.gen
		d.mu.Unlock()
		repeat := len(skip) > 0 && skipKey == emptySkip && gen == emptyGen && !timedOut
		// Lease in large batches: when half the capacity is free, or when
		// nothing leased can start now.
		var ds []sdk.Delivery
		var next time.Time
		var err error
		if free > 0 && !repeat && (free >= d.capacity/2 || ready == 0) {
			n := free
			if bt, ok := d.t.(BatchTransport); ok {
				n = max(n, bt.MaxBatch())
			}
			ds, next, err = d.out.Lease(ctx, n, leaseBatch, skip)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d.opts.Log.Error("outbox lease failed", "error", err.Error())
				next = d.opts.Now().Add(time.Second)
			}
			emptySkip, emptyGen = "", 0
			if len(ds) == 0 && len(skip) > 0 {
				emptySkip, emptyGen = skipKey, gen
			}
			if len(ds) > 0 {
				d.mu.Lock()
				for _, del := range ds {
					d.queued[del.Endpoint] = append(d.queued[del.Endpoint], del)
					d.held += len(del.Payload)
				}
				d.mu.Unlock()
				continue // dispatch them; more may be due
			}
		}
		wait := time.Second
		now := d.opts.Now()
		for _, t := range []time.Time{next, wake} {
			if !t.IsZero() {
				if w := t.Sub(now); w < wait {
					wait = max(w, time.Millisecond)
				}
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

// pauseCheck is how often the loop asks a PauseReporter outbox whether its
// sink is paused, while it holds deliveries that have not started.
const pauseCheck = 500 * time.Millisecond

// holdsQueued reports whether deliveries are leased and not started.
func (d *Deliverer) holdsQueued() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queued) > 0
}

// handBack releases the deliveries leased and not started (the sink is
// paused): they are due again now, attempts unchanged, and the outbox
// hands them out once the sink is resumed. Attempts under way finish.
func (d *Deliverer) handBack() {
	d.mu.Lock()
	queued := d.queued
	d.queued = map[string][]sdk.Delivery{}
	n := 0
	for _, q := range queued {
		for _, del := range q {
			d.held -= len(del.Payload)
			n++
		}
	}
	rec := d.rec
	d.mu.Unlock()
	if n == 0 {
		return
	}
	d.opts.Log.Info("sink paused: handing back the deliveries not started", "deliveries", n)
	now := d.opts.Now()
	for _, q := range queued {
		for _, del := range q {
			rec.add(del, sdk.Result{ID: del.ID, Outcome: sdk.Release, Next: now, Prior: del.Attempts})
		}
	}
}

// dispatch starts a worker for each free slot of an endpoint with queued
// deliveries that its circuit lets through. A worker sends one delivery (or
// batch) after another from its endpoint's queue until the queue is empty
// or the circuit says no, so slots are refilled at once, not when the loop
// comes round (it may be waiting for a lease). It returns when a paused
// endpoint can be tried again (zero if none).
func (d *Deliverer) dispatch(ctx context.Context) (wake time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.opts.Now()
	for ep := range d.queued {
		for d.inflight[ep] < d.opts.Concurrency {
			group, at := d.take(ep, now)
			wake = earliest(wake, at)
			if group == nil {
				break
			}
			d.inflight[ep]++
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				for group != nil {
					d.attempt(ctx, group)
					d.mu.Lock()
					for _, del := range group {
						d.held -= len(del.Payload)
					}
					group = nil
					if ctx.Err() == nil {
						group, _ = d.take(ep, d.opts.Now())
					}
					if group == nil {
						d.inflight[ep]--
					}
					d.mu.Unlock()
					d.poke()
				}
			}()
		}
	}
	return wake
}

// take removes the next delivery (or batch) to send from ep's queue, if
// the circuit lets it through; else it returns when to ask again. A
// half-open circuit is probed with the deliveries that have failed most: a
// receiver that turns away the first tries of every message accepts those.
// Called with d.mu held.
func (d *Deliverer) take(ep string, now time.Time) (group []sdk.Delivery, wake time.Time) {
	q := d.queued[ep]
	if len(q) == 0 {
		delete(d.queued, ep)
		return nil, time.Time{}
	}
	if d.opts.Breaker != nil {
		st := d.opts.Breaker.Status(ep, now)
		d.noteCircuit(ep, st)
		switch st.State {
		case policy.BreakerOpen:
			return nil, st.OpenUntil
		case policy.BreakerHalfOpen:
			sort.SliceStable(q, func(i, j int) bool { return q[i].Attempts > q[j].Attempts })
		}
		if ok, retryAt := d.opts.Breaker.Allow(ep, now); !ok {
			return nil, retryAt
		}
	}
	n := 1
	if bt, ok := d.t.(BatchTransport); ok {
		n = min(len(q), max(1, bt.MaxBatch()))
	}
	group = q[:n:n]
	if n == len(q) {
		delete(d.queued, ep)
	} else {
		d.queued[ep] = q[n:]
	}
	return group, time.Time{}
}

// earliest is the earlier of two times, a zero one not counting.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// noteCircuit reports an endpoint's circuit to the engine when it changed.
// Called with d.mu held.
func (d *Deliverer) noteCircuit(ep string, st policy.BreakerStatus) {
	c := sdk.Circuit{Endpoint: ep}
	switch {
	case d.gone[ep]:
		c.State, c.Reason = sdk.CircuitDisabled, "it answered 410 Gone"
	case st.State == policy.BreakerOpen:
		c.State, c.Until = sdk.CircuitOpen, st.OpenUntil
		if !st.FailingSince.IsZero() {
			c.Reason = "nothing accepted since " + st.FailingSince.UTC().Format(time.RFC3339)
		}
	case st.State == policy.BreakerHalfOpen:
		c.State = sdk.CircuitHalfOpen
	}
	if last, ok := d.reported[ep]; ok && last.State == c.State && last.Until.Equal(c.Until) {
		return
	}
	if _, ok := d.reported[ep]; !ok && c.State == sdk.CircuitClosed {
		d.reported[ep] = c
		return // nothing to say about a circuit that was never open
	}
	d.reported[ep] = c
	d.rec.circuit(c)
}

// blocked lists the endpoints to leave out of a lease (paused by the
// breaker, or holding perEndpoint deliveries already), how many more
// deliveries may be leased, and how many of those held could start now or
// as soon as their endpoint has a free slot.
func (d *Deliverer) blocked() (skip []string, free, ready int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	per, total := d.holding()
	now := d.opts.Now()
	for ep, held := range per {
		q := len(d.queued[ep])
		open := false
		if d.opts.Breaker != nil {
			st := d.opts.Breaker.Status(ep, now)
			d.noteCircuit(ep, st)
			open = st.State == policy.BreakerOpen
		}
		switch {
		case open:
			skip = append(skip, ep)
		case held >= d.perEndpoint:
			skip = append(skip, ep)
			ready += q
		default:
			ready += q
		}
	}
	if d.held >= maxHeldBytes {
		return skip, 0, ready
	}
	return skip, max(0, d.capacity-total), ready
}

// attempt makes one attempt at a group of deliveries of one endpoint (a
// single one unless the Transport sends batches) and records the outcomes.
func (d *Deliverer) attempt(ctx context.Context, group []sdk.Delivery) {
	ep := group[0].Endpoint
	now := d.opts.Now()
	releaseAll := func(at time.Time) {
		for _, del := range group {
			d.rec.add(del, sdk.Result{ID: del.ID, Outcome: sdk.Release, Next: at, Prior: del.Attempts})
		}
	}
	d.mu.Lock()
	gone := d.gone[ep]
	rec := d.rec
	d.mu.Unlock()
	if gone {
		for _, del := range group {
			rec.add(del, sdk.Result{ID: del.ID, Outcome: sdk.Dead, Prior: del.Attempts,
				Attempt: sdk.Attempt{At: now, Error: "endpoint disabled: it answered 410 Gone"}})
		}
		return
	}
	if d.opts.Limiter != nil {
		if w := d.opts.Limiter.Reserve(ep, now); w > 0 && !d.opts.Sleep(ctx, w) {
			releaseAll(now)
			return
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
			rec.add(del, sdk.Result{ID: del.ID, Outcome: sdk.Release, Next: start, Prior: del.Attempts})
			continue
		}
		rec.add(del, d.outcome(del, res, start, end))
	}
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool { return Sleep(ctx, d) == nil }

// Sleep waits d, or returns ctx's error when it ends first (at once when d
// is not positive and ctx has ended): the wait a sink or transform takes
// between attempts or before a rate-limit slot.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// outcome classifies one delivery's result.
func (d *Deliverer) outcome(del sdk.Delivery, res Result, start, end time.Time) sdk.Result {
	a := sdk.Attempt{At: start, StatusCode: res.Status, Latency: end.Sub(start), Response: res.Body}
	if res.Err != nil {
		a.Error = res.Err.Error()
	} else if res.Status >= 300 {
		a.Error = fmt.Sprintf("%d %s", res.Status, http.StatusText(res.Status))
	}
	r := sdk.Result{ID: del.ID, Attempt: a, Prior: del.Attempts}
	outcome := policy.Classify(res.Status, res.Err)
	if res.Outcome != nil {
		outcome = *res.Outcome
	}
	// The breaker learns whether the endpoint answers: any HTTP answer but
	// a retryable one is a sign of life; a refusal before sending (SSRF
	// guard, bad URL) says nothing about it.
	if d.opts.Breaker != nil && (res.Status != 0 || outcome == policy.RetryLater) {
		d.opts.Breaker.Record(del.Endpoint, outcome != policy.RetryLater, end)
		d.mu.Lock()
		d.noteCircuit(del.Endpoint, d.opts.Breaker.Status(del.Endpoint, end))
		d.mu.Unlock()
	}
	switch outcome {
	case policy.Delivered:
		r.Outcome = sdk.Delivered
		return r
	case policy.Gone:
		d.mu.Lock()
		first := !d.gone[del.Endpoint]
		d.gone[del.Endpoint] = true
		if first {
			d.noteCircuit(del.Endpoint, policy.BreakerStatus{})
		}
		d.mu.Unlock()
		if first {
			d.opts.Log.Error("endpoint answered 410 Gone: disabled; its deliveries go to the dead letter", "endpoint", del.Endpoint)
		}
		r.Outcome = sdk.Dead
		return r
	case policy.Dead:
		d.opts.Log.Warn("delivery failed for good", "delivery", del.ID, "error", a.Error)
		r.Outcome = sdk.Dead
		return r
	}
	// Retry: the next attempt is number Attempts+2.
	delay, ok := d.opts.Retry.Delay(del.Attempts+2, d.rnd)
	if !ok {
		d.opts.Log.Warn("delivery failed: no attempts left", "delivery", del.ID, "attempts", del.Attempts+1, "error", a.Error)
		r.Outcome = sdk.Dead
		return r
	}
	if ra, ok := policy.ParseRetryAfter(res.Header.Get("Retry-After"), end); ok {
		delay = policy.Wait(delay, ra)
	}
	d.opts.Log.Debug("delivery failed; will retry", "delivery", del.ID, "attempt", del.Attempts+1, "in", delay.String(), "error", a.Error)
	r.Outcome, r.Next = sdk.Retry, end.Add(delay)
	return r
}

// recorder writes results to the outbox in batches: while one write is
// under way the next results gather, so under load many results share one
// transaction (group commit) and when idle each goes at once.
type recorder struct {
	out sdk.Outbox
	log *slog.Logger
	// flushed is called after each write; ordered says the write finished
	// a delivery with an order key, which may let the next one of that key
	// be leased.
	flushed func(ordered bool)

	mu       sync.Mutex
	results  []sdk.Result
	keyed    int // results in results[] of deliveries with an order key
	circuits []sdk.Circuit
	wake     chan struct{}
	closing  bool
	done     chan struct{}
}

// maxRecord caps the results of one write.
const maxRecord = 1024

func newRecorder(out sdk.Outbox, log *slog.Logger, flushed func(ordered bool)) *recorder {
	r := &recorder{out: out, log: log, flushed: flushed, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go r.run()
	return r
}

// add queues the result of del.
func (r *recorder) add(del sdk.Delivery, res sdk.Result) {
	r.mu.Lock()
	r.results = append(r.results, res)
	if del.OrderKey != "" {
		r.keyed++
	}
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) circuit(c sdk.Circuit) {
	r.mu.Lock()
	r.circuits = append(r.circuits, c)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// close writes what is left and stops.
func (r *recorder) close() {
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	r.signal()
	<-r.done
}

func (r *recorder) run() {
	defer close(r.done)
	for range r.wake {
		for {
			r.mu.Lock()
			n := min(len(r.results), maxRecord)
			results := r.results[:n:n]
			r.results = r.results[n:]
			circuits := r.circuits
			r.circuits = nil
			keyed := r.keyed > 0
			if len(r.results) == 0 {
				r.keyed = 0
			}
			closing := r.closing && len(r.results) == 0
			r.mu.Unlock()
			if len(results) > 0 || len(circuits) > 0 {
				// Not the loop's context: a result must be written also when
				// the loop is stopping.
				if err := r.out.Record(context.Background(), results, circuits); err != nil {
					r.log.Error("outbox record failed", "deliveries", len(results), "error", err.Error())
				}
				r.flushed(keyed)
			}
			if closing {
				return
			}
			r.mu.Lock()
			more := len(r.results) > 0 || len(r.circuits) > 0
			r.mu.Unlock()
			if !more {
				break
			}
		}
	}
}
