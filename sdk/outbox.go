package sdk

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// Outbox is the engine's durable store of an action sink's deliveries
// (sdk/delivery builds the retrying machinery on it). A delivery enqueued
// before Write returns survives a crash of the engine or the plugin; the
// next run delivers it. Plugins keep no files of their own.
type Outbox interface {
	// Enqueue stores deliveries as pending, in one durable write; ids
	// already stored are left as they are. The new ones marked Lease are
	// leased to this session at once (the caller has their payload and
	// need not ask for them back); leased holds their indexes in ds.
	Enqueue(ctx context.Context, ds []Delivery) (leased []int, err error)
	// Lease hands out up to max due deliveries, at most perEndpoint of
	// one endpoint (0: no limit), and holds them for this session until
	// their result is recorded, and says when the next pending one is due
	// (zero when none is pending). Deliveries to the endpoints in skip are
	// left for later. Leases are not durable: a new session (after a
	// crash) starts with none.
	Lease(ctx context.Context, max, perEndpoint int, skip []string) ([]Delivery, time.Time, error)
	// Record stores the results of leased deliveries in one durable write
	// and appends the attempts to the delivery log; circuits are the
	// endpoints whose breaker changed since the last call (may be empty).
	// When it returns nil, the results survive a crash.
	Record(ctx context.Context, results []Result, circuits []Circuit) error
	// Pending counts the deliveries left and the dead ones, and says whether
	// the run asks the sink to stop waiting for them.
	Pending(ctx context.Context) (OutboxStatus, error)
}

// RateReserver is an Outbox that keeps rate limits shared by every worker
// of a cluster (rate_limit_scope = "cluster"): Reserve reserves one request
// to endpoint at one per interval, bursts of up to burst, and says how long
// to wait before sending. The engine's answers ErrNoSharedRate when it runs
// without a cluster.
type RateReserver interface {
	Reserve(ctx context.Context, endpoint string, interval time.Duration, burst int) (time.Duration, error)
}

// ErrNoSharedRate is RateReserver.Reserve's error when the engine keeps no
// shared rate limits (it runs on one machine): the sink keeps the limit.
var ErrNoSharedRate = errors.New("the engine keeps no shared rate limits")

// RetentionSetter is an Outbox that prunes what is finished: the engine's
// does, over the plugin protocol. sdk/delivery's Deliverer type-asserts for
// it and calls SetRetention once, as its loop starts; an Outbox without it
// keeps everything (or applies its own rules).
type RetentionSetter interface {
	// SetRetention says how long this sink's finished deliveries are kept
	// (zero fields: the defaults). The engine stores it for the sink and
	// prunes in the background, never touching pending deliveries. An
	// error is not fatal to delivering: the sink logs it and goes on.
	SetRetention(ctx context.Context, r Retention) error
}

// Retention is how long an outbox keeps finished deliveries. A zero field
// means its default (DefaultRetention).
type Retention struct {
	// Delivered: a delivered delivery's payload is dropped this long after
	// it was delivered. Its row (id, status, attempts) stays, so a re-run
	// of the same records still sends nothing twice.
	Delivered time.Duration
	// Attempts: entries of the delivery log older than this are deleted,
	// except those of pending deliveries.
	Attempts time.Duration
	// Dead: a dead delivery that was not replayed for this long is deleted
	// with its log (until then `pipeline replay` can send it again).
	Dead time.Duration
}

// DefaultRetention is what an outbox keeps when a sink does not say.
var DefaultRetention = Retention{Delivered: 7 * 24 * time.Hour, Attempts: 30 * 24 * time.Hour, Dead: 30 * 24 * time.Hour}

// WithDefaults returns r with its zero fields set to DefaultRetention's.
func (r Retention) WithDefaults() Retention {
	if r.Delivered <= 0 {
		r.Delivered = DefaultRetention.Delivered
	}
	if r.Attempts <= 0 {
		r.Attempts = DefaultRetention.Attempts
	}
	if r.Dead <= 0 {
		r.Dead = DefaultRetention.Dead
	}
	return r
}

// Delivery is one message an action sink must get to its destination.
type Delivery struct {
	ID       string // stable across retries, restarts and replays
	Endpoint string // concurrency, rate limits and the breaker are per endpoint
	OrderKey string // same key: one at a time, in order
	Payload  []byte // the sink's own encoding of the request
	Attempts int    // attempts made so far
	// NotBefore, when set on Enqueue, delays the first attempt (a retry
	// schedule whose first entry is not "0s").
	NotBefore time.Time
	// Lease, on Enqueue, asks for the delivery to be leased at once if it
	// is new (it must be due now and have no OrderKey).
	Lease bool
}

// Attempt is one try, as the delivery log keeps it. Error must not hold
// secrets.
type Attempt struct {
	At         time.Time
	StatusCode int
	Latency    time.Duration
	Error      string
	Response   []byte // the first 4 KiB of the response body
}

// Outcome is what an attempt means for its delivery.
type Outcome int

const (
	Delivered Outcome = iota
	Retry             // try again at the given time
	Dead              // dead letter: no more attempts until replayed
	Release           // not attempted (the session stops): due again at the given time, attempts unchanged
)

// Result is what became of one leased delivery.
type Result struct {
	ID      string
	Attempt Attempt // zero for Release
	Outcome Outcome
	// Next is when a Retry or Release is due again.
	Next time.Time
	// Prior is how many attempts the delivery had before this one.
	Prior int
}

// CircuitState is an endpoint's circuit, as a sink reports it.
type CircuitState int

const (
	CircuitClosed   CircuitState = iota
	CircuitOpen                  // paused until Until
	CircuitHalfOpen              // probing
	CircuitDisabled              // answered 410 Gone: disabled for the session
)

// String returns "closed", "open", "half-open" or "disabled".
func (s CircuitState) String() string {
	switch s {
	case CircuitOpen:
		return "open"
	case CircuitHalfOpen:
		return "half-open"
	case CircuitDisabled:
		return "disabled"
	}
	return "closed"
}

// MarshalText makes a CircuitState read as its name in JSON.
func (s CircuitState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Circuit is one endpoint's breaker state.
type Circuit struct {
	Endpoint string       `json:"endpoint"`
	State    CircuitState `json:"state"`
	Until    time.Time    `json:"until,omitzero"` // end of the pause when open
	Reason   string       `json:"reason,omitempty"`
}

// OutboxStatus is what Pending reports.
type OutboxStatus struct {
	Pending, Dead int
	// StopWaiting: the run was interrupted; a sink waiting for its pending
	// deliveries at the end of its stream stops and leaves them queued.
	StopWaiting bool
	// Paused: the sink is paused (`pipeline pause`); the outbox hands out
	// nothing until it is resumed, so a sink waiting for its pending
	// deliveries at the end of its stream stops and leaves them queued.
	Paused bool
}

// PauseReporter is an Outbox whose sink can be paused by the operator: the
// engine's (`pipeline pause`, the admin API of `pipeline serve`). While a
// sink is paused its outbox still stores what Enqueue gets (the batch may
// be acked) but leases nothing, at Enqueue or Lease. sdk/delivery's
// Deliverer type-asserts for it and, while it says so, hands back the
// deliveries it holds leased and has not started.
type PauseReporter interface {
	// Paused reports whether the sink is paused; the answer may be up to
	// half a second old.
	Paused(ctx context.Context) (bool, error)
}

// stateOutbox is the Outbox the engine serves over the plugin broker.
type stateOutbox struct{ c pluginv1.StateClient }

var (
	_ RetentionSetter = (*stateOutbox)(nil)
	_ PauseReporter   = (*stateOutbox)(nil)
)

// dialState connects to the State service the engine serves the plugin:
// a sink's outbox, a source's inbox.
func dialState(b *plugin.GRPCBroker, id uint32) (Outbox, Inbox, error) {
	conn, err := b.Dial(id)
	if err != nil {
		return nil, nil, err
	}
	c := pluginv1.NewStateClient(conn)
	return &stateOutbox{c: c}, &stateInbox{c: c}, nil
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMs(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func (o *stateOutbox) Enqueue(ctx context.Context, ds []Delivery) ([]int, error) {
	req := &pluginv1.EnqueueRequest{Deliveries: make([]*pluginv1.Delivery, len(ds))}
	for i, d := range ds {
		req.Deliveries[i] = &pluginv1.Delivery{Id: d.ID, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, NotBeforeUnixMs: unixMs(d.NotBefore), Lease: d.Lease}
	}
	resp, err := o.c.Enqueue(ctx, req)
	if err != nil {
		return nil, err
	}
	leased := make([]int, 0, len(resp.Leased))
	for _, i := range resp.Leased {
		if int(i) < len(ds) {
			leased = append(leased, int(i))
		}
	}
	return leased, nil
}

func (o *stateOutbox) Lease(ctx context.Context, max, perEndpoint int, skip []string) ([]Delivery, time.Time, error) {
	resp, err := o.c.Lease(ctx, &pluginv1.LeaseRequest{Max: uint32(max), MaxPerEndpoint: uint32(perEndpoint), SkipEndpoints: skip})
	if err != nil {
		return nil, time.Time{}, err
	}
	out := make([]Delivery, len(resp.Deliveries))
	for i, d := range resp.Deliveries {
		out[i] = Delivery{ID: d.Id, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, Attempts: int(d.Attempts)}
	}
	return out, fromUnixMs(resp.NextDueUnixMs), nil
}

func (o *stateOutbox) Record(ctx context.Context, results []Result, circuits []Circuit) error {
	req := &pluginv1.RecordRequest{Results: make([]*pluginv1.Result, len(results))}
	for i, r := range results {
		pr := &pluginv1.Result{Id: r.ID, Outcome: pluginv1.Outcome(r.Outcome), NextAtUnixMs: unixMs(r.Next), PriorAttempts: uint32(r.Prior)}
		if r.Outcome != Release {
			a := r.Attempt
			pr.Attempt = &pluginv1.Attempt{AtUnixMs: unixMs(a.At), StatusCode: int32(a.StatusCode), LatencyMs: a.Latency.Milliseconds(), Error: a.Error, Response: a.Response}
		}
		req.Results[i] = pr
	}
	for _, c := range circuits {
		req.Circuits = append(req.Circuits, &pluginv1.Circuit{Endpoint: c.Endpoint, State: pluginv1.Circuit_State(c.State), UntilUnixMs: unixMs(c.Until), Reason: c.Reason})
	}
	_, err := o.c.Record(ctx, req)
	return err
}

func (o *stateOutbox) Pending(ctx context.Context) (OutboxStatus, error) {
	resp, err := o.c.Pending(ctx, &pluginv1.PendingRequest{})
	if err != nil {
		return OutboxStatus{}, err
	}
	return OutboxStatus{Pending: int(resp.Pending), Dead: int(resp.Dead), StopWaiting: resp.StopWaiting, Paused: resp.Paused}, nil
}

func (o *stateOutbox) Paused(ctx context.Context) (bool, error) {
	resp, err := o.c.Paused(ctx, &pluginv1.PausedRequest{})
	if status.Code(err) == codes.Unimplemented {
		return false, nil // an engine without pauses
	}
	if err != nil {
		return false, err
	}
	return resp.Paused, nil
}

func (o *stateOutbox) SetRetention(ctx context.Context, r Retention) error {
	_, err := o.c.SetRetention(ctx, &pluginv1.SetRetentionRequest{
		DeliveredMs: r.Delivered.Milliseconds(), AttemptsMs: r.Attempts.Milliseconds(), DeadMs: r.Dead.Milliseconds()})
	return err
}

func (o *stateOutbox) Reserve(ctx context.Context, endpoint string, interval time.Duration, burst int) (time.Duration, error) {
	resp, err := o.c.Reserve(ctx, &pluginv1.ReserveRequest{Endpoint: endpoint, IntervalNs: int64(interval), Burst: int32(burst)})
	if status.Code(err) == codes.Unimplemented {
		return 0, ErrNoSharedRate
	}
	if err != nil {
		return 0, err
	}
	return time.Duration(resp.WaitNs), nil
}
