package sinksnowflake

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/pipelinehq/pipeline/sdk"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) {
	// Do not unpack the driver's native helper library into $HOME in tests.
	os.Setenv("SF_DISABLE_MINICORE", "true")
	os.Exit(m.Run())
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func joinSQL(qs []string) string { return strings.Join(qs, ";\n\n") + ";\n" }

var testFields = []arrow.Field{
	{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
	{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "age", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "score", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "active", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "created_at", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "address", Type: arrow.StructOf(
		arrow.Field{Name: "city", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "zip", Type: arrow.BinaryTypes.String, Nullable: true},
	), Nullable: true},
	{Name: "tags", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
}

// batch builds an sdk.Batch from JSON rows of fields.
func batch(t *testing.T, fields []arrow.Field, rows string) sdk.Batch {
	t.Helper()
	rec, _, err := array.RecordFromJSON(memory.DefaultAllocator, arrow.NewSchema(fields, nil), strings.NewReader(rows))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Release)
	return sdk.NewBatch(rec)
}

func configJSON(t *testing.T, attrs map[string]any) sdk.Config {
	t.Helper()
	data, err := json.Marshal(attrs)
	if err != nil {
		t.Fatal(err)
	}
	return sdk.Config{Name: "wh", JSON: data}
}

func newSink(t *testing.T, attrs map[string]any) (*Sink, *bytes.Buffer) {
	t.Helper()
	logs := &bytes.Buffer{}
	s := &Sink{log: slog.New(slog.NewTextHandler(logs, nil))}
	if err := s.Configure(context.Background(), configJSON(t, attrs)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, logs
}

// readParquet decodes a staged file with pqarrow.
func readParquet(t *testing.T, path string) arrow.Table {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rdr, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tbl.Release)
	return tbl
}

// column returns a table column's values as JSON-ish strings.
func columnValues(t *testing.T, tbl arrow.Table, name string) []string {
	t.Helper()
	idx := tbl.Schema().FieldIndices(name)
	if len(idx) == 0 {
		t.Fatalf("no column %s in %s", name, tbl.Schema())
	}
	var out []string
	for _, chunk := range tbl.Column(idx[0]).Data().Chunks() {
		for i := 0; i < chunk.Len(); i++ {
			if chunk.IsNull(i) {
				out = append(out, "NULL")
			} else {
				out = append(out, chunk.ValueStr(i))
			}
		}
	}
	return out
}

func stagedFile(t *testing.T, f *fakeSnowflake, sqlText string) string {
	t.Helper()
	m := rePut.FindStringSubmatch(sqlText)
	if m == nil {
		t.Fatalf("not a PUT: %s", sqlText)
	}
	return filepath.Join(f.stageDir, filepath.Base(m[1]))
}

func findSQL(qs []string, prefix string) []string {
	var out []string
	for _, q := range qs {
		if strings.HasPrefix(q, prefix) {
			out = append(out, q)
		}
	}
	return out
}

func TestLoadThroughDriver(t *testing.T) {
	f := newFakeSnowflake(t)
	ctx := context.Background()
	s, logs := newSink(t, map[string]any{
		"dsn":   f.dsn("s3cr3t-pw"),
		"table": "events",
		"types": map[string]string{"created_at": "timestamp"},
	})

	b1 := batch(t, testFields, `[
		{"_pipeline_id": "r1", "name": "Ada", "age": 36, "score": 1.5, "active": true, "created_at": "2024-05-01T10:00:00Z", "address": {"city": "London", "zip": "N1"}, "tags": ["a", "b"]},
		{"_pipeline_id": "r2", "name": "Grace", "age": null, "score": 2, "active": false, "created_at": null, "address": null, "tags": null}
	]`)
	if err := s.Write(ctx, b1); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	first := f.sql()
	golden(t, "first_load.sql", joinSQL(first))

	// The staged file is the real driver's upload of the Parquet stream.
	puts := findSQL(first, "PUT ")
	if len(puts) != 1 {
		t.Fatalf("PUTs: %q", puts)
	}
	tbl := readParquet(t, stagedFile(t, f, puts[0]))
	if tbl.NumRows() != 2 {
		t.Fatalf("staged rows = %d, want 2", tbl.NumRows())
	}
	checks := map[string][]string{
		"_PIPELINE_ID":  {"r1", "r2"},
		"NAME":          {"Ada", "Grace"},
		"AGE":           {"36", "NULL"},
		"SCORE":         {"1.5", "2"},
		"ACTIVE":        {"true", "false"},
		"CREATED_AT":    {"2024-05-01T10:00:00Z", "NULL"},
		"ADDRESS":       {`{"city":"London","zip":"N1"}`, "NULL"},
		"TAGS":          {`["a","b"]`, "NULL"},
		"_PIPELINE_SEQ": {"0", "1"},
	}
	for col, want := range checks {
		if got := columnValues(t, tbl, col); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("staged %s = %q, want %q", col, got, want)
		}
	}
	if got := columnValues(t, tbl, colFile); got[0] != filepath.Base(stagedFile(t, f, puts[0])) {
		t.Errorf("_PIPELINE_FILE = %q", got)
	}

	// A new field: ALTER TABLE ... ADD COLUMN, logged; r1 again is merged.
	fields2 := append(append([]arrow.Field(nil), testFields[:3]...), arrow.Field{Name: "plan", Type: arrow.BinaryTypes.String, Nullable: true})
	b2 := batch(t, fields2, `[
		{"_pipeline_id": "r1", "name": "Ada L.", "age": 37, "plan": "pro"},
		{"_pipeline_id": "r3", "name": "Edsger", "age": 70, "plan": "free"}
	]`)
	if err := s.Write(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	second := f.sql()[len(first):]
	golden(t, "new_field.sql", joinSQL(second))
	if !strings.Contains(logs.String(), "added a column for a new field") || !strings.Contains(logs.String(), "column=PLAN") {
		t.Errorf("the new column was not logged:\n%s", logs)
	}
	tbl2 := readParquet(t, stagedFile(t, f, findSQL(second, "PUT ")[0]))
	if got := columnValues(t, tbl2, "PLAN"); strings.Join(got, "|") != "pro|free" {
		t.Errorf("PLAN = %q", got)
	}
	if got := columnValues(t, tbl2, "NAME"); strings.Join(got, "|") != "Ada L.|Edsger" {
		t.Errorf("NAME = %q", got)
	}

	// The login carried the configured account, user and warehouse.
	if len(f.logins) == 0 {
		t.Fatal("no login")
	}
	login, _ := json.Marshal(f.logins[0])
	for _, want := range []string{`"ACCOUNT_NAME":"testacct"`, `"LOGIN_NAME":"tester"`} {
		if !strings.Contains(string(login), want) {
			t.Errorf("login request lacks %s: %s", want, login)
		}
	}
}

func TestRetriedFlushUsesTheSameFile(t *testing.T) {
	f := newFakeSnowflake(t)
	ctx := context.Background()
	rows := `[{"_pipeline_id": "a", "name": "x"}, {"_pipeline_id": "b", "name": "y"}]`
	var names []string
	for range 2 {
		s, _ := newSink(t, map[string]any{"dsn": f.dsn("pw"), "table": "events"})
		if err := s.Write(ctx, batch(t, testFields[:2], rows)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		puts := findSQL(f.sql(), "PUT ")
		names = append(names, puts[len(puts)-1])
	}
	if names[0] != names[1] {
		t.Errorf("a retried flush PUT %q, then %q", names[0], names[1])
	}
	if want := loadFileName("a", "b", 2); !strings.Contains(names[0], want) {
		t.Errorf("PUT %q does not name %s", names[0], want)
	}
}

func TestIncompatibleTypeStops(t *testing.T) {
	f := newFakeSnowflake(t)
	f.tables[`"ANALYTICS"."PUBLIC"."EVENTS"`] = [][2]string{{colID, "VARCHAR(16777216)"}, {"NAME", "VARCHAR(16777216)"}, {"AGE", "VARCHAR(16777216)"}}
	ctx := context.Background()
	s, _ := newSink(t, map[string]any{"dsn": f.dsn("pw"), "table": "events"})
	if err := s.Write(ctx, batch(t, testFields[:3], `[{"_pipeline_id": "a", "name": "x", "age": 3}]`)); err != nil {
		t.Fatal(err)
	}
	err := s.Flush(ctx)
	if err == nil {
		t.Fatal("no error for an int field in a VARCHAR column")
	}
	for _, want := range []string{`column "AGE"`, "VARCHAR(16777216)", "NUMBER(38,0)", `field "age"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	golden(t, "type_change_error.txt", err.Error()+"\n")
	if puts := findSQL(f.sql(), "PUT "); len(puts) != 0 {
		t.Errorf("loaded despite the error: %q", puts)
	}
}

func TestIntegersLoadIntoFloatColumn(t *testing.T) {
	f := newFakeSnowflake(t)
	f.tables[`"ANALYTICS"."PUBLIC"."EVENTS"`] = [][2]string{{colID, "VARCHAR(16777216)"}, {"AGE", "FLOAT"}}
	ctx := context.Background()
	s, _ := newSink(t, map[string]any{"dsn": f.dsn("pw"), "table": "events"})
	if err := s.Write(ctx, batch(t, []arrow.Field{testFields[0], testFields[2]}, `[{"_pipeline_id": "a", "age": 3}]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	tbl := readParquet(t, stagedFile(t, f, findSQL(f.sql(), "PUT ")[0]))
	if typ := tbl.Schema().Field(tbl.Schema().FieldIndices("AGE")[0]).Type; typ.ID() != arrow.FLOAT64 {
		t.Errorf("AGE staged as %s, want float64", typ)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	const password = "hunter2-Very-Secret"
	f := newFakeSnowflake(t)
	dsn := f.dsn(password)
	f.failOn = "COPY INTO"
	f.failMsg = "boom while connecting with " + dsn + " and " + password
	ctx := context.Background()
	s, _ := newSink(t, map[string]any{"dsn": dsn, "table": "events"})
	if err := s.Write(ctx, batch(t, testFields[:2], `[{"_pipeline_id": "a", "name": "x"}]`)); err != nil {
		t.Fatal(err)
	}
	err := s.Flush(ctx)
	if err == nil {
		t.Fatal("COPY failure not reported")
	}
	if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), dsn) {
		t.Errorf("error leaks a secret: %v", err)
	}
	if !strings.Contains(err.Error(), "COPY INTO") || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("error %q does not say which statement failed", err)
	}

	// A DSN that does not parse.
	bad := &Sink{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err = bad.Configure(ctx, configJSON(t, map[string]any{"dsn": "tester:" + password + "@host?protocol=%zz", "table": "t"}))
	if err == nil {
		t.Fatal("bad DSN accepted")
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("Configure error leaks the password: %v", err)
	}

	// Wrong password at login.
	f2 := newFakeSnowflake(t)
	f2.srv.Config.Handler = loginFails(password)
	s2, _ := newSink(t, map[string]any{"dsn": f2.dsn(password), "table": "events"})
	if err := s2.Write(ctx, batch(t, testFields[:2], `[{"_pipeline_id": "a", "name": "x"}]`)); err != nil {
		t.Fatal(err)
	}
	err = s2.Flush(ctx)
	if err == nil {
		t.Fatal("failed login not reported")
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("login error leaks the password: %v", err)
	}
}

func TestFlattenAndAppend(t *testing.T) {
	f := newFakeSnowflake(t)
	ctx := context.Background()
	s, _ := newSink(t, map[string]any{"dsn": f.dsn("pw"), "table": "events", "flatten": true, "mode": "append"})
	if err := s.Write(ctx, batch(t, []arrow.Field{testFields[0], testFields[6]}, `[
		{"_pipeline_id": "a", "address": {"city": "Oslo", "zip": "0150"}},
		{"_pipeline_id": "b", "address": null}
	]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	golden(t, "flatten_append.sql", joinSQL(f.sql()))
	tbl := readParquet(t, stagedFile(t, f, findSQL(f.sql(), "PUT ")[0]))
	if got := columnValues(t, tbl, "ADDRESS_CITY"); strings.Join(got, "|") != "Oslo|NULL" {
		t.Errorf("ADDRESS_CITY = %q", got)
	}
}

func TestKeyMerge(t *testing.T) {
	tr := tableRef{Database: "ANALYTICS", Schema: "PUBLIC", Name: "CUSTOMERS"}
	cols := []column{{Name: colID, Type: typeVarchar}, {Name: "EMAIL", Type: typeVarchar}, {Name: "SEEN_AT", Type: typeTimestampTZ}, {Name: "PROFILE", Type: typeVariant}}
	golden(t, "merge_on_email.sql", mergeSQL(tr, cols, "EMAIL", "load_x.parquet")+";\n")
	golden(t, "insert.sql", insertSQL(tr, cols, "load_x.parquet")+";\n")

	f := newFakeSnowflake(t)
	ctx := context.Background()
	s, _ := newSink(t, map[string]any{"dsn": f.dsn("pw"), "table": "customers", "key": "name"})
	if err := s.Write(ctx, batch(t, testFields[:2], `[{"_pipeline_id": "a", "name": null}]`)); err == nil || !strings.Contains(err.Error(), `key "NAME" is null`) {
		t.Errorf("a null key: %v", err)
	}
	if err := s.Write(ctx, batch(t, []arrow.Field{testFields[0], testFields[2]}, `[{"_pipeline_id": "a", "age": 1}]`)); err == nil || !strings.Contains(err.Error(), "no such field") {
		t.Errorf("a missing key: %v", err)
	}
}

func TestFlushDue(t *testing.T) {
	s, _ := newSink(t, map[string]any{"dsn": "u:p@acct/db/sch", "table": "t", "batch": map[string]any{"rows": 3, "interval": "10s"}})
	ctx := context.Background()
	now := time.Now()
	if s.FlushDue(now) {
		t.Error("due with nothing held")
	}
	if err := s.Write(ctx, batch(t, testFields[:2], `[{"_pipeline_id": "a", "name": "x"}]`)); err != nil {
		t.Fatal(err)
	}
	if s.FlushDue(now) {
		t.Error("due after one row")
	}
	if !s.FlushDue(now.Add(11 * time.Second)) {
		t.Error("not due after the interval")
	}
	if err := s.Write(ctx, batch(t, testFields[:2], `[{"_pipeline_id": "b", "name": "x"}, {"_pipeline_id": "c", "name": "y"}]`)); err != nil {
		t.Fatal(err)
	}
	if !s.FlushDue(now) {
		t.Error("not due at 3 rows")
	}
}

func TestConfigureErrors(t *testing.T) {
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"table": "t"}, "set dsn, or account and user"},
		{map[string]any{"account": "a", "user": "u", "table": "t"}, "set password or private_key_path"},
		{map[string]any{"dsn": "u:p@a/db/s", "password": "x", "table": "t"}, "either dsn"},
		{map[string]any{"dsn": "u:p@a/db/s", "table": "t", "mode": "upsert"}, `mode "upsert"`},
		{map[string]any{"dsn": "u:p@a/db/s", "table": "t", "types": map[string]string{"x": "int"}}, `"timestamp", "date"`},
		{map[string]any{"dsn": "u:p@a/db/s", "table": "a.b"}, "give database, schema and table separately"},
		{map[string]any{"account": "a", "user": "u", "private_key_path": "/nonexistent.pem", "table": "t"}, "private_key_path"},
	} {
		s := &Sink{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		err := s.Configure(context.Background(), configJSON(t, tc.attrs))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.attrs, err, tc.want)
		}
	}
}
