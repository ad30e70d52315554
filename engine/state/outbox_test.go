package state

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

func ids(ds []Delivery) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.ID)
	}
	return fmt.Sprint(s)
}

func TestOutboxLifecycle(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o := s.Outbox("churn", "crm")
	now := time.UnixMilli(1_700_000_000_000)

	n, _, err := o.Enqueue(ctx, []Delivery{
		{ID: "a", OrderKey: "cust1", Payload: []byte("A")},
		{ID: "b", OrderKey: "cust1", Payload: []byte("B")},
		{ID: "c", Endpoint: "slow", Payload: []byte("C")},
	}, now)
	if err != nil || n != 3 {
		t.Fatalf("enqueue: %d %v", n, err)
	}
	// A re-run enqueues the same ids again: nothing changes.
	if n, _, _ := o.Enqueue(ctx, []Delivery{{ID: "a", Payload: []byte("changed")}}, now); n != 0 {
		t.Fatalf("re-enqueue added %d", n)
	}

	// b waits behind a (same order key); c is skipped by endpoint.
	got, _, err := o.Lease(ctx, now, 10, 0, []string{"slow"})
	if err != nil || ids(got) != "[a]" || string(got[0].Payload) != "A" {
		t.Fatalf("lease: %s %v", ids(got), err)
	}
	// a is in flight: not handed out twice; b still waits.
	if got, _, _ := o.Lease(ctx, now, 10, 0, nil); ids(got) != "[c]" {
		t.Fatalf("second lease: %s", ids(got))
	}

	// a fails and is due in a minute: b still waits behind it (order).
	if err := o.Record(ctx, []sdk.Result{{ID: "a", Attempt: sdk.Attempt{At: now, StatusCode: 503, Latency: 12 * time.Millisecond, Error: "503 Service Unavailable", Response: []byte("busy")}, Outcome: sdk.Retry, Next: now.Add(time.Minute)}}, now); err != nil {
		t.Fatal(err)
	}
	got, next, _ := o.Lease(ctx, now, 10, 0, nil)
	if len(got) != 0 || !next.Equal(now.Add(time.Minute)) {
		t.Fatalf("lease while a waits: %s, next %v", ids(got), next)
	}
	if err := o.Record(ctx, []sdk.Result{{ID: "c", Attempt: sdk.Attempt{At: now, StatusCode: 400, Error: "400 Bad Request"}, Outcome: sdk.Dead}}, now); err != nil {
		t.Fatal(err)
	}
	later := now.Add(2 * time.Minute)
	got, _, _ = o.Lease(ctx, later, 10, 0, nil)
	if ids(got) != "[a]" || got[0].Attempts != 1 {
		t.Fatalf("lease after a is due: %s %+v", ids(got), got)
	}
	o.Record(ctx, []sdk.Result{{ID: "a", Attempt: sdk.Attempt{At: later, StatusCode: 200}, Outcome: sdk.Delivered, Prior: 1}}, later)
	got, _, _ = o.Lease(ctx, later, 10, 0, nil)
	if ids(got) != "[b]" {
		t.Fatalf("b after a: %s", ids(got))
	}
	// b is leased by this session; a crash ends the session, and the next
	// one, once begun, hands b out again.
	if got, _, _ := o.Lease(ctx, later, 10, 0, nil); len(got) != 0 {
		t.Fatalf("b handed out twice in one session: %s", ids(got))
	}
	o = s.Outbox("churn", "crm")
	if err := o.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := o.Lease(ctx, later, 10, 0, nil); ids(got) != "[b]" {
		t.Fatalf("next session: %s", ids(got))
	}
	pending, dead, _, err := o.Pending(ctx)
	if err != nil || pending != 1 || dead != 1 {
		t.Fatalf("pending %d dead %d %v", pending, dead, err)
	}

	// The log lists every attempt; failed selects pending ones that failed.
	list, err := s.Deliveries(ctx, DeliveryFilter{Pipeline: "churn", ID: "a"}, 10)
	if err != nil || len(list) != 1 || list[0].Status != "delivered" || len(list[0].Log) != 2 ||
		list[0].Log[0].StatusCode != 503 || string(list[0].Log[0].Response) != "busy" || list[0].Log[0].Latency != 12*time.Millisecond {
		t.Fatalf("log: %+v %v", list, err)
	}
	if dl, _ := s.Deliveries(ctx, DeliveryFilter{Pipeline: "churn", Status: "dead"}, 10); len(dl) != 1 || dl[0].ID != "c" {
		t.Fatalf("dead: %+v", dl)
	}

	// Replay makes dead ones pending again with a fresh schedule.
	n64, err := s.Replay(ctx, DeliveryFilter{Pipeline: "churn", Sink: "crm", Status: "dead"}, later)
	if err != nil || n64 != 1 {
		t.Fatalf("replay: %d %v", n64, err)
	}
	got, _, _ = o.Lease(ctx, later, 10, 0, nil)
	if ids(got) != "[c]" || got[0].Attempts != 0 {
		t.Fatalf("replayed: %+v", got)
	}
	// --since selects by the last change (the test clock is in the past).
	if dl, _ := s.Deliveries(ctx, DeliveryFilter{Pipeline: "churn", Since: now.Add(-time.Minute)}, 10); len(dl) != 3 {
		t.Fatalf("since a minute ago: %d deliveries, want 3", len(dl))
	}
	if dl, _ := s.Deliveries(ctx, DeliveryFilter{Pipeline: "churn", Since: time.Now().Add(time.Hour)}, 10); len(dl) != 0 {
		t.Fatalf("since an hour from now: %d deliveries, want 0", len(dl))
	}
	// Replay by id touches only that delivery (a is delivered, b pending).
	if n, err := s.Replay(ctx, DeliveryFilter{Pipeline: "churn", ID: "a"}, later); err != nil || n != 1 {
		t.Fatalf("replay a: %d %v", n, err)
	}
	if dl, _ := s.Deliveries(ctx, DeliveryFilter{Pipeline: "churn", Status: "delivered"}, 10); len(dl) != 0 {
		t.Fatalf("a should be pending again: %+v", dl)
	}
	if _, err := s.Deliveries(ctx, DeliveryFilter{Pipeline: "churn", Status: "bogus"}, 1); err == nil {
		t.Fatal("a bad status must be an error")
	}
}
