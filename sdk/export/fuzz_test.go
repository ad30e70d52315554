package export

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// FuzzWriters writes whatever records the JSON decoder makes of the input
// in every format and reads each file back: no panic, and every format
// holds every record.
func FuzzWriters(f *testing.F) {
	for _, seed := range []string{
		`{"a":1,"b":"x"}` + "\n" + `{"a":2.5,"c":{"d":[1,2]}}`,
		`{"text":"Grüße 👋 \"q\", ok\n","n":null}`,
		`{"s":{}}` + "\n" + `{"s":{"t":true}}`,
		`{"l":[]}` + "\n" + `{"l":[{"x":1}]}` + "\n" + `{"l":null}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		dec := arrowjson.NewDecoder(arrowjson.Options{})
		defer dec.Release()
		for _, line := range strings.Split(input, "\n") {
			if err := dec.Append([]byte(line)); err != nil {
				return // not records: the decoder's own fuzz target covers it
			}
		}
		rec := dec.Flush()
		if rec == nil {
			return
		}
		defer rec.Release()
		rows := int(rec.NumRows())
		for _, format := range []string{FormatJSONL, FormatJSON, FormatCSV, FormatParquet} {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, Options{Format: format})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(rec); err != nil {
				t.Fatalf("%s: write: %v", format, err)
			}
			if err := w.Close(); err != nil {
				t.Fatalf("%s: close: %v", format, err)
			}
			switch format {
			case FormatJSONL:
				lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
				if len(lines) != rows {
					t.Fatalf("jsonl: %d lines for %d records", len(lines), rows)
				}
				for _, l := range lines {
					if !json.Valid([]byte(l)) {
						t.Fatalf("jsonl: invalid line %q", l)
					}
				}
			case FormatJSON:
				var out []json.RawMessage
				if err := json.Unmarshal(buf.Bytes(), &out); err != nil || len(out) != rows {
					t.Fatalf("json: %d records (%v) for %d", len(out), err, rows)
				}
			case FormatCSV:
				recs, err := csv.NewReader(&buf).ReadAll()
				if err != nil {
					t.Fatalf("csv: %v\n%s", err, buf.String())
				}
				// A record with no columns at all writes no header.
				if len(recs) != rows+1 && !(len(recs) == 0 && len(rec.Schema().Fields()) == 0) {
					t.Fatalf("csv: %d rows for %d records and a header", len(recs), rows)
				}
			case FormatParquet:
				tbl, err := pqarrow.ReadTable(context.Background(), bytes.NewReader(buf.Bytes()), parquet.NewReaderProperties(memory.DefaultAllocator), pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
				if err != nil {
					t.Fatalf("parquet: %v", err)
				}
				n := tbl.NumRows()
				tbl.Release()
				if int(n) != rows && len(rec.Schema().Fields()) > 0 {
					t.Fatalf("parquet: %d rows for %d records", n, rows)
				}
			}
		}
	})
}
