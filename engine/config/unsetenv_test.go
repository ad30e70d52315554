package config

import (
	"slices"
	"strings"
	"testing"
)

// TestBlockUnsetEnv: with UnsetEnvEmpty each block names the env()
// variables it read as "" because they are not set, once its body is
// decoded; a set variable, one with a default and another block's are not
// its own, and variables still resolve as without it.
func TestBlockUnsetEnv(t *testing.T) {
	src := `source "file" "s" { path = env("SET") }
sink "webhook" "a" {
  inputs = [source.s]
  url    = env("URL_UNSET", "https://x")
  secret = env("SECRET_UNSET")
  headers = { "X-A" = env("SECRET_UNSET"), "X-B" = env("OTHER_UNSET") }
}
sink "webhook" "b" {
  inputs = [source.s]
  url    = "https://y"
}
`
	lookup := func(name string) (string, bool) { return "v", name == "SET" }
	for _, empty := range []bool{true, false} {
		l := &Loader{LookupEnv: lookup, UnsetEnvEmpty: empty}
		p, diags := l.LoadBytes([]byte(src), "t.hcl")
		if diags.HasErrors() {
			t.Fatal(compact(diags))
		}
		for i, s := range p.Sinks {
			if _, d := DecodePluginBody(s.Body, testInfos[1], s.EvalCtx); d.HasErrors() != (!empty && i == 0) {
				t.Fatalf("UnsetEnvEmpty %v, sink %s: %s", empty, s.Name, compact(d))
			}
		}
		want := []string{"SECRET_UNSET", "OTHER_UNSET"}
		if !empty {
			want = nil
		}
		if got := p.Sinks[0].UnsetEnv(); !slices.Equal(got, want) {
			t.Errorf("UnsetEnvEmpty %v: sink a read %v unset, want %v", empty, got, want)
		}
		if got := p.Sinks[1].UnsetEnv(); got != nil {
			t.Errorf("sink b read %v unset, want none", got)
		}
		if got := p.Sources[0].UnsetEnv(); got != nil {
			t.Errorf("the source read %v unset, want none", got)
		}
	}

	// A reference is still an unknown variable, not "variables not allowed".
	l := &Loader{LookupEnv: lookup, UnsetEnvEmpty: true}
	p, _ := l.LoadBytes([]byte(`source "file" "s" { path = nope }
sink "webhook" "k" { inputs = [source.s] }`), "t.hcl")
	_, d := DecodePluginBody(p.Sources[0].Body, testInfos[0], p.Sources[0].EvalCtx)
	if !strings.Contains(compact(d), "Unknown variable") {
		t.Errorf("a reference: %s", compact(d))
	}
}
