package cluster

// The outbox of an action sink as JetStream streams (`pipeline serve
// --cluster`): the plugin protocol's State service (Enqueue, Lease, Record,
// Pending, SetRetention, Paused) served from streams that every worker of
// the cluster shares, so that several workers deliver one sink's backlog
// together and a killed worker loses nothing.
//
// Layout (outbox_names.go has the names):
//
//   - One stream per pipeline and sink holds what is left to deliver: file
//     storage, Replicas() copies, WorkQueue retention (a delivery leaves
//     the stream when it is acked: delivered, or moved to the dead
//     letter), and a duplicates window (OutboxOptions.DedupeWindow) over
//     Nats-Msg-Id = the delivery id, so that re-enqueueing after a crash
//     stores nothing twice within the window.
//   - Deliveries without an order key go to one subject, read by one
//     durable pull consumer that every worker shares ("deliver"); its
//     MaxAckPending is unlimited, so nothing unordered is serialised.
//   - Deliveries with an order key go to one of Lanes subjects, by a hash
//     of the key; each lane has its own shared durable pull consumer with
//     MaxAckPending 1. So a lane hands out one delivery at a time to one
//     worker of the whole cluster, in stream order, and the next only
//     when that one is acked (delivered or dead): a retry is a delayed nak,
//     which keeps it pending, so it blocks its lane until it is done. One
//     key is thus delivered by one worker at a time, in order; keys that
//     share a lane wait for each other (that is the price: at most Lanes
//     keys are in flight at once).
//   - A dead-letter stream per sink (one subject per delivery id, the last
//     one kept) and a delivery-log stream per sink (every attempt, JSON),
//     both Limits retention with the sink's retention as MaxAge.
//   - A KV bucket (P_attempts) holds the attempt count of deliveries that
//     failed and wait for a retry, by stream sequence; one (P_paused)
//     holds the paused sinks.
//
// Attempts: JetStream's delivery count also counts what is handed back
// unattempted (not due, an endpoint skipped, a released lease, a lease
// that expired), so it is not the attempt count. A FAILED result writes
// the delivery's attempts (prior + 1) to the attempts bucket before the
// delayed nak; Lease reads it back for a message delivered more than once
// (a first delivery has made no attempt). A delivered or dead delivery's
// entry is deleted. RELEASE leaves it as it is (attempts unchanged).
// Replay publishes a new message, so its count starts again from 0.
//
// Why no MaxDeliver and no BackOff on the consumers: the sink's own retry
// schedule (sdk/delivery, with jitter and Retry-After) decides when a
// delivery is tried again, given to the server as the nak's delay, and
// when it is dead: a server-side MaxDeliver would count hand-backs as
// attempts and drop a delivery without a dead letter, and BackOff only
// paces redeliveries after AckWait expires (a worker that died).
//
// Enqueue never leases (EnqueueResponse.leased is always empty): with a
// shared consumer a worker cannot take exactly the messages it just
// published (the consumer hands out the oldest due ones to whoever asks
// first). The deliverer of sdk/delivery then leases them through Lease,
// which it calls at once after each Enqueue (its loop is woken).
//
// A lease is the consumer's: AckWait (OutboxOptions.AckWait, longer than
// any request) after a delivery was handed out, it goes to another worker
// unless this one renews it (InProgress, sent for deliveries held longer
// than half of AckWait). A worker that dies renews nothing: what it held
// is delivered again by another worker after AckWait.

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// OutboxOptions tune an OutboxService.
type OutboxOptions struct {
	// AckWait is how long a leased delivery stays with its worker without
	// a renewal (default 2 min): longer than any request a sink makes.
	// A worker that dies holding deliveries has them delivered again by
	// another worker this long after it stopped renewing them.
	AckWait time.Duration
	// DedupeWindow is how long an enqueued delivery id dedupes a later
	// enqueue of the same id (default 10 min).
	DedupeWindow time.Duration
	// Lanes is the number of lanes order keys are hashed into (default
	// 32): at most this many keys are in flight at once. It is fixed when
	// the outbox stream is created (kept in its description); a worker
	// asking for another count of an existing outbox gets an error.
	Lanes int
	// SkipDelay is how long a delivery handed back unattempted (its
	// endpoint was skipped by the lease) stays away (default 1 s).
	SkipDelay time.Duration
	// MaxHeld bounds the deliveries this worker holds leased at once
	// (default 512), whatever a Lease asks for: the rest stays in the
	// stream for the other workers, and a worker that dies holds back at
	// most this many for AckWait.
	MaxHeld int
}

// The defaults of OutboxOptions.
const (
	DefaultAckWait      = 2 * time.Minute
	DefaultDedupeWindow = 10 * time.Minute
	DefaultLanes        = 32
	DefaultSkipDelay    = time.Second
	DefaultMaxHeld      = 512
	maxLanes            = 1024
)

const (
	// opTimeout bounds a call that has no deadline of its own (the
	// deliverer's Record has none): while NATS is away it fails after
	// this long, and the caller tries again.
	opTimeout = 30 * time.Second
	// ackTimeout bounds one confirmed ack or nak; apiTimeout one JetStream
	// API request made inside a Lease.
	ackTimeout = 5 * time.Second
	apiTimeout = 5 * time.Second
	// leaseRound is the most one fetch of a Lease asks for.
	leaseRound = 256
	// laneFetchWait is how long a fetch from a lane that has a delivery
	// ready waits (it returns at once unless another worker took it
	// first); laneProbeWait how long a probe of a lane held by another
	// worker waits (its delivery may be back: an expired lease, a retry
	// now due).
	laneFetchWait = 100 * time.Millisecond
	laneProbeWait = 5 * time.Millisecond
	// maxReady bounds the deliveries fetched and kept for a later Lease.
	maxReady = 4096
	// maxDues bounds the due times kept for next_due_unix_ms.
	maxDues = 1 << 16
	// pausedRetry is how far ahead Lease says the next delivery is due
	// while the sink is paused; pauseTTL how long the paused flag read is
	// trusted (a pause through another process is seen this late).
	pausedRetry = time.Second
	// fullRetry is how far ahead Lease says the next delivery is due while
	// this worker holds MaxHeld.
	fullRetry = 50 * time.Millisecond
	pauseTTL  = 500 * time.Millisecond
	// parallelOps bounds the requests one call has in flight at once.
	parallelOps = 64
)

// pauseGen counts the pauses and resumes made through SetPaused in this
// process: a service whose cached flag is older reads it again at once.
var pauseGen atomic.Uint64

// OutboxService serves one sink's outbox from JetStream, for one worker:
// a pluginv1.StateServer (the Inbox methods are not served). Several
// workers each run one for the same pipeline and sink and share the work.
type OutboxService struct {
	pluginv1.UnimplementedStateServer

	c        *Cluster
	pipeline string
	sink     string
	opts     OutboxOptions
	n        outboxNames
	log      *slog.Logger

	stream    jetstream.Stream
	dead      jetstream.Stream
	logs      jetstream.Stream
	unordered jetstream.Consumer
	lanes     []jetstream.Consumer
	attempts  jetstream.KeyValue
	paused    jetstream.KeyValue
	// circuitsKV holds the open circuits of the cluster's sinks (circuits.go).
	circuitsKV jetstream.KeyValue
	// attemptsStream is the attempts bucket's stream, to delete entries by
	// sequence.
	attemptsStream jetstream.Stream

	leaseMu sync.Mutex // one Lease at a time

	mu        sync.Mutex
	held      map[string]*entry // handed out by Lease, by delivery id
	ready     []*entry          // fetched and kept for a later Lease
	laneDue   []time.Time       // when the head of a lane this service handed back is due again
	laneProbe []time.Time       // when this service last probed a lane held elsewhere
	dues      dueHeap           // due times of what this service handed back for later
	circuits  map[string]sdk.Circuit
	// openUntil: the cluster's open circuits (circuits.go), as read at
	// circuitsRead.
	openUntil    map[string]time.Time
	circuitsRead time.Time
	live         state.Progress // Pending: as last read; Retrying: as this service saw it
	closed       bool

	stopWaiting atomic.Bool
	pause       pauseCache

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

var _ pluginv1.StateServer = (*OutboxService)(nil)

// entry is a delivery fetched from the outbox stream, held by this worker.
type entry struct {
	holding
	seq       uint64 // in the outbox stream
	delivered uint64 // by the consumer, this time included
	id        string
	endpoint  string
	key       string
	payload   []byte
	attempts  int
	lane      int // -1: no order key
	// attemptsRev is the revision (sequence in the attempts bucket's
	// stream) of its attempt count, 0 when none is stored.
	attemptsRev uint64
	enqueued    time.Time
	notBefore   time.Time
}

// OutboxService starts serving the outbox of a pipeline's sink, creating
// its streams, consumers and buckets where they do not exist. Call Close
// when the sink's session ends.
func (c *Cluster) OutboxService(ctx context.Context, pipeline, sink string, opts OutboxOptions) (*OutboxService, error) {
	if pipeline == "" || sink == "" {
		return nil, errors.New("cluster: outbox: a pipeline and a sink name are needed")
	}
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultAckWait
	}
	if opts.DedupeWindow <= 0 {
		opts.DedupeWindow = DefaultDedupeWindow
	}
	if opts.Lanes <= 0 {
		opts.Lanes = DefaultLanes
	}
	if opts.Lanes > maxLanes {
		return nil, fmt.Errorf("cluster: outbox: at most %d lanes", maxLanes)
	}
	if opts.SkipDelay <= 0 {
		opts.SkipDelay = DefaultSkipDelay
	}
	if opts.MaxHeld <= 0 {
		opts.MaxHeld = DefaultMaxHeld
	}
	s := &OutboxService{c: c, pipeline: pipeline, sink: sink, opts: opts, n: c.outboxNames(pipeline, sink),
		log:  c.log.With("pipeline", pipeline, "sink", sink),
		held: map[string]*entry{}, circuits: map[string]sdk.Circuit{},
		laneDue: make([]time.Time, opts.Lanes), laneProbe: make([]time.Time, opts.Lanes)}
	wrap := func(err error) error { return fmt.Errorf("cluster: outbox %s/%s: %w", pipeline, sink, err) }
	if err := s.setup(ctx); err != nil {
		return nil, wrap(err)
	}
	if info, err := s.stream.Info(ctx); err == nil {
		s.live.Pending = int64(info.State.Msgs)
	}
	kctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go s.keepAlive(kctx)
	return s, nil
}

func (s *OutboxService) setup(ctx context.Context) error {
	js, n, opts := s.c.js, s.n, s.opts
	var err error
	if s.attempts, err = s.c.bucket(ctx, n.attemptsBucket, "pipeline: attempts of outbox deliveries waiting for a retry", 0); err != nil {
		return err
	}
	if s.attemptsStream, err = js.Stream(ctx, "KV_"+n.attemptsBucket); err != nil {
		return fmt.Errorf("KV bucket %s: %w", n.attemptsBucket, err)
	}
	if s.paused, err = s.c.bucket(ctx, n.pausedBucket, "pipeline: paused sinks", 0); err != nil {
		return err
	}
	if s.circuitsKV, err = s.c.bucket(ctx, s.c.opts.Prefix+"_circuits", "pipeline: action sinks' open circuit breakers, shared by the workers", 0); err != nil {
		return err
	}
	var created bool
	s.stream, created, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name: n.stream, Description: lanesDescription(s.pipeline, s.sink, opts.Lanes),
		Subjects:  []string{n.unorderedSubject(), n.subject + ".k.*"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: s.c.opts.Replicas,
		Duplicates: opts.DedupeWindow,
	})
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.stream, err)
	}
	cfg := s.stream.CachedInfo().Config
	if l := lanesOf(cfg.Description); l != opts.Lanes {
		return fmt.Errorf("stream %s was made with %d lanes for order keys, not %d: every worker must use the same", n.stream, l, opts.Lanes)
	}
	if cfg.Duplicates != opts.DedupeWindow {
		cfg.Duplicates = opts.DedupeWindow
		if s.stream, err = js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: duplicates window: %w", n.stream, err)
		}
	}
	if created {
		// A new stream numbers its messages from 1 again: attempts kept
		// for an earlier one (deleted by a reset) must not be read back.
		if err := s.attemptsStream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+n.attemptsBucket+"."+n.key+".>")); err != nil {
			return fmt.Errorf("attempts of an earlier outbox: %w", err)
		}
	}
	ret := sdk.DefaultRetention
	if s.dead, _, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name: n.dead, Description: fmt.Sprintf("pipeline: dead letters of %s/%s", s.pipeline, s.sink),
		Subjects:  []string{n.deadSubject + ".*"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: s.c.opts.Replicas,
		MaxMsgsPerSubject: 1, MaxAge: ret.Dead, Duplicates: min(opts.DedupeWindow, ret.Dead),
	}); err != nil {
		return fmt.Errorf("stream %s: %w", n.dead, err)
	}
	if s.logs, _, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name: n.log, Description: fmt.Sprintf("pipeline: delivery log of %s/%s", s.pipeline, s.sink),
		Subjects:  []string{n.logSubject + ".*"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: s.c.opts.Replicas,
		MaxAge: ret.Attempts,
	}); err != nil {
		return fmt.Errorf("stream %s: %w", n.log, err)
	}
	consumer := func(name, subject string, maxAckPending int, what string) (jetstream.Consumer, error) {
		c, err := ensureConsumer(ctx, s.stream, jetstream.ConsumerConfig{
			Durable: name, Description: what, FilterSubject: subject,
			DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: opts.AckWait, MaxDeliver: -1, MaxAckPending: maxAckPending, Replicas: s.c.opts.Replicas,
		})
		if err != nil {
			return nil, fmt.Errorf("consumer %s of %s: %w", name, n.stream, err)
		}
		return c, nil
	}
	if s.unordered, err = consumer(unorderedConsumer, n.unorderedSubject(), -1, "pipeline: deliveries without an order key"); err != nil {
		return err
	}
	s.lanes = make([]jetstream.Consumer, opts.Lanes)
	for i := range s.lanes {
		if s.lanes[i], err = consumer(laneConsumer(i), n.laneSubject(i), 1, "pipeline: deliveries of the order keys of one lane, one at a time"); err != nil {
			return err
		}
	}
	return nil
}

// ensureStream returns a stream, creating it when it does not exist. A
// stream that exists is left as it is: its MaxAge is the sink's retention,
// which SetRetention set, and a new session must not undo it.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, bool, error) {
	st, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		return st, false, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, false, err
	}
	st, err = js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another worker was first
		st, err = js.Stream(ctx, cfg.Name)
		return st, false, err
	}
	return st, err == nil, err
}

// ensureConsumer returns a durable consumer, creating it when it does not
// exist and updating it only when it differs in what is set here (every
// worker starting a session would otherwise rewrite every consumer of the
// outbox).
func ensureConsumer(ctx context.Context, st jetstream.Stream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := st.Consumer(ctx, cfg.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = st.CreateConsumer(ctx, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) { // another worker was first
			c, err = st.Consumer(ctx, cfg.Durable)
		}
	}
	if err != nil {
		return nil, err
	}
	have := c.CachedInfo().Config
	if have.AckWait == cfg.AckWait && have.MaxAckPending == cfg.MaxAckPending && have.FilterSubject == cfg.FilterSubject &&
		have.MaxDeliver == cfg.MaxDeliver && have.AckPolicy == cfg.AckPolicy {
		return c, nil
	}
	return st.UpdateConsumer(ctx, cfg)
}

// Close ends the service: it stops renewing the leases it holds (another
// worker gets those deliveries after AckWait: a sink that stops cleanly has
// recorded or released them already) and hands back at once what it
// fetched and never handed out. Later calls fail with Unavailable.
func (s *OutboxService) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		s.mu.Lock()
		s.closed = true
		ready := s.ready
		s.ready = nil
		s.held = map[string]*entry{}
		s.mu.Unlock()
		back := make([]handBack, len(ready))
		for i, e := range ready {
			back[i] = handBack{e, 0}
		}
		s.handBackAll(back)
	})
	return nil
}

// StopWaiting tells the sink, through Pending, that the run was
// interrupted: it should stop waiting for its pending deliveries and end
// its stream, leaving them queued.
func (s *OutboxService) StopWaiting() { s.stopWaiting.Store(true) }

// Progress returns what the outbox did through this service (Queued,
// Delivered, Dead), what the cluster's outbox held when this service last
// looked (Pending), the deliveries whose failure this service recorded and
// that have not finished through it (Retrying: another worker may finish
// them), and the circuits this worker's sink reported as not closed.
func (s *OutboxService) Progress() state.Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.live
	p.Paused = s.pause.last.Load()
	p.Circuits = s.circuitsLocked()
	return p
}

// Circuits returns the endpoints whose circuit this worker's sink last
// reported as open, half-open or disabled. (Kept in memory, per worker.)
func (s *OutboxService) Circuits() []sdk.Circuit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.circuitsLocked()
}

func (s *OutboxService) circuitsLocked() []sdk.Circuit {
	out := make([]sdk.Circuit, 0, len(s.circuits))
	for _, c := range s.circuits {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Endpoint < out[j].Endpoint })
	return out
}

// Held is how many deliveries this service has handed out and not had a
// result for.
func (s *OutboxService) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

var errClosed = status.Error(codes.Unavailable, "cluster: the outbox service is closed")

func (s *OutboxService) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *OutboxService) grpcErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	return status.Error(codes.Unavailable, fmt.Sprintf("cluster: outbox %s/%s: %s: %v", s.pipeline, s.sink, op, err))
}

// opContext is the context of a write: one that has begun finishes (or
// fails after opTimeout), whatever becomes of the caller.
func opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
}

func fromUnixMs(v int64) time.Time {
	if v <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

// Enqueue implements pluginv1.StateServer: it publishes every delivery
// with Nats-Msg-Id = its id and returns once JetStream acknowledged all of
// them. added counts those that were not duplicates. It never leases (see
// the package's notes): leased is empty, and the deliverer leases them
// through Lease.
func (s *OutboxService) Enqueue(ctx context.Context, req *pluginv1.EnqueueRequest) (*pluginv1.EnqueueResponse, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	msgs := make([]*nats.Msg, len(req.Deliveries))
	for i, d := range req.Deliveries {
		if d.Id == "" {
			return nil, status.Error(codes.InvalidArgument, "a delivery needs an id")
		}
		subject := s.n.unorderedSubject()
		if d.OrderKey != "" {
			subject = s.n.laneSubject(lane(d.OrderKey, s.opts.Lanes))
		}
		m := nats.NewMsg(subject)
		id := hdrEscape(d.Id)
		m.Header.Set(hdrMsgID, id)
		m.Header.Set(hdrID, id)
		if d.Endpoint != "" {
			m.Header.Set(hdrEndpoint, hdrEscape(d.Endpoint))
		}
		if d.OrderKey != "" {
			m.Header.Set(hdrOrderKey, hdrEscape(d.OrderKey))
		}
		if d.NotBeforeUnixMs > 0 {
			m.Header.Set(hdrNotBefore, strconv.FormatInt(d.NotBeforeUnixMs, 10))
		}
		m.Data = d.Payload
		msgs[i] = m
	}
	ctx, cancel := opContext(ctx)
	defer cancel()
	acks, err := s.c.publishAll(ctx, msgs, s.n.stream)
	if err != nil {
		return nil, s.grpcErr("enqueue", err)
	}
	added := 0
	for _, a := range acks {
		if !a.Duplicate {
			added++
		}
	}
	s.mu.Lock()
	s.live.Queued += int64(added)
	s.live.Pending += int64(added)
	s.mu.Unlock()
	return &pluginv1.EnqueueResponse{Added: uint32(added)}, nil
}

// publishAll publishes messages to a stream and waits for every PubAck,
// a window of them at a time (the connection's async publishes are
// bounded). It fails on the first error; what was acknowledged before it
// stays stored (a retry is deduplicated by Nats-Msg-Id).
func (c *Cluster) publishAll(ctx context.Context, msgs []*nats.Msg, stream string) ([]*jetstream.PubAck, error) {
	const window = 512
	acks := make([]*jetstream.PubAck, 0, len(msgs))
	for len(msgs) > 0 {
		part := msgs[:min(len(msgs), window)]
		msgs = msgs[len(part):]
		futures := make([]jetstream.PubAckFuture, len(part))
		for i, m := range part {
			f, err := c.js.PublishMsgAsync(m, jetstream.WithExpectStream(stream))
			if err != nil {
				return acks, err
			}
			futures[i] = f
		}
		for _, f := range futures {
			select {
			case a := <-f.Ok():
				acks = append(acks, a)
			case err := <-f.Err():
				return acks, err
			case <-ctx.Done():
				return acks, fmt.Errorf("waiting for JetStream to acknowledge a publish: %w", ctx.Err())
			}
		}
	}
	return acks, nil
}

// Lease implements pluginv1.StateServer. It hands out, from the shared
// consumers, up to max deliveries that are due, at most max_per_endpoint
// of one endpoint, none of skip_endpoints, and holds them for this worker
// until Record (renewing them while they are held). What it fetched and
// cannot hand out now goes back: not due yet, with a nak delayed until it
// is due; of a skipped endpoint, with a nak delayed SkipDelay; over max or
// max_per_endpoint, it is kept (renewed) for the next Lease. While the
// sink is paused it hands out nothing and says the next is due in a
// second. next_due_unix_ms is the earliest due time this worker knows of
// (what it handed back for later; other workers' are not known), 0 when
// it knows of none.
func (s *OutboxService) Lease(ctx context.Context, req *pluginv1.LeaseRequest) (*pluginv1.LeaseResponse, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	ctx, cancel := opContext(ctx)
	defer cancel()
	now := time.Now()
	paused, err := s.isPaused(ctx)
	if err != nil {
		return nil, s.grpcErr("lease", err)
	}
	if paused {
		s.handBackReady(pausedRetry)
		return &pluginv1.LeaseResponse{NextDueUnixMs: now.Add(pausedRetry).UnixMilli()}, nil
	}
	s.mu.Lock()
	room := s.opts.MaxHeld - len(s.held)
	s.mu.Unlock()
	if room <= 0 {
		// Holding all it may: the rest is for other workers, or for later.
		return &pluginv1.LeaseResponse{NextDueUnixMs: now.Add(fullRetry).UnixMilli()}, nil
	}
	l := &leaseRun{s: s, now: now, max: min(max(1, int(req.Max)), room), perMax: int(req.MaxPerEndpoint),
		skip: map[string]bool{}, per: map[string]int{}, taken: map[string]bool{}}
	for _, ep := range req.SkipEndpoints {
		l.skip[ep] = true
	}
	// Endpoints whose circuit another worker opened wait for its cooldown.
	l.openUntil = s.openCircuits(ctx, now)
	for ep := range l.openUntil {
		l.skip[ep] = true
	}
	s.mu.Lock()
	ready := s.ready
	s.ready = nil
	s.mu.Unlock()
	for _, e := range ready {
		l.consider(e)
	}
	if l.room() {
		l.fetchLanes(ctx)
	}
	for round := 0; l.room(); round++ {
		want := min(l.max-len(l.out), leaseRound)
		got, err := s.fetch(s.unordered, want, 0, -1)
		if err != nil {
			l.errs = append(l.errs, err)
			break
		}
		accepted := 0
		for _, e := range got {
			if l.consider(e) {
				accepted++
			}
		}
		// A short batch: nothing more is due. None handed out: what
		// follows is likely more of the same (a skipped endpoint).
		if len(got) < want || accepted == 0 {
			break
		}
	}
	l.loadAttempts(ctx)
	s.handBackAll(l.back)

	s.mu.Lock()
	for _, e := range l.out {
		s.held[e.id] = e // (touched stays: the lease runs from its delivery or last renewal)
	}
	s.keepLocked(l.keep)
	next := s.nextDueLocked(time.Now())
	s.mu.Unlock()

	if len(l.out) == 0 && len(l.errs) > 0 {
		return nil, s.grpcErr("lease", errors.Join(l.errs...))
	}
	for _, err := range l.errs {
		s.log.Warn("outbox lease: part of it failed", "error", err.Error())
	}
	resp := &pluginv1.LeaseResponse{Deliveries: make([]*pluginv1.Delivery, len(l.out))}
	if !next.IsZero() {
		resp.NextDueUnixMs = next.UnixMilli()
	}
	for i, e := range l.out {
		resp.Deliveries[i] = &pluginv1.Delivery{Id: e.id, Endpoint: e.endpoint, OrderKey: e.key, Payload: e.payload, Attempts: uint32(e.attempts)}
	}
	return resp, nil
}

// leaseRun is one Lease under way.
type leaseRun struct {
	s      *OutboxService
	now    time.Time
	max    int
	perMax int
	skip   map[string]bool
	// openUntil: endpoints whose circuit another worker opened, and until when
	openUntil map[string]time.Time
	per       map[string]int
	taken     map[string]bool // ids handed out by this lease
	out       []*entry        // handed out
	keep      []*entry        // kept for a later lease
	back      []handBack      // handed back to the consumer
	errs      []error
}

type handBack struct {
	e     *entry
	delay time.Duration
}

func (l *leaseRun) room() bool { return len(l.out) < l.max }

// consider decides what becomes of a fetched delivery; it reports whether
// it is handed out.
func (l *leaseRun) consider(e *entry) bool {
	s := l.s
	switch {
	case e.notBefore.After(l.now):
		l.back = append(l.back, handBack{e, e.notBefore.Sub(l.now)})
	case l.skip[e.endpoint]:
		delay := s.opts.SkipDelay
		if until, ok := l.openUntil[e.endpoint]; ok {
			// Until the cooldown ends, but looked at again within
			// maxCircuitWait: another worker's probe may close it sooner.
			delay = max(delay, min(until.Sub(l.now), maxCircuitWait))
		}
		l.back = append(l.back, handBack{e, delay})
	case l.taken[e.id] || s.isHeld(e.id):
		// Another message of the same id (enqueued again after the
		// dedupe window, or replayed) is out: this one waits for it.
		l.keep = append(l.keep, e)
	case !l.room() || (l.perMax > 0 && l.per[e.endpoint] >= l.perMax):
		l.keep = append(l.keep, e)
	default:
		l.out = append(l.out, e)
		l.per[e.endpoint]++
		l.taken[e.id] = true
		return true
	}
	return false
}

func (s *OutboxService) isHeld(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[id]
	return ok
}

// fetchLanes takes the head of every lane that has one ready, and probes
// the lanes held elsewhere whose head may be due again: after AckWait (its
// worker died) or after the delay of a retry another worker recorded,
// neither of which the consumers' state shows. Lanes are fetched with a
// short wait, never with no_wait: a 2.9 server answers a no_wait pull of a
// consumer at its MaxAckPending with a delayed nak's delivery only after
// the delay and a whole AckWait more.
func (l *leaseRun) fetchLanes(ctx context.Context) {
	s := l.s
	infos := map[string]*jetstream.ConsumerInfo{}
	// A listing whose reply was lost (NATS went away as it was asked)
	// would hold the lease, and the sink's deliveries, for all of ctx.
	lctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	lister := s.stream.ListConsumers(lctx)
	for ci := range lister.Info() {
		infos[ci.Name] = ci
	}
	if err := lister.Err(); err != nil {
		l.errs = append(l.errs, fmt.Errorf("listing the consumers: %w", err))
		return
	}
	mine := map[int]bool{}
	for _, list := range [][]*entry{l.out, l.keep} {
		for _, e := range list {
			mine[e.lane] = true
		}
	}
	for _, b := range l.back {
		mine[b.e.lane] = true
	}
	probeEvery := min(time.Second, s.opts.AckWait/4)
	type target struct {
		lane int
		wait time.Duration
	}
	var targets, probes []target
	s.mu.Lock()
	for _, e := range s.held {
		mine[e.lane] = true
	}
	for i := range s.lanes {
		ci := infos[laneConsumer(i)]
		if mine[i] || ci == nil {
			continue
		}
		switch {
		case ci.NumAckPending == 0 && ci.NumPending > 0:
			targets = append(targets, target{i, laneFetchWait})
		case ci.NumAckPending > 0 && !l.now.Before(s.laneDue[i]) && l.now.Sub(s.laneProbe[i]) >= probeEvery:
			probes = append(probes, target{i, laneProbeWait})
		}
	}
	// No more lanes than there is room for: a lane's head fetched and not
	// handed out would wait here, out of reach of the other workers.
	targets = append(targets, probes...)
	targets = targets[:min(len(targets), l.max-len(l.out))]
	for _, t := range targets {
		if t.wait == laneProbeWait {
			s.laneProbe[t.lane] = l.now
		}
	}
	s.mu.Unlock()
	got := make([][]*entry, len(targets))
	errs := make([]error, len(targets))
	parallel(len(targets), func(i int) {
		got[i], errs[i] = s.fetch(s.lanes[targets[i].lane], 1, targets[i].wait, targets[i].lane)
	})
	var all []*entry
	for i := range targets {
		if errs[i] != nil {
			l.errs = append(l.errs, errs[i])
		}
		all = append(all, got[i]...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	for _, e := range all {
		l.consider(e)
	}
}

// fetch pulls up to n deliveries from a consumer: without waiting when wait
// is 0, else for at most wait.
func (s *OutboxService) fetch(c jetstream.Consumer, n int, wait time.Duration, lane int) ([]*entry, error) {
	var b jetstream.MessageBatch
	var err error
	if wait == 0 {
		b, err = c.FetchNoWait(n)
	} else {
		b, err = c.Fetch(n, jetstream.FetchMaxWait(wait))
	}
	if err != nil {
		return nil, fmt.Errorf("fetching deliveries: %w", err)
	}
	var out []*entry
	for m := range b.Messages() {
		e, err := parseEntry(m, lane)
		if err != nil {
			// Not a delivery of ours: it would come back forever.
			s.log.Error("outbox: dropping a malformed message", "error", err.Error())
			_ = m.Term()
			continue
		}
		out = append(out, e)
	}
	if err := b.Error(); err != nil {
		return out, fmt.Errorf("fetching deliveries: %w", err)
	}
	return out, nil
}

func parseEntry(m jetstream.Msg, lane int) (*entry, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, err
	}
	h := m.Headers()
	e := &entry{holding: holding{msg: m}, seq: md.Sequence.Stream, delivered: md.NumDelivered, lane: lane, enqueued: md.Timestamp,
		id: hdrUnescape(h.Get(hdrID)), endpoint: hdrUnescape(h.Get(hdrEndpoint)), key: hdrUnescape(h.Get(hdrOrderKey)),
		payload: m.Data()}
	if e.id == "" {
		return nil, fmt.Errorf("message %d of %s has no %s header", e.seq, md.Stream, hdrID)
	}
	if v := h.Get(hdrNotBefore); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("message %d of %s: %s %q", e.seq, md.Stream, hdrNotBefore, v)
		}
		e.notBefore = fromUnixMs(ms)
	}
	e.touched.Store(time.Now().UnixNano())
	return e, nil
}

// attemptsRecord is a failed delivery's attempt count, in the attempts
// bucket under its stream sequence.
type attemptsRecord struct {
	ID       string `json:"id"`
	Attempts int    `json:"attempts"`
}

// loadAttempts reads the attempt count of the deliveries handed out that
// were delivered before (a first delivery made no attempt). One whose
// count cannot be read goes back, to be handed out later.
func (l *leaseRun) loadAttempts(ctx context.Context) {
	s := l.s
	var again []int
	for i, e := range l.out {
		if e.delivered > 1 {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return
	}
	failed := make([]error, len(again))
	parallel(len(again), func(k int) {
		e := l.out[again[k]]
		kv, err := s.attempts.Get(ctx, s.n.attemptsKey(e.seq))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return
		}
		if err != nil {
			failed[k] = err
			return
		}
		var r attemptsRecord
		if err := json.Unmarshal(kv.Value(), &r); err == nil && r.ID == e.id {
			e.attempts, e.attemptsRev = r.Attempts, kv.Revision()
		}
	})
	drop := map[int]bool{}
	for k, err := range failed {
		if err != nil {
			drop[again[k]] = true
			l.errs = append(l.errs, fmt.Errorf("reading attempts: %w", err))
		}
	}
	if len(drop) == 0 {
		return
	}
	out := l.out[:0]
	for i, e := range l.out {
		if drop[i] {
			l.back = append(l.back, handBack{e, s.opts.SkipDelay})
			continue
		}
		out = append(out, e)
	}
	l.out = out
}

// handBackAll naks deliveries this service fetched and did not hand out,
// each delayed as given (not confirmed: one that is lost comes back after
// AckWait, unattempted).
func (s *OutboxService) handBackAll(back []handBack) {
	if len(back) == 0 {
		return
	}
	now := time.Now()
	s.mu.Lock()
	for _, b := range back {
		s.noteDueLocked(b.e, now.Add(b.delay))
	}
	s.mu.Unlock()
	for _, b := range back {
		// Under the entry's lock, and never renewed after: a renewal sent
		// after the nak would cancel its delay.
		b.e.mu.Lock()
		b.e.done = true
		var err error
		if b.delay > 0 {
			err = b.e.msg.NakWithDelay(b.delay)
		} else {
			err = b.e.msg.Nak()
		}
		b.e.mu.Unlock()
		if err != nil {
			s.log.Warn("outbox: handing a delivery back failed; it comes back after the ack wait", "delivery", b.e.id, "error", err.Error())
		}
	}
}

// handBackReady hands back what was kept for a later lease (the sink is
// paused).
func (s *OutboxService) handBackReady(delay time.Duration) {
	s.mu.Lock()
	ready := s.ready
	s.ready = nil
	s.mu.Unlock()
	back := make([]handBack, len(ready))
	for i, e := range ready {
		back[i] = handBack{e, delay}
	}
	s.handBackAll(back)
}

// keepLocked keeps deliveries for a later lease, in stream order, at most
// maxReady of them (the rest go back at once).
func (s *OutboxService) keepLocked(keep []*entry) {
	if len(keep) == 0 {
		return
	}
	s.ready = append(s.ready, keep...)
	sort.Slice(s.ready, func(i, j int) bool { return s.ready[i].seq < s.ready[j].seq })
	if len(s.ready) > maxReady {
		back := make([]handBack, 0, len(s.ready)-maxReady)
		for _, e := range s.ready[maxReady:] {
			back = append(back, handBack{e, 0})
		}
		s.ready = s.ready[:maxReady]
		go s.handBackAll(back) // (it takes s.mu)
	}
}

// noteDueLocked remembers when a delivery handed back is due again: for
// next_due_unix_ms, and so that its lane is probed then.
func (s *OutboxService) noteDueLocked(e *entry, due time.Time) {
	if e.lane >= 0 {
		s.laneDue[e.lane] = due
		s.laneProbe[e.lane] = time.Time{}
	}
	if len(s.dues) < maxDues {
		heap.Push(&s.dues, due)
	}
}

// nextDueLocked is the earliest due time still ahead that this service
// knows of (zero: none).
func (s *OutboxService) nextDueLocked(now time.Time) time.Time {
	for len(s.dues) > 0 && !s.dues[0].After(now) {
		heap.Pop(&s.dues)
	}
	if len(s.dues) == 0 {
		return time.Time{}
	}
	return s.dues[0]
}

type dueHeap []time.Time

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].Before(h[j]) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(time.Time)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// keepAlive renews the leases of what the service holds (handed out or
// kept) once they are half of AckWait old, until ctx ends.
func (s *OutboxService) keepAlive(ctx context.Context) {
	defer close(s.done)
	keepRenewing(ctx, s.opts.AckWait, func() []*holding {
		s.mu.Lock()
		defer s.mu.Unlock()
		hs := make([]*holding, 0, len(s.ready)+len(s.held))
		for _, e := range s.ready {
			hs = append(hs, &e.holding)
		}
		for _, e := range s.held {
			hs = append(hs, &e.holding)
		}
		return hs
	}, func(h *holding, err error) {
		s.log.Warn("outbox: renewing a lease failed", "error", err.Error())
	})
}

// LogEntry is one attempt in the delivery log stream (JSON).
type LogEntry struct {
	ID         string    `json:"id"`
	At         time.Time `json:"at"`
	StatusCode int       `json:"status_code"`
	LatencyMs  int64     `json:"latency_ms"`
	Error      string    `json:"error,omitempty"`
	Response   string    `json:"response,omitempty"` // the first 4 KiB of the response body
	Outcome    string    `json:"outcome"`            // delivered, retry or dead
	Attempts   int       `json:"attempts"`           // attempts made, this one included
	Endpoint   string    `json:"endpoint,omitempty"`
	NextAt     time.Time `json:"next_at,omitzero"` // when a retry is due
	Worker     string    `json:"worker,omitempty"`
}

func outcomeName(o pluginv1.Outcome) string {
	switch o {
	case pluginv1.Outcome_DELIVERED:
		return "delivered"
	case pluginv1.Outcome_RETRY:
		return "retry"
	case pluginv1.Outcome_DEAD:
		return "dead"
	}
	return "release"
}

// Record implements pluginv1.StateServer. DELIVERED acks the delivery
// (it leaves the stream); RETRY (FAILED) stores its attempts and naks it
// with a delay until next_at_unix_ms; DEAD publishes a dead letter and
// acks the delivery once JetStream acknowledged the dead letter; RELEASE
// naks it with a delay until next_at_unix_ms, attempts unchanged. Every
// attempt (not a release) is appended to the delivery-log stream before
// its delivery is acked or naked. Acks and naks are confirmed by the
// server. The deliveries are no longer held afterwards, whether or not it
// succeeds: one whose result could not be stored comes back after AckWait.
func (s *OutboxService) Record(ctx context.Context, req *pluginv1.RecordRequest) (*pluginv1.RecordResponse, error) {
	for _, r := range req.Results {
		if r.Outcome < pluginv1.Outcome_DELIVERED || r.Outcome > pluginv1.Outcome_RELEASE {
			return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("delivery %q: unknown outcome %d", r.Id, r.Outcome))
		}
	}
	if s.isClosed() {
		return nil, errClosed
	}
	ctx, cancel := opContext(ctx)
	defer cancel()
	now := time.Now()
	type job struct {
		r      *pluginv1.Result
		e      *entry
		failed error
	}
	var jobs []*job
	var missing []string
	s.mu.Lock()
	for _, r := range req.Results {
		e := s.held[r.Id]
		if e == nil {
			missing = append(missing, r.Id)
			continue
		}
		delete(s.held, r.Id)
		jobs = append(jobs, &job{r: r, e: e})
	}
	s.mu.Unlock()
	for _, j := range jobs {
		j.e.mu.Lock()
		j.e.done = true
		j.e.mu.Unlock()
	}
	var errs []error
	// 1. The attempts of those to retry.
	var retries []*job
	for _, j := range jobs {
		if j.r.Outcome == pluginv1.Outcome_RETRY {
			retries = append(retries, j)
		}
	}
	parallel(len(retries), func(i int) {
		j := retries[i]
		data, _ := json.Marshal(attemptsRecord{ID: j.e.id, Attempts: j.e.attempts + 1})
		if _, err := s.attempts.Put(ctx, s.n.attemptsKey(j.e.seq), data); err != nil {
			j.failed = fmt.Errorf("storing the attempts of %q: %w", j.e.id, err)
		}
		// (The bucket keeps one revision a key: the one before is gone.)
	})
	// 2. Dead letters, and 3. the delivery log.
	var deadJobs []*job
	var deadMsgs, logMsgs []*nats.Msg
	for _, j := range jobs {
		a := j.r.Attempt
		if a == nil {
			a = &pluginv1.Attempt{AtUnixMs: now.UnixMilli()}
		}
		switch j.r.Outcome {
		case pluginv1.Outcome_RELEASE:
			continue
		case pluginv1.Outcome_DEAD:
			deadJobs = append(deadJobs, j)
			deadMsgs = append(deadMsgs, s.deadLetter(j.e, a, now))
		}
		resp := a.Response
		if len(resp) > 4096 {
			resp = resp[:4096]
		}
		le := LogEntry{ID: j.e.id, At: time.UnixMilli(a.AtUnixMs).UTC(), StatusCode: int(a.StatusCode), LatencyMs: a.LatencyMs,
			Error: a.Error, Response: string(resp), Outcome: outcomeName(j.r.Outcome), Attempts: j.e.attempts + 1,
			Endpoint: j.e.endpoint, Worker: s.c.opts.Worker}
		if j.r.Outcome == pluginv1.Outcome_RETRY && j.r.NextAtUnixMs > 0 {
			le.NextAt = time.UnixMilli(j.r.NextAtUnixMs).UTC()
		}
		data, _ := json.Marshal(le)
		m := nats.NewMsg(s.n.logSubject + "." + le.Outcome)
		m.Data = data
		logMsgs = append(logMsgs, m)
	}
	if len(deadMsgs) > 0 {
		acks, err := s.c.publishAll(ctx, deadMsgs, s.n.dead)
		for i := len(acks); i < len(deadJobs); i++ {
			deadJobs[i].failed = fmt.Errorf("storing the dead letter of %q: %w", deadJobs[i].e.id, err)
		}
	}
	if len(logMsgs) > 0 {
		if _, err := s.c.publishAll(ctx, logMsgs, s.n.log); err != nil {
			// The delivery's own outcome still goes through: a missing
			// line in the log is better than sending it again.
			errs = append(errs, fmt.Errorf("appending to the delivery log: %w", err))
		}
	}
	// 4. Acks and naks, confirmed.
	var acting []*job
	for _, j := range jobs {
		if j.failed != nil {
			errs = append(errs, j.failed)
			continue
		}
		acting = append(acting, j)
	}
	parallel(len(acting), func(i int) {
		j := acting[i]
		var body []byte
		switch j.r.Outcome {
		case pluginv1.Outcome_DELIVERED, pluginv1.Outcome_DEAD:
			body = []byte("+ACK")
		default:
			body = nakBody(time.UnixMilli(j.r.NextAtUnixMs).Sub(now))
			if j.r.NextAtUnixMs <= 0 {
				body = nakBody(0)
			}
		}
		actx, cancel := context.WithTimeout(ctx, ackTimeout)
		defer cancel()
		if _, err := s.c.nc.RequestWithContext(actx, j.e.msg.Reply(), body); err != nil {
			j.failed = fmt.Errorf("%s of %q not confirmed (it comes back after the ack wait): %w", outcomeName(j.r.Outcome), j.e.id, err)
		}
	})
	// 5. Forget the attempts of what is finished.
	var finished []*job
	for _, j := range acting {
		if j.failed != nil {
			errs = append(errs, j.failed)
			continue
		}
		if (j.r.Outcome == pluginv1.Outcome_DELIVERED || j.r.Outcome == pluginv1.Outcome_DEAD) && j.e.attemptsRev > 0 {
			finished = append(finished, j)
		}
	}
	// Deleted by sequence, not with a KV delete, which would leave a
	// marker for every retried delivery forever. (One left by a crash is
	// never read again: it is the count of a sequence that is gone.)
	parallel(len(finished), func(i int) {
		err := s.attemptsStream.DeleteMsg(ctx, finished[i].e.attemptsRev)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			s.log.Warn("outbox: forgetting the attempts of a finished delivery failed", "delivery", finished[i].e.id, "error", err.Error())
		}
	})

	s.mu.Lock()
	for _, j := range acting {
		e := j.e
		switch j.r.Outcome {
		case pluginv1.Outcome_DELIVERED, pluginv1.Outcome_DEAD:
			if j.failed != nil {
				break
			}
			if e.lane >= 0 {
				s.laneDue[e.lane] = time.Time{}
			}
			if j.r.Outcome == pluginv1.Outcome_DELIVERED {
				s.live.Delivered++
			} else {
				s.live.Dead++
			}
			s.live.Pending = max(0, s.live.Pending-1)
			if e.attempts > 0 {
				s.live.Retrying = max(0, s.live.Retrying-1)
			}
		default:
			s.noteDueLocked(e, time.UnixMilli(j.r.NextAtUnixMs))
			if j.r.Outcome == pluginv1.Outcome_RETRY && e.attempts == 0 {
				s.live.Retrying++
			}
		}
	}
	var shared []sdk.Circuit
	for _, c := range req.Circuits {
		sc := sdk.Circuit{Endpoint: c.Endpoint, State: sdk.CircuitState(c.State), Until: fromUnixMs(c.UntilUnixMs), Reason: c.Reason}
		if sc.State == sdk.CircuitClosed {
			delete(s.circuits, c.Endpoint)
		} else {
			s.circuits[c.Endpoint] = sc
		}
		shared = append(shared, sc)
	}
	s.circuitsRead = time.Time{} // read the cluster's again at the next Lease
	s.mu.Unlock()
	s.shareCircuits(ctx, shared)
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("deliveries %q are not leased by this worker (their lease expired, or they were never leased)", missing))
	}
	if len(errs) > 0 {
		return nil, s.grpcErr("record", errors.Join(errs...))
	}
	return &pluginv1.RecordResponse{}, nil
}

// nakBody is a nak, delayed by d when d is positive.
func nakBody(d time.Duration) []byte {
	if d <= 0 {
		return []byte("-NAK")
	}
	return fmt.Appendf(nil, `-NAK {"delay":%d}`, d.Nanoseconds())
}

// deadLetter is the dead-letter message of a delivery: its payload, with
// what it was and how it died in headers.
func (s *OutboxService) deadLetter(e *entry, a *pluginv1.Attempt, now time.Time) *nats.Msg {
	m := nats.NewMsg(s.n.deadLetterSubject(e.id))
	// A delivery that dies again after a crash (before its ack) is
	// stored once.
	m.Header.Set(hdrMsgID, "dead:"+strconv.FormatUint(e.seq, 10))
	m.Header.Set(hdrID, hdrEscape(e.id))
	if e.endpoint != "" {
		m.Header.Set(hdrEndpoint, hdrEscape(e.endpoint))
	}
	if e.key != "" {
		m.Header.Set(hdrOrderKey, hdrEscape(e.key))
	}
	m.Header.Set(hdrAttempts, strconv.Itoa(e.attempts+1))
	if a.Error != "" {
		m.Header.Set(hdrError, hdrEscape(a.Error))
	}
	if a.StatusCode != 0 {
		m.Header.Set(hdrStatus, strconv.Itoa(int(a.StatusCode)))
	}
	m.Header.Set(hdrDeadAt, strconv.FormatInt(now.UnixMilli(), 10))
	m.Header.Set(hdrEnqueuedAt, strconv.FormatInt(e.enqueued.UnixMilli(), 10))
	m.Header.Set(hdrWorker, hdrEscape(s.c.opts.Worker))
	m.Data = e.payload
	return m
}

// Pending implements pluginv1.StateServer: pending is what the outbox
// stream holds (of the whole cluster: due, not due, and leased by any
// worker), dead what its dead-letter stream holds. next_due_unix_ms is the
// earliest due time this worker knows of, as in Lease.
func (s *OutboxService) Pending(ctx context.Context, _ *pluginv1.PendingRequest) (*pluginv1.PendingResponse, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return nil, s.grpcErr("pending", err)
	}
	dinfo, err := s.dead.Info(ctx)
	if err != nil {
		return nil, s.grpcErr("pending", err)
	}
	paused, err := s.isPaused(ctx)
	if err != nil {
		return nil, s.grpcErr("pending", err)
	}
	s.mu.Lock()
	s.live.Pending = int64(info.State.Msgs)
	next := s.nextDueLocked(time.Now())
	s.mu.Unlock()
	resp := &pluginv1.PendingResponse{Pending: info.State.Msgs, Dead: dinfo.State.Msgs, StopWaiting: s.stopWaiting.Load(), Paused: paused}
	if !next.IsZero() && info.State.Msgs > 0 {
		resp.NextDueUnixMs = next.UnixMilli()
	}
	return resp, nil
}

// OutboxStatus is an outbox in more detail than Pending gives (for the
// admin API and metrics).
type OutboxStatus struct {
	// Pending is every delivery left (Waiting + InFlight).
	Pending uint64 `json:"pending"`
	// Waiting: not handed out yet (due, or with a first attempt not due).
	Waiting uint64 `json:"waiting"`
	// InFlight: handed out to a worker and not finished (being sent, or
	// waiting for a retry or a lease to expire).
	InFlight uint64 `json:"in_flight"`
	// Held: those this worker holds.
	Held   int    `json:"held"`
	Dead   uint64 `json:"dead"`
	Paused bool   `json:"paused"`
}

// Status reads the outbox's counts from its stream and consumers.
func (s *OutboxService) Status(ctx context.Context) (OutboxStatus, error) {
	var st OutboxStatus
	info, err := s.stream.Info(ctx)
	if err != nil {
		return st, err
	}
	dinfo, err := s.dead.Info(ctx)
	if err != nil {
		return st, err
	}
	st.Pending, st.Dead = info.State.Msgs, dinfo.State.Msgs
	lister := s.stream.ListConsumers(ctx)
	for ci := range lister.Info() {
		st.Waiting += ci.NumPending
		st.InFlight += uint64(ci.NumAckPending)
	}
	if err := lister.Err(); err != nil {
		return st, err
	}
	st.Held = s.Held()
	st.Paused, err = s.isPaused(ctx)
	return st, err
}

// Paused implements pluginv1.StateServer: whether the sink is paused (the
// flag in the paused bucket, read at most pauseTTL ago).
func (s *OutboxService) Paused(ctx context.Context, _ *pluginv1.PausedRequest) (*pluginv1.PausedResponse, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	paused, err := s.isPaused(ctx)
	if err != nil {
		return nil, s.grpcErr("paused", err)
	}
	return &pluginv1.PausedResponse{Paused: paused}, nil
}

// pauseCache is a service's view of whether its sink is paused.
type pauseCache struct {
	mu     sync.Mutex
	read   time.Time
	gen    uint64
	paused bool
	last   atomic.Bool // for Progress, which reads no store
}

func (s *OutboxService) isPaused(ctx context.Context) (bool, error) {
	pc := &s.pause
	pc.mu.Lock()
	defer pc.mu.Unlock()
	gen := pauseGen.Load()
	if !pc.read.IsZero() && pc.gen == gen && time.Since(pc.read) < pauseTTL {
		return pc.paused, nil
	}
	_, err := s.paused.Get(ctx, s.n.key)
	switch {
	case err == nil:
		pc.paused = true
	case errors.Is(err, jetstream.ErrKeyNotFound):
		pc.paused = false
	default:
		return false, fmt.Errorf("reading whether the sink is paused: %w", err)
	}
	pc.read, pc.gen = time.Now(), gen
	pc.last.Store(pc.paused)
	return pc.paused, nil
}

// SetRetention implements pluginv1.StateServer: the dead-letter stream
// keeps a dead letter for dead_ms (MaxAge), the delivery-log stream an
// attempt for attempts_ms; zero fields take sdk.DefaultRetention's. The
// streams' MaxAge is where it is stored, for every worker. delivered_ms
// has nothing to apply to: a delivered delivery leaves the outbox stream
// at once (its id dedupes for the stream's duplicates window).
func (s *OutboxService) SetRetention(ctx context.Context, req *pluginv1.SetRetentionRequest) (*pluginv1.SetRetentionResponse, error) {
	if req.DeliveredMs < 0 || req.AttemptsMs < 0 || req.DeadMs < 0 {
		return nil, status.Error(codes.InvalidArgument, "retention: durations must not be negative")
	}
	if s.isClosed() {
		return nil, errClosed
	}
	r := sdk.Retention{Delivered: time.Duration(req.DeliveredMs) * time.Millisecond,
		Attempts: time.Duration(req.AttemptsMs) * time.Millisecond, Dead: time.Duration(req.DeadMs) * time.Millisecond}.WithDefaults()
	for _, x := range []struct {
		st     jetstream.Stream
		maxAge time.Duration
	}{{s.dead, r.Dead}, {s.logs, r.Attempts}} {
		info, err := x.st.Info(ctx)
		if err != nil {
			return nil, s.grpcErr("retention", err)
		}
		cfg := info.Config
		if cfg.MaxAge == x.maxAge {
			continue
		}
		cfg.MaxAge = x.maxAge
		if cfg.Duplicates > x.maxAge {
			cfg.Duplicates = x.maxAge
		}
		if _, err := s.c.js.UpdateStream(ctx, cfg); err != nil {
			return nil, s.grpcErr("retention", fmt.Errorf("stream %s: %w", cfg.Name, err))
		}
	}
	return &pluginv1.SetRetentionResponse{}, nil
}

// parallel runs f(0..n-1), at most parallelOps at a time, and waits.
func parallel(n int, f func(i int)) {
	if n == 1 {
		f(0)
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelOps)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}
