package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pipelinehq/pipeline/engine/cluster"
	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/state"
)

// deliveryFlags select deliveries for `deliveries` and `replay`.
type deliveryFlags struct {
	pipeline, sink, status, id, q string
	since                         time.Duration
}

func (f *deliveryFlags) register(cmd *cobra.Command, defaultStatus string) {
	cmd.Flags().StringVar(&f.pipeline, "pipeline", "", "the pipeline's name (default: from FILE; all pipelines without FILE)")
	cmd.Flags().StringVar(&f.sink, "sink", "", "only this sink (its block name)")
	cmd.Flags().StringVar(&f.status, "status", defaultStatus, "pending, delivered, failed (pending after a failed attempt) or dead")
	cmd.Flags().DurationVar(&f.since, "since", 0, "only deliveries changed within this long, e.g. 1h")
	cmd.Flags().StringVar(&f.id, "id", "", "only this delivery (its webhook-id)")
	cmd.Flags().StringVar(&f.q, "q", "", "only deliveries whose id, endpoint, last error or payload contains this text (any case)")
}

func (f *deliveryFlags) filter(args []string) (state.DeliveryFilter, error) {
	df := state.DeliveryFilter{Pipeline: f.pipeline, Sink: f.sink, Status: f.status, ID: f.id, Q: f.q}
	if len(args) == 1 && df.Pipeline == "" {
		p, diags := config.Load(args[0])
		if diags.HasErrors() {
			printDiags(p, nil, diags)
			return df, &exitError{code: 1}
		}
		df.Pipeline = p.Name
	}
	if f.since > 0 {
		df.Since = time.Now().Add(-f.since)
	}
	return df, nil
}

func newDeliveriesCmd(g *globals) *cobra.Command {
	var f deliveryFlags
	var asJSON, summary bool
	var limit int
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "deliveries [FILE]",
		Short: "List action sinks' deliveries and every attempt (the delivery log)",
		Long: `deliveries lists what action sinks delivered, are retrying and gave up on,
from the state file. With --cluster it reads a cluster's outbox streams
instead: --status dead lists a sink's dead letters, otherwise its delivery
log (every attempt, newest last); --sink and the pipeline are needed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			df, err := f.filter(args)
			if err != nil {
				return err
			}
			if cf.enabled() {
				return clusterDeliveries(cmd, &cf, df, limit, asJSON)
			}
			store, err := state.Open(g.statePath)
			if err != nil {
				return err
			}
			defer store.Close()
			if summary {
				return printSummary(cmd, store, df, asJSON)
			}
			if limit < 0 {
				return &exitError{code: 2, err: fmt.Errorf("--limit %d: want 0 (all) or more", limit)}
			}
			n := limit
			if n == 0 {
				n = math.MaxInt
			}
			list, err := store.Deliveries(cmd.Context(), df, n)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if limit > 0 && len(list) == limit {
				// Say so when the list is cut: on stderr, so that --json stays one document.
				if err := noteLimit(cmd, store, df, limit); err != nil {
					return &exitError{code: 1, err: err}
				}
			}
			if asJSON {
				type attempt struct {
					N          int       `json:"n"`
					At         time.Time `json:"at"`
					StatusCode int       `json:"status_code"`
					LatencyMs  int64     `json:"latency_ms"`
					Error      string    `json:"error,omitempty"`
					Response   string    `json:"response,omitempty"`
				}
				type entry struct {
					state.DeliveryRecord
					Log []attempt `json:"log"`
				}
				out := make([]entry, 0, len(list))
				for _, d := range list {
					e := entry{DeliveryRecord: d, Log: []attempt{}}
					for _, a := range d.Log {
						e.Log = append(e.Log, attempt{N: a.N, At: a.At, StatusCode: a.StatusCode, LatencyMs: a.Latency.Milliseconds(), Error: a.Error, Response: printable(a.Response)})
					}
					out = append(out, e)
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			if len(list) == 0 {
				fmt.Println("no deliveries")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PIPELINE\tSINK\tID\tSTATUS\tATTEMPTS\tLAST\tUPDATED\tNEXT\tERROR")
			for _, d := range list {
				last, next := "-", "-"
				if len(d.Log) > 0 {
					a := d.Log[len(d.Log)-1]
					last = fmt.Sprintf("%d in %s", a.StatusCode, a.Latency)
					if a.StatusCode == 0 {
						last = "no answer"
					}
				}
				if d.Status == state.StatusPending {
					next = d.NextAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.Pipeline, d.Sink, d.ID, d.Status, len(d.Log), last,
					d.UpdatedAt.Format(time.RFC3339), next, truncate(d.LastError, 80))
			}
			return tw.Flush()
		},
	}
	f.register(cmd, "")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print deliveries with their full log as JSON")
	cmd.Flags().BoolVar(&summary, "summary", false, "per sink and endpoint: counts by status, the oldest pending delivery and the circuit breaker's state")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many deliveries, most recently changed first; 0 for all")
	cf.add(cmd.Flags(), false)
	return cmd
}

// noteLimit tells on stderr that a list of limit deliveries left some out,
// and how many match in all.
func noteLimit(cmd *cobra.Command, store *state.Store, df state.DeliveryFilter, limit int) error {
	if df.ID != "" {
		return nil // one delivery at most
	}
	// Summary applies the filter but for status and id, and counts by status.
	eps, err := store.Summary(cmd.Context(), df)
	if err != nil {
		return err
	}
	total := 0
	for _, e := range eps {
		switch df.Status {
		case "":
			total += e.Pending + e.Delivered + e.Dead
		case state.StatusPending:
			total += e.Pending
		case state.StatusFailed:
			total += e.Retrying
		case state.StatusDelivered:
			total += e.Delivered
		case state.StatusDead:
			total += e.Dead
		}
	}
	if total > limit {
		fmt.Fprintf(cmd.ErrOrStderr(), "showing the newest %s of %s deliveries; --limit 0 for all\n", thousands(int64(limit)), thousands(int64(total)))
	}
	return nil
}

func newReplayCmd(g *globals) *cobra.Command {
	var f deliveryFlags
	var noWait bool
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "replay FILE --sink NAME",
		Short: "Send deliveries again (dead ones by default), with the same ids",
		Long: `replay queues deliveries again, with the same ids, and sends them (unless
--no-wait). With --cluster it puts a sink's dead letters (all, or --id) back
into the cluster's outbox stream, due now, and the workers send them.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.sink == "" {
				return &exitError{code: 2, err: fmt.Errorf("--sink is required: the sink whose deliveries to send again")}
			}
			df, err := f.filter(args)
			if err != nil {
				return err
			}
			if cf.enabled() {
				if df.Status != state.StatusDead {
					return &exitError{code: 2, err: fmt.Errorf("--cluster replays dead deliveries only (--status dead)")}
				}
				c, err := cf.connect(cmd.Context(), nil)
				if err != nil {
					return err
				}
				defer c.Close()
				var ids []string
				if df.ID != "" {
					ids = []string{df.ID}
				}
				n, err := c.Replay(cmd.Context(), df.Pipeline, df.Sink, ids)
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				fmt.Fprintf(os.Stderr, "replay: %d dead deliveries of sink %s put back into the cluster's outbox; the workers send them\n", n, f.sink)
				return nil
			}
			store, err := state.Open(g.statePath)
			if err != nil {
				return err
			}
			defer store.Close()
			n, err := store.Replay(cmd.Context(), df, time.Now())
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintf(os.Stderr, "replay: %d deliveries of sink %s queued again\n", n, f.sink)
			if n == 0 || noWait {
				return nil
			}
			ctx, stop := signalNotifyContext(cmd.Context())
			defer stop()
			l, diags, err := load(ctx, g, args, store, false)
			if err != nil {
				return err
			}
			printDiags(l.Config, nil, diags)
			if diags.HasErrors() {
				return &exitError{code: 1}
			}
			defer l.Close()
			start := time.Now()
			if err := l.DrainSinks(ctx, []string{f.sink}); err != nil {
				return &exitError{code: 1, err: err}
			}
			counts, err := store.DeliveryCounts(cmd.Context(), l.Plan.Pipeline, start)
			if err != nil {
				return err
			}
			c := counts[f.sink]
			fmt.Fprintf(os.Stderr, "replay: %s: %d delivered, %d dead, %d pending\n", f.sink, c.Delivered, c.Dead, c.Pending)
			if c.Dead > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f.register(cmd, "dead")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "only queue them again; the next run or `pipeline serve` sends them")
	cf.add(cmd.Flags(), false)
	return cmd
}

// clusterDeliveries prints a sink's dead letters (--status dead) or its
// delivery log from a cluster's streams.
func clusterDeliveries(cmd *cobra.Command, cf *clusterFlags, df state.DeliveryFilter, limit int, asJSON bool) error {
	if df.Pipeline == "" || df.Sink == "" {
		return &exitError{code: 2, err: fmt.Errorf("--cluster needs the pipeline (FILE or --pipeline) and --sink")}
	}
	c, err := cf.connect(cmd.Context(), nil)
	if err != nil {
		return err
	}
	defer c.Close()
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	if df.Status == state.StatusDead {
		list, err := c.DeadLetters(cmd.Context(), df.Pipeline, df.Sink, limit)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		if df.ID != "" {
			list = slices.DeleteFunc(list, func(d cluster.DeadLetter) bool { return d.ID != df.ID })
		}
		if asJSON {
			return enc.Encode(list)
		}
		if len(list) == 0 {
			fmt.Println("no dead deliveries")
			return nil
		}
		fmt.Fprintln(tw, "PIPELINE\tSINK\tID\tSTATUS\tATTEMPTS\tLAST\tDEAD AT\tBY\tERROR")
		for _, d := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\tdead\t%d\t%d\t%s\t%s\t%s\n", df.Pipeline, df.Sink, d.ID, d.Attempts, d.LastStatus,
				d.DeadAt.Format(time.RFC3339), d.Worker, truncate(d.LastError, 80))
		}
		return tw.Flush()
	}
	log, err := c.DeliveryLog(cmd.Context(), df.Pipeline, df.Sink, limit)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if df.ID != "" {
		log = slices.DeleteFunc(log, func(e cluster.LogEntry) bool { return e.ID != df.ID })
	}
	if asJSON {
		return enc.Encode(log)
	}
	if len(log) == 0 {
		fmt.Println("no attempts logged")
		return nil
	}
	fmt.Fprintln(tw, "PIPELINE\tSINK\tID\tOUTCOME\tATTEMPT\tSTATUS\tLATENCY\tAT\tBY\tERROR")
	for _, e := range log {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%dms\t%s\t%s\t%s\n", df.Pipeline, df.Sink, e.ID, e.Outcome, e.Attempts, e.StatusCode,
			e.LatencyMs, e.At.Format(time.RFC3339), e.Worker, truncate(e.Error, 80))
	}
	return tw.Flush()
}

// printSummary prints `deliveries --summary`.
func printSummary(cmd *cobra.Command, store *state.Store, df state.DeliveryFilter, asJSON bool) error {
	list, err := store.Summary(cmd.Context(), df)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if asJSON {
		if list == nil {
			list = []state.EndpointSummary{}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	if len(list) == 0 {
		fmt.Println("no deliveries")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tSINK\tENDPOINT\tPENDING\tRETRYING\tDELIVERED\tDEAD\tOLDEST PENDING\tCIRCUIT")
	for _, e := range list {
		oldest := "-"
		if e.OldestPending != nil {
			oldest = fmt.Sprintf("%s (%s ago)", e.OldestPending.Format(time.RFC3339), time.Since(*e.OldestPending).Round(time.Second))
		}
		circuit := e.Circuit
		if e.CircuitUntil != nil && e.Circuit == "open" {
			circuit += " until " + e.CircuitUntil.Format(time.RFC3339)
		}
		if e.CircuitReason != "" {
			circuit += ": " + e.CircuitReason
		}
		if e.CircuitSeen != nil {
			circuit += fmt.Sprintf(" (reported %s)", e.CircuitSeen.Format(time.RFC3339))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", e.Pipeline, e.Sink, e.Endpoint, e.Pending, e.Retrying, e.Delivered, e.Dead, oldest, circuit)
	}
	return tw.Flush()
}

// printable shows a response body as text, escaping what is not.
func printable(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return fmt.Sprintf("%q", b)
}

func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
