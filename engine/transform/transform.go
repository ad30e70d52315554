// Package transform is the engine's built-in transform stage: computed
// fields (set), and drop, keep and rename of fields, over Arrow record
// batches.
//
// A transform applies, in this order, to each batch:
//
//  1. set: every expression is evaluated against the input batch (so one
//     assignment never sees another's result) and its array stored at its
//     target. A top-level target that names an existing column replaces it
//     in place; a new one is added after the input columns, in set order. A
//     nested target ("routing.team") adds a child to the struct it names, or
//     replaces that child, or creates the struct when there is none. A
//     struct that is null in a row stays null there, new child included.
//  2. drop removes the fields it names (nested paths remove a struct's
//     child); keep removes every field it does not name, except set targets.
//  3. rename gives fields (dotted paths) a new name in the same place.
//
// The engine's bookkeeping columns (sdk.ReservedPrefix) are always kept and
// cannot be set, dropped or renamed. Types follow each batch's schema: a set
// value's type is decided per schema (see expr.Value), and a drop, keep or
// rename of a field a batch lacks does nothing to it. Compile, which has the
// schema known at validate time, reports such references as errors.
package transform

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/sdk"
)

// Spec is a transform as configured.
type Spec struct {
	Set  []Assignment
	Drop [][]string
	Keep [][]string
	// Rename maps a dotted path to the field's new name (a name, not a
	// path: the field stays where it is).
	Rename map[string]string
}

// Assignment is one computed field: Target (a path of names) gets the
// value of the expression Src.
type Assignment struct {
	Target []string
	Src    string
}

// Error is a compile error of one attribute of a spec.
type Error struct {
	// Attr is "set", "drop", "keep" or "rename".
	Attr string
	// Index is the position in Set, Drop or Keep; -1 for rename.
	Index int
	// Key is rename's dotted old name.
	Key string
	// Err is what is wrong: an *expr.Error inside a set expression, or a
	// plain message.
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Attr == "rename":
		return fmt.Sprintf("rename %s: %v", e.Key, e.Err)
	default:
		return fmt.Sprintf("%s[%d]: %v", e.Attr, e.Index, e.Err)
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Errors are all the compile errors of a spec.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap gives errors.As and errors.Is each error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Transform is a compiled transform. It is safe for concurrent use.
type Transform struct {
	spec   Spec
	values []*expr.Value
	rename []renameRule
	keep   *pathTree // nil: keep everything
	drop   [][]string
}

type renameRule struct {
	from []string
	key  string
	to   string
}

// Compile compiles spec against in, the schema of the records the
// transform reads; with a nil in only what does not depend on the schema is
// checked. The error is Errors, one *Error per attribute entry at fault.
func Compile(spec Spec, in *arrow.Schema) (*Transform, error) {
	t := &Transform{spec: spec, drop: spec.Drop}
	var errs Errors
	fail := func(attr string, i int, key string, format string, args ...any) {
		errs = append(errs, &Error{Attr: attr, Index: i, Key: key, Err: fmt.Errorf(format, args...)})
	}
	for i, a := range spec.Set {
		name := strings.Join(a.Target, ".")
		switch {
		case !validPath(a.Target):
			fail("set", i, "", "the target %q is not a field path", name)
			t.values = append(t.values, nil)
			continue
		case sdk.IsReserved(a.Target[0]):
			fail("set", i, "", "%s is the engine's own column and cannot be set", a.Target[0])
			t.values = append(t.values, nil)
			continue
		}
		for j := range i {
			if prefix(spec.Set[j].Target, a.Target) || prefix(a.Target, spec.Set[j].Target) {
				fail("set", i, "", "%s conflicts with %s, also set: a field is set once, as a whole or by its children",
					name, strings.Join(spec.Set[j].Target, "."))
				break
			}
		}
		v, err := expr.CompileValue("set."+name, a.Src, in)
		if err != nil {
			errs = append(errs, &Error{Attr: "set", Index: i, Err: err})
			v = nil
		}
		t.values = append(t.values, v)
	}
	for _, list := range []struct {
		attr  string
		paths [][]string
	}{{"drop", spec.Drop}, {"keep", spec.Keep}} {
		for i, p := range list.paths {
			switch {
			case !validPath(p):
				fail(list.attr, i, "", "%q is not a field path", strings.Join(p, "."))
			case sdk.IsReserved(p[0]) && list.attr == "drop":
				fail(list.attr, i, "", "%s is the engine's own column and cannot be dropped", p[0])
			case list.attr == "drop":
				for _, a := range spec.Set {
					if prefix(a.Target, p) || prefix(p, a.Target) {
						fail("drop", i, "", "%s is set by this transform; remove it from set instead", strings.Join(a.Target, "."))
						break
					}
				}
			}
		}
	}
	if len(spec.Keep) > 0 {
		t.keep = &pathTree{}
		for _, p := range spec.Keep {
			t.keep.add(p)
		}
		for _, a := range spec.Set {
			t.keep.add(a.Target)
		}
	}
	keys := make([]string, 0, len(spec.Rename))
	for k := range spec.Rename {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		to := spec.Rename[k]
		from := strings.Split(k, ".")
		switch {
		case !validPath(from):
			fail("rename", -1, k, "%q is not a field path", k)
		case sdk.IsReserved(from[0]):
			fail("rename", -1, k, "%s is the engine's own column and cannot be renamed", from[0])
		case to == "" || strings.Contains(to, "."):
			fail("rename", -1, k, "the new name %q is a name, not a path: a renamed field stays where it is", to)
		case len(from) == 1 && sdk.IsReserved(to):
			fail("rename", -1, k, "names starting with %s are the engine's own", sdk.ReservedPrefix)
		default:
			t.rename = append(t.rename, renameRule{from: from, key: k, to: to})
		}
	}
	if in != nil {
		// Check drop, keep and rename against the schema even when some
		// assignments failed, leaving those out, so every error is reported.
		check := *t
		check.values = slices.Clone(t.values)
		for _, e := range errs {
			if e.Attr == "set" {
				check.values[e.Index] = nil
			}
		}
		if _, _, err := check.shape(in, nil, nil, true); err != nil {
			var more Errors
			if !errors.As(err, &more) {
				return nil, err
			}
			for _, m := range more {
				dup := false
				for _, e := range errs {
					dup = dup || e.Attr == m.Attr && e.Index == m.Index && e.Key == m.Key
				}
				if !dup {
					errs = append(errs, m)
				}
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return t, nil
}

func validPath(p []string) bool {
	if len(p) == 0 {
		return false
	}
	for _, s := range p {
		if s == "" {
			return false
		}
	}
	return true
}

// prefix reports whether a is a prefix of b (or equal to it).
func prefix(a, b []string) bool {
	return len(a) <= len(b) && slices.Equal(a, b[:len(a)])
}

// Schema returns the schema of the batches Apply makes from batches of
// schema in.
func (t *Transform) Schema(in *arrow.Schema) (*arrow.Schema, error) {
	if in == nil {
		return nil, errors.New("transform: no input schema")
	}
	s, _, err := t.shape(in, nil, nil, false)
	return s, err
}

// Apply returns rec transformed; the caller releases the result. A set
// expression that fails on a row returns its *expr.RowError, as a
// predicate does, so that the row can be found and skipped.
func (t *Transform) Apply(mem memory.Allocator, rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	s, cols, err := t.shape(rec.Schema(), rec, mem, false)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	return array.NewRecordBatch(s, cols, rec.NumRows()), nil
}

// col is a field of the output being built, with its array when a batch is
// transformed (nil when only the schema is computed). kids are set when a
// struct's children changed.
type col struct {
	f    arrow.Field
	arr  arrow.Array
	kids []*col
	new  bool // created by a nested target
}

type builder struct {
	n          int
	schemaOnly bool
	mem        memory.Allocator
	owned      []arrow.Array
	strict     bool
	errs       Errors
}

func (b *builder) fail(attr string, i int, key string, format string, args ...any) {
	b.errs = append(b.errs, &Error{Attr: attr, Index: i, Key: key, Err: fmt.Errorf(format, args...)})
}

// shape builds the output schema for in and, with rec, the output columns
// (owned by the caller). With strict, references to fields in lacks are
// errors; otherwise they do nothing.
func (t *Transform) shape(in *arrow.Schema, rec arrow.RecordBatch, mem memory.Allocator, strict bool) (*arrow.Schema, []arrow.Array, error) {
	b := &builder{mem: mem, strict: strict, schemaOnly: rec == nil}
	if rec != nil {
		b.n = int(rec.NumRows())
	}
	level := make([]*col, 0, in.NumFields()+len(t.values))
	for i, f := range in.Fields() {
		c := &col{f: f}
		if rec != nil {
			c.arr = rec.Column(i)
		}
		level = append(level, c)
	}
	defer func() {
		for _, a := range b.owned {
			a.Release()
		}
	}()

	// 1. set, every value from the input batch.
	type result struct {
		f   arrow.Field
		arr arrow.Array
	}
	results := make([]result, len(t.values))
	for i, v := range t.values {
		if v == nil {
			continue // failed to compile; Compile reports it
		}
		name := t.spec.Set[i].Target[len(t.spec.Set[i].Target)-1]
		f, err := v.FieldFor(in, name)
		if err != nil {
			return nil, nil, wrapSet(i, err)
		}
		results[i].f = f
		if rec != nil {
			arr, err := v.EvalWith(mem, rec)
			if err != nil {
				return nil, nil, err // a *RowError is for the engine's on_error
			}
			b.owned = append(b.owned, arr)
			results[i].arr = arr
		}
	}
	for i, r := range results {
		if t.values[i] == nil {
			continue
		}
		var err error
		level, err = b.set(level, t.spec.Set[i].Target, r.f, r.arr)
		if err != nil {
			b.fail("set", i, "", "%v", err)
		}
	}
	// 2. drop and keep.
	for i, p := range t.drop {
		var ok bool
		level, ok = b.drop(level, p)
		if !ok && strict {
			b.errs = append(b.errs, &Error{Attr: "drop", Index: i, Err: missingf("there is no field %s to drop", strings.Join(p, "."))})
		}
	}
	if t.keep != nil {
		if strict {
			for i, p := range t.spec.Keep {
				if !has(level, p) {
					b.errs = append(b.errs, &Error{Attr: "keep", Index: i, Err: missingf("there is no field %s to keep", strings.Join(p, "."))})
				}
			}
		}
		level = b.keep(level, t.keep, true)
	}
	// 3. rename.
	for _, r := range t.rename {
		if err := b.renameAt(level, r.from, r.to); err != nil {
			if strict || !errors.Is(err, ErrNoField) {
				b.errs = append(b.errs, &Error{Attr: "rename", Index: -1, Key: r.key, Err: err})
			}
		}
	}
	if len(b.errs) > 0 {
		return nil, nil, b.errs
	}
	fields := make([]arrow.Field, len(level))
	var cols []arrow.Array
	for i, c := range level {
		f, arr := b.finish(c)
		fields[i] = f
		if rec != nil {
			arr.Retain()
			cols = append(cols, arr)
		}
	}
	md := in.Metadata()
	return arrow.NewSchema(fields, &md), cols, nil
}

func wrapSet(i int, err error) error {
	var xe *expr.Error
	if errors.As(err, &xe) {
		return Errors{{Attr: "set", Index: i, Err: err}}
	}
	return err
}

func find(level []*col, name string) int {
	for i, c := range level {
		if c.f.Name == name {
			return i
		}
	}
	return -1
}

func has(level []*col, path []string) bool {
	for k, name := range path {
		i := find(level, name)
		if i < 0 {
			return false
		}
		if k == len(path)-1 {
			return true
		}
		kids, ok := children(level[i])
		if !ok {
			return false
		}
		level = kids
	}
	return true
}

// children returns a struct's children, without expanding it.
func children(c *col) ([]*col, bool) {
	if c.kids != nil {
		return c.kids, true
	}
	st, ok := c.f.Type.(*arrow.StructType)
	if !ok {
		return nil, false
	}
	kids := make([]*col, st.NumFields())
	for k, f := range st.Fields() {
		kids[k] = &col{f: f}
		if c.arr != nil {
			kids[k].arr = c.arr.(*array.Struct).Field(k)
		}
	}
	return kids, true
}

// expand makes c's children editable.
func expand(c *col) bool {
	kids, ok := children(c)
	if ok {
		c.kids = kids
	}
	return ok
}

func (b *builder) set(level []*col, path []string, f arrow.Field, arr arrow.Array) ([]*col, error) {
	i := find(level, path[0])
	if len(path) == 1 {
		c := &col{f: f, arr: arr}
		if i >= 0 {
			level[i] = c
			return level, nil
		}
		return append(level, c), nil
	}
	if i < 0 {
		c := &col{f: arrow.Field{Name: path[0], Type: arrow.StructOf(), Nullable: true}, kids: []*col{}, new: true}
		level = append(level, c)
		i = len(level) - 1
	}
	c := level[i]
	if !expand(c) {
		return level, fmt.Errorf("%s is a %s, not a struct, so it has no field %s", c.f.Name, c.f.Type, path[1])
	}
	kids, err := b.set(c.kids, path[1:], f, arr)
	c.kids = kids
	return level, err
}

// drop removes path from level; ok is false when it is not there.
func (b *builder) drop(level []*col, path []string) ([]*col, bool) {
	i := find(level, path[0])
	if i < 0 || sdk.IsReserved(level[i].f.Name) && len(path) == 1 {
		return level, false
	}
	if len(path) == 1 {
		return slices.Delete(slices.Clone(level), i, i+1), true
	}
	c := level[i]
	if _, ok := children(c); !ok {
		return level, false
	}
	expand(c)
	kids, ok := b.drop(c.kids, path[1:])
	c.kids = kids
	return level, ok
}

// pathTree is a set of paths; a node with no children covers all below it.
type pathTree struct {
	kids map[string]*pathTree
	all  bool
}

func (t *pathTree) add(path []string) {
	for _, name := range path {
		if t.all {
			return
		}
		if t.kids == nil {
			t.kids = map[string]*pathTree{}
		}
		next, ok := t.kids[name]
		if !ok {
			next = &pathTree{}
			t.kids[name] = next
		}
		t = next
	}
	t.all, t.kids = true, nil
}

func (b *builder) keep(level []*col, t *pathTree, top bool) []*col {
	var out []*col
	for _, c := range level {
		if top && sdk.IsReserved(c.f.Name) {
			out = append(out, c)
			continue
		}
		sub, ok := t.kids[c.f.Name]
		switch {
		case !ok:
		case sub.all:
			out = append(out, c)
		case expand(c):
			c.kids = b.keep(c.kids, sub, false)
			out = append(out, c)
		}
	}
	return out
}

// ErrNoField is what the error of a drop, keep or rename of a field the
// schema lacks matches (errors.Is). Against a sampled schema a caller may
// take it as a warning: records may carry the field.
var ErrNoField = errors.New("no such field")

// missing is an error about a field that is not there.
type missing struct{ msg string }

func (e *missing) Error() string        { return e.msg }
func (e *missing) Is(target error) bool { return target == ErrNoField }

func missingf(format string, args ...any) error { return &missing{fmt.Sprintf(format, args...)} }

func (b *builder) renameAt(level []*col, path []string, to string) error {
	i := find(level, path[0])
	if i < 0 {
		return missingf("there is no field %s to rename", path[0])
	}
	if len(path) > 1 {
		if !expand(level[i]) {
			return missingf("%s is not a struct, so it has no field %s to rename", path[0], path[1])
		}
		return b.renameAt(level[i].kids, path[1:], to)
	}
	if j := find(level, to); j >= 0 && j != i {
		return fmt.Errorf("cannot rename %s to %s: there is a field %s already", path[0], to, to)
	}
	level[i].f.Name = to
	return nil
}

// finish builds c's field and, in a batch, its array (owned by b).
func (b *builder) finish(c *col) (arrow.Field, arrow.Array) {
	if c.kids == nil {
		return c.f, c.arr
	}
	fields := make([]arrow.Field, len(c.kids))
	arrs := make([]arrow.Array, len(c.kids))
	for k, kid := range c.kids {
		fields[k], arrs[k] = b.finish(kid)
	}
	f := c.f
	f.Type = arrow.StructOf(fields...)
	if b.schemaOnly {
		return f, nil
	}
	var bitmap *memory.Buffer
	nulls := 0
	if c.arr != nil && c.arr.NullN() > 0 {
		bitmap = memory.NewResizableBuffer(b.mem)
		bitmap.Resize(int(bitutil.BytesForBits(int64(b.n))))
		bits := bitmap.Bytes()
		clear(bits)
		for i := 0; i < b.n; i++ {
			if c.arr.IsValid(i) {
				bitutil.SetBit(bits, i)
			} else {
				nulls++
			}
		}
		defer bitmap.Release()
	}
	kids := make([]arrow.ArrayData, len(arrs))
	for k, a := range arrs {
		if a.Len() != b.n {
			a = array.NewSlice(a, 0, int64(b.n))
			b.owned = append(b.owned, a)
		}
		kids[k] = a.Data()
	}
	data := array.NewData(f.Type, b.n, []*memory.Buffer{bitmap}, kids, nulls, 0)
	defer data.Release()
	arr := array.MakeFromData(data)
	b.owned = append(b.owned, arr)
	return f, arr
}
