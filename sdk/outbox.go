package sdk

import (
	"context"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// Outbox is the engine's durable store of an action sink's deliveries
// (sdk/delivery builds the retrying machinery on it). A delivery enqueued
// before Write returns survives a crash of the engine or the plugin; the
// next run delivers it. Plugins keep no files of their own.
type Outbox interface {
	// Enqueue stores deliveries as pending and due now; ids already stored
	// are left as they are.
	Enqueue(ctx context.Context, ds []Delivery) error
	// Lease hands out up to max due deliveries, marking them in flight, and
	// says when the next pending one is due (zero when none is pending).
	// Deliveries to the endpoints in skip are left for later.
	Lease(ctx context.Context, max int, skip []string) ([]Delivery, time.Time, error)
	// Record stores an attempt's outcome and appends it to the delivery log.
	Record(ctx context.Context, id string, a Attempt, o Outcome, next time.Time) error
	// Pending counts the deliveries left and the dead ones.
	Pending(ctx context.Context) (pending, dead int, err error)
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
	Release           // not attempted (breaker open): due again at the given time
)

// stateOutbox is the Outbox the engine serves over the plugin broker.
type stateOutbox struct{ c pluginv1.StateClient }

func dialOutbox(b *plugin.GRPCBroker, id uint32) (Outbox, error) {
	conn, err := b.Dial(id)
	if err != nil {
		return nil, err
	}
	return &stateOutbox{c: pluginv1.NewStateClient(conn)}, nil
}

func (o *stateOutbox) Enqueue(ctx context.Context, ds []Delivery) error {
	req := &pluginv1.EnqueueRequest{}
	for _, d := range ds {
		pd := &pluginv1.Delivery{Id: d.ID, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload}
		if !d.NotBefore.IsZero() {
			pd.NotBeforeUnixMs = d.NotBefore.UnixMilli()
		}
		req.Deliveries = append(req.Deliveries, pd)
	}
	_, err := o.c.Enqueue(ctx, req)
	return err
}

func (o *stateOutbox) Lease(ctx context.Context, max int, skip []string) ([]Delivery, time.Time, error) {
	resp, err := o.c.Lease(ctx, &pluginv1.LeaseRequest{Max: uint32(max), SkipEndpoints: skip})
	if err != nil {
		return nil, time.Time{}, err
	}
	out := make([]Delivery, len(resp.Deliveries))
	for i, d := range resp.Deliveries {
		out[i] = Delivery{ID: d.Id, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, Attempts: int(d.Attempts)}
	}
	var next time.Time
	if resp.NextDueUnixMs > 0 {
		next = time.UnixMilli(resp.NextDueUnixMs)
	}
	return out, next, nil
}

func (o *stateOutbox) Record(ctx context.Context, id string, a Attempt, out Outcome, next time.Time) error {
	req := &pluginv1.RecordRequest{Id: id, Outcome: pluginv1.RecordRequest_Outcome(out), Attempt: &pluginv1.Attempt{
		AtUnixMs: a.At.UnixMilli(), StatusCode: int32(a.StatusCode), LatencyMs: a.Latency.Milliseconds(), Error: a.Error, Response: a.Response,
	}}
	if !next.IsZero() {
		req.NextAtUnixMs = next.UnixMilli()
	}
	_, err := o.c.Record(ctx, req)
	return err
}

func (o *stateOutbox) Pending(ctx context.Context) (int, int, error) {
	resp, err := o.c.Pending(ctx, &pluginv1.PendingRequest{})
	if err != nil {
		return 0, 0, err
	}
	return int(resp.Pending), int(resp.Dead), nil
}
