package export

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/parquet-go/parquet-go"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

var (
	batch1Lines = []string{
		`{"id":1,"text":"Grüße 👋 日本","ok":true,"score":0.5,"tags":["a","b"],"classifications":{"churn_risk":{"label":"High","confidence":0.91}},"metadata":{"conversation_id":"c1"},"note":null}`,
		`{"id":2,"text":"comma, \"quote\"\nnewline","ok":false,"score":1.25,"tags":[],"classifications":{"churn_risk":{"label":"Low","confidence":0.1}},"metadata":{"conversation_id":"c2"}}`,
		`{"id":3,"text":null,"ok":true,"score":2.5,"tags":null,"classifications":{"churn_risk":null},"metadata":{"conversation_id":"c1"},"note":"n"}`,
	}
	// a schema change: metadata.channel and extra are new, note is absent
	batch2Lines = []string{
		`{"id":4,"text":"second batch","ok":false,"score":3.5,"tags":["x"],"classifications":{"churn_risk":{"label":"Medium","confidence":0.5}},"metadata":{"conversation_id":"c3","channel":"chat"},"extra":{"k":1}}`,
		`{"id":5,"metadata":{"conversation_id":"c3"}}`,
	}
)

func sampleBatches(t testing.TB) []sdk.Batch {
	return []sdk.Batch{
		makeBatch(t, []string{"r1", "r2", "r3"}, nil, batch1Lines...),
		makeBatch(t, []string{"r4", "r5"}, nil, batch2Lines...),
	}
}

func allLines() []string { return append(append([]string(nil), batch1Lines...), batch2Lines...) }

// export writes the batches with one Flush and returns the directory and
// the manifest.
func export(t *testing.T, opts Options, batches ...sdk.Batch) (string, Manifest) {
	t.Helper()
	dir := t.TempDir()
	e, err := New(DirStore(dir), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, b := range batches {
		if err := e.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m := manifestOf(t, dir)
	if ms := e.Manifests(); len(ms) != 1 || ms[0].Key != m.Key || ms[0].Rows != m.Rows {
		t.Fatalf("Manifests() = %+v, file %+v", ms, m)
	}
	for _, f := range listFiles(t, dir) {
		if strings.Contains(f, ".tmp-") {
			t.Errorf("temporary file left: %s", f)
		}
	}
	return dir, m
}

func TestJSONRoundTrip(t *testing.T) {
	for _, tc := range []struct{ format, compression string }{
		{"jsonl", ""}, {"jsonl", "gzip"}, {"json", "none"}, {"json", "gzip"},
	} {
		t.Run(tc.format+"_"+tc.compression, func(t *testing.T) {
			dir, m := export(t, Options{Format: tc.format, Compression: tc.compression}, sampleBatches(t)...)
			if len(m.Objects) != 1 || m.Rows != 5 {
				t.Fatalf("manifest: %+v", m)
			}
			key := m.Objects[0].Key
			if !strings.HasSuffix(key, Ext(tc.format, tc.compression)) {
				t.Errorf("key %s lacks extension %s", key, Ext(tc.format, tc.compression))
			}
			data := readFile(t, dir, key)
			var got []map[string]any
			if tc.format == "json" {
				if !bytes.HasPrefix(data, []byte("[\n{")) || !bytes.HasSuffix(data, []byte("}\n]\n")) {
					t.Errorf("not a JSON array with a record per line: %q", data)
				}
				decodeJSON(t, data, &got)
			} else {
				for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
					var v map[string]any
					decodeJSON(t, []byte(line), &v)
					got = append(got, v)
				}
			}
			want := allLines()
			if len(got) != len(want) {
				t.Fatalf("got %d records, want %d", len(got), len(want))
			}
			for i, l := range want {
				var w map[string]any
				decodeJSON(t, []byte(l), &w)
				if !reflect.DeepEqual(got[i], w) {
					t.Errorf("record %d:\n got %v\nwant %v", i, got[i], w)
				}
			}
		})
	}
}

func TestCSVRoundTrip(t *testing.T) {
	for _, compression := range []string{"", "gzip"} {
		t.Run(compression, func(t *testing.T) {
			dir, m := export(t, Options{Format: "csv", Compression: compression}, sampleBatches(t)...)
			// the second batch adds columns: a new object
			if len(m.Objects) != 2 || m.Objects[0].Rows != 3 || m.Objects[1].Rows != 2 || m.Rows != 5 {
				t.Fatalf("manifest: %+v", m)
			}
			r := csv.NewReader(bytes.NewReader(readFile(t, dir, m.Objects[0].Key)))
			rows, err := r.ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			wantHeader := []string{"id", "text", "ok", "score", "tags", "classifications.churn_risk.label",
				"classifications.churn_risk.confidence", "metadata.conversation_id", "note"}
			if !reflect.DeepEqual(rows[0], wantHeader) {
				t.Fatalf("header %q, want %q", rows[0], wantHeader)
			}
			want := [][]string{
				{"1", "Grüße 👋 日本", "true", "0.5", `["a","b"]`, "High", "0.91", "c1", ""},
				{"2", "comma, \"quote\"\nnewline", "false", "1.25", `[]`, "Low", "0.1", "c2", ""},
				{"3", "", "true", "2.5", "", "", "", "c1", "n"},
			}
			if !reflect.DeepEqual(rows[1:], want) {
				t.Errorf("rows\n got %q\nwant %q", rows[1:], want)
			}
			rows2, err := csv.NewReader(bytes.NewReader(readFile(t, dir, m.Objects[1].Key))).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if len(rows2) != 3 || !strings.Contains(strings.Join(rows2[0], ","), "metadata.channel") ||
				!strings.Contains(strings.Join(rows2[0], ","), "extra.k") {
				t.Errorf("second object: %q", rows2)
			}
		})
	}
}

// readParquetArrow reads a parquet file with pqarrow.
func readParquetArrow(t *testing.T, data []byte) arrow.Table {
	t.Helper()
	pf, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// tableJSON encodes a table's rows with arrowjson.
func tableJSON(t *testing.T, tbl arrow.Table) []map[string]any {
	t.Helper()
	var out []map[string]any
	tr := array.NewTableReader(tbl, -1)
	defer tr.Release()
	enc := arrowjson.NewEncoder()
	for tr.Next() {
		rec := tr.RecordBatch()
		for i := 0; i < int(rec.NumRows()); i++ {
			var v map[string]any
			decodeJSON(t, enc.AppendRow(nil, rec, i), &v)
			out = append(out, v)
		}
	}
	return out
}

func TestParquetRoundTrip(t *testing.T) {
	for _, codec := range []string{"", "snappy", "gzip", "none"} {
		t.Run("codec_"+codec, func(t *testing.T) {
			dir, m := export(t, Options{Format: "parquet", ParquetCompression: codec}, sampleBatches(t)...)
			// the second batch adds fields: a new file
			if len(m.Objects) != 2 || m.Objects[0].Rows != 3 || m.Objects[1].Rows != 2 {
				t.Fatalf("manifest: %+v", m)
			}
			wantCodec := codec
			if wantCodec == "" {
				wantCodec = "zstd"
			}
			if m.Compression != wantCodec {
				t.Errorf("manifest compression %q, want %q", m.Compression, wantCodec)
			}
			var got []map[string]any
			for i, o := range m.Objects {
				data := readFile(t, dir, o.Key)
				if int64(len(data)) != o.Bytes {
					t.Errorf("%s: %d bytes, manifest says %d", o.Key, len(data), o.Bytes)
				}
				tbl := readParquetArrow(t, data)
				if i == 0 {
					checkParquetSchema(t, tbl.Schema())
				}
				for _, f := range tbl.Schema().Fields() {
					if sdk.IsReserved(f.Name) {
						t.Errorf("reserved column %s written", f.Name)
					}
				}
				got = append(got, tableJSON(t, tbl)...)
				tbl.Release()
			}
			for i, l := range allLines() {
				var w map[string]any
				decodeJSON(t, []byte(l), &w)
				if want := dropNulls(w); !reflect.DeepEqual(got[i], want) {
					t.Errorf("record %d:\n got %v\nwant %v", i, got[i], want)
				}
			}
			checkParquetGo(t, readFile(t, dir, m.Objects[0].Key))
		})
	}
}

func checkParquetSchema(t *testing.T, s *arrow.Schema) {
	t.Helper()
	want := map[string]string{
		"id":              "int64",
		"text":            "utf8",
		"ok":              "bool",
		"score":           "float64",
		"tags":            "list<element: utf8, nullable>",
		"classifications": "struct<churn_risk: struct<label: utf8 nullable, confidence: float64 nullable> nullable>",
		"metadata":        "struct<conversation_id: utf8 nullable>",
		"note":            "utf8",
	}
	if s.NumFields() != len(want) {
		t.Errorf("schema %s", s)
	}
	for name, typ := range want {
		f, ok := s.FieldsByName(name)
		if !ok {
			t.Errorf("no field %s in %s", name, s)
			continue
		}
		if got := f[0].Type.String(); got != typ {
			t.Errorf("field %s: type %s, want %s", name, got, typ)
		}
	}
}

// checkParquetGo reads the first object of the sample with the independent
// parquet-go implementation, generically: every row's leaf values by
// column path.
func checkParquetGo(t *testing.T, data []byte) {
	t.Helper()
	pf, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("parquet-go: %v", err)
	}
	if pf.NumRows() != 3 {
		t.Errorf("parquet-go: %d rows", pf.NumRows())
	}
	var paths []string
	for _, c := range pf.Schema().Columns() {
		paths = append(paths, strings.Join(c, "."))
	}
	var got []map[string][]string
	for _, rg := range pf.RowGroups() {
		rows := rg.Rows()
		buf := make([]parquet.Row, 16)
		for {
			n, err := rows.ReadRows(buf)
			for _, row := range buf[:n] {
				m := map[string][]string{}
				row.Range(func(col int, vals []parquet.Value) bool {
					for _, v := range vals {
						if v.IsNull() {
							m[paths[col]] = append(m[paths[col]], "<null>")
						} else {
							m[paths[col]] = append(m[paths[col]], v.Kind().String()+":"+v.String())
						}
					}
					return true
				})
				got = append(got, m)
			}
			if err != nil {
				break
			}
		}
		rows.Close()
	}
	want := []map[string][]string{
		{"id": {"INT64:1"}, "text": {"BYTE_ARRAY:Grüße 👋 日本"}, "ok": {"BOOLEAN:true"}, "score": {"DOUBLE:0.5"},
			"tags.list.element":                {"BYTE_ARRAY:a", "BYTE_ARRAY:b"},
			"classifications.churn_risk.label": {"BYTE_ARRAY:High"}, "classifications.churn_risk.confidence": {"DOUBLE:0.91"},
			"metadata.conversation_id": {"BYTE_ARRAY:c1"}, "note": {"<null>"}},
		{"id": {"INT64:2"}, "text": {"BYTE_ARRAY:comma, \"quote\"\nnewline"}, "ok": {"BOOLEAN:false"}, "score": {"DOUBLE:1.25"},
			"tags.list.element":                {"<null>"},
			"classifications.churn_risk.label": {"BYTE_ARRAY:Low"}, "classifications.churn_risk.confidence": {"DOUBLE:0.1"},
			"metadata.conversation_id": {"BYTE_ARRAY:c2"}, "note": {"<null>"}},
		{"id": {"INT64:3"}, "text": {"<null>"}, "ok": {"BOOLEAN:true"}, "score": {"DOUBLE:2.5"},
			"tags.list.element":                {"<null>"},
			"classifications.churn_risk.label": {"<null>"}, "classifications.churn_risk.confidence": {"<null>"},
			"metadata.conversation_id": {"BYTE_ARRAY:c1"}, "note": {"BYTE_ARRAY:n"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parquet-go rows:\n got %q\nwant %q", got, want)
	}
	// the empty list and the null list differ in their levels
	var levels []string
	for _, rg := range pf.RowGroups() {
		rows := rg.Rows()
		buf := make([]parquet.Row, 3)
		n, _ := rows.ReadRows(buf)
		for _, row := range buf[:n] {
			row.Range(func(col int, vals []parquet.Value) bool {
				if paths[col] == "tags.list.element" {
					levels = append(levels, fmt.Sprint(vals[0].DefinitionLevel()))
				}
				return true
			})
		}
		rows.Close()
	}
	if !reflect.DeepEqual(levels, []string{"3", "1", "0"}) {
		t.Errorf("tags definition levels %v (want a list, an empty list, a null list)", levels)
	}
}

func TestRollRowsDeterministic(t *testing.T) {
	mk := func() []sdk.Batch {
		var bs []sdk.Batch
		n := 0
		for _, size := range []int{4, 3, 3} {
			var ids, lines []string
			for i := 0; i < size; i++ {
				ids = append(ids, fmt.Sprintf("r%02d", n))
				lines = append(lines, fmt.Sprintf(`{"n":%d,"s":"row %d"}`, n, n))
				n++
			}
			bs = append(bs, makeBatch(t, ids, nil, lines...))
		}
		return bs
	}
	for _, format := range []string{"csv", "jsonl", "json", "parquet"} {
		t.Run(format, func(t *testing.T) {
			run := func() (string, []string, *recordingStore) {
				dir := t.TempDir()
				rs := &recordingStore{Store: DirStore(dir)}
				clock := &fakeClock{t: time.Date(2025, 11, 14, 9, 22, 47, 0, time.UTC)}
				e, err := New(rs, Options{Format: format, RollRows: 3, Prefix: "out/{{ date }}/", Now: clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range mk() {
					if err := e.Write(context.Background(), b); err != nil {
						t.Fatal(err)
					}
				}
				if err := e.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
				return dir, listFiles(t, dir), rs
			}
			dir, files1, rs := run()
			_, files2, _ := run()
			if !reflect.DeepEqual(files1, files2) {
				t.Errorf("a re-run wrote other keys:\n%v\n%v", files1, files2)
			}
			m := manifestOf(t, dir)
			var keys []string
			var rows []int64
			for i, o := range m.Objects {
				want := "out/2025-11-14/part-" + hash16(fmt.Sprintf("r%02d", 3*i)) + Ext(format, "")
				if o.Key != want {
					t.Errorf("object %d key %s, want %s", i, o.Key, want)
				}
				if o.FirstRecordID != fmt.Sprintf("r%02d", 3*i) {
					t.Errorf("object %d first id %s", i, o.FirstRecordID)
				}
				keys = append(keys, o.Key)
				rows = append(rows, o.Rows)
			}
			if !reflect.DeepEqual(rows, []int64{3, 3, 3, 1}) || m.Rows != 10 {
				t.Errorf("rows per object %v, total %d", rows, m.Rows)
			}
			if m.FirstRecordID != "r00" || m.LastRecordID != "r09" || m.Objects[3].LastRecordID != "r09" {
				t.Errorf("manifest ids: %+v", m)
			}
			if want := "out/2025-11-14/_manifest-" + hash16("r00") + ".json"; m.Key != want {
				t.Errorf("manifest key %s, want %s", m.Key, want)
			}
			if len(files1) != 5 {
				t.Errorf("files: %v", files1)
			}
			// the manifest is written last, after every object is committed
			var wantEvents []string
			for _, k := range keys {
				wantEvents = append(wantEvents, "commit "+k)
			}
			wantEvents = append(wantEvents, "put "+m.Key)
			if !reflect.DeepEqual(rs.events, wantEvents) {
				t.Errorf("events\n got %v\nwant %v", rs.events, wantEvents)
			}
		})
	}
}

func TestRollBytes(t *testing.T) {
	for _, tc := range []struct{ format, compression string }{{"jsonl", ""}, {"csv", "gzip"}, {"parquet", ""}} {
		t.Run(tc.format+tc.compression, func(t *testing.T) {
			var bs []sdk.Batch
			n := 0
			for b := 0; b < 20; b++ {
				var ids, lines []string
				for i := 0; i < 50; i++ {
					ids = append(ids, fmt.Sprintf("id-%04d", n))
					lines = append(lines, fmt.Sprintf(`{"n":%d,"payload":"%s"}`, n, strings.Repeat(hash16(fmt.Sprint(n)), 1+n%5)))
					n++
				}
				bs = append(bs, makeBatch(t, ids, nil, lines...))
			}
			limit := int64(4 << 10)
			dir, m := export(t, Options{Format: tc.format, Compression: tc.compression, RollBytes: limit}, bs...)
			if len(m.Objects) < 3 || m.Rows != int64(n) {
				t.Fatalf("want several objects and %d rows: %+v", n, m)
			}
			var total int64
			for i, o := range m.Objects {
				size, err := os.Stat(filepath.Join(dir, o.Key))
				if err != nil {
					t.Fatal(err)
				}
				if size.Size() != o.Bytes {
					t.Errorf("%s: %d bytes, manifest %d", o.Key, size.Size(), o.Bytes)
				}
				if i < len(m.Objects)-1 && o.Bytes < limit/2 {
					t.Errorf("%s rolled early at %d bytes", o.Key, o.Bytes)
				}
				total += o.Rows
			}
			if total != int64(n) {
				t.Errorf("objects hold %d rows, want %d", total, n)
			}
		})
	}
}

// conversation builds a batch of messages: {conversation, ts} pairs.
func conversation(t *testing.T, idBase int, msgs ...[2]string) sdk.Batch {
	var ids, lines, groups, orders []string
	for i, m := range msgs {
		ids = append(ids, fmt.Sprintf("m%02d", idBase+i))
		lines = append(lines, fmt.Sprintf(`{"metadata":{"conversation_id":%q},"ts":%q,"text":"msg %d Grüße","extra":null}`, m[0], m[1], idBase+i))
		groups = append(groups, m[0])
		orders = append(orders, m[1])
	}
	return makeBatch(t, ids, map[string][]string{GroupByAttr: groups, OrderByAttr: orders}, lines...)
}

func groupedBatches(t *testing.T) []sdk.Batch {
	return []sdk.Batch{
		conversation(t, 0, [2]string{"c1", "10"}, [2]string{"c2", "5"}),
		conversation(t, 2, [2]string{"c1", "9"}, [2]string{"c3", "1"}),
		conversation(t, 4, [2]string{"c2", "2"}, [2]string{"c1", "100"}, [2]string{"", "0"}),
	}
}

func TestGroupedJSONL(t *testing.T) {
	dir, m := export(t, Options{Format: "jsonl", GroupBy: true, OrderBy: true, GroupField: "conversation_id"}, groupedBatches(t)...)
	if len(m.Objects) != 1 || m.Rows != 4 {
		t.Fatalf("manifest %+v", m)
	}
	if m.FirstRecordID != "m00" || m.Objects[0].Key != "part-"+hash16("m00")+".jsonl" {
		t.Errorf("first record id %s, key %s", m.FirstRecordID, m.Objects[0].Key)
	}
	lines := strings.Split(strings.TrimSpace(string(readFile(t, dir, m.Objects[0].Key))), "\n")
	type row struct {
		Key      string            `json:"conversation_id"`
		Count    int               `json:"message_count"`
		Messages []json.RawMessage `json:"messages"`
	}
	want := []struct {
		key string
		ts  []string
	}{
		{"c1", []string{"9", "10", "100"}},
		{"c2", []string{"2", "5"}},
		{"c3", []string{"1"}},
		{"", []string{"0"}},
	}
	if len(lines) != len(want) {
		t.Fatalf("lines: %q", lines)
	}
	for i, l := range lines {
		var r row
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if r.Key != want[i].key || r.Count != len(want[i].ts) || len(r.Messages) != r.Count {
			t.Errorf("row %d: %s", i, l)
			continue
		}
		for k, msg := range r.Messages {
			var mm map[string]any
			if err := json.Unmarshal(msg, &mm); err != nil {
				t.Fatal(err)
			}
			if mm["ts"] != want[i].ts[k] {
				t.Errorf("row %d message %d: %s", i, k, msg)
			}
			if v, ok := mm["extra"]; !ok || v != nil {
				t.Errorf("row %d message %d: explicit null lost: %s", i, k, msg)
			}
			if md, _ := mm["metadata"].(map[string]any); md["conversation_id"] != want[i].key {
				t.Errorf("row %d message %d: %s", i, k, msg)
			}
		}
	}
}

func TestGroupedCSVAndParquet(t *testing.T) {
	dir, m := export(t, Options{Format: "csv", GroupBy: true, OrderBy: true, GroupField: "conversation_id"}, groupedBatches(t)...)
	rows, err := csv.NewReader(bytes.NewReader(readFile(t, dir, m.Objects[0].Key))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rows[0], []string{"conversation_id", "message_count", "messages"}) || len(rows) != 5 {
		t.Fatalf("csv: %q", rows)
	}
	if rows[1][0] != "c1" || rows[1][1] != "3" {
		t.Errorf("csv row: %q", rows[1])
	}
	var msgs []map[string]any
	if err := json.Unmarshal([]byte(rows[1][2]), &msgs); err != nil {
		t.Fatalf("messages cell is not JSON: %v: %s", err, rows[1][2])
	}
	if len(msgs) != 3 || msgs[0]["ts"] != "9" || msgs[2]["ts"] != "100" || msgs[0]["text"] != "msg 2 Grüße" {
		t.Errorf("messages cell: %s", rows[1][2])
	}

	dir, m = export(t, Options{Format: "parquet", GroupBy: true, OrderBy: true, GroupField: "conversation_id"}, groupedBatches(t)...)
	tbl := readParquetArrow(t, readFile(t, dir, m.Objects[0].Key))
	defer tbl.Release()
	if tbl.NumRows() != 4 {
		t.Fatalf("parquet rows %d", tbl.NumRows())
	}
	f, _ := tbl.Schema().FieldsByName("messages")
	if len(f) != 1 || f[0].Type.ID() != arrow.LIST || f[0].Type.(*arrow.ListType).Elem().ID() != arrow.STRUCT {
		t.Fatalf("schema %s", tbl.Schema())
	}
	got := tableJSON(t, tbl)
	c1, _ := got[0]["messages"].([]any)
	if got[0]["conversation_id"] != "c1" || len(c1) != 3 || c1[1].(map[string]any)["ts"] != "10" {
		t.Errorf("parquet grouped row: %v", got[0])
	}
}

func TestGrouperSchemaChanges(t *testing.T) {
	g := NewGrouper("", false)
	g.Add(makeBatch(t, []string{"a"}, map[string][]string{GroupByAttr: {"k"}}, `{"x":1,"s":{"a":"1"},"l":[1]}`))
	g.Add(makeBatch(t, []string{"b"}, map[string][]string{GroupByAttr: {"k"}}, `{"x":1.5,"s":{"b":true},"y":"new","l":[{"o":1}]}`))
	g.Add(makeBatch(t, []string{"c"}, map[string][]string{GroupByAttr: {"k"}}, `{"x":null,"s":"text"}`))
	g.Add(makeBatch(t, nil, nil)) // empty: ignored
	if g.Len() != 3 {
		t.Fatalf("Len %d", g.Len())
	}
	recs, err := g.Records(nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.Len() != 0 || len(recs) != 1 || recs[0].NumRows() != 1 {
		t.Fatalf("records %v", recs)
	}
	defer recs[0].Release()
	var v map[string]any
	decodeJSON(t, arrowjson.NewEncoder().AppendRow(nil, recs[0], 0), &v)
	want := `{"group":"k","message_count":3,"messages":[{"x":1,"s":{"a":"1"},"l":[1]},{"x":1.5,"s":{"b":true},"y":"new","l":[{"o":1}]},{"x":null,"s":"text"}]}`
	var w map[string]any
	decodeJSON(t, []byte(want), &w)
	if !reflect.DeepEqual(v, w) {
		t.Errorf("got  %v\nwant %v", v, w)
	}
}

func TestFlushDue(t *testing.T) {
	clock := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	dir := t.TempDir()
	e, err := New(DirStore(dir), Options{Format: "jsonl", RollInterval: time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if e.FlushDue(clock.t.Add(time.Hour)) {
		t.Error("due with nothing held")
	}
	if err := e.Flush(ctx); err != nil || len(listFiles(t, dir)) != 0 {
		t.Fatalf("empty flush: %v %v", err, listFiles(t, dir))
	}
	start := clock.t
	if err := e.Write(ctx, makeBatch(t, []string{"a"}, nil, `{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	clock.t = start.Add(30 * time.Second)
	if err := e.Write(ctx, makeBatch(t, []string{"b"}, nil, `{"x":2}`)); err != nil {
		t.Fatal(err)
	}
	if e.FlushDue(start.Add(59 * time.Second)) {
		t.Error("due before the interval")
	}
	if !e.FlushDue(start.Add(time.Minute)) {
		t.Error("not due after the interval")
	}
	clock.t = start.Add(time.Minute)
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if e.FlushDue(start.Add(time.Hour)) {
		t.Error("due after Flush")
	}
	m := e.Manifests()[0]
	if !m.StartedAt.Equal(start) || !m.FinishedAt.Equal(start.Add(time.Minute)) || m.Rows != 2 {
		t.Errorf("manifest %+v", m)
	}
	// the next batch starts a new run
	clock.t = start.Add(2 * time.Hour)
	if err := e.Write(ctx, makeBatch(t, []string{"c"}, nil, `{"x":3}`)); err != nil {
		t.Fatal(err)
	}
	if e.FlushDue(start.Add(2*time.Hour + 59*time.Second)) {
		t.Error("due too early in the second run")
	}
	if !e.FlushDue(start.Add(2*time.Hour + time.Minute)) {
		t.Error("not due in the second run")
	}
}

func TestPrefixAndManifest(t *testing.T) {
	loc := time.FixedZone("X", 2*3600)
	clock := &fakeClock{t: time.Date(2025, 11, 14, 23, 30, 5, 0, time.UTC)}
	dir := t.TempDir()
	e, err := New(DirStore(dir), Options{Format: "jsonl", Compression: "gzip", Prefix: "exp/{{year}}/{{ month }}/{{ day }}/{{ hour }}/{{ date }}T{{ time }}-",
		Location: loc, Now: clock.Now, FullRefresh: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Write(context.Background(), makeBatch(t, []string{"a", "b"}, nil, `{"x":1}`, `{"x":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	files := listFiles(t, dir)
	p := "exp/2025/11/15/01/2025-11-15T013005-"
	want := []string{p + "_manifest-" + hash16("a") + ".json", p + "part-" + hash16("a") + ".jsonl.gz"}
	if !reflect.DeepEqual(files, want) {
		t.Fatalf("files %v, want %v", files, want)
	}
	var raw map[string]any
	decodeJSON(t, readFile(t, dir, want[0]), &raw)
	for _, k := range []string{"version", "format", "compression", "full_refresh", "started_at", "finished_at", "rows", "first_record_id", "last_record_id", "objects"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("manifest lacks %s: %v", k, raw)
		}
	}
	if raw["full_refresh"] != true || raw["compression"] != "gzip" || raw["format"] != "jsonl" || raw["started_at"] != "2025-11-14T23:30:05Z" {
		t.Errorf("manifest %v", raw)
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "format is required"},
		{Options{Format: "xml"}, `unknown format "xml"`},
		{Options{Format: "parquet", Compression: "gzip"}, "parquet compresses"},
		{Options{Format: "csv", Compression: "brotli"}, `unknown compression "brotli"`},
		{Options{Format: "parquet", ParquetCompression: "lz5"}, `unknown parquet compression "lz5"`},
		{Options{Format: "csv", RollRows: -1}, "roll rows"},
		{Options{Format: "csv", OrderBy: true}, "needs group_by"},
		{Options{Format: "csv", GroupBy: true, GroupField: "messages"}, "clashes"},
		{Options{Format: "csv", Prefix: "{{ minute }}/"}, "unknown placeholder {{ minute }}"},
		{Options{Format: "csv", Prefix: "{{ date /"}, "unbalanced"},
	} {
		if _, err := New(DirStore(t.TempDir()), tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.opts, err, tc.want)
		}
	}
}

func TestCloseAbortsAndOddInput(t *testing.T) {
	dir := t.TempDir()
	e, err := New(DirStore(dir), Options{Format: "parquet"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// empty batches, all-null columns, no ids
	if err := e.Write(ctx, makeBatch(t, nil, nil)); err != nil {
		t.Fatal(err)
	}
	if err := e.Write(ctx, makeBatch(t, nil, nil, `{"a":null,"b":{}}`, `{"a":null}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if files := listFiles(t, dir); len(files) != 0 {
		t.Errorf("Close left %v", files)
	}

	// the same odd input, flushed, in every format
	for _, format := range []string{"csv", "jsonl", "json", "parquet"} {
		dir, m := export(t, Options{Format: format},
			makeBatch(t, nil, nil),
			makeBatch(t, nil, nil, `{"a":null,"b":{}}`, `{"a":null}`),
			makeBatch(t, nil, nil, `{"a":"now a string","b":{"c":[1,2]}}`))
		if m.Rows != 3 {
			t.Errorf("%s: manifest %+v", format, m)
		}
		for _, o := range m.Objects {
			if !strings.HasPrefix(o.Key, "part-") || o.Bytes == 0 {
				t.Errorf("%s: object %+v", format, o)
			}
			if format == "parquet" {
				tbl := readParquetArrow(t, readFile(t, dir, o.Key))
				if tbl.NumRows() != o.Rows {
					t.Errorf("parquet %s: %d rows, manifest %d", o.Key, tbl.NumRows(), o.Rows)
				}
				tbl.Release()
			}
		}
	}
}

func TestWriterDirect(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Options{Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "[]\n" || w.Bytes() != 3 {
		t.Errorf("empty json: %q %d", buf.String(), w.Bytes())
	}

	// parquet conforms a batch with fewer fields to the file's schema
	buf.Reset()
	w, err = NewWriter(&buf, Options{Format: "parquet"})
	if err != nil {
		t.Fatal(err)
	}
	b1 := makeBatch(t, nil, nil, `{"a":1.5,"s":{"x":"1","y":2}}`)
	b2 := makeBatch(t, nil, nil, `{"a":2,"s":{"y":3}}`)
	b3 := makeBatch(t, nil, nil, `{"z":1}`)
	if err := w.Write(b1.Record); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(b2.Record); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(b3.Record); err == nil || !strings.Contains(err.Error(), `new field "z"`) {
		t.Errorf("new field: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if int64(buf.Len()) != w.Bytes() {
		t.Errorf("Bytes %d, wrote %d", w.Bytes(), buf.Len())
	}
	got := tableJSON(t, readParquetArrow(t, buf.Bytes()))
	js, _ := json.Marshal(got)
	if string(js) != `[{"a":1.5,"s":{"x":"1","y":2}},{"a":2,"s":{"y":3}}]` {
		t.Errorf("got %s", js)
	}
}

// A batch that does not fit a Parquet file's schema is named by its field
// and the two types, not by two whole schemas.
func TestParquetMisfitNamesTheFieldAndTypes(t *testing.T) {
	for _, tc := range []struct {
		name, first, later, want string
	}{
		{"int then string", `{"row_id":"a","score":3,"text":"x"}`, `{"row_id":"b","score":"high"}`,
			`field "score": the file has int64, this batch has string`},
		{"nested", `{"c":{"churn":{"confidence":0.9,"label":"High"}}}`, `{"c":{"churn":{"confidence":0.5,"label":{"en":"High"}}}}`,
			`field "c.churn.label": the file has string, this batch has struct`},
		{"struct then scalar", `{"m":{"q":"x"}}`, `{"m":"flat"}`, `field "m": the file has struct, this batch has string`},
		{"list element", `{"tags":["a"]}`, `{"tags":[1]}`, `field "tags": the file has list of string, this batch has list of int64`},
		{"new nested field", `{"m":{"q":"x"}}`, `{"m":{"q":"y","r":1}}`, `new field "m.r"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, Options{Format: "parquet"})
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(makeBatch(t, nil, nil, tc.first).Record); err != nil {
				t.Fatal(err)
			}
			err = w.Write(makeBatch(t, nil, nil, tc.later).Record)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant it to say %s", err, tc.want)
			}
			for _, dump := range []string{"schema:", "fields:", "metadata"} {
				if strings.Contains(err.Error(), dump) {
					t.Errorf("the error dumps a schema (%q): %v", dump, err)
				}
			}
		})
	}
}

func TestCSVColumnsOption(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Options{Format: "csv", Columns: []string{"b.c", "a", "none"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(makeBatch(t, nil, nil, `{"a":1,"b":{"c":"x","d":1},"e":true}`).Record); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(makeBatch(t, nil, nil, `{"late":"y","a":2}`).Record); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "b.c,a,none\nx,1,\n,2,\n"; got != want {
		t.Errorf("CSV %q, want %q", got, want)
	}
	buf.Reset()
	w, _ = NewWriter(&buf, Options{Format: "csv", Columns: []string{"a"}})
	if err := w.Close(); err != nil || buf.String() != "a\n" {
		t.Errorf("empty: %q, %v", buf.String(), err)
	}
	if _, err := NewWriter(&buf, Options{Format: "parquet", Columns: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "csv only") {
		t.Errorf("columns with parquet: %v", err)
	}
}
