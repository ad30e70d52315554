package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// OutboxCounts says what a sink's outbox holds across the cluster:
// pending counts the deliveries in its stream (waiting, being delivered,
// or waiting for a retry), dead its dead letters. ok is false when the
// sink has no outbox stream yet.
func (c *Cluster) OutboxCounts(ctx context.Context, pipeline, sink string) (pending, dead int64, ok bool, err error) {
	n := c.outboxNames(pipeline, sink)
	st, err := c.js.Stream(ctx, n.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, false, err
	}
	pending = int64(info.State.Msgs)
	if ds, err := c.js.Stream(ctx, n.dead); err == nil {
		if di, err := ds.Info(ctx); err == nil {
			dead = int64(di.State.Msgs)
		}
	}
	return pending, dead, true, nil
}

// InboxCounts says what a push source's inbox stream holds across the
// cluster: the records not committed yet (read by a worker or not), and
// when the oldest of them was stored. ok is false when the source has no
// inbox stream yet.
func (c *Cluster) InboxCounts(ctx context.Context, pipeline, source string) (records int64, oldest time.Time, ok bool, err error) {
	n := c.inboxNames(pipeline, source)
	st, err := c.js.Stream(ctx, n.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, time.Time{}, false, nil
	}
	if err != nil {
		return 0, time.Time{}, false, err
	}
	s := &InboxService{stream: st, n: n}
	records, oldest, err = s.counts(ctx)
	return records, oldest, err == nil, err
}
