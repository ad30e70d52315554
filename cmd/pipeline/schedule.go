package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/schedule"
	"github.com/pipelinehq/pipeline/engine/state"
)

// scheduledPipeline is a pipeline that serve runs on its schedule instead of
// continuously.
type scheduledPipeline struct {
	g     *globals
	file  string
	p     *config.Pipeline // as loaded when serve started: name and schedule
	store *state.Store
	// ctx aborts a run (the second signal); drain asks it to finish the
	// batches in flight and stop (the first).
	ctx   context.Context
	drain <-chan struct{}
	m     *serveMetrics
	log   *slog.Logger
	e     *entry // what the admin API shows of it
}

// job makes the pipeline a scheduler job.
func (sp *scheduledPipeline) job() schedule.Job {
	return schedule.Job{
		Name:     sp.p.Name,
		Schedule: sp.p.ScheduleSpec,
		Location: sp.p.Location,
		Run:      sp.run,
		OnSkip: func(time.Time) {
			sp.m.scheduledRun(sp.p.Name, "skipped")
		},
	}
}

// run is one firing: one complete run as `pipeline run --no-wait` does it.
// The file is loaded again, so that edits since the last run apply (all but
// the schedule itself, which is read when serve starts). Sources are read to
// their end from their checkpoints, what the sinks acked is committed, and
// action sinks' pending deliveries stay in their outbox for the next run.
// It logs one summary line.
func (sp *scheduledPipeline) run(jobCtx context.Context) {
	started := time.Now()
	attrs := []any{"pipeline", sp.p.Name}
	if at, ok := schedule.Scheduled(jobCtx); ok {
		attrs = append(attrs, "scheduled", at.In(sp.p.Location).Format(time.RFC3339))
	}
	var stats *run.Stats
	var runner *run.Runner
	var sinks []string
	var pipeline string
	if c := sp.g.cluster; c != nil {
		// One worker of the cluster runs each firing: the one that takes it.
		at, _ := schedule.Scheduled(jobCtx)
		won, err := c.TakeFiring(sp.ctx, sp.p.Name, firingKey(sp.p.ScheduleSpec, at))
		if err != nil {
			sp.log.Error("scheduled run not started: the cluster could not say which worker runs it", append(attrs, "error", err)...)
			sp.m.scheduledRun(sp.p.Name, "failed")
			return
		}
		if !won {
			sp.log.Info("scheduled run taken by another worker of the cluster", attrs...)
			sp.m.scheduledRun(sp.p.Name, "elsewhere")
			return
		}
	}
	err := func() error {
		// The run gets serve's contexts rather than jobCtx, which ends with
		// the first signal: a run in progress drains like a continuous
		// pipeline does, and only the second signal aborts it.
		// The firing holds the pipeline's run lock; when a pipeline run
		// of it holds it, the firing fails, naming that process.
		lock, err := state.LockPipeline(sp.g.statePath, sp.p.Name)
		if err != nil {
			return err
		}
		defer lock.Close()
		lopts, ropts := run.LoadOptions{Store: sp.store, NoWait: true}, run.Options{Store: sp.store, Drain: sp.drain, Logger: sp.log}
		if sp.g.cluster != nil {
			onCluster(sp.g, sp.store, &lopts, &ropts)
			// No worker delivers a scheduled pipeline's outbox stream between
			// its firings, so on a cluster a firing waits for its deliveries,
			// as pipeline run does.
			lopts.NoWait = false
		}
		x, err := execute(sp.ctx, sp.g, []string{sp.file}, lopts, ropts, func(x *run.Execution) {
			if x.Config.Schedule != sp.p.Schedule || x.Config.Location.String() != sp.p.Location.String() {
				sp.log.Warn("the schedule in the file changed: reload (the admin API's POST /api/reload) or restart serve to apply it", "pipeline", sp.p.Name, "file", sp.file,
					"schedule", sp.p.Schedule, "timezone", sp.p.Location.String())
			}
			pipeline = x.Plan.Pipeline
			for _, s := range x.Plan.Sinks {
				sinks = append(sinks, s.Name)
			}
			stats = x.Runner.Stats
			sp.m.startRun(sp.p.Name, x.Runner.Stats)
			sp.e.begin(x.Runner)
			runner = x.Runner
		})
		if stats != nil {
			sp.m.endRun(sp.p.Name, stats)
		}
		if x.Runner == nil && err == nil {
			printExecDiags(x)
			return errors.New("the pipeline has errors")
		}
		return err
	}()

	outcome := "succeeded"
	switch {
	case errors.Is(err, run.ErrInterrupted) || (err != nil && sp.ctx.Err() != nil):
		outcome = "interrupted"
	case err != nil:
		outcome = "failed"
	}
	sp.m.scheduledRun(sp.p.Name, outcome)
	sp.e.end(runner, err, outcome == "interrupted")

	attrs = append(attrs, "status", outcome)
	if stats != nil {
		snap := stats.Snapshot()
		attrs = append(attrs, "read", snap.Read, "filtered", snap.Filtered)
		if snap.Rejected > 0 {
			attrs = append(attrs, "rejected", snap.Rejected)
		}
		if snap.Skipped > 0 {
			attrs = append(attrs, "skipped", snap.Skipped)
		}
		sort.Strings(sinks)
		per := make([]any, 0, len(sinks))
		for _, s := range sinks {
			per = append(per, slog.Int64(s, snap.Sinks[s]))
		}
		attrs = append(attrs, slog.Group("delivered", per...))
		// Action sinks: what their outboxes still hold goes out with the
		// next run (--no-wait).
		if counts, cerr := sp.store.DeliveryCounts(context.WithoutCancel(sp.ctx), pipeline, started); cerr == nil {
			var pending, dead []any
			for _, s := range sinks {
				if c, ok := counts[s]; ok && c.Pending > 0 {
					pending = append(pending, slog.Int(s, c.Pending))
				}
				if c, ok := counts[s]; ok && c.Dead > 0 {
					dead = append(dead, slog.Int(s, c.Dead))
				}
			}
			if len(pending) > 0 {
				attrs = append(attrs, slog.Group("pending", pending...))
			}
			if len(dead) > 0 {
				attrs = append(attrs, slog.Group("dead", dead...))
			}
		}
	}
	attrs = append(attrs, "duration", time.Since(started).Round(time.Millisecond).String())
	if outcome == "failed" {
		attrs = append(attrs, "error", err.Error())
		sp.log.Error("scheduled run failed", attrs...)
		return
	}
	sp.log.Info(fmt.Sprintf("scheduled run %s", outcome), attrs...)
}

// firingKey is the time that names a firing for the workers of a cluster:
// a cron expression fires at the same wall times on every worker, but
// "@every 10s" counts from when each worker's scheduler started, so its
// firings are named by the interval they fall in (since the epoch), the
// same on every worker within one interval.
func firingKey(spec cron.Schedule, at time.Time) time.Time {
	switch s := spec.(type) {
	case cron.ConstantDelaySchedule:
		return at.Truncate(s.Delay)
	case *cron.ConstantDelaySchedule:
		return at.Truncate(s.Delay)
	}
	return at
}
