// Package cluster keeps what `pipeline serve --cluster` shares between
// workers in NATS JetStream: source checkpoints in a KV bucket, updated
// with compare-and-set; the leases that give each source partition to one
// worker at a time (KV entries with a TTL, renewed while held); the live
// workers (the same); and the outbox of action sinks as streams read
// through one shared durable consumer.
//
// Every name it creates starts with Options.Prefix, so that clusters (and
// tests) sharing one NATS server stay apart.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options say how to reach NATS and how the cluster's state is named.
type Options struct {
	// URLs are the NATS servers, comma-separated (nats://host:4222,…).
	URLs string
	// CredsFile is a NATS credentials file (--nats-creds); empty for none.
	CredsFile string
	// TLS requires TLS to the servers (--nats-tls), verified against the
	// system's roots, or against CAFile when set.
	TLS    bool
	CAFile string
	// Prefix starts the name of every bucket and stream (default
	// "pipeline"); letters, digits, '-' and '_'.
	Prefix string
	// Worker names this process in leases and logs (default host-pid-random).
	Worker string
	// LeaseTTL is how long a lease or a worker's presence lasts without
	// renewal (default 15 s): a killed worker's partitions are taken over
	// this long after it stopped renewing. Renewed every LeaseTTL/3.
	LeaseTTL time.Duration
	// Replicas of every bucket and stream (default 1; 3 on a cluster of
	// three NATS servers).
	Replicas int
	// StartWait, when positive, is how long Connect and Coordinator keep
	// trying while no NATS server can be reached or its JetStream is not
	// ready yet (a NATS cluster that starts with the workers, electing its
	// leaders), logging each failure. serve sets it; commands fail at once.
	StartWait time.Duration
	Logger    *slog.Logger
}

// Cluster is a connection to the cluster's state.
type Cluster struct {
	opts Options
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger

	checkpoints jetstream.KeyValue
	leases      jetstream.KeyValue
	workers     jetstream.KeyValue

	rlMu sync.Mutex
	rl   jetstream.KeyValue // the shared rate limits, made on first use

	firingsMu sync.Mutex
	firings   jetstream.KeyValue // who runs each scheduled firing, made on first use
}

// DefaultLeaseTTL is Options.LeaseTTL's default.
const DefaultLeaseTTL = 15 * time.Second

// Connect connects to NATS and creates the cluster's buckets where they do
// not exist. The connection reconnects forever: while NATS is away,
// operations fail and are retried by their callers.
func Connect(ctx context.Context, o Options) (*Cluster, error) {
	if o.URLs == "" {
		return nil, errors.New("cluster: no NATS URL")
	}
	if o.Prefix == "" {
		o.Prefix = "pipeline"
	}
	for _, r := range o.Prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return nil, fmt.Errorf("cluster: prefix %q: only letters, digits, '-' and '_'", o.Prefix)
		}
	}
	if o.Worker == "" {
		host, _ := os.Hostname()
		var b [3]byte
		rand.Read(b[:])
		o.Worker = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger
	nopts := []nats.Option{
		nats.Name("pipeline " + o.Worker),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected; reconnecting", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted()) }),
	}
	if o.CredsFile != "" {
		nopts = append(nopts, nats.UserCredentials(o.CredsFile))
	}
	if o.TLS {
		nopts = append(nopts, nats.Secure())
	}
	if o.CAFile != "" {
		nopts = append(nopts, nats.RootCAs(o.CAFile))
	}
	deadline := time.Now().Add(o.StartWait)
	var nc *nats.Conn
	for {
		var err error
		if nc, err = nats.Connect(o.URLs, nopts...); err == nil {
			break
		}
		if !errors.Is(err, nats.ErrNoServers) || !waitStart(ctx, deadline, log, "connecting to NATS", err) {
			return nil, fmt.Errorf("cluster: connecting to %s: %w", o.URLs, err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{opts: o, nc: nc, js: js, log: log}
	err = c.retryStart(ctx, deadline, "opening the cluster's buckets", func(ctx context.Context) (err error) {
		if c.checkpoints, err = c.bucket(ctx, o.Prefix+"_checkpoints", "pipeline: source checkpoints (serve --cluster)", 0); err == nil {
			if c.leases, err = c.bucket(ctx, o.Prefix+"_leases", "pipeline: who reads which source partition", o.LeaseTTL); err == nil {
				c.workers, err = c.bucket(ctx, o.Prefix+"_workers", "pipeline: the live workers", o.LeaseTTL)
			}
		}
		return err
	})
	if err != nil {
		nc.Close()
		return nil, explainPlacement(err, o.Replicas)
	}
	// The lease TTL is the cluster's, set when its buckets were made: every
	// worker must renew within the same one.
	if st, err := c.leases.Status(ctx); err == nil && st.TTL() > 0 && st.TTL() != o.LeaseTTL {
		if o.LeaseTTL != DefaultLeaseTTL {
			log.Warn("the cluster's lease TTL was set when its buckets were made; using it", "lease_ttl", st.TTL().String(), "asked", o.LeaseTTL.String())
		}
		c.opts.LeaseTTL = st.TTL()
	}
	return c, nil
}

// retryStart runs f, again while it fails in a way that a NATS server or
// cluster still starting explains (transient) and deadline has not
// passed. Each try gets 10 s.
func (c *Cluster) retryStart(ctx context.Context, deadline time.Time, what string, f func(context.Context) error) error {
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || !transient(err) || !waitStart(ctx, deadline, c.log, what, err) {
			return err
		}
	}
}

// waitStart logs why the start waits, and waits a second; false when
// deadline passed or ctx is done.
func waitStart(ctx context.Context, deadline time.Time, log *slog.Logger, what string, err error) bool {
	if !time.Now().Before(deadline) {
		return false
	}
	log.Warn("waiting for NATS JetStream", "while", what, "error", err.Error(), "gives_up_in", time.Until(deadline).Round(time.Second).String())
	sleep(ctx, time.Second)
	return ctx.Err() == nil
}

// transient reports whether err is what a NATS server or cluster that is
// starting answers (no answer in time, no JetStream responder yet, a
// stream without a leader yet, "temporarily unavailable").
func transient(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.As(err, &api) && (api.Code == 503 || api.Code == 504 || api.Code == 408 || api.ErrorCode == errNoPeers)
}

// errNoPeers is JetStream's "no suitable peers for placement": fewer
// servers count than the replicas asked for. A NATS cluster that is
// starting answers it until every server has reported to its meta leader;
// one with fewer servers than the replicas answers it for good.
const errNoPeers jetstream.ErrorCode = 10005

// explainPlacement adds to a "no suitable peers" error that outlasted the
// start wait what the replicas need.
func explainPlacement(err error, replicas int) error {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == errNoPeers {
		return fmt.Errorf("%w: %d replicas need %d JetStream servers of one NATS cluster up and reporting (--cluster-replicas)", err, replicas, replicas)
	}
	return err
}

// bucket opens a KV bucket of the cluster (its full name, the prefix
// included), creating it when it does not exist yet; an existing bucket is
// used as it is (its TTL included).
func (c *Cluster) bucket(ctx context.Context, full, what string, ttl time.Duration) (jetstream.KeyValue, error) {
	for range 3 {
		b, err := c.js.KeyValue(ctx, full)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("cluster: KV bucket %s: %w", full, err)
		}
		b, err = c.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: full, Description: what, TTL: ttl, History: 1,
			Storage: jetstream.FileStorage, Replicas: c.opts.Replicas,
		})
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, jetstream.ErrBucketExists) {
			return nil, fmt.Errorf("cluster: KV bucket %s: %w", full, err)
		}
		// Another worker made it meanwhile: open it.
	}
	return nil, fmt.Errorf("cluster: KV bucket %s: could not be opened or made", full)
}

// Close closes the connection. Leases still held expire after LeaseTTL;
// a worker that stops cleanly releases them first (Coordinator.Close).
func (c *Cluster) Close() { c.nc.Close() }

// Worker is this process's name in the cluster.
func (c *Cluster) Worker() string { return c.opts.Worker }

// JetStream is the cluster's JetStream context (for the outbox streams).
func (c *Cluster) JetStream() jetstream.JetStream { return c.js }

// Prefix starts every bucket and stream name of the cluster.
func (c *Cluster) Prefix() string { return c.opts.Prefix }

// Replicas is how many copies each bucket and stream keeps.
func (c *Cluster) Replicas() int { return c.opts.Replicas }

// LeaseTTL is how long a lease lasts without renewal.
func (c *Cluster) LeaseTTL() time.Duration { return c.opts.LeaseTTL }

// Logger is where the cluster's code logs.
func (c *Cluster) Logger() *slog.Logger { return c.log }

// Token turns any name (a pipeline, a sink, a file path) into one KV key or
// subject token: letters, digits, '-' and '_' are kept, every other byte is
// written as '=' and two hex digits ('=' itself too), so that distinct
// names never share a token and the key stays readable.
func Token(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "=%02X", c)
	}
	if b.Len() == 0 {
		return "=" // the empty name (a source of one partition)
	}
	return b.String()
}
