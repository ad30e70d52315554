package run

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/engine/state"
)

// Execution is one run of a pipeline file: loaded, built and run by Execute.
type Execution struct {
	// Loaded holds the checked configuration (for printing diagnostics) and,
	// when it has no errors, the plan.
	*Loaded
	// Diags are the file's diagnostics, warnings included.
	Diags hcl.Diagnostics
	// Runner is the run; nil when the file has errors.
	Runner *Runner
}

// Execute is the one way from pipeline files to a finished run, used by
// `pipeline run`, `pipeline serve` and scheduled runs: it loads and checks
// the files, starts their plugins, builds the run and runs it, then stops
// the plugins. ready, when set, is called once the run is built and before
// it starts (to show progress, track metrics). When the files have errors
// Execute runs nothing: the Execution's Diags say why and its Runner is nil.
func Execute(ctx context.Context, files []string, lopts LoadOptions, ropts Options, ready func(*Execution)) (*Execution, error) {
	l, diags := Load(ctx, files, lopts)
	x := &Execution{Loaded: l, Diags: diags}
	if l == nil || l.Plan == nil || diags.HasErrors() {
		if l != nil {
			l.Close()
		}
		return x, nil
	}
	defer l.Close()
	if ropts.Store == nil {
		ropts.Store = lopts.Store
	}
	r, err := New(l.Plan, ropts)
	if err != nil {
		return x, err
	}
	x.Runner = r
	// The run log (state.Store.Runs): what the admin API shows as the
	// pipeline's last runs. A failure to log does not stop the run.
	var logged int64
	if ropts.Store != nil {
		logged, _ = ropts.Store.BeginRun(ctx, l.Plan.Pipeline, time.Now())
	}
	if ready != nil {
		ready(x)
	}
	err = r.Run(ctx)
	if logged > 0 {
		outcome, text := "succeeded", ""
		switch {
		case errors.Is(err, ErrInterrupted) || (err != nil && ctx.Err() != nil):
			outcome = "interrupted"
		case err != nil:
			outcome, text = "failed", err.Error()
		}
		snap := r.Stats.Snapshot()
		ropts.Store.EndRun(ctx, logged, time.Now(), outcome, text, state.RunCounts{Read: snap.Read, Filtered: snap.Filtered,
			Skipped: snap.Skipped, Rejected: snap.Rejected, Delivered: snap.Delivered})
	}
	return x, err
}
