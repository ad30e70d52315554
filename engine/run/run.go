// Package run moves batches from sources through stages (filters, …) to
// sinks, applies backpressure, tracks acks and commits source positions.
// It routes over the plan's nodes by their role (source, stage, sink), never
// by their kind: a stage kind is a Stage implementation.
//
// The checkpoint rule: a source position is committed only when every batch
// up to it has been acked by every sink it flowed to. Rows that filters or
// `when` dropped count as done. Positions commit in order, so a restart
// resumes after the last batch that is fully delivered and redoes the rest
// (at-least-once).
package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/expr"

	"github.com/pipelinehq/pipeline/engine/cluster"
	"github.com/pipelinehq/pipeline/engine/plan"
	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk"
)

// The plan's types (engine/plan), as the runner names them.
type (
	Plan         = plan.Plan
	Stage        = plan.Stage
	AsyncStage   = plan.AsyncStage
	Source       = plan.Source
	Filter       = plan.Filter
	Sink         = plan.Sink
	SourcePlugin = plan.SourcePlugin
	SinkPlugin   = plan.SinkPlugin
	SinkStream   = plan.SinkStream
)

// SourceKey and FilterKey name graph nodes as HCL references do.
var (
	SourceKey = plan.SourceKey
	FilterKey = plan.FilterKey
)

type Options struct {
	Store *state.Store
	// FullRefresh ignores committed positions and starts every source over.
	FullRefresh bool
	// Drain, when closed, stops reading: batches in flight are delivered and
	// committed, then Run returns ErrInterrupted.
	Drain <-chan struct{}
	// CommitInterval bounds how often positions are written; 200 ms by default.
	CommitInterval time.Duration
	// MaxInFlight is how many batches each sink may hold unacked, and how
	// many each asynchronous stage (a transform plugin) works on at once;
	// 8 by default.
	MaxInFlight int
	// Poll, when set, keeps the run going (`pipeline serve`): a drained
	// source is read again after this pause, and sink streams stay open, so
	// action sinks keep delivering from their outbox. The run ends on a
	// drain request or when ctx ends.
	Poll      time.Duration
	Logger    *slog.Logger
	Allocator memory.Allocator
	// Coordinator, when set, shares every source with other workers
	// (`pipeline serve --cluster`, partitions.go): the run reads only the
	// partitions it holds a lease on, each from the checkpoint kept with
	// the lease, and commits there instead of in Store.
	Coordinator *cluster.Coordinator
}

// ErrInterrupted is returned by Run after a drain that Options.Drain asked for.
var ErrInterrupted = errors.New("interrupted")

// Stats counts what a run did. Safe to read while the run goes on through Snapshot.
type Stats struct {
	Read     atomic.Int64 // records the sources emitted
	Skipped  atomic.Int64 // records the sources skipped as bad input
	Filtered atomic.Int64 // records dropped by filter blocks (a sink's `when` is not counted)
	// Rejected counts records a stage dropped because an expression failed
	// on them (on_error = "skip").
	Rejected atomic.Int64
	// Delivered counts records acked by sinks, summed over sinks. An action
	// sink acks a record once its delivery is queued in the outbox; the
	// outbox's own counters say what reached the endpoint.
	Delivered atomic.Int64
	Started   time.Time

	mu       sync.Mutex
	sink     map[string]int64
	outboxes map[string]*state.Outbox
	push     *pushWatch
}

// pushWatch reads what the pipeline's push sources (those with an inbox in
// the store) accepted and hold, for progress.
type pushWatch struct {
	store    *state.Store
	pipeline string
	base     map[string]int64 // records accepted before the run, per source
	shared   map[string]inboxProgress
}

// watchPush makes snapshots report the pipeline's push sources.
func (s *Stats) watchPush(ctx context.Context, store *state.Store, pipeline string) {
	w := &pushWatch{store: store, pipeline: pipeline, base: map[string]int64{}}
	counts, _ := store.InboxCounts(ctx)
	for _, c := range counts {
		if c.Pipeline == pipeline {
			w.base[c.Source] = c.Accepted
		}
	}
	s.mu.Lock()
	s.push = w
	s.mu.Unlock()
}

// PushProgress is what one push source (source "http", source "webhook")
// did in a run.
type PushProgress struct {
	// Accepted counts the records stored (answered 202) during the run.
	Accepted int64 `json:"accepted"`
	// Pending counts the accepted records not yet acked by every sink.
	Pending int64 `json:"pending"`
	// OldestPending is the age of the oldest of them, in seconds.
	OldestPending float64 `json:"oldest_pending_seconds"`
	// Requests counts the requests answered, by HTTP status code.
	Requests map[string]int64 `json:"requests,omitempty"`
}

func (w *pushWatch) snapshot() map[string]PushProgress {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	counts, err := w.store.InboxCounts(ctx)
	if err != nil {
		return nil
	}
	out := map[string]PushProgress{}
	for _, c := range counts {
		if c.Pipeline != w.pipeline {
			continue
		}
		p := PushProgress{Accepted: c.Accepted - w.base[c.Source], Pending: c.Pending}
		if !c.Oldest.IsZero() {
			p.OldestPending = time.Since(c.Oldest).Seconds()
		}
		out[c.Source] = p
	}
	for _, r := range w.store.PushRequests() {
		if r.Pipeline != w.pipeline {
			continue
		}
		p := out[r.Source]
		if p.Requests == nil {
			p.Requests = map[string]int64{}
		}
		p.Requests[strconv.Itoa(r.Status)] += r.N
		out[r.Source] = p
	}
	w.addShared(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

// Snapshot is a copy of Stats at one moment.
type Snapshot struct {
	Read      int64            `json:"read"`
	Skipped   int64            `json:"skipped"`
	Filtered  int64            `json:"filtered"`
	Rejected  int64            `json:"rejected"`
	Delivered int64            `json:"delivered"`
	Sinks     map[string]int64 `json:"sinks"`
	// Outbox holds, for each sink that used its outbox (action sinks), what
	// was queued, delivered, retried and dead.
	Outbox map[string]state.Progress `json:"outbox,omitempty"`
	// Push holds, for each push source, what it accepted and holds.
	Push    map[string]PushProgress `json:"push,omitempty"`
	Elapsed time.Duration           `json:"-"`
	Seconds float64                 `json:"seconds"`
	Rate    float64                 `json:"records_per_second"`
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Snapshot {
	snap := Snapshot{Read: s.Read.Load(), Skipped: s.Skipped.Load(), Filtered: s.Filtered.Load(), Rejected: s.Rejected.Load(), Delivered: s.Delivered.Load(), Sinks: map[string]int64{}}
	s.mu.Lock()
	for k, v := range s.sink {
		snap.Sinks[k] = v
	}
	outboxes, push := s.outboxes, s.push
	s.mu.Unlock()
	if push != nil {
		snap.Push = push.snapshot()
	}
	for name, o := range outboxes {
		if p := o.Progress(); p.Used() {
			if snap.Outbox == nil {
				snap.Outbox = map[string]state.Progress{}
			}
			snap.Outbox[name] = p
		}
	}
	if !s.Started.IsZero() {
		snap.Elapsed = time.Since(s.Started)
		snap.Seconds = snap.Elapsed.Seconds()
		if snap.Seconds > 0 {
			snap.Rate = float64(snap.Read) / snap.Seconds
		}
	}
	return snap
}

func (s *Stats) addSink(name string, n int64) {
	s.Delivered.Add(n)
	s.mu.Lock()
	if s.sink == nil {
		s.sink = map[string]int64{}
	}
	s.sink[name] += n
	s.mu.Unlock()
}

// Runner runs one plan once.
type Runner struct {
	plan  *Plan
	opts  Options
	Stats *Stats

	consumers  map[string][]consumer // node key -> who reads it
	stages     map[string]*stageState
	sinks      map[string]*sinkState
	trackersMu sync.Mutex
	trackers   []*tracker

	failOnce    sync.Once
	failErr     error
	stopReading context.CancelFunc
	// incomplete is set once the run will not complete (a failure, a
	// drain): buffered sinks are told to drop what they hold.
	incomplete atomic.Bool
	feedsOnce  sync.Once
	reach      map[string]map[string]bool // source -> sinks its batches reach
	ctx        context.Context            // the run's: ends on failure or abort, not on a drain
	cancel     context.CancelFunc
	taps       taps // the admin API's tails (tap.go)
}

type consumer struct {
	stage *stageState
	sink  *sinkState
}

// New prepares a run of plan.
func New(plan *Plan, opts Options) (*Runner, error) {
	if opts.CommitInterval == 0 {
		opts.CommitInterval = 200 * time.Millisecond
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = 8
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Allocator == nil {
		opts.Allocator = memory.DefaultAllocator
	}
	r := &Runner{plan: plan, opts: opts, Stats: &Stats{outboxes: map[string]*state.Outbox{}}, consumers: map[string][]consumer{}, stages: map[string]*stageState{}, sinks: map[string]*sinkState{}}
	// Each node starts from the union of the schemas its sources reported.
	static := map[string]*arrow.Schema{}
	for _, src := range plan.Sources {
		static[SourceKey(src.Name)] = src.Schema
	}
	union := func(inputs []string) *arrow.Schema {
		var s *arrow.Schema
		for _, in := range inputs {
			if st := static[in]; st != nil {
				s = mergeSchema(s, st)
			}
		}
		return s
	}
	for _, st := range plan.Stages {
		key := st.NodeKey()
		in := union(st.InputKeys())
		static[key] = in
		// A stage that changes the schema says what leaves it.
		if os, ok := st.(interface {
			OutputSchema(*arrow.Schema) *arrow.Schema
		}); ok && in != nil {
			if out := os.OutputSchema(in); out != nil {
				static[key] = out
			}
		}
		kind, name, _ := strings.Cut(key, ".")
		ss := &stageState{op: st, schema: newNodeSchema(in, st.ReadFields()), stage: newStage(kind, name, st.SkipsErrors())}
		if as, ok := st.(AsyncStage); ok {
			ss.async = newAsyncStage(as, opts.MaxInFlight)
		}
		r.stages[key] = ss
		for _, in := range st.InputKeys() {
			r.consumers[in] = append(r.consumers[in], consumer{stage: ss})
		}
	}
	for _, s := range plan.Sinks {
		var paths [][]string
		if s.When != "" {
			paths = fields(s.When, false)
		}
		for _, src := range s.Templates {
			paths = append(paths, fields(src, true)...)
		}
		ss := &sinkState{s: s, idx: len(r.sinks), dead: make(chan struct{}), schema: newNodeSchema(union(s.Inputs), paths), in: make(chan sinkItem, opts.MaxInFlight), slots: make(chan struct{}, inFlight(s, opts.MaxInFlight)), templates: map[string]*compiled{}, stage: newStage("sink", s.Name, s.SkipErrors)}
		if s.When != "" {
			ss.when = newCompiled("when", s.When)
			ss.when.pred = s.WhenPred
		}
		for attr, src := range s.Templates {
			ss.templates[attr] = newCompiled(attr, src)
			ss.templates[attr].tmpl = s.CompiledTemplates[attr]
		}
		r.sinks[s.Name] = ss
		if s.Outbox != nil {
			r.Stats.outboxes[s.Name] = s.Outbox
		}
		for _, in := range s.Inputs {
			r.consumers[in] = append(r.consumers[in], consumer{sink: ss})
		}
	}
	for _, ss := range r.stages {
		if ss.async != nil {
			ss.async.sinks = r.sinksBelow(ss.op.NodeKey())
		}
	}
	return r, nil
}

// sinksBelow lists the indexes of the sinks that what leaves node reaches.
func (r *Runner) sinksBelow(node string) []int {
	seen := map[int]bool{}
	var walk func(node string)
	walk = func(node string) {
		for _, c := range r.consumers[node] {
			if c.sink != nil {
				seen[c.sink.idx] = true
			} else {
				walk(c.stage.op.NodeKey())
			}
		}
	}
	walk(node)
	out := make([]int, 0, len(seen))
	for i := range seen {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// fields lists what an expression reads; one that does not parse reads
// nothing here and fails with its own message when it is compiled.
func fields(src string, template bool) [][]string {
	var paths [][]string
	if template {
		paths, _ = expr.TemplateFields(src)
	} else {
		paths, _ = expr.Fields(src)
	}
	return paths
}

// fail records the run's first error and stops everything, sinks included.
func (r *Runner) fail(err error) {
	r.incomplete.Store(true)
	r.failOnce.Do(func() {
		r.failErr = err
		r.cancel()
	})
}

// Run runs until the sources are drained, a plugin fails, ctx ends or a
// drain is requested. Whatever was acked is committed in every case.
func (r *Runner) Run(ctx context.Context) error {
	r.Stats.Started = time.Now()
	if r.opts.Store != nil {
		r.Stats.watchPush(ctx, r.opts.Store, r.plan.Pipeline)
		r.Stats.watchShared(r.plan.Sources)
	}
	ctx, r.cancel = context.WithCancel(ctx)
	defer r.cancel()
	defer r.CloseTaps()
	r.ctx = ctx
	// Sources stop on a drain; sinks keep going until what was sent is acked.
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	r.stopReading = stopReading
	var drained atomic.Bool
	if r.opts.Drain != nil {
		go func() {
			select {
			case <-r.opts.Drain:
				drained.Store(true)
				r.incomplete.Store(true)
				stopReading()
				// The outbox is durable: an action sink stops waiting for
				// its pending deliveries and leaves them queued.
				for _, s := range r.plan.Sinks {
					if s.Outbox != nil {
						s.Outbox.StopWaiting()
					}
				}
			case <-ctx.Done():
			}
		}()
	}

	// Open every sink's stream before reading anything.
	var sinkWG sync.WaitGroup
	for _, s := range r.plan.Sinks {
		ss := r.sinks[s.Name]
		stream, err := s.Plugin.OpenStream(ctx)
		if err != nil {
			r.fail(err)
			break
		}
		ss.stream = stream
	}
	if r.failErr != nil {
		return r.failErr
	}
	for _, s := range r.plan.Sinks {
		ss := r.sinks[s.Name]
		sinkWG.Add(2)
		go func() { defer sinkWG.Done(); r.sendLoop(ctx, ss) }()
		go func() { defer sinkWG.Done(); r.ackLoop(ss) }()
	}

	// Stages with a stream of their own (transform plugins) open it now and
	// end it once the sources are done. An asynchronous stage's answers are
	// routed by a goroutine of its own from then on.
	type opener interface {
		Open(context.Context) error
		Close() error
	}
	var opened []Stage
	for _, st := range r.plan.Stages {
		if o, ok := st.(opener); ok {
			if err := o.Open(ctx); err != nil {
				r.fail(err)
				break
			}
			opened = append(opened, st)
			if ss := r.stages[st.NodeKey()]; ss.async != nil {
				go r.answerLoop(ss)
			}
		}
	}
	// closeStages ends the stages in topological order: each one's answers
	// are all routed (into the stages after it, too) before the next one
	// is closed, and all of them before the sinks are.
	closeStages := func() {
		for _, st := range opened {
			err := st.(opener).Close()
			if ss := r.stages[st.NodeKey()]; ss.async != nil {
				<-ss.async.done // it has reported the error that ended the stage
				continue
			}
			if err != nil && ctx.Err() == nil {
				r.incomplete.Store(true)
				r.failOnce.Do(func() { r.failErr = fmt.Errorf("%s: %w", st.NodeKey(), err) })
			}
		}
	}
	if r.failErr != nil {
		closeStages()
		for _, ss := range r.sinks {
			close(ss.in)
		}
		sinkWG.Wait()
		return r.failErr
	}

	// Read every source.
	var srcWG sync.WaitGroup
	for _, src := range r.plan.Sources {
		if r.opts.Coordinator != nil && src.Push && src.Shared == nil {
			r.fail(unsharedPush(src))
			break
		}
		if r.opts.Coordinator != nil || src.Shared != nil {
			read := r.readPartitions
			if src.Shared != nil {
				read = r.readShared
			}
			srcWG.Add(1)
			go func() {
				defer srcWG.Done()
				if err := read(readCtx, src); err != nil && readCtx.Err() == nil {
					r.incomplete.Store(true)
					r.failOnce.Do(func() { r.failErr = err })
					stopReading()
				}
			}()
			continue
		}
		var from []byte
		t := &tracker{source: src.Name, sinks: len(r.plan.Sinks)}
		if !r.opts.FullRefresh && !src.FromStart && r.opts.Store != nil {
			pos, err := r.opts.Store.Get(ctx, r.plan.Pipeline, src.Name)
			if err != nil {
				r.fail(err)
				break
			}
			from = pos
			progress, err := r.opts.Store.SinkProgress(ctx, r.plan.Pipeline, src.Name)
			if err != nil {
				r.fail(err)
				break
			}
			marks := make([][]Mark, len(r.plan.Sinks))
			for name, m := range progress {
				if ss := r.sinks[name]; ss != nil && len(m) > 0 {
					marks[ss.idx] = m
					r.opts.Logger.Info("resuming: the sink acked records past the checkpoint in an earlier run; they are not sent to it again",
						"source", src.Name, "sink", name, "records", state.MarkRecords(m))
				}
			}
			t.resume(marks)
		}
		t.lastPos = from
		r.addTracker(t)
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			if err := r.readSource(readCtx, src, t, from); err != nil {
				if readCtx.Err() != nil && ctx.Err() == nil {
					return // a drain, or another source's failure, stopped it
				}
				// A source failed (bad input, a crash): stop reading, but
				// let the sinks deliver what was read before, so that it is
				// committed and the next run starts at the failure.
				r.incomplete.Store(true)
				r.failOnce.Do(func() { r.failErr = err })
				stopReading()
			}
		}()
	}

	commitDone := make(chan struct{})
	stopCommit := make(chan struct{})
	go func() {
		defer close(commitDone)
		tick := time.NewTicker(r.opts.CommitInterval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if err := r.commit(context.WithoutCancel(ctx)); err != nil {
					r.fail(err)
				}
			case <-stopCommit:
				return
			}
		}
	}()

	srcWG.Wait()
	closeStages()
	for _, ss := range r.sinks {
		close(ss.in)
	}
	sinkWG.Wait()
	close(stopCommit)
	<-commitDone
	// Commit whatever was acked, also after a failure: it was delivered.
	commitErr := r.commit(context.WithoutCancel(ctx))
	r.releaseLeases(context.WithoutCancel(ctx))
	switch {
	case r.failErr != nil:
		return r.failErr
	case commitErr != nil:
		return commitErr
	case ctx.Err() != nil:
		return ctx.Err()
	case drained.Load():
		return ErrInterrupted
	}
	return nil
}

func (r *Runner) commit(ctx context.Context) error {
	r.trackersMu.Lock()
	trackers := slices.Clone(r.trackers)
	r.trackersMu.Unlock()
	for _, t := range trackers {
		if t.shared != nil {
			r.commitShared(ctx, t)
			continue
		}
		if r.opts.Store == nil {
			continue
		}
		if t.lease != nil {
			if err := r.commitLease(ctx, t); err != nil {
				return err
			}
			continue
		}
		cs, ok := t.takeCommit()
		if !ok {
			continue
		}
		var marks map[string][]Mark
		for _, s := range r.plan.Sinks {
			ss := r.sinks[s.Name]
			if ss.idx < len(cs.marks) && len(cs.marks[ss.idx]) > 0 && r.feeds(t.source, s.Name) {
				if marks == nil {
					marks = map[string][]Mark{}
				}
				marks[s.Name] = cs.marks[ss.idx]
			}
		}
		if err := r.opts.Store.CommitProgress(ctx, r.plan.Pipeline, t.source, cs.position, cs.records, marks); err != nil {
			return err
		}
	}
	return nil
}

// feeds reports whether source's batches can reach sink.
func (r *Runner) feeds(source, sink string) bool {
	r.feedsOnce.Do(func() {
		r.reach = map[string]map[string]bool{}
		var walk func(src, node string)
		walk = func(src, node string) {
			for _, c := range r.consumers[node] {
				if c.sink != nil {
					r.reach[src][c.sink.s.Name] = true
				} else {
					walk(src, c.stage.op.NodeKey())
				}
			}
		}
		for _, s := range r.plan.Sources {
			r.reach[s.Name] = map[string]bool{}
			walk(s.Name, SourceKey(s.Name))
		}
	})
	return r.reach[source][sink]
}

// inFlight is how many unacked batches a sink may have: a buffered sink
// holds batches until it flushes, so it gets room for all it may hold.
func inFlight(s *Sink, limit int) int {
	if s.Buffered {
		return sdk.MaxHeldBatches + limit
	}
	return limit
}
