package cluster

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// holding is a JetStream message a service holds for this worker (an
// outbox delivery leased, an inbox entry read): renewed with InProgress
// while held, so that its consumer does not hand it to another worker,
// and never again once done (acked, naked or handed back).
type holding struct {
	msg     jetstream.Msg
	touched atomic.Int64 // unix ns of the delivery or the last renewal
	mu      sync.Mutex   // orders a renewal before the ack or nak
	done    bool
}

// keepRenewing renews, until ctx ends, every holding that collect returns
// once half of ackWait has passed since it was delivered or last renewed;
// warn is told of a renewal that failed (the next round tries again).
func keepRenewing(ctx context.Context, ackWait time.Duration, collect func() []*holding, warn func(h *holding, err error)) {
	half := ackWait / 2
	t := time.NewTicker(max(ackWait/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for _, h := range collect() {
			if now.Sub(time.Unix(0, h.touched.Load())) < half {
				continue
			}
			h.mu.Lock()
			if !h.done {
				if err := h.msg.InProgress(); err != nil {
					warn(h, err)
				} else {
					h.touched.Store(now.UnixNano())
				}
			}
			h.mu.Unlock()
		}
	}
}
