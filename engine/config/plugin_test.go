package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/pipelinehq/pipeline/sdk"
)

func TestDecodePluginBody(t *testing.T) {
	allTypes := sdk.Info{
		Kind: sdk.KindSink, Type: "all", Version: "0.1.0",
		Config: []sdk.Attribute{
			{Name: "s", Type: sdk.String},
			{Name: "n", Type: sdk.Number},
			{Name: "b", Type: sdk.Bool},
			{Name: "l", Type: sdk.ListOf(sdk.String)},
			{Name: "m", Type: sdk.MapOf(sdk.Number)},
			{Name: "any", Type: sdk.Any},
			{Name: "def_s", Type: sdk.String, Default: "jsonl"},
			{Name: "def_n", Type: sdk.Number, Default: 30},
			{Name: "def_l", Type: sdk.ListOf(sdk.Number), Default: []int{1, 2}},
			{Name: "def_any", Type: sdk.Any, Default: map[string]any{"k": true}},
			{Name: "text", Type: sdk.String, Template: true},
			{Name: "subject", Type: sdk.String, Template: true},
		},
	}
	tests := []struct {
		name      string
		info      sdk.Info
		body      string
		wantJSON  string
		wantTmpl  []string // name=src@line:col
		wantDiags string
	}{
		{
			name:     "types, defaults, absent attributes left out",
			info:     allTypes,
			body:     "s = \"x\"\nn = 1.5e3\nb = true\nl = [\"a\", \"2\"]\nm = { a = 1 }\nany = { x = [1, \"y\"] }\ndef_n = 7\n",
			wantJSON: `{"any":{"x":[1,"y"]},"b":true,"def_any":{"k":true},"def_l":[1,2],"def_n":7,"def_s":"jsonl","l":["a","2"],"m":{"a":1},"n":1500,"s":"x"}`,
		},
		{
			name:     "strings holding numbers and bools convert",
			info:     allTypes,
			body:     "n = \"16\"\nb = \"true\"\n",
			wantJSON: `{"b":true,"def_any":{"k":true},"def_l":[1,2],"def_n":30,"def_s":"jsonl","n":16}`,
		},
		{
			name: "numbers and bools are not strings",
			info: allTypes,
			body: "s = 12\nl = [\"a\", true]\ntext = 1.5\n",
			wantDiags: strings.Join([]string{
				`t.hcl:1:5: error: Incorrect attribute value type: Inappropriate value for attribute "s": string required, not a number. If it is meant as text, put it in quotes: "12".`,
				`t.hcl:2:11: error: Incorrect attribute value type: Inappropriate value for l[1]: string required, not a bool. If it is meant as text, put it in quotes: "true".`,
				`t.hcl:3:8: error: Incorrect attribute value type: Inappropriate value for attribute "text": string required, not a number. If it is meant as text, put it in quotes: "1.5".`,
			}, "\n"),
		},
		{
			name: "every error of the block at once",
			info: webhookLike,
			body: strings.Join([]string{
				`bogus       = 1`,
				`timeout     = "ten"`,
				`rate_limit  = 3`,
				`concurrency = "many"`,
				`headers     = { X-Id = 7 }`,
				`retry {`,
				`  schedule = ["0s", "bad", 5]`,
				`  max      = "1h"`,
				`}`,
				``,
			}, "\n"),
			wantDiags: strings.Join([]string{
				`t.hcl:1:1: error: Missing required argument: The argument "url" is required, but no definition was found.`,
				`t.hcl:1:1: error: Unsupported argument: An argument named "bogus" is not expected here.`,
				`t.hcl:2:15: error: Invalid duration: timeout = "ten" is not a duration: a duration is a number and a unit, such as "500ms", "10s", "5m" or "2h30m".`,
				`t.hcl:3:15: error: Incorrect attribute value type: Inappropriate value for attribute "rate_limit": string required, not a number. If it is meant as text, put it in quotes: "3".`,
				`t.hcl:4:15: error: Incorrect attribute value type: Inappropriate value for attribute "concurrency": a number is required.`,
				`t.hcl:5:24: error: Incorrect attribute value type: Inappropriate value for headers["X-Id"]: string required, not a number. If it is meant as text, put it in quotes: "7".`,
				`t.hcl:7:21: error: Invalid duration: retry.schedule[1] = "bad" is not a duration: a duration is a number and a unit, such as "500ms", "10s", "5m" or "2h30m".`,
				`t.hcl:7:28: error: Incorrect attribute value type: Inappropriate value for retry.schedule[2]: string holding a duration, such as "10s", required, not a number. If it is meant as text, put it in quotes: "5".`,
			}, "\n"),
		},
		{
			name:     "good durations",
			info:     webhookLike,
			body:     "url = \"http://x\"\nretry {\n  schedule = [\"0s\", \"1m30s\"]\n}\n",
			wantJSON: `{"concurrency":16,"retry":{"max":null,"schedule":["0s","1m30s"]},"timeout":"10s","url":"http://x"}`,
		},
		{
			name:     "big numbers stay exact",
			info:     allTypes,
			body:     "n = 12345678901234567890\n",
			wantJSON: `{"def_any":{"k":true},"def_l":[1,2],"def_n":30,"def_s":"jsonl","n":12345678901234567890}`,
		},
		{
			name:     "templates",
			info:     allTypes,
			body:     "text = \"Risk {{ x }}\"\nsubject = \"no placeholder\"\n",
			wantJSON: `{"def_any":{"k":true},"def_l":[1,2],"def_n":30,"def_s":"jsonl","subject":"no placeholder","text":"Risk {{ x }}"}`,
			wantTmpl: []string{"text=Risk {{ x }}@1:8"},
		},
		{
			name:      "templates survive other errors",
			info:      allTypes,
			body:      "text = \"{{ x }}\"\nn = \"many\"\n",
			wantTmpl:  []string{"text={{ x }}@1:8"},
			wantDiags: `t.hcl:2:5: error: Incorrect attribute value type: Inappropriate value for attribute "n": a number is required.`,
		},
		{
			name:     "empty schema, empty body",
			info:     sdk.Info{Kind: sdk.KindSource, Type: "none"},
			wantJSON: `{}`,
		},
		{
			name:      "nested block",
			info:      sdk.Info{Kind: sdk.KindSource, Type: "none"},
			body:      "extra {\n}\n",
			wantDiags: `t.hcl:1:1: error: Unsupported block type: Blocks of type "extra" are not expected here.`,
		},
		{
			name: "schema bugs are the plugin's",
			info: sdk.Info{Kind: sdk.KindSink, Type: "buggy", Version: "0.0.1", Config: []sdk.Attribute{
				{Name: "when", Type: sdk.String},
				{Name: "t", Type: "strin"},
				{Name: "d", Type: sdk.Number, Default: "ten"},
				{Name: "ok", Type: sdk.String},
				{Name: "ok", Type: sdk.Number},
			}},
			body: "ok = \"fine\"\n",
			wantDiags: strings.Join([]string{
				`t.hcl:1:1: error: Invalid plugin schema: The sink plugin "buggy" (version 0.0.1) declares the attribute "when", which the engine reserves. This is a bug in the plugin; its author can fix it.`,
				`t.hcl:1:1: error: Invalid plugin schema: The sink plugin "buggy" (version 0.0.1) declares the attribute "t" with the type strin, which is not a type: invalid character 's' looking for beginning of value. This is a bug in the plugin; its author can fix it.`,
				`t.hcl:1:1: error: Invalid plugin schema: The sink plugin "buggy" (version 0.0.1) declares a default for the attribute "d" that is not a number: a number is required. This is a bug in the plugin; its author can fix it.`,
				`t.hcl:1:1: error: Invalid plugin schema: The sink plugin "buggy" (version 0.0.1) declares the attribute "ok" twice. This is a bug in the plugin; its author can fix it.`,
			}, "\n"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, diags := parse(hclparse.NewParser(), []byte(tt.body), "t.hcl")
			if diags.HasErrors() {
				t.Fatal(compact(diags))
			}
			l := &Loader{}
			cfg, diags := DecodePluginBody(f.Body, tt.info, l.evalContext("."))
			var got []string
			for _, d := range SortDiagnostics(diags) {
				got = append(got, CompactDiagnostic(d))
			}
			if g := strings.Join(got, "\n"); g != tt.wantDiags {
				t.Errorf("diagnostics:\n%s\nwant:\n%s", g, tt.wantDiags)
			}
			if string(cfg.JSON) != tt.wantJSON {
				t.Errorf("JSON:\n%s\nwant:\n%s", cfg.JSON, tt.wantJSON)
			}
			var tmpls []string
			for _, tm := range cfg.Templates {
				tmpls = append(tmpls, tm.Name+"="+tm.Src+"@"+pos(tm.Range))
			}
			if strings.Join(tmpls, ",") != strings.Join(tt.wantTmpl, ",") {
				t.Errorf("templates %v, want %v", tmpls, tt.wantTmpl)
			}
		})
	}
}

// webhookLike declares its settings as sink "webhook" would with durations.
var webhookLike = sdk.Info{
	Kind: sdk.KindSink, Type: "hook", Version: "0.1.0",
	Config: []sdk.Attribute{
		{Name: "url", Type: sdk.String, Required: true, Template: true},
		{Name: "headers", Type: sdk.MapOf(sdk.String), Template: true},
		{Name: "timeout", Type: sdk.Duration, Default: "10s"},
		{Name: "concurrency", Type: sdk.Number, Default: 16},
		{Name: "rate_limit", Type: sdk.String},
		{Name: "retry", Nested: []sdk.Attribute{
			{Name: "schedule", Type: sdk.ListOf(sdk.Duration)},
			{Name: "max", Type: sdk.Duration},
		}},
	},
}

func pos(r hcl.Range) string {
	return fmt.Sprintf("%d:%d", r.Start.Line, r.Start.Column)
}

func TestSDKConfig(t *testing.T) {
	cfg := DecodedConfig{JSON: []byte(`{"text":"{{ x }}"}`), Templates: []TemplateAttr{{Name: "text"}}}.SDKConfig("crm")
	var v struct{ Text string }
	if err := cfg.Decode(&v); err != nil || v.Text != "{{ x }}" || cfg.Name != "crm" || !cfg.HasTemplate("text") {
		t.Errorf("got %+v, %v", cfg, err)
	}
}

func TestCheckPluginTypes(t *testing.T) {
	p := loadString(t, `
plugin "source" "kafka" {
  command = "kafka"
}
source "kafka" "events" {
}
source "file" "calls" {
}
source "fil" "typo" {
}
sink "webhook" "crm" {
  inputs = [source.events, source.calls, source.typo]
}
sink "file" "wrong_kind" {
  inputs = [source.calls]
}
`, nil)
	diags := CheckPluginTypes(p, []PluginType{{sdk.KindSource, "file"}, {sdk.KindSink, "webhook"}})
	want := `pipelines/churn.hcl:9:8: error: Unknown source type: There is no source plugin "fil". Did you mean "file"? A custom plugin is declared with plugin "source" "fil" { command = "..." }.
pipelines/churn.hcl:14:6: error: Unknown sink type: There is no sink plugin "file". "file" is a source plugin. A custom plugin is declared with plugin "sink" "file" { command = "..." }.
`
	if got := compact(diags); got != want {
		t.Errorf("got:\n%swant:\n%s", got, want)
	}
	if diags := CheckPluginTypes(p, nil); len(diags) != 4 {
		t.Errorf("with no built-ins, want 4 unknown types, got:\n%s", compact(diags))
	}
}
