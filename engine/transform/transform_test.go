package transform

import (
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

var input = []string{
	`{"row_id":"r1","text":"cancel","classifications":{"churn_risk":{"label":"High","confidence":0.95}},"metadata":{"customer_id":"c1","queue":"retention"}}`,
	`{"row_id":"r2","text":"hello","classifications":{"churn_risk":{"label":"Low","confidence":0.2}},"metadata":{"customer_id":"c2","queue":"support"}}`,
	`{"row_id":"r3","text":"bye","classifications":{"churn_risk":{"label":"High","confidence":0.85}}}`,
}

func decode(t *testing.T, lines []string) arrow.RecordBatch {
	t.Helper()
	d := arrowjson.NewDecoder(arrowjson.Options{})
	for _, l := range lines {
		if err := d.Append([]byte(l)); err != nil {
			t.Fatalf("decoding %s: %v", l, err)
		}
	}
	rec := d.Flush()
	t.Cleanup(rec.Release)
	return rec
}

func encode(rec arrow.RecordBatch) []string {
	e := arrowjson.NewEncoder()
	var out []string
	for i := 0; i < int(rec.NumRows()); i++ {
		out = append(out, string(e.AppendRow(nil, rec, i)))
	}
	return out
}

func names(s *arrow.Schema) string {
	var out []string
	for _, f := range s.Fields() {
		out = append(out, f.Name)
	}
	return strings.Join(out, ",")
}

func set(target, src string) Assignment {
	return Assignment{Target: strings.Split(target, "."), Src: src}
}

func paths(ps ...string) [][]string {
	var out [][]string
	for _, p := range ps {
		out = append(out, strings.Split(p, "."))
	}
	return out
}

func TestApply(t *testing.T) {
	tests := []struct {
		name   string
		spec   Spec
		fields string
		want   []string
	}{
		{
			name: "set",
			spec: Spec{Set: []Assignment{
				set("priority", "classifications.churn_risk.confidence > 0.9 ? 'urgent' : 'normal'"),
				set("customer", "metadata.customer_id"),
				set("score", "classifications.churn_risk.confidence * 100"),
			}},
			fields: "row_id,text,classifications,metadata,priority,customer,score",
			want: []string{
				`{"row_id":"r1","text":"cancel","classifications":{"churn_risk":{"label":"High","confidence":0.95}},"metadata":{"customer_id":"c1","queue":"retention"},"priority":"urgent","customer":"c1","score":95}`,
				`{"row_id":"r2","text":"hello","classifications":{"churn_risk":{"label":"Low","confidence":0.2}},"metadata":{"customer_id":"c2","queue":"support"},"priority":"normal","customer":"c2","score":20}`,
				`{"row_id":"r3","text":"bye","classifications":{"churn_risk":{"label":"High","confidence":0.85}},"priority":"normal","score":85}`,
			},
		},
		{
			name:   "replace a column in place",
			spec:   Spec{Set: []Assignment{set("text", "upper(text)")}},
			fields: "row_id,text,classifications,metadata",
			want: []string{
				`{"row_id":"r1","text":"CANCEL","classifications":{"churn_risk":{"label":"High","confidence":0.95}},"metadata":{"customer_id":"c1","queue":"retention"}}`,
				`{"row_id":"r2","text":"HELLO","classifications":{"churn_risk":{"label":"Low","confidence":0.2}},"metadata":{"customer_id":"c2","queue":"support"}}`,
				`{"row_id":"r3","text":"BYE","classifications":{"churn_risk":{"label":"High","confidence":0.85}}}`,
			},
		},
		{
			name: "nested set",
			spec: Spec{
				Set: []Assignment{
					set("routing.team", "metadata.queue == 'retention' ? 'tier2' : 'general'"),
					set("metadata.vip", "classifications.churn_risk.confidence > 0.9"),
					set("routing.id", "row_id"),
				},
				Keep: paths("row_id"),
			},
			fields: "row_id,metadata,routing",
			want: []string{
				`{"row_id":"r1","metadata":{"vip":true},"routing":{"team":"tier2","id":"r1"}}`,
				`{"row_id":"r2","metadata":{"vip":false},"routing":{"team":"general","id":"r2"}}`,
				`{"row_id":"r3","routing":{"team":"general","id":"r3"}}`,
			},
		},
		{
			name: "values of no fixed type are raw JSON",
			spec: Spec{
				Set: []Assignment{
					set("obj", "{'id': row_id, 'labels': [classifications.churn_risk.label]}"),
					set("none", "nil"),
				},
				Keep: paths("row_id"),
			},
			fields: "row_id,obj,none",
			want: []string{
				`{"row_id":"r1","obj":{"id":"r1","labels":["High"]}}`,
				`{"row_id":"r2","obj":{"id":"r2","labels":["Low"]}}`,
				`{"row_id":"r3","obj":{"id":"r3","labels":["High"]}}`,
			},
		},
		{
			name: "drop keep rename",
			spec: Spec{
				Drop:   paths("text", "classifications.churn_risk.label"),
				Keep:   paths("row_id", "classifications", "metadata.customer_id"),
				Rename: map[string]string{"row_id": "id", "metadata.customer_id": "customer"},
			},
			fields: "id,classifications,metadata",
			want: []string{
				`{"id":"r1","classifications":{"churn_risk":{"confidence":0.95}},"metadata":{"customer":"c1"}}`,
				`{"id":"r2","classifications":{"churn_risk":{"confidence":0.2}},"metadata":{"customer":"c2"}}`,
				`{"id":"r3","classifications":{"churn_risk":{"confidence":0.85}}}`,
			},
		},
	}
	rec := decode(t, input)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := Compile(tc.spec, rec.Schema())
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			s, err := tr.Schema(rec.Schema())
			if err != nil {
				t.Fatal(err)
			}
			if got := names(s); got != tc.fields {
				t.Errorf("schema fields %s, want %s", got, tc.fields)
			}
			out, err := tr.Apply(memory.DefaultAllocator, rec)
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			defer out.Release()
			if !out.Schema().Equal(s) {
				t.Errorf("batch schema %s\nSchema() gave %s", out.Schema(), s)
			}
			got := encode(out)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestApplySlice(t *testing.T) {
	rec := decode(t, input)
	tr, err := Compile(Spec{Set: []Assignment{set("metadata.team", "row_id")}}, rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	sl := rec.NewSlice(1, 3)
	defer sl.Release()
	out, err := tr.Apply(nil, sl)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	want := `{"row_id":"r2","text":"hello","classifications":{"churn_risk":{"label":"Low","confidence":0.2}},"metadata":{"customer_id":"c2","queue":"support","team":"r2"}}` + "\n" +
		`{"row_id":"r3","text":"bye","classifications":{"churn_risk":{"label":"High","confidence":0.85}}}`
	if got := strings.Join(encode(out), "\n"); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestCompileErrors(t *testing.T) {
	rec := decode(t, input)
	tests := []struct {
		name  string
		spec  Spec
		attr  string
		index int
		msg   string
	}{
		{"unknown field", Spec{Set: []Assignment{set("a", "row_id"), set("b", "metadata.custmer_id")}}, "set", 1, "unknown field custmer_id"},
		{"type error", Spec{Set: []Assignment{set("a", "text * 2")}}, "set", 0, "invalid operation"},
		{"conflicting targets", Spec{Set: []Assignment{set("a", "1"), set("a.b", "2")}}, "set", 1, "conflicts with a"},
		{"same target twice", Spec{Set: []Assignment{set("a", "1"), set("a", "2")}}, "set", 1, "conflicts with a"},
		{"reserved target", Spec{Set: []Assignment{set("_pipeline_id", "'x'")}}, "set", 0, "engine's own column"},
		{"target under a string", Spec{Set: []Assignment{set("text.x", "1")}}, "set", 0, "not a struct"},
		{"drop unknown", Spec{Drop: paths("text", "txet")}, "drop", 1, "no field txet"},
		{"drop reserved", Spec{Drop: paths("_pipeline_id")}, "drop", 0, "engine's own column"},
		{"drop what is set", Spec{Set: []Assignment{set("a", "1")}, Drop: paths("a")}, "drop", 0, "set by this transform"},
		{"keep unknown", Spec{Keep: paths("metadata.nope")}, "keep", 0, "no field metadata.nope"},
		{"rename unknown", Spec{Rename: map[string]string{"nope": "x"}}, "rename", -1, "no field nope"},
		{"rename onto a field", Spec{Rename: map[string]string{"text": "row_id"}}, "rename", -1, "already"},
		{"rename to a path", Spec{Rename: map[string]string{"text": "a.b"}}, "rename", -1, "not a path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.spec, rec.Schema())
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != 1 {
				t.Fatalf("err = %v, want one error", err)
			}
			e := errs[0]
			if e.Attr != tc.attr || e.Index != tc.index || !strings.Contains(e.Err.Error(), tc.msg) {
				t.Errorf("got %s %d %q, want %s %d containing %q", e.Attr, e.Index, e.Err, tc.attr, tc.index, tc.msg)
			}
		})
	}
	// An expression error keeps its position inside the expression.
	_, err := Compile(Spec{Set: []Assignment{set("b", "metadata.custmer_id")}}, rec.Schema())
	var xe *expr.Error
	if !errors.As(err, &xe) || xe.Line != 1 || xe.Column != 10 {
		t.Errorf("err = %#v, want an *expr.Error at 1:10", xe)
	}
}

func TestTypesFollowTheBatch(t *testing.T) {
	tr, err := Compile(Spec{Set: []Assignment{set("copy", "v"), set("twice", "v + v")}, Drop: paths("gone")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		line       string
		copy, twic arrow.DataType
		want       string
	}{
		{`{"v":2}`, arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Int64, `{"v":2,"copy":2,"twice":4}`},
		{`{"v":1.5,"gone":1}`, arrow.PrimitiveTypes.Float64, arrow.PrimitiveTypes.Float64, `{"v":1.5,"copy":1.5,"twice":3}`},
		{`{"v":"ab"}`, arrow.BinaryTypes.String, arrow.BinaryTypes.String, `{"v":"ab","copy":"ab","twice":"abab"}`},
	} {
		rec := decode(t, []string{tc.line})
		out, err := tr.Apply(memory.DefaultAllocator, rec)
		if err != nil {
			t.Fatalf("%s: %v", tc.line, err)
		}
		s := out.Schema()
		if f, _ := s.FieldsByName("copy"); !arrow.TypeEqual(f[0].Type, tc.copy) {
			t.Errorf("%s: copy is %s, want %s", tc.line, f[0].Type, tc.copy)
		}
		if f, _ := s.FieldsByName("twice"); !arrow.TypeEqual(f[0].Type, tc.twic) {
			t.Errorf("%s: twice is %s, want %s", tc.line, f[0].Type, tc.twic)
		}
		if got := strings.Join(encode(out), ""); got != tc.want {
			t.Errorf("got %s, want %s", got, tc.want)
		}
		out.Release()
	}
}

func TestReservedColumnsKept(t *testing.T) {
	s := arrow.NewSchema([]arrow.Field{
		{Name: "a", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "_pipeline_id", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	b.Field(0).(*array.Int64Builder).Append(1)
	b.Field(1).(*array.StringBuilder).Append("id1")
	rec := b.NewRecordBatch()
	b.Release()
	defer rec.Release()
	tr, err := Compile(Spec{Set: []Assignment{set("b", "a + 1")}, Keep: paths("b")}, s)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tr.Apply(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if got := names(out.Schema()); got != "_pipeline_id,b" {
		t.Errorf("columns %s, want _pipeline_id,b", got)
	}
}

func TestRowError(t *testing.T) {
	rec := decode(t, []string{`{"n":1}`, `{"n":0}`})
	tr, err := Compile(Spec{Set: []Assignment{set("m", "10 % n")}}, rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Apply(nil, rec)
	var re *expr.RowError
	if !errors.As(err, &re) || re.Row != 2 {
		t.Fatalf("err = %v, want a RowError at row 2", err)
	}
}

func TestApplyReleasesWhatItAllocates(t *testing.T) {
	rec := decode(t, input)
	tr, err := Compile(Spec{
		Set: []Assignment{
			set("routing.team", "metadata.queue == 'retention' ? 'tier2' : 'general'"),
			set("metadata.vip", "classifications.churn_risk.confidence > 0.9"),
			set("score", "classifications.churn_risk.confidence * 100"),
			set("copy", "metadata.customer_id"),
		},
		Drop: paths("text"),
	}, rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, b := range []arrow.RecordBatch{rec, rec.NewSlice(1, 3)} {
		out, err := tr.Apply(mem, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(encode(out)) != int(b.NumRows()) {
			t.Errorf("%d rows out of %d", out.NumRows(), b.NumRows())
		}
		out.Release()
		if b != rec {
			b.Release()
		}
	}
}
