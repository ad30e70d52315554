package run

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

func decode(t *testing.T, lines ...string) arrow.RecordBatch {
	t.Helper()
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for _, l := range lines {
		if err := dec.Append([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	return dec.Flush()
}

func TestConformPadsMergesAndWidens(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	wide := decode(t, `{"a":1.5,"m":{"q":"x","r":2},"z":"new"}`)
	defer wide.Release()
	narrow := decode(t, `{"a":1,"m":{"q":"y"}}`, `{"a":2}`)
	defer narrow.Release()

	target := withPaths(mergeSchema(wide.Schema(), narrow.Schema()), [][]string{{"m", "s", "t"}, {"extra"}})
	// A slice exercises struct offsets.
	sliced := narrow.NewSlice(1, 2)
	defer sliced.Release()
	for _, rec := range []arrow.RecordBatch{narrow, sliced} {
		out, err := conform(mem, rec, target)
		if err != nil {
			t.Fatal(err)
		}
		if !out.Schema().Equal(target) {
			t.Fatalf("schema %v, want %v", out.Schema(), target)
		}
		enc := arrowjson.NewEncoder()
		got := string(enc.AppendRow(nil, out, 0))
		want := `{"a":1,"m":{"q":"y"}}`
		if rec == sliced {
			want = `{"a":2}`
		}
		if got != want {
			t.Errorf("row 0 = %s, want %s (ints widened to floats still encode as the same number; padded fields are absent)", got, want)
		}
		if out.Schema().Field(0).Type.ID() != arrow.FLOAT64 {
			t.Errorf("a is %v, want float64", out.Schema().Field(0).Type)
		}
		out.Release()
	}
}

func TestWithPathsLeavesExistingFields(t *testing.T) {
	s := decode(t, `{"m":{"q":"x"},"s":"str"}`)
	defer s.Release()
	if got := withPaths(s.Schema(), [][]string{{"m", "q"}, {"s", "deeper"}}); got != s.Schema() {
		t.Fatalf("changed a schema that has the fields: %v", got)
	}
	got := withPaths(s.Schema(), [][]string{{"m", "n"}})
	m, _ := got.FieldsByName("m")
	if st := m[0].Type.(*arrow.StructType); st.NumFields() != 2 || st.Field(1).Type.ID() != arrow.NULL {
		t.Fatalf("m = %v", m[0].Type)
	}
}

// A field whose type changes keeps the first type in the merged schema; a
// batch that brings the other keeps its own column, and its schema says so.
func TestConformKeepsAConflictingColumn(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	ints := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.PrimitiveTypes.Int64, Nullable: true}, {Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true}}, nil)
	strs := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	merged := mergeSchema(ints, strs)
	if got := merged.Field(0).Type; !arrow.TypeEqual(got, arrow.PrimitiveTypes.Int64) {
		t.Fatalf("merged v is %s, want the first type, int64", got)
	}
	b := array.NewRecordBuilder(mem, strs)
	b.Field(0).(*array.StringBuilder).Append("x")
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()
	out, err := conform(mem, rec, merged)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if got := out.Schema().Field(0).Type; !arrow.TypeEqual(got, arrow.BinaryTypes.String) || out.Schema().NumFields() != 2 {
		t.Fatalf("conformed schema %s; want v kept as string and n added", out.Schema())
	}
	if !arrow.TypeEqual(out.Column(0).DataType(), out.Schema().Field(0).Type) {
		t.Fatal("a column's type differs from its schema's")
	}
}

// The same inside a struct: the struct's type says which child kept its own.
func TestConformKeepsAConflictingChild(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	ints := arrow.NewSchema([]arrow.Field{{Name: "m", Type: arrow.StructOf(arrow.Field{Name: "v", Type: arrow.PrimitiveTypes.Int64, Nullable: true}, arrow.Field{Name: "w", Type: arrow.PrimitiveTypes.Int64, Nullable: true}), Nullable: true}}, nil)
	strs := arrow.NewSchema([]arrow.Field{{Name: "m", Type: arrow.StructOf(arrow.Field{Name: "v", Type: arrow.BinaryTypes.String, Nullable: true}), Nullable: true}}, nil)
	merged := mergeSchema(ints, strs)
	b := array.NewRecordBuilder(mem, strs)
	sb := b.Field(0).(*array.StructBuilder)
	sb.Append(true)
	sb.FieldBuilder(0).(*array.StringBuilder).Append("x")
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()
	out, err := conform(mem, rec, merged)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	st := out.Schema().Field(0).Type.(*arrow.StructType)
	if v, _ := st.FieldByName("v"); !arrow.TypeEqual(v.Type, arrow.BinaryTypes.String) || st.NumFields() != 2 {
		t.Fatalf("conformed struct %s; want v kept as string and w added", st)
	}
	if !arrow.TypeEqual(out.Column(0).DataType(), out.Schema().Field(0).Type) {
		t.Fatalf("column type %s differs from its schema's %s", out.Column(0).DataType(), out.Schema().Field(0).Type)
	}
}
