package delivery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

// reserver is an sdk.Outbox that keeps shared rate limits as a cluster's
// engine does, answering wait (or err) and counting the calls.
type reserver struct {
	sdk.Outbox
	wait  time.Duration
	err   error
	calls int
}

func (r *reserver) Reserve(_ context.Context, endpoint string, interval time.Duration, burst int) (time.Duration, error) {
	r.calls++
	return r.wait, r.err
}

func TestSharedLimiterWaitsForTheLaterOfBoth(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rate, err := policy.ParseRate("10/s")
	if err != nil {
		t.Fatal(err)
	}
	r := &reserver{wait: 700 * time.Millisecond}
	local := policy.NewLimiter(rate, 1)
	l := SharedLimiter(r, local, rate, 1, nil)
	if w := l.Reserve("ep", now); w != 700*time.Millisecond {
		t.Errorf("first send waits %v, want the cluster's 700ms", w)
	}
	// Locally paused (a Retry-After): the local wait wins.
	local.Pause("ep", now.Add(5*time.Second))
	if w := l.Reserve("ep", now); w < 4*time.Second {
		t.Errorf("while paused locally the send waits %v, want about 5s", w)
	}
	if r.calls != 2 {
		t.Errorf("%d reservations asked of the cluster, want 2", r.calls)
	}
}

func TestSharedLimiterWithoutAClusterKeepsTheRateAlone(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rate, _ := policy.ParseRate("10/s")
	r := &reserver{err: sdk.ErrNoSharedRate}
	l := SharedLimiter(r, policy.NewLimiter(rate, 1), rate, 1, nil)
	var waits []time.Duration
	for range 3 {
		waits = append(waits, l.Reserve("ep", now))
	}
	if waits[0] != 0 || waits[1] != 100*time.Millisecond || waits[2] != 200*time.Millisecond {
		t.Errorf("waits %v, want the local limiter's 0, 100ms, 200ms", waits)
	}
	if r.calls != 1 {
		t.Errorf("asked the engine %d times: after ErrNoSharedRate it should stop asking", r.calls)
	}
	// A failing cluster: the local limiter keeps the rate, and it asks again.
	r2 := &reserver{err: errors.New("nats: timeout")}
	l2 := SharedLimiter(r2, policy.NewLimiter(rate, 1), rate, 1, nil)
	l2.Reserve("ep", now)
	if w := l2.Reserve("ep", now); w != 100*time.Millisecond || r2.calls != 2 {
		t.Errorf("with the cluster failing: wait %v after %d calls, want 100ms after 2", w, r2.calls)
	}
}

func TestCheckScope(t *testing.T) {
	for _, ok := range []string{"", "worker", "cluster"} {
		if err := CheckScope(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	if err := CheckScope("global"); err == nil {
		t.Error(`"global" accepted`)
	}
}
