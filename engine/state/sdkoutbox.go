package state

import (
	"context"
	"fmt"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// SDK returns the outbox as the sdk.Outbox a sink's delivery loop uses,
// called in process (tests, benchmarks); plugin processes reach the same
// store through Service.
func (o *Outbox) SDK() sdk.Outbox { return sdkOutbox{o} }

type sdkOutbox struct{ o *Outbox }

func (a sdkOutbox) Enqueue(ctx context.Context, ds []sdk.Delivery) error {
	in := make([]Delivery, len(ds))
	for i, d := range ds {
		in[i] = Delivery{ID: d.ID, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, NotBefore: d.NotBefore}
	}
	_, err := a.o.Enqueue(ctx, in, time.Now())
	return err
}

func (a sdkOutbox) Lease(ctx context.Context, n int, skip []string) ([]sdk.Delivery, time.Time, error) {
	ds, next, err := a.o.Lease(ctx, time.Now(), n, skip)
	out := make([]sdk.Delivery, len(ds))
	for i, d := range ds {
		out[i] = sdk.Delivery{ID: d.ID, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, Attempts: d.Attempts}
	}
	return out, next, err
}

func (a sdkOutbox) Record(ctx context.Context, id string, at sdk.Attempt, o sdk.Outcome, next time.Time) error {
	oc, ok := map[sdk.Outcome]Outcome{sdk.Delivered: Delivered, sdk.Retry: Retry, sdk.Dead: Dead, sdk.Release: Release}[o]
	if !ok {
		return fmt.Errorf("state: unknown outcome %d", o)
	}
	return a.o.Record(ctx, id, Attempt{At: at.At, StatusCode: at.StatusCode, Latency: at.Latency, Error: at.Error, Response: at.Response}, oc, next)
}

func (a sdkOutbox) Pending(ctx context.Context) (int, int, error) {
	p, d, _, err := a.o.Pending(ctx)
	return p, d, err
}
