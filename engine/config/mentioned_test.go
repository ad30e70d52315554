package config

import (
	"fmt"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

func TestMentionedRange(t *testing.T) {
	src := `format = "xml"
bucket = ""
batch {
  rows = 0
}
`
	f, diags := hclsyntax.ParseConfig([]byte(src), "p.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	cases := []struct {
		msg  string
		want string // "line:col" of the subject, "" for none
	}{
		{`format: unknown format "xml": use "csv", …`, "1:10"},
		{`bucket must not be empty`, "2:10"},
		{`batch: rows must be a whole number of records, at least 1, not 0`, "4:10"},
		{`batch: interval "x" is not a duration`, "3:1"}, // the block: interval is not set
		{`the plugin cannot start`, ""},
		{`export: something`, ""},
		{``, ""},
	}
	for _, c := range cases {
		r := MentionedRange(f.Body, c.msg)
		got := ""
		if r != nil {
			got = fmt.Sprintf("%d:%d", r.Start.Line, r.Start.Column)
		}
		if got != c.want {
			t.Errorf("%q: subject at %q, want %q", c.msg, got, c.want)
		}
	}
}
