package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/state"
)

func newServeCmd(g *globals) *cobra.Command {
	var poll, logEvery time.Duration
	var metricsAddr, adminAddr string
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "serve DIR|FILE...",
		Short: "Run pipelines continuously: new records as they appear, webhook retries from the outbox, metrics",
		Long: `serve runs every pipeline file it is given (a directory means its *.hcl files)
until SIGINT or SIGTERM. Each source is read again every --poll; action sinks
keep delivering and retrying from their outbox all along. A pipeline that fails
is restarted after a pause. Prometheus metrics are served on --metrics-addr.

A pipeline whose pipeline block has a schedule runs on it instead: each firing
is one complete run, like ` + "`pipeline run --no-wait`" + ` (the file is read again,
sources are read to their end from their checkpoints, deliveries still pending
go out with the next run), and logs one summary line. A firing while the
previous run is still going is skipped.

serve holds the run lock of each pipeline while it runs it (a continuous
pipeline all along, a scheduled one during each firing), so that a run of it
(pipeline run) refuses meanwhile. A continuous pipeline whose lock another process
holds fails to start, and a firing that finds it held fails; the other
pipelines go on.

With --cluster, serve is one worker of many that share the same pipeline
files through NATS JetStream: each source is split into partitions (a file
of a glob, an S3 object; a table is one), each read by one worker at a time
under a lease renewed every --lease-ttl/3, with its checkpoint in a KV
bucket; action sinks' outboxes are JetStream streams every worker delivers
from. A worker that dies stops renewing, and the others take its partitions
over from their last commit. See docs/cluster.md.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := pipelineFiles(args)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			// Check everything before starting anything.
			failed := false
			configs := map[string]*config.Pipeline{}
			for _, f := range files {
				p, diags := config.Load(f)
				printDiags(p, nil, diags)
				failed = failed || diags.HasErrors()
				configs[f] = p
			}
			if failed {
				return &exitError{code: 1}
			}
			store, err := state.Open(g.statePath)
			if err != nil {
				return err
			}
			defer store.Close()
			log := logger(os.Stderr, true)
			if cf.enabled() {
				c, err := cf.connect(cmd.Context(), log)
				if err != nil {
					return err
				}
				defer c.Close()
				co, err := c.Coordinator(cmd.Context())
				if err != nil {
					return &exitError{code: 1, err: fmt.Errorf("--cluster: %w", err)}
				}
				defer co.Close(context.WithoutCancel(cmd.Context()))
				g.cluster, g.coordinator, g.outboxAckWait = c, co, cf.ackWait
				log.Info("cluster worker", "worker", c.Worker(), "nats", cf.urls, "prefix", c.Prefix(), "lease_ttl", c.LeaseTTL().String())
			}

			ctx, abort := context.WithCancel(cmd.Context())
			defer abort()
			drain := make(chan struct{})
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			go func() {
				if s, ok := <-sigs; ok {
					log.Info("stopping: finishing the batches in flight (again to abort)", "signal", s.String())
					close(drain)
				}
				if _, ok := <-sigs; ok {
					abort()
				}
			}()

			promReg := prometheus.NewRegistry()
			m := newServeMetrics(promReg, store, g.cluster == nil)
			if metricsAddr != "" {
				ln, err := net.Listen("tcp", metricsAddr)
				if err != nil {
					return &exitError{code: 1, err: fmt.Errorf("--metrics-addr: %w", err)}
				}
				srv := &http.Server{Handler: promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
				go srv.Serve(ln)
				defer srv.Close()
				log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
			}

			reg := newRegistry(g, args, store, poll, logEvery, ctx, drain, m, log)
			if g.cluster != nil {
				promReg.MustRegister(&clusterOutboxCollector{c: g.cluster, reg: func() *registry { return reg }}, g.pushAccepted)
			}
			if adminAddr != "" {
				stopAdmin, err := serveAdmin(adminAddr, store, reg, promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}), log)
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				defer stopAdmin()
			}
			started := make(chan bool, len(files))
			continuous := 0
			for _, f := range files {
				if configs[f].ScheduleSpec == nil {
					continuous++
				}
				reg.start(f, configs[f], started)
			}
			// A continuous pipeline reports once it stopped (false: it never
			// got its run lock), a scheduled one at once; so this waits, like
			// reg.wait, until serve is done, and counts the pipelines that
			// could not start.
			unstarted := 0
			for range files {
				if !<-started {
					unstarted++
				}
			}
			reg.wait()
			if continuous == len(files) && unstarted == continuous {
				return &exitError{code: exitLocked, err: errors.New("no pipeline could start: each is already running on this state store")}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&poll, "poll", 5*time.Second, "how often drained sources are read again")
	cmd.Flags().DurationVar(&logEvery, "log-every", 30*time.Second, "how often each pipeline logs its counters")
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:9464", "where to serve Prometheus metrics (empty: off)")
	cf.add(cmd.Flags(), true)
	cmd.Flags().StringVar(&adminAddr, "admin-addr", "", "where to serve the admin API and web console, e.g. 127.0.0.1:8700 (empty: off); requests need PIPELINE_ADMIN_TOKEN")
	return cmd
}

// pipelineFiles expands directories into their *.hcl files.
func pipelineFiles(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, a)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(a, "*.hcl"))
		if err != nil {
			return nil, err
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("%s holds no *.hcl pipeline files", a)
		}
		sort.Strings(matches)
		out = append(out, matches...)
	}
	return out, nil
}

// servePipeline runs one pipeline until drain, restarting it after a
// failure. It holds the pipeline's run lock all along; when another process
// holds it, the pipeline does not start (the others go on) and it returns
// false.
func servePipeline(ctx context.Context, g *globals, file, name string, store *state.Store, poll, logEvery time.Duration, drain chan struct{}, m *serveMetrics, log *slog.Logger, e *entry) (started bool) {
	lock, err := state.LockPipeline(g.statePath, name)
	if err != nil {
		log.Error("pipeline failed to start", "pipeline", name, "file", file, "error", err)
		e.end(nil, err, false)
		return false
	}
	defer lock.Close()
	backoff := 5 * time.Second
	for {
		err := serveOnce(ctx, g, file, store, poll, logEvery, drain, m, log, e)
		select {
		case <-drain:
			return true
		case <-ctx.Done():
			return true
		default:
		}
		log.Error("pipeline failed; restarting", "file", file, "in", backoff.String(), "error", err)
		select {
		case <-time.After(backoff):
		case <-drain:
			return true
		case <-ctx.Done():
			return true
		}
		backoff = min(2*backoff, 5*time.Minute)
	}
}

func serveOnce(ctx context.Context, g *globals, file string, store *state.Store, poll, logEvery time.Duration, drain chan struct{}, m *serveMetrics, log *slog.Logger, e *entry) error {
	// NoWait: on shutdown, pending deliveries stay in the outbox for the
	// next start instead of holding the process.
	stop := make(chan struct{})
	var name string
	var stats *run.Stats
	lopts := run.LoadOptions{Store: store, NoWait: true}
	ropts := run.Options{Store: store, Drain: drain, Poll: poll, Logger: log}
	onCluster(g, store, &lopts, &ropts)
	x, err := execute(ctx, g, []string{file}, lopts, ropts, func(x *run.Execution) {
		name, stats = x.Plan.Pipeline, x.Runner.Stats
		m.track(name, stats)
		e.begin(x.Runner)
		log.Info("serving", "pipeline", name, "file", file)
		go func() {
			tick := time.NewTicker(logEvery)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					log.Info(run.FormatLine(stats.Snapshot()), "pipeline", name)
				case <-stop:
					return
				}
			}
		}()
	})
	close(stop)
	if x.Runner == nil && err == nil {
		printExecDiags(x)
		err = errors.New("the pipeline has errors")
	}
	e.end(x.Runner, err, errors.Is(err, run.ErrInterrupted) || ctx.Err() != nil)
	if x.Runner == nil {
		return err
	}
	if stats != nil {
		log.Info("stopped: "+run.FormatLine(stats.Snapshot()), "pipeline", name)
	}
	if errors.Is(err, run.ErrInterrupted) {
		return nil
	}
	return err
}

// serveMetrics exposes each pipeline's counters and its outboxes.
type serveMetrics struct {
	mu    sync.Mutex
	stats map[string]*run.Stats
	// ended sums the counters of a scheduled pipeline's finished runs, so
	// that its counters only grow from run to run.
	ended map[string]run.Snapshot
	runs  *prometheus.CounterVec
}

// newServeMetrics registers serve's metrics; localOutbox says whether the
// outboxes are the state file's (a cluster's are reported by
// clusterOutboxCollector).
func newServeMetrics(reg *prometheus.Registry, store *state.Store, localOutbox bool) *serveMetrics {
	m := &serveMetrics{
		stats: map[string]*run.Stats{},
		ended: map[string]run.Snapshot{},
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pipeline_scheduled_runs_total",
			Help: "Runs of scheduled pipelines by outcome: succeeded, failed, interrupted (by shutdown), skipped (the previous run was still going) or elsewhere (with --cluster: another worker ran the firing).",
		}, []string{"pipeline", "outcome"}),
	}
	reg.MustRegister(m)
	reg.MustRegister(m.runs)
	if localOutbox {
		reg.MustRegister(&outboxCollector{store: store})
	}
	reg.MustRegister(&pushCollector{store: store, inboxes: localOutbox})
	return m
}

func (m *serveMetrics) track(pipeline string, s *run.Stats) {
	m.mu.Lock()
	m.stats[pipeline] = s
	m.mu.Unlock()
}

// startRun tracks a scheduled run's counters while it runs.
func (m *serveMetrics) startRun(pipeline string, s *run.Stats) { m.track(pipeline, s) }

// endRun adds a finished scheduled run's counters to the pipeline's totals.
func (m *serveMetrics) endRun(pipeline string, s *run.Stats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stats[pipeline] != s {
		return
	}
	delete(m.stats, pipeline)
	m.ended[pipeline] = addSnapshots(m.ended[pipeline], s.Snapshot())
}

func (m *serveMetrics) scheduledRun(pipeline, outcome string) {
	m.runs.WithLabelValues(pipeline, outcome).Inc()
}

func addSnapshots(a, b run.Snapshot) run.Snapshot {
	out := run.Snapshot{Read: a.Read + b.Read, Filtered: a.Filtered + b.Filtered, Skipped: a.Skipped + b.Skipped, Rejected: a.Rejected + b.Rejected, Delivered: a.Delivered + b.Delivered, Sinks: map[string]int64{}}
	for k, v := range a.Sinks {
		out.Sinks[k] += v
	}
	for k, v := range b.Sinks {
		out.Sinks[k] += v
	}
	return out
}

var (
	descRead      = prometheus.NewDesc("pipeline_records_read_total", "Records the sources emitted (since this process started the pipeline).", []string{"pipeline"}, nil)
	descFiltered  = prometheus.NewDesc("pipeline_records_filtered_total", "Records dropped by filters.", []string{"pipeline"}, nil)
	descSkipped   = prometheus.NewDesc("pipeline_records_skipped_total", "Bad records the sources skipped.", []string{"pipeline"}, nil)
	descRejected  = prometheus.NewDesc("pipeline_records_rejected_total", "Records a filter or sink dropped because an expression failed on them (on_error = \"skip\").", []string{"pipeline"}, nil)
	descDelivered = prometheus.NewDesc("pipeline_records_acked_total", "Records acked by each sink.", []string{"pipeline", "sink"}, nil)
	descOutbox    = prometheus.NewDesc("pipeline_outbox_deliveries", "Deliveries in action sinks' outboxes, by status.", []string{"pipeline", "sink", "status"}, nil)
	descCircuit   = prometheus.NewDesc("pipeline_outbox_circuit_open", "1 for each endpoint whose circuit breaker is open, half-open or disabled (410 Gone), as its sink last reported.", []string{"pipeline", "sink", "endpoint", "state"}, nil)
)

// Describe implements prometheus.Collector.
func (m *serveMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRead
	ch <- descFiltered
	ch <- descSkipped
	ch <- descRejected
	ch <- descDelivered
}

// Collect implements prometheus.Collector.
func (m *serveMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	totals := map[string]run.Snapshot{}
	for p, snap := range m.ended {
		totals[p] = snap
	}
	for p, s := range m.stats {
		totals[p] = addSnapshots(totals[p], s.Snapshot())
	}
	for p, snap := range totals {
		ch <- prometheus.MustNewConstMetric(descRead, prometheus.CounterValue, float64(snap.Read), p)
		ch <- prometheus.MustNewConstMetric(descFiltered, prometheus.CounterValue, float64(snap.Filtered), p)
		ch <- prometheus.MustNewConstMetric(descSkipped, prometheus.CounterValue, float64(snap.Skipped), p)
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(snap.Rejected), p)
		for sink, n := range snap.Sinks {
			ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(n), p, sink)
		}
	}
}

// outboxCollector reads the outbox counts from the store at scrape time.
type outboxCollector struct{ store *state.Store }

func (o *outboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descOutbox; ch <- descCircuit }

func (o *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := o.store.OutboxCounts(ctx)
	if err != nil {
		return
	}
	for _, c := range counts {
		ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(c.N), c.Pipeline, c.Sink, c.Status)
	}
	circuits, err := o.store.Circuits(ctx)
	if err != nil {
		return
	}
	for _, c := range circuits {
		ch <- prometheus.MustNewConstMetric(descCircuit, prometheus.GaugeValue, 1, c.Pipeline, c.Sink, c.Endpoint, c.State)
	}
}

var (
	descPushRequests = prometheus.NewDesc("pipeline_push_requests_total", "Requests a push source (source \"http\", source \"webhook\") answered, by HTTP status code (since this process started it).", []string{"pipeline", "source", "code"}, nil)
	descPushAccepted = prometheus.NewDesc("pipeline_push_records_accepted_total", "Records a push source stored in its inbox (over the state store's life).", []string{"pipeline", "source"}, nil)
	descPushPending  = prometheus.NewDesc("pipeline_push_records_pending", "Accepted records not yet acked by every sink.", []string{"pipeline", "source"}, nil)
	descPushOldest   = prometheus.NewDesc("pipeline_push_oldest_pending_age_seconds", "Age of the oldest accepted record not yet acked by every sink (0: none).", []string{"pipeline", "source"}, nil)
)

// pushCollector reads the push sources' inboxes from the store at scrape
// time, and the request counts they reported.
type pushCollector struct {
	store *state.Store
	// inboxes: the inboxes are the state file's (a cluster's are reported
	// by clusterOutboxCollector; only the request counts come from here).
	inboxes bool
}

func (c *pushCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPushRequests
	if c.inboxes {
		ch <- descPushAccepted
		ch <- descPushPending
		ch <- descPushOldest
	}
}

func (c *pushCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.store.PushRequests() {
		ch <- prometheus.MustNewConstMetric(descPushRequests, prometheus.CounterValue, float64(r.N), r.Pipeline, r.Source, strconv.Itoa(r.Status))
	}
	if !c.inboxes {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.store.InboxCounts(ctx)
	if err != nil {
		return
	}
	for _, n := range counts {
		ch <- prometheus.MustNewConstMetric(descPushAccepted, prometheus.CounterValue, float64(n.Accepted), n.Pipeline, n.Source)
		ch <- prometheus.MustNewConstMetric(descPushPending, prometheus.GaugeValue, float64(n.Pending), n.Pipeline, n.Source)
		age := 0.0
		if !n.Oldest.IsZero() {
			age = time.Since(n.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descPushOldest, prometheus.GaugeValue, age, n.Pipeline, n.Source)
	}
}
