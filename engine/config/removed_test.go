package config

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// TestRemovedFieldsDownstream: a field a transform removed (drop, not in
// keep, renamed away) and read downstream is an error at the field's name
// naming the transform, against a sampled schema as against a complete
// one; a field the sample merely lacks stays a warning, and a removed field
// set again, or carried by another input, is no error.
func TestRemovedFieldsDownstream(t *testing.T) {
	tests := []struct {
		name string
		body string   // after source "file" "calls" and source "file" "other"
		want []string // diagnostics (substrings, in order); none when empty
	}{
		{
			name: "dropped, read by a filter",
			body: `
transform "slim" {
  inputs = [source.calls]
  drop   = ["text"]
}
filter "f" {
  inputs = [transform.slim]
  where  = "text contains 'cancel' && late == nil"
}
sink "webhook" "out" {
  inputs = [filter.f]
  url    = "http://x"
}`,
			want: []string{
				`p.hcl:9:13: error: Invalid filter expression: field "text" was dropped by transform "slim" (p.hcl:5), so no record that reaches filter.f has it. Read it before that transform, or take it out of its drop.`,
				`p.hcl:9:39: warning: Field "late" is not in the sample`,
			},
		},
		{
			name: "a nested field dropped, read by a when; its sibling is there",
			body: `
transform "slim" {
  inputs = [source.calls]
  drop   = ["metadata.customer_id"]
}
sink "webhook" "out" {
  inputs = [transform.slim]
  url    = "http://x"
  when   = "metadata.queue == 'x' && metadata.customer_id != nil"
}`,
			want: []string{`p.hcl:10:47: error: Invalid sink condition: field "metadata.customer_id" was dropped by transform "slim" (p.hcl:5)`},
		},
		{
			name: "left out by keep, read by a template, through a filter",
			body: `
transform "slim" {
  inputs = [source.calls]
  keep   = ["row_id"]
}
filter "f" {
  inputs = [transform.slim]
  where  = "row_id != ''"
}
sink "webhook" "out" {
  inputs = [filter.f]
  url    = "http://x"
  text   = "Call {{ row_id }}: {{ metadata.queue }}"
}`,
			want: []string{`p.hcl:14:35: error: Invalid template: field "metadata" was left out by the keep of transform "slim" (p.hcl:5), so no record that reaches sink.out has it. Read it before that transform, or add it to its keep.`},
		},
		{
			name: "renamed away, read by a later transform",
			body: `
transform "a" {
  inputs = [source.calls]
  rename = { text = "body" }
}
transform "b" {
  inputs = [transform.a]
  set    = { short = "len(text) < 10" }
  drop   = ["text"]
}
sink "webhook" "out" {
  inputs = [transform.b]
  url    = "http://x"
}`,
			want: []string{
				`p.hcl:9:27: error: Invalid computed field: field "text" was renamed to "body" by transform "a" (p.hcl:5), so no record that reaches transform.b has it. Read it by its new name, "body".`,
				`p.hcl:10:13: error: Invalid transform: field "text" was renamed to "body" by transform "a" (p.hcl:5)`,
			},
		},
		{
			name: "removed two transforms up",
			body: `
transform "a" {
  inputs = [source.calls]
  drop   = ["text"]
}
transform "b" {
  inputs = [transform.a]
  set    = { x = "1" }
}
sink "webhook" "out" {
  inputs = [transform.b]
  url    = "http://x"
  when   = "text != nil"
}`,
			want: []string{`p.hcl:14:13: error: Invalid sink condition: field "text" was dropped by transform "a" (p.hcl:5)`},
		},
		{
			name: "dropped, then set again",
			body: `
transform "a" {
  inputs = [source.calls]
  drop   = ["text"]
}
transform "b" {
  inputs = [transform.a]
  set    = { text = "'none'" }
}
sink "webhook" "out" {
  inputs = [transform.b]
  url    = "http://x"
  when   = "text != nil"
}`,
		},
		{
			name: "dropped on one input, carried by the other",
			body: `
transform "a" {
  inputs = [source.calls]
  drop   = ["text"]
}
sink "webhook" "out" {
  inputs = [transform.a, source.other]
  url    = "http://x"
  when   = "text != nil"
}`,
		},
		{
			name: "dropped on both inputs",
			body: `
transform "a" {
  inputs = [source.calls]
  drop   = ["text"]
}
transform "b" {
  inputs = [source.other]
  keep   = ["row_id"]
}
sink "webhook" "out" {
  inputs = [transform.a, transform.b]
  url    = "http://x"
  when   = "text != nil"
}`,
			want: []string{`p.hcl:14:13: error: Invalid sink condition: field "text" was dropped by transform "a" (p.hcl:5)`},
		},
	}
	for _, tt := range tests {
		for _, sampled := range []bool{false, true} {
			name := tt.name + "/complete"
			schema := testSchema
			if sampled {
				name = tt.name + "/sampled"
				schema = sdk.SampledSchema(testSchema, "a sample")
			}
			t.Run(name, func(t *testing.T) {
				src := "source \"file\" \"calls\" { path = \"a\" }\nsource \"file\" \"other\" { path = \"b\" }" + tt.body + "\n"
				p, diags := LoadBytes([]byte(src), "p.hcl")
				if diags.HasErrors() {
					t.Fatal(compact(diags))
				}
				cfgs, d := DecodePlugins(p, testInfos)
				if d.HasErrors() {
					t.Fatal(compact(d))
				}
				_, diags = CheckExpressions(p, CheckOptions{SchemaOf: func(string) *arrow.Schema { return schema }, Configs: cfgs})
				var got []string
				for _, d := range SortDiagnostics(diags) {
					got = append(got, CompactDiagnostic(d))
				}
				want := tt.want
				if !sampled {
					// Against a complete schema a missing field is an error of the compiler's.
					want = nil
					for _, w := range tt.want {
						if !strings.Contains(w, "not in the sample") {
							want = append(want, w)
						}
					}
					if strings.Contains(tt.body, "late ==") {
						want = append(want, "p.hcl:9:39: error: Invalid filter expression: unknown name late")
					}
				}
				if len(got) != len(want) {
					t.Fatalf("got %d diagnostics, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
				}
				for i := range want {
					if !strings.HasPrefix(got[i], want[i]) {
						t.Errorf("diagnostic %d:\n%s\nwant it to start with\n%s", i, got[i], want[i])
					}
				}
			})
		}
	}
}
