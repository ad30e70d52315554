package cluster

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/engine/cluster/natstest"
)

// Two workers reserving at once, on one virtual clock, are given send
// times that together keep to the rate: with 10/s and a burst of 2, 40
// reservations made at the same instant go out 2 at once and then one
// every 100 ms, whichever worker made them.
func TestSharedRateLimitHoldsAcrossWorkers(t *testing.T) {
	srv := natstest.Start(t)
	a := connect(t, srv.URL(), "rl", "a")
	b := connect(t, srv.URL(), "rl", "b")
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	var waits []time.Duration
	var wg sync.WaitGroup
	for _, c := range []*Cluster{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				w, err := c.Reserve(context.Background(), "p", "crm", "https://crm.example/hook", 100*time.Millisecond, 2, now)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				waits = append(waits, w)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(waits)
	if len(waits) != 40 {
		t.Fatalf("%d reservations", len(waits))
	}
	for i, w := range waits {
		want := time.Duration(max(i-1, 0)) * 100 * time.Millisecond
		if w != want {
			t.Fatalf("reservation %d waits %v, want %v (all: %v)", i, w, want, waits)
		}
	}
	// Another endpoint has a limit of its own; time passing frees room.
	if w, err := a.Reserve(context.Background(), "p", "crm", "https://other.example/", 100*time.Millisecond, 1, now); err != nil || w != 0 {
		t.Errorf("another endpoint: wait %v, %v; want 0", w, err)
	}
	later := now.Add(time.Hour)
	if w, err := b.Reserve(context.Background(), "p", "crm", "https://crm.example/hook", 100*time.Millisecond, 2, later); err != nil || w != 0 {
		t.Errorf("an hour later: wait %v, %v; want 0", w, err)
	}
}
