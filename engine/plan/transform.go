package plan

import (
	"fmt"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

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
