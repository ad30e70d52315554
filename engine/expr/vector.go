package expr

import (
	"cmp"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/expr-lang/expr/vm"
)

// vnode is one node of a predicate's evaluation plan. eval writes one result
// per row of the batch into out. Rows where sel is false (sel nil: none)
// are ones whose result cannot change the predicate's outcome; a node may
// leave anything there, and nodes that run expr per row skip them, so that
// `a && b` evaluates b only where a holds, as expr's short-circuit would.
type vnode interface {
	eval(bc *batchCtx, sel, out []bool) error
	// perRow reports whether the node or one below it runs row at a time.
	perRow() bool
}

// colRef is a column path a plan reads: the top-level column index, then
// struct child indices.
type colRef struct {
	path  string
	idx   []int
	field arrow.Field
}

type colKind int

const (
	kindOther colKind = iota // structs, lists, times...: only null tests vectorise
	kindRaw                  // raw JSON: the decoded value can be nil where the column is not
	kindInt
	kindFloat
	kindString
	kindBool
)

func kindOf(f arrow.Field) colKind {
	if isRaw(f) {
		return kindRaw
	}
	switch f.Type.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32:
		return kindInt
	case arrow.FLOAT32, arrow.FLOAT64:
		return kindFloat
	case arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW:
		return kindString
	case arrow.BOOL:
		return kindBool
	}
	return kindOther
}

// batchCtx is the state of one evaluation over one batch.
type batchCtx struct {
	rec     arrow.RecordBatch
	n       int
	refs    []colRef
	cols    []*resolvedCol
	free    [][]bool
	fold    []byte
	machine vm.VM
	envs    map[*rowProg]*rowEnv
	valids  map[string][]bool
}

func newBatchCtx(rec arrow.RecordBatch, refs []colRef) *batchCtx {
	return &batchCtx{
		rec:  rec,
		n:    int(rec.NumRows()),
		refs: refs,
		cols: make([]*resolvedCol, len(refs)),
	}
}

// buf returns a scratch row mask; release gives it back.
func (bc *batchCtx) buf() []bool {
	if k := len(bc.free); k > 0 {
		b := bc.free[k-1]
		bc.free = bc.free[:k-1]
		return b
	}
	return make([]bool, bc.n)
}

func (bc *batchCtx) release(b []bool) { bc.free = append(bc.free, b) }

// col resolves column id once per batch.
func (bc *batchCtx) col(id int) (*resolvedCol, error) {
	if c := bc.cols[id]; c != nil {
		return c, nil
	}
	ref := bc.refs[id]
	if ref.idx[0] >= int(bc.rec.NumCols()) {
		return nil, fmt.Errorf("column %s is missing from the batch", ref.path)
	}
	arr := bc.rec.Column(ref.idx[0])
	var valid []bool
	for k := range ref.idx {
		if k > 0 {
			st, ok := arr.(*array.Struct)
			if !ok || ref.idx[k] >= st.NumField() {
				return nil, fmt.Errorf("column %s does not have the type the expression was compiled for", ref.path)
			}
			arr = st.Field(ref.idx[k])
		}
		if arr.Len() < bc.n {
			return nil, fmt.Errorf("column %s has %d rows, the batch %d", ref.path, arr.Len(), bc.n)
		}
		valid = bc.validity(ref.idx[:k+1], arr, valid)
	}
	c := &resolvedCol{arr: arr, valid: valid}
	bc.cols[id] = c
	return c, nil
}

// validity returns the rows where the struct path idx (whose array is a)
// and all its parents (parent) are valid: nil when all are. Paths share
// their parents' results, so a struct's bitmap is read once per batch.
// The slices are read only.
func (bc *batchCtx) validity(idx []int, a arrow.Array, parent []bool) []bool {
	key := fmt.Sprint(idx)
	if v, ok := bc.valids[key]; ok {
		return v
	}
	v := parent
	if a.NullN() > 0 {
		v = make([]bool, bc.n)
		if parent == nil {
			for i := range v {
				v[i] = true
			}
		} else {
			copy(v, parent)
		}
		andValidity(v, a)
	}
	if bc.valids == nil {
		bc.valids = map[string][]bool{}
	}
	bc.valids[key] = v
	return v
}

// bitsOf[b] is byte b of a validity bitmap as eight bools.
var bitsOf = func() (t [256][8]bool) {
	for b := range t {
		for k := range t[b] {
			t[b][k] = b&(1<<k) != 0
		}
	}
	return t
}()

// andValidity clears the rows of valid where a is null, reading the bitmap
// a byte (eight rows) at a time.
func andValidity(valid []bool, a arrow.Array) {
	bm := a.NullBitmapBytes()
	off := a.Data().Offset()
	if _, ok := a.(*array.Null); ok {
		clear(valid)
		return
	}
	if bm == nil || len(bm)*8 < off+len(valid) {
		// No bitmap (unions, say): ask the array.
		for i := range valid {
			valid[i] = valid[i] && a.IsValid(i)
		}
		return
	}
	i := 0
	for ; i < len(valid) && (off+i)&7 != 0; i++ {
		j := off + i
		valid[i] = valid[i] && bm[j>>3]&(1<<(j&7)) != 0
	}
	for ; i+8 <= len(valid); i += 8 {
		switch b := bm[(off+i)>>3]; b {
		case 0xff:
		case 0:
			clear(valid[i : i+8])
		default:
			bits := &bitsOf[b]
			for k := range bits {
				valid[i+k] = valid[i+k] && bits[k]
			}
		}
	}
	for ; i < len(valid); i++ {
		j := off + i
		valid[i] = valid[i] && bm[j>>3]&(1<<(j&7)) != 0
	}
}

// resolvedCol is a column path resolved in one batch: the leaf array and
// the validity of the leaf combined with that of every parent struct.
type resolvedCol struct {
	arr    arrow.Array
	valid  []bool // nil: every row is valid
	ints   []int64
	floats []float64
}

func (c *resolvedCol) isValid(i int) bool { return c.valid == nil || c.valid[i] }

func (c *resolvedCol) int64s(n int) []int64 {
	if c.ints != nil {
		return c.ints
	}
	switch a := c.arr.(type) {
	case *array.Int64:
		c.ints = a.Int64Values()[:n]
	case *array.Int32:
		c.ints = widen(a.Int32Values()[:n])
	case *array.Int16:
		c.ints = widen(a.Int16Values()[:n])
	case *array.Int8:
		c.ints = widen(a.Int8Values()[:n])
	case *array.Uint32:
		c.ints = widen(a.Uint32Values()[:n])
	case *array.Uint16:
		c.ints = widen(a.Uint16Values()[:n])
	case *array.Uint8:
		c.ints = widen(a.Uint8Values()[:n])
	default:
		c.ints = make([]int64, n)
	}
	return c.ints
}

func widen[T int8 | int16 | int32 | uint8 | uint16 | uint32](v []T) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}

func (c *resolvedCol) float64s(n int) []float64 {
	if c.floats != nil {
		return c.floats
	}
	switch a := c.arr.(type) {
	case *array.Float64:
		c.floats = a.Float64Values()[:n]
	case *array.Float32:
		c.floats = make([]float64, n)
		for i, x := range a.Float32Values()[:n] {
			c.floats[i] = float64(x)
		}
	default:
		ints := c.int64s(n)
		c.floats = make([]float64, n)
		for i, x := range ints {
			c.floats[i] = float64(x)
		}
	}
	return c.floats
}

type stringValues interface{ Value(int) string }

func (c *resolvedCol) strings() stringValues {
	if s, ok := c.arr.(stringValues); ok {
		return s
	}
	return emptyStrings{}
}

type emptyStrings struct{}

func (emptyStrings) Value(int) string { return "" }

// andValid clears the rows where the column is null.
func andValid(out, valid []bool) {
	if valid == nil {
		return
	}
	for i := range out {
		out[i] = out[i] && valid[i]
	}
}

// ---- boolean structure ----

type constNode struct{ v bool }

func (c *constNode) eval(bc *batchCtx, sel, out []bool) error {
	for i := range out {
		out[i] = c.v
	}
	return nil
}
func (c *constNode) perRow() bool { return false }

type andNode struct{ l, r vnode }

func (a *andNode) eval(bc *batchCtx, sel, out []bool) error {
	if err := a.l.eval(bc, sel, out); err != nil {
		return err
	}
	rsel := sel
	if a.r.perRow() {
		rsel = bc.buf()
		defer bc.release(rsel)
		for i := range rsel {
			rsel[i] = out[i] && (sel == nil || sel[i])
		}
	}
	tmp := bc.buf()
	defer bc.release(tmp)
	if err := a.r.eval(bc, rsel, tmp); err != nil {
		return err
	}
	for i := range out {
		out[i] = out[i] && tmp[i]
	}
	return nil
}
func (a *andNode) perRow() bool { return a.l.perRow() || a.r.perRow() }

type orNode struct{ l, r vnode }

func (o *orNode) eval(bc *batchCtx, sel, out []bool) error {
	if err := o.l.eval(bc, sel, out); err != nil {
		return err
	}
	rsel := sel
	if o.r.perRow() {
		rsel = bc.buf()
		defer bc.release(rsel)
		for i := range rsel {
			rsel[i] = !out[i] && (sel == nil || sel[i])
		}
	}
	tmp := bc.buf()
	defer bc.release(tmp)
	if err := o.r.eval(bc, rsel, tmp); err != nil {
		return err
	}
	for i := range out {
		out[i] = out[i] || tmp[i]
	}
	return nil
}
func (o *orNode) perRow() bool { return o.l.perRow() || o.r.perRow() }

// notNode negates in two-valued logic: a comparison that is false because
// of a null becomes true.
type notNode struct{ x vnode }

func (n *notNode) eval(bc *batchCtx, sel, out []bool) error {
	if err := n.x.eval(bc, sel, out); err != nil {
		return err
	}
	for i := range out {
		out[i] = !out[i]
	}
	return nil
}
func (n *notNode) perRow() bool { return n.x.perRow() }

// ---- leaves over one column ----

// boolColNode is a bool column used as a condition: null is false.
type boolColNode struct{ col int }

func (b *boolColNode) eval(bc *batchCtx, sel, out []bool) error {
	c, err := bc.col(b.col)
	if err != nil {
		return err
	}
	a, ok := c.arr.(*array.Boolean)
	for i := range out {
		out[i] = ok && c.isValid(i) && a.Value(i)
	}
	return nil
}
func (b *boolColNode) perRow() bool { return false }

// nullNode is `path == nil` (isNull) or `path != nil`.
type nullNode struct {
	col    int
	isNull bool
}

func (nn *nullNode) eval(bc *batchCtx, sel, out []bool) error {
	c, err := bc.col(nn.col)
	if err != nil {
		return err
	}
	for i := range out {
		out[i] = c.isValid(i) != nn.isNull
	}
	return nil
}
func (nn *nullNode) perRow() bool { return false }

type cmpOp int

const (
	opEQ cmpOp = iota
	opNE
	opLT
	opLE
	opGT
	opGE
)

var cmpOps = map[string]cmpOp{"==": opEQ, "!=": opNE, "<": opLT, "<=": opLE, ">": opGT, ">=": opGE}

// flip turns `lit op col` into `col flip(op) lit`.
func (o cmpOp) flip() cmpOp {
	switch o {
	case opLT:
		return opGT
	case opLE:
		return opGE
	case opGT:
		return opLT
	case opGE:
		return opLE
	}
	return o
}

func compareOrdered[T cmp.Ordered](vals []T, op cmpOp, lit T, out []bool) {
	switch op {
	case opEQ:
		for i, v := range vals {
			out[i] = v == lit
		}
	case opNE:
		for i, v := range vals {
			out[i] = v != lit
		}
	case opLT:
		for i, v := range vals {
			out[i] = v < lit
		}
	case opLE:
		for i, v := range vals {
			out[i] = v <= lit
		}
	case opGT:
		for i, v := range vals {
			out[i] = v > lit
		}
	case opGE:
		for i, v := range vals {
			out[i] = v >= lit
		}
	}
}

func compareOne[T cmp.Ordered](v T, op cmpOp, lit T) bool {
	switch op {
	case opEQ:
		return v == lit
	case opNE:
		return v != lit
	case opLT:
		return v < lit
	case opLE:
		return v <= lit
	case opGT:
		return v > lit
	case opGE:
		return v >= lit
	}
	return false
}

// numCmpNode compares a numeric column with a number. An int column is
// compared exactly with an int literal, and as float64 with a float one,
// as expr does.
type numCmpNode struct {
	col    int
	op     cmpOp
	intCol bool
	intLit bool
	i      int64
	f      float64
}

func (nc *numCmpNode) eval(bc *batchCtx, sel, out []bool) error {
	c, err := bc.col(nc.col)
	if err != nil {
		return err
	}
	if nc.intCol && nc.intLit {
		compareOrdered(c.int64s(bc.n), nc.op, nc.i, out)
	} else {
		compareOrdered(c.float64s(bc.n), nc.op, nc.f, out)
	}
	andValid(out, c.valid)
	return nil
}
func (nc *numCmpNode) perRow() bool { return false }

type boolCmpNode struct {
	col int
	eq  bool // == rather than !=
	lit bool
}

func (b *boolCmpNode) eval(bc *batchCtx, sel, out []bool) error {
	c, err := bc.col(b.col)
	if err != nil {
		return err
	}
	a, ok := c.arr.(*array.Boolean)
	for i := range out {
		out[i] = ok && c.isValid(i) && (a.Value(i) == b.lit) == b.eq
	}
	return nil
}
func (b *boolCmpNode) perRow() bool { return false }

// foldKind is lower() or upper() applied to a string column before the
// comparison.
type foldKind int

const (
	foldNone foldKind = iota
	foldLower
	foldUpper
)

// foldStr applies lower() or upper() as strings.ToLower/ToUpper would. The
// result may alias bc.fold and is valid until the next call, which saves an
// allocation per row on the ASCII strings that make up most data.
func (bc *batchCtx) foldStr(k foldKind, s string) string {
	change := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			if k == foldLower {
				return strings.ToLower(s)
			}
			return strings.ToUpper(s)
		}
		if (k == foldLower && 'A' <= c && c <= 'Z') || (k == foldUpper && 'a' <= c && c <= 'z') {
			change = true
		}
	}
	if !change {
		return s
	}
	bc.fold = append(bc.fold[:0], s...)
	for i, c := range bc.fold {
		switch {
		case k == foldLower && 'A' <= c && c <= 'Z':
			bc.fold[i] = c + 'a' - 'A'
		case k == foldUpper && 'a' <= c && c <= 'z':
			bc.fold[i] = c - ('a' - 'A')
		}
	}
	return unsafe.String(unsafe.SliceData(bc.fold), len(bc.fold))
}

type strCmpNode struct {
	col  int
	op   cmpOp
	fold foldKind
	lit  string
}

func (sc *strCmpNode) eval(bc *batchCtx, sel, out []bool) error {
	c, err := bc.col(sc.col)
	if err != nil {
		return err
	}
	if a, ok := c.arr.(*array.String); ok && sc.fold == foldNone && (sc.op == opEQ || sc.op == opNE) {
		eq := sc.op == opEQ
		for i := range out {
			out[i] = (a.Value(i) == sc.lit) == eq
		}
	} else {
		sv := c.strings()
		for i := range out {
			if !c.isValid(i) {
				continue
			}
			s := sv.Value(i)
			if sc.fold != foldNone {
				s = bc.foldStr(sc.fold, s)
			}
			out[i] = compareOne(s, sc.op, sc.lit)
		}
	}
	andValid(out, c.valid)
	return nil
}
func (sc *strCmpNode) perRow() bool { return false }

// inNode is `path in [literals]`.
type inNode struct {
	col    int
	kind   colKind
	fold   foldKind
	strs   map[string]struct{}
	ints   map[int64]struct{}
	floats map[float64]struct{}
	bools  [2]bool // [false, true] present
}

func (in *inNode) eval(bc *batchCtx, sel, out []bool) error {
	c, err := bc.col(in.col)
	if err != nil {
		return err
	}
	switch in.kind {
	case kindString:
		sv := c.strings()
		for i := range out {
			if !c.isValid(i) {
				out[i] = false
				continue
			}
			s := sv.Value(i)
			if in.fold != foldNone {
				s = bc.foldStr(in.fold, s)
			}
			_, out[i] = in.strs[s]
		}
		return nil
	case kindInt:
		ints := c.int64s(bc.n)
		for i, v := range ints {
			_, hit := in.ints[v]
			if !hit && len(in.floats) > 0 {
				_, hit = in.floats[float64(v)]
			}
			out[i] = hit
		}
	case kindFloat:
		for i, v := range c.float64s(bc.n) {
			_, out[i] = in.floats[v]
		}
	case kindBool:
		a, ok := c.arr.(*array.Boolean)
		for i := range out {
			out[i] = ok && c.isValid(i) && in.bools[b2i(a.Value(i))]
		}
	}
	andValid(out, c.valid)
	return nil
}
func (in *inNode) perRow() bool { return false }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// strOpNode is contains, startsWith, endsWith or matches against a literal.
type strOpNode struct {
	col  int
	op   string
	fold foldKind
	lit  string
	re   *regexp.Regexp
}

func (so *strOpNode) eval(bc *batchCtx, sel, out []bool) error {
	c, err := bc.col(so.col)
	if err != nil {
		return err
	}
	sv := c.strings()
	for i := range out {
		if !c.isValid(i) {
			out[i] = false
			continue
		}
		s := sv.Value(i)
		if so.fold != foldNone {
			s = bc.foldStr(so.fold, s)
		}
		switch so.op {
		case "contains":
			out[i] = strings.Contains(s, so.lit)
		case "startsWith":
			out[i] = strings.HasPrefix(s, so.lit)
		case "endsWith":
			out[i] = strings.HasSuffix(s, so.lit)
		case "matches":
			out[i] = so.re.MatchString(s)
		}
	}
	return nil
}
func (so *strOpNode) perRow() bool { return false }

// rowNode runs a sub-expression the plan cannot vectorise with expr, row by
// row, on the selected rows only.
type rowNode struct{ prog *rowProg }

func (r *rowNode) eval(bc *batchCtx, sel, out []bool) error {
	env, err := bc.rowEnv(r.prog)
	if err != nil {
		return err
	}
	for i := range out {
		if sel != nil && !sel[i] {
			out[i] = false
			continue
		}
		v, err := r.prog.run(bc, env, i)
		if err != nil {
			return err
		}
		b, _ := v.(bool) // the program ends in truth(): bool or an error
		out[i] = b
	}
	return nil
}
func (r *rowNode) perRow() bool { return true }

func (bc *batchCtx) rowEnv(p *rowProg) (*rowEnv, error) {
	if e, ok := bc.envs[p]; ok {
		return e, nil
	}
	e, err := p.env.resolve(bc.rec)
	if err != nil {
		return nil, err
	}
	if bc.envs == nil {
		bc.envs = map[*rowProg]*rowEnv{}
	}
	bc.envs[p] = e
	return e, nil
}
