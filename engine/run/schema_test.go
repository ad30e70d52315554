package run

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
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
