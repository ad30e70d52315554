package run

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipelinehq/pipeline/engine/config"
)

// TestNonIncrementalWalksEveryStage: a sink with incremental = false reads
// its sources from the start whatever stages lie between (filters,
// transforms, transform plugins), and such a source shared with an
// incremental sink is an error however the two reach it.
func TestNonIncrementalWalksEveryStage(t *testing.T) {
	const src = `
source "file" "calls" {
  path = "calls.jsonl"
}
source "file" "other" {
  path = "other.jsonl"
}
`
	tests := []struct {
		name   string
		stages string
		// full is the input of the sink with incremental = false; inc, when
		// set, that of an incremental sink beside it.
		full, inc string
		want      string // the sources read from the start, comma-separated
		err       string // the error, "" for none
	}{
		{name: "filter", stages: `filter "f" {
  inputs = [source.calls]
  where  = "true"
}`, full: "filter.f", want: "calls"},
		{name: "transform", stages: `transform "t" {
  inputs = [source.calls]
  set    = { x = "1" }
}`, full: "transform.t", want: "calls"},
		{name: "transform plugin", stages: `transform "http" "t" {
  inputs = [source.calls]
  url    = "http://model"
}`, full: "transform.t", want: "calls"},
		{name: "chained stages", stages: `transform "t" {
  inputs = [source.calls]
  set    = { x = "1" }
}
filter "f" {
  inputs = [transform.t, source.other]
  where  = "true"
}
transform "http" "u" {
  inputs = [filter.f]
  url    = "http://model"
}`, full: "transform.u", want: "calls,other"},
		{name: "a transform shared with an incremental sink", stages: `transform "t" {
  inputs = [source.calls]
  set    = { x = "1" }
}`, full: "transform.t", inc: "source.calls", want: "calls",
			err: `Incremental and full exports share a source: sink "file" "full" has incremental = false, so source "file" "calls" is read from its start every run; sink "file" "inc" reads it too`},
		{name: "an incremental sink behind a transform", stages: `transform "t" {
  inputs = [source.calls]
  set    = { x = "1" }
}`, full: "source.calls", inc: "transform.t", want: "calls",
			err: `Incremental and full exports share a source`},
		{name: "a transform plugin shared with an incremental sink", stages: `transform "http" "t" {
  inputs = [source.calls]
  url    = "http://model"
}`, full: "transform.t", inc: "transform.t", want: "calls",
			err: `Incremental and full exports share a source`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hcl := src + tt.stages + `
sink "file" "full" {
  inputs      = [` + tt.full + `]
  path        = "full.jsonl"
  incremental = false
}
`
			if tt.inc != "" {
				hcl += `sink "file" "inc" {
  inputs = [` + tt.inc + `]
  path   = "inc.jsonl"
}
`
			}
			path := filepath.Join(t.TempDir(), "p.hcl")
			if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
				t.Fatal(err)
			}
			p, diags := config.Load(path)
			if diags.HasErrors() {
				t.Fatalf("load: %s", diags.Error())
			}
			fromStart, diags := nonIncremental(p)
			var got []string
			for _, s := range p.Sources {
				if fromStart[s.Name] {
					got = append(got, s.Name)
				}
			}
			if strings.Join(got, ",") != tt.want {
				t.Errorf("read from the start: %v, want %s", got, tt.want)
			}
			switch {
			case tt.err == "" && len(diags) > 0:
				t.Errorf("unexpected diagnostics: %s", diags.Error())
			case tt.err != "" && (len(diags) != 1 || !diags.HasErrors()):
				t.Errorf("got %d diagnostics (%v), want one error holding %q", len(diags), diags, tt.err)
			case tt.err != "":
				if got := diags[0].Summary + ": " + diags[0].Detail; !strings.Contains(got, tt.err) {
					t.Errorf("error %q\nwant it to hold %q", got, tt.err)
				}
				if diags[0].Subject == nil || diags[0].Subject.Start.Line == 0 {
					t.Errorf("the error has no place: %v", diags[0].Subject)
				}
			}
		})
	}
}
