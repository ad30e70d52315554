package sourcefile

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// collect is an Emitter that keeps every record as JSON and the last position.
type collect struct {
	records []string
	pos     []byte
	skipped int
	batches int
	places  []int64
}

func (c *collect) Emit(rec arrow.RecordBatch, position []byte) error {
	defer rec.Release()
	enc := arrowjson.NewEncoder()
	for i := 0; i < int(rec.NumRows()); i++ {
		c.records = append(c.records, string(enc.AppendRow(nil, rec, i)))
	}
	c.pos = append([]byte(nil), position...)
	c.batches++
	return nil
}

func (c *collect) EmitAt(rec arrow.RecordBatch, position []byte, origin sdk.Origin) error {
	if int64(len(origin.Places)) != rec.NumRows() {
		panic("places do not match rows")
	}
	c.places = append(c.places, origin.Places...)
	return c.Emit(rec, position)
}

func (c *collect) Skipped(n int) { c.skipped += n }

func newSource(t *testing.T, cfg map[string]any) *Source {
	t.Helper()
	full := map[string]any{"format": "jsonl", "on_error": "fail", "batch_rows": 2}
	for k, v := range cfg {
		full[k] = v
	}
	data, _ := json.Marshal(full)
	s := &Source{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "calls", JSON: data}); err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadResumesFromCheckpointAcrossFilesAndAppends(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.jsonl"), `{"id":1}`+"\n"+`{"id":2}`+"\n\n"+`{"id":3}`+"\n")
	write(t, filepath.Join(dir, "b.jsonl"), `{"id":4,"text":"Hej då"}`+"\n")
	s := newSource(t, map[string]any{"path": filepath.Join(dir, "*.jsonl")})

	first := &collect{}
	if err := s.Read(context.Background(), nil, first); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"id":1}`, `{"id":2}`, `{"id":3}`, `{"id":4,"text":"Hej då"}`}
	if strings.Join(first.records, " ") != strings.Join(want, " ") {
		t.Fatalf("first read: %v", first.records)
	}
	if first.batches != 3 {
		t.Errorf("batch_rows = 2 gave %d batches, want 3 (2 + 1 from a, 1 from b)", first.batches)
	}

	again := &collect{}
	if err := s.Read(context.Background(), first.pos, again); err != nil {
		t.Fatal(err)
	}
	if len(again.records) != 0 {
		t.Fatalf("re-read from the checkpoint gave %v", again.records)
	}

	f, _ := os.OpenFile(filepath.Join(dir, "a.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":5}` + "\n")
	f.Close()
	write(t, filepath.Join(dir, "0-new.jsonl"), `{"id":0}`+"\n") // sorts first: still read
	third := &collect{}
	if err := s.Read(context.Background(), first.pos, third); err != nil {
		t.Fatal(err)
	}
	if strings.Join(third.records, " ") != `{"id":0} {"id":5}` {
		t.Fatalf("after appending: %v", third.records)
	}
}

func TestGzipIsDetected(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(`{"a":"x"}` + "\n" + `{"a":"y"}` + "\n"))
	zw.Close()
	write(t, filepath.Join(dir, "calls.jsonl.gz"), buf.String())
	s := newSource(t, map[string]any{"path": filepath.Join(dir, "calls.jsonl.gz")})
	c := &collect{}
	if err := s.Read(context.Background(), nil, c); err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.records, " ") != `{"a":"x"} {"a":"y"}` {
		t.Fatalf("got %v", c.records)
	}
	// Resuming a gzipped file skips what was read.
	c2 := &collect{}
	if err := s.Read(context.Background(), c.pos, c2); err != nil || len(c2.records) != 0 {
		t.Fatalf("resume: %v %v", c2.records, err)
	}
}

func TestBadLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.jsonl")
	write(t, path, `{"id":1}`+"\n"+`{"id":2`+"\n"+`[1,2]`+"\n"+`{"id":4}`+"\n")

	err := newSource(t, map[string]any{"path": path}).Read(context.Background(), nil, &collect{})
	if err == nil || !strings.Contains(err.Error(), "bad.jsonl:2:") {
		t.Fatalf("want an error at bad.jsonl:2, got %v", err)
	}

	c := &collect{}
	if err := newSource(t, map[string]any{"path": path, "on_error": "skip"}).Read(context.Background(), nil, c); err != nil {
		t.Fatal(err)
	}
	if c.skipped != 2 || strings.Join(c.records, " ") != `{"id":1} {"id":4}` {
		t.Fatalf("skip: skipped %d, records %v", c.skipped, c.records)
	}
}

func TestIncompleteLastLineWaitsForTheWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "live.jsonl")
	write(t, path, `{"id":1}`+"\n"+`{"id":2,"te`)
	s := newSource(t, map[string]any{"path": path})
	c := &collect{}
	if err := s.Read(context.Background(), nil, c); err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.records, " ") != `{"id":1}` {
		t.Fatalf("got %v", c.records)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`xt":"done"}` + "\n")
	f.Close()
	c2 := &collect{}
	if err := s.Read(context.Background(), c.pos, c2); err != nil {
		t.Fatal(err)
	}
	if strings.Join(c2.records, " ") != `{"id":2,"text":"done"}` {
		t.Fatalf("after the writer finished: %v", c2.records)
	}
}

func TestTruncatedFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "calls.jsonl")
	write(t, path, `{"id":1}`+"\n"+`{"id":2}`+"\n")
	s := newSource(t, map[string]any{"path": path})
	c := &collect{}
	if err := s.Read(context.Background(), nil, c); err != nil {
		t.Fatal(err)
	}
	write(t, path, `{"id":9}`+"\n")
	err := s.Read(context.Background(), c.pos, &collect{})
	if err == nil || !strings.Contains(err.Error(), "truncated or replaced") {
		t.Fatalf("got %v", err)
	}
}

func TestSchemaSamplesFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.jsonl"), `{"a":1}`+"\n")
	write(t, filepath.Join(dir, "b.jsonl"), `{"b":{"c":"x"}}`+"\n")
	s := newSource(t, map[string]any{"path": filepath.Join(dir, "*.jsonl")})
	schema, err := s.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if schema.NumFields() != 2 || schema.Field(0).Name != "a" || schema.Field(1).Type.ID() != arrow.STRUCT {
		t.Fatalf("schema %v", schema)
	}
}

func TestConfigureRejectsBadValues(t *testing.T) {
	for name, cfg := range map[string]string{
		"format":     `{"path":"x","format":"xml","on_error":"fail","batch_rows":1}`,
		"on_error":   `{"path":"x","format":"jsonl","on_error":"ignore","batch_rows":1}`,
		"batch_rows": `{"path":"x","format":"jsonl","on_error":"fail","batch_rows":0}`,
		"glob":       `{"path":"[","format":"jsonl","on_error":"fail","batch_rows":1}`,
	} {
		t.Run(name, func(t *testing.T) {
			err := (&Source{}).Configure(context.Background(), sdk.Config{JSON: []byte(cfg)})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestCSVReadsNestedColumnsAndResumes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "calls.csv")
	write(t, path, "row_id,classifications.churn_risk.label,classifications.churn_risk.confidence,text\n"+
		"r1,High,0.91,\"Jag vill säga upp, tack\"\n"+
		"r2,Low,0.2,fine\n"+
		"r3,High,0.85,\"multi\nline\"\n")
	s := newSource(t, map[string]any{"path": path, "format": "csv"})
	schema, err := s.Schema(context.Background())
	if err != nil || schema.NumFields() != 3 || schema.Field(1).Type.ID() != arrow.STRUCT {
		t.Fatalf("schema %v, %v", schema, err)
	}
	c := &collect{}
	if err := s.Read(context.Background(), nil, c); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"row_id":"r1","classifications":{"churn_risk":{"label":"High","confidence":0.91}},"text":"Jag vill säga upp, tack"}`,
		`{"row_id":"r2","classifications":{"churn_risk":{"label":"Low","confidence":0.2}},"text":"fine"}`,
		`{"row_id":"r3","classifications":{"churn_risk":{"label":"High","confidence":0.85}},"text":"multi\nline"}`,
	}
	if strings.Join(c.records, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s", strings.Join(c.records, "\n"))
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("r4,Medium,0.5,appended\n")
	f.Close()
	c2 := &collect{}
	if err := s.Read(context.Background(), c.pos, c2); err != nil {
		t.Fatal(err)
	}
	if len(c2.records) != 1 || !strings.Contains(c2.records[0], `"row_id":"r4"`) {
		t.Fatalf("after appending: %v", c2.records)
	}
}

func TestCSVBadRecordNamesTheLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.csv")
	write(t, path, "a,b\n1,2\n3\n4,5\n")
	err := newSource(t, map[string]any{"path": path, "format": "csv"}).Read(context.Background(), nil, &collect{})
	if err == nil || !strings.Contains(err.Error(), "bad.csv:3:") {
		t.Fatalf("got %v", err)
	}
	c := &collect{}
	if err := newSource(t, map[string]any{"path": path, "format": "csv", "on_error": "skip"}).Read(context.Background(), nil, c); err != nil {
		t.Fatal(err)
	}
	if c.skipped != 1 || strings.Join(c.records, " ") != `{"a":1,"b":2} {"a":4,"b":5}` {
		t.Fatalf("skip: %d %v", c.skipped, c.records)
	}
}

func TestSourceConformance(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "calls.jsonl")
	cfg, _ := json.Marshal(map[string]any{"path": path, "format": "jsonl", "on_error": "fail", "batch_rows": 2})
	sdktest.TestSource(t, func() sdk.Source { return &Source{} }, "", sdktest.SourceTest{
		Config: string(cfg),
		Setup: func(t testing.TB) {
			write(t.(*testing.T), path, `{"row_id":"a","n":1}`+"\n"+`{"row_id":"b","m":{"q":"x"}}`+"\n"+`{"row_id":"c"}`+"\n")
		},
		Want: []string{`{"row_id":"a","n":1}`, `{"row_id":"b","m":{"q":"x"}}`, `{"row_id":"c"}`},
	})
}

// A batch that ends with a record spanning lines (a quoted newline) leaves
// a position that counts all its lines, so a resumed run gives the records
// after it the lines (and so the ids) a run from the start gives them.
func TestCSVResumeAfterAMultiLineRecordKeepsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calls.csv")
	write(t, path, "id,text\n1,one\n2,\"two\nlines\"\n3,three\n")
	s := newSource(t, map[string]any{"path": path, "format": "csv"})
	whole := &positionsEmitter{}
	if err := s.Read(context.Background(), nil, whole); err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(whole.places); string(got) != "[2,3,5]" {
		t.Fatalf("lines %s, want [2,3,5]", got)
	}
	rest := &collect{}
	if err := s.Read(context.Background(), whole.pos[0], rest); err != nil {
		t.Fatal(err)
	}
	if len(rest.places) != 1 || rest.places[0] != 5 {
		t.Fatalf("resumed after the multi-line record: lines %v, want [5]", rest.places)
	}
	var pos position
	json.Unmarshal(whole.pos[0], &pos)
	if fp := pos.Files[path]; fp.Line != 4 || fp.Offset != 28 {
		t.Errorf("position after the multi-line record: %+v, want line 4, offset 28", fp)
	}
}
