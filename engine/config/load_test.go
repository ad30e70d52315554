package config

import (
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/sdk"
)

// loadString loads src as dir/pipeline.hcl with the given environment and
// fails the test on any error.
func loadString(t *testing.T, src string, env map[string]string) *Pipeline {
	t.Helper()
	l := &Loader{LookupEnv: func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}}
	p, diags := l.LoadBytes([]byte(src), filepath.Join("pipelines", "churn.hcl"))
	if diags.HasErrors() {
		t.Fatalf("unexpected errors:\n%s", compact(diags))
	}
	return p
}

func compact(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range SortDiagnostics(diags) {
		b.WriteString(CompactDiagnostic(d))
		b.WriteByte('\n')
	}
	return b.String()
}

func addrs[N Node](nodes []N) []string {
	out := []string{}
	for _, n := range nodes {
		out = append(out, n.Addr())
	}
	return out
}

const graphSrc = `
source "file" "calls" { path = "calls.jsonl" }
source "file" "tickets" { path = "tickets.jsonl" }

# Declared before the filters it reads: topological order puts it after.
filter "urgent" {
  inputs = [filter.high_churn, filter.angry]
  where  = "true"
}
filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}
filter "angry" {
  inputs = [source.calls, source.tickets]
  where  = "true"
}

sink "webhook" "crm" {
  inputs = [filter.urgent, source.tickets]
  url    = "http://x"
}
sink "webhook" "audit" {
  inputs = [source.calls]
  url    = "http://y"
}
`

func TestGraph(t *testing.T) {
	p := loadString(t, graphSrc, nil)
	src := func(name string) *Source { return p.Node("source." + name).(*Source) }
	sink := func(name string) *Sink { return p.Node("sink." + name).(*Sink) }
	chains := func(paths [][]*Filter) []string {
		out := []string{}
		for _, path := range paths {
			out = append(out, strings.Join(addrs(path), " > "))
		}
		return out
	}

	tests := []struct {
		name string
		got  any
		want any
	}{
		{"sources in declaration order", addrs(p.Sources), []string{"source.calls", "source.tickets"}},
		{"filters in topological order", addrs(p.Filters), []string{"filter.high_churn", "filter.angry", "filter.urgent"}},
		{"sinks in declaration order", addrs(p.Sinks), []string{"sink.crm", "sink.audit"}},
		{"readers of a source", addrs(p.Readers(src("calls"))), []string{"filter.high_churn", "filter.angry", "sink.audit"}},
		{"readers of a sink", addrs(p.Readers(sink("crm"))), []string{}},
		{"sources of a sink", addrs(p.SourcesOf(sink("crm"))), []string{"source.calls", "source.tickets"}},
		{"sources of a source", addrs(p.SourcesOf(src("tickets"))), []string{"source.tickets"}},
		{"sources of a filter", addrs(p.SourcesOf(p.Node("filter.high_churn"))), []string{"source.calls"}},
		{"sinks of a source", addrs(p.SinksOf(src("calls"))), []string{"sink.crm", "sink.audit"}},
		{"sinks of a filter", addrs(p.SinksOf(p.Node("filter.angry"))), []string{"sink.crm"}},
		{"paths through a diamond", chains(p.Paths(src("calls"), sink("crm"))), []string{
			"filter.high_churn > filter.urgent", "filter.angry > filter.urgent"}},
		{"direct path", chains(p.Paths(src("tickets"), sink("crm"))), []string{"filter.angry > filter.urgent", ""}},
		{"no path", chains(p.Paths(src("tickets"), sink("audit"))), []string{}},
		{"inputs keep their ranges", p.Node("filter.urgent").(*Filter).Inputs[1].Range.Start.Line, 7},
		{"unknown address", p.Node("source.nope"), nil},
		{"malformed address", p.Node("calls"), nil},
		{"name defaults to the file name", p.Name, "churn"},
		{"body left for stage 2", p.Sinks[0].Body != nil, true},
		{"labels", []string{p.Sinks[0].Type, p.Sinks[0].Name, p.Sinks[0].TypeRange.String()}, []string{"webhook", "crm", "pipelines/churn.hcl:19,6-15"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
}

func TestLoadValues(t *testing.T) {
	tests := []struct {
		name string
		src  string
		env  map[string]string
		get  func(p *Pipeline) any
		want any
	}{
		{
			name: "pipeline name",
			src:  `pipeline { name = "churn-v2" }`,
			get:  func(p *Pipeline) any { return p.Name },
			want: "churn-v2",
		},
		{
			name: "where source",
			src: `filter "f" {
 inputs = [source.s]
 where = "a > 1"
}`,
			get:  func(p *Pipeline) any { return p.Filters[0].Where.Src },
			want: "a > 1",
		},
		{
			name: "when absent",
			src:  `sink "webhook" "k" { inputs = [source.s] }`,
			get:  func(p *Pipeline) any { return p.Sinks[0].When == nil },
			want: true,
		},
		{
			name: "env set",
			src: `filter "f" {
 inputs = [source.s]
 where = env("W")
}`,
			env:  map[string]string{"W": "x == 1"},
			get:  func(p *Pipeline) any { return p.Filters[0].Where.Src },
			want: "x == 1",
		},
		{
			name: "env set to empty wins over the default",
			src: `filter "f" {
 inputs = [source.s]
 where = "${env("W", "default")}true"
}`,
			env:  map[string]string{"W": ""},
			get:  func(p *Pipeline) any { return p.Filters[0].Where.Src },
			want: "true",
		},
		{
			name: "env default",
			src: `filter "f" {
 inputs = [source.s]
 where = env("W", "y == 2")
}`,
			get:  func(p *Pipeline) any { return p.Filters[0].Where.Src },
			want: "y == 2",
		},
		{
			name: "plugin command relative to the file",
			src:  `plugin "sink" "audit" { command = "./bin/sink-audit" }`,
			get: func(p *Pipeline) any {
				want, _ := filepath.Abs(filepath.Join("pipelines", "bin", "sink-audit"))
				return p.Plugins[0].Command == want
			},
			want: true,
		},
		{
			name: "plugin command on PATH",
			src:  `plugin "sink" "audit" { command = "sink-audit" }`,
			get:  func(p *Pipeline) any { return p.Plugins[0].Command },
			want: "sink-audit",
		},
		{
			name: "plugin",
			src: `plugin "source" "kafka" {
				command = "/opt/kafka"
				args    = ["--verbose", "-q"]
				sha256  = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
			}`,
			get: func(p *Pipeline) any {
				d := p.Plugins[0]
				return []any{d.Kind, d.Type, d.Command, d.Args, d.SHA256}
			},
			want: []any{sdk.KindSource, "kafka", "/opt/kafka", []string{"--verbose", "-q"},
				"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every case needs a source and a sink to be free of errors.
			src := tt.src + "\nsource \"file\" \"s\" { path = \"p\" }\n"
			if !strings.Contains(tt.src, "sink ") {
				src += "sink \"webhook\" \"always\" { inputs = [source.s] }\n"
			}
			p := loadString(t, src, tt.env)
			if got := tt.get(p); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestLoadFiles(t *testing.T) {
	files := map[string]string{
		"p/main.hcl":   `source "file" "calls" { path = "c" }`,
		"p/sinks.hcl":  "sink \"webhook\" \"crm\" {\n inputs = [source.calls]\n url = \"http://x\"\n secret = file(\"secret.txt\")\n}",
		"p/secret.txt": "s3cret",
		"p/main.json":  `{"source": {"file": {"calls": {"path": "c"}}}, "sink": {"webhook": {"crm": {"inputs": ["source.calls"], "when": "a == 1"}}}}`,
		"p/bad.hcl":    `source "file" {`,
	}
	l := &Loader{ReadFile: func(name string) ([]byte, error) {
		if s, ok := files[filepath.ToSlash(name)]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}}
	tests := []struct {
		name  string
		files []string
		want  string // compact diagnostics
		check func(t *testing.T, p *Pipeline)
	}{
		{
			name:  "two files are one pipeline",
			files: []string{"p/main.hcl", "p/sinks.hcl", "p/main.hcl"},
			check: func(t *testing.T, p *Pipeline) {
				if p.Name != "main" || p.File != "p/main.hcl" || len(p.Files) != 2 {
					t.Errorf("name %q file %q files %d", p.Name, p.File, len(p.Files))
				}
				cfg, diags := DecodePluginBody(p.Sinks[0].Body, testInfos[1], p.Sinks[0].EvalCtx)
				if diags.HasErrors() || !strings.Contains(string(cfg.JSON), `"secret":"s3cret"`) {
					t.Errorf("file() relative to the pipeline file: %s %s", cfg.JSON, compact(diags))
				}
			},
		},
		{
			name:  "JSON syntax",
			files: []string{"p/main.json"},
			check: func(t *testing.T, p *Pipeline) {
				if len(p.Sinks) != 1 || p.Sinks[0].Inputs[0].Node != p.Sources[0] || p.Sinks[0].When.Src != "a == 1" {
					t.Errorf("JSON pipeline decoded wrong: %+v", p.Sinks)
				}
			},
		},
		{
			name:  "missing file",
			files: []string{"p/nope.hcl"},
			want:  "error: Failed to read file: The pipeline file \"p/nope.hcl\" could not be read: file does not exist.\n",
		},
		{
			name:  "syntax error stops before decoding",
			files: []string{"p/bad.hcl", "p/sinks.hcl"},
			want:  "p/bad.hcl:1:15: error: Unclosed configuration block: There is no closing brace for this block before the end of the file. This may be caused by incorrect brace nesting elsewhere in this file.\n",
		},
		{
			name: "no file",
			want: "error: No pipeline file: Name at least one pipeline file.\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, diags := l.Load(tt.files...)
			if p == nil {
				t.Fatal("Load returned no pipeline")
			}
			if got := compact(diags); got != tt.want {
				t.Errorf("diagnostics:\n%swant:\n%s", got, tt.want)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestEnvFunc(t *testing.T) {
	l := &Loader{LookupEnv: func(name string) (string, bool) {
		if name == "SET" {
			return "value", true
		}
		return "", false
	}}
	lookup := l.LookupEnv
	tests := []struct {
		expr  string
		want  string
		err   string
		empty bool // Loader.UnsetEnvEmpty (pipeline test)
	}{
		{expr: `env("UNSET")`, want: "", empty: true},
		{expr: `env("UNSET", "d")`, want: "d", empty: true},
		{expr: `env("SET")`, want: "value", empty: true},
		{expr: `env("SET")`, want: "value"},
		{expr: `env("SET", "d")`, want: "value"},
		{expr: `env("UNSET", "d")`, want: "d"},
		{expr: `env("UNSET")`, err: `Call to function "env" failed: environment variable UNSET is not set; set it, or give a default: env("UNSET", "...").`},
		{expr: `env("UNSET", "a", "b")`, err: `env takes a name and at most one default`},
		{expr: `env()`, err: `Function "env" expects at least 1 argument(s). Missing value for "name".`},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			l := &Loader{LookupEnv: lookup, UnsetEnvEmpty: tt.empty}
			p, diags := l.LoadBytes([]byte(`source "file" "s" { path = `+tt.expr+` }
sink "webhook" "k" { inputs = [source.s] }`), "t.hcl")
			if diags.HasErrors() {
				t.Fatal(compact(diags))
			}
			cfg, diags := DecodePluginBody(p.Sources[0].Body, testInfos[0], p.Sources[0].EvalCtx)
			if tt.err != "" {
				if !strings.Contains(compact(diags), tt.err) {
					t.Errorf("got %s, want an error with %q", compact(diags), tt.err)
				}
				return
			}
			if diags.HasErrors() || !strings.Contains(string(cfg.JSON), `"path":"`+tt.want+`"`) {
				t.Errorf("got %s %s, want path %q", cfg.JSON, compact(diags), tt.want)
			}
		})
	}
}

func TestLoadFromDisk(t *testing.T) {
	p, diags := Load(filepath.Join("testdata", "diagnostics", "valid", "pipeline.hcl"))
	// The real environment has no CRM_WEBHOOK_SECRET; stage 1 is happy.
	if diags.HasErrors() {
		t.Fatal(compact(diags))
	}
	if p.Name != "churn" || len(p.Files) != 1 {
		t.Errorf("name %q, %d files", p.Name, len(p.Files))
	}
	_, err := (&Loader{ReadFile: func(string) ([]byte, error) { return nil, errors.New("boom") }}).Load("x.hcl")
	if !err.HasErrors() {
		t.Error("a read error is not reported")
	}
}
