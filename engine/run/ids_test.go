package run

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

// The ids the engine derives from a place are sdk.IDPrefix plus the place,
// the rule push sources use to answer their clients with the ids sinks see.
func TestPlaceIDsUseTheSDKPrefix(t *testing.T) {
	mem := memory.DefaultAllocator
	schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewInt64Builder(mem)
	b.AppendValues([]int64{1, 2}, nil)
	col := b.NewArray()
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, 2)
	out := addPlaceIDs(mem, rec, withIDField(schema), "calls", "in.jsonl", []int64{7, 9})
	defer out.Release()
	ids := out.Column(1).(*array.String)
	for i, place := range []string{"7", "9"} {
		if want := sdk.IDPrefix("calls", "in.jsonl") + place; ids.Value(i) != want {
			t.Errorf("id %d = %q, want %q", i, ids.Value(i), want)
		}
	}
	given := addGivenIDs(mem, rec, withIDField(schema), []string{"a", "b"})
	defer given.Release()
	if got := given.Column(1).(*array.String); got.Value(0) != "a" || got.Value(1) != "b" || !strings.HasPrefix(ids.Value(0), sdk.IDPrefix("calls", "in.jsonl")) {
		t.Errorf("given ids: %v", got)
	}
}
