package sdk_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk"
)

func textBatch() sdk.Batch {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "text", Type: arrow.BinaryTypes.String},
		{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
		{Name: sdk.TemplateColumnPrefix + "url", Type: arrow.BinaryTypes.String},
	}, nil)
	return sdk.NewBatch(array.NewRecordBatch(schema, []arrow.Array{
		strings("a", "b", "c", "d", "e"), strings("r1", "r2", "r3", "r4", "r5"), strings("u1", "u2", "u3", "u4", "u5"),
	}, 5))
}

func TestBatchFilterKeepsIDsAndTemplates(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep []bool
		want []string // text:id:url
	}{
		{"one run", []bool{false, true, true, false, false}, []string{"b:r2:u2", "c:r3:u3"}},
		{"several runs", []bool{true, false, true, true, false}, []string{"a:r1:u1", "c:r3:u3", "d:r4:u4"}},
		{"none", []bool{false, false, false, false, false}, nil},
		{"all", []bool{true, true, true, true, true}, []string{"a:r1:u1", "b:r2:u2", "c:r3:u3", "d:r4:u4", "e:r5:u5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := textBatch().Filter(tc.keep)
			var got []string
			text := b.Record.Column(0).(*array.String)
			for i := 0; i < b.Len(); i++ {
				url, _ := b.Template("url", i)
				got = append(got, text.Value(i)+":"+b.ID(i)+":"+url)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestBatchWith(t *testing.T) {
	b := textBatch()
	added, err := b.With("upper", strings("A", "B", "C", "D", "E"))
	if err != nil {
		t.Fatal(err)
	}
	if added.Record.NumCols() != 2 || added.Record.ColumnName(1) != "upper" || added.ID(4) != "r5" {
		t.Fatalf("added: %v, id %q", added.Record.Schema(), added.ID(4))
	}
	replaced, err := added.With("text", strings("x", "y", "z", "w", "v"))
	if err != nil {
		t.Fatal(err)
	}
	if replaced.Record.NumCols() != 2 || replaced.Record.Column(0).(*array.String).Value(0) != "x" {
		t.Fatalf("replaced: %v", replaced.Record)
	}
	if _, err := b.With("short", strings("x")); err == nil || err.Error() != `field "short": 1 values for 5 records` {
		t.Errorf("length mismatch: %v", err)
	}
	if _, err := b.With(sdk.IDColumn, strings("1", "2", "3", "4", "5")); err == nil {
		t.Error("With accepted a reserved column")
	}
}
