package run

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/sdk"
)

// The test binary doubles as the plugins of the Load tests (go-plugin's
// helper-process pattern): with PIPELINE_RUN_TEST_PLUGIN=1 it serves the
// plugin its last argument names.
func TestMain(m *testing.M) {
	if os.Getenv("PIPELINE_RUN_TEST_PLUGIN") == "1" {
		switch os.Args[len(os.Args)-1] {
		case "source-table":
			sdk.Serve(&tableSource{})
		case "sink-memory":
			sdk.Serve(&memorySink{})
		case "source-pushy":
			sdk.Serve(&pushySource{})
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// tableSource knows its schema exactly (a table's columns): it does not
// mark it sampled.
type tableSource struct{}

func (s *tableSource) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindSource, Type: "table", Version: "0.0.1", Config: []sdk.Attribute{
		{Name: "table", Type: sdk.String, Required: true},
		{Name: "timeout", Type: sdk.Duration, Default: "5s"},
	}}
}

func (s *tableSource) Configure(_ context.Context, cfg sdk.Config) error {
	var c struct{ Table string }
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	if c.Table == "nope" {
		return errors.New(`table "nope" does not exist`)
	}
	return nil
}

func (s *tableSource) Schema(context.Context) (*arrow.Schema, error) {
	return arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "name", Type: arrow.BinaryTypes.String},
	}, nil), nil
}

func (s *tableSource) Read(context.Context, []byte, sdk.Emitter) error {
	return errors.New("validation must read nothing")
}

type memorySink struct{}

func (s *memorySink) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindSink, Type: "memory", Version: "0.0.1", Config: []sdk.Attribute{
		{Name: "label", Type: sdk.String, Template: true},
		{Name: "timeout", Type: sdk.Duration, Default: "10s"},
		{Name: "rate_limit", Type: sdk.String},
		{Name: "retry", Nested: []sdk.Attribute{
			{Name: "schedule", Type: sdk.ListOf(sdk.Duration)},
		}},
	}}
}

func (s *memorySink) Configure(context.Context, sdk.Config) error { return nil }

func (s *memorySink) Write(context.Context, sdk.Batch) error {
	return errors.New("validation must write nothing")
}

func testBuiltins(t *testing.T) []Builtin {
	t.Helper()
	t.Setenv("PIPELINE_RUN_TEST_PLUGIN", "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []Builtin{
		{Info: (&tableSource{}).Info(), Command: []string{exe, "source-table"}},
		{Info: (&memorySink{}).Info(), Command: []string{exe, "sink-memory"}},
	}
}

// TestLoadReportsEverything: one Load reports the errors of every stage and
// every block; a block that a stage rejected is left out of the stages that
// depend on it, and only that block.
func TestLoadReportsEverything(t *testing.T) {
	builtins := testBuiltins(t)
	tests := []struct {
		name string
		src  string
		want []string // FILE:LINE:COL: severity: Summary, as CompactDiagnostic starts
	}{
		{
			name: "good",
			src: `source "table" "users" {
  table = "users"
}
filter "named" {
  inputs = [source.users]
  where  = "name != nil && id > 3"
}
sink "memory" "out" {
  inputs = [filter.named]
  label  = "{{ name }}"
}
`,
		},
		{
			name: "every stage at once",
			src: `source "table" "users" {
  table = "users"
  bogus = 1
}
source "table" "orders" {
  table   = 12
  timeout = "soon"
}
source "table" "gone" {
  table = "nope"
}
source "table" "good" {
  table = "good"
}
filter "syntax" {
  inputs = [source.good]
  where  = "id == "
}
filter "misspelt" {
  inputs = [source.good]
  where  = "nmae == 'x'"
}
filter "dangling" {
  inputs = [source.missing]
  where  = "whatever == 1"
}
filter "after_gone" {
  inputs = [source.gone]
  where  = "whatever == 1"
}
sink "memory" "out" {
  inputs     = [filter.syntax, filter.misspelt, filter.dangling, filter.after_gone, source.users, source.orders]
  timeout    = "ten"
  rate_limit = 3
  retry {
    schedule = ["0s", "bad"]
  }
}
sink "memory" "labels" {
  inputs = [source.good]
  label  = "{{ id.x }}"
}
`,
			want: []string{
				`p.hcl:3:3: error: Unsupported argument`,
				`p.hcl:6:13: error: Incorrect attribute value type`, // table = 12
				`p.hcl:7:13: error: Invalid duration`,               // timeout = "soon"
				`p.hcl:10:11: error: Invalid source configuration`,  // the plugin's own check
				`p.hcl:17:18: error: Invalid filter expression`,     // id ==
				`p.hcl:21:13: error: Invalid filter expression`,     // nmae, against a complete schema
				`p.hcl:24:13: error: Reference to undeclared source`,
				`p.hcl:33:16: error: Invalid duration`,               // timeout = "ten"
				`p.hcl:34:16: error: Incorrect attribute value type`, // rate_limit = 3
				`p.hcl:36:23: error: Invalid duration`,               // retry.schedule[1]
				`p.hcl:41:19: error: Invalid template`,               // id.x, id is a number
			},
		},
		{
			name: "graph checks after expression errors",
			src: `source "table" "users" {
  table = "users"
}
filter "f" {
  inputs = [source.users]
  where  = "nmae == 'x'"
}
sink "memory" "full" {
  inputs      = [source.users]
  incremental = false
}
sink "memory" "inc" {
  inputs = [filter.f]
}
`,
			want: []string{
				`p.hcl:6:13: error: Invalid filter expression`,
				`p.hcl:8:1: error: Incremental and full exports share a source`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "p.hcl")
			if err := os.WriteFile(file, []byte(tt.src), 0o644); err != nil {
				t.Fatal(err)
			}
			l, diags := Load(context.Background(), []string{file}, LoadOptions{Builtins: builtins})
			defer l.Close()
			var got []string
			for _, d := range config.SortDiagnostics(diags) {
				got = append(got, strings.TrimPrefix(config.CompactDiagnostic(d), filepath.Dir(file)+string(filepath.Separator)))
			}
			all := strings.Join(got, "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("got %d diagnostics, want %d:\n%s", len(got), len(tt.want), all)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("diagnostic %d is\n%s\nwant\n%s...", i, got[i], w)
				}
			}
			if diags.HasErrors() != (l.Plan == nil) {
				t.Errorf("errors: %v, but plan %v", diags.HasErrors(), l.Plan)
			}
			if t.Failed() {
				fmt.Println(all)
			}
		})
	}
}
