package sourcepostgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pipelinehq/pipeline/internal/testpg"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// db is a connection to the test database with a fresh schema of its own.
type db struct {
	t      testing.TB
	dsn    string
	schema string
	conn   *pgx.Conn
}

func newDB(t testing.TB) *db {
	t.Helper()
	dsn := testpg.DSN(t)
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := fmt.Sprintf("srcpg_%d_%s", rand.IntN(1e9), strings.ToLower(strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())))
	if len(schema) > 63 {
		schema = schema[:63]
	}
	if _, err := conn.Exec(context.Background(), "CREATE SCHEMA "+quoteIdent(schema)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP SCHEMA "+quoteIdent(schema)+" CASCADE")
		conn.Close(context.Background())
	})
	return &db{t: t, dsn: dsn, schema: schema, conn: conn}
}

// exec runs SQL with {s} standing for the test's schema.
func (d *db) exec(sql string, args ...any) {
	d.t.Helper()
	if _, err := d.conn.Exec(context.Background(), strings.ReplaceAll(sql, "{s}", quoteIdent(d.schema)), args...); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
}

// source configures a source; attrs override the defaults, {s} in table
// and query is the test's schema.
func (d *db) source(attrs map[string]any) *Source {
	d.t.Helper()
	s, err := d.configure(attrs)
	if err != nil {
		d.t.Fatal(err)
	}
	return s
}

func (d *db) configure(attrs map[string]any) (*Source, error) {
	block := map[string]any{"dsn": d.dsn, "cursor": "updated_at", "key": "id", "json": "raw", "batch_rows": 8192, "table": "", "query": ""}
	for k, v := range attrs {
		if s, ok := v.(string); ok {
			v = strings.ReplaceAll(s, "{s}", d.schema)
		}
		block[k] = v
	}
	data, _ := json.Marshal(block)
	s := &Source{}
	return s, s.Configure(context.Background(), sdk.Config{Name: "tickets", JSON: data})
}

// collect is an Emitter that keeps every record as JSON, the ids, and the
// position of every batch.
type collect struct {
	records   []string
	ids       []string
	positions [][]byte
	sizes     []int
	schemas   []*arrow.Schema
}

func (c *collect) Emit(rec arrow.RecordBatch, position []byte) error {
	return c.EmitAt(rec, position, sdk.Origin{})
}

func (c *collect) EmitAt(rec arrow.RecordBatch, position []byte, origin sdk.Origin) error {
	defer rec.Release()
	ids := origin.IDs
	if ids == nil {
		// No ids: each record's is its row_id, as the engine makes it.
		idx := rec.Schema().FieldIndices("row_id")
		if len(idx) == 0 {
			return fmt.Errorf("a batch without ids or row_id")
		}
		col := rec.Column(idx[0]).(*array.String)
		for i := 0; i < col.Len(); i++ {
			if !col.IsValid(i) || col.Value(i) == "" {
				return fmt.Errorf("a batch without ids, row %d without a row_id", i)
			}
			ids = append(ids, col.Value(i))
		}
	}
	if int64(len(ids)) != rec.NumRows() {
		return fmt.Errorf("%d ids for %d rows", len(ids), rec.NumRows())
	}
	enc := arrowjson.NewEncoder()
	for i := 0; i < int(rec.NumRows()); i++ {
		c.records = append(c.records, string(enc.AppendRow(nil, rec, i)))
	}
	c.ids = append(c.ids, ids...)
	c.positions = append(c.positions, append([]byte(nil), position...))
	c.sizes = append(c.sizes, int(rec.NumRows()))
	c.schemas = append(c.schemas, rec.Schema())
	return nil
}

func (c *collect) Skipped(int) {}

func (c *collect) last() []byte {
	if len(c.positions) == 0 {
		return nil
	}
	return c.positions[len(c.positions)-1]
}

func read(t testing.TB, s *Source, from []byte) *collect {
	t.Helper()
	c := &collect{}
	if err := s.Read(context.Background(), from, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// ids extracts the "id" field of each record.
func idsOf(t testing.TB, records []string) []int64 {
	t.Helper()
	var out []int64
	for _, r := range records {
		var v struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal([]byte(r), &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v.ID)
	}
	return out
}

func TestIncrementalReadsOnlyNewRows(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.tickets (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, subject text)`)
	d.exec(`INSERT INTO {s}.tickets SELECT i, '2025-03-01 10:00:00+00'::timestamptz + i * interval '1 minute', 'subject ' || i FROM generate_series(1, 25) i`)
	s := d.source(map[string]any{"table": "{s}.tickets", "batch_rows": 10})

	first := read(t, s, nil)
	if got := idsOf(t, first.records); len(got) != 25 || got[0] != 1 || got[24] != 25 {
		t.Fatalf("first run: %v", got)
	}
	if fmt.Sprint(first.sizes) != "[10 10 5]" {
		t.Errorf("batches of %v rows, want [10 10 5]", first.sizes)
	}
	var p position
	if err := json.Unmarshal(first.last(), &p); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.Columns, p.After) != "[updated_at id] [2025-03-01 10:25:00.000000+00 25]" {
		t.Errorf("position %s", first.last())
	}
	if again := read(t, s, first.last()); len(again.records) != 0 {
		t.Fatalf("a re-run read %d rows, want none", len(again.records))
	}

	// New rows, and an update that moves a row's cursor forward.
	d.exec(`INSERT INTO {s}.tickets SELECT i, '2025-03-02 10:00:00+00'::timestamptz + i * interval '1 second', 'later ' || i FROM generate_series(26, 30) i`)
	d.exec(`UPDATE {s}.tickets SET updated_at = '2025-03-03 00:00:00+00', subject = 'edited' WHERE id = 3`)
	second := read(t, s, first.last())
	if got := fmt.Sprint(idsOf(t, second.records)); got != "[26 27 28 29 30 3]" {
		t.Fatalf("second run read %s, want [26 27 28 29 30 3]", got)
	}
	// A re-read row keeps its id.
	if first.ids[2] != second.ids[5] || !strings.HasSuffix(first.ids[2], "-3") || first.ids[2] == first.ids[3] {
		t.Errorf("ids: first run %q, second run %q", first.ids[2], second.ids[5])
	}
	if !strings.HasPrefix(first.ids[0], sdk.IDPrefix("tickets", d.schema+".tickets")) {
		t.Errorf("id %q does not start with the source's prefix", first.ids[0])
	}
	if third := read(t, s, second.last()); len(third.records) != 0 {
		t.Fatalf("third run read %d rows", len(third.records))
	}
	// A full refresh (from = nil) reads everything again.
	if all := read(t, s, nil); len(all.records) != 30 {
		t.Fatalf("full refresh read %d rows, want 30", len(all.records))
	}
}

// Rows that share a cursor value are ordered by key: resuming from the end
// of any batch, wherever the boundary falls among them, reads exactly the
// rows after it.
func TestSharedCursorValuesAcrossBatchBoundaries(t *testing.T) {
	for _, cursor := range []struct{ name, typ, expr string }{
		{"timestamptz", "timestamptz", `'2025-03-01 10:00:00.123456+00'::timestamptz + (i / 7) * interval '1 microsecond'`},
		{"numeric", "numeric", `1e-20 * (i / 7) + 12345678901234567890.5`},
		{"bigint", "bigint", `i / 7`},
		{"date", "date", `'2025-03-01'::date + i / 7`},
		{"double", "double precision", `0.1 * (i / 7)`},
	} {
		t.Run(cursor.name, func(t *testing.T) {
			d := newDB(t)
			d.exec(`CREATE TABLE {s}.t (id text PRIMARY KEY, updated_at ` + cursor.typ + ` NOT NULL, n int)`)
			// Keys sort as text, not as numbers: k10 < k9.
			d.exec(`INSERT INTO {s}.t SELECT 'k' || i, ` + cursor.expr + `, i FROM generate_series(1, 40) i ORDER BY random()`)
			s := d.source(map[string]any{"table": "{s}.t", "batch_rows": 3})
			all := read(t, s, nil)
			if len(all.records) != 40 {
				t.Fatalf("read %d rows, want 40", len(all.records))
			}
			seen := map[string]bool{}
			for _, id := range all.ids {
				if seen[id] {
					t.Fatalf("row %s read twice", id)
				}
				seen[id] = true
			}
			done := 0
			for b, pos := range all.positions {
				done += all.sizes[b]
				rest := read(t, s, pos)
				if len(rest.records) != 40-done {
					t.Fatalf("resuming after batch %d (%s) read %d rows, want %d", b+1, pos, len(rest.records), 40-done)
				}
				for i, r := range rest.records {
					if r != all.records[done+i] {
						t.Fatalf("resuming after batch %d: row %d is %s, want %s", b+1, i, r, all.records[done+i])
					}
				}
			}
		})
	}
}

func TestLagLeavesRecentRowsForLater(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.t (id int PRIMARY KEY, updated_at timestamptz NOT NULL, local timestamp NOT NULL, n int NOT NULL)`)
	d.exec(`INSERT INTO {s}.t VALUES (1, now() - interval '2 hours', LOCALTIMESTAMP - interval '2 hours', 1), (2, now() - interval '10 seconds', LOCALTIMESTAMP - interval '10 seconds', 2), (3, now() + interval '1 hour', LOCALTIMESTAMP + interval '1 hour', 3)`)
	for _, cursor := range []string{"updated_at", "local"} {
		s := d.source(map[string]any{"table": "{s}.t", "cursor": cursor, "lag": "1m"})
		first := read(t, s, nil)
		if got := fmt.Sprint(idsOf(t, first.records)); got != "[1]" {
			t.Fatalf("%s, lag 1m: read %s, want [1]", cursor, got)
		}
		if got := fmt.Sprint(idsOf(t, read(t, d.source(map[string]any{"table": "{s}.t", "cursor": cursor, "lag": "1s"}), first.last()).records)); got != "[2]" {
			t.Fatalf("%s, lag 1s after the first run: read %s, want [2]", cursor, got)
		}
		if got := fmt.Sprint(idsOf(t, read(t, d.source(map[string]any{"table": "{s}.t", "cursor": cursor}), first.last()).records)); got != "[2 3]" {
			t.Fatalf("%s, no lag after the first run: read %s, want [2 3]", cursor, got)
		}
	}
	_, err := d.source(map[string]any{"table": "{s}.t", "cursor": "n", "lag": "1m"}).Schema(context.Background())
	if err == nil || !strings.Contains(err.Error(), "lag is for a timestamptz or timestamp cursor") {
		t.Errorf("lag with an integer cursor: %v", err)
	}
	if _, err := d.configure(map[string]any{"table": "t", "lag": "-1s"}); err == nil || !strings.Contains(err.Error(), "lag") {
		t.Errorf("negative lag: %v", err)
	}
}

// cancelAfter cancels the read's context at its first batch.
type cancelAfter struct {
	collect
	cancel context.CancelFunc
}

func (c *cancelAfter) EmitAt(rec arrow.RecordBatch, p []byte, o sdk.Origin) error {
	c.cancel()
	return c.collect.EmitAt(rec, p, o)
}

func TestReadReturnsPromptlyWhenCancelled(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.t (id int PRIMARY KEY, updated_at timestamptz NOT NULL, body text)`)
	d.exec(`INSERT INTO {s}.t SELECT i, now(), repeat('x', 200) FROM generate_series(1, 30000) i`)
	s := d.source(map[string]any{"table": "{s}.t", "batch_rows": 100})
	ctx, cancel := context.WithCancel(context.Background())
	c := &cancelAfter{cancel: cancel}
	start := time.Now()
	err := s.Read(ctx, nil, c)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel: %v", err)
	}
	if len(c.records) > 1000 || time.Since(start) > 5*time.Second {
		t.Fatalf("Read went on for %v and %d rows after the cancel", time.Since(start), len(c.records))
	}
}

func TestQuerySource(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.tickets (id int PRIMARY KEY, updated_at timestamptz NOT NULL, customer_id int, subject text)`)
	d.exec(`CREATE TABLE {s}.customers (id int PRIMARY KEY, name text)`)
	d.exec(`INSERT INTO {s}.customers VALUES (1, 'Acme'), (2, 'Globex')`)
	d.exec(`INSERT INTO {s}.tickets SELECT i, '2025-03-01'::timestamptz + i * interval '1 hour', 1 + i % 2, 'subject ' || i FROM generate_series(1, 10) i`)
	s := d.source(map[string]any{
		"query": `SELECT t.id, t.updated_at, c.name AS customer, upper(t.subject) AS subject
FROM {s}.tickets t JOIN {s}.customers c ON c.id = t.customer_id
WHERE t.id % 5 <> 0 -- not the fifth ones; ORDER BY in a comment is fine
;`,
		"batch_rows": 3,
	})
	schema, err := s.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := schema.String(); !strings.Contains(got, "customer: type=utf8") || !strings.Contains(got, "id: type=int32") || !strings.Contains(got, "updated_at: type=timestamp[us, tz=UTC]") {
		t.Errorf("schema:\n%s", got)
	}
	first := read(t, s, nil)
	if got := fmt.Sprint(idsOf(t, first.records)); got != "[1 2 3 4 6 7 8 9]" {
		t.Fatalf("read %s", got)
	}
	if first.records[0] != `{"id":1,"updated_at":"2025-03-01T01:00:00Z","customer":"Globex","subject":"SUBJECT 1"}` {
		t.Errorf("record %s", first.records[0])
	}
	if !strings.HasPrefix(first.ids[0], sdk.IDPrefix("tickets", "query")) {
		t.Errorf("id %q", first.ids[0])
	}
	d.exec(`INSERT INTO {s}.tickets VALUES (11, '2025-04-01', 2, 'new'), (12, '2025-04-01', 1, 'new too')`)
	if got := fmt.Sprint(idsOf(t, read(t, s, first.last()).records)); got != "[11 12]" {
		t.Fatalf("second run read %s", got)
	}
}

func TestQueryMustNotOrderOrLimit(t *testing.T) {
	d := newDB(t)
	for q, want := range map[string]string{
		"SELECT * FROM t ORDER BY id":            "leave out ORDER BY",
		"SELECT * FROM t LIMIT 10":               "leave out LIMIT",
		"SELECT * FROM t OFFSET 1":               "leave out OFFSET",
		"SELECT 1; SELECT 2":                     "one SELECT",
		" ; ":                                    "must not be empty",
		"SELECT * FROM t FETCH FIRST 1 ROW ONLY": "leave out FETCH",
	} {
		if _, err := d.configure(map[string]any{"query": q}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", q, err, want)
		}
	}
	for _, q := range []string{
		"SELECT * FROM (SELECT * FROM t ORDER BY id LIMIT 5) x",
		"SELECT 'order by', \"limit\" FROM t",
		"SELECT $$ LIMIT $$ FROM t /* ORDER BY /* nested */ x */",
		"SELECT * FROM t -- LIMIT 5",
		"WITH x AS (SELECT * FROM t ORDER BY 1) SELECT * FROM x",
	} {
		if _, err := d.configure(map[string]any{"query": q}); err != nil {
			t.Errorf("%q: %v", q, err)
		}
	}
}

// typesSQL creates a table with every mapped type and rows of edge values.
const typesSQL = `CREATE TABLE {s}.types (
	id int PRIMARY KEY, updated_at timestamptz NOT NULL,
	i2 smallint, i4 integer, i8 bigint, num numeric(12,3), num38 numeric(38,10), numfree numeric, numbig numeric(50,2),
	f4 real, f8 double precision, b boolean, t text, vc varchar(10), c char(4), u uuid,
	ts timestamp, tstz timestamptz, d date, js json, jb jsonb, by bytea, mood {s}.mood,
	a_i4 integer[], a_t text[], a_num numeric(6,2)[], a_tstz timestamptz[], a_jb jsonb[], a_u uuid[], a_mood {s}.mood[]
)`

const typesRows = `INSERT INTO {s}.types VALUES
(1, '2025-01-01 00:00:00+00', -32768, -2147483648, -9223372036854775808, -123456789.125, 1234567890123456789012345678.0123456789, '-0.000000000000000000001', 12345678901234567890123456789012345678901234567.89,
 1.5, 0.1, true, 'Hej då 🙂 "quoted" \ back', 'varchar', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
 '1999-12-31 23:59:59.999999', '2024-02-29 12:34:56.789012+02', '0044-03-15 BC', E'{\n  "b": 1,\n  "a": [1, 2.50, "x y"],\n  "b": 2\n}', '{"z": {"y": null}, "a": "str\"ing", "n": 1.10}', '\xdeadbeef', 'happy',
 '{1,NULL,3}', '{"a b","",NULL,"{}"}', '{1.50,-2.25}', '{"2025-01-01 00:00:00.000001+00"}', ARRAY['{"k": 1}'::jsonb, NULL, '[]'], '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{sad,happy}'),
(2, '2025-01-01 00:00:00+00', 32767, 2147483647, 9223372036854775807, 0, -0.0000000001, 'NaN', 0,
 '-Infinity', 'NaN', false, '', '', '', '00000000-0000-0000-0000-000000000000',
 '2038-01-19 03:14:08', '1970-01-01 00:00:00+00', '9999-12-31', '"just a string"', 'null', '', 'sad',
 '{}', '{}', '{}', '{}', '{}', '{}', '{}'),
(3, '2025-01-02 00:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL)`

// typesWant is what the source emits for typesRows, as the JSON encoder
// writes it.
var typesWant = []string{
	`{"id":1,"updated_at":"2025-01-01T00:00:00Z","i2":-32768,"i4":-2147483648,"i8":-9223372036854775808,"num":"-123456789.125","num38":"1234567890123456789012345678.0123456789","numfree":"-0.000000000000000000001","numbig":"12345678901234567890123456789012345678901234567.89","f4":1.5,"f8":0.1,"b":true,"t":"Hej då 🙂 \"quoted\" \\ back","vc":"varchar","c":"ab  ","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","ts":"1999-12-31T23:59:59.999999Z","tstz":"2024-02-29T10:34:56.789012Z","d":"-0043-03-15","js":{"b":1,"a":[1,2.50,"x y"],"b":2},"jb":{"a":"str\"ing","n":1.10,"z":{"y":null}},"by":"3q2+7w==","mood":"happy","a_i4":[1,null,3],"a_t":["a b","",null,"{}"],"a_num":["1.5","-2.25"],"a_tstz":["2025-01-01T00:00:00.000001Z"],"a_jb":[{"k":1},null,[]],"a_u":["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],"a_mood":["sad","happy"]}`,
	`{"id":2,"updated_at":"2025-01-01T00:00:00Z","i2":32767,"i4":2147483647,"i8":9223372036854775807,"num":"0","num38":"-1e-10","numfree":"NaN","numbig":"0.00","f4":null,"f8":null,"b":false,"t":"","vc":"","c":"    ","u":"00000000-0000-0000-0000-000000000000","ts":"2038-01-19T03:14:08Z","tstz":"1970-01-01T00:00:00Z","d":"9999-12-31","js":"just a string","jb":null,"by":"","mood":"sad","a_i4":[],"a_t":[],"a_num":[],"a_tstz":[],"a_jb":[],"a_u":[],"a_mood":[]}`,
	`{"id":3,"updated_at":"2025-01-02T00:00:00Z"}`,
}

func createTypes(d *db) {
	d.exec(`CREATE TYPE {s}.mood AS ENUM ('sad', 'happy')`)
	d.exec(typesSQL)
	d.exec(typesRows)
}

func TestTypesMapExactly(t *testing.T) {
	d := newDB(t)
	createTypes(d)
	s := d.source(map[string]any{"table": "{s}.types"})
	schema, err := s.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": "int32", "updated_at": "timestamp[us, tz=UTC]", "i2": "int16", "i4": "int32", "i8": "int64",
		"num": "decimal(12, 3)", "num38": "decimal(38, 10)", "numfree": "utf8", "numbig": "utf8",
		"f4": "float32", "f8": "float64", "b": "bool", "t": "utf8", "vc": "utf8", "c": "utf8", "u": "utf8",
		"ts": "timestamp[us]", "tstz": "timestamp[us, tz=UTC]", "d": "date32", "js": "utf8", "jb": "utf8", "by": "binary", "mood": "utf8",
		"a_i4": "list<item: int32, nullable>", "a_t": "list<item: utf8, nullable>", "a_num": "list<item: decimal(6, 2), nullable>",
		"a_tstz": "list<item: timestamp[us, tz=UTC], nullable>", "a_jb": "list<item: utf8, nullable>", "a_u": "list<item: utf8, nullable>", "a_mood": "list<item: utf8, nullable>",
	}
	if schema.NumFields() != len(want) {
		t.Fatalf("schema has %d fields, want %d:\n%s", schema.NumFields(), len(want), schema)
	}
	for _, f := range schema.Fields() {
		if got := f.Type.String(); got != want[f.Name] {
			t.Errorf("%s: %s, want %s", f.Name, got, want[f.Name])
		}
		if raw := arrowjson.IsRaw(f); raw != (f.Name == "js" || f.Name == "jb") {
			t.Errorf("%s: raw JSON %v", f.Name, raw)
		}
	}
	if elem := schema.Field(schema.FieldIndices("a_jb")[0]).Type.(*arrow.ListType).ElemField(); !arrowjson.IsRaw(elem) {
		t.Error("jsonb[] elements are not marked raw JSON")
	}
	if sdk.IsSampled(schema) {
		t.Error("the schema of a table is exact, not a sample")
	}
	got := read(t, s, nil)
	if !got.schemas[0].Equal(schema) {
		t.Errorf("the batch's schema differs from Schema's:\n%s\n%s", got.schemas[0], schema)
	}
	if len(got.records) != len(typesWant) {
		t.Fatalf("%d records", len(got.records))
	}
	for i := range typesWant {
		if got.records[i] != typesWant[i] {
			t.Errorf("row %d:\n got %s\nwant %s", i+1, got.records[i], typesWant[i])
		}
	}
}

func TestDomainsAndViews(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE DOMAIN {s}.amount AS numeric(10,2) CHECK (VALUE >= 0)`)
	d.exec(`CREATE DOMAIN {s}.email AS text`)
	d.exec(`CREATE TABLE {s}.orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL, total {s}.amount, contact {s}.email, notes {s}.email[])`)
	d.exec(`CREATE VIEW {s}.big_orders AS SELECT id, updated_at, total, contact, notes FROM {s}.orders WHERE total > 100`)
	d.exec(`INSERT INTO {s}.orders VALUES (1, '2025-01-01', 250.5, 'a@example.com', '{x,y}'), (2, '2025-01-02', 5, 'b@example.com', NULL)`)
	s := d.source(map[string]any{"table": "{s}.big_orders"})
	schema, err := s.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := schema.String(); !strings.Contains(got, "total: type=decimal(10, 2)") || !strings.Contains(got, "contact: type=utf8") || !strings.Contains(got, "notes: type=list<item: utf8, nullable>") {
		t.Errorf("schema:\n%s", got)
	}
	got := read(t, s, nil)
	if strings.Join(got.records, "\n") != `{"id":1,"updated_at":"2025-01-01T00:00:00Z","total":"250.5","contact":"a@example.com","notes":["x","y"]}` {
		t.Errorf("records %s", got.records)
	}
}

func TestJSONStruct(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.calls (id int PRIMARY KEY, updated_at timestamptz NOT NULL, classifications jsonb, metadata json, n int)`)
	d.exec(`INSERT INTO {s}.calls VALUES
		(1, '2025-01-01', '{"churn_risk": {"label": "High", "confidence": 0.93}}', '{"queue": "retention", "tags": ["a"]}', 1),
		(2, '2025-01-02', NULL, '{"queue": null}', 2),
		(3, '2025-01-03', '{"churn_risk": {"label": "Low", "confidence": 0.1}, "extra": true}', NULL, 3)`)
	s := d.source(map[string]any{"table": "{s}.calls", "json": "struct", "batch_rows": 2})
	schema, err := s.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sdk.IsSampled(schema) {
		t.Error("a struct schema inferred from rows is a sample")
	}
	cls := schema.Field(schema.FieldIndices("classifications")[0])
	if cls.Type.String() != "struct<churn_risk: struct<label: utf8 nullable, confidence: float64 nullable> nullable, extra: bool nullable>" {
		t.Errorf("classifications: %s", cls.Type)
	}
	got := read(t, s, nil)
	want := []string{
		`{"id":1,"updated_at":"2025-01-01T00:00:00Z","classifications":{"churn_risk":{"label":"High","confidence":0.93}},"metadata":{"queue":"retention","tags":["a"]},"n":1}`,
		`{"id":2,"updated_at":"2025-01-02T00:00:00Z","metadata":{"queue":null},"n":2}`,
		`{"id":3,"updated_at":"2025-01-03T00:00:00Z","classifications":{"churn_risk":{"label":"Low","confidence":0.1},"extra":true},"n":3}`,
	}
	if strings.Join(got.records, "\n") != strings.Join(want, "\n") {
		t.Errorf("records:\n%s\nwant\n%s", strings.Join(got.records, "\n"), strings.Join(want, "\n"))
	}
	for _, sc := range got.schemas {
		if f := sc.Field(2); f.Type.ID() != arrow.STRUCT {
			t.Errorf("classifications is %s in a batch", f.Type)
		}
	}
}

func TestUnmappedTypeIsNamed(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.t (id int PRIMARY KEY, updated_at timestamptz NOT NULL, "Wait Time" interval, spot point)`)
	s := d.source(map[string]any{"table": "{s}.t"})
	_, err := s.Schema(context.Background())
	if err == nil || !strings.Contains(err.Error(), `column "Wait Time" has type interval`) || !strings.Contains(err.Error(), `"Wait Time"::text`) || !strings.Contains(err.Error(), `column "spot" has type point`) {
		t.Fatalf("Schema: %v", err)
	}
	if err := s.Read(context.Background(), nil, &collect{}); err == nil || !strings.Contains(err.Error(), `column "Wait Time" has type interval`) {
		t.Fatalf("Read: %v", err)
	}
	d.exec(`CREATE TABLE {s}.u (id int PRIMARY KEY, updated_at timestamptz, grid int[])`)
	d.exec(`INSERT INTO {s}.u VALUES (1, now(), '{{1,2},{3,4}}')`)
	err = d.source(map[string]any{"table": "{s}.u"}).Read(context.Background(), nil, &collect{})
	if err == nil || !strings.Contains(err.Error(), `row id = 1, column "grid": a 2-dimensional array`) {
		t.Fatalf("2-d array: %v", err)
	}
	d.exec(`CREATE TABLE {s}.v (id int PRIMARY KEY, updated_at timestamptz)`)
	d.exec(`INSERT INTO {s}.v VALUES (7, 'infinity')`)
	err = d.source(map[string]any{"table": "{s}.v"}).Read(context.Background(), nil, &collect{})
	if err == nil || !strings.Contains(err.Error(), `row id = 7, column "updated_at": timestamp 'infinity'`) {
		t.Fatalf("infinity: %v", err)
	}
}

func TestCursorAndKeyChecks(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.t (id int PRIMARY KEY, updated_at timestamptz, flag boolean, doc jsonb)`)
	for attrs, want := range map[string]map[string]any{
		`cursor "changed" is not a column of table`: {"table": "{s}.t", "cursor": "changed"},
		`key "uid" is not a column`:                 {"table": "{s}.t", "key": "uid"},
		`cursor "flag" has type boolean`:            {"table": "{s}.t", "cursor": "flag"},
		`key "doc" has type jsonb`:                  {"table": "{s}.t", "key": "doc"},
		`relation`:                                  {"table": "{s}.missing"},
	} {
		_, err := d.source(want).Schema(context.Background())
		if err == nil || !strings.Contains(err.Error(), attrs) {
			t.Errorf("%v: %v, want %q", want, err, attrs)
		}
	}
	s := d.source(map[string]any{"table": "{s}.t"})
	err := s.Read(context.Background(), []byte(`{"columns":["created_at","id"],"after":["x","1"]}`), &collect{})
	if err == nil || !strings.Contains(err.Error(), "--full-refresh") {
		t.Errorf("a checkpoint of other columns: %v", err)
	}
	for attrs, want := range map[string]map[string]any{
		"set table or query, not both":   {"table": "a", "query": "SELECT 1"},
		"set table":                      {},
		`"schema.table"`:                 {"table": "a.b.c"},
		"cursor and key are both":        {"table": "t", "key": "updated_at"},
		`json must be "raw" or "struct"`: {"table": "t", "json": "yes"},
		"batch_rows must be at least 1":  {"table": "t", "batch_rows": 0},
	} {
		if _, err := d.configure(want); err == nil || !strings.Contains(err.Error(), attrs) {
			t.Errorf("%v: %v, want %q", want, err, attrs)
		}
	}
}

// fakeServer accepts one connection, asks for a cleartext password and
// refuses it with a message that quotes it: the source must not repeat it.
func fakeServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				be := pgproto3.NewBackend(c, c)
				if _, err := be.ReceiveStartupMessage(); err != nil {
					return
				}
				be.Send(&pgproto3.AuthenticationCleartextPassword{})
				if err := be.Flush(); err != nil {
					return
				}
				be.SetAuthType(pgproto3.AuthTypeCleartextPassword)
				msg, err := be.Receive()
				if err != nil {
					return
				}
				pw := ""
				if m, ok := msg.(*pgproto3.PasswordMessage); ok {
					pw = m.Password
				}
				be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "app" (got "` + pw + `")`})
				be.Flush()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).String()
}

func TestPasswordNeverShown(t *testing.T) {
	const pw = "s3cr3t-Pw"
	addr := fakeServer(t)
	host, port, _ := net.SplitHostPort(addr)
	for _, dsn := range []string{
		"host=" + host + " port=" + port + " user=app dbname=test sslmode=disable password=" + pw,
		"postgres://app:" + pw + "@" + addr + "/test?sslmode=disable",
		"host=127.0.0.1 port=1 user=app dbname=test sslmode=disable connect_timeout=2 password=" + pw, // unreachable
	} {
		s := &Source{}
		block, _ := json.Marshal(map[string]any{"dsn": dsn, "table": "t", "query": "", "cursor": "updated_at", "key": "id", "json": "raw", "batch_rows": 10})
		if err := s.Configure(context.Background(), sdk.Config{Name: "tickets", JSON: block}); err != nil {
			t.Fatal(err)
		}
		_, err := s.Schema(context.Background())
		if err == nil || strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "connect to PostgreSQL") {
			t.Errorf("Schema: %v", err)
		}
		err = s.Read(context.Background(), nil, &collect{})
		if err == nil || strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "connect to PostgreSQL") {
			t.Errorf("Read: %v", err)
		}
		if strings.Contains(dsn, "port="+port) && !strings.Contains(err.Error(), sdk.Redacted) {
			t.Errorf("the server's message quoting the password was not redacted: %v", err)
		}
	}
	// A DSN that does not parse is named by its wrong part only.
	s := &Source{}
	block, _ := json.Marshal(map[string]any{"dsn": "host=localhost port=abc password=" + pw, "table": "t", "cursor": "c", "key": "k", "json": "raw", "batch_rows": 10})
	if err := s.Configure(context.Background(), sdk.Config{JSON: block}); err == nil || strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "invalid port") {
		t.Errorf("Configure: %v", err)
	}
}

// The text of a cursor or key value parses back to exactly the same value.
func TestPositionTextRoundTrips(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	for _, tc := range []struct {
		typ    string
		values []string
	}{
		{"timestamptz", []string{`'2025-03-01 10:00:00.123456+00'`, `'1999-12-31 23:59:59.999999-08'`, `'0001-01-01 00:00:00+00'`, `'4713-01-01 00:00:00+00 BC'`, `'294276-12-31 23:59:59.999999+00'`, `'infinity'`, `'-infinity'`}},
		{"timestamp", []string{`'2025-03-01 10:00:00.000001'`, `'0010-06-01 12:00:00 BC'`, `'1970-01-01 00:00:00'`}},
		{"date", []string{`'2025-03-01'`, `'0001-01-01'`, `'0001-12-31 BC'`, `'5874897-12-31'`, `'infinity'`}},
		{"numeric", []string{`0`, `-0.5`, `1e-30`, `123456789012345678901234567890.000000000100`, `'NaN'`, `'Infinity'`, `'-Infinity'`, `10000`, `99990000`, `0.00010000`}},
		{"numeric(10,4)", []string{`0`, `1`, `-1.5`, `123456.0001`, `-0.0001`}},
		{"double precision", []string{`0.1`, `1e300`, `-1.5e-300`, `123456789012`, `'NaN'`, `'Infinity'`, `5e-324`}},
		{"real", []string{`0.1`, `3.4e38`, `1e-45`, `16777217`}},
		{"smallint", []string{`-32768`, `32767`}},
		{"integer", []string{`-2147483648`, `2147483647`}},
		{"bigint", []string{`-9223372036854775808`, `9223372036854775807`, `0`}},
		{"uuid", []string{`'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'`}},
		{"text", []string{`''`, `'a b'`, `'ünïcødé 🙂'`, `E'new\nline'`}},
	} {
		for _, lit := range tc.values {
			rows, err := d.conn.Query(ctx, "SELECT ("+lit+")::"+tc.typ, pgx.QueryResultFormats{pgx.BinaryFormatCode})
			if err != nil {
				t.Fatal(err)
			}
			if !rows.Next() {
				t.Fatalf("%s %s: %v", tc.typ, lit, rows.Err())
			}
			raw := append([]byte(nil), rows.RawValues()[0]...)
			fd := rows.FieldDescriptions()[0]
			rows.Close()
			typ, err := resolveType(ctx, d.conn, fd.DataTypeOID, fd.TypeModifier)
			if err != nil {
				t.Fatal(err)
			}
			text, err := appendText(typ, nil, raw)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.typ, lit, err)
			}
			var same bool
			if err := d.conn.QueryRow(ctx, "SELECT $1::text::"+tc.typ+" IS NOT DISTINCT FROM ("+lit+")::"+tc.typ, string(text)).Scan(&same); err != nil {
				t.Fatalf("%s %s as %q: %v", tc.typ, lit, text, err)
			}
			if !same {
				t.Errorf("%s %s: %q does not read back as the same value", tc.typ, lit, text)
			}
		}
	}
}

func TestNumericText(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	rows, err := d.conn.Query(ctx, `SELECT v, v::text FROM (VALUES (0::numeric), (-0.5), (1e-30), (123456789012345678901234567890.000000000100), ('NaN'), ('Infinity'), ('-Infinity'), (10000), (99990000), (0.00010000), (-1234.5678), (1.1), (0.000), (100000000000000000000), (-0.1e-10)) x(v)`, pgx.QueryResultFormats{pgx.BinaryFormatCode, pgx.TextFormatCode})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		raw := rows.RawValues()
		got, err := appendNumericText(nil, raw[0])
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(raw[1]) {
			t.Errorf("numeric %s printed as %s", raw[1], got)
		}
		n++
	}
	if n != 15 {
		t.Fatalf("%d values", n)
	}
}

func TestDecimalMatchesText(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	for _, typ := range []string{"numeric(5,2)", "numeric(18,0)", "numeric(18,6)", "numeric(19,4)", "numeric(38,0)", "numeric(38,38)", "numeric(30,10)", "numeric(4,4)"} {
		var p, s int32
		fmt.Sscanf(typ, "numeric(%d,%d)", &p, &s)
		var vals []string
		for range 300 {
			// Random digits within the precision, random sign.
			digits := 1 + rand.IntN(int(p))
			var b strings.Builder
			if rand.IntN(2) == 0 {
				b.WriteByte('-')
			}
			for i := range digits {
				if i == digits-int(s) && s > 0 && int(s) < digits {
					b.WriteByte('.')
				}
				b.WriteByte(byte('0' + rand.IntN(10)))
			}
			v := b.String()
			if int(s) >= digits {
				v = strings.Replace(v, strings.TrimPrefix(v, "-"), "0."+strings.TrimPrefix(v, "-"), 1)
			}
			vals = append(vals, v)
		}
		vals = append(vals, "0")
		rows, err := d.conn.Query(ctx, `SELECT v::`+typ+`, v::`+typ+`::text FROM unnest($1::text[]) v`, pgx.QueryResultFormats{pgx.BinaryFormatCode, pgx.TextFormatCode}, vals)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			raw := rows.RawValues()
			num, err := numericDecimal(raw[0], p, s)
			if err != nil {
				t.Fatalf("%s %s: %v", typ, raw[1], err)
			}
			want := string(raw[1])
			if got := num.ToString(s); got != want {
				t.Errorf("%s: %s became %s", typ, want, got)
			}
		}
		rows.Close()
		if rows.Err() != nil {
			t.Fatal(rows.Err())
		}
	}
}

func TestNumericTypmods(t *testing.T) {
	d := newDB(t)
	var version int
	if err := d.conn.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[string]string{
		"numeric":        "utf8",
		"numeric(38,0)":  "decimal(38, 0)",
		"numeric(38,38)": "decimal(38, 38)",
		"numeric(39,2)":  "utf8",
		"numeric(1,0)":   "decimal(1, 0)",
		"numeric(3,5)":   "utf8", // scale above precision (PostgreSQL 15)
		"numeric(5,-2)":  "utf8", // negative scale (PostgreSQL 15)
	} {
		var oid uint32
		var typmod int32
		if (typ == "numeric(3,5)" || typ == "numeric(5,-2)") && version < 150000 {
			continue
		}
		d.exec(`CREATE TEMP TABLE n (v ` + typ + `)`)
		err := d.conn.QueryRow(context.Background(), `SELECT atttypid, atttypmod FROM pg_attribute WHERE attrelid = 'pg_temp.n'::regclass AND attnum = 1`).Scan(&oid, &typmod)
		d.exec(`DROP TABLE n`)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := resolveType(context.Background(), d.conn, oid, typmod)
		if err != nil {
			t.Fatal(err)
		}
		if got := pt.arrowType().String(); got != want {
			t.Errorf("%s: %s, want %s", typ, got, want)
		}
	}
}

func TestCompactJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"a": 1, "b": [1, 2]}`:          `{"a":1,"b":[1,2]}`,
		"{\n  \"a b\" : \"x \\\" y\"\n}": `{"a b":"x \" y"}`,
		`"\\" `:                          `"\\"`,
		`[ "\\\"  " , 1 ]`:               `["\\\"  ",1]`,
		`{"k":"tab	inside"}`:             `{"k":"tab	inside"}`,
		` null `:                         `null`,
	} {
		if got := string(compactJSON(nil, []byte(in))); got != want {
			t.Errorf("compact %q = %q, want %q", in, got, want)
		}
	}
}

// compactJSON agrees with encoding/json on random, indented JSON.
func TestCompactJSONLikeEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var value func(depth int) any
	value = func(depth int) any {
		switch k := r.IntN(8); {
		case k == 0 || depth > 4:
			pieces := []string{"a", " ", "\\", "\"", "\n", "\t", "é", "🙂", "\u2028", "x y z", "\\\"", "}", ","}
			var b strings.Builder
			for range r.IntN(20) {
				b.WriteString(pieces[r.IntN(len(pieces))])
			}
			return b.String()
		case k == 1:
			return r.NormFloat64() * 1e6
		case k == 2:
			return r.IntN(2) == 0
		case k == 3:
			return nil
		case k < 6:
			m := map[string]any{}
			for range r.IntN(6) {
				m[fmt.Sprint(value(5))] = value(depth + 1)
			}
			return m
		default:
			var l []any
			for range r.IntN(6) {
				l = append(l, value(depth+1))
			}
			return l
		}
	}
	for i := range 3000 {
		compact, _ := json.Marshal(value(0))
		var indented bytes.Buffer
		json.Indent(&indented, compact, strings.Repeat(" ", i%3), []string{" ", "\t", "  ", "\n"}[i%4])
		in := indented.Bytes()
		if i%2 == 0 {
			in = []byte(strings.ReplaceAll(string(in), ":", " :\r\n"))
		}
		var want bytes.Buffer
		if err := json.Compact(&want, in); err != nil {
			t.Fatal(err)
		}
		if got := compactJSON([]byte("prefix"), in); string(got) != "prefix"+want.String() {
			t.Fatalf("compact %q\n got %q\nwant %q", in, got[6:], want.String())
		}
	}
}

func TestInfo(t *testing.T) {
	info := (&Source{}).Info()
	if info.Type != "postgres" || info.Kind != sdk.KindSource {
		t.Fatalf("info %+v", info)
	}
	for _, a := range info.Config {
		if a.Description == "" {
			t.Errorf("%s has no description", a.Name)
		}
	}
}

// The source over the real plugin protocol.
func TestSourceProtocol(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.t (id int PRIMARY KEY, updated_at timestamptz NOT NULL, row_id text)`)
	d.exec(`INSERT INTO {s}.t VALUES (1, '2025-01-01', 'r1'), (2, '2025-01-01', NULL)`)
	cfg, _ := json.Marshal(map[string]any{"dsn": d.dsn, "table": d.schema + ".t", "query": "", "cursor": "updated_at", "key": "id", "json": "raw", "batch_rows": 1})
	sdktest.TestSource(t, func() sdk.Source { return &Source{} }, "", sdktest.SourceTest{
		Config: string(cfg),
		Want:   []string{`{"id":1,"updated_at":"2025-01-01T00:00:00Z","row_id":"r1"}`, `{"id":2,"updated_at":"2025-01-01T00:00:00Z"}`},
	})
	// A string row_id is the record's id, as the engine makes it.
	s := d.source(map[string]any{"table": "{s}.t"})
	got := read(t, s, nil)
	if got.ids[0] != "r1" || got.ids[1] != sdk.IDPrefix("tickets", d.schema+".t")+"2" {
		t.Errorf("ids %q", got.ids)
	}
	// Also when the key is the row_id.
	got = read(t, d.source(map[string]any{"table": "{s}.t", "key": "row_id"}), nil)
	if got.ids[0] != "r1" || len(got.ids) != 1 {
		t.Errorf("key row_id: ids %q", got.ids)
	}
	// A batch whose rows all have one sends none: the engine makes the same.
	d.exec(`UPDATE {s}.t SET row_id = 'r2' WHERE id = 2`)
	ids := &idsSent{}
	if err := s.Read(context.Background(), nil, ids); err != nil {
		t.Fatal(err)
	}
	if ids.batches != 1 || ids.sent {
		t.Errorf("%d batches, ids sent %v", ids.batches, ids.sent)
	}
}

type idsSent struct {
	batches int
	sent    bool
}

func (c *idsSent) Emit(rec arrow.RecordBatch, p []byte) error {
	return c.EmitAt(rec, p, sdk.Origin{})
}

func (c *idsSent) EmitAt(rec arrow.RecordBatch, _ []byte, o sdk.Origin) error {
	rec.Release()
	c.batches++
	c.sent = c.sent || o.IDs != nil
	return nil
}

func (c *idsSent) Skipped(int) {}
