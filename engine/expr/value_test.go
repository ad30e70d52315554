package expr

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// cells renders each row of arr as text: "null", or the value as Arrow's
// ValueStr gives it.
func cells(arr arrow.Array) []string {
	out := make([]string, arr.Len())
	for i := range out {
		if arr.IsNull(i) {
			out[i] = "null"
		} else {
			out[i] = arr.ValueStr(i)
		}
	}
	return out
}

func TestValueEval(t *testing.T) {
	schema := sampleSchema()
	rec := sampleBatch(t)
	tests := []struct {
		name   string
		src    string
		typ    arrow.DataType
		raw    bool // output is JSON text
		vector bool // planned column at a time
		want   []string
	}{
		{"column", "metadata.customer_id", arrow.BinaryTypes.String, false, true,
			[]string{"cust_90312", "cust_2", "cust_3", "null", "cust_5", "cust_6", "cust_ü", "null"}},
		{"nested leaf under null parent", "classifications.churn_risk.label", arrow.BinaryTypes.String, false, true,
			[]string{"High", "Low", "null", "null", "null", "High", "HIGH", "High"}},
		{"struct column", "classifications.churn_risk", schema.Field(5).Type.(*arrow.StructType).Field(1).Type, false, true,
			[]string{`{"confidence":0.91,"label":"High"}`, `{"confidence":0.3,"label":"Low"}`, "null", "null",
				`{"confidence":0.95,"label":null}`, `{"confidence":0.8,"label":"High"}`, `{"confidence":0.99,"label":"HIGH"}`, `{"confidence":0.85,"label":"High"}`}},
		{"int literal", "42", arrow.PrimitiveTypes.Int64, false, true,
			[]string{"42", "42", "42", "42", "42", "42", "42", "42"}},
		{"nil literal", "nil", arrow.BinaryTypes.String, true, true,
			[]string{"null", "null", "null", "null", "null", "null", "null", "null"}},
		{"predicate", "classifications.churn_risk.confidence > 0.9", arrow.FixedWidthTypes.Boolean, false, true,
			[]string{"true", "false", "false", "false", "true", "false", "true", "false"}},
		{"ternary of literals", "classifications.churn_risk.confidence > 0.9 ? 'urgent' : 'normal'", arrow.BinaryTypes.String, false, true,
			[]string{"urgent", "normal", "normal", "normal", "urgent", "normal", "urgent", "normal"}},
		{"ternary with column", "metadata.queue == 'retention' ? metadata.customer_id : 'general'", arrow.BinaryTypes.String, false, true,
			[]string{"cust_90312", "general", "general", "general", "general", "cust_6", "general", "null"}},
		{"arithmetic", "n * 2", arrow.PrimitiveTypes.Int64, false, false,
			[]string{"4", "2", "null", "0", "4", "6", "20", "-2"}},
		{"float arithmetic", "x + n", arrow.PrimitiveTypes.Float64, false, false,
			[]string{"3.5", "1.5", "null", "0", "3", "5", "20.25", "-1.5"}},
		{"string function", "upper(metadata.channel)", arrow.BinaryTypes.String, false, false,
			[]string{"PHONE", "CHAT", "EMAIL", "null", "PHONE", "PHONE", "CHAT", "null"}},
		{"raw JSON member", "payload.k", arrow.BinaryTypes.String, true, false,
			[]string{"1", "2.5", "null", "0", "5", "3", "null", "null"}},
		{"map literal", "{'id': metadata.customer_id, 'n': n}", arrow.BinaryTypes.String, true, false,
			[]string{`{"id":"cust_90312","n":2}`, `{"id":"cust_2","n":1}`, `{"id":"cust_3","n":null}`, `{"id":null,"n":0}`,
				`{"id":"cust_5","n":2}`, `{"id":"cust_6","n":3}`, `{"id":"cust_ü","n":10}`, `{"id":null,"n":-1}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, force := range []bool{false, true} {
				v, err := compileValue("set.x", tc.src, schema, force)
				if err != nil {
					t.Fatalf("compile: %v", err)
				}
				arr, err := v.Eval(rec)
				if err != nil {
					t.Fatalf("force=%v: eval: %v", force, err)
				}
				defer arr.Release()
				if !force && !arrow.TypeEqual(v.Type(), tc.typ) {
					t.Errorf("Type() = %s, want %s", v.Type(), tc.typ)
				}
				if !force && !arrow.TypeEqual(arr.DataType(), tc.typ) {
					t.Errorf("array type = %s, want %s", arr.DataType(), tc.typ)
				}
				f, err := v.FieldFor(schema, "out")
				if err != nil {
					t.Fatal(err)
				}
				if got := isRaw(f); got != tc.raw && !force {
					t.Errorf("raw = %v, want %v", got, tc.raw)
				}
				if !force {
					plan, _ := v.plans.get(schema, v.build)
					_, isRow := plan.root.(*rowValNode)
					if isRow == tc.vector {
						t.Errorf("vectorised = %v, want %v", !isRow, tc.vector)
					}
				}
				got := cells(arr)
				if force && !arrow.TypeEqual(arr.DataType(), tc.typ) {
					// Row by row, a column path has the static type: compare values only.
					continue
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("force=%v: got %q, want %q", force, got, tc.want)
				}
			}
		})
	}
}

func TestValueColumnIsZeroCopy(t *testing.T) {
	rec := sampleBatch(t)
	v, err := CompileValue("set.t", "text", rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	arr, err := v.Eval(rec)
	if err != nil {
		t.Fatal(err)
	}
	defer arr.Release()
	if arr.Data().Buffers()[2] != rec.Column(4).Data().Buffers()[2] {
		t.Error("the text column was copied")
	}
	sl := rec.NewSlice(2, 5)
	defer sl.Release()
	arr2, err := v.Eval(sl)
	if err != nil {
		t.Fatal(err)
	}
	defer arr2.Release()
	if got, want := cells(arr2), []string{"null", "", "cancel NOW"}; !reflect.DeepEqual(got, want) {
		t.Errorf("slice: got %q, want %q", got, want)
	}
}

func TestValueCompileErrors(t *testing.T) {
	schema := sampleSchema()
	tests := []struct {
		name      string
		src       string
		line, col int
	}{
		{"unknown field", "metadata.custmer_id", 1, 10},
		{"type error", "text + 1", 1, 6},
		{"syntax", "n +", 1, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CompileValue("set.x", tc.src, schema)
			var xe *Error
			if !errors.As(err, &xe) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if xe.Line != tc.line || xe.Column != tc.col {
				t.Errorf("at %d:%d (%s), want %d:%d", xe.Line, xe.Column, xe.Msg, tc.line, tc.col)
			}
		})
	}
}

func TestValueRowError(t *testing.T) {
	schema := sampleSchema()
	rec := sampleBatch(t)
	// payload.k is a string in no row, but 1 % 0 fails where n is 0 (row 4).
	v, err := CompileValue("set.x", "10 % n", schema)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Eval(rec)
	var re *RowError
	if !errors.As(err, &re) || re.Row != 4 {
		t.Fatalf("err = %v, want a RowError for row 4", err)
	}
}

func TestValueSchemaChange(t *testing.T) {
	v, err := CompileValue("set.x", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.Type() != nil {
		t.Errorf("Type() without schema = %s", v.Type())
	}
	for _, typ := range []arrow.DataType{arrow.PrimitiveTypes.Int32, arrow.BinaryTypes.String} {
		s := arrow.NewSchema([]arrow.Field{{Name: "a", Type: typ, Nullable: true}}, nil)
		b := array.NewRecordBuilder(memory.DefaultAllocator, s)
		b.Field(0).AppendNull()
		rec := b.NewRecordBatch()
		b.Release()
		arr, err := v.Eval(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !arrow.TypeEqual(arr.DataType(), typ) {
			t.Errorf("got %s, want %s", arr.DataType(), typ)
		}
		arr.Release()
		rec.Release()
	}
}

func BenchmarkValue(b *testing.B) {
	rec := benchValueBatch(b)
	for _, src := range []string{
		"metadata.customer_id",
		"'normal'",
		"classifications.churn_risk.confidence > 0.9 ? 'urgent' : 'normal'",
		"classifications.churn_risk.confidence * 100",
	} {
		v, err := CompileValue("set.x", src, rec.Schema())
		if err != nil {
			b.Fatal(err)
		}
		b.Run(src, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				arr, err := v.Eval(rec)
				if err != nil {
					b.Fatal(err)
				}
				arr.Release()
			}
			b.ReportMetric(float64(rec.NumRows())*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func benchValueBatch(b *testing.B) arrow.RecordBatch {
	rows := make([]string, 0, 4096)
	for i := 0; i < 4096; i++ {
		rows = append(rows, fmt.Sprintf(`{"classifications":{"churn_risk":{"label":"High","confidence":%g}},"metadata":{"customer_id":"cust_%d"}}`,
			float64(i%100)/100, i))
	}
	return batch(b, sampleSchema(), rows)
}

// TestValueVectorMatchesRow checks that the column-at-a-time plans give
// what running the whole expression with expr row by row gives.
func TestValueVectorMatchesRow(t *testing.T) {
	schema := sampleSchema()
	rec := sampleBatch(t)
	for _, src := range []string{
		"!flag", "not (metadata.queue == 'retention')", "n in [1,2]", "text contains 'cancel'",
		"metadata.queue not in ['support']", "flag == nil", "flag ? n : 0", "x > 1 ? x : -1.0",
		"lower(metadata.queue) == 'retention' ? 'r' : nil", "len(text) > 5 ? 'long' : 'short'",
		"x > 1 && len(text) > 3", "flag && payload.k == 1", "payload.k == 1 ? 1 : 2",
		"len(text) > 5 || flag", "payload.k > 1 ? metadata.queue : text",
		"n > 1 ? (x > 1 ? 'a' : 'b') : 'c'",
	} {
		t.Run(src, func(t *testing.T) {
			var outs [2][]string
			for k, force := range []bool{false, true} {
				v, err := compileValue("set.x", src, schema, force)
				if err != nil {
					t.Fatal(err)
				}
				arr, err := v.Eval(rec)
				if err != nil {
					t.Fatalf("force=%v: %v", force, err)
				}
				outs[k] = cells(arr)
				if !force {
					plan, _ := v.plans.get(schema, v.build)
					if _, isRow := plan.root.(*rowValNode); isRow {
						t.Errorf("planned row by row")
					}
				}
				arr.Release()
			}
			if !reflect.DeepEqual(outs[0], outs[1]) {
				t.Errorf("column at a time %q, row by row %q", outs[0], outs[1])
			}
		})
	}
}
