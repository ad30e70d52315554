package run

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// fakeSource emits one batch per element of batches (JSON lines), with the
// batch's index as its position; it resumes after the checkpoint.
type fakeSource struct {
	batches [][]string
	// origin, when set, is reported as the input's name, each record's
	// place being its line (1-based over all batches).
	origin string
}

func (f *fakeSource) Read(ctx context.Context, checkpoint []byte, fn func(host.ReadMsg) error) error {
	start := 0
	if len(checkpoint) > 0 {
		n, _ := strconv.Atoi(string(checkpoint))
		start = n + 1
	}
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for i := start; i < len(f.batches); i++ {
		for _, line := range f.batches[i] {
			if err := dec.Append([]byte(line)); err != nil {
				return err
			}
		}
		m := host.ReadMsg{Rec: dec.Flush(), Position: []byte(strconv.Itoa(i))}
		if f.origin != "" {
			m.Origin, m.PlaceUnit = f.origin, "line"
			line := int64(0)
			for _, b := range f.batches[:i] {
				line += int64(len(b))
			}
			for range f.batches[i] {
				line++
				m.Places = append(m.Places, line)
			}
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// fakeSink records the ids it receives; failAt makes its n-th batch fail.
type fakeSink struct {
	failAt int
	// failAfter, when set, makes the failing batch wait until that sink
	// has received a batch, so that which sink acks first is not left to
	// the scheduler.
	failAfter *fakeSink

	mu  sync.Mutex
	ids []string
}

func (f *fakeSink) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.ids...)
	sort.Strings(out)
	return out
}

func (f *fakeSink) OpenStream(ctx context.Context) (SinkStream, error) {
	s := &fakeStream{sink: f, in: make(chan fakeItem, 16), acks: make(chan any, 16), done: make(chan struct{})}
	go s.loop()
	return s, nil
}

type fakeItem struct {
	rec   arrow.RecordBatch
	token any
}

type fakeStream struct {
	sink *fakeSink
	in   chan fakeItem
	acks chan any
	done chan struct{}
	err  error
	n    int
}

func (s *fakeStream) Send(rec arrow.RecordBatch, token any) error {
	rec.Retain()
	select {
	case s.in <- fakeItem{rec, token}:
		return nil
	case <-s.done:
		rec.Release()
		return s.err
	}
}

func (s *fakeStream) loop() {
	defer close(s.done)
	defer close(s.acks)
	for it := range s.in {
		s.n++
		if s.n == s.sink.failAt {
			if other := s.sink.failAfter; other != nil {
				for deadline := time.Now().Add(10 * time.Second); len(other.got()) == 0 && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
			}
			it.rec.Release()
			s.err = fmt.Errorf("sink failed on batch %d", s.n)
			go func() {
				for it := range s.in {
					it.rec.Release()
				}
			}()
			return
		}
		b := sdk.NewBatch(it.rec)
		s.sink.mu.Lock()
		for i := 0; i < b.Len(); i++ {
			s.sink.ids = append(s.sink.ids, b.ID(i))
		}
		s.sink.mu.Unlock()
		it.rec.Release()
		s.acks <- it.token
	}
}

func (s *fakeStream) Acks() <-chan any { return s.acks }
func (s *fakeStream) CloseSend() error { close(s.in); return nil }
func (s *fakeStream) Abort() error     { return nil }
func (s *fakeStream) Wait() error      { <-s.done; return s.err }

func rec(id string, x int, queue string) string {
	return fmt.Sprintf(`{"row_id":%q,"x":%d,"metadata":{"queue":%q}}`, id, x, queue)
}

func openStore(t *testing.T) *state.Store {
	t.Helper()
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestFanInFanOutAndCommits(t *testing.T) {
	ctx := context.Background()
	a := &fakeSource{batches: [][]string{
		{rec("a1", 1, "retention"), rec("a2", 5, "billing")},
		{rec("a3", 7, "retention")},
		{rec("a4", 0, "retention")}, // filtered out entirely: still committed
	}}
	b := &fakeSource{batches: [][]string{{`{"row_id":"b1","x":9}`}}} // no metadata at all
	all, retention := &fakeSink{}, &fakeSink{}
	plan := &Plan{
		Pipeline: "p",
		Sources:  []*Source{{Name: "a", Plugin: a}, {Name: "b", Plugin: b}},
		Stages:   []Stage{&Filter{Name: "big", Where: "x > 1", Inputs: []string{"source.a", "source.b"}}},
		Sinks: []*Sink{
			{Name: "all", Plugin: all, Inputs: []string{"filter.big"}},
			{Name: "retention", Plugin: retention, Inputs: []string{"filter.big"}, When: "metadata.queue == 'retention'"},
		},
	}
	st := openStore(t)
	r, err := New(plan, Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(all.got()); got != "[a2 a3 b1]" {
		t.Errorf("sink all got %s", got)
	}
	if got := fmt.Sprint(retention.got()); got != "[a3]" {
		t.Errorf("sink retention got %s", got)
	}
	for src, want := range map[string]string{"a": "2", "b": "0"} {
		pos, _ := st.Get(ctx, "p", src)
		if string(pos) != want {
			t.Errorf("source %s committed %q, want %q", src, pos, want)
		}
	}
	s := r.Stats.Snapshot()
	if s.Read != 5 || s.Filtered != 2 || s.Sinks["all"] != 3 || s.Sinks["retention"] != 1 {
		t.Errorf("stats %+v", s)
	}

	// A second run reads nothing.
	r2, _ := New(plan, Options{Store: st})
	if err := r2.Run(ctx); err != nil || r2.Stats.Read.Load() != 0 {
		t.Fatalf("second run: read %d, %v", r2.Stats.Read.Load(), err)
	}
}

func TestSinkFailureKeepsTheCheckpointBeforeUnackedBatches(t *testing.T) {
	ctx := context.Background()
	src := &fakeSource{batches: [][]string{{rec("r1", 5, "q")}, {rec("r2", 5, "q")}, {rec("r3", 5, "q")}}}
	good := &fakeSink{}
	bad := &fakeSink{failAt: 2, failAfter: good}
	plan := &Plan{
		Pipeline: "p",
		Sources:  []*Source{{Name: "s", Plugin: src}},
		Sinks: []*Sink{
			{Name: "good", Plugin: good, Inputs: []string{"source.s"}},
			{Name: "bad", Plugin: bad, Inputs: []string{"source.s"}},
		},
	}
	st := openStore(t)
	r, _ := New(plan, Options{Store: st, MaxInFlight: 1})
	err := r.Run(ctx)
	var se *SinkError
	if !errors.As(err, &se) || se.Sink != "bad" || se.Unwrap().Error() != "sink failed on batch 2" {
		t.Fatalf("run error %v", err)
	}
	// Batch 0 was acked by both sinks (the bad one fails on batch 1 only
	// after the good one has it); nothing after it may be committed.
	pos, _ := st.Get(ctx, "p", "s")
	if string(pos) != "0" {
		t.Fatalf("committed %q; only batch 0 was acked by both sinks", pos)
	}

	// The next run resumes after batch 0: the fixed sink gets r2 and r3,
	// the good one only what it did not ack before (per-sink progress).
	good2, fixed := &fakeSink{}, &fakeSink{}
	plan.Sinks[0].Plugin, plan.Sinks[1].Plugin = good2, fixed
	r2, _ := New(plan, Options{Store: st})
	if err := r2.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if all := fmt.Sprint(append(good.got(), good2.got()...)); fmt.Sprint(fixed.got()) != "[r2 r3]" || all != "[r1 r2 r3]" {
		t.Fatalf("resumed run: good got %v then %v, fixed %v", good.got(), good2.got(), fixed.got())
	}
}

func TestDrainDeliversWhatWasReadAndStops(t *testing.T) {
	ctx := context.Background()
	batches := make([][]string, 50)
	for i := range batches {
		batches[i] = []string{rec(fmt.Sprintf("r%02d", i), 5, "q")}
	}
	drain := make(chan struct{})
	sink := &fakeSink{}
	src := &drainingSource{fakeSource: fakeSource{batches: batches}, drain: drain, after: 10}
	plan := &Plan{Pipeline: "p", Sources: []*Source{{Name: "s", Plugin: src}}, Sinks: []*Sink{{Name: "k", Plugin: sink, Inputs: []string{"source.s"}}}}
	st := openStore(t)
	r, _ := New(plan, Options{Store: st, Drain: drain})
	if err := r.Run(ctx); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("run: %v, want ErrInterrupted", err)
	}
	got := sink.got()
	pos, _ := st.Get(ctx, "p", "s")
	n, _ := strconv.Atoi(string(pos))
	if len(got) != n+1 || len(got) < 10 || len(got) == 50 {
		t.Fatalf("delivered %d, committed position %d: every delivered batch must be committed and the drain must stop early", len(got), n)
	}
}

// drainingSource closes drain after emitting `after` batches, then keeps
// emitting until its context ends.
type drainingSource struct {
	fakeSource
	drain chan struct{}
	after int
}

func (d *drainingSource) Read(ctx context.Context, checkpoint []byte, fn func(host.ReadMsg) error) error {
	n := 0
	return d.fakeSource.Read(ctx, checkpoint, func(m host.ReadMsg) error {
		if err := ctx.Err(); err != nil {
			m.Rec.Release()
			return err
		}
		n++
		if n == d.after {
			close(d.drain)
		}
		if n > d.after {
			// A source that reads on while the drain is being noticed:
			// it is stopped by the read context, however fast it is.
			select {
			case <-ctx.Done():
				m.Rec.Release()
				return ctx.Err()
			case <-time.After(10 * time.Second):
			}
		}
		return fn(m)
	})
}

// failingSource emits its batches, then fails.
type failingSource struct{ fakeSource }

func (f *failingSource) Read(ctx context.Context, checkpoint []byte, fn func(host.ReadMsg) error) error {
	if err := f.fakeSource.Read(ctx, checkpoint, fn); err != nil {
		return err
	}
	return errors.New("calls.jsonl:3: invalid JSON")
}

func TestSourceFailureDeliversAndCommitsWhatCameBefore(t *testing.T) {
	ctx := context.Background()
	src := &failingSource{fakeSource{batches: [][]string{{rec("r1", 5, "q")}, {rec("r2", 5, "q")}}}}
	sink := &fakeSink{}
	plan := &Plan{Pipeline: "p", Sources: []*Source{{Name: "s", Plugin: src}}, Sinks: []*Sink{{Name: "k", Plugin: sink, Inputs: []string{"source.s"}}}}
	st := openStore(t)
	r, _ := New(plan, Options{Store: st})
	err := r.Run(ctx)
	if err == nil || err.Error() != "calls.jsonl:3: invalid JSON" {
		t.Fatalf("run: %v", err)
	}
	if fmt.Sprint(sink.got()) != "[r1 r2]" {
		t.Fatalf("delivered %v, want both batches read before the failure", sink.got())
	}
	if pos, _ := st.Get(ctx, "p", "s"); string(pos) != "1" {
		t.Fatalf("committed %q, want 1", pos)
	}
}

// A template that fails on a record (an integer modulo by zero) names the
// record's place, or drops and counts it with on_error = "skip".
func TestTemplateErrorsNameTheRecordOrAreSkipped(t *testing.T) {
	ctx := context.Background()
	batches := [][]string{{rec("a", 1, "q"), rec("b", 0, "q")}, {rec("c", 2, "q"), rec("d", 0, "q"), rec("e", 5, "q")}}
	for _, skip := range []bool{false, true} {
		sink := &fakeSink{}
		plan := &Plan{
			Pipeline: "p",
			Sources:  []*Source{{Name: "s", Plugin: &fakeSource{batches: batches, origin: "in.jsonl"}}},
			Sinks:    []*Sink{{Name: "crm", Plugin: sink, Inputs: []string{"source.s"}, Templates: map[string]string{"text": "{{ 10 % x }}"}, SkipErrors: skip}},
		}
		r, _ := New(plan, Options{Store: openStore(t)})
		err := r.Run(ctx)
		if !skip {
			if err == nil || !strings.Contains(err.Error(), "sink crm: in.jsonl:2: ") || !strings.Contains(err.Error(), "divide by zero") {
				t.Fatalf("without skip: %v; want the error to name in.jsonl:2", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(sink.got()); got != "[a c e]" || r.Stats.Rejected.Load() != 2 {
			t.Fatalf("with skip: the sink got %s, %d rejected; want [a c e] and 2", got, r.Stats.Rejected.Load())
		}
	}
}

// Records without a row_id get ids from their place, whatever the batches.
func TestIDsFromPlacesDoNotDependOnBatches(t *testing.T) {
	ctx := context.Background()
	lines := []string{`{"x":1}`, `{"x":2}`, `{"x":3}`, `{"x":4}`}
	ids := func(batches [][]string) []string {
		sink := &fakeSink{}
		plan := &Plan{Pipeline: "p", Sources: []*Source{{Name: "s", Plugin: &fakeSource{batches: batches, origin: "in.jsonl"}}},
			Sinks: []*Sink{{Name: "out", Plugin: sink, Inputs: []string{"source.s"}}}}
		r, _ := New(plan, Options{})
		if err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
		return sink.got()
	}
	a := ids([][]string{lines[:1], lines[1:]})
	b := ids([][]string{lines[:3], lines[3:]})
	if fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 4 || !strings.HasSuffix(a[0], "-1") {
		t.Fatalf("ids differ with the batch cuts: %v vs %v", a, b)
	}
}
