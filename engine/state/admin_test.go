package state

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// adminFixture fills a store with deliveries of two sinks of two pipelines:
// every delivery is enqueued at its own time (some share a millisecond),
// some are leased and recorded, with attempts.
func adminFixture(t *testing.T) (*Store, time.Time) {
	t.Helper()
	ctx := context.Background()
	s := openStore(t)
	base := time.UnixMilli(1_700_000_000_000)
	for _, k := range []SinkKey{{"churn", "crm"}, {"churn", "slack"}, {"billing", "crm"}} {
		o := s.Outbox(k.Pipeline, k.Sink)
		if err := o.Begin(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			// Two deliveries per millisecond: the rowid breaks the tie.
			at := base.Add(time.Duration(i/2) * time.Millisecond)
			payload := append([]byte{0, 0, 0, 7}, fmt.Sprintf(`{"text":"Hello %s %d","customer":"CUST_%02d"}`, k.Sink, i, i)...)
			d := Delivery{ID: fmt.Sprintf("row_%02d", i), Endpoint: "https://" + k.Sink + ".example.com/hook", Payload: payload, Lease: true}
			if _, _, err := o.Enqueue(ctx, []Delivery{d}, at); err != nil {
				t.Fatal(err)
			}
		}
		// row_03 retries once, then goes dead; row_04 is delivered.
		later := base.Add(time.Second)
		if err := o.Record(ctx, []sdk.Result{{ID: "row_03", Outcome: sdk.Retry, Next: later,
			Attempt: sdk.Attempt{At: later, StatusCode: 503, Error: "503 Service Unavailable"}}}, later); err != nil {
			t.Fatal(err)
		}
		later = later.Add(time.Second)
		if err := o.Record(ctx, []sdk.Result{
			{ID: "row_03", Outcome: sdk.Dead, Prior: 1, Attempt: sdk.Attempt{At: later, StatusCode: 422, Error: "422 Unprocessable: Bad Customer"}},
			{ID: "row_04", Outcome: sdk.Delivered, Attempt: sdk.Attempt{At: later, StatusCode: 200, Response: []byte("ok")}},
		}, later); err != nil {
			t.Fatal(err)
		}
	}
	return s, base
}

func pageIDs(ds []DeliveryRecord) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Pipeline+"/"+d.Sink+"/"+d.ID)
	}
	return out
}

// Paging with any limit walks every delivery once, in the order of
// Deliveries (newest change first, the rowid breaking ties), each with its
// attempts, and ends with an empty Next.
func TestDeliveryPageWalksEverythingInOrder(t *testing.T) {
	ctx := context.Background()
	s, _ := adminFixture(t)
	for _, f := range []DeliveryFilter{{}, {Pipeline: "churn"}, {Pipeline: "churn", Sink: "crm", Status: StatusPending}, {Status: StatusDead}} {
		all, err := s.Deliveries(ctx, f, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, limit := range []int{1, 3, 7, 1000} {
			var got []DeliveryRecord
			cursor, pages := "", 0
			for {
				p, err := s.DeliveryPage(ctx, f, cursor, limit)
				if err != nil {
					t.Fatalf("%+v limit %d: %v", f, limit, err)
				}
				pages++
				if len(p.Deliveries) > limit {
					t.Fatalf("a page of %d with limit %d", len(p.Deliveries), limit)
				}
				got = append(got, p.Deliveries...)
				if p.Next == "" {
					break
				}
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				cursor = p.Next
			}
			if !slices.Equal(pageIDs(got), pageIDs(all)) {
				t.Fatalf("%+v limit %d:\n pages %v\n  list %v", f, limit, pageIDs(got), pageIDs(all))
			}
			if want := (len(all) + limit - 1) / limit; pages != max(1, want) {
				t.Errorf("%+v limit %d: %d pages for %d deliveries", f, limit, pages, len(all))
			}
			for i := range got {
				if len(got[i].Log) != len(all[i].Log) {
					t.Fatalf("%s: %d attempts in the page, %d in the list", got[i].ID, len(got[i].Log), len(all[i].Log))
				}
			}
		}
	}
	p, err := s.DeliveryPage(ctx, DeliveryFilter{Status: StatusDead}, "", 0)
	if err != nil || len(p.Deliveries) != 3 || p.Next != "" {
		t.Fatalf("dead: %v %v", pageIDs(p.Deliveries), err)
	}
	d := p.Deliveries[0]
	if d.Status != StatusDead || len(d.Log) != 2 || d.Log[0].N != 1 || d.Log[0].StatusCode != 503 || d.Log[1].StatusCode != 422 {
		t.Fatalf("dead delivery %+v", d)
	}
	if p, err := s.DeliveryPage(ctx, DeliveryFilter{Pipeline: "nope"}, "", 10); err != nil || p.Deliveries == nil || len(p.Deliveries) != 0 || p.Next != "" {
		t.Fatalf("empty page: %+v %v", p, err)
	}
}

func TestDeliveryPageRejectsBadCursors(t *testing.T) {
	s, _ := adminFixture(t)
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, c := range []string{"garbage!", "bm9wZQ", enc("2.1.1"), enc("1.x.1"), enc("1.1"), enc("1.1.0"), enc("1.1.1.1"), "MS4xLjE="} {
		_, err := s.DeliveryPage(context.Background(), DeliveryFilter{}, c, 10)
		if !errors.Is(err, ErrBadCursor) {
			t.Errorf("cursor %q: %v; want ErrBadCursor", c, err)
		}
	}
	if _, err := s.DeliveryPage(context.Background(), DeliveryFilter{Status: "weird"}, "", 10); err == nil {
		t.Error("a bad status was accepted")
	}
}

// Q matches the id, the endpoint, the last error and the payload (behind
// NUL bytes too), ignoring ASCII case, in every query that takes a filter.
func TestDeliveryFilterQ(t *testing.T) {
	ctx := context.Background()
	s, base := adminFixture(t)
	for q, want := range map[string]int{
		"ROW_07":         3, // id
		"slack.EXAMPLE":  10,
		"bad customer":   3, // last_error
		"cust_05":        3, // payload, after NUL bytes
		`"text":"hello`:  30,
		"hello slack 9":  1,
		"no such thing":  0,
		"%":              0, // not a LIKE pattern
		"_":              30,
		"Service Unavai": 0, // the 503 was not the last error
	} {
		got, err := s.Deliveries(ctx, DeliveryFilter{Q: q}, 100)
		if err != nil || len(got) != want {
			t.Errorf("Q %q: %d deliveries (%v), want %d", q, len(got), err, want)
		}
		p, err := s.DeliveryPage(ctx, DeliveryFilter{Q: q}, "", 100)
		if err != nil || len(p.Deliveries) != want {
			t.Errorf("Q %q: a page of %d (%v), want %d", q, len(p.Deliveries), err, want)
		}
	}
	n, err := s.Replay(ctx, DeliveryFilter{Pipeline: "churn", Status: StatusDead, Q: "BAD CUSTOMER"}, base.Add(time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("replay with Q: %d %v; want the 2 dead of churn", n, err)
	}
	if n, _ := s.Replay(ctx, DeliveryFilter{Status: StatusDead, Q: "nothing like it"}, base.Add(time.Hour)); n != 0 {
		t.Fatalf("replay with a Q that matches nothing queued %d", n)
	}
}

func TestDeliveryAndDeliveriesByID(t *testing.T) {
	ctx := context.Background()
	s, _ := adminFixture(t)
	d, err := s.Delivery(ctx, "churn", "slack", "row_03")
	if err != nil || d.Status != StatusDead || len(d.Log) != 2 || d.Endpoint != "https://slack.example.com/hook" {
		t.Fatalf("delivery: %+v %v", d, err)
	}
	if _, err := s.Delivery(ctx, "churn", "slack", "row_99"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing delivery: %v; want ErrNotFound", err)
	}
	list, err := s.DeliveriesByID(ctx, "row_04")
	if err != nil || strings.Join(pageIDs(list), " ") != "billing/crm/row_04 churn/crm/row_04 churn/slack/row_04" {
		t.Fatalf("by id: %v %v", pageIDs(list), err)
	}
	for _, d := range list {
		if d.Status != StatusDelivered || len(d.Log) != 1 || string(d.Log[0].Response) != "ok" {
			t.Fatalf("by id: %+v", d)
		}
	}
	if list, err := s.DeliveriesByID(ctx, "row_99"); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("by an unknown id: %v %v", list, err)
	}
	empty := openStore(t)
	if list, err := empty.DeliveriesByID(ctx, "row_04"); err != nil || len(list) != 0 {
		t.Fatalf("in an empty store: %v %v", list, err)
	}
}

// A sink's pages (of the dead letter, of everything, of the delivered) and a
// replay of a sink's dead deliveries read an index in order: no scan of the
// table, no sort. (A page of several sinks is one of these per sink.) And
// the outbox's own queries keep their partial indexes: deliveries_by_change
// would read every delivery of the sink.
func TestDeliveryQueriesUseTheirIndexes(t *testing.T) {
	ctx := context.Background()
	s, _ := adminFixture(t)
	plan := func(q string, args ...any) string {
		t.Helper()
		rows, err := s.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			b.WriteString(detail + "; ")
		}
		return b.String()
	}
	scans := func(p string) bool {
		return strings.Contains(p, "SCAN deliveries") || strings.Contains(p, "SCAN d;") || strings.Contains(p, "SCAN d ")
	}
	crm := SinkKey{"churn", "crm"}
	for _, tc := range []struct {
		f      DeliveryFilter
		cursor bool
		index  string
	}{
		{DeliveryFilter{Status: StatusDead}, false, "deliveries_dead_changed"},
		{DeliveryFilter{Status: StatusDead}, true, "deliveries_dead_changed"},
		{DeliveryFilter{Pipeline: "churn", Sink: "crm", Status: StatusDead, Since: time.UnixMilli(1)}, true, "deliveries_dead_changed"},
		{DeliveryFilter{}, false, "deliveries_by_change"},
		{DeliveryFilter{Pipeline: "churn"}, true, "deliveries_by_change"},
		{DeliveryFilter{Status: StatusDelivered, Q: "x"}, true, "deliveries_by_change"},
	} {
		var after *pageKey
		if tc.cursor {
			after = &pageKey{updated: 1, rowid: 1}
		}
		q, args, err := pageStatement(tc.f, crm, after, 51)
		if err != nil {
			t.Fatal(err)
		}
		if p := plan(q, args...); !strings.Contains(p, tc.index) || strings.Contains(p, "TEMP B-TREE") || scans(p) {
			t.Errorf("page %+v (cursor %v): %s; want %s, no sort", tc.f, tc.cursor, p, tc.index)
		}
	}
	where, args, _ := DeliveryFilter{Pipeline: "churn", Sink: "crm", Status: StatusDead}.where()
	if p := plan(`UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?, updated_at = ? WHERE `+where+` AND status != 'pending' AND pruned_at = 0`,
		append([]any{1, 1}, args...)...); !strings.Contains(p, "deliveries_dead_changed") {
		t.Errorf("replay: %s", p)
	}
	if p := plan(`SELECT pipeline, sink, id, n FROM attempts WHERE (pipeline, sink, id) IN (VALUES (?, ?, ?), (?, ?, ?)) ORDER BY pipeline, sink, id, n`,
		"a", "b", "c", "d", "e", "f"); !strings.Contains(p, "attempts_by_delivery") {
		t.Errorf("attempts of a page: %s", p)
	}
	// Copies of the outbox's own queries (Pending, Begin, the prunes).
	for _, q := range []string{
		`SELECT (SELECT COUNT(*) FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'pending'),
			(SELECT COUNT(*) FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'dead'),
			(SELECT MIN(next_at) FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'pending')`,
		`SELECT endpoint, COUNT(*), COALESCE(SUM(attempts > 0), 0) FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'pending' GROUP BY endpoint`,
		`SELECT rowid, id FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'dead' AND updated_at < 5 LIMIT 5`,
		`SELECT rowid FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'delivered' AND pruned_at = 0 AND updated_at < 5 LIMIT 5`,
		`SELECT d.rowid FROM deliveries d WHERE d.pipeline = ?1 AND d.sink = ?2 AND d.status = 'pending' AND d.leased = 0 AND d.next_at <= 5 ORDER BY d.next_at, d.rowid LIMIT 5`,
	} {
		if p := plan(q, "churn", "crm"); strings.Contains(p, "deliveries_by_change") || scans(p) {
			t.Errorf("%s\n  reads %s", q, p)
		}
	}
}

// Opening a state file made before the admin indexes replaces the old
// index of dead deliveries; opening it again changes nothing.
func TestAdminIndexesMigrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`DROP INDEX deliveries_dead_changed; DROP INDEX deliveries_by_change; DROP TABLE paused_sinks;
		CREATE INDEX deliveries_dead ON deliveries (pipeline, sink) WHERE status = 'dead'`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for range 2 {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		rows, err := s.db.Query(`SELECT name FROM sqlite_master WHERE name IN ('deliveries_dead', 'deliveries_dead_changed', 'deliveries_by_change', 'paused_sinks') ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var n string
			rows.Scan(&n)
			names = append(names, n)
		}
		rows.Close()
		s.Close()
		if fmt.Sprint(names) != "[deliveries_by_change deliveries_dead_changed paused_sinks]" {
			t.Fatalf("after open: %v", names)
		}
	}
}

// The benchmarks' store: 1,000,000 deliveries over 2 pipelines × 2 sinks
// (250,000 each), 10% dead (10,000 in p0/s0, 30,000 in each other sink),
// 1% pending, the rest delivered, each with 1 to 3 attempts (2,000,000),
// last changed at distinct times in an order unrelated to the rowid. Built
// once per test binary run, in one transaction, in a temporary directory.
var bench struct {
	once sync.Once
	dir  string
	s    *Store
	err  error
}

const (
	benchRows   = 1_000_000
	benchBaseMs = 1_700_000_000_000
)

func benchStore(b *testing.B) *Store {
	b.Helper()
	bench.once.Do(func() {
		start := time.Now()
		bench.dir, bench.err = os.MkdirTemp("", "pipeline-state-bench-")
		if bench.err != nil {
			return
		}
		bench.s, bench.err = Open(filepath.Join(bench.dir, "state.db"))
		if bench.err != nil {
			return
		}
		bench.err = buildBenchFixture(bench.s)
		b.Logf("fixture: %d deliveries built in %v", benchRows, time.Since(start).Round(time.Millisecond))
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.s
}

func buildBenchFixture(s *Store) error {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// i: the row; i % 4: its sink; k = i / 4: its place in the sink.
	const seq = `WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?1),
		rows AS (SELECT i, 'p' || (i % 2) AS pipeline, 's' || ((i / 2) % 2) AS sink, printf('row_%07d', i) AS id,
			CASE WHEN (i % 4 = 0 AND (i / 4) % 25 = 0) OR (i % 4 != 0 AND (i / 4) % 25 < 3) THEN 'dead'
			     WHEN (i / 4) % 100 = 99 THEN 'pending' ELSE 'delivered' END AS status,
			?2 + ((i * 7919) % ?1) * 1000 AS updated, 1 + i % 3 AS n
			FROM seq)`
	if _, err := tx.ExecContext(ctx, seq+`
		INSERT INTO deliveries (pipeline, sink, id, endpoint, order_key, payload, status, attempts, next_at, leased, created_at, updated_at, last_code, last_error)
		SELECT pipeline, sink, id, 'https://' || sink || '.example.com/hook', '',
			CAST(printf('{"event":"classification.completed","row_id":"%s","text":"I want to cancel, I found a better deal with Telia","customer_id":"cust_%d"}', id, i) AS BLOB),
			status, n, updated, 0, updated - 3000, updated,
			CASE status WHEN 'delivered' THEN 200 WHEN 'dead' THEN 422 ELSE 503 END,
			CASE status WHEN 'delivered' THEN '' WHEN 'dead' THEN '422 Unprocessable Entity' ELSE '503 Service Unavailable' END
		FROM rows`, benchRows, int64(benchBaseMs)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, seq+`, k(n) AS (VALUES (1), (2), (3))
		INSERT INTO attempts (pipeline, sink, id, n, at, status_code, latency_ms, error, response)
		SELECT pipeline, sink, id, k.n, updated - (rows.n - k.n) * 1000,
			CASE WHEN k.n = rows.n AND status = 'delivered' THEN 200 WHEN k.n = rows.n AND status = 'dead' THEN 422 ELSE 503 END,
			12, CASE WHEN k.n = rows.n AND status = 'delivered' THEN '' ELSE 'failed' END, NULL
		FROM rows JOIN k ON k.n <= rows.n`, benchRows, int64(benchBaseMs)); err != nil {
		return err
	}
	// No ANALYZE: a state file has no statistics, and the plans must hold
	// without them.
	return tx.Commit()
}

// TestMain removes the benchmarks' store, when one was built.
func TestMain(m *testing.M) {
	code := m.Run()
	if bench.s != nil {
		bench.s.Close()
	}
	if bench.dir != "" {
		os.RemoveAll(bench.dir)
	}
	os.Exit(code)
}

// budget fails a benchmark whose time per operation is over limit.
func budget(b *testing.B, start time.Time, limit time.Duration) {
	b.Helper()
	if per := time.Since(start) / time.Duration(b.N); per > limit {
		b.Errorf("%v per operation; the budget is %v", per, limit)
	}
}

// BenchmarkDeliveryPageDead1M: the first page of 50 of the dead letter of
// a 1M-delivery store (budget 50 ms), the page after it, and the first
// page of one sink's dead letter.
func BenchmarkDeliveryPageDead1M(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	first, err := s.DeliveryPage(ctx, DeliveryFilter{Status: StatusDead}, "", 50)
	if err != nil || len(first.Deliveries) != 50 || first.Next == "" {
		b.Fatalf("first page: %d %v", len(first.Deliveries), err)
	}
	for _, bc := range []struct {
		name   string
		f      DeliveryFilter
		cursor string
	}{
		{"first", DeliveryFilter{Status: StatusDead}, ""},
		{"second", DeliveryFilter{Status: StatusDead}, first.Next},
		{"sink", DeliveryFilter{Pipeline: "p1", Sink: "s1", Status: StatusDead}, ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				p, err := s.DeliveryPage(ctx, bc.f, bc.cursor, 50)
				if err != nil || len(p.Deliveries) != 50 || len(p.Deliveries[0].Log) == 0 {
					b.Fatalf("page: %d %v", len(p.Deliveries), err)
				}
			}
			budget(b, start, 50*time.Millisecond)
		})
	}
}

// BenchmarkReplay10kDead: replay the 10,000 dead deliveries of p0/s0
// (budget 2 s); each is made dead again, untimed, before the next.
func BenchmarkReplay10kDead(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	f := DeliveryFilter{Pipeline: "p0", Sink: "s0", Status: StatusDead}
	var took time.Duration
	i := int64(0)
	for b.Loop() {
		i++
		now := time.UnixMilli(benchBaseMs + 2*benchRows*1000 + i)
		start := time.Now()
		n, err := s.Replay(ctx, f, now)
		took += time.Since(start)
		if err != nil || n != 10_000 {
			b.Fatalf("replayed %d: %v", n, err)
		}
		b.StopTimer()
		if _, err := s.db.ExecContext(ctx, `UPDATE deliveries SET status = 'dead', attempts = 3, updated_at = ?2
			WHERE pipeline = 'p0' AND sink = 's0' AND status = 'pending' AND next_at = ?1 AND updated_at = ?1 AND attempts = 0`,
			ms(now), benchBaseMs+i); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	if per := took / time.Duration(b.N); per > 2*time.Second {
		b.Errorf("%v per replay of 10,000; the budget is 2s", per)
	}
}

// BenchmarkDeliveryQueries1M: the admin API's other queries on the same
// store, for reference (no budget): a first page of everything, of the
// delivered, of the pending, of a Q search, and a lookup by id.
func BenchmarkDeliveryQueries1M(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		f    DeliveryFilter
	}{
		{"all", DeliveryFilter{}},
		{"delivered", DeliveryFilter{Status: StatusDelivered}},
		{"pending", DeliveryFilter{Status: StatusPending}},
		{"sink-all", DeliveryFilter{Pipeline: "p1", Sink: "s0"}},
		{"q-rare", DeliveryFilter{Q: "cust_999999"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.DeliveryPage(ctx, bc.f, "", 50); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("by-id", func(b *testing.B) {
		for b.Loop() {
			list, err := s.DeliveriesByID(ctx, "row_0500001")
			if err != nil || len(list) != 1 {
				b.Fatalf("%d %v", len(list), err)
			}
		}
	})
	b.Run("one", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Delivery(ctx, "p1", "s0", "row_0500001"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
