package parquetread

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/arrow-go/v18/parquet/schema"

	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// writeParquet writes rec as a Parquet file of row groups of at most
// rowGroupRows rows, with the Arrow schema stored when store is set.
func writeParquet(t testing.TB, rec arrow.RecordBatch, rowGroupRows int64, store bool, props ...parquet.WriterProperty) []byte {
	t.Helper()
	var buf bytes.Buffer
	aprops := pqarrow.NewArrowWriterProperties()
	if store {
		aprops = pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
	}
	props = append([]parquet.WriterProperty{parquet.WithMaxRowGroupLength(rowGroupRows)}, props...)
	w, err := pqarrow.NewFileWriter(rec.Schema(), &buf, parquet.NewWriterProperties(props...), aprops)
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

func recordFromJSON(t testing.TB, s *arrow.Schema, js string) arrow.RecordBatch {
	t.Helper()
	rec, _, err := array.RecordFromJSON(memory.DefaultAllocator, s, strings.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func open(t testing.TB, data []byte, opts Options) *File {
	t.Helper()
	f, err := Open(bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// readAll reads f from row from, checking the batches' bookkeeping, and
// returns each row as JSON (sdk/arrowjson).
func readAll(t testing.TB, f *File, from int64, maxRows int) []string {
	t.Helper()
	r, err := f.Read(context.Background(), from)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []string
	next := from
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n := b.Record.NumRows()
		switch {
		case b.Row != next:
			t.Fatalf("batch starts at row %d, want %d", b.Row, next)
		case b.Next != b.Row+n:
			t.Fatalf("batch of %d rows from %d says next %d", n, b.Row, b.Next)
		case n == 0 || (maxRows > 0 && n > int64(maxRows)):
			t.Fatalf("batch of %d rows (at most %d)", n, maxRows)
		case !b.Record.Schema().Equal(f.Schema()):
			t.Fatalf("batch schema %s, file schema %s", b.Record.Schema(), f.Schema())
		}
		if rg, _ := f.Locate(b.Row); rg != b.RowGroup {
			t.Fatalf("batch at row %d says row group %d, it is in %d", b.Row, b.RowGroup, rg)
		}
		if rg, _ := f.Locate(b.Next - 1); rg != b.RowGroup {
			t.Fatalf("batch %d..%d spans row groups %d and %d", b.Row, b.Next, b.RowGroup, rg)
		}
		places := b.Places()
		for i, p := range places {
			if p != b.Row+int64(i) {
				t.Fatalf("place %d of a batch at row %d is %d", i, b.Row, p)
			}
		}
		enc := arrowjson.NewEncoder()
		for i := 0; i < int(n); i++ {
			out = append(out, string(enc.AppendRow(nil, b.Record, i)))
		}
		b.Record.Release()
		next = b.Next
	}
	if next != f.NumRows() {
		t.Fatalf("reading from %d ended at row %d of %d", from, next, f.NumRows())
	}
	return out
}

var nestedSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "name", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}, Nullable: true},
	{Name: "text", Type: arrow.BinaryTypes.LargeString, Nullable: true},
	{Name: "m", Type: arrow.StructOf(
		arrow.Field{Name: "tags", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
		arrow.Field{Name: "items", Type: arrow.ListOf(arrow.StructOf(
			arrow.Field{Name: "x", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
			arrow.Field{Name: "y", Type: arrow.BinaryTypes.String, Nullable: true})), Nullable: true},
		arrow.Field{Name: "attrs", Type: arrow.MapOf(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Float64), Nullable: true},
	), Nullable: true},
}, nil)

// nestedRows makes n rows of nestedSchema, with nulls and empty lists here
// and there.
func nestedRows(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		switch {
		case i%17 == 5:
			fmt.Fprintf(&b, `{"id":%d}`, i)
		case i%11 == 3:
			fmt.Fprintf(&b, `{"id":%d,"name":"n%d","m":{"tags":[],"items":[]}}`, i, i%4)
		default:
			fmt.Fprintf(&b, `{"id":%d,"name":"n%d","text":"row %d: %s","m":{"tags":["t%d","u"],"items":[{"x":%d,"y":"y%d"},{"x":null}],"attrs":[{"key":"k","value":%d.5}]}}`,
				i, i%4, i, strings.Repeat("å", i%7), i%3, i, i, i)
		}
	}
	b.WriteByte(']')
	return b.String()
}

// Reading from any row gives exactly the rows from there on: what a
// resumed run needs to lose or repeat nothing.
func TestReadFromEveryRow(t *testing.T) {
	const rows = 203
	rec := recordFromJSON(t, nestedSchema, nestedRows(rows))
	defer rec.Release()
	for _, store := range []bool{true, false} {
		t.Run(fmt.Sprintf("store_schema=%v", store), func(t *testing.T) {
			data := writeParquet(t, rec, 50, store)
			f := open(t, data, Options{BatchRows: 16})
			if f.NumRows() != rows || f.NumRowGroups() != 5 {
				t.Fatalf("%d rows in %d row groups", f.NumRows(), f.NumRowGroups())
			}
			all := readAll(t, f, 0, 16)
			if len(all) != rows {
				t.Fatalf("read %d rows", len(all))
			}
			if !strings.Contains(all[7], `"m":{"tags":["t1","u"],"items":[{"x":7,"y":"y7"},{}],"attrs":{"k":7.5}}`) || !strings.Contains(all[7], `"text":"row 7: "`) {
				t.Fatalf("row 7: %s", all[7])
			}
			if all[5] != `{"id":5}` || all[14] != `{"id":14,"name":"n2","m":{"tags":[],"items":[]}}` {
				t.Fatalf("rows 5, 14: %s %s", all[5], all[14])
			}
			for from := int64(0); from <= rows; from++ {
				got := readAll(t, f, from, 16)
				if strings.Join(got, "\n") != strings.Join(all[from:], "\n") {
					t.Fatalf("from row %d: got %d rows, first %q", from, len(got), got[:min(1, len(got))])
				}
			}
		})
	}
}

func TestReadRejectsRowsOutsideTheFile(t *testing.T) {
	rec := recordFromJSON(t, nestedSchema, nestedRows(3))
	defer rec.Release()
	f := open(t, writeParquet(t, rec, 50, true), Options{})
	for _, from := range []int64{-1, 4} {
		if _, err := f.Read(context.Background(), from); err == nil {
			t.Errorf("Read(%d) of a 3-row file: no error", from)
		}
	}
}

// The types batches carry: see the package documentation.
func TestTypesAreConverted(t *testing.T) {
	jsonType, err := extensions.NewJSONType(arrow.BinaryTypes.String)
	if err != nil {
		t.Fatal(err)
	}
	s := arrow.NewSchema([]arrow.Field{
		{Name: "dict", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}, Nullable: true},
		{Name: "ts_sthlm", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "Europe/Stockholm"}, Nullable: true},
		{Name: "ts_utc", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}, Nullable: true},
		{Name: "ts_local", Type: &arrow.TimestampType{Unit: arrow.Nanosecond}, Nullable: true},
		{Name: "date", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
		{Name: "amount", Type: &arrow.Decimal128Type{Precision: 10, Scale: 2}, Nullable: true},
		{Name: "big", Type: &arrow.Decimal256Type{Precision: 40, Scale: 0}, Nullable: true},
		{Name: "ls", Type: arrow.BinaryTypes.LargeString, Nullable: false},
		{Name: "lb", Type: arrow.BinaryTypes.LargeBinary, Nullable: true},
		{Name: "ll", Type: arrow.LargeListOf(arrow.PrimitiveTypes.Int64), Nullable: true},
		{Name: "vec", Type: arrow.FixedSizeListOf(3, arrow.PrimitiveTypes.Float32), Nullable: true},
		{Name: "m", Type: arrow.MapOf(arrow.BinaryTypes.String, arrow.BinaryTypes.LargeString), Nullable: true},
		{Name: "s", Type: arrow.StructOf(arrow.Field{Name: "d", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}, Nullable: true}), Nullable: true},
		{Name: "uuid", Type: extensions.NewUUIDType(), Nullable: true},
		{Name: "doc", Type: jsonType, Nullable: true},
		{Name: "f16", Type: arrow.FixedWidthTypes.Float16, Nullable: true},
		{Name: "u64", Type: arrow.PrimitiveTypes.Uint64, Nullable: true},
		{Name: "t", Type: arrow.FixedWidthTypes.Time64us, Nullable: true},
		{Name: "bin", Type: arrow.BinaryTypes.Binary, Nullable: true},
		{Name: "nothing", Type: arrow.Null, Nullable: true},
		{Name: "raw", Type: arrow.BinaryTypes.String, Nullable: true, Metadata: arrow.NewMetadata([]string{rawJSONKey}, []string{rawJSONValue})},
	}, nil)
	rec := recordFromJSON(t, s, `[
	{"dict":"x","ts_sthlm":1735787045678,"ts_utc":1735787045678901,"ts_local":1735787045123456789,"date":"2025-01-02",
	 "amount":"12.34","big":"1234567890123456789012345678901234567890","ls":"large","lb":"AQID","ll":[1,2],"vec":[1.5,2,3],
	 "m":[{"key":"k","value":"v"}],"s":{"d":"sd"},"uuid":"3c1d2a5e-0000-4000-8000-00000000abcd","doc":"{\"a\":[1,2]}",
	 "f16":1.5,"u64":18446744073709551615,"t":3600000001,"bin":"AAEC","nothing":null,"raw":"{\"z\":null}"},
	{"ls":""}]`)
	defer rec.Release()
	want := []string{
		`{"dict":"x","ts_sthlm":"2025-01-02T04:04:05.678+01:00","ts_utc":"2025-01-02T03:04:05.678901Z","ts_local":"2025-01-02T03:04:05.123456789Z","date":"2025-01-02",` +
			`"amount":"12.34","big":"1234567890123456789012345678901234567890","ls":"large","lb":"AQID","ll":[1,2],"vec":[1.5,2,3],` +
			`"m":{"k":"v"},"s":{"d":"sd"},"uuid":"3c1d2a5e-0000-4000-8000-00000000abcd","doc":{"a":[1,2]},` +
			`"f16":1.5,"u64":18446744073709551615,"t":"01:00:00.000001","bin":"AAEC","raw":{"z":null}}`,
		`{"ls":""}`,
	}
	types := map[string]string{
		"dict": "utf8", "ts_utc": "timestamp[us, tz=UTC]", "ts_local": "timestamp[ns]", "date": "date32",
		"amount": "decimal(10, 2)", "big": "decimal256(40, 0)", "ls": "utf8", "lb": "binary", "ll": "list<item: int64, nullable>",
		"vec": "list<item: float32, nullable>", "m": "map<utf8, utf8, items_nullable>", "s": "struct<d: utf8 nullable>",
		"uuid": "utf8", "doc": "utf8", "f16": "float16", "u64": "uint64", "t": "time64[us]", "bin": "binary", "nothing": "null", "raw": "utf8",
	}
	for _, store := range []bool{true, false} {
		t.Run(fmt.Sprintf("store_schema=%v", store), func(t *testing.T) {
			f := open(t, writeParquet(t, rec, 100, store), Options{})
			want := append([]string(nil), want...)
			types := maps(types)
			if store {
				types["ts_sthlm"] = "timestamp[ms, tz=Europe/Stockholm]"
			} else {
				// Parquet keeps no time zone, only "adjusted to UTC".
				types["ts_sthlm"] = "timestamp[ms, tz=UTC]"
				want[0] = strings.Replace(want[0], "2025-01-02T04:04:05.678+01:00", "2025-01-02T03:04:05.678Z", 1)
			}
			for _, fld := range f.Schema().Fields() {
				if !fld.Nullable {
					t.Errorf("field %s is not nullable", fld.Name)
				}
				if fld.Metadata.FindKey(fieldIDKey) >= 0 {
					t.Errorf("field %s keeps %s", fld.Name, fieldIDKey)
				}
				if got := fld.Type.String(); got != types[fld.Name] {
					t.Errorf("field %s: type %s, want %s", fld.Name, got, types[fld.Name])
				}
				isRaw := fld.Metadata.FindKey(rawJSONKey) >= 0
				if isRaw != (fld.Name == "doc" || (fld.Name == "raw" && store)) {
					t.Errorf("field %s: raw JSON %v", fld.Name, isRaw)
				}
			}
			if f.Schema().Metadata().Len() != 0 {
				t.Errorf("schema metadata %v", f.Schema().Metadata())
			}
			if !store {
				// Without the stored schema the raw marker is not known:
				// the column is the text it holds.
				want[0] = strings.Replace(want[0], `"raw":{"z":null}`, `"raw":"{\"z\":null}"`, 1)
			}
			got := readAll(t, f, 0, 0)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Files from other writers: Parquet annotations without an Arrow schema
// (JSON, ENUM, UUID, none) and INT96 timestamps.
func TestParquetAnnotations(t *testing.T) {
	node := func(name string, lt schema.LogicalType, typ parquet.Type, length int) schema.Node {
		n, err := schema.NewPrimitiveNodeLogical(name, parquet.Repetitions.Optional, lt, typ, length, -1)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	root, err := schema.NewGroupNode("schema", parquet.Repetitions.Required, schema.FieldList{
		node("doc", schema.JSONLogicalType{}, parquet.Types.ByteArray, -1),
		node("kind", schema.EnumLogicalType{}, parquet.Types.ByteArray, -1),
		node("plain", schema.NoLogicalType{}, parquet.Types.ByteArray, -1),
		node("id", schema.UUIDLogicalType{}, parquet.Types.FixedLenByteArray, 16),
		node("legacy_ts", schema.NoLogicalType{}, parquet.Types.Int96, -1),
	}, -1)
	if err != nil {
		t.Fatal(err)
	}
	write := func(doc string) []byte {
		var buf bytes.Buffer
		w := file.NewParquetWriter(&buf, root, file.WithWriterProps(parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Snappy))))
		rg, err := w.AppendRowGroupChecked()
		if err != nil {
			t.Fatal(err)
		}
		defs := []int16{1, 0}
		for i := 0; i < 5; i++ {
			cw, err := rg.NextColumn()
			if err != nil {
				t.Fatal(err)
			}
			switch c := cw.(type) {
			case *file.ByteArrayColumnChunkWriter:
				v := [][]byte{[]byte(doc), []byte("RED"), {0xff, 0x00}}[i]
				_, err = c.WriteBatch([]parquet.ByteArray{v}, defs, nil)
			case *file.FixedLenByteArrayColumnChunkWriter:
				_, err = c.WriteBatch([]parquet.FixedLenByteArray{{0x3c, 0x1d, 0x2a, 0x5e, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0xab, 0xcd}}, defs, nil)
			case *file.Int96ColumnChunkWriter:
				const ns = 1735787045123456789 // 2025-01-02T03:04:05.123456789Z
				const day = 86400 * 1000000000
				var ts parquet.Int96
				ts.SetNanoSeconds(ns % day)
				binary.LittleEndian.PutUint32(ts[8:], uint32(ns/day+2440588)) // Julian day
				_, err = c.WriteBatch([]parquet.Int96{ts}, defs, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := cw.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if err := rg.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	f := open(t, write(`{"a": [1, {"b": null}]}`), Options{})
	if got := f.Schema().String(); !strings.Contains(got, "doc: type=utf8") || !strings.Contains(got, "kind: type=utf8") ||
		!strings.Contains(got, "plain: type=binary") || !strings.Contains(got, "id: type=utf8") || !strings.Contains(got, "legacy_ts: type=timestamp[ns, tz=UTC]") {
		t.Fatalf("schema %s", got)
	}
	got := readAll(t, f, 0, 0)
	want := `{"doc":{"a": [1, {"b": null}]},"kind":"RED","plain":"/wA=","id":"3c1d2a5e-0000-4000-8000-00000000abcd","legacy_ts":"2025-01-02T03:04:05.123456789Z"} {}`
	if strings.Join(got, " ") != want {
		t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), want)
	}

	bad := open(t, write(`{"a": `), Options{})
	r, err := bad.Read(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "row 0: column doc:") || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("invalid JSON in a JSON column: %v", err)
	}
}

func TestReservedColumnNamesAreRefused(t *testing.T) {
	s := arrow.NewSchema([]arrow.Field{{Name: "_pipeline_id", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	rec := recordFromJSON(t, s, `[{"_pipeline_id":"x"}]`)
	defer rec.Release()
	data := writeParquet(t, rec, 10, false)
	_, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
	if err == nil || !strings.Contains(err.Error(), `"_pipeline_id"`) {
		t.Fatalf("got %v", err)
	}
}

func TestIncompleteAndForeignFiles(t *testing.T) {
	rec := recordFromJSON(t, nestedSchema, nestedRows(20))
	defer rec.Release()
	data := writeParquet(t, rec, 50, true)
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"empty":         {nil, ErrIncomplete},
		"magic only":    {[]byte("PAR1"), ErrIncomplete},
		"half written":  {data[:len(data)/2], ErrIncomplete},
		"no footer yet": {data[:len(data)-1], ErrIncomplete},
		"jsonl":         {[]byte(`{"a":1}` + "\n"), ErrNotParquet},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tc.data), int64(len(tc.data)), Options{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	corrupt := append([]byte(nil), data...)
	copy(corrupt[len(corrupt)-8:], []byte{0xff, 0xff, 0xff, 0x7f})
	if _, err := Open(bytes.NewReader(corrupt), int64(len(corrupt)), Options{}); err == nil || errors.Is(err, ErrIncomplete) {
		t.Fatalf("a footer longer than the file: %v", err)
	}
	encrypted := append([]byte(nil), data...)
	copy(encrypted[len(encrypted)-4:], "PARE")
	if _, err := Open(bytes.NewReader(encrypted), int64(len(encrypted)), Options{}); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("encrypted footer: %v", err)
	}
}

// countingReaderAt counts the reads made of a file and their bytes, as
// ranged requests to a bucket would be.
type countingReaderAt struct {
	r     io.ReaderAt
	mu    sync.Mutex
	reads int
	bytes int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.reads++
	c.bytes += int64(len(p))
	c.mu.Unlock()
	return c.r.ReadAt(p, off)
}

// Open reads the head and the tail, and reading reads each column chunk
// once.
func TestReadsAreFewAndRanged(t *testing.T) {
	rec := recordFromJSON(t, nestedSchema, nestedRows(1000))
	defer rec.Release()
	data := writeParquet(t, rec, 250, true, parquet.WithCompression(compress.Codecs.Zstd))
	cr := &countingReaderAt{r: bytes.NewReader(data)}
	f, err := Open(cr, int64(len(data)), Options{BatchRows: 100})
	if err != nil {
		t.Fatal(err)
	}
	if cr.reads != 2 {
		t.Errorf("Open made %d reads, want 2 (magic, then the tail with the footer)", cr.reads)
	}
	cr.reads = 0
	readAll(t, f, 0, 100)
	columns := f.meta.Schema.NumColumns()
	if want := columns * f.NumRowGroups(); cr.reads != want {
		t.Errorf("reading made %d reads, want one per column chunk (%d)", cr.reads, want)
	}
	// Resuming in the last row group reads only its chunks: at its start
	// once each, inside it twice (pqarrow's seek fetches the chunk again).
	cr.reads = 0
	readAll(t, f, 750, 100)
	if cr.reads != columns {
		t.Errorf("reading the last row group made %d reads, want %d", cr.reads, columns)
	}
	cr.reads = 0
	readAll(t, f, 900, 100)
	if cr.reads != 2*columns {
		t.Errorf("reading the last row group from inside made %d reads, want %d", cr.reads, 2*columns)
	}
}

// peakAllocator tracks the bytes allocated and not yet freed.
type peakAllocator struct {
	mem       memory.Allocator
	mu        sync.Mutex
	cur, peak int64
}

func (p *peakAllocator) add(n int64) {
	p.mu.Lock()
	p.cur += n
	p.peak = max(p.peak, p.cur)
	p.mu.Unlock()
}

func (p *peakAllocator) Allocate(n int) []byte {
	p.add(int64(n))
	return p.mem.Allocate(n)
}

func (p *peakAllocator) Reallocate(n int, b []byte) []byte {
	p.add(int64(n - len(b)))
	return p.mem.Reallocate(n, b)
}

func (p *peakAllocator) Free(b []byte) {
	p.add(-int64(len(b)))
	p.mem.Free(b)
}

// Memory is bounded by a row group and a batch, not by the file.
func TestMemoryIsBoundedByARowGroup(t *testing.T) {
	s := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "text", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	const rows, perGroup = 40000, 2000
	pad := strings.Repeat("x", 400)
	for i := 0; i < rows; i++ {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		b.Field(1).(*array.StringBuilder).Append(fmt.Sprintf("%d %s", i, pad))
	}
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()
	data := writeParquet(t, rec, perGroup, false, parquet.WithDictionaryDefault(false), parquet.WithCompression(compress.Codecs.Snappy))

	mem := &peakAllocator{mem: memory.NewCheckedAllocator(memory.NewGoAllocator())}
	f := open(t, data, Options{BatchRows: 500, Allocator: mem})
	r, err := f.Read(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n += int(b.Record.NumRows())
		b.Record.Release()
	}
	r.Close()
	if n != rows {
		t.Fatalf("read %d rows", n)
	}
	decoded := int64(rows * (len(pad) + 14)) // the file's text, decoded
	rowGroup := decoded / (rows / perGroup)
	t.Logf("peak %d bytes allocated reading %d bytes of text in row groups of %d", mem.peak, decoded, rowGroup)
	if mem.peak > 4*rowGroup || mem.peak > decoded/4 {
		t.Errorf("peak of %d bytes allocated reading %d bytes of text in row groups of %d", mem.peak, decoded, rowGroup)
	}
	mem.mem.(*memory.CheckedAllocator).AssertSize(t, 0)
}

func TestFingerprint(t *testing.T) {
	rec := recordFromJSON(t, nestedSchema, nestedRows(100))
	defer rec.Release()
	data := writeParquet(t, rec, 50, true)
	a := open(t, data, Options{}).Fingerprint()
	if b := open(t, append([]byte(nil), data...), Options{}).Fingerprint(); a != b || len(a) != 32 {
		t.Fatalf("the same bytes: %s and %s", a, b)
	}
	// Rewritten with one more row, or another value.
	more := recordFromJSON(t, nestedSchema, nestedRows(101))
	defer more.Release()
	if b := open(t, writeParquet(t, more, 50, true), Options{}).Fingerprint(); a == b {
		t.Fatal("a file with another row has the same fingerprint")
	}
	other := recordFromJSON(t, nestedSchema, strings.Replace(nestedRows(100), `"id":0,`, `"id":-1,`, 1))
	defer other.Release()
	if b := open(t, writeParquet(t, other, 50, true), Options{}).Fingerprint(); a == b {
		t.Fatal("a file with another value has the same fingerprint")
	}
}

func TestEmptyFiles(t *testing.T) {
	// No rows, no columns: what sink "file" writes for a run without
	// records.
	var buf bytes.Buffer
	w, err := pqarrow.NewFileWriter(arrow.NewSchema(nil, nil), &buf, parquet.NewWriterProperties(), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f := open(t, buf.Bytes(), Options{})
	if f.NumRows() != 0 || f.Schema().NumFields() != 0 {
		t.Fatalf("%d rows, schema %s", f.NumRows(), f.Schema())
	}
	if got := readAll(t, f, 0, 0); len(got) != 0 {
		t.Fatalf("read %v", got)
	}
	// Columns, no rows.
	rec := recordFromJSON(t, nestedSchema, `[]`)
	defer rec.Release()
	f = open(t, writeParquet(t, rec, 10, true), Options{})
	if f.NumRows() != 0 || f.Schema().NumFields() != 4 {
		t.Fatalf("%d rows, schema %s", f.NumRows(), f.Schema())
	}
	if got := readAll(t, f, 0, 0); len(got) != 0 {
		t.Fatalf("read %v", got)
	}
}

func TestBatchBytesCapsWideRows(t *testing.T) {
	s := arrow.NewSchema([]arrow.Field{{Name: "text", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	b := array.NewStringBuilder(memory.DefaultAllocator)
	for i := 0; i < 100; i++ {
		b.Append(fmt.Sprintf("%03d%s", i, strings.Repeat("y", 10000)))
	}
	col := b.NewArray()
	b.Release()
	rec := array.NewRecordBatch(s, []arrow.Array{col}, 100)
	col.Release()
	defer rec.Release()
	data := writeParquet(t, rec, 100, false, parquet.WithDictionaryDefault(false))
	f := open(t, data, Options{BatchRows: 1000, BatchBytes: 50000})
	got := readAll(t, f, 0, 5)
	if len(got) != 100 {
		t.Fatalf("read %d rows", len(got))
	}
}

func TestReadStopsWhenCancelled(t *testing.T) {
	rec := recordFromJSON(t, nestedSchema, nestedRows(100))
	defer rec.Release()
	f := open(t, writeParquet(t, rec, 50, true), Options{BatchRows: 10})
	ctx, cancel := context.WithCancel(context.Background())
	r, err := f.Read(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	b.Record.Release()
	cancel()
	if _, err := r.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestConcurrentReadersOfOneFile(t *testing.T) {
	rec := recordFromJSON(t, nestedSchema, nestedRows(300))
	defer rec.Release()
	f := open(t, writeParquet(t, rec, 64, true), Options{BatchRows: 20})
	want := readAll(t, f, 0, 20)
	var wg sync.WaitGroup
	for _, from := range []int64{0, 7, 64, 150, 299} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := readRows(f, from)
			if err != nil || strings.Join(got, "\n") != strings.Join(want[from:], "\n") {
				t.Errorf("from %d: %d rows, %v", from, len(got), err)
			}
		}()
	}
	wg.Wait()
}

// readRows is readAll without the checks, for goroutines.
func readRows(f *File, from int64) ([]string, error) {
	r, err := f.Read(context.Background(), from)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []string
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		enc := arrowjson.NewEncoder()
		for i := 0; i < int(b.Record.NumRows()); i++ {
			out = append(out, string(enc.AppendRow(nil, b.Record, i)))
		}
		b.Record.Release()
	}
}
