package sinkbigquery

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// storeSchema adds a column with a non-ASCII name and a JSON column to
// the orders.
var storeSchema = arrow.NewSchema(append(append([]arrow.Field(nil), ordersSchema.Fields()...),
	arrow.Field{Name: "prénom", Type: arrow.BinaryTypes.String, Nullable: true},
	arrow.Field{Name: "payload", Type: arrow.StructOf(arrow.Field{Name: "a", Type: arrow.PrimitiveTypes.Int64, Nullable: true}), Nullable: true},
	arrow.Field{Name: "items", Type: arrow.ListOf(arrow.StructOf(
		arrow.Field{Name: "sku", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "qty", Type: arrow.PrimitiveTypes.Int64, Nullable: true})), Nullable: true},
), nil)

const storeBatch = `[
 {"_pipeline_id":"r1","order_id":1,"amount":9.5,"paid":true,"created_at":"2024-05-01T12:00:00Z","customer":{"name":"Zoë 東京","age":31},"tags":["a","ü"],"prénom":"Jérôme","payload":{"a":7},"items":[{"sku":"A","qty":2},{"sku":"B","qty":null}]},
 {"_pipeline_id":"r2","order_id":2,"amount":3,"paid":false,"created_at":null,"customer":null,"tags":[],"prénom":null,"payload":null}
]`

func configureStorage(t *testing.T, f *fakeBQ, w *fakeWrite, attrs map[string]any, fullRefresh bool) *Sink {
	t.Helper()
	base := map[string]any{"project": "proj", "dataset": "shop", "table": "orders", "endpoint": f.srv.URL, "method": "storage_write",
		"types": map[string]string{"created_at": "timestamp", "payload": "json"}}
	for k, v := range attrs {
		base[k] = v
	}
	raw, _ := json.Marshal(base)
	s := &Sink{writeOptions: w.options(t)}
	if err := s.Configure(context.Background(), sdk.Config{Name: "warehouse", JSON: raw, FullRefresh: fullRefresh}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func newStorageFakes(t *testing.T) (*fakeBQ, *fakeWrite) {
	f := newFakeBQ(t)
	w := newFakeWrite(t, f)
	f.onQuery = w.runQuery
	ab, sb := appendBackoff, schemaBackoff
	appendBackoff, schemaBackoff = time.Millisecond, time.Millisecond
	t.Cleanup(func() { appendBackoff, schemaBackoff = ab, sb })
	return f, w
}

func (w *fakeWrite) eventKinds() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, e := range w.events {
		kind, _, _ := strings.Cut(e, " ")
		if kind == "append" {
			_, at, _ := strings.Cut(e, "@")
			kind += "@" + at
		}
		out = append(out, kind)
	}
	return strings.Join(out, " ")
}

func TestStorageWriteAppend(t *testing.T) {
	f, w := newStorageFakes(t)
	s := configureStorage(t, f, w, map[string]any{"mode": "append"}, false)
	ctx := context.Background()
	if err := s.Write(ctx, batch(t, storeSchema, storeBatch)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got, want := w.eventKinds(), "create append@0+2 finalize commit"; got != want {
		t.Errorf("write API calls = %s, want %s", got, want)
	}
	rows := w.rows("shop.orders")
	if len(rows) != 2 {
		t.Fatalf("table holds %d rows, want 2: %v", len(rows), rows)
	}
	got := mustJSON(rows)
	for _, want := range []string{
		`"_pipeline_id":"r1"`, `"order_id":1`, `"amount":9.5`, `"paid":true`,
		`"created_at":1714564800000000`, // TIMESTAMP as int64 microseconds
		`"customer":{"age":31,"name":"Zoë 東京"}`, `"tags":["a","ü"]`, `"prénom":"Jérôme"`,
		`"payload":"{\"a\":7}"`,                     // JSON as a string
		`"items":[{"qty":2,"sku":"A"},{"sku":"B"}]`, // REPEATED RECORD
		`"amount":3`, `"paid":false`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("committed rows lack %s:\n%s", want, got)
		}
	}
	// Nulls are unset fields; the arrival column is not a column of the table.
	r2 := rows[1]
	for _, col := range []string{"created_at", "customer", "prénom", "payload", "tags", stagingSeqColumn, stagingIDColumn} {
		if v, ok := r2[col]; ok {
			t.Errorf("row r2 has %s = %v, want it unset (null, or not a target column)", col, v)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.order) != 0 {
		t.Errorf("jobs = %v: append mode writes straight into the table", f.order)
	}
	if _, ok := f.tables["shop.orders"]; !ok {
		t.Error("target table not created")
	}
}

func TestStorageWriteAlreadyExistsContinues(t *testing.T) {
	f, w := newStorageFakes(t)
	old := appendChunkBytes
	appendChunkBytes = 1 // one row per request
	t.Cleanup(func() { appendChunkBytes = old })
	s := configureStorage(t, f, w, map[string]any{"mode": "append"}, false)
	ctx := context.Background()
	if err := s.Write(ctx, batch(t, storeSchema, storeBatch)); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batch(t, storeSchema, `[{"_pipeline_id":"r3","order_id":3}]`)); err != nil {
		t.Fatal(err)
	}
	// The append at offset 1 lands but its answer is lost: the sink sends it
	// again at offset 1, the service answers ALREADY_EXISTS.
	w.mu.Lock()
	w.lose[1] = true
	w.mu.Unlock()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got, want := w.eventKinds(), "create append@0+1 append@1+1 append@1+1 append@2+1 finalize commit"; got != want {
		t.Errorf("write API calls = %s\nwant %s", got, want)
	}
	rows := w.rows("shop.orders")
	var ids []string
	for _, r := range rows {
		ids = append(ids, r[idColumn].(string))
	}
	if strings.Join(ids, ",") != "r1,r2,r3" {
		t.Errorf("committed ids = %v, want r1,r2,r3 once each", ids)
	}
}

func TestStorageWriteOutOfRange(t *testing.T) {
	f, w := newStorageFakes(t)
	old := appendChunkBytes
	appendChunkBytes = 1
	t.Cleanup(func() { appendChunkBytes = old })
	s := configureStorage(t, f, w, map[string]any{"mode": "append"}, false)
	ctx := context.Background()
	if err := s.Write(ctx, batch(t, storeSchema, storeBatch)); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	w.outOfRange[1] = true
	w.mu.Unlock()
	err := s.Flush(ctx)
	if err == nil || !strings.Contains(err.Error(), "offset 1") || !strings.Contains(err.Error(), "OUT_OF_RANGE") || !strings.Contains(err.Error(), "nothing was committed") {
		t.Fatalf("Flush = %v, want an OUT_OF_RANGE error naming offset 1", err)
	}
	if got := w.eventKinds(); strings.Contains(got, "commit") || strings.Contains(got, "finalize") {
		t.Errorf("write API calls = %s: nothing may be finalized or committed", got)
	}
	if rows := w.rows("shop.orders"); len(rows) != 0 {
		t.Errorf("table holds %d rows after a failed flush", len(rows))
	}
	// The batch is not acked; the next Flush (a retry) writes it in a new
	// stream.
	w.mu.Lock()
	delete(w.outOfRange, 1)
	w.mu.Unlock()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("retried Flush: %v", err)
	}
	if rows := w.rows("shop.orders"); len(rows) != 2 {
		t.Errorf("table holds %d rows after the retry, want 2", len(rows))
	}
}

func TestStorageWriteMergeCrash(t *testing.T) {
	f, w := newStorageFakes(t)
	ctx := context.Background()
	run := func(js string) (*Sink, error) {
		s := configureStorage(t, f, w, nil, false)
		if err := s.Write(ctx, batch(t, storeSchema, js)); err != nil {
			t.Fatal(err)
		}
		return s, s.Flush(ctx)
	}
	// 1. The run dies after the staging rows were committed, before the
	// MERGE (the MERGE fails).
	f.mu.Lock()
	f.failInsert["pipeline_merge_"] = true
	f.mu.Unlock()
	if _, err := run(storeBatch); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("Flush = %v, want the injected MERGE failure", err)
	}
	if rows := w.rows("shop.orders"); len(rows) != 0 {
		t.Fatalf("target holds %d rows before any MERGE", len(rows))
	}
	// 2. The re-run sends the same records: a new staging table, the MERGE.
	if _, err := run(storeBatch); err != nil {
		t.Fatalf("re-run Flush: %v", err)
	}
	// 3. That run dies after the MERGE, before the ack: the next re-run finds
	// the MERGE done and writes nothing.
	commitsBefore := strings.Count(w.eventKinds(), "commit")
	if _, err := run(storeBatch); err != nil {
		t.Fatalf("second re-run Flush: %v", err)
	}
	if n := strings.Count(w.eventKinds(), "commit"); n != commitsBefore {
		t.Errorf("a flush whose MERGE had succeeded committed %d more streams", n-commitsBefore)
	}
	// 4. A re-run that cuts the records differently (another hash) MERGEs
	// again: still one row per key, the latest values.
	if _, err := run(`[{"_pipeline_id":"r2","order_id":2,"amount":4}]`); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	rows := w.rows("shop.orders")
	byID := map[string]int{}
	for _, r := range rows {
		byID[r[idColumn].(string)]++
	}
	if len(rows) != 2 || byID["r1"] != 1 || byID["r2"] != 1 {
		t.Fatalf("target rows = %s, want one per key", mustJSON(rows))
	}
	for _, r := range rows {
		if r[idColumn] == "r2" && r["amount"] != 4.0 {
			t.Errorf("r2 = %v, want the latest amount 4", r)
		}
		if r[idColumn] == "r1" && r["prénom"] != "Jérôme" {
			t.Errorf("r1 = %v", r)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Staging tables: one per attempt that wrote rows, each deleted after
	// its MERGE; the crashed attempt's expires (it is still there).
	var staging []string
	for key, tbl := range f.tables {
		if strings.Contains(key, "__pipeline_staging_") {
			staging = append(staging, key)
			if tbl.ExpirationTime == 0 {
				t.Errorf("staging table %s has no expiration", key)
			}
		}
	}
	if len(staging) != 1 {
		t.Errorf("staging tables left = %v, want the crashed attempt's only", staging)
	}
	var merges []string
	for _, id := range f.order {
		if strings.HasPrefix(id, "pipeline_merge_") {
			merges = append(merges, id)
		}
	}
	if len(merges) != 2 {
		t.Errorf("merge jobs = %v, want 2 (the first range's once, the second range's)", merges)
	}
}

func TestStorageWriteEvents(t *testing.T) {
	// Merge mode: the stream goes to the staging table, is finalized and
	// committed, and only then does the MERGE run.
	f, w := newStorageFakes(t)
	s := configureStorage(t, f, w, nil, false)
	ctx := context.Background()
	if err := s.Write(ctx, batch(t, storeSchema, storeBatch)); err != nil {
		t.Fatal(err)
	}
	var atMerge string
	f.onQuery = func(sql string) error {
		atMerge = w.eventKinds()
		return w.runQuery(sql)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if atMerge != "create append@0+2 finalize commit" {
		t.Errorf("write API calls before the MERGE = %q", atMerge)
	}
	w.mu.Lock()
	name := strings.TrimPrefix(w.events[0], "create ")
	w.mu.Unlock()
	if !strings.Contains(name, "/tables/orders__pipeline_staging_") {
		t.Errorf("stream %s is not on a staging table", name)
	}
	if rows := w.rows("shop.orders"); len(rows) != 2 {
		t.Errorf("target holds %d rows", len(rows))
	}
}

func TestStorageWriteSchemaLag(t *testing.T) {
	// A stream created right after a column was added may not see it: the
	// sink waits and creates another.
	f, w := newStorageFakes(t)
	s := configureStorage(t, f, w, map[string]any{"mode": "append"}, false)
	ctx := context.Background()
	if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	lagged := 0
	f.mu.Lock()
	orig := *f.tables["shop.orders"].Schema
	f.mu.Unlock()
	w.mu.Lock()
	w.hide = func() bool { lagged++; return lagged <= 2 }
	w.hideSchema = &orig
	w.mu.Unlock()
	if err := s.Write(ctx, batch(t, storeSchema, storeBatch)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := w.eventKinds(); got != "create append@0+2 finalize commit create create create append@0+2 finalize commit" {
		t.Errorf("write API calls = %s", got)
	}
	if rows := w.rows("shop.orders"); len(rows) != 4 || rows[2]["prénom"] != "Jérôme" {
		t.Errorf("rows = %s", mustJSON(rows))
	}
}

func TestStorageWriteAppendFullRefresh(t *testing.T) {
	// The full refresh flush of mode "append" goes through a staging table
	// and the INSERT that empties the table in the same transaction; later
	// flushes write straight into the table.
	f, w := newStorageFakes(t)
	ctx := context.Background()
	w.mu.Lock()
	w.data["shop.orders"] = []map[string]any{{idColumn: "old"}}
	w.mu.Unlock()
	s := configureStorage(t, f, w, map[string]any{"mode": "append"}, true)
	for _, js := range []string{storeBatch, `[{"_pipeline_id":"r3","order_id":3}]`} {
		if err := s.Write(ctx, batch(t, storeSchema, js)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for _, r := range w.rows("shop.orders") {
		ids = append(ids, r[idColumn].(string))
	}
	if strings.Join(ids, ",") != "r1,r2,r3" {
		t.Errorf("ids = %v, want r1,r2,r3 (the old row deleted by the refresh)", ids)
	}
	w.mu.Lock()
	first, last := w.events[0], w.events[len(w.events)-1]
	w.mu.Unlock()
	if !strings.Contains(first, "/tables/orders__pipeline_staging_") || !strings.Contains(last, "/tables/orders/streams/") {
		t.Errorf("streams: first %s (want a staging table), last %s (want the target)", first, last)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.order) != 1 || !strings.HasPrefix(f.order[0], "pipeline_append_") || !strings.Contains(f.jobs[f.order[0]].Configuration.Query.Query, "DELETE FROM") {
		t.Errorf("jobs = %v, want one pipeline_append_ job that empties the table", f.order)
	}
}
