package sinkpostgres

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

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

func TestMergeSQLGolden(t *testing.T) {
	key := &column{name: "label_id", key: true}
	ver := &column{name: "updated_at", ver: true}
	load := []*column{{name: IDColumn, id: true}, key, {name: "label"}, ver}
	golden(t, "merge.sql", mergeSQL(`"public"."labels"`, load, key, nil)+";\n")
	golden(t, "merge_version.sql", mergeSQL(`"public"."labels"`, load, key, ver)+";\n")
}

// label reads the label and version of a key as "label@version".
func (d *db) label(table, key string) string {
	d.t.Helper()
	v := d.queryOne(`SELECT label || '@' || coalesce(v::text, 'null') FROM `+ident(d.schema, table)+` WHERE label_id = $1`, key)
	return v.(string)
}

func TestVersionAcrossLoads(t *testing.T) {
	d := newDB(t)
	if _, err := d.conn.Exec(context.Background(), "SET TIME ZONE 'UTC'"); err != nil {
		t.Fatal(err)
	}
	attrs := map[string]any{"key": "label_id", "version": "v", "types": map[string]string{"v": "timestamp"}}
	s := d.sink("lbl", attrs, false)
	// Newest first, one load each: the first (newest) stays.
	mustLoad(t, s, []string{`{"row_id":"e3","label_id":"a","label":"third","v":"2024-05-01T12:00:03Z"}`}, 1)
	mustLoad(t, s, []string{`{"row_id":"e2","label_id":"a","label":"second","v":"2024-05-01T12:00:02Z"}`}, 1)
	// A later run, and a version in another offset that is older.
	s = d.sink("lbl", attrs, false)
	mustLoad(t, s, []string{`{"row_id":"e1","label_id":"a","label":"first","v":"2024-05-01T14:00:01+02:00"}`}, 1)
	if got := d.label("lbl", "a"); got != "third@2024-05-01 12:00:03+00" {
		t.Errorf("after late, older events: %s, want third", got)
	}
	if s.lastLoad.Rows != 0 {
		t.Errorf("an older event counted %d rows written", s.lastLoad.Rows)
	}
	// An equal version replaces (>=): the later arrival wins.
	mustLoad(t, s, []string{`{"row_id":"e3b","label_id":"a","label":"third again","v":"2024-05-01T12:00:03Z"}`}, 1)
	if got := d.label("lbl", "a"); got != "third again@2024-05-01 12:00:03+00" {
		t.Errorf("an equal version: %s, want third again", got)
	}
	// A newer one replaces.
	mustLoad(t, s, []string{`{"row_id":"e4","label_id":"a","label":"fourth","v":"2024-05-01T12:00:04Z"}`}, 1)
	if got := d.label("lbl", "a"); got != "fourth@2024-05-01 12:00:04+00" {
		t.Errorf("a newer version: %s, want fourth", got)
	}
	// A null version (or none) never replaces a stored one.
	mustLoad(t, s, []string{`{"row_id":"e5","label_id":"a","label":"null","v":null}`, `{"row_id":"e6","label_id":"a","label":"absent","other":1}`}, 1)
	if got := d.label("lbl", "a"); got != "fourth@2024-05-01 12:00:04+00" {
		t.Errorf("a null version: %s, want fourth", got)
	}
	// A stored null is replaced by a null (equal) and by any value.
	mustLoad(t, s, []string{`{"row_id":"n1","label_id":"b","label":"null 1","v":null}`}, 1)
	mustLoad(t, s, []string{`{"row_id":"n2","label_id":"b","label":"null 2"}`}, 1)
	if got := d.label("lbl", "b"); got != "null 2@null" {
		t.Errorf("a null over a null: %s, want null 2", got)
	}
	mustLoad(t, s, []string{`{"row_id":"n3","label_id":"b","label":"dated","v":"1970-01-01T00:00:00Z"}`}, 1)
	if got := d.label("lbl", "b"); got != "dated@1970-01-01 00:00:00+00" {
		t.Errorf("a value over a null: %s, want dated", got)
	}
	if n := d.count("lbl"); n != 2 {
		t.Errorf("%d rows, want 2", n)
	}
}

func TestVersionWithinALoad(t *testing.T) {
	d := newDB(t)
	s := d.sink("lbl", map[string]any{"key": "label_id", "version": "v"}, false)
	recs := []string{
		// Newest first.
		`{"row_id":"a3","label_id":"a","label":"third","v":3}`,
		`{"row_id":"a2","label_id":"a","label":"second","v":2}`,
		`{"row_id":"a1","label_id":"a","label":"first","v":1}`,
		// Equal versions: the later arrival.
		`{"row_id":"b1","label_id":"b","label":"early","v":5}`,
		`{"row_id":"b2","label_id":"b","label":"late","v":5}`,
		`{"row_id":"b3","label_id":"b","label":"older","v":4}`,
		// Nulls: any value beats them; among nulls, the later arrival.
		`{"row_id":"c1","label_id":"c","label":"valued","v":-7}`,
		`{"row_id":"c2","label_id":"c","label":"null"}`,
		`{"row_id":"d1","label_id":"d","label":"null 1","v":null}`,
		`{"row_id":"d2","label_id":"d","label":"null 2","v":null}`,
	}
	// One batch per record, two batches, and one batch: the same result.
	for _, rows := range []int{1, 4, len(recs)} {
		d.conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+ident(d.schema, "lbl"))
		mustLoad(t, s, recs, rows)
		for key, want := range map[string]string{"a": "third@3", "b": "late@5", "c": "valued@-7", "d": "null 2@null"} {
			if got := d.label("lbl", key); got != want {
				t.Errorf("batches of %d: key %s: %s, want %s", rows, key, got, want)
			}
		}
		if n := d.count("lbl"); n != 4 {
			t.Errorf("batches of %d: %d rows, want 4", rows, n)
		}
		if s.lastLoad.Rows != 4 {
			t.Errorf("batches of %d: %d rows written, want 4", rows, s.lastLoad.Rows)
		}
	}
	// Against the stored rows, a load's winner is compared once more: a
	// (3) is not replaced by 2 though 2 wins its load; b (5) is by 6.
	mustLoad(t, s, []string{
		`{"row_id":"a4","label_id":"a","label":"x","v":1}`,
		`{"row_id":"a5","label_id":"a","label":"y","v":2}`,
		`{"row_id":"b4","label_id":"b","label":"six","v":6}`,
		`{"row_id":"b5","label_id":"b","label":"five","v":5}`,
	}, 2)
	if got := d.label("lbl", "a"); got != "third@3" {
		t.Errorf("a: %s, want third@3", got)
	}
	if got := d.label("lbl", "b"); got != "six@6" {
		t.Errorf("b: %s, want six@6", got)
	}
	// A float version, and integers into its double precision column.
	s = d.sink("flt", map[string]any{"key": "label_id", "version": "v"}, false)
	mustLoad(t, s, []string{`{"row_id":"f1","label_id":"a","label":"big","v":2.5}`, `{"row_id":"f2","label_id":"a","label":"small","v":2.25}`}, 1)
	mustLoad(t, s, []string{`{"row_id":"f3","label_id":"a","label":"two","v":2}`}, 1)
	if got := d.label("flt", "a"); got != "big@2.5" {
		t.Errorf("float version: %s, want big@2.5", got)
	}
}

func TestVersionOnTheRecordID(t *testing.T) {
	// Without key, the key is the record id: events of one record.
	d := newDB(t)
	s := d.sink("ids", map[string]any{"version": "seq"}, false)
	mustLoad(t, s, []string{`{"row_id":"r1","seq":2,"label":"new"}`, `{"row_id":"r1","seq":1,"label":"old"}`}, 1)
	mustLoad(t, s, []string{`{"row_id":"r1","seq":0,"label":"older"}`}, 1)
	if v := d.queryOne(`SELECT label FROM ` + ident(d.schema, "ids") + ` WHERE _pipeline_id = 'r1'`); v != "new" {
		t.Errorf("r1 = %v, want new", v)
	}
}

func TestVersionFirstSeenNull(t *testing.T) {
	// A version that is null in every record of the first load has no
	// column yet: those rows merge as without a version, and the column
	// comes with the first value.
	d := newDB(t)
	s := d.sink("late", map[string]any{"key": "label_id", "version": "v"}, false)
	mustLoad(t, s, []string{`{"row_id":"e1","label_id":"a","label":"one","v":null}`, `{"row_id":"e2","label_id":"a","label":"two","v":null}`}, 1)
	if _, ok := d.columns("late")["v"]; ok {
		t.Fatal("a column for an always-null version")
	}
	if v := d.queryOne(`SELECT label FROM ` + ident(d.schema, "late") + ` WHERE label_id = 'a'`); v != "two" {
		t.Errorf("%v, want two", v)
	}
	mustLoad(t, s, []string{`{"row_id":"e3","label_id":"a","label":"three","v":10}`}, 1)
	mustLoad(t, s, []string{`{"row_id":"e4","label_id":"a","label":"four","v":9}`, `{"row_id":"e5","label_id":"a","label":"five"}`}, 1)
	if got := d.label("late", "a"); got != "three@10" {
		t.Errorf("%s, want three@10", got)
	}
}

func TestVersionErrors(t *testing.T) {
	base := map[string]any{"table": "t", "dsn": "postgres://u@127.0.0.1:1/db"}
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"version": "v", "mode": "append"}, `version is for mode = "merge"`},
		{map[string]any{"version": "meta.updated_at"}, `version "meta.updated_at": name a top-level field (a timestamp or a number), not a path`},
		{map[string]any{"version": "_pipeline_id"}, `version "_pipeline_id": _pipeline_* fields are the pipeline's own`},
		{map[string]any{"version": "id", "key": "id"}, `version "id" is also the key`},
	} {
		block := map[string]any{}
		for k, v := range base {
			block[k] = v
		}
		for k, v := range tc.attrs {
			block[k] = v
		}
		if _, err := configure(t, block, false); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.attrs, err, tc.want)
		}
	}

	d := newDB(t)
	for _, tc := range []struct {
		name, rec, want string
	}{
		{"str", `{"v":"2024-05-01T12:00:00Z"}`, `version "v": the field is text; a version must be a timestamp or a number (a string of RFC 3339 times can be declared with types = { v = "timestamp" })`},
		{"bool", `{"v":true}`, `version "v": the field is boolean; a version must be a timestamp or a number`},
		{"obj", `{"v":{"at":1}}`, `version "v": the field is jsonb`},
		{"missing", `{"w":1}`, `version "v": the records have no such top-level field`},
	} {
		s := d.sink("bad_"+tc.name, map[string]any{"version": "v"}, false)
		if err := load(t, s, []string{tc.rec}, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// With flatten, a struct is no top-level field.
	s := d.sink("bad_flat", map[string]any{"version": "v", "flatten": true}, false)
	if err := load(t, s, []string{`{"v":{"at":1}}`}, 1); err == nil || !strings.Contains(err.Error(), `version "v": the records have no such top-level field`) {
		t.Errorf("flattened struct: %v", err)
	}
	// A table whose column cannot order versions: only nulls in the
	// records, so the table's type decides.
	s = d.sink("txt", nil, false)
	mustLoad(t, s, []string{`{"row_id":"r1","v":"x"}`}, 1)
	s = d.sink("txt", map[string]any{"version": "v"}, false)
	err := load(t, s, []string{`{"row_id":"r1","v":null}`}, 1)
	if want := `version "v": column "v" of "` + d.schema + `"."txt" is text; a version column must be a timestamp or a number (nothing was loaded)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("text column: %v, want %q", err, want)
	}
	if got := d.queryOne(`SELECT v FROM ` + ident(d.schema, "txt")); got != "x" {
		t.Errorf("the failed load changed the row: %v", got)
	}
}
