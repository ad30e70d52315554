package delivery_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery"
)

// pausable is a MemoryOutbox whose sink can be paused, as the engine's: while
// paused it stores what is enqueued, leases nothing, and says so.
type pausable struct {
	*delivery.MemoryOutbox
	paused atomic.Bool
	asked  atomic.Int64 // Paused calls
}

var _ sdk.PauseReporter = (*pausable)(nil)

func (p *pausable) Enqueue(ctx context.Context, ds []sdk.Delivery) ([]int, error) {
	if p.paused.Load() {
		ds = append([]sdk.Delivery(nil), ds...)
		for i := range ds {
			ds[i].Lease = false
		}
	}
	return p.MemoryOutbox.Enqueue(ctx, ds)
}

func (p *pausable) Lease(ctx context.Context, max, perEndpoint int, skip []string) ([]sdk.Delivery, time.Time, error) {
	if p.paused.Load() {
		return nil, time.Now().Add(time.Second), nil
	}
	return p.MemoryOutbox.Lease(ctx, max, perEndpoint, skip)
}

func (p *pausable) Pending(ctx context.Context) (sdk.OutboxStatus, error) {
	st, err := p.MemoryOutbox.Pending(ctx)
	st.Paused = p.paused.Load()
	return st, err
}

func (p *pausable) Paused(context.Context) (bool, error) {
	p.asked.Add(1)
	return p.paused.Load(), nil
}

// Drain returns when the sink is paused, leaving what is pending; after
// resume the loop sends it within about a second.
func TestDrainStopsWaitingForAPausedSink(t *testing.T) {
	out := &pausable{MemoryOutbox: delivery.NewMemoryOutbox()}
	out.paused.Store(true)
	f := newFake(nil)
	d := delivery.New(f, out, delivery.Options{})
	t.Cleanup(d.Stop)
	enqueue(t, d, rec{id: "a"}, rec{id: "b"})
	done := make(chan error, 1)
	go func() { done <- d.Drain(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain waited for a paused sink")
	}
	if p, _, _ := d.Pending(context.Background()); p != 2 || len(f.log()) != 0 {
		t.Fatalf("pending %d, sent %d; want 2 pending, none sent", p, len(f.log()))
	}
	out.paused.Store(false)
	start := time.Now()
	drain(t, d)
	if len(f.log()) != 2 {
		t.Fatalf("sent %d after resume", len(f.log()))
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("resume took %v to send", took)
	}
}

// A pause seen while the loop holds deliveries it has not started hands
// them back (released, attempts unchanged); nothing more is sent until the
// resume. The outbox is asked only while there is something to hand back.
func TestPausedSinkHandsBackWhatItHolds(t *testing.T) {
	out := &pausable{MemoryOutbox: delivery.NewMemoryOutbox()}
	f := newFake(nil)
	f.hold = 20 * ms
	d := delivery.New(f, out, delivery.Options{Concurrency: 1})
	t.Cleanup(d.Stop)
	var rs []rec
	for i := range 100 {
		rs = append(rs, rec{id: fmt.Sprintf("r%03d", i), endpoint: "slow"})
	}
	enqueue(t, d, rs...)
	for len(f.log()) == 0 {
		time.Sleep(ms)
	}
	out.paused.Store(true)
	time.Sleep(800 * ms) // a check every 500ms; one send may be under way
	atPause := len(f.log())
	time.Sleep(600 * ms)
	if n := len(f.log()); n != atPause || n > 60 {
		t.Fatalf("sent %d, then %d while paused (of 100)", atPause, n)
	}
	for _, r := range rs[atPause:] {
		res := out.Results(r.id)
		if len(res) != 1 || res[0].Outcome != sdk.Release || res[0].Prior != 0 {
			t.Fatalf("%s: results %+v; want one release", r.id, res)
		}
	}
	out.paused.Store(false)
	drain(t, d)
	for _, r := range rs {
		if n := f.calls(r.id); n != 1 {
			t.Fatalf("%s sent %d times", r.id, n)
		}
	}
	// Idle, the loop holds nothing to hand back and does not ask.
	asked := out.asked.Load()
	time.Sleep(1200 * ms)
	if n := out.asked.Load(); n != asked {
		t.Fatalf("asked whether paused %d times while idle", n-asked)
	}
}
