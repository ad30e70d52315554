package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgSource is a test database with a schema of its own, dropped at the end.
type pgSource struct {
	t      *testing.T
	dsn    string
	schema string
	conn   *pgx.Conn
}

func newPGSource(t *testing.T) *pgSource {
	t.Helper()
	dsn := postgresDSN(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := fmt.Sprintf("e2e_pgsrc_%d", rand.IntN(1e9))
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		conn.Close(context.Background())
	})
	return &pgSource{t: t, dsn: dsn, schema: schema, conn: conn}
}

// exec runs SQL with {s} standing for the schema.
func (p *pgSource) exec(sql string) {
	p.t.Helper()
	if _, err := p.conn.Exec(context.Background(), strings.ReplaceAll(sql, "{s}", p.schema)); err != nil {
		p.t.Fatalf("%s: %v", sql, err)
	}
}

// hcl is a pipeline of source "postgres" "tickets" (with the block's body
// attrs, {s} the schema) into sink "file" out.jsonl.
func (p *pgSource) hcl(attrs string) string {
	return fmt.Sprintf(`pipeline { name = "pgsource" }

source "postgres" "tickets" {
  dsn = %q
%s
}

sink "file" "out" {
  inputs = [source.tickets]
  path   = "out.jsonl"
}
`, p.dsn, strings.ReplaceAll(attrs, "{s}", p.schema))
}

// outLines are the lines of out.jsonl in dir.
func outLines(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// outIDs counts each record's "id" in out.jsonl.
func outIDs(t *testing.T, dir string) map[int64]int {
	t.Helper()
	out := map[int64]int{}
	for _, line := range outLines(t, dir) {
		if line == "" {
			continue
		}
		var v struct {
			ID *int64 `json:"id"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil || v.ID == nil {
			t.Fatalf("out.jsonl: %q: %v", line, err)
		}
		out[*v.ID]++
	}
	return out
}

func TestPostgresSourceIncrementalRuns(t *testing.T) {
	p := newPGSource(t)
	p.exec(`CREATE TABLE {s}.tickets (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, subject text)`)
	// Ten rows per cursor value.
	p.exec(`INSERT INTO {s}.tickets SELECT i, '2025-03-01 10:00:00+00'::timestamptz + (i / 10) * interval '1 minute', 'subject ' || i FROM generate_series(0, 99) i`)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.hcl"), p.hcl(`  table      = "{s}.tickets"
  cursor     = "updated_at"
  key        = "id"
  batch_rows = 7`))
	run := func(args ...string) summary {
		t.Helper()
		res := pipeline(t, dir, nil, append([]string{"run", "--json", "--state", "state.db"}, args...)...)
		if res.code != 0 {
			t.Fatalf("run %v: exit %d\n%s", args, res.code, res.stderr)
		}
		return parseSummary(t, res)
	}
	if s := run("p.hcl"); s.Read != 100 {
		t.Fatalf("first run read %d, want 100", s.Read)
	}
	if got := outIDs(t, dir); len(got) != 100 {
		t.Fatalf("out.jsonl has %d records", len(got))
	}
	if s := run("p.hcl"); s.Read != 0 {
		t.Fatalf("a run with nothing new read %d", s.Read)
	}
	// New rows: some share the last cursor value (keys above the last
	// one), some come later; an updated row moves forward.
	p.exec(`INSERT INTO {s}.tickets SELECT i, '2025-03-01 10:09:00+00', 'tie ' || i FROM generate_series(100, 104) i`)
	p.exec(`INSERT INTO {s}.tickets SELECT i, '2025-03-02 00:00:00+00', 'later ' || i FROM generate_series(105, 119) i`)
	p.exec(`UPDATE {s}.tickets SET updated_at = '2025-03-03 00:00:00+00', subject = 'edited' WHERE id = 5`)
	if s := run("p.hcl"); s.Read != 21 {
		t.Fatalf("second run read %d, want the 20 new rows and the updated one", s.Read)
	}
	got := outIDs(t, dir)
	for id := int64(0); id < 120; id++ {
		want := 1
		if id == 5 {
			want = 2 // read again after its update
		}
		if got[id] != want {
			t.Errorf("id %d: %d times in out.jsonl, want %d", id, got[id], want)
		}
	}
	lines := outLines(t, dir)
	if last := lines[len(lines)-1]; last != `{"id":5,"updated_at":"2025-03-03T00:00:00Z","subject":"edited"}` {
		t.Errorf("last line %s", last)
	}
	// --full-refresh reads everything again (and sink "file" replaces
	// its file).
	if s := run("--full-refresh", "p.hcl"); s.Read != 120 {
		t.Fatalf("full refresh read %d, want 120", s.Read)
	}
	if got := outIDs(t, dir); len(got) != 120 {
		t.Fatalf("after the full refresh out.jsonl has %d records", len(got))
	}
}

// Every mapped type through the real binary into JSONL, compared as text.
func TestPostgresSourceTypesRoundTripIntoJSONL(t *testing.T) {
	p := newPGSource(t)
	p.exec(`CREATE TYPE {s}.mood AS ENUM ('sad', 'happy')`)
	p.exec(`CREATE TABLE {s}.types (
	id int PRIMARY KEY, updated_at timestamptz NOT NULL,
	i2 smallint, i4 integer, i8 bigint, num numeric(12,3), num38 numeric(38,10), numfree numeric, numbig numeric(50,2),
	f4 real, f8 double precision, b boolean, t text, vc varchar(10), c char(4), u uuid,
	ts timestamp, tstz timestamptz, d date, js json, jb jsonb, mood {s}.mood,
	a_i4 integer[], a_i8 bigint[], a_t text[], a_num numeric(6,2)[], a_f8 float8[], a_b bool[], a_d date[], a_tstz timestamptz[], a_ts timestamp[], a_jb jsonb[], a_u uuid[])`)
	p.exec(`INSERT INTO {s}.types VALUES
(1, '2025-01-01 00:00:00+00', -32768, -2147483648, -9223372036854775808, -123456789.125, 1234567890123456789012345678.0123456789, '-0.000000000000000000001', 12345678901234567890123456789012345678901234567.89,
 1.5, 0.1, true, E'Hej då 🙂 "quoted" \\ back\nline', 'varchar', 'ab', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
 '1999-12-31 23:59:59.999999', '2024-02-29 12:34:56.789012+02', '2024-02-29', E'{\n  "b": 1,\n  "a": [1, 2.50, "x y"]\n}', '{"z": {"y": null}, "a": "str\"ing", "n": 1.10}', 'happy',
 '{1,NULL,3}', '{9223372036854775807}', '{"a b","",NULL,"{}"}', '{1.50,-2.25}', '{0.5,-1e300}', '{t,f,NULL}', '{2025-01-01}', '{"2025-01-01 00:00:00.000001+00"}', '{"2025-01-01 00:00:00.5"}', ARRAY['{"k": 1}'::jsonb, NULL, '[]'], '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'),
(2, '2025-01-01 00:00:00+00', 32767, 2147483647, 9223372036854775807, 0.5, -0.5, 'NaN', 0,
 -0.25, 1e300, false, '', '', '', '00000000-0000-0000-0000-000000000000',
 '2038-01-19 03:14:08', '1970-01-01 00:00:00+00', '9999-12-31', '"just a string"', 'null', 'sad',
 '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'),
(3, '2025-01-02 00:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`)
	want := []string{
		`{"id":1,"updated_at":"2025-01-01T00:00:00Z","i2":-32768,"i4":-2147483648,"i8":-9223372036854775808,"num":"-123456789.125","num38":"1234567890123456789012345678.0123456789","numfree":"-0.000000000000000000001","numbig":"12345678901234567890123456789012345678901234567.89","f4":1.5,"f8":0.1,"b":true,"t":"Hej då 🙂 \"quoted\" \\ back\nline","vc":"varchar","c":"ab  ","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","ts":"1999-12-31T23:59:59.999999Z","tstz":"2024-02-29T10:34:56.789012Z","d":"2024-02-29","js":{"b":1,"a":[1,2.50,"x y"]},"jb":{"a":"str\"ing","n":1.10,"z":{"y":null}},"mood":"happy","a_i4":[1,null,3],"a_i8":[9223372036854775807],"a_t":["a b","",null,"{}"],"a_num":["1.5","-2.25"],"a_f8":[0.5,-1e+300],"a_b":[true,false,null],"a_d":["2025-01-01"],"a_tstz":["2025-01-01T00:00:00.000001Z"],"a_ts":["2025-01-01T00:00:00.5Z"],"a_jb":[{"k":1},null,[]],"a_u":["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]}`,
		`{"id":2,"updated_at":"2025-01-01T00:00:00Z","i2":32767,"i4":2147483647,"i8":9223372036854775807,"num":"0.5","num38":"-0.5","numfree":"NaN","numbig":"0.00","f4":-0.25,"f8":1e+300,"b":false,"t":"","vc":"","c":"    ","u":"00000000-0000-0000-0000-000000000000","ts":"2038-01-19T03:14:08Z","tstz":"1970-01-01T00:00:00Z","d":"9999-12-31","js":"just a string","jb":null,"mood":"sad","a_i4":[],"a_i8":[],"a_t":[],"a_num":[],"a_f8":[],"a_b":[],"a_d":[],"a_tstz":[],"a_ts":[],"a_jb":[],"a_u":[]}`,
		`{"id":3,"updated_at":"2025-01-02T00:00:00Z"}`,
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.hcl"), p.hcl(`  table  = "{s}.types"
  cursor = "updated_at"
  key    = "id"`))
	if res := pipeline(t, dir, nil, "validate", "p.hcl"); res.code != 0 {
		t.Fatalf("validate: exit %d\n%s", res.code, res.stderr)
	}
	if res := pipeline(t, dir, nil, "run", "--state", "state.db", "p.hcl"); res.code != 0 {
		t.Fatalf("run: exit %d\n%s", res.code, res.stderr)
	}
	got := outLines(t, dir)
	if len(got) != len(want) {
		t.Fatalf("out.jsonl has %d lines, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, got[i], want[i])
		}
	}

	// json = "struct": the same JSON, decoded into nested fields; a filter
	// reads into them.
	p.exec(`CREATE TABLE {s}.calls (id int PRIMARY KEY, updated_at timestamptz NOT NULL, classifications jsonb)`)
	p.exec(`INSERT INTO {s}.calls VALUES (1, '2025-01-01', '{"churn_risk": {"label": "High", "confidence": 0.93}}'), (2, '2025-01-02', '{"churn_risk": {"label": "Low", "confidence": 0.2}}'), (3, '2025-01-03', NULL)`)
	dir = t.TempDir()
	writeFile(t, filepath.Join(dir, "p.hcl"), fmt.Sprintf(`pipeline { name = "pgsource" }
source "postgres" "calls" {
  dsn    = %q
  table  = "%s.calls"
  cursor = "updated_at"
  key    = "id"
  json   = "struct"
}
filter "high" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}
sink "file" "out" {
  inputs = [filter.high]
  path   = "out.jsonl"
}
`, p.dsn, p.schema))
	if res := pipeline(t, dir, nil, "run", "--state", "state.db", "p.hcl"); res.code != 0 {
		t.Fatalf("run: exit %d\n%s", res.code, res.stderr)
	}
	if got := strings.Join(outLines(t, dir), "\n"); got != `{"id":1,"updated_at":"2025-01-01T00:00:00Z","classifications":{"churn_risk":{"label":"High","confidence":0.93}}}` {
		t.Errorf("json = struct, filtered: %s", got)
	}
}

// SIGKILL mid-run, then run again: every row arrives at least once and
// none is missing, though many rows share each cursor value and batch
// boundaries fall among them.
func TestPostgresSourceSIGKILLMidRunThenRerun(t *testing.T) {
	const total = 200_000
	p := newPGSource(t)
	p.exec(`CREATE TABLE {s}.tickets (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, subject text, body text)`)
	p.exec(fmt.Sprintf(`INSERT INTO {s}.tickets SELECT i, '2025-03-01'::timestamptz + (i / 37) * interval '1 second', 'subject ' || i, repeat('x', 100) FROM generate_series(0, %d) i`, total-1))
	p.exec(`CREATE INDEX ON {s}.tickets (updated_at, id)`)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.hcl"), p.hcl(`  table      = "{s}.tickets"
  cursor     = "updated_at"
  key        = "id"
  batch_rows = 500`))
	state := filepath.Join(dir, "state.db")

	kills := 0
	for attempt := 0; attempt < 3 && kills == 0; attempt++ {
		cmd := exec.Command(bin("pipeline"), "run", "--state", state, "p.hcl")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		// Kill soon after the first checkpoint is committed (a random
		// 0-150 ms later), so the rerun has a position to resume from
		// and rows past it to read again, on a fast machine as on a
		// slow one.
		deadline := time.Now().Add(60 * time.Second)
	wait:
		for time.Now().Before(deadline) {
			if committedRecords(state, "pgsource") > 0 {
				time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
				break
			}
			select {
			case err := <-done:
				done <- err
				break wait
			default:
			}
			time.Sleep(2 * time.Millisecond)
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		var exitErr error
		select {
		case exitErr = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the engine did not die")
		}
		if ee, ok := exitErr.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
			kills++
			t.Logf("killed with %d lines written", len(outLines(t, dir)))
		} else {
			t.Logf("run %d ended on its own (%v)\n%s", attempt+1, exitErr, stderr.String())
			os.Remove(filepath.Join(dir, "out.jsonl"))
			os.Remove(state)
		}
	}
	if kills == 0 {
		t.Fatal("no run was killed mid-read: the test proves nothing")
	}
	before := len(outLines(t, dir))
	committed := committedRecords(state, "pgsource")
	res := pipeline(t, dir, nil, "run", "--json", "--state", state, "p.hcl")
	if res.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", res.code, res.stderr)
	}
	s := parseSummary(t, res)
	got := outIDs(t, dir)
	dups := 0
	for id := int64(0); id < total; id++ {
		switch n := got[id]; {
		case n == 0:
			t.Fatalf("id %d never arrived", id)
		case n > 1:
			dups += n - 1
		}
	}
	if len(got) != total {
		t.Fatalf("%d distinct ids, want %d", len(got), total)
	}
	// The rerun starts at the committed position: it reads what was not
	// committed, never everything again.
	if s.Read != total-committed || int(s.Read) < total-before {
		t.Errorf("the rerun read %d rows; %d were committed and %d written before the kill, of %d", s.Read, committed, before, total)
	}
	t.Logf("%d lines before the kill, %d committed; the rerun read %d; %d rows written twice", before, committed, s.Read, dups)
}

// committedRecords is how many records the committed checkpoints of
// pipeline hold, read from the state file beside a live run (0 when
// there is none yet).
func committedRecords(path, pipeline string) int64 {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return 0
	}
	defer db.Close()
	var n sql.NullInt64
	db.QueryRow(`SELECT sum(records) FROM checkpoints WHERE pipeline = ?`, pipeline).Scan(&n)
	return n.Int64
}

func TestPostgresSourceQuery(t *testing.T) {
	p := newPGSource(t)
	p.exec(`CREATE TABLE {s}.tickets (id int PRIMARY KEY, updated_at timestamptz NOT NULL, customer_id int, subject text, status text)`)
	p.exec(`CREATE TABLE {s}.customers (id int PRIMARY KEY, name text)`)
	p.exec(`INSERT INTO {s}.customers VALUES (1, 'Acme'), (2, 'Globex')`)
	p.exec(`INSERT INTO {s}.tickets SELECT i, '2025-03-01'::timestamptz + (i / 2) * interval '1 hour', 1 + i % 2, 'subject ' || i, CASE WHEN i % 3 = 0 THEN 'spam' ELSE 'open' END FROM generate_series(1, 12) i`)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.hcl"), p.hcl(`  query = <<-SQL
    SELECT t.id, t.updated_at, c.name AS customer, t.subject
    FROM {s}.tickets t
    JOIN {s}.customers c ON c.id = t.customer_id
    WHERE t.status <> 'spam'
  SQL
  cursor     = "updated_at"
  key        = "id"
  batch_rows = 3`))
	if res := pipeline(t, dir, nil, "run", "--state", "state.db", "p.hcl"); res.code != 0 {
		t.Fatalf("run: exit %d\n%s", res.code, res.stderr)
	}
	got := outLines(t, dir)
	if len(got) != 8 || got[0] != `{"id":1,"updated_at":"2025-03-01T00:00:00Z","customer":"Globex","subject":"subject 1"}` {
		t.Fatalf("out.jsonl:\n%s", strings.Join(got, "\n"))
	}
	p.exec(`INSERT INTO {s}.tickets VALUES (13, '2025-03-01 06:00:00+00', 1, 'tie', 'open'), (14, '2025-04-01', 2, 'later', 'open'), (15, '2025-04-01', 2, 'spam', 'spam')`)
	if res := pipeline(t, dir, nil, "run", "--state", "state.db", "p.hcl"); res.code != 0 {
		t.Fatalf("second run: exit %d\n%s", res.code, res.stderr)
	}
	ids := outIDs(t, dir)
	if len(ids) != 10 || ids[13] != 1 || ids[14] != 1 || ids[15] != 0 {
		t.Fatalf("after the second run: %v", ids)
	}

	// A query that orders its rows is refused at validate, at the block.
	writeFile(t, filepath.Join(dir, "bad.hcl"), p.hcl(`  query  = "SELECT * FROM {s}.tickets ORDER BY id"
  cursor = "updated_at"
  key    = "id"`))
	res := pipeline(t, dir, nil, "validate", "bad.hcl")
	if res.code != 1 || !strings.Contains(res.stderr, "leave out ORDER BY") || !strings.Contains(res.stderr, "bad.hcl:") {
		t.Fatalf("validate of a query with ORDER BY: exit %d\n%s", res.code, res.stderr)
	}
}

func TestPostgresSourceValidateReportsBadColumnType(t *testing.T) {
	p := newPGSource(t)
	p.exec(`CREATE TABLE {s}.tickets (id int PRIMARY KEY, updated_at timestamptz NOT NULL, subject text, wait interval)`)
	dir := t.TempDir()
	hcl := p.hcl(`  table  = "{s}.tickets"
  cursor = "updated_at"
  key    = "id"`)
	writeFile(t, filepath.Join(dir, "p.hcl"), hcl)
	res := pipeline(t, dir, nil, "validate", "p.hcl")
	if res.code != 1 {
		t.Fatalf("validate: exit %d, want 1\n%s", res.code, res.stderr)
	}
	diags := validateDiags(res.stderr)
	if len(diags) != 1 || diags[0].at != "p.hcl:3" || diags[0].severity != "Error" {
		t.Fatalf("want one error at the block, p.hcl:3, got %+v:\n%s", diags, res.stderr)
	}
	for _, want := range []string{`column "wait" has type interval`, `source "postgres" "tickets"`, "wait::text AS wait"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("validate output lacks %q:\n%s", want, res.stderr)
		}
	}
	if run := pipeline(t, dir, nil, "run", "--state", "state.db", "p.hcl"); run.code != 1 || !strings.Contains(run.stderr, `column "wait" has type interval`) {
		t.Errorf("run: exit %d\n%s", run.code, run.stderr)
	}

	// With the column cast in a query, validate checks expressions against
	// the real columns: a misspelt one is an error, not a warning.
	p.exec(`ALTER TABLE {s}.tickets DROP COLUMN wait`)
	writeFile(t, filepath.Join(dir, "f.hcl"), strings.Replace(hcl, `sink "file" "out" {
  inputs = [source.tickets]`, `filter "open" {
  inputs = [source.tickets]
  where  = "subjekt == 'x'"
}

sink "file" "out" {
  inputs = [filter.open]`, 1))
	res = pipeline(t, dir, nil, "validate", "f.hcl")
	if res.code != 1 || !strings.Contains(res.stderr, "subjekt") {
		t.Fatalf("validate of a filter on a missing column: exit %d\n%s", res.code, res.stderr)
	}
}

// Neither validate nor run shows the password of a DSN that fails.
func TestPostgresSourcePasswordNotShown(t *testing.T) {
	dir := t.TempDir()
	const pw = "Sup3rS3cretPw"
	writeFile(t, filepath.Join(dir, "p.hcl"), `source "postgres" "tickets" {
  dsn    = "postgres://app:`+pw+`@127.0.0.1:1/test?sslmode=disable&connect_timeout=2"
  table  = "tickets"
  cursor = "updated_at"
  key    = "id"
}

sink "file" "out" {
  inputs = [source.tickets]
  path   = "out.jsonl"
}
`)
	for _, args := range [][]string{{"validate", "p.hcl"}, {"run", "--state", "state.db", "p.hcl"}} {
		res := pipeline(t, dir, nil, args...)
		if res.code != 1 || !strings.Contains(res.stderr, "connect to PostgreSQL") {
			t.Fatalf("%v: exit %d\n%s", args, res.code, res.stderr)
		}
		if strings.Contains(res.stderr+res.stdout, pw) {
			t.Errorf("%v shows the password:\n%s", args, res.stderr)
		}
	}
}
