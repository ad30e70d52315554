package sources3

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// parquetOf writes JSON Lines as Parquet with row groups of groupRows.
func parquetOf(t *testing.T, lines []byte, groupRows int64) []byte {
	t.Helper()
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for _, l := range bytes.SplitAfter(lines, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			if err := dec.Append(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	rec := dec.Flush()
	defer rec.Release()
	var buf bytes.Buffer
	w, err := pqarrow.NewFileWriter(rec.Schema(), &buf, parquet.NewWriterProperties(parquet.WithMaxRowGroupLength(groupRows)), pqarrow.DefaultWriterProps())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParquetResumesFromEveryBatch(t *testing.T) {
	l := newLake(t)
	l.put("pq/a.parquet", parquetOf(t, jsonl("a", 11), 4)) // row groups of 4, 4 and 3
	l.put("pq/b.parquet", parquetOf(t, jsonl("b", 3), 4))
	l.put("pq/_manifest-1.json", []byte(`{}`))
	s := l.source(map[string]any{"prefix": "pq/", "format": "parquet", "batch_rows": 3})

	schema, err := s.Schema(context.Background())
	if err != nil || len(schema.FieldIndices("id")) != 1 || !sdk.IsSampled(schema) || !strings.Contains(sdk.SchemaSample(schema), "pq/a.parquet") {
		t.Fatalf("schema %v, %v", schema, err)
	}
	whole := read(t, s, nil)
	if got := whole.fields("id"); !slices.Equal(got, slices.Concat(ids("a", 11), ids("b", 3))) {
		t.Fatalf("read %v", got)
	}
	if got := whole.ids()[:5]; !slices.Equal(got, []string{"pq/a.parquet:0", "pq/a.parquet:1", "pq/a.parquet:2", "pq/a.parquet:3", "pq/a.parquet:4"}) {
		t.Fatalf("places %v: want the rows' indexes", got)
	}
	if len(whole.batches) < 6 {
		t.Fatalf("%d batches: want batches within row groups", len(whole.batches))
	}
	for i, b := range whole.batches {
		rest := &collect{batches: whole.batches[i+1:]}
		got := read(t, s, b.pos)
		if !slices.Equal(got.records(), rest.records()) || !slices.Equal(got.ids(), rest.ids()) {
			t.Fatalf("from batch %d (%s) read %v %v, want %v %v", i+1, b.pos, got.fields("id"), got.ids(), rest.fields("id"), rest.ids())
		}
		var p position
		json.Unmarshal(b.pos, &p)
		if last := i == len(whole.batches)-1 || whole.batches[i+1].origin != b.origin; last != (p.Cur == nil) {
			t.Fatalf("batch %d (last of its object: %v) has position %s", i+1, last, b.pos)
		}
	}

	// A rewrite is read again in full; a bad object names itself.
	l.put("pq/b.parquet", parquetOf(t, jsonl("b2", 2), 4))
	if got := read(t, s, whole.last()).fields("id"); !slices.Equal(got, ids("b2", 2)) {
		t.Fatalf("after the rewrite read %v", got)
	}
	l.put("pq/c.parquet", []byte(`{"not":"parquet"}`))
	err = s.Read(context.Background(), whole.last(), &collect{})
	if err == nil || !strings.Contains(err.Error(), "s3://lake/pq/c.parquet is not a Parquet file") {
		t.Fatalf("got %v", err)
	}
	skip := l.source(map[string]any{"prefix": "pq/", "format": "parquet", "on_error": "skip"})
	c := read(t, skip, whole.last())
	if got := c.fields("id"); !slices.Equal(got, ids("b2", 2)) {
		t.Fatalf("with on_error skip read %v", got)
	}
}
