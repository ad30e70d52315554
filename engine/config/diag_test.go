package config

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestWriteDiagnostics(t *testing.T) {
	src := "source \"file\" \"calls\" {\n\tpath = \"a\"\n}\nfilter \"f\" {\n  inputs = [source.cals]\n  where  = \"x\"\n}\n"
	l := &Loader{}
	p, diags := l.LoadBytes([]byte(src), "churn.hcl")
	tests := []struct {
		name  string
		diags hcl.Diagnostics
		color bool
		want  string
	}{
		{
			name:  "caret under the subject",
			diags: diags[:1],
			want: "Error: Reference to undeclared source\n\n" +
				"  on churn.hcl:5:13, in filter \"f\":\n" +
				"   5:   inputs = [source.cals]\n" +
				"                  ^^^^^^^^^^^\n\n" +
				"There is no source named \"cals\". Did you mean source.calls?\n\n",
		},
		{
			name: "tabs kept so the caret lines up",
			diags: hcl.Diagnostics{{Severity: hcl.DiagWarning, Summary: "S", Detail: "D",
				Subject: &hcl.Range{Filename: "churn.hcl", Start: hcl.Pos{Line: 2, Column: 2, Byte: 25}, End: hcl.Pos{Line: 2, Column: 6, Byte: 29}}}},
			want: "Warning: S\n\n  on churn.hcl:2:2, in source \"file\" \"calls\":\n   2: \tpath = \"a\"\n      \t^^^^\n\nD\n\n",
		},
		{
			name:  "no subject",
			diags: hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "No pipeline file", Detail: "Name one."}},
			want:  "Error: No pipeline file\n\nName one.\n\n",
		},
		{
			name: "file not parsed",
			diags: hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "S",
				Subject: &hcl.Range{Filename: "other.hcl", Start: hcl.Pos{Line: 3, Column: 1, Byte: 40}, End: hcl.Pos{Line: 3, Column: 2, Byte: 41}}}},
			want: "Error: S\n\n  on other.hcl:3:1:\n  (source code not available)\n\n",
		},
		{
			name: "range past the end of the file",
			diags: hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "S",
				Subject: &hcl.Range{Filename: "churn.hcl", Start: hcl.Pos{Line: 99, Column: 1, Byte: 9999}, End: hcl.Pos{Line: 99, Column: 1, Byte: 9999}}}},
			want: "Error: S\n\n  on churn.hcl:99:1:\n\n",
		},
		{
			name:  "color highlights instead",
			diags: diags[:1],
			color: true,
			want:  "\x1b[31mError\x1b[0m: Reference to undeclared source\n\n  on churn.hcl:5:13, in filter \"f\":\n   5:   inputs = [\x1b[1;4msource.cals\x1b[0m]\n\nThere is no source named \"cals\". Did you mean source.calls?\n\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteDiagnostics(&buf, p.Files, tt.diags, tt.color); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Errorf("got:\n%q\nwant:\n%q", buf.String(), tt.want)
			}
		})
	}
}

func TestSortDiagnostics(t *testing.T) {
	at := func(file string, b int) *hcl.Range {
		return &hcl.Range{Filename: file, Start: hcl.Pos{Byte: b}}
	}
	in := hcl.Diagnostics{
		{Summary: "b2", Subject: at("b", 2)},
		{Summary: "a9", Subject: at("a", 9)},
		{Summary: "none"},
		{Summary: "b1", Subject: at("b", 1)},
		{Summary: "a9 again", Subject: at("a", 9)},
	}
	var got []string
	for _, d := range SortDiagnostics(in) {
		got = append(got, d.Summary)
	}
	if want := "none,a9,a9 again,b1,b2"; strings.Join(got, ",") != want {
		t.Errorf("got %v, want %s", got, want)
	}
	if in[0].Summary != "b2" {
		t.Error("SortDiagnostics changed its argument")
	}
}

func TestCompactDiagnostic(t *testing.T) {
	tests := []struct {
		d    *hcl.Diagnostic
		want string
	}{
		{&hcl.Diagnostic{Severity: hcl.DiagError, Summary: "S", Detail: "line one\n  line two",
			Subject: &hcl.Range{Filename: "p.hcl", Start: hcl.Pos{Line: 7, Column: 12}}},
			"p.hcl:7:12: error: S: line one line two"},
		{&hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: "S"}, "warning: S"},
	}
	for _, tt := range tests {
		if got := CompactDiagnostic(tt.d); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}
