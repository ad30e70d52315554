package arrowcsv

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// typeString renders a field's type compactly (see arrowjson's tests).
func typeString(f arrow.Field) string {
	if arrowjson.IsRaw(f) {
		return "raw"
	}
	if st, ok := f.Type.(*arrow.StructType); ok {
		parts := make([]string, st.NumFields())
		for i, c := range st.Fields() {
			parts[i] = c.Name + ": " + typeString(c)
		}
		return "struct<" + strings.Join(parts, ", ") + ">"
	}
	return f.Type.String()
}

func schemaString(s *arrow.Schema) string {
	parts := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		parts[i] = f.Name + ": " + typeString(f)
	}
	return strings.Join(parts, "; ")
}

// readAll reads every batch of a CSV text, failing on any error.
func readAll(t testing.TB, text string, opts ReaderOptions) (*Reader, []arrow.RecordBatch) {
	t.Helper()
	r, err := NewReader(strings.NewReader(text), opts)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	var out []arrow.RecordBatch
	for {
		rec, err := r.Next(1000)
		if err == io.EOF {
			return r, out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, rec)
	}
}

func release(recs []arrow.RecordBatch) {
	for _, r := range recs {
		r.Release()
	}
}

// rowsJSON encodes every row of recs as JSON.
func rowsJSON(recs ...arrow.RecordBatch) []string {
	e := arrowjson.NewEncoder()
	var out []string
	for _, rec := range recs {
		for i := 0; i < int(rec.NumRows()); i++ {
			out = append(out, string(e.AppendRow(nil, rec, i)))
		}
	}
	return out
}

// decodeJSON turns JSON lines into one batch.
func decodeJSON(t testing.TB, lines ...string) arrow.RecordBatch {
	t.Helper()
	d := arrowjson.NewDecoder(arrowjson.Options{})
	defer d.Release()
	for _, l := range lines {
		if err := d.Append([]byte(l)); err != nil {
			t.Fatalf("decode %s: %v", l, err)
		}
	}
	return d.Flush()
}

func writeCSV(t testing.TB, recs ...arrow.RecordBatch) string {
	t.Helper()
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	return b.String()
}

func sameJSON(t testing.TB, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("invalid JSON %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("invalid test JSON %s: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("JSON differs\n got: %s\nwant: %s", got, want)
	}
}

const sampleRecord = `{"event":"classification.completed","timestamp":"2025-11-14T09:22:47Z","dataset_id":"ds_7f3a9b2c","row_id":"row_90312","text":"I want to cancel, I found a better deal with Telia","classifications":{"contact_reason":{"label":"Cancellation","confidence":0.94},"churn_risk":{"label":"High","confidence":0.91},"competitor_mention":{"label":"Telia","confidence":0.98}},"metadata":{"agent_id":"agent_4821","customer_id":"cust_90312","channel":"phone","queue":"retention","product":"fiber_100"}}`

func TestRoundTripNested(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  []string // JSON after JSON -> CSV -> Arrow -> JSON; nil = same as lines
	}{
		{name: "sample record", lines: []string{sampleRecord,
			`{"event":"x","text":"Säg upp, \"nu\"!\nTack 😀","classifications":{"churn_risk":{"label":"Low","confidence":0.1}}}`}},
		{name: "nulls and missing become absent",
			lines: []string{`{"a":{"b":1,"c":"x"},"d":true}`, `{"a":{"b":null},"d":null}`, `{}`},
			want:  []string{`{"a":{"b":1,"c":"x"},"d":true}`, `{}`, `{}`}},
		{name: "lists and raw JSON as JSON text",
			lines: []string{`{"tags":["a","b"],"v":1,"o":{"l":[{"k":1}]}}`, `{"tags":[],"v":"one","o":{"l":[]}}`}},
		{name: "floats stay floats",
			lines: []string{`{"f":1.0,"g":0.5}`, `{"f":2.0,"g":1e21}`},
			want:  []string{`{"f":1,"g":0.5}`, `{"f":2,"g":1e21}`}},
		{name: "deep nesting",
			lines: []string{`{"a":{"b":{"c":{"d":1,"e":"x"}},"f":2}}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := decodeJSON(t, tt.lines...)
			defer in.Release()
			text := writeCSV(t, in)
			_, out := readAll(t, text, ReaderOptions{})
			defer release(out)
			got := rowsJSON(out...)
			want := tt.want
			if want == nil {
				want = tt.lines
			}
			if len(got) != len(want) {
				t.Fatalf("%d rows, want %d\nCSV:\n%s", len(got), len(want), text)
			}
			for i := range want {
				sameJSON(t, got[i], want[i])
			}
			// the nested shape survives: the same schema apart from types
			// CSV cannot carry
			if got, want := Columns(out[0].Schema()), Columns(in.Schema()); !reflect.DeepEqual(got, want) {
				t.Errorf("columns after the round trip = %q, want %q", got, want)
			}
		})
	}
}

func TestRoundTripSchemaShape(t *testing.T) {
	in := decodeJSON(t, sampleRecord)
	defer in.Release()
	_, out := readAll(t, writeCSV(t, in), ReaderOptions{})
	defer release(out)
	if got, want := schemaString(out[0].Schema()), schemaString(in.Schema()); got != want {
		t.Errorf("schema after round trip\n got: %s\nwant: %s", got, want)
	}
}

func TestWriterQuoting(t *testing.T) {
	rec := decodeJSON(t,
		`{"id":1,"text":"plain"}`,
		`{"id":2,"text":"comma, inside"}`,
		`{"id":3,"text":"quote \" inside"}`,
		`{"id":4,"text":"new\nline"}`,
		`{"id":5,"text":"Åsa åt ögonbönor 😀"}`,
		`{"id":6,"text":" leading space"}`,
		`{"id":7}`,
	)
	defer rec.Release()
	text := writeCSV(t, rec)
	want := "id,text\n" +
		"1,plain\n" +
		"2,\"comma, inside\"\n" +
		"3,\"quote \"\" inside\"\n" +
		"4,\"new\nline\"\n" +
		"5,Åsa åt ögonbönor 😀\n" +
		"6,\" leading space\"\n" +
		"7,\n"
	if text != want {
		t.Fatalf("CSV\n got: %q\nwant: %q", text, want)
	}
	r, out := readAll(t, text, ReaderOptions{})
	defer release(out)
	texts := out[0].Column(1).(*array.String)
	for i, w := range []string{"plain", "comma, inside", "quote \" inside", "new\nline", "Åsa åt ögonbönor 😀", " leading space"} {
		if texts.Value(i) != w {
			t.Errorf("row %d = %q, want %q", i, texts.Value(i), w)
		}
	}
	if !texts.IsNull(6) {
		t.Errorf("row 6 should be null")
	}
	if r.Line() != 9 { // header, 6 one-line records, one two-line record
		t.Errorf("Line = %d, want 9", r.Line())
	}
}

func TestReaderTypeInference(t *testing.T) {
	tests := []struct {
		name   string
		values []string // one column, one value per row
		typ    string
	}{
		{"ints", []string{"1", "-2", "", "9223372036854775807"}, "int64"},
		{"floats", []string{"1.5", "2", "-3e2", "0.25"}, "float64"},
		{"nan and inf are floats", []string{"1.5", "NaN", "Inf", "-Inf"}, "float64"},
		{"bools", []string{"true", "FALSE", "True", ""}, "bool"},
		{"text", []string{"a", "1"}, "utf8"},
		{"leading zeros are text", []string{"007", "1"}, "utf8"},
		{"plus sign is text", []string{"+1"}, "utf8"},
		{"too big for int64 is text", []string{"12345678901234567890"}, "utf8"},
		{"bool and number is text", []string{"true", "1"}, "utf8"},
		{"all empty is null", []string{"", ""}, "null"},
		{"json arrays and objects", []string{`[1,2]`, `{"a":1}`, ""}, "raw"},
		{"json values mixed", []string{`1`, `"one"`, `[1]`, "true", "null"}, "raw"},
		{"json and text", []string{`[1,2]`, "x"}, "utf8"},
		{"json and non-json bool", []string{"TRUE", `[1]`}, "utf8"},
		{"json and nan", []string{"NaN", `{}`}, "utf8"},
		{"not quite json", []string{"[citation needed]"}, "utf8"},
		{"spaces are text", []string{" 1"}, "utf8"},
		{"spaced json is text", []string{" [1]"}, "utf8"},
		{"big ints in a json column", []string{"[1]", "12345678901234567890"}, "raw"},
		{"hex is text", []string{"0x10"}, "utf8"},
		{"dates are text", []string{"2025-11-14"}, "utf8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			b.WriteString("v\n")
			for _, v := range tt.values {
				b.WriteString(csvField(v) + "\n")
			}
			_, out := readAll(t, b.String(), ReaderOptions{})
			defer release(out)
			if got := typeString(out[0].Schema().Field(0)); got != tt.typ {
				t.Errorf("type = %s, want %s", got, tt.typ)
			}
			if out[0].NumRows() != int64(len(tt.values)) {
				t.Errorf("rows = %d, want %d", out[0].NumRows(), len(tt.values))
			}
			col := out[0].Column(0)
			for i, v := range tt.values {
				isNull := col.IsNull(i) || col.DataType().ID() == arrow.NULL
				if (v == "") != isNull {
					t.Errorf("row %d: null = %v, want %v", i, isNull, v == "")
				}
			}
		})
	}
}

// csvField quotes v as a one-field CSV record would.
func csvField(v string) string {
	if v == "" {
		return `""`
	}
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{v})
	w.Flush()
	return strings.TrimSuffix(b.String(), "\n")
}

func TestReaderValues(t *testing.T) {
	text := "i,f,b,s\n1,0.5,true,x\n,NaN,,\n-3,2,false,\"y, z\"\n"
	_, out := readAll(t, text, ReaderOptions{})
	defer release(out)
	got := rowsJSON(out...)
	want := []string{`{"i":1,"f":0.5,"b":true,"s":"x"}`, `{}`, `{"i":-3,"f":2,"b":false,"s":"y, z"}`}
	// NaN has no JSON form: the encoder writes null for it
	want[1] = `{"f":null}`
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows = %q\nwant %q", got, want)
	}
}

func TestReaderWidensAcrossBatches(t *testing.T) {
	text := "a,b,c,d\n1,1,x,\n2,true,y,\n2.5,3,z,1\nq,4,w,2\n"
	r, err := NewReader(strings.NewReader(text), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantSchemas := []string{
		"a: int64; b: utf8; c: utf8; d: null",
		"a: float64; b: utf8; c: utf8; d: int64",
		"a: utf8; b: utf8; c: utf8; d: int64",
	}
	wantRows := [][]string{
		{`{"a":1,"b":"1","c":"x"}`, `{"a":2,"b":"true","c":"y"}`},
		{`{"a":2.5,"b":"3","c":"z","d":1}`},
		{`{"a":"q","b":"4","c":"w","d":2}`},
	}
	sizes := []int{2, 1, 5}
	for i, n := range sizes {
		rec, err := r.Next(n)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if got := schemaString(rec.Schema()); got != wantSchemas[i] {
			t.Errorf("batch %d schema = %s, want %s", i, got, wantSchemas[i])
		}
		if got := rowsJSON(rec); !reflect.DeepEqual(got, wantRows[i]) {
			t.Errorf("batch %d rows = %q, want %q", i, got, wantRows[i])
		}
		rec.Release()
	}
	if rec, err := r.Next(5); rec != nil || err != io.EOF {
		t.Fatalf("after the end: %v, %v; want nil, io.EOF", rec, err)
	}
	if rec, err := r.Next(5); rec != nil || err != io.EOF {
		t.Fatalf("again after the end: %v, %v; want nil, io.EOF", rec, err)
	}
}

func TestReaderSchemaPointerStable(t *testing.T) {
	r, err := NewReader(strings.NewReader("a\n1\n2\n3\n"), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := r.Next(1)
	defer b1.Release()
	b2, _ := r.Next(1)
	defer b2.Release()
	if b1.Schema() != b2.Schema() {
		t.Errorf("unchanged schema should be the same *arrow.Schema")
	}
}

func TestReaderNesting(t *testing.T) {
	tests := []struct {
		name   string
		header string
		schema string
	}{
		{"flat", "a,b", "a: null; b: null"},
		{"nested", "a.b,a.c,d", "a: struct<b: null, c: null>; d: null"},
		{"deep", "x.y.z,x.y.w,x.v", "x: struct<y: struct<z: null, w: null>, v: null>"},
		{"single nested", "a.b", "a: struct<b: null>"},
		{"interleaved", "a.b,c,a.d", "a: struct<b: null, d: null>; c: null"},
		{"conflict keeps flat names", "a,a.b,c.d", "a: null; a.b: null; c: struct<d: null>"},
		{"conflict deeper", "a.b,a.b.c", "a.b: null; a.b.c: null"},
		{"duplicate names stay", "a,a", "a: null; a: null"},
		{"duplicate nested stay flat", "a.b,a.b", "a.b: null; a.b: null"},
		{"empty segment", "a..b,a.c", "a..b: null; a.c: null"},
		{"trailing dot", "a.", "a.: null"},
		{"empty name", ",x", ": null; x: null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			row := strings.Repeat(",", strings.Count(tt.header, ","))
			if row == "" {
				row = `""`
			}
			_, out := readAll(t, tt.header+"\n"+row+"\n", ReaderOptions{})
			defer release(out)
			if got := schemaString(out[0].Schema()); got != tt.schema {
				t.Errorf("schema\n got: %s\nwant: %s", got, tt.schema)
			}
		})
	}
}

func TestReaderStructNullWhenAllFieldsEmpty(t *testing.T) {
	_, out := readAll(t, "a.b,a.c\n1,\n,\n,x\n", ReaderOptions{})
	defer release(out)
	s := out[0].Column(0).(*array.Struct)
	for i, want := range []bool{true, false, true} {
		if s.IsValid(i) != want {
			t.Errorf("row %d valid = %v, want %v", i, s.IsValid(i), want)
		}
	}
}

func TestReaderBadRecords(t *testing.T) {
	text := "a,b,c\n" + // line 1
		"1,2,3\n" + // 2
		"4,5\n" + // 3: too few
		"6,7,8\n" + // 4
		"9,\"x\"y,10\n" + // 5: bad quote
		"11,\"multi\nline\",12\n" + // 6-7
		"13,14,15,16\n" + // 8: too many
		"17,18,19\n" // 9
	r, err := NewReader(strings.NewReader(text), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		err   string // "" for a batch
		line  int    // Line() after the step
		rows  int
		recLn int // RecordError.Line
	}
	steps := []step{
		{err: "line 3: expected 3 fields, got 2", line: 3, recLn: 3},
		{err: `line 5: extraneous or missing " in quoted-field (column 5)`, line: 5, recLn: 5},
		{err: "line 8: expected 3 fields, got 4", line: 8, recLn: 8},
		{rows: 4, line: 9},
	}
	for i, s := range steps {
		rec, err := r.Next(100)
		if s.err != "" {
			var re *RecordError
			if !errors.As(err, &re) || err.Error() != s.err || re.Line != s.recLn {
				t.Fatalf("step %d: err = %v, want RecordError %q", i, err, s.err)
			}
			if rec != nil {
				t.Fatalf("step %d: batch with an error", i)
			}
		} else {
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			got := rowsJSON(rec)
			want := []string{`{"a":1,"b":"2","c":3}`, `{"a":6,"b":"7","c":8}`, `{"a":11,"b":"multi\nline","c":12}`, `{"a":17,"b":"18","c":19}`}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rows = %q\nwant %q", got, want)
			}
			rec.Release()
		}
		if r.Line() != s.line {
			t.Errorf("step %d: Line = %d, want %d", i, r.Line(), s.line)
		}
	}
	if _, err := r.Next(100); err != io.EOF {
		t.Fatalf("err = %v, want io.EOF", err)
	}
	var fe *RecordError
	_, err = func() (arrow.RecordBatch, error) {
		r, _ := NewReader(strings.NewReader("a,b\n1\n"), ReaderOptions{})
		return r.Next(10)
	}()
	if !errors.As(err, &fe) || !errors.Is(err, csv.ErrFieldCount) {
		t.Errorf("field count error %v should wrap csv.ErrFieldCount", err)
	}
}

func TestReaderOffsets(t *testing.T) {
	text := "a,b\n1,x\n2,\"y\nz\"\n3,w"
	r, err := NewReader(strings.NewReader(text), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Offset() != 4 || r.Line() != 1 {
		t.Fatalf("after header: offset %d line %d", r.Offset(), r.Line())
	}
	wants := []struct {
		offset int64
		line   int
	}{{8, 2}, {16, 3}, {int64(len(text)), 5}}
	for i, w := range wants {
		rec, err := r.Next(1)
		if err != nil {
			t.Fatal(err)
		}
		rec.Release()
		if r.Offset() != w.offset || r.Line() != w.line {
			t.Errorf("record %d: offset %d line %d, want %d %d", i, r.Offset(), r.Line(), w.offset, w.line)
		}
	}
	// resuming from an offset: the rest of the file after it, with the header
	rest := text[:4] + text[8:]
	_, out := readAll(t, rest, ReaderOptions{})
	defer release(out)
	if n := out[0].NumRows(); n != 2 {
		t.Errorf("resumed rows = %d, want 2", n)
	}
}

func TestReaderOptionsAndHeader(t *testing.T) {
	tests := []struct {
		name  string
		text  string
		opts  ReaderOptions
		want  []string
		error string
	}{
		{name: "semicolon", text: "a;b\n1;2\n", opts: ReaderOptions{Comma: ';'}, want: []string{`{"a":1,"b":2}`}},
		{name: "tab", text: "a\tb\n1\tx y\n", opts: ReaderOptions{Comma: '\t'}, want: []string{`{"a":1,"b":"x y"}`}},
		{name: "bom", text: "\xef\xbb\xbfa,b\n1,2\n", want: []string{`{"a":1,"b":2}`}},
		{name: "crlf", text: "a,b\r\n1,2\r\n", want: []string{`{"a":1,"b":2}`}},
		{name: "blank lines skipped", text: "a\n\n1\n\n2\n", want: []string{`{"a":1}`, `{"a":2}`}},
		{name: "header only", text: "a,b\n", want: nil},
		{name: "empty input", text: "", error: "line 1: empty input"},
		{name: "bad header", text: "a,\"b\n", error: "line 1: invalid header"},
		{name: "reserved header", text: "a,_pipeline_id\n", error: `line 1: column "_pipeline_id" uses the prefix`},
		{name: "invalid comma", text: "a\n", opts: ReaderOptions{Comma: '"'}, error: "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewReader(strings.NewReader(tt.text), tt.opts)
			if tt.error != "" {
				if err == nil || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("err = %v, want %q", err, tt.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for {
				rec, err := r.Next(10)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, rowsJSON(rec)...)
				rec.Release()
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("rows = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReaderIOError(t *testing.T) {
	boom := errors.New("disk on fire")
	r, err := NewReader(io.MultiReader(strings.NewReader("a\n1\n"), errReader{boom}), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.Next(10)
	if err != nil {
		t.Fatalf("first batch: %v", err)
	}
	rec.Release()
	for i := 0; i < 2; i++ {
		if _, err := r.Next(10); !errors.Is(err, boom) {
			t.Fatalf("err = %v, want %v", err, boom)
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestWriterNewColumn(t *testing.T) {
	b1 := decodeJSON(t, `{"a":1,"b":{"c":"x"}}`)
	defer b1.Release()
	b2 := decodeJSON(t, `{"a":2,"b":{"c":"y","d":true}}`)
	defer b2.Release()
	b3 := decodeJSON(t, `{"b":{"c":"z"}}`)
	defer b3.Release()

	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Write(b1); err != nil {
		t.Fatal(err)
	}
	err := w.Write(b2)
	if err == nil || !strings.Contains(err.Error(), `column "b.d" is not in the CSV header`) {
		t.Fatalf("err = %v, want one naming b.d", err)
	}
	if err := w.Write(b3); err != nil { // missing columns are fine
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "a,b.c\n1,x\n,z\n"; got != want {
		t.Errorf("CSV = %q, want %q", got, want)
	}

	// with the columns declared up front, both batches fit
	buf.Reset()
	w = NewWriterWithColumns(&buf, Columns(b2.Schema()))
	for _, b := range []arrow.RecordBatch{b1, b2, b3} {
		if err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "a,b.c,b.d\n1,x,\n2,y,true\n,z,\n"; got != want {
		t.Errorf("CSV = %q, want %q", got, want)
	}
}

func TestWriterHeaderOnlyAndEmpty(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriterWithColumns(&buf, []string{"a", "b"})
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "a,b\n" {
		t.Errorf("CSV = %q", buf.String())
	}
	buf.Reset()
	w = NewWriter(&buf)
	if err := w.Flush(); err != nil || buf.Len() != 0 {
		t.Errorf("writer with nothing written: %q, %v", buf.String(), err)
	}
}

func TestWriterTypes(t *testing.T) {
	mem := memory.NewGoAllocator()
	st := arrow.StructOf(arrow.Field{Name: "x", Type: arrow.PrimitiveTypes.Float32, Nullable: true})
	schema := arrow.NewSchema([]arrow.Field{
		{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
		{Name: "i8", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
		{Name: "u64", Type: arrow.PrimitiveTypes.Uint64, Nullable: true},
		{Name: "f", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Second, TimeZone: "UTC"}, Nullable: true},
		{Name: "d", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
		{Name: "bin", Type: arrow.BinaryTypes.Binary, Nullable: true},
		{Name: "l", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64), Nullable: true},
		{Name: "m", Type: arrow.MapOf(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64), Nullable: true},
		{Name: "s", Type: st, Nullable: true},
		{Name: "dict", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append("id")
	b.Field(1).(*array.Int8Builder).Append(-8)
	b.Field(2).(*array.Uint64Builder).Append(18446744073709551615)
	b.Field(3).(*array.Float64Builder).Append(3)
	b.Field(4).(*array.TimestampBuilder).Append(1763112167)
	b.Field(5).(*array.Date32Builder).Append(20406)
	b.Field(6).(*array.BinaryBuilder).Append([]byte("hi"))
	lb := b.Field(7).(*array.ListBuilder)
	lb.Append(true)
	lb.ValueBuilder().(*array.Int64Builder).AppendValues([]int64{1, 2}, nil)
	mb := b.Field(8).(*array.MapBuilder)
	mb.Append(true)
	mb.KeyBuilder().(*array.StringBuilder).Append("k")
	mb.ItemBuilder().(*array.Int64Builder).Append(1)
	sb := b.Field(9).(*array.StructBuilder)
	sb.Append(true)
	sb.FieldBuilder(0).(*array.Float32Builder).Append(0.1)
	_ = b.Field(10).(*array.BinaryDictionaryBuilder).AppendString("high")
	rec := b.NewRecordBatch()
	defer rec.Release()
	got := writeCSV(t, rec)
	want := "i8,u64,f,ts,d,bin,l,m,s.x,dict\n" +
		"-8,18446744073709551615,3.0,2025-11-14T09:22:47Z,2025-11-14,aGk=,\"[1,2]\",\"{\"\"k\"\":1}\",0.1,high\n"
	if got != want {
		t.Errorf("CSV\n got: %q\nwant: %q", got, want)
	}
}

func TestFormatFloat(t *testing.T) {
	tests := []struct {
		f    float64
		want string
	}{
		{0, "0.0"}, {1, "1.0"}, {-2, "-2.0"}, {0.94, "0.94"}, {1e20, "100000000000000000000.0"},
		{1e21, "1e+21"}, {1e-7, "1e-07"}, {123.456, "123.456"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := formatFloat(tt.f, 64); got != tt.want {
				t.Errorf("formatFloat(%v) = %s, want %s", tt.f, got, tt.want)
			}
			if !isFloat(tt.want) {
				t.Errorf("%s would not read back as a float", tt.want)
			}
		})
	}
}

func TestReaderAllocator(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	_, out := readAll(t, "a.b,a.c,d,e\n1,x,true,2.5\n,,,\n", ReaderOptions{Allocator: mem})
	if mem.CurrentAlloc() == 0 {
		t.Fatal("batch not allocated with the given allocator")
	}
	release(out)
	mem.AssertSize(t, 0)
}

// FuzzReader feeds arbitrary bytes as a CSV file: the reader must never
// panic, must make progress, and every batch must encode as JSON and
// write back as CSV.
func FuzzReader(f *testing.F) {
	f.Add([]byte("a,b.c,b.d\n1,x,true\n2,\"y,\"\"z\",false\n"), byte(','))
	f.Add([]byte("a;b\n1;2\n3\n\"x\ny\";4\n"), byte(';'))
	f.Add([]byte("\xef\xbb\xbfa,a,a.b\n[1],{},1e5\n,,\n"), byte(','))
	f.Add([]byte("x\n\"unterminated\n"), byte(','))
	f.Fuzz(func(t *testing.T, data []byte, comma byte) {
		r, err := NewReader(bytes.NewReader(data), ReaderOptions{Comma: rune(comma)})
		if err != nil {
			return
		}
		var buf bytes.Buffer
		w := NewWriter(&buf)
		for i := 0; i < len(data)+2; i++ {
			rec, err := r.Next(3)
			if err == io.EOF {
				checkRewrite(t, data, rune(comma))
				return
			}
			var re *RecordError
			if errors.As(err, &re) {
				if re.Line < 2 {
					t.Fatalf("record error on line %d", re.Line)
				}
				continue
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, row := range rowsJSON(rec) {
				if !json.Valid([]byte(row)) {
					t.Fatalf("invalid JSON row %s", row)
				}
			}
			_ = w.Write(rec) // may fail on a new column; must not panic
			rec.Release()
		}
		t.Fatalf("no io.EOF after %d calls", len(data)+2)
	})
}

// checkRewrite checks that CSV written by the Writer reads back and writes
// again unchanged. All rows are read as one batch, so that every value of a
// column had a say in its type.
func checkRewrite(t *testing.T, data []byte, comma rune) {
	read := func(r io.Reader, comma rune) arrow.RecordBatch {
		rd, err := NewReader(r, ReaderOptions{Comma: comma})
		if err != nil {
			t.Fatalf("NewReader: %v", err)
		}
		for {
			rec, err := rd.Next(1 << 30)
			var re *RecordError
			switch {
			case errors.As(err, &re):
				continue
			case err == io.EOF:
				return nil
			case err != nil:
				t.Fatalf("Next: %v", err)
			}
			return rec
		}
	}
	rec := read(bytes.NewReader(data), comma)
	if rec == nil {
		return
	}
	first := writeCSV(t, rec)
	rec.Release()
	again := read(strings.NewReader(first), ',')
	if again == nil {
		t.Fatalf("the written CSV has no rows:\n%q", first)
	}
	defer again.Release()
	if second := writeCSV(t, again); second != first {
		t.Fatalf("rewrite differs\nfirst:  %q\nsecond: %q", first, second)
	}
}

func BenchmarkReader(b *testing.B) {
	in := decodeJSON(b, sampleRecord)
	text := writeCSV(b, in)
	in.Release()
	header, row, _ := strings.Cut(text, "\n")
	const rows = 10000
	data := header + "\n" + strings.Repeat(row, rows)
	b.SetBytes(int64(len(data)) / rows)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for n < b.N {
		r, err := NewReader(strings.NewReader(data), ReaderOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for n < b.N {
			rec, err := r.Next(1024)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n += int(rec.NumRows())
			rec.Release()
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkWriter(b *testing.B) {
	lines := make([]string, 1024)
	for i := range lines {
		lines[i] = sampleRecord
	}
	rec := decodeJSON(b, lines...)
	defer rec.Release()
	w := NewWriter(io.Discard)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 1024 {
		if err := w.Write(rec); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func TestReaderJSONColumnWidensToText(t *testing.T) {
	r, err := NewReader(strings.NewReader("v\n[1]\n\"\"\"s\"\"\"\nTRUE\n"), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b1, err := r.Next(2)
	if err != nil {
		t.Fatal(err)
	}
	defer b1.Release()
	b2, err := r.Next(2)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Release()
	if got := schemaString(b1.Schema()) + " / " + schemaString(b2.Schema()); got != "v: raw / v: utf8" {
		t.Errorf("schemas = %s", got)
	}
	if got := rowsJSON(b1, b2); !reflect.DeepEqual(got, []string{`{"v":[1]}`, `{"v":"s"}`, `{"v":"TRUE"}`}) {
		t.Errorf("rows = %q", got)
	}
}

func TestRewriteIsStable(t *testing.T) {
	in := decodeJSON(t, sampleRecord,
		`{"event":"y","text":"rad 1\nrad 2, \"citat\"","classifications":{"churn_risk":{"label":"Låg","confidence":0.05}},"tags":["a"],"n":3.0}`,
		`{"event":"z","metadata":{"queue":null},"tags":[],"n":-1.5}`)
	defer in.Release()
	first := writeCSV(t, in)
	_, out := readAll(t, first, ReaderOptions{})
	defer release(out)
	if second := writeCSV(t, out...); second != first {
		t.Errorf("CSV changed when read and written again\nfirst:\n%s\nsecond:\n%s", first, second)
	}
}

func TestReaderBatchesSurviveIPC(t *testing.T) {
	_, out := readAll(t, "a.b,a.c,n,e,j\n1,x,,true,[1]\n,,,false,{}\n", ReaderOptions{})
	defer release(out)
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(out[0].Schema()))
	if err := w.Write(out[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := ipc.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if !r.Next() {
		t.Fatalf("no batch: %v", r.Err())
	}
	if got, want := rowsJSON(r.RecordBatch()), rowsJSON(out[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("after IPC %q, want %q", got, want)
	}
}

func TestReaderSchemaBeforeFirstBatch(t *testing.T) {
	r, err := NewReader(strings.NewReader("a.b,c\n"), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := schemaString(r.Schema()), "a: struct<b: null>; c: null"; got != want {
		t.Errorf("schema = %s, want %s", got, want)
	}
	if rec, err := r.Next(10); rec != nil || err != io.EOF {
		t.Fatalf("Next = %v, %v", rec, err)
	}
}
