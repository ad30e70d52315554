package arrowjson

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

func TestDecoderSchemaInference(t *testing.T) {
	tests := []struct {
		name   string
		lines  []string
		schema string
	}{
		{"scalars", []string{`{"s":"x","i":1,"f":1.5,"b":true,"n":null}`},
			"s: utf8; i: int64; f: float64; b: bool; n: null; _pipeline_nulls: list<utf8>"},
		{"number forms", []string{`{"a":-0,"b":1e2,"c":1.0,"d":9223372036854775807,"e":9223372036854775808,"f":-9223372036854775808}`},
			"a: int64; b: float64; c: float64; d: int64; e: float64; f: int64"},
		{"nested objects", []string{`{"a":{"b":{"c":1}}}`},
			"a: struct<b: struct<c: int64>>"},
		{"arrays", []string{`{"a":[1,2],"b":[],"c":[{"x":"y"}],"d":[[1.5]]}`},
			"a: list<int64>; b: list<null>; c: list<struct<x: utf8>>; d: list<list<float64>>"},
		{"first-seen order across rows", []string{`{"b":1}`, `{"a":1,"b":2}`, `{"c":1,"a":2}`},
			"b: int64; a: int64; c: int64"},
		{"int widens to float", []string{`{"a":1}`, `{"a":2.5}`},
			"a: float64"},
		{"float then int stays float", []string{`{"a":2.5}`, `{"a":1}`},
			"a: float64"},
		{"null then typed", []string{`{"a":null}`, `{"a":"x"}`},
			"a: utf8; _pipeline_nulls: list<utf8>"},
		{"string vs number is raw", []string{`{"a":1}`, `{"a":"1"}`},
			"a: raw"},
		{"object vs string is raw", []string{`{"a":{"b":1}}`, `{"a":"x"}`},
			"a: raw"},
		{"mixed array is raw", []string{`{"a":[1,"x"]}`},
			"a: raw"},
		{"array vs object is raw", []string{`{"a":[1]}`, `{"a":{"b":1}}`},
			"a: raw"},
		{"conflict in an array element's field", []string{`{"a":[{"b":1},{"b":"x"}]}`},
			"a: list<struct<b: raw>>"},
		{"conflict in nested arrays", []string{`{"a":[[1],[true]]}`},
			"a: raw"},
		{"bool vs number is raw", []string{`{"a":true}`, `{"a":0}`},
			"a: raw"},
		{"keys kept exactly", []string{`{"a.b":1,"å ä ö":2,"😀":3,"":4}`},
			"a.b: int64; å ä ö: int64; 😀: int64; : int64"},
		{"empty object", []string{`{}`},
			""},
		{"empty nested object", []string{`{"a":{}}`},
			"a: struct<>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(Options{})
			defer d.Release()
			mustAppend(t, d, tt.lines...)
			if got := schemaString(d.Schema()); got != tt.schema {
				t.Errorf("schema\n got: %s\nwant: %s", got, tt.schema)
			}
			rec := d.Flush()
			defer rec.Release()
			if got := schemaString(rec.Schema()); got != tt.schema {
				t.Errorf("batch schema\n got: %s\nwant: %s", got, tt.schema)
			}
			if rec.NumRows() != int64(len(tt.lines)) {
				t.Errorf("rows = %d, want %d", rec.NumRows(), len(tt.lines))
			}
		})
	}
}

func TestDecoderValues(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	mustAppend(t, d,
		`{"s":"åäö 😀","i":-42,"big":9007199254740993,"f":0.94,"b":false,"o":{"x":"y"}}`,
		`{"i":7}`,
		`{"s":"tab\tquote\"","f":1e21}`,
	)
	rec := d.Flush()
	defer rec.Release()

	col := func(name string) arrow.Array { return rec.Column(rec.Schema().FieldIndices(name)[0]) }
	s := col("s").(*array.String)
	if s.Value(0) != "åäö 😀" || !s.IsNull(1) || s.Value(2) != "tab\tquote\"" {
		t.Errorf("s = %v", s)
	}
	i := col("i").(*array.Int64)
	if i.Value(0) != -42 || i.Value(1) != 7 || !i.IsNull(2) {
		t.Errorf("i = %v", i)
	}
	if v := col("big").(*array.Int64).Value(0); v != 9007199254740993 {
		t.Errorf("big = %d, want exactly 9007199254740993", v)
	}
	f := col("f").(*array.Float64)
	if f.Value(0) != 0.94 || !f.IsNull(1) || f.Value(2) != 1e21 {
		t.Errorf("f = %v", f)
	}
	if b := col("b").(*array.Boolean); b.Value(0) || !b.IsNull(1) {
		t.Errorf("b = %v", b)
	}
	o := col("o").(*array.Struct)
	if o.IsNull(0) || !o.IsNull(1) || !o.IsNull(2) || o.Field(0).(*array.String).Value(0) != "y" {
		t.Errorf("o = %v", o)
	}
}

func TestDecoderWidenConvertsBufferedValues(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	mustAppend(t, d, `{"a":1}`, `{"b":true}`, `{"a":-3}`, `{"a":2.5}`)
	rec := d.Flush()
	defer rec.Release()
	a := rec.Column(0).(*array.Float64)
	want := []float64{1, 0, -3, 2.5}
	for i, w := range want {
		if i == 1 {
			if !a.IsNull(1) {
				t.Errorf("row 1 should be null")
			}
			continue
		}
		if a.Value(i) != w {
			t.Errorf("row %d = %v, want %v", i, a.Value(i), w)
		}
	}
}

func TestDecoderRawColumn(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	mustAppend(t, d,
		`{"a":{"x":1,"y":null,"z":[1,2]}}`,
		`{}`,
		`{"a":"text"}`,
		`{"a":[1, "two", {"k": "v"}]}`,
	)
	rec := d.Flush()
	defer rec.Release()
	f := rec.Schema().Field(0)
	if v, _ := f.Metadata.GetValue(MetadataKey); v != MetadataRaw || f.Type.ID() != arrow.STRING {
		t.Fatalf("field a = %v, want utf8 with %s=%s", f, MetadataKey, MetadataRaw)
	}
	a := rec.Column(0).(*array.String)
	want := []string{`{"x":1,"y":null,"z":[1,2]}`, "", `"text"`, `[1,"two",{"k":"v"}]`}
	for i, w := range want {
		if w == "" {
			if !a.IsNull(i) {
				t.Errorf("row %d: want null", i)
			}
			continue
		}
		if a.Value(i) != w {
			t.Errorf("row %d = %s, want %s", i, a.Value(i), w)
		}
	}
}

func TestDecoderExplicitNulls(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		nulls [][]string // per row; nil = null entry
	}{
		{"top level and nested",
			[]string{`{"a":null,"b":{"c":null,"d":1}}`, `{"a":1}`},
			[][]string{{"a", "b.c"}, nil}},
		{"absent is not listed",
			[]string{`{"a":1}`, `{"b":{"c":null}}`},
			[][]string{nil, {"b.c"}}},
		{"array elements are not listed, fields in them are",
			[]string{`{"a":[null,{"x":null}],"m":[[{"y":null}]]}`},
			[][]string{{"a[1].x", "m[0][0].y"}}},
		{"keys with dots and brackets are escaped",
			[]string{`{"a.b":null,"c[0]":null,"d\\e":{"f":null}}`},
			[][]string{{`a\.b`, `c\[0]`, `d\\e.f`}}},
		{"null object member of a raw column",
			[]string{`{"a":{"x":null}}`, `{"a":5}`},
			[][]string{{"a.x"}, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(Options{})
			defer d.Release()
			mustAppend(t, d, tt.lines...)
			rec := d.Flush()
			defer rec.Release()
			last := rec.Schema().Field(rec.Schema().NumFields() - 1)
			if last.Name != sdk.NullsColumn {
				t.Fatalf("last column = %s, want %s", last.Name, sdk.NullsColumn)
			}
			if got := nullsOf(t, rec); !reflect.DeepEqual(got, tt.nulls) {
				t.Errorf("nulls = %q, want %q", got, tt.nulls)
			}
		})
	}
}

func TestNullPath(t *testing.T) {
	tests := []struct {
		name  string
		elems []any
		want  string
	}{
		{"plain", []any{"a", "b"}, "a.b"},
		{"index", []any{"a", 2, "d"}, "a[2].d"},
		{"escapes", []any{"a", "b.c", 2, "d"}, `a.b\.c[2].d`},
		{"nested arrays", []any{"m", 0, 1}, "m[0][1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NullPath(tt.elems...); got != tt.want {
				t.Errorf("NullPath = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecoderNullsColumnStaysAndIsLast(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	mustAppend(t, d, `{"a":1}`, `{"a":null}`)
	b1 := d.Flush()
	defer b1.Release()
	mustAppend(t, d, `{"a":2,"b":"new"}`)
	b2 := d.Flush()
	defer b2.Release()
	if got, want := schemaString(b1.Schema()), "a: int64; _pipeline_nulls: list<utf8>"; got != want {
		t.Errorf("batch 1 schema = %s, want %s", got, want)
	}
	if got, want := schemaString(b2.Schema()), "a: int64; b: utf8; _pipeline_nulls: list<utf8>"; got != want {
		t.Errorf("batch 2 schema = %s, want %s", got, want)
	}
	if got := nullsOf(t, b1); !reflect.DeepEqual(got, [][]string{nil, {"a"}}) {
		t.Errorf("batch 1 nulls = %q", got)
	}
	if got := nullsOf(t, b2); !reflect.DeepEqual(got, [][]string{nil}) {
		t.Errorf("batch 2 nulls = %q", got)
	}
}

func TestDecoderDuplicateKeysLastWins(t *testing.T) {
	tests := []struct {
		name  string
		line  string
		want  string
		nulls []string
	}{
		{"scalar", `{"a":1,"a":2}`, `{"a":2}`, nil},
		{"null then value", `{"a":null,"a":2}`, `{"a":2}`, nil},
		{"value then null", `{"a":1,"a":null}`, `{"a":null}`, []string{"a"}},
		{"nested nulls dropped", `{"a":{"x":null},"b":null,"a":{"y":1}}`, `{"a":{"y":1},"b":null}`, []string{"b"}},
		{"out of order key", `{"b":1,"a":2,"b":3}`, `{"a":2,"b":3}`, nil},
		{"different types", `{"a":1,"a":"x"}`, `{"a":"x"}`, nil},
		{"in arrays", `{"l":[{"k":1,"k":null},{"k":2,"k":3}]}`, `{"l":[{"k":null},{"k":3}]}`, []string{"l[0].k"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(Options{})
			defer d.Release()
			mustAppend(t, d, tt.line)
			rec := d.Flush()
			defer rec.Release()
			assertSameJSON(t, encodeRows(NewEncoder(), rec)[0], tt.want)
			var nulls []string
			if n := nullsOf(t, rec); n != nil {
				nulls = n[0]
			}
			if !reflect.DeepEqual(nulls, tt.nulls) {
				t.Errorf("nulls = %q, want %q", nulls, tt.nulls)
			}
		})
	}
}

func TestDecoderBadLines(t *testing.T) {
	tests := []struct {
		name string
		line string
		err  string // substring; "" means ErrEmptyLine
	}{
		{"empty", ``, ""},
		{"blank", " \t \r\n", ""},
		{"newline", "\n", ""},
		{"array", `[1,2]`, "expected a JSON object, got array"},
		{"string", `"x"`, "expected a JSON object, got string"},
		{"number", `12`, "expected a JSON object, got number"},
		{"bool", `true`, "expected a JSON object, got boolean"},
		{"null", `null`, "expected a JSON object, got null"},
		{"truncated", `{"event":"x","new":"ab`, "invalid JSON at offset 19: unterminated string"},
		{"truncated object", `{"new":1,`, "invalid JSON at offset 9: unexpected end of input"},
		{"missing colon", `{"a" 1}`, "invalid JSON at offset 5: invalid character '1' after object key"},
		{"trailing comma", `{"a":1,}`, "invalid JSON at offset 7: invalid character '}' looking for beginning of object key"},
		{"trailing garbage", `{"a":1} x`, "invalid JSON at offset 8: invalid character 'x' after top-level value"},
		{"two objects", `{"a":1}{"a":2}`, "invalid JSON at offset 7"},
		{"leading zero", `{"new":01}`, "invalid JSON at offset 8: invalid character '1' after object value"},
		{"plus sign", `{"a":+1}`, "invalid JSON at offset 5"},
		{"NaN", `{"a":NaN}`, "invalid JSON at offset 5"},
		{"Infinity", `{"a":-Infinity}`, "invalid JSON at offset 6: invalid number"},
		{"bare dot", `{"a":1.}`, "invalid JSON at offset 7: invalid number"},
		{"exponent", `{"a":1e}`, "invalid JSON at offset 7: invalid number"},
		{"out of range", `{"new":1e400}`, "number 1e400 is out of the float64 range"},
		{"bad escape", `{"a":"\x"}`, `invalid JSON at offset 6: invalid escape 'x' in string`},
		{"bad unicode escape", `{"a":"\u12G4"}`, `invalid JSON at offset 6: invalid \u escape`},
		{"control character", "{\"a\":\"x\ty\"}", "invalid JSON at offset 7: invalid control character"},
		{"single quotes", `{'a':1}`, "invalid JSON at offset 1"},
		{"unquoted key", `{a:1}`, "invalid JSON at offset 1"},
		{"bad literal", `{"a":tru}`, "invalid JSON at offset 5: invalid literal"},
		{"reserved key", `{"fresh":1,"_pipeline_id":"x"}`, `key "_pipeline_id" uses the prefix "_pipeline_"`},
		{"escaped reserved key", `{"\u005fpipeline_nulls":[]}`, `key "_pipeline_nulls" uses the prefix`},
		{"too deep", `{"a":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`, "nested deeper than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(Options{})
			defer d.Release()
			mustAppend(t, d, `{"event":"ok","n":1}`)
			before := d.Schema()
			err := d.Append([]byte(tt.line))
			switch {
			case tt.err == "":
				if !errors.Is(err, ErrEmptyLine) {
					t.Fatalf("err = %v, want ErrEmptyLine", err)
				}
			case err == nil:
				t.Fatalf("no error, want %q", tt.err)
			case !strings.Contains(err.Error(), tt.err):
				t.Fatalf("err = %q, want it to contain %q", err, tt.err)
			}
			if d.Len() != 1 {
				t.Errorf("Len = %d after a bad line, want 1", d.Len())
			}
			if d.Schema() != before {
				t.Errorf("schema changed after a bad line: %s", schemaString(d.Schema()))
			}
			// still usable
			mustAppend(t, d, `{"event":"next","n":2}`)
			rec := d.Flush()
			defer rec.Release()
			got := encodeRows(NewEncoder(), rec)
			want := []string{`{"event":"ok","n":1}`, `{"event":"next","n":2}`}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rows = %q, want %q", got, want)
			}
		})
	}
}

func TestDecoderSyntaxErrorType(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	err := d.Append([]byte(`{"a":1,,}`))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != 7 {
		t.Fatalf("err = %#v, want *SyntaxError at offset 7", err)
	}
}

func TestDecoderLineEndingsAndBOM(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"lf", "{\"a\":1}\n"},
		{"crlf", "{\"a\":1}\r\n"},
		{"bom", "\xef\xbb\xbf{\"a\":1}"},
		{"spaces", "  { \"a\" : 1 }  "},
		{"pretty", "{\n\t\"a\": 1\n}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := roundTrip(t, tt.line)
			if got[0] != `{"a":1}` {
				t.Errorf("got %s", got[0])
			}
		})
	}
}

func TestDecoderStringDecoding(t *testing.T) {
	tests := []struct {
		name string
		in   string // JSON string literal
		want string
	}{
		{"plain", `"abc"`, "abc"},
		{"utf8", `"åäö ÅÄÖ 😀"`, "åäö ÅÄÖ 😀"},
		{"escapes", `"\"\\\/\b\f\n\r\t"`, "\"\\/\b\f\n\r\t"},
		{"unicode escape", `"\u00e5\u4e2d"`, "å中"},
		{"surrogate pair", `"\ud83d\ude00"`, "😀"},
		{"lone high surrogate", `"a\ud83db"`, "a\uFFFDb"},
		{"lone low surrogate", `"\ude00"`, "\uFFFD"},
		{"high surrogate then non-low", `"\ud83d\u0041"`, "\uFFFDA"},
		{"invalid utf8", "\"a\xffb\"", "a\uFFFDb"},
		{"truncated utf8", "\"a\xe2\x82\"", "a\uFFFD\uFFFD"},
		{"long plain", `"` + strings.Repeat("abcdefgh", 10) + `"`, strings.Repeat("abcdefgh", 10)},
		{"nul escape", `"\u0000"`, "\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(Options{})
			defer d.Release()
			mustAppend(t, d, `{"s":`+tt.in+`,`+tt.in+`:1}`)
			rec := d.Flush()
			defer rec.Release()
			if got := rec.Column(0).(*array.String).Value(0); got != tt.want {
				t.Errorf("value = %q, want %q", got, tt.want)
			}
			if got := rec.Schema().Field(1).Name; got != tt.want {
				t.Errorf("key = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDecoderFlush(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	if rec := d.Flush(); rec != nil {
		t.Fatalf("Flush on empty decoder = %v, want nil", rec)
	}
	mustAppend(t, d, `{"a":1}`, `{"a":2}`)
	if d.Len() != 2 {
		t.Fatalf("Len = %d", d.Len())
	}
	b1 := d.Flush()
	defer b1.Release()
	if d.Len() != 0 {
		t.Fatalf("Len after Flush = %d", d.Len())
	}
	if rec := d.Flush(); rec != nil {
		t.Fatalf("second Flush = %v, want nil", rec)
	}
	mustAppend(t, d, `{"b":"x"}`)
	b2 := d.Flush()
	defer b2.Release()
	if got, want := schemaString(b2.Schema()), "a: int64; b: utf8"; got != want {
		t.Errorf("batch 2 schema = %s, want %s", got, want)
	}
	if !b2.Column(0).IsNull(0) {
		t.Errorf("a should be null in batch 2")
	}
	if b1.Column(0).(*array.Int64).Value(1) != 2 {
		t.Errorf("batch 1 changed after the second flush")
	}
	if b1.Schema() == b2.Schema() {
		t.Errorf("schema pointer should change when a field is added")
	}
	mustAppend(t, d, `{"a":3}`)
	b3 := d.Flush()
	defer b3.Release()
	if b3.Schema() != b2.Schema() {
		t.Errorf("schema pointer should be reused while the schema is unchanged")
	}
}

func TestDecoderTypeChangesAcrossBatches(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	mustAppend(t, d, `{"a":1,"b":{"c":1}}`)
	b1 := d.Flush()
	defer b1.Release()
	mustAppend(t, d, `{"a":1.5,"b":"flat"}`, `{"a":2,"b":{"c":2}}`)
	b2 := d.Flush()
	defer b2.Release()
	if got, want := schemaString(b2.Schema()), "a: float64; b: raw"; got != want {
		t.Fatalf("schema = %s, want %s", got, want)
	}
	got := encodeRows(NewEncoder(), b2)
	want := []string{`{"a":1.5,"b":"flat"}`, `{"a":2,"b":{"c":2}}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows = %q, want %q", got, want)
	}
}

func TestDecoderAllocator(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	d := NewDecoder(Options{Allocator: mem})
	mustAppend(t, d, sampleRecord, `{"x":[{"a":null},[1]],"text":null,"b":true}`, `{"n":1.5}`)
	rec := d.Flush()
	if mem.CurrentAlloc() == 0 {
		t.Fatalf("the batch was not allocated with Options.Allocator")
	}
	if rec.NumRows() != 3 {
		t.Fatalf("rows = %d", rec.NumRows())
	}
	rec.Release()
	d.Release()
	mem.AssertSize(t, 0)
}

func TestDecoderLargeValues(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"max int64", `{"a":9223372036854775807}`},
		{"min int64", `{"a":-9223372036854775808}`},
		{"tiny float", `{"a":5e-324}`},
		{"max float", `{"a":1.7976931348623157e308}`},
		{"many digits", `{"a":3.14159265358979323846264338327950288}`},
		{"long fraction zeros", `{"a":0.0000000000000000000000000001}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := roundTrip(t, tt.line)
			assertSameJSON(t, got[0], tt.line)
		})
	}
}

func TestParseFloatFastPath(t *testing.T) {
	// the scanner's exact fast path must agree with strconv on every input
	inputs := []string{"0.94", "0.1", "0.3", "123.456", "1e22", "1e-22", "9007199254740.993",
		"0.000001", "-2.5e-3", "4.35", "1.7976931348623157", "123456789012345e-7", "0.1e1", "7e-10"}
	for _, in := range inputs {
		t.Run(in, func(t *testing.T) {
			var s scanner
			if err := s.scan([]byte(in)); err != nil {
				t.Fatal(err)
			}
			got := math.Float64frombits(s.toks[0].num)
			if s.toks[0].kind != tFloat {
				t.Fatalf("kind = %d", s.toks[0].kind)
			}
			want, _ := strconv.ParseFloat(in, 64)
			if got != want {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

// Batches cross process boundaries as Arrow IPC: every shape the decoder
// makes must survive it.
func TestDecoderBatchesSurviveIPC(t *testing.T) {
	lines := []string{
		sampleRecord,
		`{"empty":{},"nulls":[null],"none":[],"n":null,"raw":[1,"x"],"deep":{"l":[{"a":null}]}}`,
		`{"empty":{},"text":"åäö","raw":{"k":1}}`,
	}
	d := NewDecoder(Options{})
	defer d.Release()
	mustAppend(t, d, lines...)
	rec := d.Flush()
	defer rec.Release()

	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		t.Fatalf("ipc write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := ipc.NewReader(&buf)
	if err != nil {
		t.Fatalf("ipc read: %v", err)
	}
	defer r.Release()
	if !r.Next() {
		t.Fatalf("no batch: %v", r.Err())
	}
	got := r.RecordBatch()
	if !got.Schema().Equal(rec.Schema()) {
		t.Errorf("schema changed\n got: %s\nwant: %s", got.Schema(), rec.Schema())
	}
	if !IsRaw(got.Schema().Field(got.Schema().FieldIndices("raw")[0])) {
		t.Errorf("raw metadata lost")
	}
	for i, l := range lines {
		assertSameJSON(t, string(NewEncoder().AppendRow(nil, got, i)), l)
	}
}
