package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/engine/expr"
)

func TestRangeAt(t *testing.T) {
	tests := []struct {
		name      string
		value     string // the attribute as written after "where = "
		line, col int    // position inside the expression
		want      string // line:col-endcol in the file (line 3 holds the attribute)
	}{
		{"first character", `"abc"`, 1, 1, "3:13-14"},
		{"plain", `"a == b"`, 1, 6, "3:18-19"},
		{"end of string", `"a =="`, 1, 5, "3:17-17"},
		{"past the end is clamped", `"a =="`, 1, 50, "3:17-17"},
		{"column 0 is the first", `"abc"`, 1, 0, "3:13-14"},
		{"after an escaped quote", `"x == \"y\" && z"`, 1, 13, "3:27-28"},
		{"at an escaped quote", `"x == \"y\""`, 1, 6, "3:18-20"},
		{"after a unicode escape", `"'caf\u00e9' z"`, 1, 8, "3:25-26"},
		{"after a literal accent", `"'café' z"`, 1, 8, "3:20-21"},
		{"after $${", `"'$${x}' z"`, 1, 8, "3:21-22"},
		{"after %%{", `"'%%{x}' z"`, 1, 8, "3:21-22"},
		{"second line of an escaped newline", `"a\nbc"`, 2, 2, "3:17-18"},
		{"line past the end", `"a"`, 3, 1, "3:12-15"},
		{"heredoc", "<<EOT\nab\n  cd\nEOT", 2, 3, "5:3-4"},
		{"interpolation falls back to the whole string", `"${"a"} b"`, 1, 3, "3:12-22"},
		{"function call falls back", `env("X", "a b")`, 1, 1, "3:12-27"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "source \"file\" \"s\" {}\nfilter \"f\" {\n  where  = " + tt.value + "\n  inputs = [source.s]\n}\nsink \"x\" \"y\" {\n  inputs = [filter.f]\n}\n"
			p := loadString(t, src, map[string]string{"X": "1"})
			r := p.Filters[0].Where.RangeAt(p.Files, tt.line, tt.col)
			got := fmt.Sprintf("%d:%d-%d", r.Start.Line, r.Start.Column, r.End.Column)
			if got != tt.want {
				t.Errorf("got %s, want %s (value %q)", got, tt.want, p.Filters[0].Where.Src)
			}
			if r.Start.Byte > r.End.Byte || r.End.Byte > len(p.Files[r.Filename].Bytes) {
				t.Errorf("bad byte offsets %d-%d", r.Start.Byte, r.End.Byte)
			}
		})
	}
}

func field(name string, typ arrow.DataType) arrow.Field {
	return arrow.Field{Name: name, Type: typ, Nullable: true}
}

func TestUnionSchemas(t *testing.T) {
	str, num := arrow.BinaryTypes.String, arrow.PrimitiveTypes.Float64
	a := arrow.NewSchema([]arrow.Field{field("id", str), field("meta", arrow.StructOf(field("queue", str)))}, nil)
	b := arrow.NewSchema([]arrow.Field{field("meta", arrow.StructOf(field("channel", str))), field("score", num)}, nil)
	c := arrow.NewSchema([]arrow.Field{field("id", num)}, nil)
	d := arrow.NewSchema([]arrow.Field{field("meta", arrow.StructOf(field("queue", num)))}, nil)
	tests := []struct {
		name    string
		in      []*arrow.Schema
		want    string
		wantErr string
	}{
		{"one", []*arrow.Schema{a}, a.String(), ""},
		{"same", []*arrow.Schema{a, a}, a.String(), ""},
		{"structs merge", []*arrow.Schema{a, b}, arrow.NewSchema([]arrow.Field{
			field("id", str),
			field("meta", arrow.StructOf(field("queue", str), field("channel", str))),
			field("score", num),
		}, nil).String(), ""},
		// A conflict keeps the first type and is reported (the run's rule).
		{"conflict", []*arrow.Schema{a, c}, mustMerge(a, c), "id (utf8, then float64)"},
		{"nested conflict", []*arrow.Schema{a, d}, mustMerge(a, d), "meta.queue (utf8, then float64)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, conflicts := unionSchemas(tt.in)
			var msg string
			if len(conflicts) > 0 {
				msg = conflicts[0].String()
			}
			if msg != tt.wantErr || got.String() != tt.want {
				t.Errorf("got %v (conflicts %v), want %v (%q)", got, conflicts, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCheckExpressions(t *testing.T) {
	other := arrow.NewSchema([]arrow.Field{field("text", arrow.PrimitiveTypes.Int64)}, nil)
	src := `
source "file" "calls" {
  path = "a"
}
source "file" "numbers" {
  path = "b"
}
filter "high" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}
filter "mixed" {
  inputs = [source.calls, source.numbers]
  where  = "text == 'x'"
}
sink "webhook" "crm" {
  inputs = [filter.high]
  url    = "http://x"
  when   = "metadata.queue == 'retention'"
  text   = "{{ text }}"
}
sink "webhook" "all" {
  inputs = [filter.mixed]
  url    = "http://x"
}
`
	p := loadString(t, src, nil)
	cfgs, diags := DecodePlugins(p, testInfos)
	if diags.HasErrors() {
		t.Fatal(compact(diags))
	}
	schemaOf := func(name string) *arrow.Schema {
		if name == "numbers" {
			return other
		}
		return testSchema
	}
	var compiled []string
	compiler := Compiler{
		Predicate: func(src string, s *arrow.Schema) (*expr.Predicate, error) {
			compiled = append(compiled, fmt.Sprintf("predicate %q schema=%v", src, s != nil))
			return fakeCompiler.Predicate(src, s)
		},
		Template: func(src string, s *arrow.Schema) (*expr.Template, error) {
			compiled = append(compiled, fmt.Sprintf("template %q schema=%v", src, s != nil))
			return fakeCompiler.Template(src, s)
		},
	}
	c, diags := CheckExpressions(p, CheckOptions{SchemaOf: schemaOf, Configs: cfgs, Compiler: compiler})

	wantDiags := "pipelines/churn.hcl:13:27: warning: Inputs disagree on a field: The inputs of filter.mixed disagree on the type of text (utf8, then int64). Its expressions are checked against the first type, utf8, as the run reads them; records whose text has the other type fail the expressions that need utf8, and on_error decides what happens to them.\n"
	if got := compact(diags); got != wantDiags {
		t.Errorf("diagnostics:\n%swant:\n%s", got, wantDiags)
	}
	wantCompiled := []string{
		`predicate "classifications.churn_risk.confidence > 0.8" schema=true`,
		`predicate "text == 'x'" schema=true`,
		`predicate "metadata.queue == 'retention'" schema=true`,
		`template "{{ text }}" schema=true`,
	}
	if strings.Join(compiled, "\n") != strings.Join(wantCompiled, "\n") {
		t.Errorf("compiled:\n%s\nwant:\n%s", strings.Join(compiled, "\n"), strings.Join(wantCompiled, "\n"))
	}
	high, mixed := p.Node("filter.high").(*Filter), p.Node("filter.mixed").(*Filter)
	crm, all := p.Node("sink.crm").(*Sink), p.Node("sink.all").(*Sink)
	checks := []struct {
		name string
		ok   bool
	}{
		{"where compiled", c.Where[high] != nil && c.Where[mixed] != nil},
		{"when compiled", c.When[crm] != nil && c.When[all] == nil},
		{"template compiled", c.Templates[crm]["text"] != nil && c.Templates[all] == nil},
		{"filter passes its schema on", c.InputSchema[crm] == testSchema && c.InputSchema[high] == testSchema},
		{"conflicting inputs keep the first type", c.InputSchema[mixed] != nil && c.InputSchema[mixed].Field(c.InputSchema[mixed].FieldIndices("text")[0]).Type.ID() == arrow.STRING},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("%s: no", ch.name)
		}
	}
}

func TestCheckExpressionsErrors(t *testing.T) {
	p := loadString(t, `
source "file" "calls" {
  path = "a"
}
filter "f" {
  inputs = [source.calls]
  where  = "a == b"
}
sink "webhook" "crm" {
  inputs = [filter.f]
  when   = "x"
}
`, nil)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"expr error", &expr.Error{Line: 1, Column: 6, Msg: "unknown name b"},
			"pipelines/churn.hcl:7:18: error: Invalid filter expression: unknown name b\npipelines/churn.hcl:11:14: error: Invalid sink condition: unknown name b\n"},
		{"wrapped expr error", fmt.Errorf("compile: %w", &expr.Error{Line: 1, Column: 1, Msg: "bad"}),
			"pipelines/churn.hcl:7:13: error: Invalid filter expression: bad\npipelines/churn.hcl:11:13: error: Invalid sink condition: bad\n"},
		{"other error points at the string", errors.New("not implemented"),
			"pipelines/churn.hcl:7:12: error: Invalid filter expression: not implemented\npipelines/churn.hcl:11:12: error: Invalid sink condition: not implemented\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, diags := CheckExpressions(p, CheckOptions{Compiler: Compiler{
				Predicate: func(string, *arrow.Schema) (*expr.Predicate, error) { return nil, tt.err },
			}})
			if got := compact(diags); got != tt.want {
				t.Errorf("got:\n%swant:\n%s", got, tt.want)
			}
			if len(c.Where) != 0 || len(c.When) != 0 {
				t.Errorf("failed expressions are in Compiled: %+v", c)
			}
		})
	}
}

// TestRealCompiler checks a bad field name with engine/expr itself.
func TestRealCompiler(t *testing.T) {
	p := loadString(t, `
source "file" "calls" {
  path = "a"
}
filter "f" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8 && metadata.queu == 'retention'"
}
sink "webhook" "crm" {
  inputs = [filter.f]
}
`, nil)
	_, diags := CheckExpressions(p, CheckOptions{SchemaOf: func(string) *arrow.Schema { return testSchema }})
	if len(diags) != 1 {
		t.Fatalf("want one diagnostic, got:\n%s", compact(diags))
	}
	d := diags[0]
	if d.Summary != "Invalid filter expression" || d.Subject.Start.Line != 7 {
		t.Errorf("got %s", CompactDiagnostic(d))
	}
	// The string spans columns 12 to 88; queu starts at 70. Accept the
	// start of metadata.queu too.
	if col := d.Subject.Start.Column; col < 61 || col > 70 {
		t.Errorf("column %d is not at metadata.queu: %s", col, CompactDiagnostic(d))
	}
}

// mustMerge is a and b merged as the run merges them, as a string.
func mustMerge(a, b *arrow.Schema) string {
	m, _ := expr.MergeSchemas(a, b)
	return m.String()
}
