package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/internal/receive"
	"github.com/pipelinehq/pipeline/plugins"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/webhook"
)

func newRunCmd(g *globals) *cobra.Command {
	var fullRefresh, asJSON, noWait bool
	var progressEvery time.Duration
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run a pipeline until its sources are drained",
		Long: `Run a pipeline until its sources are drained, then exit. Progress goes to
stderr. Only records that are new since the last run are processed, unless
--full-refresh. Action sinks (webhook, Slack, Zendesk) queue deliveries in a
durable outbox; the run waits until each is delivered or dead (--no-wait does
not). SIGINT/SIGTERM stop reading, let the sinks ack what they have, commit it,
stop waiting for the outbox (pending deliveries stay queued for the next run or
pipeline serve) and exit with 130/143; a second signal aborts at once.

A pipeline runs once at a time on a state store (--state): while a run or
pipeline serve runs it, another run of it refuses at once, naming the
process that holds it. The lock is held in <state>.locks/<pipeline>.lock and
goes away with its process, however that ends.

Exit status:
  0    the run completed and every delivery was made (or is still pending,
       with --no-wait)
  1    the run failed, or the file has errors
  2    the run completed, but deliveries went dead in it (see
       pipeline deliveries --status dead; send them again with pipeline replay)
  75   the pipeline is already running on this state store
  130  interrupted by SIGINT (143: by SIGTERM); what the sinks acked is
       committed`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Signals: the first drains, the second aborts.
			drain := make(chan struct{})
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			ctx, abort := context.WithCancel(cmd.Context())
			defer abort()
			var got os.Signal
			go func() {
				s, ok := <-sigs
				if !ok {
					return
				}
				got = s
				fmt.Fprintf(os.Stderr, "\n%s: finishing the batches in flight; pending deliveries stay queued (again to abort)\n", s)
				close(drain)
				if _, ok := <-sigs; ok {
					abort()
				}
			}()

			// Check the file before creating any state.
			p, diags := config.Load(args...)
			if diags.HasErrors() {
				printDiags(p, nil, diags)
				return &exitError{code: 1}
			}
			// One run of a pipeline at a time on a state store: a second
			// would read from the same checkpoints and send everything again.
			lock, err := lockPipeline(g, p.Name)
			if err != nil {
				return err
			}
			defer lock.Close()
			store, err := state.Open(g.statePath)
			if err != nil {
				return err
			}
			defer store.Close()
			var prog *run.Progress
			x, runErr := execute(ctx, g, args, run.LoadOptions{Store: store, NoWait: noWait, FullRefresh: fullRefresh},
				run.Options{FullRefresh: fullRefresh, Drain: drain, Logger: logger(os.Stderr, g.verbose)},
				func(x *run.Execution) {
					printExecDiags(x) // warnings
					prog = &run.Progress{W: os.Stderr, TTY: isTerminal(os.Stderr), Interval: progressEvery, Stats: x.Runner.Stats}
					prog.Start()
				})
			if prog != nil {
				prog.Stop()
			}
			if x.Runner == nil {
				printExecDiags(x)
				if runErr != nil {
					return runErr
				}
				return &exitError{code: 1}
			}
			r, l := x.Runner, x.Loaded
			snap := r.Stats.Snapshot()
			status := "done"
			interrupted := got != nil && (errors.Is(runErr, run.ErrInterrupted) || errors.Is(runErr, context.Canceled))
			switch {
			case interrupted || errors.Is(runErr, run.ErrInterrupted):
				status = "interrupted"
			case runErr != nil:
				status = "failed"
			}
			fmt.Fprintf(os.Stderr, "%s %s: %s\n", l.Plan.Pipeline, status, run.FormatLine(snap))
			printOutbox(snap.Outbox, noWait || status == "interrupted")
			if asJSON {
				out := struct {
					Pipeline string `json:"pipeline"`
					Status   string `json:"status"`
					Error    string `json:"error,omitempty"`
					run.Snapshot
				}{Pipeline: l.Plan.Pipeline, Status: status, Snapshot: snap}
				if status == "failed" {
					out.Error = runErr.Error()
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				enc.Encode(out)
			}
			switch {
			case runErr == nil && deadDeliveries(snap.Outbox) > 0:
				return &exitError{code: exitDead}
			case runErr == nil:
				return nil
			case status == "interrupted":
				if got == syscall.SIGTERM {
					return &exitError{code: 143}
				}
				return &exitError{code: 130}
			}
			return &exitError{code: 1, err: runErr}
		},
	}
	cmd.Flags().BoolVar(&fullRefresh, "full-refresh", false, "ignore checkpoints and process everything again")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the run's summary as JSON on stdout")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "exit when the sources are drained, leaving pending webhook deliveries queued for the next run or `pipeline serve`")
	cmd.Flags().DurationVar(&progressEvery, "progress-interval", 0, "how often the progress line is printed (default 200ms on a terminal, 5s otherwise)")
	return cmd
}

// deadDeliveries counts the deliveries that went dead during a run.
func deadDeliveries(outbox map[string]state.Progress) int64 {
	var n int64
	for _, p := range outbox {
		n += p.Dead
	}
	return n
}

// printOutbox reports action sinks' deliveries after a run. left says the
// run did not wait for what is pending (--no-wait, or interrupted).
func printOutbox(outbox map[string]state.Progress, left bool) {
	names := make([]string, 0, len(outbox))
	for n := range outbox {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := outbox[n]
		fmt.Fprintf(os.Stderr, "  sink %s: %d delivered, %d dead, %d pending\n", n, p.Delivered, p.Dead, p.Pending)
		if p.Paused && p.Pending > 0 {
			fmt.Fprintf(os.Stderr, "  sink %s is paused: its %d pending deliveries stay queued until `pipeline resume FILE --sink %s`\n", n, p.Pending, n)
		} else if p.Pending > 0 && left {
			fmt.Fprintf(os.Stderr, "  %d deliveries of sink %s stay queued: the next run or `pipeline serve` sends them\n", p.Pending, n)
		}
		for _, c := range p.Circuits {
			switch c.State {
			case sdk.CircuitDisabled:
				fmt.Fprintf(os.Stderr, "  sink %s: endpoint %s answered 410 Gone and was disabled for the run; its deliveries went to the dead letter\n", n, c.Endpoint)
			case sdk.CircuitOpen:
				why := ""
				if c.Reason != "" {
					why = ": " + c.Reason
				}
				fmt.Fprintf(os.Stderr, "  sink %s: circuit open for %s until %s%s\n", n, c.Endpoint, c.Until.Local().Format("15:04:05"), why)
			}
		}
		if p.Dead > 0 {
			fmt.Fprintf(os.Stderr, "  %d deliveries of sink %s are dead: see `pipeline deliveries --sink %s --status dead`, send again with `pipeline replay FILE --sink %s`\n", p.Dead, n, n, n)
		}
	}
}

func newValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check pipeline files and their plugins without running anything",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := false
			for _, f := range args {
				l, diags, err := load(cmd.Context(), g, []string{f}, nil, false)
				if err != nil {
					return err
				}
				l.Close()
				printDiags(l.Config, nil, diags)
				if diags.HasErrors() {
					failed = true
					continue
				}
				if n := len(l.Config.Transforms); n > 0 {
					fmt.Fprintf(os.Stderr, "%s: ok (%d sources, %d filters, %d transforms, %d sinks)\n", f, len(l.Config.Sources), len(l.Config.Filters), n, len(l.Config.Sinks))
				} else {
					fmt.Fprintf(os.Stderr, "%s: ok (%d sources, %d filters, %d sinks)\n", f, len(l.Config.Sources), len(l.Config.Filters), len(l.Config.Sinks))
				}
			}
			if failed {
				return &exitError{code: 1}
			}
			return nil
		},
	}
}

func newPluginsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "plugins [FILE...]",
		Short: "List the built-in plugins, and those the files declare, with their config schemas",
		RunE: func(cmd *cobra.Command, args []string) error {
			type entry struct {
				Origin string   `json:"origin"`
				Info   sdk.Info `json:"info"`
			}
			var list []entry
			for _, b := range plugins.All() {
				list = append(list, entry{Origin: "built-in", Info: b.Info})
			}
			for _, f := range args {
				p, diags := config.Load(f)
				if diags.HasErrors() {
					printDiags(p, nil, diags)
					return &exitError{code: 1}
				}
				for _, d := range p.Plugins {
					spec := host.Spec{Kind: d.Kind, Type: d.Type, Command: append([]string{d.Command}, d.Args...), SHA256: d.SHA256}
					plug, err := host.Start(cmd.Context(), spec, host.Options{Logger: logger(os.Stderr, g.verbose)})
					if err != nil {
						return &exitError{code: 1, err: err}
					}
					info, err := plug.Describe(cmd.Context())
					plug.Stop()
					if err != nil {
						return &exitError{code: 1, err: err}
					}
					list = append(list, entry{Origin: d.Command, Info: info})
				}
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			for _, e := range list {
				fmt.Printf("%s %q  %s  (%s)\n  %s\n", e.Info.Kind, e.Info.Type, e.Info.Version, e.Origin, e.Info.Description)
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				printAttributes(tw, e.Info.Config, "    ")
				tw.Flush()
				fmt.Println()
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// printAttributes lists a plugin's config schema, nested blocks indented.
func printAttributes(tw *tabwriter.Writer, attrs []sdk.Attribute, indent string) {
	for _, a := range attrs {
		req := "optional"
		if a.Required {
			req = "required"
		}
		if a.Default != nil {
			def, _ := json.Marshal(a.Default)
			req = "default " + string(def)
		}
		typ := strings.Trim(string(a.Type), `"`)
		if ty, err := ctyjson.UnmarshalType([]byte(a.Type)); err == nil {
			typ = ty.FriendlyName()
		}
		switch {
		case len(a.Nested) > 0:
			typ = "block"
		case a.Template:
			typ += ", {{ }}"
		case a.Expression:
			typ += ", expression"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", indent, a.Name, typ, req, a.Description)
		printAttributes(tw, a.Nested, indent+"  ")
	}
}

func newPluginCmd() *cobra.Command {
	plugin := &cobra.Command{Use: "plugin", Short: "Plugin process entry points (used by the engine)", Hidden: true}
	plugin.AddCommand(&cobra.Command{
		Use:   "serve NAME",
		Short: "Serve a built-in plugin over the plugin protocol",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, ok := plugins.Lookup(args[0])
			if !ok {
				return fmt.Errorf("no built-in plugin %q", args[0])
			}
			sdk.Serve(b.New())
			return nil
		},
	})
	return plugin
}

func signalNotifyContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
}

func newReceiveCmd() *cobra.Command {
	var addr, secret, signature string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "receive",
		Short: "A local webhook receiver that verifies signatures and prints what arrives",
		RunE: func(cmd *cobra.Command, args []string) error {
			scheme, err := webhook.ParseScheme(signature)
			if err != nil {
				return fmt.Errorf("--signature: %w", err)
			}
			opts := receive.Options{JSON: asJSON, Out: os.Stdout, Log: os.Stderr, Scheme: scheme}
			if secret != "" {
				s, err := scheme.ParseSecret(secret)
				if err != nil {
					return fmt.Errorf("--secret: %w", err)
				}
				opts.Secret = s
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			h := receive.NewHandler(opts)
			err = receive.Serve(ctx, addr, h, func(a string) {
				verify := fmt.Sprintf("verifying %s signatures", scheme)
				if secret == "" {
					verify = "NOT verifying signatures (no --secret)"
				}
				fmt.Fprintf(os.Stderr, "listening on http://%s, %s\n", a, verify)
			})
			rcv, ok, bad := h.Stats()
			fmt.Fprintf(os.Stderr, "received %d deliveries (%d verified, %d rejected)\n", rcv, ok, bad)
			return err
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8787", "address to listen on")
	cmd.Flags().StringVar(&secret, "secret", os.Getenv("PIPELINE_RECEIVE_SECRET"), "the signing secret to verify against (whsec_… for standard)")
	cmd.Flags().StringVar(&signature, "signature", "standard", "signature scheme: standard, github, hub-sha1 or none")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each delivery's full body as a JSON line")
	return cmd
}

func newStateCmd(g *globals) *cobra.Command {
	stateCmd := &cobra.Command{Use: "state", Short: "Show or reset a pipeline's checkpoints"}
	pipelineName := func(file string) (string, error) {
		p, diags := config.Load(file)
		if diags.HasErrors() {
			printDiags(p, nil, diags)
			return "", &exitError{code: 1}
		}
		return p.Name, nil
	}
	var showCluster, resetCluster clusterFlags
	show := &cobra.Command{
		Use:   "show [FILE]",
		Short: "Show checkpoints (of the pipeline in FILE, or of all)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				var err error
				if name, err = pipelineName(args[0]); err != nil {
					return err
				}
			}
			if showCluster.enabled() {
				return showClusterState(cmd.Context(), &showCluster, name)
			}
			store, err := state.Open(g.statePath)
			if err != nil {
				return err
			}
			defer store.Close()
			list, err := store.List(cmd.Context(), name)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				fmt.Println("no checkpoints")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PIPELINE\tSOURCE\tRECORDS\tUPDATED\tPOSITION\tSINKS AHEAD")
			for _, c := range list {
				ahead, err := store.SinksAhead(cmd.Context(), c.Pipeline, c.Source)
				if err != nil {
					return err
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", c.Pipeline, c.Source, c.Records, c.UpdatedAt.Format("2006-01-02 15:04:05Z07:00"), c.Position, formatAhead(ahead))
			}
			return tw.Flush()
		},
	}
	showCluster.add(show.Flags(), false)
	stateCmd.AddCommand(show)
	reset := &cobra.Command{
		Use:   "reset FILE",
		Short: "Forget the checkpoints of the pipeline in FILE, so its next run starts over",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := pipelineName(args[0])
			if err != nil {
				return err
			}
			if resetCluster.enabled() {
				c, err := resetCluster.connect(cmd.Context(), nil)
				if err != nil {
					return err
				}
				defer c.Close()
				n, err := c.ResetCheckpoints(cmd.Context(), name)
				if err != nil {
					return err
				}
				fmt.Printf("reset %s: %d checkpoints removed from the cluster (workers reading its partitions start them over)\n", name, n)
				return nil
			}
			// A running pipeline would commit its positions over the reset.
			lock, err := lockPipeline(g, name)
			if err != nil {
				return err
			}
			defer lock.Close()
			store, err := state.Open(g.statePath)
			if err != nil {
				return err
			}
			defer store.Close()
			n, err := store.Reset(cmd.Context(), name)
			if err != nil {
				return err
			}
			fmt.Printf("reset %s: %d checkpoints removed\n", name, n)
			return nil
		},
	}
	resetCluster.add(reset.Flags(), false)
	stateCmd.AddCommand(reset)
	stateCmd.AddCommand(newVacuumCmd(g, pipelineName))
	return stateCmd
}

// formatAhead lists the sinks that acked records past a checkpoint, e.g.
// "out +30000 crm +512": a restarted run does not send them those again.
func formatAhead(ahead map[string]int64) string {
	names := make([]string, 0, len(ahead))
	for n := range ahead {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s +%d", n, ahead[n]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
