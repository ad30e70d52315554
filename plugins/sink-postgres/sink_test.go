package sinkpostgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pipelinehq/pipeline/internal/testpg"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/batching"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// testDSN is the test server, or a skip.
func testDSN(t testing.TB) string { t.Helper(); return testpg.DSN(t) }

// db is a connection to the test database with a fresh schema of its own.
type db struct {
	t      testing.TB
	dsn    string
	schema string
	conn   *pgx.Conn
}

func newDB(t testing.TB) *db {
	t.Helper()
	dsn := testDSN(t)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := fmt.Sprintf("sinkpg_%s_%d", strings.ToLower(strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())), rand.IntN(1e9))
	if len(schema) > 63 {
		schema = schema[len(schema)-63:]
	}
	if _, err := conn.Exec(context.Background(), "CREATE SCHEMA "+ident(schema)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP SCHEMA "+ident(schema)+" CASCADE")
		conn.Close(context.Background())
	})
	return &db{t: t, dsn: dsn, schema: schema, conn: conn}
}

func (d *db) queryOne(q string, args ...any) any {
	d.t.Helper()
	var v any
	if err := d.conn.QueryRow(context.Background(), q, args...).Scan(&v); err != nil {
		d.t.Fatalf("%s: %v", q, err)
	}
	return v
}

func (d *db) count(table string) int64 {
	d.t.Helper()
	return d.queryOne("SELECT count(*) FROM " + ident(d.schema, table)).(int64)
}

// columns returns the table's column → type.
func (d *db) columns(table string) map[string]string {
	d.t.Helper()
	rows, err := d.conn.Query(context.Background(), `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2`, d.schema, table)
	if err != nil {
		d.t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var n, ty string
		rows.Scan(&n, &ty)
		out[n] = canon(ty)
	}
	return out
}

// sink configures a sink for table with extra attributes.
func (d *db) sink(table string, attrs map[string]any, fullRefresh bool) *Sink {
	d.t.Helper()
	s, err := configure(d.t, d.block(table, attrs), fullRefresh)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func (d *db) block(table string, attrs map[string]any) map[string]any {
	block := map[string]any{"dsn": d.dsn, "schema": d.schema, "table": table}
	for k, v := range attrs {
		block[k] = v
	}
	return block
}

func configure(t testing.TB, block map[string]any, fullRefresh bool) (*Sink, error) {
	data, err := json.Marshal(block)
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{}
	return s, s.Configure(context.Background(), sdk.Config{Name: "warehouse", JSON: data, FullRefresh: fullRefresh})
}

// load writes records in batches of rows and flushes once.
func load(t testing.TB, s *Sink, records []string, rows int) error {
	t.Helper()
	batches, _, err := sdktest.Batches(records, rows)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range batches {
		err := s.Write(context.Background(), sdk.NewBatch(rec))
		rec.Release()
		if err != nil {
			return err
		}
	}
	return s.Flush(context.Background())
}

func mustLoad(t testing.TB, s *Sink, records []string, rows int) {
	t.Helper()
	if err := load(t, s, records, rows); err != nil {
		t.Fatal(err)
	}
}

func TestCreateOnFirstLoad(t *testing.T) {
	d := newDB(t)
	s := d.sink("calls", nil, false)
	mustLoad(t, s, []string{
		`{"row_id":"r1","text":"Jag säger upp avtalet 🙂","n":1,"score":0.5,"ok":true,"classifications":{"churn_risk":{"label":"High","confidence":0.93}},"tags":["a","b"],"mixed":1}`,
		`{"row_id":"r2","text":"hej","n":2,"score":1.5,"ok":false,"classifications":{"churn_risk":{"label":"Low","confidence":0.1}},"tags":[],"mixed":"x"}`,
		`{"row_id":"r3","n":3}`,
	}, 2)
	cols := d.columns("calls")
	want := map[string]string{
		"_pipeline_id": "text", "row_id": "text", "text": "text", "n": "bigint", "score": "double precision",
		"ok": "boolean", "classifications": "jsonb", "tags": "jsonb", "mixed": "jsonb",
	}
	for c, ty := range want {
		if cols[c] != ty {
			t.Errorf("column %s: %q, want %q (all: %v)", c, cols[c], ty, cols)
		}
	}
	if len(cols) != len(want) {
		t.Errorf("columns %v, want %v", cols, want)
	}
	if n := d.count("calls"); n != 3 {
		t.Fatalf("%d rows", n)
	}
	var text, cls, tags, mixed string
	var n int64
	var score float64
	var ok bool
	err := d.conn.QueryRow(context.Background(), `SELECT text, n, score, ok, classifications::text, tags::text, mixed::text FROM `+ident(d.schema, "calls")+` WHERE _pipeline_id = 'r1'`).
		Scan(&text, &n, &score, &ok, &cls, &tags, &mixed)
	if err != nil {
		t.Fatal(err)
	}
	if text != "Jag säger upp avtalet 🙂" || n != 1 || score != 0.5 || !ok || mixed != "1" ||
		!sdktest.SameJSON(cls, `{"churn_risk":{"label":"High","confidence":0.93}}`) || !sdktest.SameJSON(tags, `["a","b"]`) {
		t.Errorf("r1 read back as %q %d %v %v %s %s %s", text, n, score, ok, cls, tags, mixed)
	}
	if v := d.queryOne(`SELECT mixed::text FROM ` + ident(d.schema, "calls") + ` WHERE _pipeline_id = 'r2'`); v != `"x"` {
		t.Errorf("r2 mixed = %v", v)
	}
	if v := d.queryOne(`SELECT text IS NULL AND classifications IS NULL FROM ` + ident(d.schema, "calls") + ` WHERE _pipeline_id = 'r3'`); v != true {
		t.Errorf("r3's absent fields are not null")
	}
	// The primary key is the record id.
	if v := d.queryOne(`SELECT count(*) FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)
		WHERE tc.table_schema = $1 AND tc.table_name = 'calls' AND tc.constraint_type = 'PRIMARY KEY' AND k.column_name = '_pipeline_id'`, d.schema); v != int64(1) {
		t.Errorf("no primary key on _pipeline_id")
	}
	if v := d.queryOne(`SELECT records::text || '/' || rows::text || '/' || first_id || '/' || last_id FROM ` + ident(d.schema, LoadsTable)); v != "3/3/r1/r3" {
		t.Errorf("bookkeeping row %v", v)
	}
}

func TestMergeIsIdempotentAndUpdates(t *testing.T) {
	d := newDB(t)
	var recs []string
	for i := range 50 {
		recs = append(recs, fmt.Sprintf(`{"row_id":"r%02d","v":%d}`, i, i))
	}
	for run := range 2 {
		s := d.sink("t", nil, false)
		mustLoad(t, s, recs, 7)
		if n := d.count("t"); n != 50 {
			t.Fatalf("run %d: %d rows, want 50", run+1, n)
		}
	}
	// New values for some keys, and a key twice in one load: the last wins.
	s := d.sink("t", nil, false)
	mustLoad(t, s, []string{`{"row_id":"r01","v":100}`, `{"row_id":"r02","v":200}`, `{"row_id":"r01","v":101}`, `{"row_id":"r99","v":9}`}, 3)
	if n := d.count("t"); n != 51 {
		t.Fatalf("%d rows, want 51", n)
	}
	if v := d.queryOne(`SELECT v FROM ` + ident(d.schema, "t") + ` WHERE row_id = 'r01'`); v != int64(101) {
		t.Errorf("r01 = %v, want the last version 101", v)
	}
	if v := d.queryOne(`SELECT sum(v)::bigint FROM ` + ident(d.schema, "t")); fmt.Sprint(v) != fmt.Sprint(1225-1-2+101+200+9) {
		t.Errorf("sum %v", v)
	}
}

func TestKeyField(t *testing.T) {
	d := newDB(t)
	s := d.sink("k", map[string]any{"key": "row_id"}, false)
	mustLoad(t, s, []string{`{"row_id":"a","v":1}`, `{"row_id":"b","v":2}`}, 1)
	mustLoad(t, s, []string{`{"row_id":"a","v":3}`}, 1)
	if n := d.count("k"); n != 2 {
		t.Fatalf("%d rows", n)
	}
	if v := d.queryOne(`SELECT kcu.column_name FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
		WHERE tc.table_schema = $1 AND tc.table_name = 'k' AND tc.constraint_type = 'PRIMARY KEY'`, d.schema); v != "row_id" {
		t.Errorf("primary key %v", v)
	}
	// An integer key.
	s = d.sink("ik", map[string]any{"key": "n"}, false)
	mustLoad(t, s, []string{`{"n":1,"v":"x"}`, `{"n":2}`, `{"n":1,"v":"y"}`}, 2)
	if n := d.count("ik"); n != 2 {
		t.Fatalf("%d rows", n)
	}
	for _, tc := range []struct {
		key, rec, want string
	}{
		{"score", `{"score":1.5}`, `key "score": the field is double precision; a key must be a string or an integer`},
		{"missing", `{"a":1}`, `key "missing": the records have no such top-level field`},
		{"row_id", `{"x":1,"row_id":null}`, `key "row_id": the field is always null`},
	} {
		s := d.sink("bad_"+tc.key, map[string]any{"key": tc.key}, false)
		if err := load(t, s, []string{tc.rec}, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("key %s: %v, want %q", tc.key, err, tc.want)
		}
	}
	s = d.sink("nullkey", map[string]any{"key": "row_id"}, false)
	if err := load(t, s, []string{`{"row_id":"a"}`, `{"v":1}`}, 2); err == nil || !strings.Contains(err.Error(), `record rec-1 has no value for the key "row_id"`) {
		t.Errorf("null key: %v", err)
	}
}

func TestNewFieldAddsANullableColumn(t *testing.T) {
	d := newDB(t)
	s := d.sink("evo", nil, false)
	mustLoad(t, s, []string{`{"row_id":"r1","a":"x"}`, `{"row_id":"r2","a":"y"}`}, 2)
	// The same sink, a batch with a new field; then a new sink (a later run).
	mustLoad(t, s, []string{`{"row_id":"r3","a":"z","b":7}`}, 1)
	s2 := d.sink("evo", nil, false)
	mustLoad(t, s2, []string{`{"row_id":"r4","c":{"d":true}}`}, 1)
	cols := d.columns("evo")
	if cols["b"] != "bigint" || cols["c"] != "jsonb" {
		t.Fatalf("columns %v", cols)
	}
	if v := d.queryOne(`SELECT string_agg(_pipeline_id || '=' || coalesce(a, '-') || '/' || coalesce(b::text, '-') || '/' || coalesce(c::text, '-'), ' ' ORDER BY _pipeline_id) FROM ` + ident(d.schema, "evo")); v != `r1=x/-/- r2=y/-/- r3=z/7/- r4=-/-/{"d": true}` {
		t.Errorf("rows: %v", v)
	}
	if v := d.queryOne(`SELECT bool_and(is_nullable = 'YES') FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'evo' AND column_name IN ('b', 'c')`, d.schema); v != true {
		t.Errorf("new columns are not nullable")
	}
	// A field that was only ever null gets its column once it has a value.
	s3 := d.sink("evo", nil, false)
	mustLoad(t, s3, []string{`{"row_id":"r5","e":null}`}, 1)
	if _, ok := d.columns("evo")["e"]; ok {
		t.Errorf("a column for an always-null field")
	}
	mustLoad(t, s3, []string{`{"row_id":"r6","e":"now"}`}, 1)
	if d.columns("evo")["e"] != "text" {
		t.Errorf("no column e")
	}
}

func TestIncompatibleTypeChangeStopsTheLoad(t *testing.T) {
	d := newDB(t)
	s := d.sink("inc", nil, false)
	mustLoad(t, s, []string{`{"row_id":"r1","score":3,"x":"a"}`}, 1)
	before := d.columns("inc")
	s2 := d.sink("inc", nil, false)
	err := load(t, s2, []string{`{"row_id":"r2","score":"high","new":1}`}, 1)
	want := `column "score": the table has bigint, the records have text; change the column or the data (nothing was loaded)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
	after := d.columns("inc")
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("the table changed: %v → %v", before, after)
	}
	if n := d.count("inc"); n != 1 {
		t.Errorf("%d rows", n)
	}
}

func TestIntegerColumnWidensToFloat(t *testing.T) {
	d := newDB(t)
	s := d.sink("w", nil, false)
	mustLoad(t, s, []string{`{"row_id":"r1","score":3}`}, 1)
	s2 := d.sink("w", nil, false)
	mustLoad(t, s2, []string{`{"row_id":"r2","score":2.5}`}, 1)
	if d.columns("w")["score"] != "double precision" {
		t.Fatalf("columns %v", d.columns("w"))
	}
	if v := d.queryOne(`SELECT sum(score) FROM ` + ident(d.schema, "w")); v != 5.5 {
		t.Errorf("sum %v", v)
	}
	if got := s2.lastLoad.Widened; len(got) != 1 || got[0] != "score" {
		t.Errorf("widened %v", got)
	}
	// Integers go into the double precision column as they are.
	s3 := d.sink("w", nil, false)
	mustLoad(t, s3, []string{`{"row_id":"r3","score":1}`}, 1)
	if v := d.queryOne(`SELECT sum(score) FROM ` + ident(d.schema, "w")); v != 6.5 {
		t.Errorf("sum %v", v)
	}
}

func TestFlatten(t *testing.T) {
	d := newDB(t)
	s := d.sink("flat", map[string]any{"flatten": true}, false)
	mustLoad(t, s, []string{
		`{"row_id":"r1","classifications":{"churn_risk":{"label":"High","confidence":0.9}},"tags":["x"],"meta":{"q":"retention"}}`,
		`{"row_id":"r2","classifications":null,"meta":{"q":"sales"}}`,
	}, 2)
	cols := d.columns("flat")
	for c, ty := range map[string]string{"classifications_churn_risk_label": "text", "classifications_churn_risk_confidence": "double precision", "tags": "jsonb", "meta_q": "text"} {
		if cols[c] != ty {
			t.Errorf("column %s: %q, want %q (all %v)", c, cols[c], ty, cols)
		}
	}
	if v := d.queryOne(`SELECT classifications_churn_risk_label || meta_q || classifications_churn_risk_confidence FROM ` + ident(d.schema, "flat") + ` WHERE row_id = 'r1'`); v != "Highretention0.9" {
		t.Errorf("r1: %v", v)
	}
	if v := d.queryOne(`SELECT classifications_churn_risk_label IS NULL AND meta_q = 'sales' FROM ` + ident(d.schema, "flat") + ` WHERE row_id = 'r2'`); v != true {
		t.Errorf("r2")
	}
	// Two fields that flatten to one name.
	s2 := d.sink("flat2", map[string]any{"flatten": true}, false)
	if err := load(t, s2, []string{`{"a_b":1,"a":{"b":2}}`}, 1); err == nil || !strings.Contains(err.Error(), `both become column "a_b"`) {
		t.Errorf("collision: %v", err)
	}
}

func TestTimestampType(t *testing.T) {
	d := newDB(t)
	s := d.sink("ts", map[string]any{"types": map[string]string{"created_at": "timestamp"}}, false)
	mustLoad(t, s, []string{`{"row_id":"r1","created_at":"2024-05-01T12:00:00+02:00"}`, `{"row_id":"r2"}`}, 2)
	if d.columns("ts")["created_at"] != "timestamptz" {
		t.Fatalf("columns %v", d.columns("ts"))
	}
	v := d.queryOne(`SELECT created_at FROM ` + ident(d.schema, "ts") + ` WHERE row_id = 'r1'`).(time.Time)
	if !v.Equal(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("created_at %v", v)
	}
	s2 := d.sink("ts", map[string]any{"types": map[string]string{"created_at": "timestamp"}}, false)
	err := load(t, s2, []string{`{"row_id":"r3","created_at":"2024-05-01T12:00:00Z"}`, `{"row_id":"r4","created_at":"yesterday"}`}, 2)
	if err == nil || !strings.Contains(err.Error(), `record r4: field "created_at": "yesterday" is not an RFC 3339 timestamp`) {
		t.Fatalf("bad timestamp: %v", err)
	}
	if n := d.count("ts"); n != 2 {
		t.Errorf("%d rows after the failed load", n)
	}
	s3 := d.sink("ts2", map[string]any{"types": map[string]string{"n": "timestamp"}}, false)
	if err := load(t, s3, []string{`{"n":5}`}, 1); err == nil || !strings.Contains(err.Error(), `types: field "n" is declared a timestamp but the records have bigint`) {
		t.Errorf("timestamp on an int: %v", err)
	}
}

func TestAppendMode(t *testing.T) {
	d := newDB(t)
	recs := []string{`{"row_id":"a","v":1}`, `{"row_id":"a","v":2}`}
	s := d.sink("ap", map[string]any{"mode": "append"}, false)
	mustLoad(t, s, recs, 1)
	mustLoad(t, s, recs, 1)
	if n := d.count("ap"); n != 4 {
		t.Fatalf("%d rows, want 4", n)
	}
}

func TestFullRefresh(t *testing.T) {
	d := newDB(t)
	s := d.sink("fr", nil, false)
	mustLoad(t, s, []string{`{"row_id":"a"}`, `{"row_id":"b"}`, `{"row_id":"c"}`}, 2)
	// A full refresh replaces the rows in its first load's transaction;
	// later loads of the run add to them.
	s2 := d.sink("fr", nil, true)
	mustLoad(t, s2, []string{`{"row_id":"x"}`}, 1)
	mustLoad(t, s2, []string{`{"row_id":"y"}`}, 1)
	if v := d.queryOne(`SELECT string_agg(row_id, ',' ORDER BY row_id) FROM ` + ident(d.schema, "fr")); v != "x,y" {
		t.Errorf("after the full refresh: %v", v)
	}
	// A full refresh without records empties the table at Close.
	s3 := d.sink("fr", nil, true)
	if err := s3.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := d.count("fr"); n != 0 {
		t.Errorf("%d rows after an empty full refresh", n)
	}
	if v := d.queryOne(`SELECT count(*) FILTER (WHERE full_refresh) FROM ` + ident(d.schema, LoadsTable)); v != int64(2) {
		t.Errorf("%v full-refresh loads recorded", v)
	}
}

func TestFlushDue(t *testing.T) {
	clock := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	newSink := func(batch map[string]any) *Sink {
		s := &Sink{now: func() time.Time { return clock }}
		data, _ := json.Marshal(map[string]any{"table": "t", "batch": batch})
		if err := s.Configure(context.Background(), sdk.Config{Name: "x", JSON: data}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.release)
		return s
	}
	write := func(s *Sink, n int, pad int) {
		var recs []string
		for i := range n {
			recs = append(recs, fmt.Sprintf(`{"row_id":"r%d","p":%q}`, i, strings.Repeat("x", pad)))
		}
		batches, _, _ := sdktest.Batches(recs, n)
		for _, rec := range batches {
			s.Write(context.Background(), sdk.NewBatch(rec))
			rec.Release()
		}
	}
	// Defaults: 100000 rows, 64MiB, 30s.
	s := newSink(nil)
	if s.limits != (batching.Limits{Rows: 100000, Bytes: 64 << 20, Interval: 30 * time.Second}) {
		t.Fatalf("defaults %+v", s.limits)
	}
	if s.FlushDue(clock.Add(time.Hour)) {
		t.Error("due with nothing held")
	}
	// Rows.
	s = newSink(map[string]any{"rows": 10})
	write(s, 9, 1)
	if s.FlushDue(clock) {
		t.Error("due at 9 of 10 rows")
	}
	write(s, 1, 1)
	if !s.FlushDue(clock) {
		t.Error("not due at 10 rows")
	}
	// Bytes.
	s = newSink(map[string]any{"bytes": "10KiB"})
	write(s, 5, 1000)
	if s.FlushDue(clock) {
		t.Errorf("due at %d bytes", s.bytes)
	}
	write(s, 10, 1000)
	if !s.FlushDue(clock) {
		t.Errorf("not due at %d bytes", s.bytes)
	}
	// Interval, from the first held batch.
	s = newSink(map[string]any{"interval": "1m"})
	write(s, 1, 1)
	clock = clock.Add(40 * time.Second)
	write(s, 1, 1)
	if s.FlushDue(clock) {
		t.Error("due after 40s")
	}
	if !s.FlushDue(clock.Add(20 * time.Second)) {
		t.Error("not due 1m after the first batch")
	}
	s.release()
	if s.FlushDue(clock.Add(time.Hour)) {
		t.Error("due after a flush with nothing held")
	}
}

func TestConfigureErrors(t *testing.T) {
	base := map[string]any{"table": "t", "dsn": "postgres://u:s3cr3t-pw@127.0.0.1:1/db?connect_timeout=2"}
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"table": ""}, "table must not be empty"},
		{map[string]any{"mode": "upsert"}, `mode "upsert"`},
		{map[string]any{"key": "a.b"}, "not a path"},
		{map[string]any{"key": "id", "mode": "append"}, "key is for mode"},
		{map[string]any{"types": map[string]string{"t": "date"}}, `unknown type "date"`},
		{map[string]any{"batch": map[string]any{"rows": 0}}, "batch: rows"},
		{map[string]any{"batch": map[string]any{"rows": 1.5}}, "batch: rows"},
		{map[string]any{"batch": map[string]any{"bytes": "lots"}}, "batch: bytes"},
		{map[string]any{"batch": map[string]any{"interval": "soon"}}, "batch: interval"},
		{map[string]any{"dsn": "postgres://u:s3cr3t-pw@host:notaport/db"}, "dsn: invalid port"},
	} {
		block := map[string]any{}
		for k, v := range base {
			block[k] = v
		}
		for k, v := range tc.attrs {
			block[k] = v
		}
		_, err := configure(t, block, false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.attrs, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("%v: the error shows the password: %v", tc.attrs, err)
		}
	}
	// A connection failure names no secret.
	s, err := configure(t, base, false)
	if err != nil {
		t.Fatal(err)
	}
	err = load(t, s, []string{`{"a":1}`}, 1)
	if err == nil || strings.Contains(err.Error(), "s3cr3t-pw") || !strings.Contains(err.Error(), "connect to PostgreSQL") {
		t.Errorf("connection failure: %v", err)
	}
}

// A DSN that does not parse is named by its wrong part, never quoted: it
// holds the password.
func TestDSNErrorNamesThePartButNotThePassword(t *testing.T) {
	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"sslmode", "host=localhost sslmode=bogus password=s3cr3t-pw", "sslmode is invalid"},
		{"sslmode in a URL", "postgres://u:s3cr3t-pw@localhost/db?sslmode=bogus", "sslmode is invalid"},
		{"port", "host=localhost port=abc password=s3cr3t-pw", "invalid port"},
		{"port in a URL", "postgres://u:s3cr3t-pw@localhost:abc/db", "invalid port"},
		{"bad URL", "postgres://u:s3cr3t-pw@[::1/db", "failed to parse as URL"},
		{"bad escape in the password", "postgres://u:s3cr3t%zz-pw@localhost/db", "invalid percent-encoded token in password"},
		{"unterminated quote", "host=localhost password='s3cr3t-pw", "unterminated quoted string"},
		{"not key=value", "s3cr3t-pw", "invalid keyword/value"},
		{"timeout", "host=localhost connect_timeout=soon password=s3cr3t-pw", "invalid connect_timeout"},
		{"the password where a number goes", "host=localhost connect_timeout=s3cr3t-pw password=s3cr3t-pw", "invalid connect_timeout"},
		{"hosts and ports", "host=a,b port=1,2,3 password=s3cr3t-pw", "3 port numbers to 2 hosts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := configure(t, map[string]any{"table": "t", "dsn": tc.dsn}, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "dsn") {
				t.Fatalf("got %v, want a dsn error saying %q", err, tc.want)
			}
			for _, secret := range []string{"s3cr3t", tc.dsn} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error shows %q: %v", secret, err)
				}
			}
		})
	}
}

func TestInfo(t *testing.T) {
	info := (&Sink{}).Info()
	if info.Type != "postgres" || info.Kind != sdk.KindSink {
		t.Fatalf("info %+v", info)
	}
	for _, a := range info.Config {
		if a.Description == "" {
			t.Errorf("%s has no description", a.Name)
		}
	}
	if _, err := sdk.DescribeProto(info); err != nil {
		t.Fatal(err)
	}
}

func TestThroughTheProtocol(t *testing.T) {
	d := newDB(t)
	block, _ := json.Marshal(d.block("proto", map[string]any{"batch": map[string]any{"rows": 3}}))
	var in []string
	for i := range 10 {
		in = append(in, fmt.Sprintf(`{"row_id":"p%d","n":%d,"text":"ö%d"}`, i, i, i))
	}
	sdktest.TestSink(t, func() sdk.Sink { return &Sink{} }, "", sdktest.SinkTest{
		Config:  string(block),
		Records: in,
		Setup: func(t testing.TB) {
			d.conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+ident(d.schema, "proto"))
		},
		Check: func(t testing.TB, sent []sdktest.Record) {
			if n := d.count("proto"); n != int64(len(sent)) {
				t.Fatalf("%d rows, want %d", n, len(sent))
			}
			if v := d.queryOne(`SELECT sum(n)::bigint FROM ` + ident(d.schema, "proto")); fmt.Sprint(v) != "45" {
				t.Fatalf("sum %v", v)
			}
		},
	})
}
