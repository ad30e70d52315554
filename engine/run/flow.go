package run

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/cluster"
	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/plan"
	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk"
)

// tracker orders a source's batches and finds the position up to which
// everything is done, and for each sink which batches past that position
// it has acked (per-sink progress).
//
// A source re-reads deterministically from a committed position, so after
// a restart the batches after it come again. A sink that had acked some of
// them is not sent those again. To be sure a re-read batch is the one the
// sink acked (a new file may sort before the one being read), each batch
// has a fingerprint of its position, size and first and last record ids;
// a sink's marks list the fingerprints of the batches it acked, in order,
// and a re-read batch is skipped for the sink only while every batch so far
// matched its mark.
type tracker struct {
	source string
	sinks  int // sinks in the run; entries hold a count per sink
	// lease, in a cluster, is the partition this tracker reads: its
	// commits go to the lease's checkpoint.
	lease *cluster.Lease
	// shared, for a source whose state the cluster's workers share, is
	// told what is committed instead (shared.go).
	shared plan.SharedState

	mu      sync.Mutex
	queue   []*entry // oldest first, not yet done
	trail   []*entry // every entry after the last committed position, oldest first
	lastPos []byte   // position of the newest fully done batch
	records int64    // records done since the last commit
	dirty   bool     // lastPos moved since the last commit

	seq      int      // entries added in this run
	base     int      // entries before trail[0]
	marks    [][]Mark // per sink: what it acked past the start position in an earlier run
	matching []bool   // per sink: every re-read batch so far matched its mark
	written  [][]Mark // per sink: what the last commit wrote
}

// Mark is one batch a sink acked past its source's committed position.
type Mark = state.Mark

// entry is one batch of a source in flight. holds counts the routing still
// in progress, every answer still due from an asynchronous stage, and every
// sink send not yet acked; sinkHolds splits the sends by sink.
type entry struct {
	t         *tracker
	position  []byte
	rows      int64
	fp        uint64 // the batch's fingerprint
	holds     int
	sinkHolds []int32
	skip      []bool // per sink: acked in an earlier run, not sent again
	routed    bool
	// answers counts, per sink, the answers that asynchronous stages
	// upstream of it owe for the batch: until they are routed, the batch
	// has not reached that sink.
	answers []int32
	done    bool
	// abandoned entries were not fully routed (the run stopped): they never
	// become done, so no position at or after them is committed.
	abandoned bool
	// origin says where the batch's records are in the source's input, for
	// naming a record in runtime errors.
	origin origin
	ids    *array.String // the batch's record ids, to find a row's place
}

// origin is where the rows of one source batch are in their input.
type origin struct {
	name   string
	unit   string // "line" or "row"
	places []int64
}

// fingerprint identifies a batch by its position, size and first and last
// record ids.
func fingerprint(position []byte, rows int64, first, last string) uint64 {
	h := fnv.New64a()
	h.Write(position)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(rows))
	h.Write(n[:])
	h.Write([]byte(first))
	h.Write([]byte{0})
	h.Write([]byte(last))
	return h.Sum64()
}

// resume sets what each sink acked past the start position in an earlier run.
func (t *tracker) resume(marks [][]Mark) {
	t.marks = marks
	t.matching = make([]bool, len(marks))
	for i := range marks {
		t.matching[i] = len(marks[i]) > 0
	}
}

func (t *tracker) add(position []byte, rows int64, fp uint64) *entry {
	t.mu.Lock()
	e := &entry{t: t, position: position, rows: rows, fp: fp, holds: 1}
	if t.sinks > 0 {
		e.sinkHolds = make([]int32, t.sinks)
	}
	for i, m := range t.marks {
		if !t.matching[i] {
			continue
		}
		if t.seq < len(m) && m[t.seq].FP == fp && m[t.seq].Rows == rows {
			if e.skip == nil {
				e.skip = make([]bool, t.sinks)
			}
			e.skip[i] = true
		} else {
			t.matching[i] = false
		}
	}
	t.seq++
	t.queue = append(t.queue, e)
	t.trail = append(t.trail, e)
	t.mu.Unlock()
	return e
}

// sent reports whether sink (its index) still needs the batch: false when
// the sink acked it in an earlier run.
func (e *entry) sent(sink int) bool {
	return sink >= len(e.skip) || !e.skip[sink]
}

// hold counts a send to sink (its index; -1 for none in particular).
func (e *entry) hold(sink int) {
	e.t.mu.Lock()
	e.holds++
	if sink >= 0 && sink < len(e.sinkHolds) {
		e.sinkHolds[sink]++
	}
	e.t.mu.Unlock()
}

// routedAll ends the routing hold: every consumer has the batch.
func (e *entry) routedAll() {
	e.t.mu.Lock()
	e.routed = true
	e.t.mu.Unlock()
	e.release(-1)
}

// holdAnswer counts an answer due from an asynchronous stage whose output
// reaches sinks (their indexes): the batch stays held, and not fully routed
// to those sinks, until the answer has been routed.
func (e *entry) holdAnswer(sinks []int) {
	e.t.mu.Lock()
	e.holds++
	for _, i := range sinks {
		if i < e.t.sinks {
			if e.answers == nil {
				e.answers = make([]int32, e.t.sinks)
			}
			e.answers[i]++
		}
	}
	e.t.mu.Unlock()
}

// answered ends holdAnswer's hold once the answer has been routed onward.
func (e *entry) answered(sinks []int) {
	e.t.mu.Lock()
	for _, i := range sinks {
		if i < len(e.answers) {
			e.answers[i]--
		}
	}
	e.t.mu.Unlock()
	e.release(-1)
}

// due reports whether an answer for sink i is still due.
func (e *entry) due(i int) bool { return i < len(e.answers) && e.answers[i] > 0 }

// release ends a hold: sink's ack (its index), or -1 for the routing.
func (e *entry) release(sink int) {
	t := e.t
	t.mu.Lock()
	defer t.mu.Unlock()
	e.holds--
	if sink >= 0 && sink < len(e.sinkHolds) {
		e.sinkHolds[sink]--
	}
	if e.holds > 0 || e.abandoned {
		return
	}
	e.done = true
	if e.ids != nil {
		e.ids.Release()
		e.ids = nil
	}
	n := 0
	for n < len(t.queue) && t.queue[n].done {
		d := t.queue[n]
		t.records += d.rows
		if len(d.position) > 0 {
			t.lastPos = d.position
			t.dirty = true
			// The trail starts after the newest committed position.
			for k, q := range t.trail {
				if q == d {
					t.base += k + 1
					t.trail = t.trail[k+1:]
					break
				}
			}
		}
		n++
	}
	t.queue = t.queue[n:]
}

// abandon marks an entry that will never be fully delivered.
func (e *entry) abandon() {
	e.t.mu.Lock()
	e.abandoned = true
	e.t.mu.Unlock()
}

// commitState is what a commit writes for a source.
type commitState struct {
	position []byte
	records  int64
	// marks is, per sink index, the batches past position the sink acked.
	marks [][]Mark
}

// takeCommit returns what to commit, if the position or any sink's
// progress moved.
func (t *tracker) takeCommit() (commitState, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var marks [][]Mark
	moved := t.dirty
	if t.sinks > 0 {
		marks = make([][]Mark, t.sinks)
		for i := range marks {
			var m []Mark
			for _, q := range t.trail {
				skipped := i < len(q.skip) && q.skip[i] // acked in an earlier run
				if !q.done && !skipped && (!q.routed || q.due(i) || q.abandoned || q.sinkHolds[i] > 0) {
					break
				}
				m = append(m, Mark{FP: q.fp, Rows: q.rows})
			}
			// Batches the sink acked in an earlier run that this run has
			// not read again yet stay its marks while everything re-read
			// so far matched.
			if i < len(t.marks) && t.matching[i] && len(m) == len(t.trail) && t.base+len(m) == t.seq && t.seq < len(t.marks[i]) {
				m = append(m, t.marks[i][t.seq:]...)
			}
			marks[i] = m
			if i >= len(t.written) || !slices.Equal(m, t.written[i]) {
				moved = true
			}
		}
	}
	if !moved {
		return commitState{}, false
	}
	t.dirty = false
	t.written = marks
	n := t.records
	t.records = 0
	return commitState{position: t.lastPos, records: n, marks: marks}, true
}

// compiled is an expression compiled on first use. The compiled program
// adapts to later batches whose schema differs (engine/expr keeps a plan per
// schema), so one is enough per attribute.
type compiled struct {
	attr string // where, when, or the template attribute
	src  string

	mu   sync.Mutex
	pred *expr.Predicate
	tmpl *expr.Template
}

func newCompiled(attr, src string) *compiled { return &compiled{attr: attr, src: src} }

func (c *compiled) predicate(schema *arrow.Schema) (*expr.Predicate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pred == nil {
		p, err := expr.CompilePredicateFor(c.attr, c.src, schema)
		if err != nil {
			return nil, err
		}
		c.pred = p
	}
	return c.pred, nil
}

func (c *compiled) compileTemplate(schema *arrow.Schema) (*expr.Template, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tmpl == nil {
		t, err := expr.CompileTemplate(c.src, schema)
		if err != nil {
			return nil, err
		}
		c.tmpl = t
	}
	return c.tmpl, nil
}

// nodeSchema pads the batches that reach a filter or sink to the union of
// the schemas of everything that feeds it. A node fed by several sources
// sees batches of different shapes; its expressions must find every field
// in all of them (as nulls where a source lacks it), as they did when
// `pipeline validate` compiled them against that union.
//
// Fields the node's expressions read but no input has produced yet (a source
// that cannot report its schema up front, a resumed run that sees only a
// few records) are added as null columns too: they read as null, which makes
// comparisons false, instead of failing to compile.
type nodeSchema struct {
	mu     sync.Mutex
	paths  [][]string // fields the node's expressions read
	merged *arrow.Schema
	seen   map[*arrow.Schema]bool // input schemas already merged in
}

func newNodeSchema(static *arrow.Schema, paths [][]string) *nodeSchema {
	n := &nodeSchema{paths: paths, seen: map[*arrow.Schema]bool{}}
	if static != nil {
		n.merged = withPaths(static, paths)
	}
	return n
}

func (n *nodeSchema) apply(mem memory.Allocator, rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	in := rec.Schema()
	n.mu.Lock()
	if !n.seen[in] {
		if m := withPaths(mergeSchema(n.merged, in), n.paths); n.merged == nil || !m.Equal(n.merged) {
			n.merged = m
		}
		if len(n.seen) > 64 { // schema objects that are not shared: don't grow
			n.seen = map[*arrow.Schema]bool{}
		}
		n.seen[in] = true
	}
	target := n.merged
	n.mu.Unlock()
	if in == target {
		rec.Retain()
		return rec, nil
	}
	return conform(mem, rec, target)
}

// stageState is a Stage in a run: its padding and its record errors.
type stageState struct {
	op     Stage
	schema *nodeSchema
	stage  *stage
	async  *asyncStage // set when op is a plan.AsyncStage
}

// asyncStage is an AsyncStage in a run: the batches submitted to it and
// not answered yet, oldest first, and the state of the goroutine that
// routes its answers (answerLoop).
type asyncStage struct {
	op AsyncStage
	// sinks are the indexes of the sinks that its output reaches.
	sinks []int
	// window holds a token per batch in flight: when it is full, whatever
	// feeds the stage waits (the back-pressure on the sources).
	window chan struct{}
	// submitMu serialises Submit so that due is in the stream's order.
	submitMu sync.Mutex
	mu       sync.Mutex
	due      []*answerToken
	failOnce sync.Once
	failed   chan struct{} // closed once the stage failed: nothing more is routed
	done     chan struct{} // closed when answerLoop has ended
}

// answerToken is a batch submitted to an asynchronous stage: the source
// entry it holds and the rows it had.
type answerToken struct {
	e    *entry
	rows int64
}

func newAsyncStage(op AsyncStage, window int) *asyncStage {
	return &asyncStage{op: op, window: make(chan struct{}, window), failed: make(chan struct{}), done: make(chan struct{})}
}

type sinkState struct {
	s         *Sink
	schema    *nodeSchema
	when      *compiled
	templates map[string]*compiled
	stage     *stage
	idx       int // the sink's index in the run, for per-sink progress
	failed    atomic.Bool
	dead      chan struct{} // closed when the sink failed
	errMu     sync.Mutex
	err       error
	in        chan sinkItem
	slots     chan struct{} // batches in flight
	stream    SinkStream
}

type sinkItem struct {
	rec arrow.RecordBatch
	e   *entry
}

type ackToken struct {
	e    *entry
	rows int64
}

// sourceReader reads one source, routing every batch. Its state carries
// over from one read to the next when the run polls (`pipeline serve`).
type sourceReader struct {
	r   *Runner
	src *Source
	t   *tracker

	schema    *arrow.Schema // the source's merged schema
	lastIn    *arrow.Schema // the last input schema seen, and what it became
	lastOut   *arrow.Schema
	idSchema  *arrow.Schema // schema plus the id column
	start     []byte        // the position the next batch starts after
	rowInSpan int64         // rows read since start, for record ids

	// part, when set, reads one partition of the source (partitions.go).
	part      plan.PartitionedSource
	partition string
}

// readSource reads a source to its end, and again and again when polling.
func (r *Runner) readSource(ctx context.Context, src *Source, t *tracker, from []byte) error {
	sr := &sourceReader{r: r, src: src, t: t, schema: src.Schema, start: from}
	for {
		if err := sr.read(ctx); err != nil || r.opts.Poll <= 0 {
			return err
		}
		select {
		case <-time.After(r.opts.Poll):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// read reads from the current position to the source's current end.
func (sr *sourceReader) read(ctx context.Context) error {
	r, src, t := sr.r, sr.src, sr.t
	mem := r.opts.Allocator
	read := src.Plugin.Read
	if sr.part != nil {
		read = func(ctx context.Context, from []byte, fn func(host.ReadMsg) error) error {
			return sr.part.ReadPartition(ctx, sr.partition, from, fn)
		}
	}
	return read(ctx, sr.start, func(m host.ReadMsg) error {
		if m.Skipped > 0 {
			r.Stats.Skipped.Add(m.Skipped)
		}
		if m.Rec == nil {
			return nil
		}
		defer m.Rec.Release()
		if in := m.Rec.Schema(); in != sr.lastIn {
			if !in.Equal(sr.lastIn) || sr.lastOut == nil {
				merged := mergeSchema(sr.schema, in)
				if sr.schema == nil || !merged.Equal(sr.schema) {
					sr.schema = merged
				}
				if sr.lastOut != sr.schema {
					sr.idSchema = withIDField(sr.schema)
				}
				sr.lastOut = sr.schema
			}
			sr.lastIn = in
		}
		rec, err := conform(mem, m.Rec, sr.schema)
		if err != nil {
			return fmt.Errorf("source %s: %w", src.Name, err)
		}
		idSchema := sr.idSchema
		if rec.Schema() != sr.schema && !rec.Schema().Equal(sr.schema) {
			// A field's type changed in this batch: it keeps its own column.
			idSchema = withIDField(rec.Schema())
		}
		var withIDs arrow.RecordBatch
		if int64(len(m.IDs)) == rec.NumRows() && len(m.IDs) > 0 {
			withIDs = addGivenIDs(mem, rec, idSchema, m.IDs)
		} else if m.Origin != "" && int64(len(m.Places)) == rec.NumRows() {
			withIDs = addPlaceIDs(mem, rec, idSchema, src.Name, m.Origin, m.Places)
		} else {
			withIDs = addIDs(mem, rec, idSchema, src.Name, sr.start, sr.rowInSpan)
		}
		rec.Release()
		rows := withIDs.NumRows()
		r.Stats.Read.Add(rows)
		var fp uint64
		if ids, ok := withIDs.Column(int(withIDs.NumCols()) - 1).(*array.String); ok && rows > 0 {
			fp = fingerprint(m.Position, rows, ids.Value(0), ids.Value(int(rows)-1))
		}
		e := t.add(m.Position, rows, fp)
		if m.Origin != "" {
			e.origin = origin{name: m.Origin, unit: m.PlaceUnit, places: m.Places}
			if e.ids, _ = withIDs.Column(int(withIDs.NumCols()) - 1).(*array.String); e.ids != nil {
				e.ids.Retain() // released when the entry is done
			}
		}
		if len(m.Position) > 0 {
			sr.start, sr.rowInSpan = m.Position, 0
		} else {
			sr.rowInSpan += rows
		}
		err = r.route(SourceKey(src.Name), withIDs, e)
		withIDs.Release()
		if err != nil {
			e.abandon()
			return err
		}
		e.routedAll()
		return nil
	})
}

// route hands rec, which came out of node, to everything that reads node.
func (r *Runner) route(node string, rec arrow.RecordBatch, e *entry) error {
	r.tapped(node, rec)
	for _, c := range r.consumers[node] {
		var err error
		if c.stage != nil {
			err = r.applyStage(c.stage, rec, e)
		} else {
			err = r.toSink(c.sink, rec, e)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// applyStage runs a stage over a batch and routes what leaves it; an
// asynchronous stage gets the batch and routes its answer later.
func (r *Runner) applyStage(ss *stageState, in arrow.RecordBatch, e *entry) error {
	name := ss.stage.name
	rec, err := ss.schema.apply(r.opts.Allocator, in)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer rec.Release()
	if ss.async != nil {
		return r.submit(ss, rec, e)
	}
	return r.guarded(ss.stage, rec, e, ss.op.Apply, func(piece, out arrow.RecordBatch) error {
		r.Stats.Filtered.Add(piece.NumRows() - out.NumRows())
		if out.NumRows() == 0 {
			return nil
		}
		return r.route(ss.op.NodeKey(), out, e)
	})
}

// submit hands rec to an asynchronous stage without waiting for its answer,
// once the stage's window has room. The entry stays held until answerLoop
// has routed the answer to everything downstream.
func (r *Runner) submit(ss *stageState, rec arrow.RecordBatch, e *entry) error {
	a := ss.async
	select {
	case <-a.failed:
		return fmt.Errorf("%s failed", ss.stage.name) // the run's error is the stage's own
	default:
	}
	// A batch that was read goes on even during a drain, like a sink send.
	select {
	case a.window <- struct{}{}:
	case <-a.failed:
		return fmt.Errorf("%s failed", ss.stage.name)
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	tok := &answerToken{e: e, rows: rec.NumRows()}
	e.holdAnswer(a.sinks)
	a.submitMu.Lock()
	a.mu.Lock()
	a.due = append(a.due, tok)
	a.mu.Unlock()
	err := a.op.Submit(rec, tok)
	a.submitMu.Unlock()
	if err != nil {
		// The stage's stream has ended: answerLoop reports why.
		return stageErr(ss.stage, err)
	}
	return nil
}

// answerLoop is an asynchronous stage's goroutine: it takes the stage's
// answers, which come in the order the batches were submitted, routes each
// to everything downstream and then ends the batch's hold. After a failure
// (the stage's own, an answer out of order, or routing an answer
// downstream) it routes nothing more, and takes what the stage still
// answers until the stage has ended (Close, or the run's end). A batch
// whose answer was not routed keeps its hold: it is never done, so no
// position at or after it is committed, and the sinks behind the stage
// have no mark of it (the sinks that got it by another way do).
func (r *Runner) answerLoop(ss *stageState) {
	a := ss.async
	defer close(a.done)
	for {
		ans, err := a.op.Next()
		if errors.Is(err, io.EOF) {
			a.mu.Lock()
			n := len(a.due)
			a.mu.Unlock()
			if n == 0 {
				return
			}
			err = fmt.Errorf("the stage ended without answering %d batches", n)
		}
		if err != nil {
			r.stageFailed(ss, stageErr(ss.stage, err))
			return
		}
		if err := r.routeAnswer(ss, ans); err != nil {
			r.stageFailed(ss, err)
		}
	}
}

// routeAnswer routes what an asynchronous stage answered for the oldest
// batch due, and ends that batch's hold.
func (r *Runner) routeAnswer(ss *stageState, ans plan.Answer) error {
	a := ss.async
	out := ans.Rec
	if out != nil {
		defer out.Release()
	}
	a.mu.Lock()
	var tok *answerToken
	if len(a.due) > 0 && ans.Token == any(a.due[0]) {
		tok = a.due[0]
		a.due = a.due[1:]
	}
	a.mu.Unlock()
	select {
	case <-a.failed:
		return nil // the run is failing: nothing more is routed
	default:
	}
	if tok == nil {
		return fmt.Errorf("%s: an answer came for a batch that is not the oldest one due: answers must come in the order of the batches", ss.stage.name)
	}
	var rows int64
	if out != nil {
		rows = out.NumRows()
	}
	r.Stats.Filtered.Add(tok.rows - rows)
	if rows > 0 {
		if err := r.route(ss.op.NodeKey(), out, tok.e); err != nil {
			return err
		}
	}
	tok.e.answered(a.sinks)
	<-a.window
	return nil
}

// stageFailed ends the run after an asynchronous stage failed. As after a
// source's failure, reading stops and the sinks deliver (and the run
// commits) what reached them before.
func (r *Runner) stageFailed(ss *stageState, err error) {
	a := ss.async
	a.failOnce.Do(func() {
		if r.ctx.Err() != nil {
			r.fail(err) // the run was aborted; the stage ended with it
		} else {
			r.incomplete.Store(true)
			r.failOnce.Do(func() { r.failErr = err })
			r.stopReading()
		}
		close(a.failed)
	})
}

// stageErr names the stage in its own failure; a plugin's error names the
// plugin already.
func stageErr(st *stage, err error) error {
	if he := (*host.Error)(nil); errors.As(err, &he) {
		return err
	}
	return fmt.Errorf("%s: %w", st.name, err)
}

// isRecordError reports whether err is an expression failing on records
// (guard finds which), not a failure of the stage itself.
func isRecordError(err error) bool {
	var re *expr.RowError
	var ce *expr.Error
	return errors.As(err, &re) || errors.As(err, &ce)
}

func (r *Runner) toSink(ss *sinkState, in arrow.RecordBatch, e *entry) error {
	if !e.sent(ss.idx) {
		return nil // an earlier run's sink acked this batch
	}
	if ss.failed.Load() {
		// The sink failed: the batch stays unacked by it, so no position
		// past it is committed, while the other sinks go on.
		e.hold(ss.idx)
		return nil
	}
	rec, err := ss.schema.apply(r.opts.Allocator, in)
	if err != nil {
		return fmt.Errorf("sink %s: %w", ss.s.Name, err)
	}
	defer rec.Release()
	if ss.when == nil {
		return r.sinkTemplates(ss, rec, e)
	}
	p, err := ss.when.predicate(rec.Schema())
	if err != nil {
		return fmt.Errorf("sink %s: when: %w", ss.s.Name, err)
	}
	return r.guarded(ss.stage, rec, e, p.Filter, func(_, out arrow.RecordBatch) error {
		return r.sinkTemplates(ss, out, e)
	})
}

// sinkTemplates renders a sink's templates into rec and sends it.
func (r *Runner) sinkTemplates(ss *sinkState, rec arrow.RecordBatch, e *entry) error {
	if rec.NumRows() == 0 {
		return nil
	}
	if len(ss.templates) == 0 {
		rec.Retain()
		return r.send(ss, rec, e)
	}
	return r.guarded(ss.stage, rec, e, func(b arrow.RecordBatch) (arrow.RecordBatch, error) { return r.renderTemplates(ss, b) },
		func(_, out arrow.RecordBatch) error {
			out.Retain()
			return r.send(ss, out, e)
		})
}

// send hands rec, which it takes over, to a sink's stream.
func (r *Runner) send(ss *sinkState, rec arrow.RecordBatch, e *entry) error {
	// A batch that was read is delivered even during a drain; only the
	// run's end (failure, abort) drops it, and then it stays unacked.
	r.tapped("sink."+ss.s.Name, rec)
	e.hold(ss.idx)
	select {
	case ss.in <- sinkItem{rec: rec, e: e}:
		return nil
	case <-ss.dead:
		rec.Release() // stays held: the failed sink never acks it
		return nil
	case <-r.ctx.Done():
		rec.Release()
		return r.ctx.Err()
	}
}

func (r *Runner) renderTemplates(ss *sinkState, rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	fields := append([]arrow.Field(nil), rec.Schema().Fields()...)
	cols := append([]arrow.Array(nil), rec.Columns()...)
	var rendered []arrow.Array
	defer func() {
		for _, a := range rendered {
			a.Release()
		}
	}()
	for attr, c := range ss.templates {
		t, err := c.compileTemplate(rec.Schema())
		if err != nil {
			// Not one record's failure: the template does not compile.
			return nil, fmt.Errorf("%s: %v", attr, err)
		}
		col, err := t.Render(rec)
		if err != nil {
			var re *expr.RowError
			if errors.As(err, &re) {
				return nil, err // guarded names the record
			}
			return nil, fmt.Errorf("%s: %w", attr, err)
		}
		rendered = append(rendered, col)
		fields = append(fields, arrow.Field{Name: sdk.TemplateColumnPrefix + attr, Type: arrow.BinaryTypes.String, Nullable: true})
		cols = append(cols, col)
	}
	md := rec.Schema().Metadata()
	return array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, rec.NumRows()), nil
}

// sendLoop streams a sink's batches, at most MaxInFlight unacked.
func (r *Runner) sendLoop(ctx context.Context, ss *sinkState) {
	defer func() {
		// Release what will never be sent.
		for it := range ss.in {
			it.rec.Release()
		}
	}()
	for it := range ss.in {
		select {
		case ss.slots <- struct{}{}:
		case <-ss.dead:
			it.rec.Release()
			return
		case <-ctx.Done():
			it.rec.Release()
			ss.stream.CloseSend()
			return
		}
		err := ss.stream.Send(it.rec, &ackToken{e: it.e, rows: it.rec.NumRows()})
		it.rec.Release()
		if err != nil {
			r.sinkFailed(ss, err, false)
			return
		}
	}
	if r.incomplete.Load() {
		// The run failed or was interrupted: a buffered sink must not make
		// part of a run visible (a replaced export, a truncated table).
		if err := ss.stream.Abort(); err != nil {
			r.sinkFailed(ss, err, false)
			return
		}
	}
	if err := ss.stream.CloseSend(); err != nil {
		r.sinkFailed(ss, err, false)
	}
}

// sinkFailed stops reading after a sink failed; the other sinks deliver
// what they were sent, and what they ack is committed as their progress.
// The failed sink's batches stay unacked, so the next run sends them again.
// An error from the end of the stream (the plugin's own) wins over one from
// sending to it.
func (r *Runner) sinkFailed(ss *sinkState, err error, final bool) {
	if r.ctx.Err() != nil {
		// The run was aborted (a second signal, ctx ended): the sink's
		// stream ended with it, which is no failure of the sink.
		r.fail(err)
		return
	}
	ss.errMu.Lock()
	if ss.err == nil || final {
		ss.err = err
	}
	ss.errMu.Unlock()
	r.incomplete.Store(true)
	if ss.failed.CompareAndSwap(false, true) {
		close(ss.dead)
		r.opts.Logger.Error("sink failed; the other sinks finish what they were sent", "sink", ss.s.Name, "error", err.Error())
	}
	r.failOnce.Do(func() { r.failErr = &SinkError{Sink: ss.s.Name, state: ss} })
	r.stopReading()
}

// SinkError is a run's failure caused by one sink.
type SinkError struct {
	Sink  string
	state *sinkState
}

func (e *SinkError) Unwrap() error {
	e.state.errMu.Lock()
	defer e.state.errMu.Unlock()
	return e.state.err
}

func (e *SinkError) Error() string {
	return fmt.Sprintf("sink %s failed: %v\nThe other sinks kept what they received. Fix the cause and run again: sink %s gets what it did not acknowledge, the others only what is new to them.", e.Sink, e.Unwrap(), e.Sink)
}

// ackLoop turns a sink's acks into released holds.
func (r *Runner) ackLoop(ss *sinkState) {
	for tok := range ss.stream.Acks() {
		a := tok.(*ackToken)
		r.Stats.addSink(ss.s.Name, a.rows)
		a.e.release(ss.idx)
		<-ss.slots
	}
	if err := ss.stream.Wait(); err != nil {
		r.sinkFailed(ss, err, true)
	}
}

// addIDs appends the stable record id column: the record's row_id where it
// has a string one, else a hash of the source, the position the batch starts
// after, and the row's index from there.
func addIDs(mem memory.Allocator, rec arrow.RecordBatch, schema *arrow.Schema, source string, start []byte, offset int64) arrow.RecordBatch {
	var rowIDs *array.String
	if idx := rec.Schema().FieldIndices("row_id"); len(idx) > 0 {
		rowIDs, _ = rec.Column(idx[0]).(*array.String)
	}
	h := sha256.Sum256(append([]byte(source+"\x00"), start...))
	prefix := hex.EncodeToString(h[:8]) + "-"
	b := array.NewStringBuilder(mem)
	defer b.Release()
	n := int(rec.NumRows())
	b.Reserve(n)
	for i := 0; i < n; i++ {
		if rowIDs != nil && rowIDs.IsValid(i) && rowIDs.Value(i) != "" {
			b.Append(rowIDs.Value(i))
			continue
		}
		b.Append(prefix + strconv.FormatInt(offset+int64(i), 10))
	}
	ids := b.NewArray()
	defer ids.Release()
	cols := append(append([]arrow.Array(nil), rec.Columns()...), ids)
	return array.NewRecordBatch(schema, cols, rec.NumRows())
}

// addPlaceIDs appends the record id column for a batch whose source said
// where each record is in its input: the record's row_id where it has one,
// else a hash of the source and the input's name, then the record's place
// in it. The id depends only on the record, never on how batches were cut.
func addPlaceIDs(mem memory.Allocator, rec arrow.RecordBatch, schema *arrow.Schema, source, origin string, places []int64) arrow.RecordBatch {
	var rowIDs *array.String
	if idx := rec.Schema().FieldIndices("row_id"); len(idx) > 0 {
		rowIDs, _ = rec.Column(idx[0]).(*array.String)
	}
	h := sha256.Sum256([]byte(source + "\x00" + origin))
	prefix := make([]byte, 0, 40)
	prefix = hex.AppendEncode(prefix, h[:8])
	prefix = append(prefix, '-')
	b := array.NewStringBuilder(mem)
	defer b.Release()
	n := int(rec.NumRows())
	b.Reserve(n)
	b.ReserveData(n * (len(prefix) + 6))
	buf := prefix
	for i := 0; i < n; i++ {
		if rowIDs != nil && rowIDs.IsValid(i) && rowIDs.Value(i) != "" {
			b.Append(rowIDs.Value(i))
			continue
		}
		buf = strconv.AppendInt(buf[:len(prefix)], places[i], 10)
		b.BinaryBuilder.Append(buf)
	}
	ids := b.NewArray()
	defer ids.Release()
	cols := append(append([]arrow.Array(nil), rec.Columns()...), ids)
	return array.NewRecordBatch(schema, cols, rec.NumRows())
}

// withIDField is schema plus the id column; built once per schema so that
// batches keep sharing one schema object.
func withIDField(schema *arrow.Schema) *arrow.Schema {
	fields := append(append([]arrow.Field(nil), schema.Fields()...), arrow.Field{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String, Nullable: true})
	md := schema.Metadata()
	return arrow.NewSchema(fields, &md)
}
