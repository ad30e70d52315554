package expr

import (
	"errors"
	"fmt"
	"math"
	"reflect"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/expr-lang/expr/ast"
)

// Value is a compiled value expression: a computed field of a transform's
// set. Eval gives one Arrow array per batch, one value per row. It is safe
// for concurrent use.
//
// The output type is decided when the expression is planned for a schema:
//
//   - a column path (`metadata.customer_id`, `classifications`) has that
//     column's own type and metadata (a struct stays a struct, a list a
//     list, a raw JSON field raw JSON); its array is reused, zero-copy,
//     with the nulls of its parent structs added;
//   - otherwise expr's static type decides: bool → Boolean, int → Int64,
//     float → Float64, string → String;
//   - any other type (nil, a map or list built by the expression, a time,
//     a raw JSON value, an expression whose branches differ in type) is a
//     String column of compact JSON text marked pipeline.json=raw, so that
//     encoders write it as JSON and expressions downstream see the decoded
//     value. A nil value is null.
//
// A column path, a literal, a boolean expression (planned as a predicate:
// its vectorised forms column at a time, the rest row at a time only where
// it can change the result) and `cond ? a : b` with a boolean cond and
// branches of these forms run column at a time; anything else runs row at
// a time with expr.
type Value struct {
	src, attr string
	force     bool // row by row only: tests compare the two
	typ       arrow.DataType
	plans     planCache[*valPlan]
}

// CompileValue compiles src, the value of attribute attr ("set.priority",
// which names it in messages), against schema. With a nil schema only the
// syntax is checked and Type is nil. Errors are *Error.
func CompileValue(attr, src string, schema *arrow.Schema) (*Value, error) {
	return compileValue(attr, src, schema, false)
}

func compileValue(attr, src string, schema *arrow.Schema, force bool) (*Value, error) {
	v := &Value{src: src, attr: attr, force: force}
	plan, err := v.build(schema)
	if err != nil {
		return nil, err
	}
	if schema != nil {
		v.typ = plan.field.Type
		v.plans.entries = []planEntry[*valPlan]{{schema: schema, plan: plan}}
	}
	return v, nil
}

// String returns the expression's source.
func (v *Value) String() string { return v.src }

// Type is the type of the arrays Eval returns for batches of the schema the
// value was compiled against; nil when it was compiled without one.
func (v *Value) Type() arrow.DataType { return v.typ }

// FieldFor returns the field, named name, that Eval produces for batches of
// schema: its type, nullable, and pipeline.json=raw metadata for JSON text.
// The error is a compile error against schema (*Error).
func (v *Value) FieldFor(schema *arrow.Schema, name string) (arrow.Field, error) {
	if schema == nil {
		return arrow.Field{}, errors.New("expr: no schema")
	}
	plan, err := v.plans.get(schema, v.build)
	if err != nil {
		return arrow.Field{}, err
	}
	f := plan.field
	f.Name = name
	return f, nil
}

// Eval evaluates the expression for every row of rec. The caller releases
// the result. An error is a compile error against a schema rec brought
// (*Error), or a *RowError.
func (v *Value) Eval(rec arrow.RecordBatch) (arrow.Array, error) {
	return v.EvalWith(memory.DefaultAllocator, rec)
}

// EvalWith is Eval allocating the arrays it builds from mem.
func (v *Value) EvalWith(mem memory.Allocator, rec arrow.RecordBatch) (out arrow.Array, err error) {
	if v == nil {
		return nil, errors.New("expr: nil value")
	}
	plan, err := v.plans.get(rec.Schema(), v.build)
	if err != nil {
		return nil, err
	}
	defer recovered(&err, fmt.Sprintf("evaluating %s %q", v.attr, v.src))
	bc := newBatchCtx(rec, plan.refs)
	return plan.root.eval(bc, mem)
}

// valPlan is a value expression planned for one schema.
type valPlan struct {
	field arrow.Field
	refs  []colRef
	root  valNode
}

type valNode interface {
	eval(bc *batchCtx, mem memory.Allocator) (arrow.Array, error)
}

// outKind is the output type of an expression that is not a column path.
type outKind int

const (
	outJSON outKind = iota
	outBool
	outInt
	outFloat
	outString
)

var rawMetadata = arrow.NewMetadata([]string{rawJSONKey}, []string{rawJSONValue})

func (k outKind) field() arrow.Field {
	f := arrow.Field{Nullable: true}
	switch k {
	case outBool:
		f.Type = arrow.FixedWidthTypes.Boolean
	case outInt:
		f.Type = arrow.PrimitiveTypes.Int64
	case outFloat:
		f.Type = arrow.PrimitiveTypes.Float64
	case outString:
		f.Type = arrow.BinaryTypes.String
	default:
		f.Type = arrow.BinaryTypes.String
		f.Metadata = rawMetadata
	}
	return f
}

// staticKind maps expr's static type of n to an output kind.
func staticKind(n ast.Node) outKind {
	nt := n.Nature()
	if nt.Nil || nt.Type == nil {
		return outJSON
	}
	switch nt.Kind {
	case reflect.Bool:
		return outBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return outInt
	case reflect.Float32, reflect.Float64:
		return outFloat
	case reflect.String:
		return outString
	}
	return outJSON
}

func (v *Value) build(schema *arrow.Schema) (plan *valPlan, err error) {
	defer recovered(&err, "compiling "+v.attr)
	tree, err := checkSource(v.src, schema)
	if err != nil {
		return nil, newError(err, v.src, 0, v.src)
	}
	if schema == nil {
		return nil, nil
	}
	pl := &planner{src: v.src, schema: schema, ids: map[string]int{}}
	plan = &valPlan{}
	if !v.force {
		if id, f, ok := pl.column(tree.Node); ok {
			plan.field = arrow.Field{Type: f.Type, Nullable: true, Metadata: f.Metadata}
			plan.root = &colValNode{col: id}
			plan.refs = pl.refs
			return plan, nil
		}
	}
	kind := staticKind(tree.Node)
	plan.field = kind.field()
	var root valNode
	if !v.force {
		root = pl.vector(tree.Node, kind)
	}
	if root == nil {
		// Planning may have rewritten parts of the tree: start afresh.
		if tree, err = checkSource(v.src, schema); err != nil {
			return nil, newError(err, v.src, 0, v.src)
		}
		prog, err := compileRow(v.src, tree.Node, schema, false)
		if err != nil {
			return nil, newError(err, v.src, 0, v.src)
		}
		root = &rowValNode{prog: prog, kind: kind}
	}
	plan.root = root
	plan.refs = pl.refs
	return plan, nil
}

// vector plans n, of output kind, column at a time, or returns nil.
func (pl *planner) vector(n ast.Node, kind outKind) valNode {
	if lit, ok := literal(n); ok {
		if kind == outJSON && lit != nil {
			return nil
		}
		return &litValNode{v: lit, kind: kind}
	}
	if id, f, ok := pl.column(n); ok {
		if convertible(kindOf(f), kind) {
			return &convValNode{col: id, kind: kind}
		}
		return nil
	}
	if c, ok := n.(*ast.ConditionalNode); ok && kind != outJSON {
		if staticKind(c.Cond) != outBool {
			return nil
		}
		a := pl.vector(c.Exp1, kind)
		b := pl.vector(c.Exp2, kind)
		if a == nil || b == nil {
			return nil
		}
		cond, err := pl.boolean(c.Cond)
		if err != nil {
			return nil
		}
		return &condValNode{cond: cond, a: a, b: b, kind: kind}
	}
	if kind == outBool {
		root, err := pl.boolean(n)
		if err != nil {
			return nil
		}
		return &predValNode{root: root}
	}
	return nil
}

// convertible reports whether a column of kind c gives values of kind k.
func convertible(c colKind, k outKind) bool {
	switch k {
	case outBool:
		return c == kindBool
	case outInt:
		return c == kindInt
	case outFloat:
		return c == kindFloat
	case outString:
		return c == kindString
	}
	return false
}

// colValNode is a column path: the leaf array, with the nulls of its parents.
type colValNode struct{ col int }

func (c *colValNode) eval(bc *batchCtx, mem memory.Allocator) (arrow.Array, error) {
	rc, err := bc.col(c.col)
	if err != nil {
		return nil, err
	}
	arr := rc.arr
	if arr.Len() > bc.n {
		arr = array.NewSlice(arr, 0, int64(bc.n))
	} else {
		arr.Retain()
	}
	if rc.valid == nil {
		return arr, nil
	}
	nulls := 0
	for i := 0; i < bc.n; i++ {
		if !rc.valid[i] {
			nulls++
		}
	}
	if nulls == arr.NullN() {
		return arr, nil // the parents add no nulls
	}
	defer arr.Release()
	// Same buffers, a new validity bitmap: the data is not copied.
	data := arr.Data()
	off := data.Offset()
	buf := memory.NewResizableBuffer(mem)
	buf.Resize(int(bitutil.BytesForBits(int64(off + bc.n))))
	bits := buf.Bytes()
	clear(bits)
	for i := 0; i < bc.n; i++ {
		if rc.valid[i] {
			bitutil.SetBit(bits, off+i)
		}
	}
	buffers := append([]*memory.Buffer{buf}, data.Buffers()[1:]...)
	nd := array.NewData(data.DataType(), bc.n, buffers, data.Children(), nulls, off)
	if dict := data.Dictionary(); dict != nil {
		nd.SetDictionary(dict)
	}
	buf.Release()
	defer nd.Release()
	return array.MakeFromData(nd), nil
}

// convValNode reads an integer, float, string or bool column as Int64,
// Float64, String or Boolean.
type convValNode struct {
	col  int
	kind outKind
}

func (c *convValNode) eval(bc *batchCtx, mem memory.Allocator) (arrow.Array, error) {
	rc, err := bc.col(c.col)
	if err != nil {
		return nil, err
	}
	n := bc.n
	switch c.kind {
	case outInt:
		if a, ok := rc.arr.(*array.Int64); ok && rc.valid == nil && a.Len() == n {
			a.Retain()
			return a, nil
		}
		vals := rc.int64s(n)
		b := array.NewInt64Builder(mem)
		defer b.Release()
		b.AppendValues(vals[:n], rc.valid)
		return b.NewArray(), nil
	case outFloat:
		vals := rc.float64s(n)
		b := array.NewFloat64Builder(mem)
		defer b.Release()
		b.AppendValues(vals[:n], rc.valid)
		return b.NewArray(), nil
	case outString:
		sv := rc.strings()
		b := array.NewStringBuilder(mem)
		defer b.Release()
		b.Reserve(n)
		for i := 0; i < n; i++ {
			if rc.isValid(i) {
				b.Append(sv.Value(i))
			} else {
				b.AppendNull()
			}
		}
		return b.NewArray(), nil
	case outBool:
		a := rc.arr.(*array.Boolean)
		b := array.NewBooleanBuilder(mem)
		defer b.Release()
		b.Reserve(n)
		for i := 0; i < n; i++ {
			if rc.isValid(i) {
				b.Append(a.Value(i))
			} else {
				b.AppendNull()
			}
		}
		return b.NewArray(), nil
	}
	return nil, fmt.Errorf("internal error: column as %d", c.kind)
}

// litValNode is a literal repeated on every row.
type litValNode struct {
	v    any
	kind outKind
}

func (l *litValNode) eval(bc *batchCtx, mem memory.Allocator) (arrow.Array, error) {
	b := newValueBuilder(mem, l.kind)
	defer b.Release()
	b.Reserve(bc.n)
	for i := 0; i < bc.n; i++ {
		if err := appendAs(b, l.kind, l.v); err != nil {
			return nil, err
		}
	}
	return b.NewArray(), nil
}

// predValNode is a vectorised boolean expression; it is never null, as a
// predicate is false where its operands are.
type predValNode struct{ root vnode }

func (p *predValNode) eval(bc *batchCtx, mem memory.Allocator) (arrow.Array, error) {
	mask := make([]bool, bc.n)
	if err := p.root.eval(bc, nil, mask); err != nil {
		return nil, err
	}
	b := array.NewBooleanBuilder(mem)
	defer b.Release()
	b.AppendValues(mask, nil)
	return b.NewArray(), nil
}

// condValNode is cond ? a : b with both branches column at a time.
type condValNode struct {
	cond vnode
	a, b valNode
	kind outKind
}

func (c *condValNode) eval(bc *batchCtx, mem memory.Allocator) (arrow.Array, error) {
	mask := make([]bool, bc.n)
	if err := c.cond.eval(bc, nil, mask); err != nil {
		return nil, err
	}
	a, err := c.a.eval(bc, mem)
	if err != nil {
		return nil, err
	}
	defer a.Release()
	b, err := c.b.eval(bc, mem)
	if err != nil {
		return nil, err
	}
	defer b.Release()
	out := newValueBuilder(mem, c.kind)
	defer out.Release()
	out.Reserve(bc.n)
	for i, m := range mask {
		from := b
		if m {
			from = a
		}
		if from.IsNull(i) {
			out.AppendNull()
			continue
		}
		switch x := from.(type) {
		case *array.Boolean:
			out.(*array.BooleanBuilder).Append(x.Value(i))
		case *array.Int64:
			out.(*array.Int64Builder).Append(x.Value(i))
		case *array.Float64:
			out.(*array.Float64Builder).Append(x.Value(i))
		case *array.String:
			out.(*array.StringBuilder).Append(x.Value(i))
		default:
			return nil, fmt.Errorf("internal error: branch of type %s", from.DataType())
		}
	}
	return out.NewArray(), nil
}

// rowValNode runs the expression with expr, row by row.
type rowValNode struct {
	prog *rowProg
	kind outKind
}

func (r *rowValNode) eval(bc *batchCtx, mem memory.Allocator) (arrow.Array, error) {
	env, err := bc.rowEnv(r.prog)
	if err != nil {
		return nil, err
	}
	b := newValueBuilder(mem, r.kind)
	defer b.Release()
	b.Reserve(bc.n)
	for i := 0; i < bc.n; i++ {
		v, err := r.prog.run(bc, env, i)
		if err != nil {
			return nil, err
		}
		if err := appendAs(b, r.kind, v); err != nil {
			return nil, &RowError{Row: i + 1, Expr: r.prog.src, Err: err}
		}
	}
	return b.NewArray(), nil
}

func newValueBuilder(mem memory.Allocator, k outKind) array.Builder {
	switch k {
	case outBool:
		return array.NewBooleanBuilder(mem)
	case outInt:
		return array.NewInt64Builder(mem)
	case outFloat:
		return array.NewFloat64Builder(mem)
	}
	return array.NewStringBuilder(mem)
}

// appendAs appends v, a value of expr, to b, a builder of kind k.
func appendAs(b array.Builder, k outKind, v any) error {
	if v == nil {
		b.AppendNull()
		return nil
	}
	switch k {
	case outBool:
		x, ok := v.(bool)
		if !ok {
			return fmt.Errorf("expected bool, got %s", typeName(v))
		}
		b.(*array.BooleanBuilder).Append(x)
	case outInt:
		if i, ok := asInt(v); ok {
			b.(*array.Int64Builder).Append(i)
			return nil
		}
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return fmt.Errorf("expected int, got %s", typeName(v))
		}
		b.(*array.Int64Builder).Append(int64(f))
	case outFloat:
		switch x := v.(type) {
		case float64:
			b.(*array.Float64Builder).Append(x)
		case float32:
			b.(*array.Float64Builder).Append(float64(x))
		default:
			i, ok := asInt(v)
			if !ok {
				return fmt.Errorf("expected float, got %s", typeName(v))
			}
			b.(*array.Float64Builder).Append(float64(i))
		}
	case outString:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("expected string, got %s", typeName(v))
		}
		b.(*array.StringBuilder).Append(s)
	default:
		b.(*array.StringBuilder).BinaryBuilder.Append(appendJSON(nil, v))
	}
	return nil
}
