package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/plugins"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery"
)

func newPauseCmd(g *globals) *cobra.Command {
	var sink string
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "pause FILE --sink NAME",
		Short: "Pause an action sink: its deliveries stay in its outbox until `pipeline resume`",
		Long: `Pause an action sink (webhook, Slack, Zendesk) of the pipeline in FILE. Runs
and pipeline serve go on reading and queueing its deliveries in the outbox
(the source is not held back), but none is sent until pipeline resume; a
pipeline serve that runs it stops sending within a second, and pipeline run
does not wait for a paused sink's deliveries. The pause is kept in the state
store (--state): it holds across restarts. With --cluster it is kept in the
cluster's KV bucket instead, and every worker stops sending within a second.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return pauseOrResume(cmd.Context(), g, &cf, args[0], sink, true)
		},
	}
	cmd.Flags().StringVar(&sink, "sink", "", "the sink to pause (its block name)")
	cf.add(cmd.Flags(), false)
	return cmd
}

func newResumeCmd(g *globals) *cobra.Command {
	var sink string
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "resume FILE --sink NAME",
		Short: "Resume a paused action sink: what is pending in its outbox goes out",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return pauseOrResume(cmd.Context(), g, &cf, args[0], sink, false)
		},
	}
	cmd.Flags().StringVar(&sink, "sink", "", "the sink to resume (its block name)")
	cf.add(cmd.Flags(), false)
	return cmd
}

func pauseOrResume(ctx context.Context, g *globals, cf *clusterFlags, file, sink string, pause bool) error {
	verb := "resume"
	if pause {
		verb = "pause"
	}
	if sink == "" {
		return &exitError{code: 2, err: fmt.Errorf("--sink is required: the sink to %s", verb)}
	}
	p, diags := config.Load(file)
	if diags.HasErrors() {
		printDiags(p, nil, diags)
		return &exitError{code: 1}
	}
	store, err := state.Open(g.statePath)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := checkActionSink(ctx, p, store, sink); err != nil {
		return &exitError{code: 1, err: err}
	}
	if cf.enabled() {
		c, err := cf.connect(ctx, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		was, err := c.IsPaused(ctx, p.Name, sink)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		if err := c.SetPaused(ctx, p.Name, sink, pause); err != nil {
			return &exitError{code: 1, err: err}
		}
		switch {
		case pause:
			fmt.Fprintf(os.Stderr, "paused sink %s of pipeline %s on the cluster: deliveries stay in its outbox stream until \"pipeline resume --cluster\"\n", sink, p.Name)
		case was:
			fmt.Fprintf(os.Stderr, "resumed sink %s of pipeline %s on the cluster: the workers send its pending deliveries\n", sink, p.Name)
		default:
			fmt.Fprintf(os.Stderr, "sink %s of pipeline %s was not paused on the cluster\n", sink, p.Name)
		}
		return nil
	}
	if !pause {
		paused, err := store.PausedSinks(ctx)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		if err := store.ResumeSink(ctx, p.Name, sink); err != nil {
			return &exitError{code: 1, err: err}
		}
		if _, ok := paused[state.SinkKey{Pipeline: p.Name, Sink: sink}]; !ok {
			fmt.Fprintf(os.Stderr, "sink %s of pipeline %s was not paused\n", sink, p.Name)
			return nil
		}
		fmt.Fprintf(os.Stderr, "resumed sink %s of pipeline %s: its pending deliveries go out (a run or `pipeline serve` sends them)\n", sink, p.Name)
		return nil
	}
	if err := store.PauseSink(ctx, p.Name, sink, time.Now()); err != nil {
		return &exitError{code: 1, err: err}
	}
	fmt.Fprintf(os.Stderr, "paused sink %s of pipeline %s: deliveries stay in its outbox until \"pipeline resume\"\n", sink, p.Name)
	return nil
}

// checkActionSink checks that the pipeline has a sink of that name, and
// that it delivers from an outbox: a built-in action sink (it takes the
// retention block every sdk/delivery sink declares), or a custom sink
// whose outbox the store already holds (a custom plugin's schema is only
// known by starting it).
func checkActionSink(ctx context.Context, p *config.Pipeline, store *state.Store, name string) error {
	var sk *config.Sink
	var names []string
	for _, s := range p.Sinks {
		names = append(names, s.Name)
		if s.Name == name {
			sk = s
		}
	}
	if sk == nil {
		msg := fmt.Sprintf("pipeline %s has no sink %q", p.Name, name)
		if len(names) == 0 {
			return fmt.Errorf("%s (it has no sinks)", msg)
		}
		if s := config.Suggest(name, names); s != "" {
			return fmt.Errorf("%s; did you mean %q?", msg, s)
		}
		return fmt.Errorf("%s; its sinks are %s", msg, strings.Join(names, ", "))
	}
	custom := slices.ContainsFunc(p.Plugins, func(d *config.PluginDecl) bool { return d.Kind == sdk.KindSink && d.Type == sk.Type })
	if custom {
		keys, err := store.Outboxes(ctx, p.Name)
		if err != nil {
			return err
		}
		if slices.Contains(keys, state.SinkKey{Pipeline: p.Name, Sink: name}) {
			return nil
		}
		return fmt.Errorf("sink %s (custom plugin %q) has no outbox in %s: only action sinks, which deliver from an outbox, can be paused (a custom one once it has run)",
			name, sk.Type, store.Path())
	}
	for _, b := range plugins.All() {
		if b.Info.Kind != sdk.KindSink || b.Info.Type != sk.Type {
			continue
		}
		retention := delivery.RetentionAttribute().Name
		if slices.ContainsFunc(b.Info.Config, func(a sdk.Attribute) bool { return a.Name == retention }) {
			return nil
		}
		return fmt.Errorf("sink %s is a %q sink, which writes its batches directly and has no outbox: only action sinks (webhook, slack, zendesk) can be paused",
			name, sk.Type)
	}
	return fmt.Errorf("sink %s: unknown plugin type %q", name, sk.Type)
}
