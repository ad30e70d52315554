package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

func TestTransformGraph(t *testing.T) {
	// Declared out of order: the filter reads a transform declared after it.
	p := loadString(t, `
source "file" "calls" { path = "a" }
filter "risky" {
  inputs = [transform.score]
  where  = "risk > 0.8"
}
transform "score" {
  inputs = [source.calls]
  set    = { risk = "0.9" }
}
transform "label" {
  inputs = [filter.risky, transform.score]
  set    = { band = "'high'" }
}
sink "webhook" "crm" {
  inputs = [transform.label]
  url    = "http://x"
}
`, nil)
	chains := func(paths [][]Node) []string {
		out := []string{}
		for _, chain := range paths {
			out = append(out, strings.Join(addrs(chain), " > "))
		}
		return out
	}
	score, label := p.Node("transform.score"), p.Node("transform.label")
	tests := []struct {
		name      string
		got, want []string
	}{
		{"stages in topological order", addrs(p.Stages), []string{"transform.score", "filter.risky", "transform.label"}},
		{"transforms", addrs(p.Transforms), []string{"transform.score", "transform.label"}},
		{"readers of a transform", addrs(p.Readers(score)), []string{"filter.risky", "transform.label"}},
		{"sources of a transform", addrs(p.SourcesOf(label)), []string{"source.calls"}},
		{"sinks of a source", addrs(p.SinksOf(p.Sources[0])), []string{"sink.crm"}},
		{"stage paths", chains(p.StagePaths(p.Sources[0], p.Sinks[0])), []string{
			"transform.score > filter.risky > transform.label", "transform.score > transform.label"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	if got := p.Paths(p.Sources[0], p.Sinks[0]); len(got) != 2 || len(got[0]) != 1 || len(got[1]) != 0 {
		t.Errorf("Paths (filters only) = %v", got)
	}
}

func TestTransformLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"undeclared transform, with a suggestion", `
transform "enrich" {
  inputs = [source.calls]
  set    = { a = "1" }
}
sink "webhook" "crm" {
  inputs = [transform.enrch]
  url    = "http://x"
}`, `Reference to undeclared transform: There is no transform named "enrch". Did you mean transform.enrich?`},
		{"same name under another kind", `
filter "enrich" {
  inputs = [source.calls]
  where  = "true"
}
sink "webhook" "crm" {
  inputs = [transform.enrich]
  url    = "http://x"
}`, `Did you mean filter.enrich?`},
		{"cycle", `
transform "a" {
  inputs = [transform.b]
  set    = { x = "1" }
}
transform "b" {
  inputs = [transform.a]
  set    = { y = "1" }
}
sink "webhook" "crm" {
  inputs = [transform.a]
  url    = "http://x"
}`, `Cycle among filters and transforms: Records would go round forever: transform.b → transform.a → transform.b.`},
		{"empty transform", `
transform "a" {
  inputs = [source.calls]
}
sink "webhook" "crm" {
  inputs = [transform.a]
  url    = "http://x"
}`, `Empty transform`},
		{"set is not an object", `
transform "a" {
  inputs = [source.calls]
  set    = ["x"]
}
sink "webhook" "crm" {
  inputs = [transform.a]
  url    = "http://x"
}`, `object required`},
		{"set value is not a string", `
transform "a" {
  inputs = [source.calls]
  set    = { x = 1 }
}
sink "webhook" "crm" {
  inputs = [transform.a]
  url    = "http://x"
}`, `The value of x in set is an expression in quotes`},
		{"duplicate target", `
transform "a" {
  inputs = [source.calls]
  set    = { x = "1", "x" = "2" }
}
sink "webhook" "crm" {
  inputs = [transform.a]
  url    = "http://x"
}`, `Duplicate field`},
		{"unused transform", `
transform "a" {
  inputs = [source.calls]
  drop   = ["text"]
}
sink "webhook" "crm" {
  inputs = [source.calls]
  url    = "http://x"
}`, `warning: Unused transform`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := `source "file" "calls" { path = "a" }` + tc.body
			_, diags := LoadBytes([]byte(src), "p.hcl")
			if got := compact(diags); !strings.Contains(got, tc.want) {
				t.Errorf("diagnostics:\n%s\nwant one containing %q", got, tc.want)
			}
		})
	}
}

func TestTransformSampledSchema(t *testing.T) {
	sampled := sdk.SampledSchema(testSchema, "a sample")
	p := loadString(t, `
source "file" "calls" { path = "a" }
transform "t" {
  inputs = [source.calls]
  set    = { copy = "late", n = "text * 2" }
  drop   = ["gone"]
}
sink "webhook" "crm" {
  inputs = [transform.t]
  when   = "copy == nil"
  url    = "http://x"
}
`, nil)
	c, diags := CheckExpressions(p, CheckOptions{SchemaOf: func(string) *arrow.Schema { return sampled }})
	got := compact(diags)
	for _, want := range []string{
		`pipelines/churn.hcl:5:22: warning: Field "late" is not in the sample of source "calls"`,
		`pipelines/churn.hcl:5:39: error: Invalid computed field: invalid operation`,
		`pipelines/churn.hcl:6:13: warning: Field "gone" is not in the sample: there is no field gone to drop.`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diagnostics:\n%s\nwant one containing %q", got, want)
		}
	}
	if c.Transforms[p.Transforms[0]] != nil {
		t.Error("a transform with an error was compiled")
	}

	// Without the type error it compiles; the field the sample lacks is no
	// column of the output, only the computed copy of it is.
	p = loadString(t, `
source "file" "calls" { path = "a" }
transform "t" {
  inputs = [source.calls]
  set    = { copy = "late" }
}
sink "webhook" "crm" {
  inputs = [transform.t]
  url    = "http://x"
}
`, nil)
	c, diags = CheckExpressions(p, CheckOptions{SchemaOf: func(string) *arrow.Schema { return sampled }})
	if diags.HasErrors() {
		t.Fatalf("diagnostics:\n%s", compact(diags))
	}
	out := c.OutputSchema[p.Transforms[0]]
	if out == nil || len(out.FieldIndices("late")) != 0 || len(out.FieldIndices("copy")) != 1 || !sdk.IsSampled(out) {
		t.Errorf("output schema %v", out)
	}
}
