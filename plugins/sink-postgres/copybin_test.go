package sinkpostgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

// allTypes is one batch with a column of every Arrow type the sink maps,
// each with a null, and odd values (negative times, unicode, empty lists).
func allTypes(t *testing.T) arrow.RecordBatch {
	t.Helper()
	mem := memory.DefaultAllocator
	tsType := &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	inner := arrow.StructOf(arrow.Field{Name: "a", Type: arrow.PrimitiveTypes.Int64, Nullable: true}, arrow.Field{Name: "b", Type: arrow.BinaryTypes.String, Nullable: true})
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "s", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "i64", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "i32", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
		{Name: "u64", Type: arrow.PrimitiveTypes.Uint64, Nullable: true},
		{Name: "f64", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "f16", Type: arrow.FixedWidthTypes.Float16, Nullable: true},
		{Name: "ok", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "ts", Type: tsType, Nullable: true},
		{Name: "when", Type: arrow.BinaryTypes.String, Nullable: true}, // declared a timestamp
		{Name: "d32", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
		{Name: "d64", Type: arrow.FixedWidthTypes.Date64, Nullable: true},
		{Name: "bin", Type: arrow.BinaryTypes.Binary, Nullable: true},
		{Name: "st", Type: inner, Nullable: true},
		{Name: "list", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64), Nullable: true},
		{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	const n = 4
	for i := 0; i < n; i++ {
		null := i == 2
		app := func(fb array.Builder, f func()) {
			if null {
				fb.AppendNull()
				return
			}
			f()
		}
		app(b.Field(0), func() {
			b.Field(0).(*array.StringBuilder).Append([]string{"plain", "åäö ✓ \"quoted\"\n", "", ""}[i])
		})
		app(b.Field(1), func() { b.Field(1).(*array.Int64Builder).Append([]int64{0, -9_000_000_000_000, 0, 42}[i]) })
		app(b.Field(2), func() { b.Field(2).(*array.Int32Builder).Append([]int32{-7, 1 << 30, 0, 3}[i]) })
		app(b.Field(3), func() { b.Field(3).(*array.Uint64Builder).Append([]uint64{1, 1 << 62, 0, 5}[i]) })
		app(b.Field(4), func() { b.Field(4).(*array.Float64Builder).Append([]float64{0.1, -1e300, 0, 3.5}[i]) })
		app(b.Field(5), func() { b.Field(5).(*array.Float32Builder).Append([]float32{0.25, -2.5, 0, 1e-3}[i]) })
		app(b.Field(6), func() { b.Field(6).(*array.Float16Builder).Append(float16.New([]float32{0.5, -2, 0, 8}[i])) })
		app(b.Field(7), func() { b.Field(7).(*array.BooleanBuilder).Append(i%2 == 0) })
		app(b.Field(8), func() {
			ms := []int64{0, -86_400_001, 0, time.Date(2024, 5, 1, 12, 0, 0, 123_000_000, time.UTC).UnixMilli()}[i]
			b.Field(8).(*array.TimestampBuilder).Append(arrow.Timestamp(ms))
		})
		app(b.Field(9), func() {
			b.Field(9).(*array.StringBuilder).Append([]string{"2024-05-01T12:00:00Z", "1999-12-31T23:59:59.999999+02:00", "", "2030-01-01T00:00:00.5-05:00"}[i])
		})
		app(b.Field(10), func() { b.Field(10).(*array.Date32Builder).Append(arrow.Date32([]int32{0, -1, 0, 19_844}[i])) })
		app(b.Field(11), func() {
			b.Field(11).(*array.Date64Builder).Append(arrow.Date64([]int64{0, -86_400_000, 0, 1_714_521_600_000}[i]))
		})
		app(b.Field(12), func() { b.Field(12).(*array.BinaryBuilder).Append([]byte{0, 1, 2, byte(i), 0xff}) })
		stb := b.Field(13).(*array.StructBuilder)
		app(stb, func() {
			stb.Append(true)
			stb.FieldBuilder(0).(*array.Int64Builder).Append(int64(i))
			if i == 3 {
				stb.FieldBuilder(1).AppendNull()
			} else {
				stb.FieldBuilder(1).(*array.StringBuilder).Append("x\ty")
			}
		})
		if null {
			stb.FieldBuilder(0).AppendNull()
			stb.FieldBuilder(1).AppendNull()
		}
		lb := b.Field(14).(*array.ListBuilder)
		app(lb, func() {
			lb.Append(true)
			for j := 0; j < i; j++ {
				lb.ValueBuilder().(*array.Int64Builder).Append(int64(j))
			}
		})
		b.Field(15).(*array.StringBuilder).Append([]string{"r1", "r2", "r3", "r4"}[i])
	}
	return b.NewRecordBatch()
}

// rows returns a table's rows as JSON, in id order.
func (d *db) rows(table string) []string {
	d.t.Helper()
	rs, err := d.conn.Query(context.Background(), "SELECT (to_jsonb(t) - '"+IDColumn+"')::text FROM "+ident(d.schema, table)+" t ORDER BY "+ident(IDColumn))
	if err != nil {
		d.t.Fatal(err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var s string
		if err := rs.Scan(&s); err != nil {
			d.t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rs.Err(); err != nil {
		d.t.Fatal(err)
	}
	return out
}

// The binary COPY written by the sink loads exactly what pgx's CopyFrom
// loads, for every type the sink creates and for the other column types
// it writes itself in a table made by hand.
func TestBinaryCopyLoadsWhatPgxLoads(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	for _, mode := range []string{ModeAppend, ModeMerge} {
		for _, flatten := range []bool{false, true} {
			name := mode
			if flatten {
				name += "_flat"
			}
			t.Run(name, func(t *testing.T) {
				load := func(table string, viaPgx bool) {
					s := d.sink(table, map[string]any{"mode": mode, "flatten": flatten, "types": map[string]string{"when": "timestamp"}}, false)
					s.pgxCopy = viaPgx
					rec := allTypes(t)
					defer rec.Release()
					if err := s.Write(ctx, sdk.NewBatch(rec)); err != nil {
						t.Fatal(err)
					}
					if err := s.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
				load("bin_"+name, false)
				load("pgx_"+name, true)
				got, want := d.rows("bin_"+name), d.rows("pgx_"+name)
				if len(want) != 4 || strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("binary COPY loaded\n%s\npgx loaded\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if cols := d.columns("bin_" + name); !flatten && (cols["when"] != tTimestamptz || cols["d32"] != tDate || cols["bin"] != tBytea || cols["st"] != tJSONB) {
					t.Fatalf("columns %v", cols)
				}
			})
		}
	}

	// A table made by hand, with column types the sink does not create
	// but writes itself: integer, smallint, varchar, timestamp, json.
	t.Run("hand-made table", func(t *testing.T) {
		for _, table := range []string{"hand_bin", "hand_pgx"} {
			if _, err := d.conn.Exec(ctx, "CREATE TABLE "+ident(d.schema, table)+` (`+ident(IDColumn)+` text PRIMARY KEY, i32 integer, u64 smallint, s varchar(40), ts timestamp, "when" timestamp, st json, list json, f64 double precision)`); err != nil {
				t.Fatal(err)
			}
			s := d.sink(table, map[string]any{"types": map[string]string{"when": "timestamp"}}, false)
			s.pgxCopy = table == "hand_pgx"
			rec := allTypes(t)
			// u64 holds 1<<62 in row 2: beyond smallint. Load rows 1, 3, 4.
			sl := array.NewRecordBatch(rec.Schema(), sliceCols(rec, 0, 1), 1)
			s2 := array.NewRecordBatch(rec.Schema(), sliceCols(rec, 2, 4), 2)
			rec.Release()
			for _, r := range []arrow.RecordBatch{sl, s2} {
				if err := s.Write(ctx, sdk.NewBatch(r)); err != nil {
					t.Fatal(err)
				}
				r.Release()
			}
			if err := s.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		got, want := d.rows("hand_bin"), d.rows("hand_pgx")
		if len(want) != 3 || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("binary COPY loaded\n%s\npgx loaded\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("out of range names the record", func(t *testing.T) {
		if _, err := d.conn.Exec(ctx, "CREATE TABLE "+ident(d.schema, "narrow")+` (`+ident(IDColumn)+` text PRIMARY KEY, u64 smallint)`); err != nil {
			t.Fatal(err)
		}
		s := d.sink("narrow", nil, false)
		rec := allTypes(t)
		defer rec.Release()
		if err := s.Write(ctx, sdk.NewBatch(rec)); err != nil {
			t.Fatal(err)
		}
		err := s.Flush(ctx)
		if err == nil || !strings.Contains(err.Error(), "record r2") || !strings.Contains(err.Error(), `field "u64"`) {
			t.Fatalf("got %v, want an error naming record r2 and field u64", err)
		}
		if n := d.count("narrow"); n != 0 {
			t.Fatalf("%d rows loaded, want none", n)
		}
	})
}

func sliceCols(rec arrow.RecordBatch, i, j int64) []arrow.Array {
	cols := make([]arrow.Array, rec.NumCols())
	for c := range cols {
		cols[c] = array.NewSlice(rec.Column(c), i, j)
	}
	return cols
}
