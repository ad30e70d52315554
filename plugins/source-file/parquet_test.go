package sourcefile

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/export"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// writeParquet writes JSON lines as a Parquet file, as sink "file" does
// (sdk/export), in row groups of rowGroupRows rows.
func writeParquet(t testing.TB, path string, rowGroupRows int, lines ...string) {
	t.Helper()
	d := arrowjson.NewDecoder(arrowjson.Options{})
	defer d.Release()
	for _, l := range lines {
		if err := d.Append([]byte(l)); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	w, err := export.NewWriter(f, export.Options{Format: export.FormatParquet, RowGroupRows: int64(rowGroupRows)})
	if err != nil {
		t.Fatal(err)
	}
	if rec := d.Flush(); rec != nil {
		err = w.Write(rec)
		rec.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // replaced whole, as sink "file" replaces
		t.Fatal(err)
	}
}

// batches is an Emitter that keeps each batch: its records as JSON, its
// origin and its position.
type batches struct {
	records   []string
	origins   []sdk.Origin
	positions []string
}

func (b *batches) Emit(rec arrow.RecordBatch, position []byte) error {
	return b.EmitAt(rec, position, sdk.Origin{})
}

func (b *batches) EmitAt(rec arrow.RecordBatch, position []byte, origin sdk.Origin) error {
	defer rec.Release()
	if int64(len(origin.Places)) != rec.NumRows() {
		panic("places do not match rows")
	}
	enc := arrowjson.NewEncoder()
	for i := 0; i < int(rec.NumRows()); i++ {
		b.records = append(b.records, string(enc.AppendRow(nil, rec, i)))
	}
	b.origins = append(b.origins, origin)
	b.positions = append(b.positions, string(position))
	return nil
}

func (b *batches) Skipped(int) {}

func (b *batches) last() []byte {
	if len(b.positions) == 0 {
		return nil
	}
	return []byte(b.positions[len(b.positions)-1])
}

func parquetSource(t *testing.T, path string, batchRows int) *Source {
	t.Helper()
	return newSource(t, map[string]any{"path": path, "format": "parquet", "batch_rows": batchRows})
}

func read(t *testing.T, s *Source, from []byte) *batches {
	t.Helper()
	b := &batches{}
	if err := s.Read(context.Background(), from, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func rows(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, `{"id":"`+prefix+string(rune('0'+i))+`","n":{"i":`+string(rune('0'+i))+`,"tags":["x"]}}`)
	}
	return out
}

func TestParquetReadsResumesAndSkips(t *testing.T) {
	dir := t.TempDir()
	writeParquet(t, filepath.Join(dir, "a.parquet"), 2, rows("a", 0, 5)...)
	writeParquet(t, filepath.Join(dir, "b.parquet"), 2, rows("b", 0, 3)...)
	s := parquetSource(t, filepath.Join(dir, "*.parquet"), 2)

	first := read(t, s, nil)
	want := append(rows("a", 0, 5), rows("b", 0, 3)...)
	if strings.Join(first.records, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s", strings.Join(first.records, "\n"))
	}
	// Row groups of 2: a is cut 2+2+1, b 2+1; the places are row indexes.
	var places []int64
	for i, o := range first.origins {
		if o.Unit != "row" || !strings.HasSuffix(o.Name, "parquet") {
			t.Fatalf("batch %d: origin %+v", i, o)
		}
		places = append(places, o.Places...)
	}
	if len(first.origins) != 5 || first.origins[3].Name != filepath.Join(dir, "b.parquet") {
		t.Fatalf("%d batches: %+v", len(first.origins), first.origins)
	}
	if got, _ := json.Marshal(places); string(got) != `[0,1,2,3,4,0,1,2]` {
		t.Fatalf("places %s", got)
	}

	// From the end: nothing. From each batch's position: exactly the rest.
	if again := read(t, s, first.last()); len(again.records) != 0 {
		t.Fatalf("from the last position: %v", again.records)
	}
	seen := 0
	for i, pos := range first.positions {
		seen += len(first.origins[i].Places)
		rest := read(t, s, []byte(pos))
		if strings.Join(rest.records, "\n") != strings.Join(want[seen:], "\n") {
			t.Fatalf("from batch %d's position %s:\n%s", i, pos, strings.Join(rest.records, "\n"))
		}
	}

	// A new file is read; the others are skipped.
	writeParquet(t, filepath.Join(dir, "0.parquet"), 2, rows("z", 0, 1)...)
	third := read(t, s, first.last())
	if strings.Join(third.records, " ") != rows("z", 0, 1)[0] {
		t.Fatalf("after a new file: %v", third.records)
	}

	// The checkpoint holds rows, size and footer of each file, not bytes.
	var pos struct {
		Files map[string]map[string]any `json:"files"`
	}
	if err := json.Unmarshal(third.last(), &pos); err != nil {
		t.Fatal(err)
	}
	a := pos.Files[filepath.Join(dir, "a.parquet")]
	if len(a) != 3 || a["row"] != 5.0 || a["size"] == nil || len(a["footer"].(string)) != 32 {
		t.Fatalf("a.parquet's checkpoint: %v", a)
	}
}

func TestParquetRewrittenFileIsReadAgainAsANewInput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.parquet")
	writeParquet(t, path, 10, rows("a", 0, 4)...)
	s := parquetSource(t, path, 2)
	first := read(t, s, nil)
	if len(first.records) != 4 || first.origins[0].Name != path {
		t.Fatalf("first: %v %+v", first.records, first.origins)
	}

	// The next version of the file (sink "file" replaces its file every
	// run): read in full, under a name of its own, so its records' ids
	// differ from the first version's.
	writeParquet(t, path, 10, rows("b", 0, 3)...)
	second := read(t, s, first.last())
	if strings.Join(second.records, "\n") != strings.Join(rows("b", 0, 3), "\n") {
		t.Fatalf("after the rewrite:\n%s", strings.Join(second.records, "\n"))
	}
	name := second.origins[0].Name
	if !strings.HasPrefix(name, path+"@") || len(name) != len(path)+17 {
		t.Fatalf("the new version's origin name is %q", name)
	}
	// Resuming inside the new version keeps its name; after it, nothing.
	mid := read(t, s, []byte(second.positions[0]))
	if len(mid.records) != 1 || mid.origins[0].Name != name {
		t.Fatalf("resumed in the new version: %v %+v", mid.records, mid.origins)
	}
	if again := read(t, s, second.last()); len(again.records) != 0 {
		t.Fatalf("after the new version: %v", again.records)
	}

	// Rewritten after part of it was read: the new version from its start.
	writeParquet(t, path, 10, rows("c", 0, 5)...)
	third := read(t, s, []byte(second.positions[0]))
	if strings.Join(third.records, "\n") != strings.Join(rows("c", 0, 5), "\n") || third.origins[0].Name == name {
		t.Fatalf("rewritten while half read:\n%s\n%+v", strings.Join(third.records, "\n"), third.origins[0])
	}
}

// A copy of the file (same bytes, another mtime) is the same file.
func TestParquetCopyOrTouchIsNotAChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.parquet")
	writeParquet(t, path, 10, rows("a", 0, 3)...)
	s := parquetSource(t, path, 2)
	first := read(t, s, nil)
	data, _ := os.ReadFile(path)
	os.Remove(path)
	write(t, path, string(data))
	later := time.Now().Add(time.Hour)
	os.Chtimes(path, later, later)
	if again := read(t, s, first.last()); len(again.records) != 0 {
		t.Fatalf("a copy was read again: %v", again.records)
	}
	// Resuming half way through the copy goes on where it was.
	rest := read(t, s, []byte(first.positions[0]))
	if strings.Join(rest.records, "\n") != rows("a", 2, 3)[0] {
		t.Fatalf("resumed in the copy: %v", rest.records)
	}
}

// A file without its footer yet (a writer is still at it) waits.
func TestParquetIncompleteFileWaitsForTheWriter(t *testing.T) {
	dir := t.TempDir()
	done := filepath.Join(dir, "a.parquet")
	writeParquet(t, done, 10, rows("a", 0, 2)...)
	data, _ := os.ReadFile(done)
	live := filepath.Join(dir, "b.parquet")
	write(t, live, string(data[:len(data)/2]))
	write(t, filepath.Join(dir, "c.parquet"), "") // created, nothing written
	s := parquetSource(t, filepath.Join(dir, "*.parquet"), 10)
	schema, err := s.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sdk.IsSampled(schema) || !strings.Contains(sdk.SchemaSample(schema), "1 of the 3 files") {
		t.Fatalf("schema with incomplete files: %v (%q)", schema, sdk.SchemaSample(schema))
	}
	first := read(t, s, nil)
	if len(first.records) != 2 {
		t.Fatalf("first: %v", first.records)
	}
	writeParquet(t, live, 10, rows("b", 0, 2)...)
	second := read(t, s, first.last())
	if strings.Join(second.records, "\n") != strings.Join(rows("b", 0, 2), "\n") {
		t.Fatalf("once complete: %v", second.records)
	}
}

// The schema is every file's footer, merged: exact, not a sample.
func TestParquetSchemaIsTheFooters(t *testing.T) {
	dir := t.TempDir()
	writeParquet(t, filepath.Join(dir, "a.parquet"), 10, `{"a":1,"s":{"x":"1"}}`)
	writeParquet(t, filepath.Join(dir, "b.parquet"), 10, `{"b":"2","s":{"y":true},"a":2.5}`)
	s := parquetSource(t, filepath.Join(dir, "*.parquet"), 10)
	schema, err := s.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sdk.IsSampled(schema) {
		t.Fatalf("schema marked sampled: %v", schema)
	}
	var got []string
	for _, f := range schema.Fields() {
		got = append(got, f.Name+":"+f.Type.String())
	}
	// a keeps the first file's type, as the engine merges batches.
	if strings.Join(got, " ") != "a:int64 s:struct<x: utf8 nullable, y: bool nullable> b:utf8" {
		t.Fatalf("schema %s", strings.Join(got, " "))
	}
}

func TestFormatMismatches(t *testing.T) {
	dir := t.TempDir()
	pq := filepath.Join(dir, "a.parquet")
	writeParquet(t, pq, 10, rows("a", 0, 1)...)
	for _, format := range []string{"jsonl", "csv"} {
		s := newSource(t, map[string]any{"path": pq, "format": format})
		err := s.Read(context.Background(), nil, &batches{})
		if err == nil || !strings.Contains(err.Error(), `is a Parquet file: set format = "parquet"`) {
			t.Errorf("%s on a Parquet file: %v", format, err)
		}
		if _, err := s.Schema(context.Background()); err == nil || !strings.Contains(err.Error(), `set format = "parquet"`) {
			t.Errorf("%s schema of a Parquet file: %v", format, err)
		}
	}
	jl := filepath.Join(dir, "a.jsonl")
	write(t, jl, `{"a":1}`+"\n")
	err := parquetSource(t, jl, 10).Read(context.Background(), nil, &batches{})
	if err == nil || !strings.Contains(err.Error(), "is not a Parquet file") {
		t.Errorf("parquet on a JSONL file: %v", err)
	}
	// A checkpoint that another format wrote.
	jsonlPos := []byte(`{"files":{"` + pq + `":{"offset":10,"line":1}}}`)
	err = parquetSource(t, pq, 10).Read(context.Background(), jsonlPos, &batches{})
	if err == nil || !strings.Contains(err.Error(), "not a Parquet one") {
		t.Errorf("a JSONL checkpoint: %v", err)
	}
}

// The position of the other formats is written as before.
func TestTextPositionsKeepTheirEncoding(t *testing.T) {
	p := position{Files: map[string]filePos{"a.jsonl": {Offset: 9, Line: 1}}}
	if got := string(p.encode()); got != `{"files":{"a.jsonl":{"offset":9,"line":1}}}` {
		t.Fatalf("got %s", got)
	}
}

func TestParquetSourceConformance(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "calls.parquet")
	cfg, _ := json.Marshal(map[string]any{"path": path, "format": "parquet", "on_error": "fail", "batch_rows": 2})
	want := []string{`{"row_id":"a","n":1,"m":{"q":"x"}}`, `{"row_id":"b","m":{"q":"y"}}`, `{"row_id":"c","n":3}`}
	sdktest.TestSource(t, func() sdk.Source { return &Source{} }, "", sdktest.SourceTest{
		Config: string(cfg),
		Setup:  func(t testing.TB) { writeParquet(t, path, 2, want...) },
		Want:   want,
	})
}
