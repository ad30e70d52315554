package config

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// TestSampledSchemas checks expressions with engine/expr against sampled
// and complete source schemas: a field the sample lacks is a warning, one a
// complete schema lacks an error, and type errors stay errors either way.
func TestSampledSchemas(t *testing.T) {
	const sample = "the first 2000 lines of each of up to 16 files"
	sampled := sdk.SampledSchema(testSchema, sample)
	empty := sdk.SampledSchema(arrow.NewSchema(nil, nil), sample)
	schemas := map[string]*arrow.Schema{"calls": sampled, "crm": testSchema, "empty": empty, "other": sampled}

	tests := []struct {
		name   string
		source string // the source filter.f reads
		where  string
		when   string // sink.out's condition, "" for none
		text   string // sink.out's template, "" for none
		want   []string
	}{
		{
			name: "late field against a sample is a warning", source: "calls", where: "late == 'x'",
			want: []string{`pipelines/churn.hcl:6:13: warning: Field "late" is not in the sample of source "calls": The schema of source "calls" was inferred from a sample of its input (the first 2000 lines of each of up to 16 files), and no record in it has "late". Until records carry it, late reads as null (a comparison with it is false). Check the spelling if no record will ever have it.`},
		},
		{
			name: "late field against a complete schema is an error", source: "crm", where: "late == 'x'",
			want: []string{`pipelines/churn.hcl:6:13: error: Invalid filter expression: unknown name late`},
		},
		{
			name: "a struct child the sample lacks, with a suggestion", source: "calls", where: "metadata.queu == 'retention'",
			// At the name that is not there, where the compiler puts the
			// error against a complete schema (the next case).
			want: []string{`pipelines/churn.hcl:6:22: warning: Field "metadata.queu" is not in the sample of source "calls": The schema of source "calls" was inferred from a sample of its input (the first 2000 lines of each of up to 16 files), and no record in it has "metadata.queu". Until records carry it, metadata.queu reads as null (a comparison with it is false). Check the spelling if no record will ever have it. Did you mean "metadata.queue"?`},
		},
		{
			name: "a misspelt struct child of a complete schema is an error", source: "crm", where: "metadata.queu == 'retention'",
			want: []string{`pipelines/churn.hcl:6:22: error: Invalid filter expression`},
		},
		{
			name: "a type error against the known part of a sample is an error", source: "calls", where: "text.b == 'x'",
			want: []string{`error: Invalid filter expression`},
		},
		{
			name: "a known field is quiet", source: "calls", where: "classifications.churn_risk.confidence > 0.8 && metadata.queue == 'retention'",
		},
		{
			name: "an empty sample", source: "empty", where: "a == 'x' && b.c > 1",
			want: []string{
				`pipelines/churn.hcl:6:13: warning: Field "a" is not in the sample of source "empty": The schema of source "empty" was inferred from a sample of its input (the first 2000 lines of each of up to 16 files), and it held no records. Until records carry it, a reads as null (a comparison with it is false). Check the spelling if no record will ever have it.`,
				`pipelines/churn.hcl:6:25: warning: Field "b" is not in the sample of source "empty"`,
			},
		},
		{
			name: "sink conditions and templates downstream", source: "calls", where: "late == 'x'", when: "later != nil", text: "Risk {{ latest }} {{ text }}",
			want: []string{
				`pipelines/churn.hcl:6:13: warning: Field "late" is not in the sample of source "calls"`,
				`pipelines/churn.hcl:11:13: warning: Field "later" is not in the sample of source "calls"`,
				`pipelines/churn.hcl:12:21: warning: Field "latest" is not in the sample of source "calls"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := `
source "file" "` + tt.source + `" {
  path = "a"
}
filter "f" {
  inputs = [source.` + tt.source + `]
  where  = "` + tt.where + `"
}
sink "webhook" "out" {
  inputs = [filter.f]
  url    = "http://x"
`
			if tt.when != "" {
				src += `  when   = "` + tt.when + `"` + "\n"
			}
			if tt.text != "" {
				src += `  text   = "` + tt.text + `"` + "\n"
			}
			src += "}\n"
			// The where starts on line 6 once the leading newline is gone.
			p := loadString(t, strings.TrimPrefix(src, "\n"), nil)
			cfgs, diags := DecodePlugins(p, testInfos)
			if diags.HasErrors() {
				t.Fatal(compact(diags))
			}
			_, diags = CheckExpressions(p, CheckOptions{SchemaOf: func(name string) *arrow.Schema { return schemas[name] }, Configs: cfgs})
			got := strings.Split(strings.TrimSuffix(compact(diags), "\n"), "\n")
			if len(diags) == 0 {
				got = nil
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d diagnostics, want %d:\n%s", len(got), len(tt.want), compact(diags))
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("diagnostic %d:\n%s\nwant it to hold:\n%s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestSampledUnion: a node fed by a sampled and a complete source sees a
// sample, and the warning names only the sampled source.
func TestSampledUnion(t *testing.T) {
	p := loadString(t, `source "file" "calls" {
  path = "a"
}
source "file" "crm" {
  path = "b"
}
sink "webhook" "out" {
  inputs = [source.calls, source.crm]
  url    = "http://x"
  when   = "late == 1"
}
`, nil)
	schemas := map[string]*arrow.Schema{"calls": sdk.SampledSchema(testSchema, ""), "crm": testSchema}
	_, diags := CheckExpressions(p, CheckOptions{SchemaOf: func(name string) *arrow.Schema { return schemas[name] }})
	want := `pipelines/churn.hcl:10:13: warning: Field "late" is not in the sample of source "calls": The schema of source "calls" was inferred from a sample of its input, and no record in it has "late".`
	if got := compact(diags); !strings.HasPrefix(got, want) || len(diags) != 1 {
		t.Errorf("got:\n%swant:\n%s", got, want)
	}
}

func TestSampledSchemaMetadata(t *testing.T) {
	md := arrow.NewMetadata([]string{"k"}, []string{"v"})
	s := arrow.NewSchema([]arrow.Field{{Name: "a", Type: arrow.BinaryTypes.String}}, &md)
	if sdk.IsSampled(s) || sdk.IsSampled(nil) || sdk.SchemaSample(s) != "" {
		t.Fatal("an unmarked schema is sampled")
	}
	got := sdk.SampledSchema(s, "the first line")
	if !sdk.IsSampled(got) || sdk.SchemaSample(got) != "the first line" {
		t.Errorf("marked schema: %v", got.Metadata())
	}
	if v, _ := got.Metadata().GetValue("k"); v != "v" || got.NumFields() != 1 {
		t.Errorf("lost the schema's own metadata or fields: %v", got)
	}
	if again := sdk.SampledSchema(got, "more"); sdk.SchemaSample(again) != "more" || again.Metadata().Len() != 3 {
		t.Errorf("marking twice: %v", again.Metadata())
	}
}
