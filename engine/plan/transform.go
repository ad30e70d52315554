package plan

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/transform"
)

// TransformKey names a transform node as references do: "transform.enrich".
func TransformKey(name string) string { return "transform." + name }

// Transform is the stage of a `transform "NAME"` block: computed fields
// (set), then drop, keep and rename (engine/transform).
type Transform struct {
	Name       string
	Inputs     []string // node keys
	Spec       transform.Spec
	SkipErrors bool
	// Compiled is the transform as `pipeline validate` compiled it, nil when
	// it could not (the input schema was unknown): it is compiled against
	// the first batch.
	Compiled *transform.Transform

	mu sync.Mutex
	t  *transform.Transform
}

func (t *Transform) NodeKey() string     { return TransformKey(t.Name) }
func (t *Transform) InputKeys() []string { return t.Inputs }
func (t *Transform) SkipsErrors() bool   { return t.SkipErrors }

// ReadFields lists the fields the set expressions read.
func (t *Transform) ReadFields() [][]string {
	var paths [][]string
	for _, a := range t.Spec.Set {
		paths = append(paths, fields(a.Src)...)
	}
	return paths
}

// OutputSchema is the schema of what leaves the stage for batches of in.
func (t *Transform) OutputSchema(in *arrow.Schema) *arrow.Schema {
	tr, err := t.compiled(in)
	if err != nil || in == nil {
		return nil
	}
	out, err := tr.Schema(in)
	if err != nil {
		return nil
	}
	return out
}

// Apply computes the set fields of rec, then drops, keeps and renames.
func (t *Transform) Apply(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	tr, err := t.compiled(rec.Schema())
	if err != nil {
		// Not one record's failure: the transform does not compile at all.
		return nil, fmt.Errorf("%v", err)
	}
	return tr.Apply(memory.DefaultAllocator, rec)
}

func (t *Transform) compiled(schema *arrow.Schema) (*transform.Transform, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.t == nil {
		t.t = t.Compiled
	}
	if t.t == nil {
		tr, err := transform.Compile(t.Spec, schema)
		if err != nil {
			return nil, err
		}
		t.t = tr
	}
	return t.t, nil
}

// TransformPlugin opens a transform plugin's stream; *host.Plugin has it.
type TransformPlugin interface {
	Transform(ctx context.Context) (*host.TransformStream, error)
}

// TransformStream is an open stream of batches through a transform plugin;
// *host.TransformStream has it. Results come in the order of Send.
type TransformStream interface {
	Send(rec arrow.RecordBatch, token any) error
	Results() <-chan host.TransformResult
	CloseSend() error
	Wait() error
}

// TransformStreamOpener is a TransformPlugin whose stream is not a plugin
// process's (one served in the engine's process, a test's fake): a
// PluginTransform opens its stream with OpenTransform instead.
type TransformStreamOpener interface {
	OpenTransform(ctx context.Context) (TransformStream, error)
}

// PluginTransform is the stage of a `transform "TYPE" "NAME"` block: a
// transform plugin. Each batch goes to the plugin and what it answers for
// that batch leaves the stage, so acks and checkpoints stay exact. It is an
// AsyncStage: the runner sends the next batches while the plugin works on
// the first (the plugin runs its own requests for a batch concurrently),
// and the answers come back in order.
type PluginTransform struct {
	Name       string
	Type       string
	Inputs     []string // node keys
	SkipErrors bool
	Plugin     TransformPlugin

	mu     sync.Mutex // serialises Send, and Apply's send and answer
	stream TransformStream
}

var _ AsyncStage = (*PluginTransform)(nil)

func (t *PluginTransform) NodeKey() string        { return TransformKey(t.Name) }
func (t *PluginTransform) InputKeys() []string    { return t.Inputs }
func (t *PluginTransform) ReadFields() [][]string { return nil }
func (t *PluginTransform) SkipsErrors() bool      { return t.SkipErrors }

// Open opens the plugin's stream for a run.
func (t *PluginTransform) Open(ctx context.Context) error {
	var s TransformStream
	var err error
	if o, ok := t.Plugin.(TransformStreamOpener); ok {
		s, err = o.OpenTransform(ctx)
	} else {
		var hs *host.TransformStream
		if hs, err = t.Plugin.Transform(ctx); err == nil {
			s = hs
		}
	}
	if err != nil {
		return fmt.Errorf("transform %s: %w", t.Name, err)
	}
	t.mu.Lock()
	t.stream = s
	t.mu.Unlock()
	return nil
}

func (t *PluginTransform) open() TransformStream {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stream
}

// Close ends the stream once nothing more is sent, and waits for its end.
func (t *PluginTransform) Close() error {
	s := t.open()
	if s == nil {
		return nil
	}
	s.CloseSend()
	return s.Wait()
}

// Submit sends rec to the plugin; its answer comes from Next with token.
func (t *PluginTransform) Submit(rec arrow.RecordBatch, token any) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stream == nil {
		return fmt.Errorf("transform %s: the stream is not open", t.Name)
	}
	return t.stream.Send(rec, token)
}

// Next waits for the plugin's answer to the oldest batch not answered yet.
func (t *PluginTransform) Next() (Answer, error) {
	s := t.open()
	if s == nil {
		return Answer{}, fmt.Errorf("transform %s: the stream is not open", t.Name)
	}
	res, ok := <-s.Results()
	if !ok {
		if err := s.Wait(); err != nil {
			return Answer{}, err
		}
		return Answer{}, io.EOF
	}
	a := Answer{Token: res.Token}
	switch len(res.Recs) {
	case 0: // every record dropped
	case 1:
		a.Rec = res.Recs[0]
	default:
		rec, err := concatRecords(res.Recs)
		releaseAll(res.Recs)
		if err != nil {
			return Answer{}, fmt.Errorf("transform %s %q: %w", t.Type, t.Name, err)
		}
		a.Rec = rec
	}
	return a, nil
}

// Apply sends rec to the plugin and returns what it answered for it. It is
// the stage's synchronous form, for callers that do not use Submit and
// Next; the two are not mixed on one stream.
func (t *PluginTransform) Apply(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stream == nil {
		return nil, fmt.Errorf("transform %s: the stream is not open", t.Name)
	}
	if err := t.stream.Send(rec, nil); err != nil {
		return nil, err
	}
	res, ok := <-t.stream.Results()
	if !ok {
		if err := t.stream.Wait(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("transform %s %q: the plugin ended its stream without answering a batch", t.Type, t.Name)
	}
	switch len(res.Recs) {
	case 0:
		return rec.NewSlice(0, 0), nil // every record dropped
	case 1:
		return res.Recs[0], nil
	}
	defer releaseAll(res.Recs)
	return concatRecords(res.Recs)
}

func releaseAll(recs []arrow.RecordBatch) {
	for _, r := range recs {
		r.Release()
	}
}

// concatRecords joins the pieces of one answer (a large output is split on
// the wire) into one batch of the first piece's schema.
func concatRecords(recs []arrow.RecordBatch) (arrow.RecordBatch, error) {
	schema := recs[0].Schema()
	cols := make([]arrow.Array, schema.NumFields())
	var rows int64
	for _, r := range recs {
		if !r.Schema().Equal(schema) {
			return nil, fmt.Errorf("the pieces of one answer have different schemas")
		}
		rows += r.NumRows()
	}
	for i := range cols {
		parts := make([]arrow.Array, len(recs))
		for j, r := range recs {
			parts[j] = r.Column(i)
		}
		c, err := array.Concatenate(parts, memory.DefaultAllocator)
		if err != nil {
			for _, done := range cols[:i] {
				done.Release()
			}
			return nil, err
		}
		cols[i] = c
	}
	out := array.NewRecordBatch(schema, cols, rows)
	for _, c := range cols {
		c.Release()
	}
	return out, nil
}
