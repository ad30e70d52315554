// Package plan is the one compiled pipeline, the only hand-off from
// engine/config (the checked files) to engine/run: a graph of nodes, each
// holding a ready operator — a started source plugin, a stage compiled in
// the engine (a filter, …), a started sink plugin with its compiled when
// and templates. Expressions are compiled once, by the check, and the run
// uses those programs (their plans adapt to the schemas batches bring).
// A new stage kind touches engine/config (its block) and this package (its
// operator, a Stage), nothing else.
package plan

import (
	"context"
	"fmt"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/state"
)

// Plan is a pipeline ready to run: started plugins and compiled stages
// wired as a graph.
type Plan struct {
	Pipeline string
	Sources  []*Source
	// Stages run in the engine between sources and sinks (filters, …), in
	// topological order: a stage's inputs come before it.
	Stages []Stage
	Sinks  []*Sink
}

// Stage is an operator that runs in the engine: a batch in, a batch out
// (rows dropped, columns added or replaced), tied to the batch it came
// from. The runner pads what reaches a stage to the union of its inputs'
// schemas, routes what leaves it, counts the rows it drops and handles the
// records its expressions fail on (on_error) the same way for every kind of
// stage: a new kind implements Stage and nothing in the runner changes.
type Stage interface {
	// NodeKey names the stage as references do: "filter.high_churn".
	NodeKey() string
	// InputKeys are the keys of the nodes the stage reads.
	InputKeys() []string
	// ReadFields lists the field paths its expressions read: a batch that
	// lacks one gets it as a null column.
	ReadFields() [][]string
	// SkipsErrors says a record the stage fails on is dropped and counted
	// (on_error = "skip") rather than failing the run.
	SkipsErrors() bool
	// Apply returns what leaves the stage for rec; the caller releases
	// both. A failure on records is an *expr.RowError (naming the row) or an
	// *expr.Error (the batch's schema does not fit); the runner then finds
	// the failing records by applying the stage to parts of rec.
	Apply(rec arrow.RecordBatch) (arrow.RecordBatch, error)
}

// AsyncStage is a Stage that takes a batch without waiting for what leaves
// it, so that several batches are in flight at once (a transform plugin:
// its stream takes the next batch while it works on the last). The runner
// opens it, submits batches with Submit (as many as its window allows; the
// window is the back-pressure on the sources) and routes each answer from
// the stage's own goroutine, in the order of Submit; it does not call Apply
// for it. Close says that no more batches follow: Next then returns the
// answers still due, then io.EOF. A failure (the plugin's error, an answer
// that breaks the protocol) ends the stage: Next returns it, the batches
// still unanswered get no answer, and the run fails.
type AsyncStage interface {
	Stage
	// Open starts the stage for a run.
	Open(ctx context.Context) error
	// Submit hands rec to the stage; its answer comes from Next with token.
	// Submit does not keep rec. The caller serialises calls to Submit.
	Submit(rec arrow.RecordBatch, token any) error
	// Next waits for the answer to the oldest batch given to Submit and not
	// answered yet. It returns io.EOF once the stage has ended with every
	// batch answered, or the error that ended it. One goroutine calls it.
	Next() (Answer, error)
	// Close says that no more batches follow and waits until the stage has
	// ended; it returns the error that ended it, if any.
	Close() error
}

// Answer is what left an AsyncStage for one batch given to Submit.
type Answer struct {
	// Token is the one given to Submit.
	Token any
	// Rec holds the records that leave the stage; nil when it dropped
	// them all. The receiver releases it.
	Rec arrow.RecordBatch
}

// Node keys name graph nodes as HCL references do: "source.calls", "filter.high_churn".
func SourceKey(name string) string { return "source." + name }
func FilterKey(name string) string { return "filter." + name }

// Source is a running source plugin.
type Source struct {
	Name   string
	Plugin SourcePlugin
	// Schema is the schema the source reported up front, if any.
	Schema *arrow.Schema
	// FromStart reads the source from its beginning every run: it feeds a
	// sink with incremental = false.
	FromStart bool
	// Push says the plugin is a push source (sdk.Info.Push): it listens,
	// and reads what it accepted from its inbox.
	Push bool
	// Shared, when set, is the source's state as every worker of a cluster
	// shares it (a push source's inbox on JetStream): the runner reads the
	// source on this worker without a lease or a checkpoint, and tells
	// Shared each position it commits instead of writing a checkpoint.
	Shared SharedState
}

// SharedState is a source's state that the workers of a cluster share,
// such as one inbox that the push source of every worker stores into and
// reads from. Positions are this worker's: what the source emitted in this
// session, growing.
type SharedState interface {
	// Committed says that every record up to position (one the source
	// emitted in this session) is acked by every sink it flows to: the
	// state may forget them. It is called with positions in order, and
	// again with the same position after an error.
	Committed(ctx context.Context, position []byte) error
}

// Filter is the stage that keeps the records for which Where is true.
type Filter struct {
	Name   string
	Where  string
	Inputs []string // node keys
	// SkipErrors drops a record whose where fails to evaluate, counting it
	// (on_error = "skip"); else the run fails naming the record.
	SkipErrors bool
	// Pred is Where as `pipeline validate` compiled it, nil when it could
	// not (the schema was unknown): it is compiled against the first batch.
	Pred *expr.Predicate

	mu   sync.Mutex
	pred *expr.Predicate // Pred, or compiled on the first batch
}

func (f *Filter) NodeKey() string        { return FilterKey(f.Name) }
func (f *Filter) InputKeys() []string    { return f.Inputs }
func (f *Filter) ReadFields() [][]string { return fields(f.Where) }
func (f *Filter) SkipsErrors() bool      { return f.SkipErrors }

// Apply keeps the rows of rec for which Where is true.
func (f *Filter) Apply(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	f.mu.Lock()
	if f.pred == nil {
		f.pred = f.Pred
	}
	if f.pred == nil {
		p, err := expr.CompilePredicateFor("where", f.Where, rec.Schema())
		if err != nil {
			f.mu.Unlock()
			// Not one record's failure: the expression does not compile at all.
			return nil, fmt.Errorf("where: %v", err)
		}
		f.pred = p
	}
	p := f.pred
	f.mu.Unlock()
	return p.Filter(rec)
}

// fields lists what an expression reads; one that does not parse reads
// nothing here and fails with its own message when it is compiled.
func fields(src string) [][]string {
	paths, _ := expr.Fields(src)
	return paths
}

// Sink is a running sink plugin.
type Sink struct {
	Name   string
	Plugin SinkPlugin
	Inputs []string // node keys
	// When, if set, selects the records this sink gets.
	When string
	// WhenPred and CompiledTemplates are When and Templates as `pipeline
	// validate` compiled them; missing ones are compiled on the first batch.
	WhenPred          *expr.Predicate
	CompiledTemplates map[string]*expr.Template
	// Templates maps template attributes to their {{ }} source; each is
	// rendered per record into a column the plugin reads.
	Templates map[string]string
	// Buffered sinks ack only when they flush (sdk.BufferedSink): they may
	// hold up to sdk.MaxHeldBatches unacked batches.
	Buffered bool
	// SkipErrors drops a record whose when or templates fail to evaluate
	// (on_error = "skip"); else the run fails naming the record.
	SkipErrors bool
	// Outbox is the sink's session on its outbox in the state store (nil
	// without a store): what it delivered, and how to tell it to stop
	// waiting for pending deliveries when the run is interrupted.
	Outbox *state.Outbox
}

// SourcePlugin is what the runner needs of a source; *host.Plugin has it.
type SourcePlugin interface {
	Read(ctx context.Context, checkpoint []byte, fn func(host.ReadMsg) error) error
}

// PartitionedSource is a SourcePlugin that may split into partitions, each
// read on its own with a checkpoint of its own (`pipeline serve --cluster`
// gives each to one worker at a time). The engine type-asserts for it on
// Source.Plugin; *host.Plugin has it. Having it does not make a source
// partitioned: Partitions says whether it is.
type PartitionedSource interface {
	SourcePlugin
	// Partitions lists the source's partitions now, sorted, each a stable
	// name. partitioned is false for a source that cannot split (a table,
	// a push source, a plugin built before partitions): it is one
	// partition, named "", read with Read.
	Partitions(ctx context.Context) (parts []string, partitioned bool, err error)
	// ReadPartition reads one partition from a position that the same
	// partition's ReadPartition emitted (nil: its beginning); the positions
	// it emits cover that partition alone. Partition "" is Read. A
	// partition that no longer exists reads nothing.
	ReadPartition(ctx context.Context, partition string, from []byte, fn func(host.ReadMsg) error) error
}

var _ PartitionedSource = (*host.Plugin)(nil)

// SinkPlugin opens a sink's stream.
type SinkPlugin interface {
	OpenStream(ctx context.Context) (SinkStream, error)
}

// SinkStream is an open stream to a sink; *host.WriteStream has it.
type SinkStream interface {
	Send(rec arrow.RecordBatch, token any) error
	Acks() <-chan any
	// Abort, sent before CloseSend, says the run ends without completing:
	// a buffered sink drops what it holds instead of flushing it.
	Abort() error
	CloseSend() error
	Wait() error
}

// Options tune a run.

// Started is what Build needs besides the checked pipeline: the started
// plugins and what they said, by block.
type Started struct {
	Sources map[*config.Source]SourcePlugin
	// Schemas are the sources' reported schemas, by source name.
	Schemas map[string]*arrow.Schema
	// FromStart names the sources read from the start every run.
	FromStart map[string]bool
	// Push names the push sources; Shared holds the state of those whose
	// state the workers of a cluster share, by source name.
	Push   map[string]bool
	Shared map[string]SharedState
	Sinks  map[*config.Sink]StartedSink
	// Transforms are the started transform plugins.
	Transforms map[*config.Transform]TransformPlugin
}

// StartedSink is a started sink plugin and what the engine keeps of it.
type StartedSink struct {
	Plugin   SinkPlugin
	Buffered bool
	Outbox   *state.Outbox
	// Templates maps each template attribute to its {{ }} source.
	Templates map[string]string
}

// Build makes the plan of a checked pipeline: its sources, its stages in
// topological order with the expressions the check compiled, its sinks.
func Build(p *config.Pipeline, compiled *config.Compiled, st Started) *Plan {
	if compiled == nil {
		compiled = &config.Compiled{}
	}
	pl := &Plan{Pipeline: p.Name}
	for _, s := range p.Sources {
		pl.Sources = append(pl.Sources, &Source{Name: s.Name, Plugin: st.Sources[s], Schema: st.Schemas[s.Name], FromStart: st.FromStart[s.Name],
			Push: st.Push[s.Name], Shared: st.Shared[s.Name]})
	}
	for _, n := range p.Stages {
		switch n := n.(type) {
		case *config.Filter:
			pl.Stages = append(pl.Stages, &Filter{Name: n.Name, Where: n.Where.Src, Inputs: inputKeys(n.Inputs), SkipErrors: n.OnError == config.OnErrorSkip, Pred: compiled.Where[n]})
		case *config.Transform:
			if n.IsPlugin() {
				pl.Stages = append(pl.Stages, &PluginTransform{Name: n.Name, Type: n.Type, Inputs: inputKeys(n.Inputs), SkipErrors: n.OnError == config.OnErrorSkip, Plugin: st.Transforms[n]})
				continue
			}
			pl.Stages = append(pl.Stages, &Transform{Name: n.Name, Inputs: inputKeys(n.Inputs), Spec: n.Spec(), SkipErrors: n.OnError == config.OnErrorSkip, Compiled: compiled.Transforms[n]})
		}
	}
	for _, s := range p.Sinks {
		ss := st.Sinks[s]
		sk := &Sink{Name: s.Name, Plugin: ss.Plugin, Inputs: inputKeys(s.Inputs), Buffered: ss.Buffered, Outbox: ss.Outbox,
			SkipErrors: s.OnError == config.OnErrorSkip, Templates: ss.Templates, CompiledTemplates: compiled.Templates[s]}
		if s.When != nil {
			sk.When, sk.WhenPred = s.When.Src, compiled.When[s]
		}
		pl.Sinks = append(pl.Sinks, sk)
	}
	return pl
}

func inputKeys(in []config.Input) []string {
	keys := make([]string, len(in))
	for i, x := range in {
		keys[i] = x.Node.Addr()
	}
	return keys
}
