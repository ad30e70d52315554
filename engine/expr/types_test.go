package expr

import (
	"reflect"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

// typesSchema has a column of each Arrow type the package maps.
func typesSchema() *arrow.Schema {
	f := func(name string, dt arrow.DataType) arrow.Field {
		return arrow.Field{Name: name, Type: dt, Nullable: true}
	}
	return arrow.NewSchema([]arrow.Field{
		f("i8", arrow.PrimitiveTypes.Int8),
		f("i32", arrow.PrimitiveTypes.Int32),
		f("u8", arrow.PrimitiveTypes.Uint8),
		f("u64", arrow.PrimitiveTypes.Uint64),
		f("f32", arrow.PrimitiveTypes.Float32),
		f("dec", &arrow.Decimal128Type{Precision: 10, Scale: 2}),
		f("ls", arrow.BinaryTypes.LargeString),
		f("sv", arrow.BinaryTypes.StringView),
		f("bin", arrow.BinaryTypes.Binary),
		f("d32", arrow.FixedWidthTypes.Date32),
		f("dur", arrow.FixedWidthTypes.Duration_ms),
		f("m", arrow.MapOf(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64)),
		f("ll", arrow.LargeListOf(arrow.PrimitiveTypes.Int64)),
		f("fsl", arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float64)),
		f("nul", arrow.Null),
	}, nil)
}

var typesRows = []string{
	`{"i8":3,"i32":-7,"u8":200,"u64":18446744073709551615,"f32":0.5,"dec":"12.34","ls":"large","sv":"view","bin":"aGk=",
	  "d32":"2025-11-14","dur":1500,"m":[{"key":"a","value":1}],"ll":[1,2],"fsl":[0.5,1.5]}`,
	`{"i8":-3,"i32":7,"u8":1,"u64":5,"f32":1.25,"dec":"0.5","ls":"LARGE","sv":"Vue","bin":"eA==",
	  "d32":"2019-01-01","dur":10,"m":[],"ll":[],"fsl":[2,3]}`,
	`{}`,
}

func TestColumnTypes(t *testing.T) {
	rec := batch(t, typesSchema(), typesRows)
	preds := []struct {
		name string
		src  string
		want []int
	}{
		{"int8", "i8 > 0", []int{1}},
		{"int32", "i32 == 7", []int{2}},
		{"uint8", "u8 >= 200", []int{1}},
		{"uint64 beyond int64", "u64 > 100", []int{1}},
		{"float32", "f32 > 1", []int{2}},
		{"float32 in", "f32 in [0.5, 2]", []int{1}},
		{"decimal", "dec > 1.5", []int{1}},
		{"large string", "lower(ls) == 'large'", []int{1, 2}},
		{"string view", "sv startsWith 'V'", []int{2}},
		{"binary", "bin == 'hi'", []int{1}},
		{"date", "d32 > date('2020-01-01')", []int{1}},
		{"duration", "dur > duration('1s')", []int{1}},
		{"map", "m.a == 1", []int{1}},
		{"map missing key", "m.b == nil", []int{1, 2, 3}},
		{"large list", "len(ll) == 2", []int{1}},
		{"fixed size list", "fsl[1] > 1", []int{1, 2}},
		{"null column", "nul == nil", []int{1, 2, 3}},
		{"null column compared", "nul == 'x'", []int{}},
		{"list is nil", "ll == nil", []int{3}},
	}
	for _, tc := range preds {
		t.Run(tc.name, func(t *testing.T) {
			for _, force := range []bool{false, true} {
				p, err := compilePredicate("where", tc.src, rec.Schema(), force)
				if err != nil {
					t.Fatal(err)
				}
				mask, err := p.Eval(rec)
				if err != nil {
					t.Fatal(err)
				}
				if got := rowsOf(mask); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("fallback only %v: rows %v, want %v", force, got, tc.want)
				}
			}
		})
	}

	renders := []struct {
		name string
		src  string
		want []string
	}{
		{"ints", "{{i8}} {{u8}} {{u64}}", []string{"3 200 18446744073709552000", "-3 1 5", "  "}},
		{"floats", "{{f32}} {{dec}}", []string{"0.5 12.34", "1.25 0.5", " "}},
		{"strings", "{{ls}} {{sv}} {{bin}}", []string{"large view hi", "LARGE Vue x", "  "}},
		{"date and duration", "{{d32}} {{dur}}", []string{"2025-11-14T00:00:00Z 1.5s", "2019-01-01T00:00:00Z 10ms", " "}},
		{"nested", "{{m}} {{ll}} {{fsl}}", []string{`{"a":1} [1,2] [0.5,1.5]`, `{} [] [2,3]`, "  "}},
	}
	for _, tc := range renders {
		t.Run(tc.name, func(t *testing.T) {
			for _, force := range []bool{false, true} {
				tpl, err := compileTemplate(tc.src, rec.Schema(), force)
				if err != nil {
					t.Fatal(err)
				}
				out, err := tpl.Render(rec)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]string, out.Len())
				for i := range got {
					got[i] = out.Value(i)
				}
				out.Release()
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("expr only %v: got %q, want %q", force, got, tc.want)
				}
			}
		})
	}
}

func TestEnvReadsOnlyReferencedFields(t *testing.T) {
	rec := sampleBatch(t)
	tests := []struct {
		name string
		src  string
		want map[string]any // row 1's env
	}{
		{"one leaf", "classifications.churn_risk.confidence * 100 > 80",
			map[string]any{"classifications": map[string]any{"churn_risk": map[string]any{"confidence": 0.91}}}},
		{"two leaves", "len(metadata.queue) + len(metadata.channel) > 0",
			map[string]any{"metadata": map[string]any{"queue": "retention", "channel": "phone"}}},
		{"struct as a value", "len(classifications.churn_risk) > 1 && classifications.churn_risk.label != ''",
			map[string]any{"classifications": map[string]any{"churn_risk": map[string]any{"label": "High", "confidence": 0.91}}}},
		{"top-level column", "n * 2 > 1", map[string]any{"n": 2}},
		{"closure", "any(tags, # == 'a')", map[string]any{"tags": []any{"a", "b"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := compilePredicate("where", tc.src, rec.Schema(), true)
			if err != nil {
				t.Fatal(err)
			}
			plan, _ := p.plan(rec.Schema())
			prog := plan.root.(*rowNode).prog
			env, err := prog.env.resolve(rec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := env.row(0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("env %v, want %v", got, tc.want)
			}
		})
	}
}
