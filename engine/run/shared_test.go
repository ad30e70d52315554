package run

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/engine/cluster"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/plan"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// fakeShared is a source's shared state: it records what it was told.
type fakeShared struct {
	mu        sync.Mutex
	told      []string
	failFirst int // the first calls fail (NATS is away)
}

func (f *fakeShared) Committed(_ context.Context, position []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failFirst > 0 {
		f.failFirst--
		return errors.New("nats: no responders")
	}
	f.told = append(f.told, string(position))
	return nil
}

func (f *fakeShared) positions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.told)
}

// slowSource is a fakeSource that pauses after each batch, so that the
// run commits while it reads.
type slowSource struct{ fakeSource }

func (s *slowSource) Read(ctx context.Context, checkpoint []byte, fn func(host.ReadMsg) error) error {
	return s.fakeSource.Read(ctx, checkpoint, func(m host.ReadMsg) error {
		err := fn(m)
		time.Sleep(30 * time.Millisecond)
		return err
	})
}

// A source with shared state is read from no checkpoint, and its commits
// go to the state, in order, never to the store; a failed one is told
// again.
func TestSharedSourceCommitsToItsState(t *testing.T) {
	ctx := context.Background()
	src := &slowSource{fakeSource{batches: [][]string{{rec("r1", 5, "q")}, {rec("r2", 5, "q")}, {rec("r3", 5, "q")}}}}
	shared := &fakeShared{failFirst: 1}
	sink := &fakeSink{}
	plan := &Plan{Pipeline: "p",
		Sources: []*Source{{Name: "s", Plugin: src, Push: true, Shared: shared}},
		Sinks:   []*Sink{{Name: "k", Plugin: sink, Inputs: []string{"source.s"}}}}
	st := openStore(t)
	// A checkpoint in the store is not where a shared source starts.
	if err := st.Commit(ctx, "p", "s", []byte("1"), 2); err != nil {
		t.Fatal(err)
	}
	r, _ := New(plan, Options{Store: st, CommitInterval: 5 * time.Millisecond})
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sink.got(), ","); got != "r1,r2,r3" {
		t.Errorf("the sink got %s", got)
	}
	told := shared.positions()
	if len(told) == 0 || told[len(told)-1] != "2" || !slices.IsSorted(told) {
		t.Errorf("the shared state was told %q: the last position, 2, after the failed call, in order", told)
	}
	if pos, _ := st.Get(ctx, "p", "s"); string(pos) != "1" {
		t.Errorf("the store's checkpoint became %q: a shared source commits to its state only", pos)
	}
}

// Nothing past a batch a sink did not ack is told.
func TestSharedSourceIsToldOnlyWhatEverySinkAcked(t *testing.T) {
	ctx := context.Background()
	src := &fakeSource{batches: [][]string{{rec("r1", 5, "q")}, {rec("r2", 5, "q")}, {rec("r3", 5, "q")}}}
	shared := &fakeShared{}
	good := &fakeSink{}
	bad := &fakeSink{failAt: 2, failAfter: good}
	plan := &Plan{Pipeline: "p",
		Sources: []*Source{{Name: "s", Plugin: src, Push: true, Shared: shared}},
		Sinks:   []*Sink{{Name: "good", Plugin: good, Inputs: []string{"source.s"}}, {Name: "bad", Plugin: bad, Inputs: []string{"source.s"}}}}
	r, _ := New(plan, Options{Store: openStore(t), MaxInFlight: 1})
	var se *SinkError
	if err := r.Run(ctx); !errors.As(err, &se) {
		t.Fatalf("run: %v", err)
	}
	for _, p := range shared.positions() {
		if p != "0" {
			t.Errorf("told %q: only batch 0 was acked by both sinks", p)
		}
	}
}

// On a cluster, a push source without shared state is refused: one worker
// would keep what it accepts in its own state file.
func TestPushSourceOnAClusterNeedsSharedState(t *testing.T) {
	plan := &Plan{Pipeline: "p",
		Sources: []*Source{{Name: "s", Plugin: &fakeSource{}, Push: true}},
		Sinks:   []*Sink{{Name: "k", Plugin: &fakeSink{}, Inputs: []string{"source.s"}}}}
	r, _ := New(plan, Options{Store: openStore(t), Coordinator: &cluster.Coordinator{}})
	if err := r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "push source") {
		t.Fatalf("run: %v", err)
	}
}

// pushySource describes itself as a push source (it reads nothing).
type pushySource struct{ tableSource }

func (s *pushySource) Info() sdk.Info {
	info := s.tableSource.Info()
	info.Type, info.Push = "pushy", true
	return info
}

// fakeSourceState is what LoadOptions.SourceState serves a push source.
type fakeSourceState struct {
	pluginv1.UnimplementedStateServer
	fakeShared
	closed bool
}

func (f *fakeSourceState) Close() error { f.closed = true; return nil }

// Load asks LoadOptions.SourceState for the state of each push source
// (as the plugin describes itself; a custom plugin the same way), and of
// nothing else; the plan's Source is marked push and holds it as its
// shared state, which the load's Close closes.
func TestLoadServesPushSourcesTheirSharedState(t *testing.T) {
	builtins := testBuiltins(t)
	exe, _ := os.Executable()
	builtins = append(builtins, Builtin{Info: (&pushySource{}).Info(), Command: []string{exe, "source-pushy"}})
	file := filepath.Join(t.TempDir(), "p.hcl")
	if err := os.WriteFile(file, []byte(`
source "pushy" "in" {
  table = "x"
}
source "table" "users" {
  table = "users"
}
sink "memory" "out" {
  inputs = [source.in, source.users]
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var asked []string
	states := map[string]*fakeSourceState{}
	l, diags := Load(context.Background(), []string{file}, LoadOptions{Builtins: builtins, Store: openStore(t),
		SourceState: func(_ context.Context, pipeline, source string) (SourceStateServer, error) {
			asked = append(asked, pipeline+"/"+source)
			states[source] = &fakeSourceState{}
			return states[source], nil
		}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if want := []string{"p/in"}; !slices.Equal(asked, want) {
		t.Errorf("SourceState was asked for %q, want %q", asked, want)
	}
	for _, s := range l.Plan.Sources {
		switch s.Name {
		case "in":
			if !s.Push || s.Shared != plan.SharedState(states["in"]) {
				t.Errorf("source in: push %v, shared %v", s.Push, s.Shared)
			}
		case "users":
			if s.Push || s.Shared != nil {
				t.Errorf("source users: push %v, shared %v", s.Push, s.Shared)
			}
		}
	}
	l.Close()
	if !states["in"].closed {
		t.Error("the load's Close did not close the source's state")
	}
}
