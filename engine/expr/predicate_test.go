package expr

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
)

// predicateCases run over sampleRows. vectorised says whether the plan
// should run without any row-at-a-time part.
var predicateCases = []struct {
	name       string
	src        string
	want       []int
	vectorised bool
}{
	{"churn", "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.8", []int{1, 8}, true},
	{"float gt", "classifications.churn_risk.confidence > 0.8", []int{1, 5, 7, 8}, true},
	{"literal on the left", "0.8 < classifications.churn_risk.confidence", []int{1, 5, 7, 8}, true},
	{"ne is false on null", "classifications.churn_risk.label != 'High'", []int{2, 7}, true},
	{"not of eq is true on null", "!(classifications.churn_risk.label == 'High')", []int{2, 3, 4, 5, 7}, true},
	{"not keyword", "not (classifications.churn_risk.confidence > 0.8)", []int{2, 3, 4, 6}, true},
	{"eq", "metadata.queue == 'retention'", []int{1, 6, 8}, true},
	{"in", "metadata.queue in ['retention', 'support']", []int{1, 2, 6, 8}, true},
	{"not in", "metadata.queue not in ['retention']", []int{2, 3, 4, 5, 7}, true},
	{"lower eq", "lower(metadata.queue) == 'retention'", []int{1, 5, 6, 8}, true},
	{"upper unicode", "upper(metadata.queue) == 'ÅTERKÖP'", []int{7}, true},
	{"lower unicode", "lower(metadata.queue) == 'återköp'", []int{7}, true},
	{"lower in", "lower(classifications.churn_risk.label) in ['high']", []int{1, 6, 7, 8}, true},
	{"contains", "text contains 'cancel'", []int{1, 5}, true},
	{"lower contains", "lower(text) contains 'cancel'", []int{1, 5, 6}, true},
	{"startsWith unicode", "text startsWith 'Jag'", []int{2}, true},
	{"endsWith emoji", "text endsWith '😡'", []int{2}, true},
	{"matches", "text matches '(?i)^cancel'", []int{5, 6}, true},
	{"not matches", "text not matches 'a'", []int{3, 4, 7}, true},
	{"unicode eq", "text == 'Säg upp'", []int{7}, true},
	{"string order", "metadata.customer_id >= 'cust_5'", []int{1, 5, 6, 7}, true},
	{"hasPrefix", "hasPrefix(metadata.customer_id, 'cust_9')", []int{1}, true},
	{"float col int literal", "x > 1", []int{1, 6, 7}, true},
	{"float col eq int", "x == 1", []int{5}, true},
	{"int col eq int", "n == 2", []int{1, 5}, true},
	{"int col eq float", "n == 2.0", []int{1, 5}, true},
	{"int col gt float", "n > 1.5", []int{1, 5, 6, 7}, true},
	{"negative literal", "n >= -1 && n < 3", []int{1, 2, 4, 5, 8}, true},
	{"int in mixed", "n in [2, 3.0]", []int{1, 5, 6}, true},
	{"float in ints", "x in [1, 2]", []int{5, 6}, true},
	{"bool column", "flag", []int{1, 5, 6, 8}, true},
	{"not bool column", "!flag", []int{2, 3, 4, 7}, true},
	{"bool eq", "flag == false", []int{2, 4, 7}, true},
	{"struct is nil", "metadata == nil", []int{4}, true},
	{"nil under nil parent", "classifications.churn_risk == nil", []int{3, 4}, true},
	{"leaf is nil", "classifications.churn_risk.label == nil", []int{3, 4, 5}, true},
	{"not nil", "metadata.customer_id != nil", []int{1, 2, 3, 5, 6, 7}, true},
	{"or", "metadata.queue == 'retention' || classifications.churn_risk.confidence > 0.9", []int{1, 5, 6, 7, 8}, true},
	{"optional chain", "metadata?.queue == 'retention'", []int{1, 6, 8}, true},
	{"env member", "$env.metadata.queue == 'retention'", []int{1, 6, 8}, true},
	{"true", "true", []int{1, 2, 3, 4, 5, 6, 7, 8}, true},
	{"false", "false", []int{}, true},

	{"arithmetic", "classifications.churn_risk.confidence * 100 > 80", []int{1, 5, 7, 8}, false},
	{"len of null list", "len(tags) > 1", []int{1, 7}, false},
	{"raw json field", "payload.k > 1", []int{2, 5, 6}, false},
	{"raw json is nil", "payload == nil", []int{3}, false},
	{"hybrid and", "classifications.churn_risk.label == 'High' && len(text) > 20", []int{1, 6}, false},
	{"hybrid or", "metadata.queue == 'support' || n % 2 == 0", []int{1, 2, 4, 5, 7}, false},
	{"concat with null", "metadata.queue + '' == 'retention'", []int{1, 6, 8}, false},
	{"nil coalescing", "(classifications.churn_risk.confidence ?? 0) > 0.9", []int{1, 5, 7}, false},
	{"closure", "any(tags, # == 'a')", []int{1, 6}, false},
	{"closure over null list", "none(tags, # == 'a')", []int{2, 4, 5, 7, 8}, false},
	{"two columns", "metadata.channel == metadata.channel", []int{1, 2, 3, 5, 6, 7}, false},
	{"two null columns", "classifications.churn_risk.label == metadata.agent_id", []int{}, false},
	{"timestamp", "ts > date('2025-01-01')", []int{1}, false},
	{"ternary", "classifications.churn_risk.confidence > 0.8 ? metadata.queue == 'retention' : false", []int{1, 8}, false},
	{"index out of range", "tags[1] == 'b'", []int{1}, false},
	{"let", "let q = metadata.queue; q == 'retention' || q == 'support'", []int{1, 2, 6, 8}, false},
	{"string function", "trim(metadata.queue, 'r') == 'etention'", []int{1, 6, 8}, false},
	{"not of expr part", "!(len(text) > 10)", []int{3, 4, 5, 7}, false},
}

func TestPredicateEval(t *testing.T) {
	schema := sampleSchema()
	rec := sampleBatch(t)
	for _, tc := range predicateCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, force := range []bool{false, true} {
				p, err := compilePredicate("where", tc.src, schema, force)
				if err != nil {
					t.Fatalf("compile (fallback only: %v): %v", force, err)
				}
				mask, err := p.Eval(rec)
				if err != nil {
					t.Fatalf("eval (fallback only: %v): %v", force, err)
				}
				if got := rowsOf(mask); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("fallback only: %v: rows %v, want %v", force, got, tc.want)
				}
				if !force {
					plan, _ := p.plan(schema)
					if got := !plan.root.perRow(); got != tc.vectorised {
						t.Errorf("vectorised = %v, want %v", got, tc.vectorised)
					}
				}
			}
		})
	}
}

// exprPosition is where expr itself reports a compile error (its Column is
// 0-based), for checking that Error agrees.
func exprPosition(t *testing.T, src string, schema *arrow.Schema) (int, int) {
	t.Helper()
	config := conf.CreateNew()
	config.WithEnv(envType(schema))
	_, err := checker.ParseCheck(src, config)
	var fe *file.Error
	if !errors.As(err, &fe) {
		t.Fatalf("expr reports no positioned error for %q: %v", src, err)
	}
	return fe.Line, fe.Column + 1
}

func TestCompilePredicateErrors(t *testing.T) {
	schema := sampleSchema()
	tests := []struct {
		name         string
		src          string
		schema       *arrow.Schema
		line, column int
		msg          string
		exprAgrees   bool
	}{
		{"unknown field", "classifications.churn_rsk.label == 'High'", schema, 1, 17, "unknown field churn_rsk", true},
		{"unknown name", "metdata.queue == 'retention'", schema, 1, 1, "unknown name metdata", true},
		{"second line", "metadata.queue == 'retention'\n  && metdata.x", schema, 2, 6, "unknown name metdata", true},
		{"after unicode", "text == 'é' && metdata.x", schema, 1, 16, "unknown name metdata", true},
		{"syntax", "metadata.queue ==", schema, 1, 17, "unexpected token EOF", true},
		{"syntax without schema", "metadata.queue == 'a' &&", nil, 1, 24, "unexpected token EOF", false},
		{"unterminated string", "text == 'abc", schema, 1, 13, "literal not terminated", true},
		{"type mismatch", "n > 'a'", schema, 1, 3, "invalid operation: > (mismatched types int and string)", true},
		{"bad regexp", "text matches '('", schema, 1, 6, "error parsing regexp: missing closing ): `(`", true},
		{"reserved column is invisible", "_pipeline_id == 'id1'", schema, 1, 1, "unknown name _pipeline_id", true},
		{"helper names are not functions", "_pipeline_eq(1, 1)", schema, 1, 1, "unknown name _pipeline_eq", false},
		{"not boolean", "metadata.queue", schema, 1, 1, "where must be a boolean expression, got string", false},
		{"not boolean struct", "  metadata", schema, 1, 3, "where must be a boolean expression, got map", false},
		{"not boolean number", "n + 1", schema, 1, 1, "where must be a boolean expression, got int", false},
		{"nil", "nil", schema, 1, 1, "where must be a boolean expression, got nil", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CompilePredicateFor("where", tc.src, tc.schema)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			if e.Line != tc.line || e.Column != tc.column || e.Msg != tc.msg {
				t.Errorf("got %d:%d %q, want %d:%d %q", e.Line, e.Column, e.Msg, tc.line, tc.column, tc.msg)
			}
			if tc.exprAgrees {
				line, col := exprPosition(t, tc.src, schema)
				if line != e.Line || col != e.Column {
					t.Errorf("expr says %d:%d, Error says %d:%d", line, col, e.Line, e.Column)
				}
			}
		})
	}
}

func TestCompileWithoutSchema(t *testing.T) {
	// A typo passes the syntax check, and fails against the batch's schema.
	p, err := CompilePredicate("metadata.queue == 'retention'", nil)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	rec := sampleBatch(t)
	mask, err := p.Eval(rec)
	if err != nil {
		t.Fatalf("eval: %v", err)
	}
	if got, want := rowsOf(mask), []int{1, 6, 8}; !reflect.DeepEqual(got, want) {
		t.Errorf("rows %v, want %v", got, want)
	}

	typo, err := CompilePredicate("metdata.queue == 'retention'", nil)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	_, err = typo.Eval(rec)
	var e *Error
	if !errors.As(err, &e) || e.Msg != "unknown name metdata" {
		t.Errorf("eval error %v, want unknown name metdata", err)
	}
}

func TestSchemaChange(t *testing.T) {
	p, err := CompilePredicate("metadata.queue == 'retention' && n > 1", sampleSchema())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		schema  *arrow.Schema
		rows    []string
		want    []int
		wantErr string
	}{
		{
			name: "columns reordered",
			schema: arrow.NewSchema([]arrow.Field{
				{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
				{Name: "metadata", Nullable: true, Type: arrow.StructOf(str("queue"))},
			}, nil),
			rows: []string{`{"n":2,"metadata":{"queue":"retention"}}`, `{"n":1,"metadata":{"queue":"retention"}}`},
			want: []int{1},
		},
		{
			name: "int32 instead of int64",
			schema: arrow.NewSchema([]arrow.Field{
				{Name: "metadata", Nullable: true, Type: arrow.StructOf(str("queue"))},
				{Name: "n", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
			}, nil),
			rows: []string{`{"n":5,"metadata":{"queue":"retention"}}`, `{"n":5,"metadata":{"queue":"other"}}`},
			want: []int{1},
		},
		{
			name: "field gone",
			schema: arrow.NewSchema([]arrow.Field{
				{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
			}, nil),
			rows:    []string{`{"n":2}`},
			wantErr: "unknown name metadata",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mask, err := p.Eval(batch(t, tc.schema, tc.rows))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := rowsOf(mask); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("rows %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRowErrors(t *testing.T) {
	rec := batch(t, sampleSchema(), []string{
		`{"n":4,"payload":"{\"k\":2}"}`,
		`{"n":4,"payload":"{\"k\":\"text\"}"}`,
		`{"n":4,"payload":"{\"k\":\"text\"}","flag":true}`,
	})
	tests := []struct {
		name    string
		src     string
		row     int
		message string
	}{
		{"type error in raw json", "payload.k > 1", 2, `row 2: "payload.k > 1": invalid operation: string > int`},
		{"non-bool condition", "payload.k && true", 1, `row 1: "payload.k && true": expected bool, got int`},
		{"modulo by zero", "n % (n - 4) == 0", 1, `row 1: "n % (n - 4) == 0": runtime error: integer divide by zero`},
		{"only rows the left side selects", "flag && payload.k > 1", 3, `row 3: "flag && payload.k > 1": invalid operation: string > int`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, force := range []bool{false, true} {
				p, err := compilePredicate("where", tc.src, rec.Schema(), force)
				if err != nil {
					t.Fatal(err)
				}
				_, err = p.Eval(rec)
				var re *RowError
				if !errors.As(err, &re) {
					t.Fatalf("fallback only %v: error %v (%T), want *RowError", force, err, err)
				}
				if re.Row != tc.row || err.Error() != tc.message {
					t.Errorf("fallback only %v: row %d %q, want row %d %q", force, re.Row, err.Error(), tc.row, tc.message)
				}
			}
		})
	}
}

func TestFilter(t *testing.T) {
	rec := sampleBatch(t)
	schema := rec.Schema()
	tests := []struct {
		name    string
		src     string
		wantIDs []string
		sameRec bool
	}{
		{"all rows", "true", []string{"id1", "id2", "id3", "id4", "id5", "id6", "id7", "id8"}, true},
		{"no rows", "n > 100", []string{}, false},
		{"scattered", "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.8", []string{"id1", "id8"}, false},
		{"scattered ints", "n >= 2 && n <= 3", []string{"id1", "id5", "id6"}, false},
		{"one run", "n >= 2 && n <= 10 && x > 1.5", []string{"id6", "id7"}, false},
		{"fallback", "len(tags) > 1", []string{"id1", "id7"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := CompilePredicate(tc.src, schema)
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Filter(rec)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Release()
			if (out == rec) != tc.sameRec {
				t.Errorf("result is the input batch: %v, want %v", out == rec, tc.sameRec)
			}
			if !out.Schema().Equal(schema) || out.NumCols() != rec.NumCols() {
				t.Fatalf("schema changed: %v", out.Schema())
			}
			if got := column(t, out, "_pipeline_id"); !reflect.DeepEqual(got, tc.wantIDs) {
				t.Errorf("ids %v, want %v", got, tc.wantIDs)
			}
			// The nested columns come along with the rows.
			again, err := p.Eval(out)
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range again {
				if !m {
					t.Errorf("row %d of the result does not match the predicate", i+1)
				}
			}
		})
	}
}

func TestFilterSlicedBatch(t *testing.T) {
	rec := sampleBatch(t)
	sliced := rec.NewSlice(2, 8) // rows 3..8: offsets inside every array
	defer sliced.Release()
	p, err := CompilePredicate("classifications.churn_risk.label == 'High' || metadata.queue == nil", rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Filter(sliced)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if got, want := column(t, out, "_pipeline_id"), []string{"id3", "id4", "id6", "id8"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ids %v, want %v", got, want)
	}
}

func TestConcurrentFilter(t *testing.T) {
	rec := sampleBatch(t)
	p, err := CompilePredicate("classifications.churn_risk.label == 'High' && len(text) > 20", rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				mask, err := p.Eval(rec)
				if err != nil {
					errs <- err
					return
				}
				if got := fmt.Sprint(rowsOf(mask)); got != "[1 6]" {
					errs <- fmt.Errorf("rows %s", got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNilPredicate(t *testing.T) {
	var p *Predicate
	if _, err := p.Filter(sampleBatch(t)); err == nil || !strings.Contains(err.Error(), "nil predicate") {
		t.Errorf("error %v, want nil predicate", err)
	}
}
