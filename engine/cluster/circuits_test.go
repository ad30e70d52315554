package cluster

import (
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/engine/cluster/natstest"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// A circuit one worker's sink opened holds that endpoint's deliveries back
// on every worker until its cooldown ends; other endpoints go on, and a
// circuit closed again frees them at once.
func TestOpenCircuitIsSharedByTheWorkers(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	a := obService(t, obConnect(t, srv, prefix, "a"), OutboxOptions{SkipDelay: 50 * time.Millisecond})
	b := obService(t, obConnect(t, srv, prefix, "b"), OutboxOptions{SkipDelay: 50 * time.Millisecond})
	down := "https://down.example/hook"
	until := time.Now().Add(time.Hour)
	_, err := a.Record(obBg, &pluginv1.RecordRequest{Circuits: []*pluginv1.Circuit{{Endpoint: down, State: pluginv1.Circuit_OPEN, UntilUnixMs: until.UnixMilli(), Reason: "5 failures"}}})
	if err != nil {
		t.Fatal(err)
	}
	obEnqueue(t, b, obDel("d1", down, ""), obDel("u1", "https://up.example/", ""))
	got := obLeaseUntil(t, b, 10, 1, 10*time.Second)
	if len(got) != 1 || got[0].Id != "u1" {
		t.Fatalf("b leased %v, want only u1: the down endpoint's circuit is open on a", obIds(got))
	}
	obRecord(t, b, obDelivered("u1"))
	time.Sleep(200 * time.Millisecond)
	if more := obLease(t, b, 10); len(more) != 0 {
		t.Fatalf("b leased %v while a's circuit for %s is open", obIds(more), down)
	}
	// a's probe succeeded: closed, and d1 goes out from b.
	if _, err := a.Record(obBg, &pluginv1.RecordRequest{Circuits: []*pluginv1.Circuit{{Endpoint: down, State: pluginv1.Circuit_CLOSED}}}); err != nil {
		t.Fatal(err)
	}
	if got := obLeaseUntil(t, b, 10, 1, 10*time.Second); len(got) != 1 || got[0].Id != "d1" {
		t.Fatalf("after the circuit closed, b leased %v, want d1", obIds(got))
	}
}
