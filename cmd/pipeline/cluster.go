package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/pipelinehq/pipeline/engine/cluster"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/state"
)

// clusterFlags are the flags of commands that can work on a cluster's
// state in NATS JetStream (serve, state).
type clusterFlags struct {
	urls     string
	creds    string
	tls      bool
	caFile   string
	prefix   string
	leaseTTL time.Duration
	ackWait  time.Duration
	replicas int
	// startWait: serve's; commands do not wait.
	startWait time.Duration
}

func (f *clusterFlags) add(fs *pflag.FlagSet, serve bool) {
	fs.StringVar(&f.urls, "cluster", "", "NATS servers holding the cluster's state, e.g. nats://10.0.0.5:4222,nats://10.0.0.6:4222 (empty: this machine's state file)")
	fs.StringVar(&f.creds, "nats-creds", "", "NATS credentials file")
	fs.BoolVar(&f.tls, "nats-tls", false, "require TLS to the NATS servers")
	fs.StringVar(&f.caFile, "nats-ca", "", "CA certificates (PEM) to verify the NATS servers with, instead of the system's")
	fs.StringVar(&f.prefix, "cluster-prefix", "pipeline", "name prefix of the cluster's KV buckets and streams (clusters sharing a NATS server use different ones)")
	fs.IntVar(&f.replicas, "cluster-replicas", 1, "copies of each bucket and stream the cluster makes (3 on a three-server NATS cluster); existing ones keep theirs")
	if serve {
		fs.DurationVar(&f.leaseTTL, "lease-ttl", cluster.DefaultLeaseTTL, "how long a worker's partitions stay its own without renewal: a killed worker's are taken over after this")
		fs.DurationVar(&f.startWait, "cluster-start-wait", time.Minute, "how long serve keeps trying at start while no NATS server answers or its JetStream is not ready (a NATS cluster starting with the workers)")
		fs.DurationVar(&f.ackWait, "outbox-ack-wait", cluster.DefaultAckWait, "how long a delivery a worker took from an outbox, or a record its push source read from the inbox, stays its own without renewal: a killed worker's are delivered by another after this (keep it well above a sink's request timeout)")
	}
}

func (f *clusterFlags) enabled() bool { return f.urls != "" }

func (f *clusterFlags) connect(ctx context.Context, log *slog.Logger) (*cluster.Cluster, error) {
	c, err := cluster.Connect(ctx, cluster.Options{URLs: f.urls, CredsFile: f.creds, TLS: f.tls, CAFile: f.caFile,
		Prefix: f.prefix, LeaseTTL: f.leaseTTL, Replicas: f.replicas, StartWait: f.startWait, Logger: log})
	if err != nil {
		return nil, &exitError{code: 1, err: fmt.Errorf("--cluster: %w", err)}
	}
	return c, nil
}

// showClusterState prints the checkpoints a cluster keeps, one per source
// partition, and the workers alive now.
func showClusterState(ctx context.Context, f *clusterFlags, pipeline string) error {
	c, err := f.connect(ctx, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.Checkpoints(ctx, pipeline)
	if err != nil {
		return err
	}
	workers, err := c.Workers(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("workers: %d live", len(workers))
	if len(workers) > 0 {
		fmt.Printf(" (%s)", strings.Join(workers, ", "))
	}
	fmt.Println()
	if len(list) == 0 {
		fmt.Println("no checkpoints")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tSOURCE\tPARTITION\tRECORDS\tUPDATED\tBY\tPOSITION\tSINKS AHEAD")
	for _, cp := range list {
		ahead := map[string]int64{}
		for sink, m := range cp.Marks {
			ahead[sink] = state.MarkRecords(m)
		}
		part := cp.Partition
		if part == "" {
			part = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", cp.Pipeline, cp.Source, part, cp.Records,
			cp.UpdatedAt.Format("2006-01-02 15:04:05Z07:00"), cp.Worker, cp.Position, formatAhead(ahead))
	}
	return tw.Flush()
}

// clusterOutboxCollector serves, at scrape time, what the cluster's outbox
// streams hold for the sinks of the pipelines this worker serves (the same
// metric as on one machine, pipeline_outbox_deliveries, status pending or
// dead), and what its push sources' inbox streams hold
// (pipeline_push_records_pending, pipeline_push_oldest_pending_age_seconds):
// cluster-wide, so every worker reports the same figures.
type clusterOutboxCollector struct {
	c   *cluster.Cluster
	reg func() *registry
}

func (o *clusterOutboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descOutbox
	ch <- descPushPending
	ch <- descPushOldest
}

func (o *clusterOutboxCollector) Collect(ch chan<- prometheus.Metric) {
	reg := o.reg()
	if reg == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range reg.Pipelines() {
		if p.Config == nil {
			continue
		}
		// Push sources' inboxes (those of the run going on: the plan
		// knows which sources are push).
		if p.Runner != nil {
			for _, src := range p.Runner.Plan().Sources {
				if !src.Push {
					continue
				}
				records, oldest, ok, err := o.c.InboxCounts(ctx, p.Name, src.Name)
				if err != nil || !ok {
					continue
				}
				age := 0.0
				if !oldest.IsZero() {
					age = time.Since(oldest).Seconds()
				}
				ch <- prometheus.MustNewConstMetric(descPushPending, prometheus.GaugeValue, float64(records), p.Name, src.Name)
				ch <- prometheus.MustNewConstMetric(descPushOldest, prometheus.GaugeValue, age, p.Name, src.Name)
			}
		}
		for _, s := range p.Config.Sinks {
			pending, dead, ok, err := o.c.OutboxCounts(ctx, p.Name, s.Name)
			if err != nil || !ok {
				continue
			}
			ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(pending), p.Name, s.Name, "pending")
			ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(dead), p.Name, s.Name, "dead")
		}
	}
}

// onCluster makes a run share its state through the cluster when serve is
// a cluster worker: sinks' outboxes and push sources' inboxes are the
// cluster's streams, and sources are read by partition under leases.
func onCluster(g *globals, store *state.Store, lopts *run.LoadOptions, ropts *run.Options) {
	if g.cluster == nil {
		return
	}
	lopts.SinkState = func(ctx context.Context, pipeline, sink string) (run.SinkStateServer, error) {
		return g.cluster.OutboxService(ctx, pipeline, sink, cluster.OutboxOptions{AckWait: g.outboxAckWait})
	}
	// Push sources listen on every worker and share one inbox stream.
	lopts.SourceState = func(ctx context.Context, pipeline, source string) (run.SourceStateServer, error) {
		return g.cluster.InboxService(ctx, pipeline, source, cluster.InboxOptions{AckWait: g.outboxAckWait,
			OnRequests: func(by map[int]int64) { store.AddPushRequests(pipeline, source, by) },
			OnAccepted: func(n int64) { g.pushAccepted.WithLabelValues(pipeline, source).Add(float64(n)) }})
	}
	ropts.Coordinator = g.coordinator
}
