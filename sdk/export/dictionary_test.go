package export

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// Mostly distinct string columns (ids, free text), at the top level or in
// a struct, are written plain; the others keep their dictionaries.
func TestParquetDictionaryOnlyForRepeatedStrings(t *testing.T) {
	var records []string
	for i := range 1000 {
		records = append(records, fmt.Sprintf(`{"row_id":"r%d","label":"l%d","meta":{"customer":"c%d","queue":"q%d"},"n":%d}`, i, i%3, i, i%2, i))
	}
	batches, _, err := sdktest.Batches(records, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := uniqueStrings(batches[0]), []string{"row_id", "meta.customer"}; !slices.Equal(got, want) {
		t.Fatalf("uniqueStrings = %q, want %q", got, want)
	}

	var buf bytes.Buffer
	opts := &Options{Format: FormatParquet}
	if err := opts.normalize(); err != nil {
		t.Fatal(err)
	}
	w, err := newParquetWriter(&countingWriter{w: &buf}, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		if err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		b.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	rg := r.MetaData().RowGroup(0)
	dict := map[string]bool{}
	for i := range rg.NumColumns() {
		c, err := rg.ColumnChunk(i)
		if err != nil {
			t.Fatal(err)
		}
		dict[c.PathInSchema().String()] = slices.Contains(c.Encodings(), parquet.Encodings.RLEDict)
	}
	want := map[string]bool{"row_id": false, "label": true, "meta.customer": false, "meta.queue": true, "n": true}
	for path, d := range want {
		if dict[path] != d {
			t.Errorf("column %s: dictionary %v, want %v (all: %v)", path, dict[path], d, dict)
		}
	}
}
