package plan

import (
	"context"
	"fmt"
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

// PluginTransform is the stage of a `transform "TYPE" "NAME"` block: a
// transform plugin. Each batch goes to the plugin and what it answers for
// that batch leaves the stage, so acks and checkpoints stay exact; batches
// are sent one at a time, in order (the plugin runs its own requests for a
// batch concurrently).
type PluginTransform struct {
	Name       string
	Type       string
	Inputs     []string // node keys
	SkipErrors bool
	Plugin     TransformPlugin

	mu     sync.Mutex
	stream *host.TransformStream
}

func (t *PluginTransform) NodeKey() string        { return TransformKey(t.Name) }
func (t *PluginTransform) InputKeys() []string    { return t.Inputs }
func (t *PluginTransform) ReadFields() [][]string { return nil }
func (t *PluginTransform) SkipsErrors() bool      { return t.SkipErrors }

// Open opens the plugin's stream for a run.
func (t *PluginTransform) Open(ctx context.Context) error {
	s, err := t.Plugin.Transform(ctx)
	if err != nil {
		return fmt.Errorf("transform %s: %w", t.Name, err)
	}
	t.mu.Lock()
	t.stream = s
	t.mu.Unlock()
	return nil
}

// Close ends the stream once nothing more is sent.
func (t *PluginTransform) Close() error {
	t.mu.Lock()
	s := t.stream
	t.mu.Unlock()
	if s == nil {
		return nil
	}
	s.CloseSend()
	return s.Wait()
}

// Apply sends rec to the plugin and returns what it answered for it.
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
	defer func() {
		for _, r := range res.Recs {
			r.Release()
		}
	}()
	return concatRecords(res.Recs)
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
