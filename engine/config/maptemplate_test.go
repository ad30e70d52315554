package config

import (
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
)

func TestMapTemplateAttributes(t *testing.T) {
	src := `
source "file" "calls" {
  path = "x"
}
sink "webhook" "crm" {
  inputs  = [source.calls]
  url     = "http://x"
  headers = {
    "X-Customer" = "{{ metadata.customer_id }}"
    X-Team       = "retention"
  }
}
`
	p, diags := LoadBytes([]byte(src), "t.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	info := sdk.Info{Kind: sdk.KindSink, Type: "webhook", Config: []sdk.Attribute{
		{Name: "url", Type: sdk.String, Required: true, Template: true},
		{Name: "headers", Type: sdk.MapOf(sdk.String), Template: true},
	}}
	cfg, diags := DecodePluginBody(p.Sinks[0].Body, info, p.Sinks[0].EvalCtx)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if len(cfg.Templates) != 1 {
		t.Fatalf("templates %+v, want only headers.X-Customer", cfg.Templates)
	}
	tpl := cfg.Templates[0]
	if tpl.Name != "headers.X-Customer" || tpl.Src != "{{ metadata.customer_id }}" {
		t.Fatalf("got %+v", tpl)
	}
	// The range is the value's, so compile errors point inside it.
	if tpl.Range.Start.Line != 9 || tpl.Range.Start.Column != 20 {
		t.Fatalf("range %v, want t.hcl:9:20", tpl.Range)
	}
}

func TestNestedBlockAttribute(t *testing.T) {
	src := `
source "file" "calls" {
  path = "x"
}
sink "webhook" "crm" {
  inputs = [source.calls]
  url    = "http://x"
  retry {
    max_attempts = 8
    initial      = "5s"
  }
}
sink "webhook" "other" {
  inputs = [source.calls]
  url    = "http://y"
  retry {
    max_attempt = 8
  }
}
`
	p, diags := LoadBytes([]byte(src), "t.hcl")
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	info := sdk.Info{Kind: sdk.KindSink, Type: "webhook", Config: []sdk.Attribute{
		{Name: "url", Type: sdk.String, Required: true},
		{Name: "retry", Nested: []sdk.Attribute{
			{Name: "max_attempts", Type: sdk.Number},
			{Name: "initial", Type: sdk.String, Default: "1s"},
			{Name: "schedule", Type: sdk.ListOf(sdk.String)},
		}},
	}}
	cfg, diags := DecodePluginBody(p.Sinks[0].Body, info, p.Sinks[0].EvalCtx)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if got := string(cfg.JSON); got != `{"retry":{"initial":"5s","max_attempts":8,"schedule":null},"url":"http://x"}` {
		t.Fatalf("json %s", got)
	}
	_, diags = DecodePluginBody(p.Sinks[1].Body, info, p.Sinks[1].EvalCtx)
	if !diags.HasErrors() || CompactDiagnostic(diags[0]) != `t.hcl:17:5: error: Unsupported argument: An argument named "max_attempt" is not expected here. Did you mean "max_attempts"?` {
		t.Fatalf("diags %v", diags)
	}
}
