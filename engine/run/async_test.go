package run

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/plan"
	"github.com/pipelinehq/pipeline/sdk"
)

// fakeTransform is a transform plugin served in the test's process: it
// answers each batch with its records and a column of its own (named
// field) holding the batch's number (1-based), in order. It holds its
// answers until window batches are in flight (or no more follow), so a
// runner that waited for each answer before sending the next batch would
// never get one.
type fakeTransform struct {
	field  string
	window int
	// failAt makes the answer to that batch a failure that ends the stream.
	failAt int
	// silent answers nothing until the stream is cancelled.
	silent bool
	// dropFirst drops the first record of every batch.
	dropFirst bool

	mu          sync.Mutex
	maxInFlight int
	streams     []*fakeTransformStream
}

func (f *fakeTransform) Transform(context.Context) (*host.TransformStream, error) {
	return nil, errors.New("fakeTransform opens in-process streams only")
}

func (f *fakeTransform) OpenTransform(ctx context.Context) (plan.TransformStream, error) {
	s := &fakeTransformStream{f: f, ctx: ctx, wake: make(chan struct{}, 1), results: make(chan host.TransformResult, 1024), done: make(chan struct{})}
	f.mu.Lock()
	f.streams = append(f.streams, s)
	f.mu.Unlock()
	go s.answer()
	return s, nil
}

func (f *fakeTransform) inFlight() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxInFlight
}

// ended reports whether every stream it opened has ended.
func (f *fakeTransform) ended() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.streams {
		select {
		case <-s.done:
		default:
			return false
		}
	}
	return true
}

type fakeTransformStream struct {
	f    *fakeTransform
	ctx  context.Context
	wake chan struct{}

	mu      sync.Mutex
	queue   []host.TransformResult // sent, not answered yet; Recs is the answer
	sent    int
	closed  bool
	results chan host.TransformResult
	done    chan struct{}
	err     error
}

func (s *fakeTransformStream) Send(rec arrow.RecordBatch, token any) error {
	select {
	case <-s.done:
		return s.Wait()
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("send after CloseSend")
	}
	s.sent++
	out := withColumn(rec, s.f.field, int64(s.sent))
	if s.f.dropFirst {
		sl := out.NewSlice(1, out.NumRows())
		out.Release()
		out = sl
	}
	s.queue = append(s.queue, host.TransformResult{Token: token, Recs: []arrow.RecordBatch{out}})
	s.f.mu.Lock()
	s.f.maxInFlight = max(s.f.maxInFlight, len(s.queue))
	s.f.mu.Unlock()
	s.poke()
	return nil
}

func (s *fakeTransformStream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// answer answers the batches in order, each once window of them are in
// flight or the stream is closed.
func (s *fakeTransformStream) answer() {
	defer close(s.done)
	defer close(s.results)
	answered := 0
	for {
		s.mu.Lock()
		ready := len(s.queue) > 0 && !s.f.silent && (len(s.queue) >= s.f.window || s.closed)
		end := len(s.queue) == 0 && s.closed
		var next host.TransformResult
		if ready {
			next = s.queue[0]
			s.queue = s.queue[1:]
		}
		s.mu.Unlock()
		if end {
			return
		}
		if !ready {
			select {
			case <-s.wake:
				continue
			case <-s.ctx.Done():
				s.fail(s.ctx.Err())
				return
			}
		}
		answered++
		time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		if answered == s.f.failAt {
			releaseAll(next.Recs)
			s.fail(fmt.Errorf("the model answered 503 for batch %d", answered))
			return
		}
		s.results <- next
	}
}

func (s *fakeTransformStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
	for _, q := range s.queue {
		releaseAll(q.Recs)
	}
	s.queue = nil
}

func (s *fakeTransformStream) Results() <-chan host.TransformResult { return s.results }

func (s *fakeTransformStream) CloseSend() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.poke()
	return nil
}

func (s *fakeTransformStream) Wait() error {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func releaseAll(recs []arrow.RecordBatch) {
	for _, r := range recs {
		r.Release()
	}
}

// withColumn is rec with an int64 column name holding v in every row.
func withColumn(rec arrow.RecordBatch, name string, v int64) arrow.RecordBatch {
	b := array.NewInt64Builder(memory.DefaultAllocator)
	defer b.Release()
	for i := int64(0); i < rec.NumRows(); i++ {
		b.Append(v)
	}
	col := b.NewArray()
	defer col.Release()
	fields := append(append([]arrow.Field(nil), rec.Schema().Fields()...), arrow.Field{Name: name, Type: arrow.PrimitiveTypes.Int64, Nullable: true})
	cols := append(append([]arrow.Array(nil), rec.Columns()...), col)
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows())
}

// orderedSink records, in the order it receives them, each record's id and
// the named int64 columns.
type orderedSink struct {
	fakeSink
	cols []string

	rowsMu sync.Mutex
	rows   []string
}

func (o *orderedSink) OpenStream(ctx context.Context) (SinkStream, error) {
	inner, _ := o.fakeSink.OpenStream(ctx)
	return &orderedStream{SinkStream: inner, o: o}, nil
}

type orderedStream struct {
	SinkStream
	o *orderedSink
}

func (s *orderedStream) Send(rec arrow.RecordBatch, token any) error {
	b := sdk.NewBatch(rec)
	s.o.rowsMu.Lock()
	for i := 0; i < b.Len(); i++ {
		row := b.ID(i)
		for _, c := range s.o.cols {
			idx := rec.Schema().FieldIndices(c)
			if len(idx) == 0 {
				row += ":-"
				continue
			}
			row += fmt.Sprintf(":%d", rec.Column(idx[0]).(*array.Int64).Value(i))
		}
		s.o.rows = append(s.o.rows, row)
	}
	s.o.rowsMu.Unlock()
	return s.SinkStream.Send(rec, token)
}

func (o *orderedSink) got() []string {
	o.rowsMu.Lock()
	defer o.rowsMu.Unlock()
	return append([]string(nil), o.rows...)
}

// batchesOf makes n batches of per records each: r<batch>-<record>.
func batchesOf(n, per int) [][]string {
	out := make([][]string, n)
	for i := range out {
		for j := 0; j < per; j++ {
			out[i] = append(out[i], rec(fmt.Sprintf("r%02d-%d", i, j), j, "q"))
		}
	}
	return out
}

// runWithin runs r, failing the test if it has not returned after d.
func runWithin(t *testing.T, ctx context.Context, r *Runner, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Fatalf("the run did not end within %s:\n%s", d, buf[:runtime.Stack(buf, true)])
		return nil
	}
}

// The runner sends batches to a transform plugin without waiting for its
// answers: window of them are in flight at once, never more. Answers are
// routed in input order, through a second plugin transform and to the
// sinks, every batch is committed, and a batch whose records the plugin
// dropped is counted as filtered.
func TestPluginTransformPipelinesBatches(t *testing.T) {
	ctx := context.Background()
	const window = 4
	a := &fakeTransform{field: "a", window: window}
	b := &fakeTransform{field: "b", window: window, dropFirst: true}
	src := &fakeSource{batches: batchesOf(30, 3)}
	out := &orderedSink{cols: []string{"a", "b"}}
	direct := &orderedSink{cols: []string{"a"}}
	p := &Plan{
		Pipeline: "p",
		Sources:  []*Source{{Name: "s", Plugin: src}},
		Stages: []Stage{
			&plan.PluginTransform{Name: "a", Type: "fake", Inputs: []string{"source.s"}, Plugin: a},
			&plan.PluginTransform{Name: "b", Type: "fake", Inputs: []string{"transform.a"}, Plugin: b},
		},
		Sinks: []*Sink{
			{Name: "out", Plugin: out, Inputs: []string{"transform.b"}},
			{Name: "direct", Plugin: direct, Inputs: []string{"source.s"}},
		},
	}
	st := openStore(t)
	r, err := New(p, Options{Store: st, MaxInFlight: window, CommitInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := runWithin(t, ctx, r, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if a.inFlight() != window || b.inFlight() != window {
		t.Errorf("batches in flight at once: %d in a, %d in b; want %d (the window)", a.inFlight(), b.inFlight(), window)
	}
	var want, wantDirect []string
	for i := 0; i < 30; i++ {
		for j := 0; j < 3; j++ {
			if j > 0 {
				want = append(want, fmt.Sprintf("r%02d-%d:%d:%d", i, j, i+1, i+1))
			}
			wantDirect = append(wantDirect, fmt.Sprintf("r%02d-%d:-", i, j))
		}
	}
	if got := out.got(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the sink after the transforms got\n%v\nwant\n%v", got, want)
	}
	if got := direct.got(); strings.Join(got, " ") != strings.Join(wantDirect, " ") {
		t.Errorf("the sink on the source got %v", got)
	}
	if pos, _ := st.Get(ctx, "p", "s"); string(pos) != "29" {
		t.Errorf("committed %q, want 29 (every batch)", pos)
	}
	if s := r.Stats.Snapshot(); s.Read != 90 || s.Filtered != 30 || s.Sinks["out"] != 60 || s.Sinks["direct"] != 90 {
		t.Errorf("stats %+v", s)
	}
	if !a.ended() || !b.ended() {
		t.Error("a transform's stream is still open after the run")
	}
}

// A failure of the plugin on batch k fails the run; what was answered
// before it is delivered and committed, nothing at or after k is, and the
// next run picks up at k.
func TestPluginTransformFailureKeepsTheCheckpointBeforeIt(t *testing.T) {
	ctx := context.Background()
	tr := &fakeTransform{field: "a", window: 2, failAt: 4}
	src := &fakeSource{batches: batchesOf(8, 2)}
	sink := &orderedSink{cols: []string{"a"}}
	p := &Plan{
		Pipeline: "p",
		Sources:  []*Source{{Name: "s", Plugin: src}},
		Stages:   []Stage{&plan.PluginTransform{Name: "t", Type: "fake", Inputs: []string{"source.s"}, Plugin: tr}},
		Sinks:    []*Sink{{Name: "k", Plugin: sink, Inputs: []string{"transform.t"}}},
	}
	st := openStore(t)
	r, _ := New(p, Options{Store: st, MaxInFlight: 2})
	err := runWithin(t, ctx, r, 20*time.Second)
	if err == nil || err.Error() != "transform t: the model answered 503 for batch 4" {
		t.Fatalf("run: %v", err)
	}
	if got := strings.Join(sink.got(), " "); got != "r00-0:1 r00-1:1 r01-0:2 r01-1:2 r02-0:3 r02-1:3" {
		t.Fatalf("the sink got %s; want the three batches answered before the failure", got)
	}
	if pos, _ := st.Get(ctx, "p", "s"); string(pos) != "2" {
		t.Fatalf("committed %q, want 2 (the batch before the failed one)", pos)
	}
	if !tr.ended() {
		t.Fatal("the transform's stream is still open")
	}

	fixed := &fakeTransform{field: "a", window: 2}
	p.Stages[0].(*plan.PluginTransform).Plugin = fixed
	sink2 := &orderedSink{cols: []string{"a"}}
	p.Sinks[0].Plugin = sink2
	r2, _ := New(p, Options{Store: st, MaxInFlight: 2})
	if err := runWithin(t, ctx, r2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := sink2.got(); len(got) != 10 || got[0] != "r03-0:1" || got[9] != "r07-1:5" {
		t.Fatalf("the next run delivered %v; want batches 3 to 7", got)
	}
}

// An answer still due holds its batch: a sink that got the batch
// directly has it marked as acked, the sink behind the transform does not,
// so a run that ends before the answer (here: cancelled) loses nothing for
// it; the next run sends it the batches again, and only to it.
func TestAnswerDueIsNotAckedForTheSinksBehindIt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &fakeTransform{field: "a", window: 1, silent: true}
	src := &fakeSource{batches: batchesOf(3, 1)}
	direct, via := &orderedSink{}, &orderedSink{cols: []string{"a"}}
	p := &Plan{
		Pipeline: "p",
		Sources:  []*Source{{Name: "s", Plugin: src}},
		Stages:   []Stage{&plan.PluginTransform{Name: "t", Type: "fake", Inputs: []string{"source.s"}, Plugin: tr}},
		Sinks: []*Sink{
			{Name: "direct", Plugin: direct, Inputs: []string{"source.s"}},
			{Name: "via", Plugin: via, Inputs: []string{"transform.t"}},
		},
	}
	st := openStore(t)
	r, _ := New(p, Options{Store: st, MaxInFlight: 8, CommitInterval: time.Millisecond})
	go func() {
		// Every batch read, acked by the direct sink and committed as its
		// progress, while the transform answers nothing.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if m, _ := st.SinkProgress(ctx, "p", "s"); len(m["direct"]) == 3 {
				break
			}
		}
		cancel()
	}()
	if err := runWithin(t, ctx, r, 20*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v, want it cancelled", err)
	}
	if tr.inFlight() != 3 {
		t.Fatalf("%d batches were in the transform, want 3", tr.inFlight())
	}
	marks, _ := st.SinkProgress(context.Background(), "p", "s")
	if pos, _ := st.Get(context.Background(), "p", "s"); pos != nil || len(marks["direct"]) != 3 || len(marks["via"]) != 0 {
		t.Fatalf("committed %q, marks %v; want no position, 3 marks for direct and none for via", pos, marks)
	}

	p.Stages[0].(*plan.PluginTransform).Plugin = &fakeTransform{field: "a", window: 1}
	direct2, via2 := &orderedSink{}, &orderedSink{cols: []string{"a"}}
	p.Sinks[0].Plugin, p.Sinks[1].Plugin = direct2, via2
	r2, _ := New(p, Options{Store: st})
	if err := runWithin(t, context.Background(), r2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(via2.got(), " "); len(direct2.got()) != 0 || got != "r00-0:1 r01-0:2 r02-0:3" {
		t.Fatalf("next run: direct got %v, via %s; want nothing and every batch", direct2.got(), got)
	}
}

// A drain while batches are in the transform delivers and commits them,
// and the run ends; cancelling a run whose transform never answers ends it
// too, with the transform's stream closed and no goroutine left behind.
func TestPluginTransformRunEndsOnDrainAndCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("drain", func(t *testing.T) {
		drain := make(chan struct{})
		tr := &fakeTransform{field: "a", window: 3}
		src := &drainingSource{fakeSource: fakeSource{batches: batchesOf(50, 1)}, drain: drain, after: 10}
		sink := &orderedSink{cols: []string{"a"}}
		p := &Plan{
			Pipeline: "p",
			Sources:  []*Source{{Name: "s", Plugin: src}},
			Stages:   []Stage{&plan.PluginTransform{Name: "t", Type: "fake", Inputs: []string{"source.s"}, Plugin: tr}},
			Sinks:    []*Sink{{Name: "k", Plugin: sink, Inputs: []string{"transform.t"}}},
		}
		st := openStore(t)
		r, _ := New(p, Options{Store: st, Drain: drain, MaxInFlight: 3})
		if err := runWithin(t, context.Background(), r, 20*time.Second); !errors.Is(err, ErrInterrupted) {
			t.Fatalf("run: %v, want ErrInterrupted", err)
		}
		got := sink.got()
		pos, _ := st.Get(context.Background(), "p", "s")
		if len(got) != 10 || string(pos) != "9" || got[9] != "r09-0:10" {
			t.Fatalf("delivered %v, committed %q; want the 10 batches read before the drain, all committed", got, pos)
		}
		if !tr.ended() {
			t.Fatal("the transform's stream is still open")
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		tr := &fakeTransform{field: "a", window: 1, silent: true}
		sink := &orderedSink{}
		p := &Plan{
			Pipeline: "p",
			Sources:  []*Source{{Name: "s", Plugin: &fakeSource{batches: batchesOf(20, 1)}}},
			Stages:   []Stage{&plan.PluginTransform{Name: "t", Type: "fake", Inputs: []string{"source.s"}, Plugin: tr}},
			Sinks:    []*Sink{{Name: "k", Plugin: sink, Inputs: []string{"transform.t"}}},
		}
		st := openStore(t)
		r, _ := New(p, Options{Store: st, MaxInFlight: 4})
		go func() {
			for tr.inFlight() < 4 {
				time.Sleep(time.Millisecond)
			}
			cancel() // the window is full, the source waits on it
		}()
		if err := runWithin(t, ctx, r, 20*time.Second); !errors.Is(err, context.Canceled) {
			t.Fatalf("run: %v, want it cancelled", err)
		}
		if pos, _ := st.Get(context.Background(), "p", "s"); pos != nil || len(sink.got()) != 0 {
			t.Fatalf("committed %q, delivered %v; want nothing", pos, sink.got())
		}
		if !tr.ended() || tr.inFlight() != 4 {
			t.Fatalf("stream ended %v, %d in flight; want it ended with the window (4) in flight", tr.ended(), tr.inFlight())
		}
	})
	// Goroutines that outlive a run (sinks', streams', the runner's) would
	// pile up here.
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before the runs, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
