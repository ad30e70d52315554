package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/term"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/plugins"
)

// builtins lists the plugins in this binary, started by re-executing it.
func builtins() ([]run.Builtin, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the pipeline binary: %w", err)
	}
	var out []run.Builtin
	for _, b := range plugins.All() {
		out = append(out, run.Builtin{Info: b.Info, Command: []string{self, "plugin", "serve", b.Name()}})
	}
	return out, nil
}

func logger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// load checks the files and starts their plugins, printing diagnostics.
// store is nil when validating: nothing is written then.
func load(ctx context.Context, g *globals, files []string, store *state.Store, noWait bool) (*run.Loaded, hcl.Diagnostics, error) {
	return loadWith(ctx, g, files, run.LoadOptions{Store: store, NoWait: noWait})
}

// loadWith loads files with the built-in plugins and the CLI's logger.
func loadWith(ctx context.Context, g *globals, files []string, opts run.LoadOptions) (*run.Loaded, hcl.Diagnostics, error) {
	bs, err := builtins()
	if err != nil {
		return nil, nil, err
	}
	opts.Builtins = bs
	opts.Host = host.Options{Logger: logger(os.Stderr, g.verbose)}
	l, diags := run.Load(ctx, files, opts)
	return l, diags, nil
}

// execute loads, builds and runs files with the built-in plugins and the
// CLI's logger (run.Execute): the one path of `run`, `serve` and scheduled
// runs.
func execute(ctx context.Context, g *globals, files []string, lopts run.LoadOptions, ropts run.Options, ready func(*run.Execution)) (*run.Execution, error) {
	bs, err := builtins()
	if err != nil {
		return &run.Execution{}, err
	}
	lopts.Builtins = bs
	lopts.Host = host.Options{Logger: logger(os.Stderr, g.verbose)}
	return run.Execute(ctx, files, lopts, ropts, ready)
}

// printExecDiags prints an execution's diagnostics.
func printExecDiags(x *run.Execution) {
	var p *config.Pipeline
	if x.Loaded != nil {
		p = x.Config
	}
	printDiags(p, nil, x.Diags)
}

func printDiags(p *config.Pipeline, files map[string]*hcl.File, diags hcl.Diagnostics) {
	if len(diags) == 0 {
		return
	}
	if p != nil && files == nil {
		files = p.Files
	}
	config.WriteDiagnostics(os.Stderr, files, config.SortDiagnostics(diags), isTerminal(os.Stderr))
}

// lockPipeline takes a pipeline's run lock in the state store, so that it
// runs once at a time; when another process holds it, the error names the
// holder and exits with exitLocked.
func lockPipeline(g *globals, pipeline string) (*state.Lock, error) {
	l, err := state.LockPipeline(g.statePath, pipeline)
	var le *state.LockedError
	if errors.As(err, &le) {
		return nil, &exitError{code: exitLocked, err: err}
	}
	return l, err
}
