package arrowjson

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

func TestRoundTripFixtures(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
	}{
		{"sample record", []string{sampleRecord}},
		{"swedish and emoji", []string{
			`{"text":"Jag vill säga upp mitt abonnemang, Telia är billigare 😡","kund":"Åsa Öberg","emoji":"👍🏽🇸🇪"}`,
			`{"text":"ÅÄÖ åäö é ü ß 中文 العربية","kund":null}`}},
		{"nested objects", []string{`{"a":{"b":{"c":{"d":"deep","e":[1,2,3]}},"f":1.5}}`}},
		{"arrays of objects", []string{
			`{"items":[{"sku":"a","qty":1},{"sku":"b","qty":2,"note":"gift"},{"qty":3}]}`,
			`{"items":[]}`,
			`{"items":[{"sku":"c","tags":["x","y"]}]}`}},
		{"missing keys in some rows", []string{
			`{"a":1,"b":"x","c":true}`, `{"b":"y"}`, `{"c":false,"d":[1]}`, `{}`}},
		{"explicit nulls", []string{
			`{"a":null,"b":{"c":null,"d":1},"e":[null,1,null]}`,
			`{"a":1,"b":{"d":null}}`,
			`{"x":[{"y":null},{"y":2}]}`}},
		{"empty objects and arrays", []string{
			`{"o":{},"a":[],"n":{"o":{},"a":[[]]}}`,
			`{"o":{"k":1},"a":[{}]}`}},
		{"numbers", []string{
			`{"i":0,"neg":-17,"max":9223372036854775807,"min":-9223372036854775808,"f":0.94,"e":1e21,"small":1e-7,"z":-0.0}`,
			`{"i":3,"f":100,"e":123456789.125,"small":0.000001}`}},
		{"widened numbers", []string{`{"a":1}`, `{"a":0.5}`, `{"a":12345678901}`}},
		{"raw columns", []string{
			`{"v":1,"w":[1,2]}`, `{"v":"one","w":[1,"two",null,{"k":[true]}]}`, `{"v":{"x":null}}`, `{"v":null}`}},
		{"escapes", []string{
			`{"s":"quote \" backslash \\ slash / newline \n tab \t cr \r bell \u0007 nul \u0000 del \u007f","\"k\"":"\u2028\u2029"}`}},
		{"keys with dots", []string{`{"a.b":1,"a":{"b":2},"c.d":null,"c":{"d":3}}`}},
		{"booleans", []string{`{"t":true,"f":false}`, `{"t":false}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := roundTrip(t, tt.lines...)
			for i, l := range tt.lines {
				assertSameJSON(t, got[i], l)
			}
		})
	}
}

func TestRoundTripFieldOnlyInSecondBatch(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	e := NewEncoder()
	lines1 := []string{`{"id":1,"text":"hej"}`, `{"id":2,"text":"då"}`}
	lines2 := []string{`{"id":3,"extra":{"x":[1,2]}}`, `{"id":4,"text":"åter","extra":null}`}
	mustAppend(t, d, lines1...)
	b1 := d.Flush()
	defer b1.Release()
	mustAppend(t, d, lines2...)
	b2 := d.Flush()
	defer b2.Release()
	// interleave the batches through one encoder
	for round := 0; round < 2; round++ {
		for i, l := range lines1 {
			assertSameJSON(t, string(e.AppendRow(nil, b1, i)), l)
		}
		for i, l := range lines2 {
			assertSameJSON(t, string(e.AppendRow(nil, b2, i)), l)
		}
	}
	if b2.Schema().NumFields() <= b1.Schema().NumFields() {
		t.Errorf("batch 2 should have more fields: %s", schemaString(b2.Schema()))
	}
}

func TestEncoderExactOutput(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"key order and compaction", `{ "b" : 1 , "a" : [ 1 , 2 ] }`, `{"b":1,"a":[1,2]}`},
		{"unicode kept", `{"s":"\u00e5\u00e4\u00f6 😀"}`, `{"s":"åäö 😀"}`},
		{"html not escaped", `{"s":"<a href=\"x\">&</a>"}`, `{"s":"<a href=\"x\">&</a>"}`},
		{"control characters", `{"s":"\u0001\b\f\n\r\t"}`, `{"s":"\u0001\b\f\n\r\t"}`},
		{"floats", `{"a":0.94,"b":1e21,"c":1e-7,"d":123.5,"e":1e20}`, `{"a":0.94,"b":1e+21,"c":1e-7,"d":123.5,"e":100000000000000000000}`},
		{"big ints", `{"a":9007199254740993}`, `{"a":9007199254740993}`},
		{"explicit null written, absent omitted", `{"a":null,"b":{"c":null}}`, `{"a":null,"b":{"c":null}}`},
		{"raw verbatim", `{"a":[1,"x"]}`, `{"a":[1,"x"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := roundTrip(t, tt.in)[0]; got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestAppendFloat(t *testing.T) {
	tests := []struct {
		name string
		f    float64
		bits int
		want string
	}{
		{"zero", 0, 64, "0"},
		{"negative zero", math.Copysign(0, -1), 64, "-0"},
		{"integral", 1, 64, "1"},
		{"fraction", 0.94, 64, "0.94"},
		{"third", 1.0 / 3, 64, "0.3333333333333333"},
		{"large", 1e21, 64, "1e+21"},
		{"below large", 1e20, 64, "100000000000000000000"},
		{"small", 1e-7, 64, "1e-7"},
		{"small boundary", 1e-6, 64, "0.000001"},
		{"max", math.MaxFloat64, 64, "1.7976931348623157e+308"},
		{"nan", math.NaN(), 64, "null"},
		{"inf", math.Inf(1), 64, "null"},
		{"float32", float64(float32(0.1)), 32, "0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendFloat(nil, tt.f, tt.bits))
			if got != tt.want {
				t.Errorf("appendFloat = %s, want %s", got, tt.want)
			}
			if got != "null" {
				var back float64
				if err := json.Unmarshal([]byte(got), &back); err != nil || (tt.bits == 64 && back != tt.f) {
					t.Errorf("%s parses back as %v (%v), want %v", got, back, err, tt.f)
				}
			}
		})
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"plain", "abc", `"abc"`},
		{"quotes", `a"b\c`, `"a\"b\\c"`},
		{"controls", "\x00\x1f\n", `"\u0000\u001f\n"`},
		{"unicode", "åäö😀", `"åäö😀"`},
		{"invalid utf8", "a\xffb", `"a\ufffdb"`},
		{"html", "<&>", `"<&>"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(AppendString(nil, tt.in)); got != tt.want {
				t.Errorf("AppendString = %s, want %s", got, tt.want)
			}
		})
	}
}

// buildRecord makes a one-row-or-more record from the given columns.
func buildRecord(t *testing.T, fields []arrow.Field, build func(mem memory.Allocator) []arrow.Array) arrow.RecordBatch {
	t.Helper()
	mem := memory.NewGoAllocator()
	cols := build(mem)
	rec := array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, int64(cols[0].Len()))
	for _, c := range cols {
		c.Release()
	}
	return rec
}

func TestEncoderArrowTypes(t *testing.T) {
	ts := time.Date(2025, 11, 14, 9, 22, 47, 500_000_000, time.UTC)
	tests := []struct {
		name  string
		typ   arrow.DataType
		field arrow.Field // used when Name is set
		build func(mem memory.Allocator) arrow.Array
		want  []string // JSON of the value per row; "" = omitted
	}{
		{name: "int8", typ: arrow.PrimitiveTypes.Int8, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewInt8Builder(mem)
			b.AppendValues([]int8{-128, 127}, nil)
			b.AppendNull()
			return b.NewArray()
		}, want: []string{"-128", "127", ""}},
		{name: "int16", typ: arrow.PrimitiveTypes.Int16, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewInt16Builder(mem)
			b.AppendValues([]int16{-32768}, nil)
			return b.NewArray()
		}, want: []string{"-32768"}},
		{name: "int32", typ: arrow.PrimitiveTypes.Int32, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewInt32Builder(mem)
			b.AppendValues([]int32{math.MaxInt32}, nil)
			return b.NewArray()
		}, want: []string{"2147483647"}},
		{name: "uint8", typ: arrow.PrimitiveTypes.Uint8, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewUint8Builder(mem)
			b.AppendValues([]uint8{255}, nil)
			return b.NewArray()
		}, want: []string{"255"}},
		{name: "uint16", typ: arrow.PrimitiveTypes.Uint16, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewUint16Builder(mem)
			b.AppendValues([]uint16{65535}, nil)
			return b.NewArray()
		}, want: []string{"65535"}},
		{name: "uint32", typ: arrow.PrimitiveTypes.Uint32, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewUint32Builder(mem)
			b.AppendValues([]uint32{math.MaxUint32}, nil)
			return b.NewArray()
		}, want: []string{"4294967295"}},
		{name: "uint64", typ: arrow.PrimitiveTypes.Uint64, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewUint64Builder(mem)
			b.AppendValues([]uint64{math.MaxUint64}, nil)
			return b.NewArray()
		}, want: []string{"18446744073709551615"}},
		{name: "float16", typ: arrow.FixedWidthTypes.Float16, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewFloat16Builder(mem)
			b.Append(float16.New(1.5))
			return b.NewArray()
		}, want: []string{"1.5"}},
		{name: "float32", typ: arrow.PrimitiveTypes.Float32, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewFloat32Builder(mem)
			b.AppendValues([]float32{0.1, float32(math.NaN())}, nil)
			return b.NewArray()
		}, want: []string{"0.1", "null"}},
		{name: "bool", typ: arrow.FixedWidthTypes.Boolean, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewBooleanBuilder(mem)
			b.AppendValues([]bool{true, false}, nil)
			return b.NewArray()
		}, want: []string{"true", "false"}},
		{name: "large_utf8", typ: arrow.BinaryTypes.LargeString, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewLargeStringBuilder(mem)
			b.Append("åäö")
			return b.NewArray()
		}, want: []string{`"åäö"`}},
		{name: "string_view", typ: arrow.BinaryTypes.StringView, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewStringViewBuilder(mem)
			b.Append("a longer string that is not inlined")
			return b.NewArray()
		}, want: []string{`"a longer string that is not inlined"`}},
		{name: "binary", typ: arrow.BinaryTypes.Binary, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
			b.Append([]byte{0, 1, 2, 255})
			return b.NewArray()
		}, want: []string{`"AAEC/w=="`}},
		{name: "date32", typ: arrow.FixedWidthTypes.Date32, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewDate32Builder(mem)
			b.Append(arrow.Date32FromTime(ts))
			return b.NewArray()
		}, want: []string{`"2025-11-14"`}},
		{name: "date64", typ: arrow.FixedWidthTypes.Date64, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewDate64Builder(mem)
			b.Append(arrow.Date64FromTime(ts))
			return b.NewArray()
		}, want: []string{`"2025-11-14"`}},
		{name: "timestamp utc", typ: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewTimestampBuilder(mem, &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"})
			b.Append(arrow.Timestamp(ts.UnixMilli()))
			return b.NewArray()
		}, want: []string{`"2025-11-14T09:22:47.5Z"`}},
		{name: "timestamp with zone", typ: &arrow.TimestampType{Unit: arrow.Second, TimeZone: "Europe/Stockholm"}, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewTimestampBuilder(mem, &arrow.TimestampType{Unit: arrow.Second, TimeZone: "Europe/Stockholm"})
			b.Append(arrow.Timestamp(ts.Unix()))
			return b.NewArray()
		}, want: []string{`"2025-11-14T10:22:47+01:00"`}},
		{name: "timestamp naive", typ: &arrow.TimestampType{Unit: arrow.Microsecond}, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewTimestampBuilder(mem, &arrow.TimestampType{Unit: arrow.Microsecond})
			b.Append(arrow.Timestamp(ts.UnixMicro()))
			return b.NewArray()
		}, want: []string{`"2025-11-14T09:22:47.5Z"`}},
		{name: "large_list", typ: arrow.LargeListOf(arrow.PrimitiveTypes.Int32), build: func(mem memory.Allocator) arrow.Array {
			b := array.NewLargeListBuilder(mem, arrow.PrimitiveTypes.Int32)
			vb := b.ValueBuilder().(*array.Int32Builder)
			b.Append(true)
			vb.Append(1)
			vb.AppendNull()
			b.Append(true)
			return b.NewArray()
		}, want: []string{"[1,null]", "[]"}},
		{name: "fixed_size_list", typ: arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Int64), build: func(mem memory.Allocator) arrow.Array {
			b := array.NewFixedSizeListBuilder(mem, 2, arrow.PrimitiveTypes.Int64)
			vb := b.ValueBuilder().(*array.Int64Builder)
			b.Append(true)
			vb.AppendValues([]int64{1, 2}, nil)
			b.Append(true)
			vb.AppendValues([]int64{3, 4}, nil)
			return b.NewArray()
		}, want: []string{"[1,2]", "[3,4]"}},
		{name: "map", typ: arrow.MapOf(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64), build: func(mem memory.Allocator) arrow.Array {
			b := array.NewMapBuilder(mem, arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64, false)
			kb := b.KeyBuilder().(*array.StringBuilder)
			ib := b.ItemBuilder().(*array.Int64Builder)
			b.Append(true)
			kb.Append("a")
			ib.Append(1)
			kb.Append("b")
			ib.AppendNull()
			b.Append(true)
			return b.NewArray()
		}, want: []string{`{"a":1,"b":null}`, `{}`}},
		{name: "map with int keys", typ: arrow.MapOf(arrow.PrimitiveTypes.Int32, arrow.BinaryTypes.String), build: func(mem memory.Allocator) arrow.Array {
			b := array.NewMapBuilder(mem, arrow.PrimitiveTypes.Int32, arrow.BinaryTypes.String, false)
			kb := b.KeyBuilder().(*array.Int32Builder)
			ib := b.ItemBuilder().(*array.StringBuilder)
			b.Append(true)
			kb.Append(7)
			ib.Append("seven")
			return b.NewArray()
		}, want: []string{`{"7":"seven"}`}},
		{name: "dictionary", typ: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewDictionaryBuilder(mem, &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}).(*array.BinaryDictionaryBuilder)
			_ = b.AppendString("high")
			_ = b.AppendString("low")
			_ = b.AppendString("high")
			return b.NewArray()
		}, want: []string{`"high"`, `"low"`, `"high"`}},
		{name: "decimal falls back to string", typ: &arrow.Decimal128Type{Precision: 10, Scale: 2}, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewDecimal128Builder(mem, &arrow.Decimal128Type{Precision: 10, Scale: 2})
			b.Append(decimal128.FromI64(12345))
			return b.NewArray()
		}, want: []string{`"123.45"`}},
		{name: "time32 falls back to string", typ: arrow.FixedWidthTypes.Time32s, build: func(mem memory.Allocator) arrow.Array {
			b := array.NewTime32Builder(mem, &arrow.Time32Type{Unit: arrow.Second})
			b.Append(arrow.Time32(3661))
			return b.NewArray()
		}, want: []string{`"01:01:01"`}},
		{name: "null type", typ: arrow.Null, build: func(mem memory.Allocator) arrow.Array {
			return array.NewNull(2)
		}, want: []string{"", ""}},
		{name: "raw utf8", field: arrow.Field{Name: "v", Type: arrow.BinaryTypes.String, Nullable: true, Metadata: rawMetadata},
			build: func(mem memory.Allocator) arrow.Array {
				b := array.NewStringBuilder(mem)
				b.AppendValues([]string{`{"x":[1,2]}`, `"s"`}, nil)
				return b.NewArray()
			}, want: []string{`{"x":[1,2]}`, `"s"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.field
			if f.Name == "" {
				f = arrow.Field{Name: "v", Type: tt.typ, Nullable: true}
			}
			rec := buildRecord(t, []arrow.Field{f}, func(mem memory.Allocator) []arrow.Array {
				return []arrow.Array{tt.build(mem)}
			})
			defer rec.Release()
			got := encodeRows(NewEncoder(), rec)
			for i, w := range tt.want {
				want := `{}`
				if w != "" {
					want = `{"v":` + w + `}`
				}
				if got[i] != want {
					t.Errorf("row %d = %s, want %s", i, got[i], want)
				}
				if !json.Valid([]byte(got[i])) {
					t.Errorf("row %d is not valid JSON: %s", i, got[i])
				}
			}
		})
	}
}

func TestEncoderSkipsReservedColumns(t *testing.T) {
	rec := buildRecord(t, []arrow.Field{
		{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
		{Name: "a", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: sdk.TemplateColumnPrefix + "url", Type: arrow.BinaryTypes.String},
	}, func(mem memory.Allocator) []arrow.Array {
		ib := array.NewStringBuilder(mem)
		ib.Append("row_1")
		ab := array.NewInt64Builder(mem)
		ab.Append(5)
		tb := array.NewStringBuilder(mem)
		tb.Append("http://x")
		return []arrow.Array{ib.NewArray(), ab.NewArray(), tb.NewArray()}
	})
	defer rec.Release()
	if got := string(NewEncoder().AppendRow(nil, rec, 0)); got != `{"a":5}` {
		t.Errorf("got %s, want {\"a\":5}", got)
	}
}

func TestEncoderStructAndListTypes(t *testing.T) {
	st := arrow.StructOf(
		arrow.Field{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "scores", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true},
	)
	rec := buildRecord(t, []arrow.Field{{Name: "s", Type: st, Nullable: true}}, func(mem memory.Allocator) []arrow.Array {
		b := array.NewStructBuilder(mem, st)
		lb := b.FieldBuilder(0).(*array.StringBuilder)
		sb := b.FieldBuilder(1).(*array.ListBuilder)
		vb := sb.ValueBuilder().(*array.Float32Builder)
		b.Append(true)
		lb.Append("High")
		sb.Append(true)
		vb.AppendValues([]float32{0.5, 0.25}, nil)
		b.Append(true)
		lb.AppendNull()
		sb.AppendNull()
		b.AppendNull()
		return []arrow.Array{b.NewArray()}
	})
	defer rec.Release()
	got := encodeRows(NewEncoder(), rec)
	want := []string{`{"s":{"label":"High","scores":[0.5,0.25]}}`, `{"s":{}}`, `{}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestEncoderSlicedRecord(t *testing.T) {
	d := NewDecoder(Options{})
	defer d.Release()
	lines := []string{`{"a":1,"o":{"x":"p"},"l":[1]}`, `{"a":2,"o":{"x":null},"l":[2,3]}`, `{"a":3,"o":{"x":"r"},"l":[]}`}
	mustAppend(t, d, lines...)
	rec := d.Flush()
	defer rec.Release()
	e := NewEncoder()
	e.AppendRow(nil, rec, 0) // bind the full record first
	sl := rec.NewSlice(1, 3)
	defer sl.Release()
	got := encodeRows(e, sl)
	for i, w := range lines[1:] {
		assertSameJSON(t, got[i], w)
	}
}

func TestEncoderAppendsToDst(t *testing.T) {
	got := roundTrip(t, `{"a":1}`)
	rec := func() arrow.RecordBatch {
		d := NewDecoder(Options{})
		mustAppend(t, d, `{"a":1}`)
		return d.Flush()
	}()
	defer rec.Release()
	out := NewEncoder().AppendRow([]byte("prefix "), rec, 0)
	if string(out) != "prefix "+got[0] {
		t.Errorf("got %q", out)
	}
}

func TestEncoderNullsColumnFromOtherSources(t *testing.T) {
	// A source other than the decoder may list null paths too.
	st := arrow.StructOf(arrow.Field{Name: "c", Type: arrow.PrimitiveTypes.Int64, Nullable: true})
	rec := buildRecord(t, []arrow.Field{
		{Name: "a", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "b", Type: st, Nullable: true},
		{Name: sdk.NullsColumn, Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
	}, func(mem memory.Allocator) []arrow.Array {
		ab := array.NewStringBuilder(mem)
		ab.AppendNull()
		ab.AppendNull()
		bb := array.NewStructBuilder(mem, st)
		bb.Append(true)
		bb.FieldBuilder(0).(*array.Int64Builder).AppendNull()
		bb.AppendNull()
		nb := array.NewListBuilder(mem, arrow.BinaryTypes.String)
		nvb := nb.ValueBuilder().(*array.StringBuilder)
		nb.Append(true)
		nvb.AppendValues([]string{"a", "b.c"}, nil)
		nb.AppendNull()
		return []arrow.Array{ab.NewArray(), bb.NewArray(), nb.NewArray()}
	})
	defer rec.Release()
	got := encodeRows(NewEncoder(), rec)
	want := []string{`{"a":null,"b":{"c":null}}`, `{}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestEncoderManySchemas(t *testing.T) {
	e := NewEncoder()
	var recs []arrow.RecordBatch
	for i := 0; i < 100; i++ {
		d := NewDecoder(Options{})
		line := `{"f` + strings.Repeat("x", i) + `":` + "1" + `}`
		mustAppend(t, d, line)
		rec := d.Flush()
		recs = append(recs, rec)
		assertSameJSON(t, string(e.AppendRow(nil, rec, 0)), line)
	}
	for _, r := range recs {
		r.Release()
	}
}
