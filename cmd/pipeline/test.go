package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/plan"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/testrun"
	"github.com/pipelinehq/pipeline/plugins"
	"github.com/pipelinehq/pipeline/sdk"
)

// testSuffix marks a file of test blocks for the pipeline file beside it:
// churn.test.hcl holds tests of churn.hcl.
const testSuffix = ".test.hcl"

func newTestCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test FILE|DIR...",
		Short: "Run the test blocks of pipeline files: records in, what each sink would receive",
		Long: `Run the test blocks of pipeline files. A test gives records to sources and says
what sinks must receive from them:

  test "urgent churn reaches the CRM" {
    input "calls" {
      records = [{ row_id = "r1", classifications = { churn_risk = { confidence = 0.95 } } }]
    }
    expect "crm" {
      count = 1
      where = "priority == 'urgent'"
    }
    expect "retention" { count = 0 }
  }

Tests live in the pipeline file or beside it: churn.test.hcl holds tests of
churn.hcl. FILE is a pipeline file (its NAME.test.hcl is read too) or a test
file (its pipeline is read too); DIR tests every pipeline file in it.

The files are checked first as validate checks them, each built-in sink's
block by its plugin in this process (it configures, connects to nothing);
a file with errors runs no test. The sources are not: a test gives their
records. The filters and transforms run in this process as they do in a
run; every sink is replaced by a capture of what it would receive: nothing
is sent, no state is read or written, no plugin process starts for sources
or built-in sinks. Transform plugins (transform "http") run and call their
endpoints. An env() variable that is not set reads as ""; a sink block that
reads one is not checked by its plugin, which would judge a stand-in.

Exit status: 0 when every test passed, 1 when a test failed or a file has
errors.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sets, err := testFileSets(args)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			bs, err := builtins()
			if err != nil {
				return err
			}
			opts := testrun.Options{
				Load:    run.LoadOptions{Builtins: bs, Host: host.Options{Logger: logger(os.Stderr, g.verbose)}},
				Verbose: g.verbose,
			}
			failed := false
			var reports []testReport
			for _, files := range sets {
				s := checkFiles(cmd.Context(), files, opts.Load)
				if !s.Failed() {
					s = testrun.Run(cmd.Context(), files, opts)
				}
				if s.Failed() {
					failed = true
				}
				if asJSON {
					reports = append(reports, newTestReport(files[0], s))
					continue
				}
				printSuite(os.Stderr, files[0], s)
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(reports); err != nil {
					return err
				}
			}
			if failed {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON on stdout")
	return cmd
}

// checkFiles checks files as `pipeline validate` does, but for what a test
// replaces: the sources are not configured or read (a test gives their
// records), env() of a variable that is not set reads as "", and each
// built-in sink's block is checked by its plugin's Configure in this process
// (configureBuiltinSink) rather than in a plugin process. The Suite holds
// the diagnostics and no results.
func checkFiles(ctx context.Context, files []string, lopts run.LoadOptions) *testrun.Suite {
	lopts.Loader = &config.Loader{UnsetEnvEmpty: true}
	lopts.Store = nil
	lopts.Substitute = &run.Substitute{
		Source:        func(*config.Source) (plan.SourcePlugin, *arrow.Schema) { return nil, nil },
		Sink:          func(*config.Sink) plan.SinkPlugin { return nil },
		ConfigureSink: configureBuiltinSink,
	}
	l, diags := run.Load(ctx, files, lopts)
	if l == nil {
		return &testrun.Suite{Diags: diags}
	}
	l.Close()
	return &testrun.Suite{Pipeline: l.Config.Name, Config: l.Config, Diags: diags}
}

// configureBuiltinSink configures a fresh instance of the built-in sink of
// s's type with cfg, as its plugin process would be: Configure only checks
// and keeps the block's values, so nothing is connected to or sent.
func configureBuiltinSink(ctx context.Context, s *config.Sink, cfg sdk.Config) error {
	b, ok := plugins.Lookup(string(sdk.KindSink) + "-" + s.Type)
	if !ok {
		return nil
	}
	sink, ok := b.New().(sdk.Sink)
	if !ok {
		return nil
	}
	return sink.Configure(ctx, cfg)
}

// testFileSets turns the arguments into pipelines to test: each a pipeline
// file followed by its test file, if it has one.
func testFileSets(args []string) ([][]string, error) {
	var sets [][]string
	seen := map[string]bool{}
	add := func(pipeline string) error {
		if seen[pipeline] {
			return nil
		}
		seen[pipeline] = true
		set := []string{pipeline}
		if tf := strings.TrimSuffix(pipeline, filepath.Ext(pipeline)) + testSuffix; tf != pipeline {
			if _, err := os.Stat(tf); err == nil {
				set = append(set, tf)
			}
		}
		sets = append(sets, set)
		return nil
	}
	for _, arg := range args {
		fi, err := os.Stat(arg)
		if err != nil {
			return nil, err
		}
		switch {
		case fi.IsDir():
			entries, err := os.ReadDir(arg)
			if err != nil {
				return nil, err
			}
			n := 0
			for _, e := range entries {
				name := e.Name()
				if e.IsDir() || strings.HasSuffix(name, testSuffix) || !(strings.HasSuffix(name, ".hcl") || strings.HasSuffix(name, ".json")) {
					continue
				}
				add(filepath.Join(arg, name))
				n++
			}
			if n == 0 {
				return nil, fmt.Errorf("%s holds no pipeline files (*.hcl)", arg)
			}
		case strings.HasSuffix(arg, testSuffix):
			pipeline := strings.TrimSuffix(arg, testSuffix) + ".hcl"
			if _, err := os.Stat(pipeline); err != nil {
				return nil, fmt.Errorf("%s holds tests of the pipeline file %s, which cannot be read: %v", arg, pipeline, err)
			}
			add(pipeline)
		default:
			add(arg)
		}
	}
	return sets, nil
}

// showReceived is how many received records a failed expectation shows.
const showReceived = 10

func printSuite(w io.Writer, file string, s *testrun.Suite) {
	if s.Diags.HasErrors() {
		printDiags(s.Config, nil, s.Diags)
		fmt.Fprintf(w, "FAIL %s: the pipeline has errors; no test ran\n", file)
		return
	}
	if len(s.Results) == 0 {
		fmt.Fprintf(w, "?    %s: no tests (add test blocks to it or to %s)\n", file, strings.TrimSuffix(file, filepath.Ext(file))+testSuffix)
		return
	}
	passed := 0
	for _, r := range s.Results {
		status := "FAIL"
		if r.Passed {
			status = "PASS"
			passed++
		}
		fmt.Fprintf(w, "--- %s: %s (%s:%d)\n", status, r.Name, r.File, r.Line)
		for _, warn := range s.Warnings[r.Name] {
			fmt.Fprintf(w, "    %s\n", config.CompactDiagnostic(warn))
		}
		if r.Error != "" {
			fmt.Fprintf(w, "    %s\n", r.Error)
			continue
		}
		for _, ex := range r.Expects {
			if ex.Passed {
				continue
			}
			for _, f := range ex.Failures {
				fmt.Fprintf(w, "    expect %q: %s\n", ex.Sink, f)
			}
			if len(ex.Received) == 0 {
				continue
			}
			fmt.Fprintf(w, "      received:\n")
			for i, rec := range ex.Received {
				if i == showReceived {
					fmt.Fprintf(w, "      ... and %d more (--json shows them all)\n", len(ex.Received)-showReceived)
					break
				}
				mark := " "
				if rec.Satisfies != nil && !*rec.Satisfies {
					mark = "✗"
				}
				fmt.Fprintf(w, "      %s %s\n", mark, rec.Fields)
				if len(rec.Templates) > 0 {
					names := make([]string, 0, len(rec.Templates))
					for n := range rec.Templates {
						names = append(names, n)
					}
					sort.Strings(names)
					for _, n := range names {
						fmt.Fprintf(w, "          %s = %q\n", n, rec.Templates[n])
					}
				}
			}
		}
	}
	status := "ok  "
	if passed < len(s.Results) {
		status = "FAIL"
	}
	fmt.Fprintf(w, "%s %s: %d passed, %d failed\n", status, file, passed, len(s.Results)-passed)
}

// testReport is one pipeline's results in `pipeline test --json`.
type testReport struct {
	File     string           `json:"file"`
	Pipeline string           `json:"pipeline"`
	Passed   bool             `json:"passed"`
	Errors   []string         `json:"errors,omitempty"`
	Tests    []testrun.Result `json:"tests"`
}

func newTestReport(file string, s *testrun.Suite) testReport {
	r := testReport{File: file, Pipeline: s.Pipeline, Passed: !s.Failed(), Tests: s.Results}
	if r.Tests == nil {
		r.Tests = []testrun.Result{}
	}
	for _, d := range config.SortDiagnostics(s.Diags) {
		if d.Severity == hcl.DiagError {
			r.Errors = append(r.Errors, config.CompactDiagnostic(d))
		}
	}
	return r
}
