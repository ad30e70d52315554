package state

import (
	"context"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// SDK returns the outbox as the sdk.Outbox a sink's delivery loop uses,
// called in process (tests, benchmarks); plugin processes reach the same
// store through Service.
func (o *Outbox) SDK() sdk.Outbox { return sdkOutbox{o} }

type sdkOutbox struct{ o *Outbox }

func (a sdkOutbox) Enqueue(ctx context.Context, ds []sdk.Delivery) ([]int, error) {
	in := make([]Delivery, len(ds))
	for i, d := range ds {
		in[i] = Delivery{ID: d.ID, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, NotBefore: d.NotBefore, Lease: d.Lease}
	}
	_, leased, err := a.o.Enqueue(ctx, in, time.Now())
	return leased, err
}

func (a sdkOutbox) Lease(ctx context.Context, n, perEndpoint int, skip []string) ([]sdk.Delivery, time.Time, error) {
	ds, next, err := a.o.Lease(ctx, time.Now(), n, perEndpoint, skip)
	out := make([]sdk.Delivery, len(ds))
	for i, d := range ds {
		out[i] = sdk.Delivery{ID: d.ID, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, Attempts: d.Attempts}
	}
	return out, next, err
}

func (a sdkOutbox) Record(ctx context.Context, rs []sdk.Result, cs []sdk.Circuit) error {
	now := time.Now()
	if err := a.o.Record(ctx, rs, now); err != nil {
		return err
	}
	return a.o.SetCircuits(ctx, cs, now)
}

func (a sdkOutbox) Pending(ctx context.Context) (sdk.OutboxStatus, error) {
	p, d, _, err := a.o.Pending(ctx)
	if err != nil {
		return sdk.OutboxStatus{}, err
	}
	paused, err := a.o.Paused(ctx)
	return sdk.OutboxStatus{Pending: p, Dead: d, StopWaiting: a.o.stopWaiting.Load(), Paused: paused}, err
}

var _ sdk.PauseReporter = sdkOutbox{}

func (a sdkOutbox) Paused(ctx context.Context) (bool, error) { return a.o.Paused(ctx) }

var _ sdk.RetentionSetter = sdkOutbox{}

func (a sdkOutbox) SetRetention(ctx context.Context, r sdk.Retention) error {
	return a.o.SetRetention(ctx, r, time.Now())
}
