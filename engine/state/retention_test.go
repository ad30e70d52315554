package state

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

const day = 24 * time.Hour

// row is what a test reads back of one delivery.
type row struct {
	status   string
	payload  int // bytes
	pruned   bool
	attempts int // entries in the log
}

func readRow(t *testing.T, s *Store, sink, id string) (row, bool) {
	t.Helper()
	var r row
	var pruned int64
	err := s.db.QueryRow(`SELECT status, length(payload), pruned_at FROM deliveries WHERE pipeline = 'churn' AND sink = ? AND id = ?`, sink, id).
		Scan(&r.status, &r.payload, &pruned)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false
	}
	if err != nil {
		t.Fatal(err)
	}
	r.pruned = pruned > 0
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM attempts WHERE pipeline = 'churn' AND sink = ? AND id = ?`, sink, id).Scan(&r.attempts); err != nil {
		t.Fatal(err)
	}
	return r, true
}

// settle enqueues ids at `at` and records one attempt each with outcome.
func settle(t *testing.T, o *Outbox, at time.Time, outcome sdk.Outcome, payload []byte, ids ...string) {
	t.Helper()
	ctx := context.Background()
	ds := make([]Delivery, len(ids))
	rs := make([]sdk.Result, len(ids))
	for i, id := range ids {
		ds[i] = Delivery{ID: id, Endpoint: "e", Payload: payload, Lease: true}
		rs[i] = sdk.Result{ID: id, Outcome: outcome, Attempt: sdk.Attempt{At: at, StatusCode: 500}, Next: at.Add(time.Hour)}
	}
	if _, _, err := o.Enqueue(ctx, ds, at); err != nil {
		t.Fatal(err)
	}
	if err := o.Record(ctx, rs, at); err != nil {
		t.Fatal(err)
	}
}

// Only what is past its retention goes: old delivered payloads (the rows
// stay, so their ids still dedupe), old log entries, dead deliveries not
// replayed for long; pending deliveries and their log are never touched.
func TestRetentionPrunesOnlyWhatIsPastIt(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	o := begin(t, s)
	now := time.UnixMilli(1_800_000_000_000)
	big := bytes.Repeat([]byte("x"), 10_000)
	settle(t, o, now.Add(-10*day), sdk.Delivered, big, "old-delivered")
	settle(t, o, now.Add(-2*day), sdk.Delivered, big, "new-delivered")
	settle(t, o, now.Add(-40*day), sdk.Dead, big, "old-dead")
	settle(t, o, now.Add(-20*day), sdk.Dead, big, "new-dead")
	settle(t, o, now.Add(-60*day), sdk.Retry, big, "old-pending") // still retrying
	settle(t, o, now.Add(-35*day), sdk.Delivered, big, "older-delivered")

	p, err := s.Prune(ctx, "churn", "crm", sdk.Retention{}, now, 0) // the defaults: 7d, 30d, 30d
	if err != nil {
		t.Fatal(err)
	}
	if want := (Pruned{Payloads: 2, Attempts: 1, Dead: 1}); p != want {
		t.Errorf("pruned %+v, want %+v", p, want)
	}
	for _, c := range []struct {
		id   string
		want row
		gone bool
	}{
		{id: "old-delivered", want: row{status: "delivered", payload: 0, pruned: true, attempts: 1}},
		{id: "older-delivered", want: row{status: "delivered", payload: 0, pruned: true, attempts: 0}},
		{id: "new-delivered", want: row{status: "delivered", payload: len(big), attempts: 1}},
		{id: "old-dead", gone: true},
		{id: "new-dead", want: row{status: "dead", payload: len(big), attempts: 1}},
		{id: "old-pending", want: row{status: "pending", payload: len(big), attempts: 1}},
	} {
		t.Run(c.id, func(t *testing.T) {
			got, ok := readRow(t, s, "crm", c.id)
			if c.gone {
				if ok {
					t.Fatalf("still there: %+v", got)
				}
				return
			}
			if !ok || got != c.want {
				t.Fatalf("got %+v (found %v), want %+v", got, ok, c.want)
			}
		})
	}
	// A pruned delivery still dedupes: enqueued again (a re-run), it is not new.
	if n, _, err := o.Enqueue(ctx, []Delivery{{ID: "old-delivered", Endpoint: "e", Payload: big}}, now); err != nil || n != 0 {
		t.Fatalf("re-enqueue of a pruned delivery added %d (%v), want 0", n, err)
	}
	// Replay sends what still has its payload, never an empty one.
	n, err := s.Replay(ctx, DeliveryFilter{Pipeline: "churn", Status: StatusDelivered}, now)
	if err != nil || n != 1 {
		t.Fatalf("replayed %d (%v), want 1 (new-delivered only)", n, err)
	}
	if r, _ := readRow(t, s, "crm", "old-delivered"); r.status != "delivered" {
		t.Fatalf("a pruned delivery was replayed: %+v", r)
	}
	recs, err := s.Deliveries(ctx, DeliveryFilter{ID: "old-delivered"}, 10)
	if err != nil || len(recs) != 1 || recs[0].Pruned == nil {
		t.Fatalf("deliveries does not say the payload was pruned: %+v %v", recs, err)
	}
	// Pruning again finds nothing more.
	if p, err := s.Prune(ctx, "churn", "crm", sdk.Retention{}, now, 0); err != nil || p != (Pruned{}) {
		t.Fatalf("second prune: %+v %v", p, err)
	}
}

// Dead deliveries stay replayable until their retention; a replayed one
// that dies again starts its retention over, and its log keeps numbering
// after the entries that are left.
func TestRetentionKeepsDeadUntilTheirRetention(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	o := begin(t, s)
	now := time.UnixMilli(1_800_000_000_000)
	r := sdk.Retention{Dead: 3 * day, Attempts: 2 * day}
	settle(t, o, now.Add(-2*day), sdk.Dead, []byte("p"), "d")
	if p, _ := s.Prune(ctx, "churn", "crm", r, now, 0); p.Dead != 0 {
		t.Fatalf("a dead delivery inside its retention was deleted: %+v", p)
	}
	if n, err := s.Replay(ctx, DeliveryFilter{Pipeline: "churn", Status: StatusDead}, now); err != nil || n != 1 {
		t.Fatalf("replay within retention: %d %v", n, err)
	}
	// It dies again a day later; its first attempt is past the log's
	// retention by then, so the prune deletes it but keeps the delivery.
	later := now.Add(day)
	if _, _, err := o.Lease(ctx, later, 10, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := o.Record(ctx, []sdk.Result{{ID: "d", Outcome: sdk.Dead, Attempt: sdk.Attempt{At: later, StatusCode: 400}}}, later); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Prune(ctx, "churn", "crm", r, later.Add(2*day), 0); p.Dead != 0 || p.Attempts != 1 {
		t.Fatalf("pruned %+v, want only the first attempt", p)
	}
	recs, _ := s.Deliveries(ctx, DeliveryFilter{ID: "d"}, 1)
	if len(recs) != 1 || len(recs[0].Log) != 1 || recs[0].Log[0].N != 2 {
		t.Fatalf("log after prune: %+v", recs)
	}
	if p, _ := s.Prune(ctx, "churn", "crm", r, later.Add(3*day+time.Second), 0); p.Dead != 1 {
		t.Fatalf("a dead delivery past its retention was kept: %+v", p)
	}
	if _, ok := readRow(t, s, "crm", "d"); ok {
		t.Fatal("the dead delivery is still there")
	}
}

// Pruning works in transactions of at most the batch size, so that it
// never holds the write lock for long, and only touches its own sink.
func TestRetentionBatchesAreBounded(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	o := begin(t, s)
	other := s.Outbox("churn", "slack")
	if err := other.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_800_000_000_000)
	const n, batch = 2_345, 100
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("r%05d", i)
	}
	settle(t, o, now.Add(-40*day), sdk.Delivered, []byte("payload"), ids...)
	settle(t, other, now.Add(-40*day), sdk.Delivered, []byte("payload"), ids[:10]...)
	var txs []int64
	s.pruners.onTx = func(rows int64) { txs = append(txs, rows) }
	p, err := s.Prune(ctx, "churn", "crm", sdk.Retention{}, now, batch)
	s.pruners.onTx = nil
	if err != nil {
		t.Fatal(err)
	}
	if p.Payloads != n || p.Attempts != n {
		t.Fatalf("pruned %+v, want %d payloads and attempts", p, n)
	}
	var sum int64
	for _, rows := range txs {
		if rows > batch {
			t.Fatalf("a prune transaction changed %d rows, more than %d", rows, batch)
		}
		sum += rows
	}
	if sum != 2*n || len(txs) < 2*n/batch {
		t.Fatalf("%d transactions changed %d rows", len(txs), sum)
	}
	if r, _ := readRow(t, s, "slack", ids[0]); r.pruned || r.attempts != 1 {
		t.Fatalf("another sink's outbox was pruned: %+v", r)
	}
}

// The sink's retention arrives over the protocol, is stored, and the
// session prunes with it at once, in the background, and stops with the
// session.
func TestRetentionSetBySinkPrunesInTheBackground(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	now := time.UnixMilli(1_800_000_000_000)
	settle(t, begin(t, s), now.Add(-2*day), sdk.Delivered, []byte("payload"), "a")

	clock := func() time.Time { return now }
	svc, err := NewServicePruning(ctx, s, "churn", "crm", Pruning{First: time.Hour, Every: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if r, stored, _ := s.Retention(ctx, "churn", "crm"); stored || r != sdk.DefaultRetention {
		t.Fatalf("retention before the sink sets one: %+v %v, want the defaults", r, stored)
	}
	if _, err := svc.SetRetention(ctx, &pluginv1.SetRetentionRequest{DeliveredMs: day.Milliseconds()}); err != nil {
		t.Fatal(err)
	}
	want := sdk.Retention{Delivered: day, Attempts: sdk.DefaultRetention.Attempts, Dead: sdk.DefaultRetention.Dead}
	if r, stored, _ := s.Retention(ctx, "churn", "crm"); !stored || r != want {
		t.Fatalf("stored retention %+v %v, want %+v", r, stored, want)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _ := readRow(t, s, "crm", "a"); r.pruned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session did not prune after the sink set its retention")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := svc.SetRetention(ctx, &pluginv1.SetRetentionRequest{DeadMs: -1}); err == nil {
		t.Fatal("a negative retention was accepted")
	}
	svc.Close()
	// A second session of the same sink replaces the first one's pruner.
	svc2, err := NewServicePruning(ctx, s, "churn", "crm", Pruning{First: time.Hour, Every: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	svc3, err := NewServicePruning(ctx, s, "churn", "crm", Pruning{First: time.Hour, Every: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	s.pruners.mu.Lock()
	running := len(s.pruners.running)
	s.pruners.mu.Unlock()
	if running != 1 {
		t.Fatalf("%d pruners for one sink", running)
	}
	svc2.Close() // no longer the running one: does nothing
	svc3.Close()
}

// Vacuum prunes with the stored retention and gives the space back; it
// refuses at once while another process writes to the file or runs one of
// its pipelines.
func TestRetentionVacuum(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	o := begin(t, s)
	now := time.Now()
	big := bytes.Repeat([]byte("y"), 1<<20)
	settle(t, o, now.Add(-8*day), sdk.Delivered, big, "a", "b", "c", "d")
	settle(t, o, now.Add(-8*day), sdk.Dead, big, "dead")
	settle(t, o, now.Add(-8*day), sdk.Retry, big, "pending")
	if err := s.SetRetention(ctx, "churn", "crm", sdk.Retention{Dead: 9 * day}, now); err != nil {
		t.Fatal(err)
	}
	res, err := s.Vacuum(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Pruned{Payloads: 4, Attempts: 0, Dead: 0}); res.Pruned != want {
		t.Errorf("pruned %+v, want %+v", res.Pruned, want)
	}
	if res.BytesAfter >= res.BytesBefore || res.BytesAfter > 3<<20 {
		t.Errorf("state file %d → %d bytes: want it to shrink below 3 MiB (two payloads of 1 MiB stay)", res.BytesBefore, res.BytesAfter)
	}
	for _, id := range []string{"dead", "pending"} {
		if r, ok := readRow(t, s, "crm", id); !ok || r.payload != len(big) {
			t.Errorf("%s: %+v", id, r)
		}
	}

	t.Run("busy", func(t *testing.T) {
		other, err := sql.Open("sqlite", "file:"+s.Path()+"?_pragma=busy_timeout(0)")
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		tx, err := other.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.Exec(`UPDATE retention SET updated_at = updated_at`); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Vacuum(ctx, now); !errors.Is(err, ErrBusy) {
			t.Fatalf("vacuum while another process writes: %v, want ErrBusy", err)
		}
		tx.Rollback()
		if _, err := s.Vacuum(ctx, now); err != nil {
			t.Fatalf("vacuum once the writer is done: %v", err)
		}
	})
	t.Run("running", func(t *testing.T) {
		l, err := LockPipeline(s.Path(), "churn")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var locked *LockedError
		if _, err := s.Vacuum(ctx, now); !errors.As(err, &locked) {
			t.Fatalf("vacuum while the pipeline runs: %v, want a LockedError", err)
		}
	})
}
