package run

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/plan"
	"github.com/pipelinehq/pipeline/sdk"
)

// TestSubstituteConfiguresBuiltinSinks: with Substitute.ConfigureSink, Load
// checks every built-in sink's decoded block with it, as validate's
// Configure does, and reports its error at the attribute it names; a block
// that read an unset env() variable (a stand-in "") is not checked.
func TestSubstituteConfiguresBuiltinSinks(t *testing.T) {
	builtins := testBuiltins(t)
	path := filepath.Join(t.TempDir(), "p.hcl")
	if err := os.WriteFile(path, []byte(`source "table" "users" {
  table = "users"
}
sink "memory" "good" {
  inputs = [source.users]
  label  = "fine"
}
sink "memory" "bad" {
  inputs  = [source.users]
  timeout = "20s"
}
sink "memory" "stand_in" {
  inputs  = [source.users]
  timeout = env("TIMEOUT_NOT_SET", "20s")
  label   = env("LABEL_NOT_SET")
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var configured []string
	sub := &Substitute{
		Source: func(*config.Source) (plan.SourcePlugin, *arrow.Schema) { return nil, nil },
		Sink:   func(*config.Sink) plan.SinkPlugin { return nil },
		ConfigureSink: func(_ context.Context, s *config.Sink, cfg sdk.Config) error {
			configured = append(configured, s.Name)
			if cfg.Name != s.Name || !strings.Contains(string(cfg.JSON), `"timeout"`) {
				t.Errorf("sink %s configured with %s %s", s.Name, cfg.Name, cfg.JSON)
			}
			if strings.Contains(string(cfg.JSON), `"20s"`) {
				return errors.New("timeout: 20s is too long for a memory")
			}
			return nil
		},
	}
	loader := &config.Loader{UnsetEnvEmpty: true, LookupEnv: func(string) (string, bool) { return "", false }}
	l, diags := Load(context.Background(), []string{path}, LoadOptions{Builtins: builtins, Loader: loader, Substitute: sub})
	if l != nil {
		l.Close()
	}
	if want := []string{"good", "bad"}; !slices.Equal(configured, want) {
		t.Errorf("configured %v, want %v (not the block with a stand-in)", configured, want)
	}
	var got []string
	for _, d := range config.SortDiagnostics(diags) {
		got = append(got, strings.ReplaceAll(config.CompactDiagnostic(d), filepath.Dir(path)+string(filepath.Separator), ""))
	}
	want := []string{`p.hcl:10:13: error: Invalid sink configuration: The sink plugin "memory" says: timeout: 20s is too long for a memory.`}
	if !slices.Equal(got, want) {
		t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
