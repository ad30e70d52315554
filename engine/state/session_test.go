package state

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func begin(t *testing.T, s *Store) *Outbox {
	t.Helper()
	o := s.Outbox("churn", "crm")
	if err := o.Begin(context.Background()); err != nil {
		t.Fatal(err)
	}
	return o
}

// Deliveries asked to be leased on Enqueue are handed to this session at
// once and never again by Lease; the next session gets them back.
func TestEnqueueLeasesAndTheNextSessionGetsThemBack(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	o := begin(t, s)
	now := time.UnixMilli(1_700_000_000_000)
	_, leased, err := o.Enqueue(ctx, []Delivery{
		{ID: "a", Endpoint: "e", Payload: []byte("A"), Lease: true},
		{ID: "b", Endpoint: "e", Payload: []byte("B")},
		{ID: "c", Endpoint: "e", OrderKey: "k", Payload: []byte("C"), Lease: true},                 // ordered: never leased at enqueue
		{ID: "d", Endpoint: "e", Payload: []byte("D"), Lease: true, NotBefore: now.Add(time.Hour)}, // not due
	}, now)
	if err != nil || fmt.Sprint(leased) != "[0]" {
		t.Fatalf("leased %v, %v; want [0]", leased, err)
	}
	// Enqueued again (a re-run): not new, so not leased.
	if _, again, _ := o.Enqueue(ctx, []Delivery{{ID: "a", Endpoint: "e", Payload: []byte("A"), Lease: true}}, now); len(again) != 0 {
		t.Fatalf("a re-enqueued delivery was leased again: %v", again)
	}
	got, _, err := o.Lease(ctx, now, 10, 0, nil)
	if err != nil || ids(got) != "[b c]" {
		t.Fatalf("lease: %s %v; want b and c (a is leased already)", ids(got), err)
	}
	// A crash: the next session hands out everything due again.
	o2 := begin(t, s)
	if got, _, _ := o2.Lease(ctx, now, 10, 0, nil); ids(got) != "[a b c]" {
		t.Fatalf("next session: %s", ids(got))
	}
}

func TestLeaseTakesAtMostPerEndpointAndSkipsIdleEndpointsCheaply(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	o := begin(t, s)
	now := time.UnixMilli(1_700_000_000_000)
	var ds []Delivery
	for i := range 6 {
		ds = append(ds, Delivery{ID: fmt.Sprintf("slow-%d", i), Endpoint: "slow", Payload: []byte("x")})
	}
	ds = append(ds, Delivery{ID: "fast-0", Endpoint: "fast", Payload: []byte("x")})
	if _, _, err := o.Enqueue(ctx, ds, now); err != nil {
		t.Fatal(err)
	}
	got, _, err := o.Lease(ctx, now, 10, 2, nil)
	if err != nil || ids(got) != "[slow-0 slow-1 fast-0]" {
		t.Fatalf("lease with 2 per endpoint: %s %v", ids(got), err)
	}
	// Every endpoint with work skipped: nothing, and no next due time.
	if err := o.Record(ctx, []sdk.Result{{ID: "fast-0", Outcome: sdk.Delivered, Attempt: sdk.Attempt{At: now, StatusCode: 200}}}, now); err != nil {
		t.Fatal(err)
	}
	if got, next, err := o.Lease(ctx, now, 10, 0, []string{"slow"}); err != nil || len(got) != 0 || !next.IsZero() {
		t.Fatalf("lease skipping the only endpoint with work: %s, next %v, %v", ids(got), next, err)
	}
}

// Progress counts what the session queued, delivered and dead-lettered and
// what the outbox holds, with circuits as the sink reported them; the
// summary lists the same per endpoint.
func TestProgressAndSummary(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	now := time.UnixMilli(1_700_000_000_000)
	// An earlier session left one pending delivery that had failed.
	old := begin(t, s)
	if _, _, err := old.Enqueue(ctx, []Delivery{{ID: "old", Endpoint: "https://a", Payload: []byte("x")}}, now); err != nil {
		t.Fatal(err)
	}
	old.Lease(ctx, now, 10, 0, nil)
	old.Record(ctx, []sdk.Result{{ID: "old", Outcome: sdk.Retry, Next: now, Attempt: sdk.Attempt{At: now, StatusCode: 503, Error: "503"}}}, now)

	o := begin(t, s)
	if p := o.Progress(); p.Pending != 1 || p.Retrying != 1 || p.Queued != 0 {
		t.Fatalf("at the start: %+v", p)
	}
	var ds []Delivery
	for i := range 4 {
		ds = append(ds, Delivery{ID: fmt.Sprint(i), Endpoint: "https://a", Payload: []byte("x"), Lease: true})
	}
	ds = append(ds, Delivery{ID: "b", Endpoint: "https://b", Payload: []byte("x"), Lease: true})
	if _, _, err := o.Enqueue(ctx, ds, now); err != nil {
		t.Fatal(err)
	}
	o.Lease(ctx, now, 10, 0, nil) // "old"
	res := []sdk.Result{
		{ID: "0", Outcome: sdk.Delivered, Attempt: sdk.Attempt{At: now, StatusCode: 200}},
		{ID: "1", Outcome: sdk.Retry, Next: now.Add(time.Minute), Attempt: sdk.Attempt{At: now, StatusCode: 503, Error: "503"}},
		{ID: "2", Outcome: sdk.Dead, Attempt: sdk.Attempt{At: now, StatusCode: 400, Error: "400"}},
		{ID: "old", Outcome: sdk.Delivered, Prior: 1, Attempt: sdk.Attempt{At: now, StatusCode: 200}},
		{ID: "b", Outcome: sdk.Dead, Attempt: sdk.Attempt{At: now, StatusCode: 410, Error: "410"}},
	}
	if err := o.Record(ctx, res, now); err != nil {
		t.Fatal(err)
	}
	until := now.Add(30 * time.Second)
	if err := o.SetCircuits(ctx, []sdk.Circuit{
		{Endpoint: "https://a", State: sdk.CircuitOpen, Until: until, Reason: "nothing accepted since 12:00"},
		{Endpoint: "https://b", State: sdk.CircuitDisabled, Reason: "it answered 410 Gone"},
	}, now); err != nil {
		t.Fatal(err)
	}
	p := o.Progress()
	if p.Queued != 5 || p.Delivered != 2 || p.Dead != 2 || p.Pending != 2 || p.Retrying != 1 || len(p.Circuits) != 2 {
		t.Fatalf("progress %+v; want queued 5, delivered 2, dead 2, pending 2 (1 retrying), 2 circuits", p)
	}
	sum, err := s.Summary(ctx, DeliveryFilter{Pipeline: "churn"})
	if err != nil || len(sum) != 2 {
		t.Fatalf("summary %+v %v", sum, err)
	}
	a, b := sum[0], sum[1]
	if a.Endpoint != "https://a" || a.Pending != 2 || a.Retrying != 1 || a.Delivered != 2 || a.Dead != 1 ||
		a.Circuit != "open" || a.CircuitUntil == nil || !a.CircuitUntil.Equal(until) || a.OldestPending == nil {
		t.Errorf("endpoint a: %+v", a)
	}
	if b.Endpoint != "https://b" || b.Dead != 1 || b.Circuit != "disabled" || b.OldestPending != nil {
		t.Errorf("endpoint b: %+v", b)
	}
	// Closing a circuit forgets it; a new session forgets them all.
	o.SetCircuits(ctx, []sdk.Circuit{{Endpoint: "https://a", State: sdk.CircuitClosed}}, now)
	if cs, _ := s.Circuits(ctx); len(cs) != 1 || cs[0].Endpoint != "https://b" {
		t.Errorf("circuits after closing a: %+v", cs)
	}
	begin(t, s)
	if cs, _ := s.Circuits(ctx); len(cs) != 0 {
		t.Errorf("circuits after a new session: %+v", cs)
	}
}

// A group of results is one write; a result for a delivery that is not in
// the outbox is reported by name, and the others are stored.
func TestRecordManyInOneWrite(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	o := begin(t, s)
	now := time.UnixMilli(1_700_000_000_000)
	var ds []Delivery
	var rs []sdk.Result
	for i := range 500 {
		id := fmt.Sprint(i)
		ds = append(ds, Delivery{ID: id, Endpoint: "e", Payload: []byte("x"), Lease: true})
		rs = append(rs, sdk.Result{ID: id, Outcome: sdk.Delivered, Attempt: sdk.Attempt{At: now, StatusCode: 200}})
	}
	if _, leased, err := o.Enqueue(ctx, ds, now); err != nil || len(leased) != 500 {
		t.Fatal(len(leased), err)
	}
	rs = append(rs, sdk.Result{ID: "nope", Outcome: sdk.Delivered})
	err := o.Record(ctx, rs, now)
	if err == nil || !contains(err.Error(), "nope") {
		t.Fatalf("Record = %v, want it to name the unknown delivery", err)
	}
	if p, _, _, _ := o.Pending(ctx); p != 0 {
		t.Fatalf("%d pending after recording all", p)
	}
	list, _ := s.Deliveries(ctx, DeliveryFilter{Pipeline: "churn", Status: StatusDelivered}, 1000)
	if len(list) != 500 || len(list[0].Log) != 1 {
		t.Fatalf("%d delivered, log %+v", len(list), list[0].Log)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
