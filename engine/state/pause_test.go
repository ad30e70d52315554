package state_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

var crm = state.SinkKey{Pipeline: "churn", Sink: "crm"}

func TestPauseSinkIsDurableAndIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := state.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	first := time.UnixMilli(1_700_000_000_000).UTC()
	if err := s.PauseSink(ctx, "churn", "crm", first); err != nil {
		t.Fatal(err)
	}
	if err := s.PauseSink(ctx, "churn", "crm", first.Add(time.Hour)); err != nil {
		t.Fatalf("pausing again: %v", err)
	}
	if err := s.PauseSink(ctx, "churn", "", first); err == nil {
		t.Fatal("a pause without a sink name was accepted")
	}
	s.Close()

	s, err = state.Open(path) // a restart
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.PausedSinks(ctx)
	if err != nil || len(got) != 1 || !got[crm].Equal(first) {
		t.Fatalf("after a restart: %v %v; want crm paused at %v (the first pause)", got, err, first)
	}
	for range 2 {
		if err := s.ResumeSink(ctx, "churn", "crm"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ResumeSink(ctx, "churn", "never-paused"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PausedSinks(ctx); err != nil || len(got) != 0 {
		t.Fatalf("after resume: %v %v", got, err)
	}
}

// A paused outbox takes every delivery (nothing is lost, the batch may be
// acked) and hands out none, neither at enqueue nor by Lease; a resume
// through the same store is seen by the next lease, cache or not.
func TestPausedOutboxStoresButLeasesNothing(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	svc, err := state.NewService(ctx, s, "churn", "crm")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	o := svc.Outbox()
	now := time.Now()
	if p, _ := o.Paused(ctx); p {
		t.Fatal("paused before any pause")
	}
	if err := s.PauseSink(ctx, "churn", "crm", now); err != nil {
		t.Fatal(err)
	}
	added, leased, err := o.Enqueue(ctx, []state.Delivery{{ID: "a", Payload: []byte("A"), Lease: true}, {ID: "b", Payload: []byte("B"), Lease: true}}, now)
	if err != nil || added != 2 || len(leased) != 0 {
		t.Fatalf("enqueue while paused: added %d, leased %v, %v; want 2 stored, none leased", added, leased, err)
	}
	got, next, err := o.Lease(ctx, now, 10, 0, nil)
	if err != nil || len(got) != 0 || !next.Equal(now.Add(time.Second)) {
		t.Fatalf("lease while paused: %d deliveries, next %v, %v; want none, next in 1s", len(got), next.Sub(now), err)
	}
	resp, err := svc.Pending(ctx, &pluginv1.PendingRequest{})
	if err != nil || !resp.Paused || resp.Pending != 2 {
		t.Fatalf("Pending: %+v %v; want paused with 2 pending", resp, err)
	}
	if pr, err := svc.Paused(ctx, &pluginv1.PausedRequest{}); err != nil || !pr.Paused {
		t.Fatalf("Paused: %+v %v", pr, err)
	}
	if st, err := o.SDK().Pending(ctx); err != nil || !st.Paused || st.Pending != 2 {
		t.Fatalf("sdk Pending: %+v %v", st, err)
	}
	if p := o.Progress(); !p.Paused || p.Pending != 2 {
		t.Fatalf("progress: %+v; want paused, 2 pending", p)
	}

	if err := s.ResumeSink(ctx, "churn", "crm"); err != nil {
		t.Fatal(err)
	}
	got, _, err = o.Lease(ctx, now, 10, 0, nil)
	if err != nil || ids(got) != "[a b]" {
		t.Fatalf("lease right after resume: %s %v", ids(got), err)
	}
	if resp, _ := svc.Pending(ctx, &pluginv1.PendingRequest{}); resp.Paused {
		t.Fatal("Pending still says paused after resume")
	}
	if p := o.Progress(); p.Paused {
		t.Fatalf("progress after resume: %+v", p)
	}
}

func ids(ds []state.Delivery) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.ID)
	}
	return fmt.Sprint(s)
}

// A pause set by another process (here: another connection writing the
// row, as `pipeline pause` does) is seen within the session's cache time,
// and so is its resume.
func TestPauseFromAnotherProcessIsSeenWithinHalfASecond(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := state.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	o := s.Outbox("churn", "crm")
	if err := o.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Enqueue(ctx, []state.Delivery{{ID: "a", Payload: []byte("A")}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if p, err := o.Paused(ctx); p || err != nil {
		t.Fatalf("paused %v %v", p, err)
	}
	read := time.Now()
	if _, err := other.Exec(`INSERT INTO paused_sinks (pipeline, sink, paused_at) VALUES ('churn', 'crm', 1)`); err != nil {
		t.Fatal(err)
	}
	if p, _ := o.Paused(ctx); p && time.Since(read) < 300*time.Millisecond {
		t.Fatal("the flag was read again at once: it is not cached")
	}
	waitUntil(t, "the other process's pause", time.Second, func() bool { p, _ := o.Paused(ctx); return p })
	if got, _, _ := o.Lease(ctx, time.Now(), 10, 0, nil); len(got) != 0 {
		t.Fatalf("leased %s while paused", ids(got))
	}
	if _, err := other.Exec(`DELETE FROM paused_sinks`); err != nil {
		t.Fatal(err)
	}
	var got []state.Delivery
	waitUntil(t, "a lease after the other process's resume", time.Second, func() bool {
		got, _, _ = o.Lease(ctx, time.Now(), 10, 0, nil)
		return len(got) == 1
	})
}

func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The delivery loop over a paused sink: a drain (the end of a run) stops
// waiting and sends nothing; after resume everything goes out.
func TestDelivererOverAPausedSink(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if err := s.PauseSink(ctx, "churn", "crm", time.Now()); err != nil {
		t.Fatal(err)
	}
	tr := newTransport(nil)
	d := run(t, s, tr, delivery.Options{Retry: sched(t, 0)})
	enqueue(t, d, rec{id: "a"}, rec{id: "b"}, rec{id: "c"})
	start := time.Now()
	drain(t, d)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("drain of a paused sink took %v", took)
	}
	if p, dead, err := d.Pending(ctx); p != 3 || dead != 0 || err != nil || len(tr.log()) != 0 {
		t.Fatalf("after the drain: pending %d, dead %d, %v, %d sent; want 3 pending, none sent", p, dead, err, len(tr.log()))
	}
	if err := s.ResumeSink(ctx, "churn", "crm"); err != nil {
		t.Fatal(err)
	}
	drain(t, d)
	if p, _, _ := d.Pending(ctx); p != 0 || len(tr.log()) != 3 {
		t.Fatalf("after resume: pending %d, %d sent", p, len(tr.log()))
	}
}

// A sink paused while it holds a backlog leased in memory hands back what
// it has not started: only the attempts under way finish, nothing more is
// sent until it is resumed, then each delivery goes out exactly once.
func TestDelivererHandsBackItsBacklogWhenPaused(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	tr := newTransport(nil)
	tr.hold = 30 * time.Millisecond
	d := run(t, s, tr, delivery.Options{Retry: sched(t, 0), Concurrency: 1})
	var recs []rec
	for i := range 100 {
		recs = append(recs, rec{id: fmt.Sprintf("r%03d", i), endpoint: "slow"})
	}
	enqueue(t, d, recs...) // leased at enqueue: the backlog is in the loop's memory
	waitUntil(t, "the first send", 5*time.Second, func() bool { return len(tr.log()) > 0 })
	if err := s.PauseSink(ctx, "churn", "crm", time.Now()); err != nil {
		t.Fatal(err)
	}
	// The loop checks every half second; one send may be under way.
	time.Sleep(time.Second)
	sentAtPause := len(tr.log())
	time.Sleep(time.Second)
	if n := len(tr.log()); n != sentAtPause || n > 60 {
		t.Fatalf("sends went on while paused: %d a second after the pause, %d a second later (of 100)", sentAtPause, n)
	}
	page, err := s.DeliveryPage(ctx, state.DeliveryFilter{Pipeline: "churn", Sink: "crm", Status: state.StatusPending}, "", 500)
	if err != nil || len(page.Deliveries) != 100-sentAtPause {
		t.Fatalf("pending while paused: %d, %v; want %d", len(page.Deliveries), err, 100-sentAtPause)
	}
	if err := s.ResumeSink(ctx, "churn", "crm"); err != nil {
		t.Fatal(err)
	}
	drain(t, d)
	seen := map[string]int{}
	for _, x := range tr.log() {
		seen[x.id]++
	}
	for _, r := range recs {
		if seen[r.id] != 1 {
			t.Fatalf("%s sent %d times", r.id, seen[r.id])
		}
	}
}
