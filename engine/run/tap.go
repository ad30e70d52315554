package run

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Tapped is one record seen passing a node, as the admin API's tail shows
// it: the record as JSON with secret-looking fields redacted, its id and,
// at a sink's input, the sink's templates as rendered for it.
type Tapped struct {
	Node      string            `json:"node"`
	ID        string            `json:"id,omitempty"`
	Record    json.RawMessage   `json:"record"`
	Templates map[string]string `json:"templates,omitempty"`
}

// Redacted replaces the value of a field whose name looks like a secret.
const Redacted = "[redacted]"

// secretName matches field names whose values are not shown: tokens,
// passwords, keys, signatures, credentials.
var secretName = regexp.MustCompile(`(?i)(secret|token|passw(or)?d|api[_-]?key|authorization|signature|credential|private[_-]?key)`)

// taps are the open taps of a run, by node key. A run with none pays one
// atomic load per routed batch.
type taps struct {
	n  atomic.Int32
	mu sync.Mutex
	by map[string][]*tap
}

type tap struct {
	ch   chan Tapped
	left int // records still to send; the tap closes at 0
	done bool
}

// ErrNoNode is returned by Tap for a node the pipeline does not have.
var ErrNoNode = errors.New("no such node")

// Tap returns the next n records that pass node ("source.calls",
// "filter.high", "transform.enrich": what leaves it; "sink.crm": what the
// sink is sent), then closes the channel. cancel stops it early. A slow
// reader never holds the run back: records that find the channel full are
// not shown.
func (r *Runner) Tap(node string, n int) (<-chan Tapped, func(), error) {
	if !r.hasNode(node) {
		return nil, nil, fmt.Errorf("%w %q", ErrNoNode, node)
	}
	if n <= 0 {
		n = 1
	}
	t := &tap{ch: make(chan Tapped, n), left: n}
	r.taps.mu.Lock()
	if r.taps.by == nil {
		r.taps.by = map[string][]*tap{}
	}
	r.taps.by[node] = append(r.taps.by[node], t)
	r.taps.n.Add(1)
	r.taps.mu.Unlock()
	cancel := func() {
		r.taps.mu.Lock()
		defer r.taps.mu.Unlock()
		r.closeTap(node, t)
	}
	return t.ch, cancel, nil
}

// closeTap removes t; called with taps.mu held.
func (r *Runner) closeTap(node string, t *tap) {
	if t.done {
		return
	}
	t.done = true
	close(t.ch)
	list := r.taps.by[node]
	for i, x := range list {
		if x == t {
			r.taps.by[node] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(r.taps.by[node]) == 0 {
		delete(r.taps.by, node)
	}
	r.taps.n.Add(-1)
}

// CloseTaps ends every open tap (the run is over).
func (r *Runner) CloseTaps() {
	r.taps.mu.Lock()
	defer r.taps.mu.Unlock()
	for node, list := range r.taps.by {
		for _, t := range append([]*tap(nil), list...) {
			r.closeTap(node, t)
		}
	}
}

func (r *Runner) hasNode(node string) bool {
	if _, ok := r.consumers[node]; ok {
		return true
	}
	if _, ok := r.stages[node]; ok {
		return true
	}
	for _, s := range r.plan.Sources {
		if SourceKey(s.Name) == node {
			return true
		}
	}
	name, ok := strings.CutPrefix(node, "sink.")
	if !ok {
		return false
	}
	_, ok = r.sinks[name]
	return ok
}

// tapped shows rec to the taps of node, if any.
func (r *Runner) tapped(node string, rec arrow.RecordBatch) {
	if r.taps.n.Load() == 0 {
		return
	}
	r.taps.mu.Lock()
	defer r.taps.mu.Unlock()
	list := r.taps.by[node]
	if len(list) == 0 {
		return
	}
	want := 0
	for _, t := range list {
		want = max(want, t.left)
	}
	rows := tapRows(node, rec, want)
	for _, t := range append([]*tap(nil), list...) {
		for _, row := range rows {
			if t.left == 0 {
				break
			}
			select {
			case t.ch <- row:
				t.left--
			default:
				t.left = 0 // the reader fell behind: end its tail
			}
		}
		if t.left == 0 {
			r.closeTap(node, t)
		}
	}
}

// tapRows encodes up to n rows of rec, redacted.
func tapRows(node string, rec arrow.RecordBatch, n int) []Tapped {
	ids, templates := ReservedColumns(rec)
	enc := arrowjson.NewEncoder()
	rows := min(n, int(rec.NumRows()))
	out := make([]Tapped, 0, rows)
	for row := range rows {
		t := Tapped{Node: node, Record: redactJSON(enc.AppendRow(nil, rec, row))}
		if ids != nil && ids.IsValid(row) {
			t.ID = ids.Value(row)
		}
		for name, col := range templates {
			if !col.IsValid(row) {
				continue
			}
			if t.Templates == nil {
				t.Templates = map[string]string{}
			}
			v := col.Value(row)
			if secretName.MatchString(name) {
				v = Redacted
			}
			t.Templates[name] = v
		}
		out = append(out, t)
	}
	return out
}

// redactJSON replaces the values of secret-looking keys, at any depth.
func redactJSON(b []byte) json.RawMessage {
	if !secretName.Match(b) {
		return b // no key can match: the common case costs one scan
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers come out as written
	var v any
	if err := dec.Decode(&v); err != nil {
		return b
	}
	out, err := json.Marshal(redact(v))
	if err != nil {
		return b
	}
	return out
}

func redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if secretName.MatchString(k) {
				x[k] = Redacted
			} else {
				x[k] = redact(e)
			}
		}
	case []any:
		for i, e := range x {
			x[i] = redact(e)
		}
	}
	return v
}

// Plan is the plan the run routes over.
func (r *Runner) Plan() *Plan { return r.plan }

// SecretName reports whether a field or parameter named name is redacted
// where records are shown (tokens, passwords, keys, signatures).
func SecretName(name string) bool { return secretName.MatchString(name) }

// ReservedColumns finds the record-id column and the rendered template
// columns (by template name) of a batch on its way to a sink.
func ReservedColumns(rec arrow.RecordBatch) (ids *array.String, templates map[string]*array.String) {
	for i, f := range rec.Schema().Fields() {
		col, ok := rec.Column(i).(*array.String)
		if !ok {
			continue
		}
		switch {
		case f.Name == sdk.IDColumn:
			ids = col
		case strings.HasPrefix(f.Name, sdk.TemplateColumnPrefix):
			if templates == nil {
				templates = map[string]*array.String{}
			}
			templates[strings.TrimPrefix(f.Name, sdk.TemplateColumnPrefix)] = col
		}
	}
	return ids, templates
}
