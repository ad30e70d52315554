package arrowjson

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

// ErrEmptyLine is returned by Decoder.Append for an empty or whitespace-only
// line. Nothing is appended.
var ErrEmptyLine = errors.New("arrowjson: empty line")

// Field metadata that marks a raw JSON column: a utf8 column whose values are
// JSON texts, written verbatim by encoders.
const (
	MetadataKey = "pipeline.json"
	MetadataRaw = "raw"
)

// IsRaw reports whether f is a raw JSON column.
func IsRaw(f arrow.Field) bool {
	if f.Type == nil || (f.Type.ID() != arrow.STRING && f.Type.ID() != arrow.LARGE_STRING) {
		return false
	}
	v, ok := f.Metadata.GetValue(MetadataKey)
	return ok && v == MetadataRaw
}

var rawMetadata = arrow.NewMetadata([]string{MetadataKey}, []string{MetadataRaw})

// Options configures a Decoder.
type Options struct {
	// Allocator allocates the batches' buffers; nil means
	// memory.DefaultAllocator.
	Allocator memory.Allocator
}

// kind is a node's inferred JSON type.
type kind uint8

const (
	kNull   kind = iota // only nulls seen so far
	kBool               // true/false
	kInt                // integer literals that fit int64
	kFloat              // numbers
	kString             // strings
	kRaw                // conflicting types: JSON text
	kList               // arrays
	kStruct             // objects
)

// Per-entry states.
const (
	stValid  byte = 0 // a value
	stAbsent byte = 1 // null: key absent (or parent null)
	stNull   byte = 2 // null: explicit JSON null
)

// node is one field (or list element) of the inferred schema together with
// the values buffered for it since the last Flush.
type node struct {
	name    string
	seg     string // name escaped as a null-path segment (fields only)
	parent  *node
	isField bool // an object member; false for list elements and the root
	kind    kind
	pos     int // index in parent.children

	state  []byte // one per entry
	ints   []int64
	floats []float64
	bools  []byte
	offs   []int32 // kString, kRaw, kList: len(state)+1 offsets
	data   []byte  // kString, kRaw

	children []*node // kStruct
	index    map[string]*node
	elem     *node // kList

	// used while appending one row
	curIdx   int  // kList: index of the element being appended
	poisoned bool // must become raw JSON once its value is appended
}

func (n *node) len() int { return len(n.state) }

// Decoder turns JSON objects into Arrow record batches. It is not safe for
// concurrent use; use one per goroutine.
type Decoder struct {
	mem  memory.Allocator
	sc   scanner // the line being appended and its tokens
	root *node
	rows int

	// the NullsColumn: one list of paths per row
	nullsOn    bool
	nullsState []byte
	nullsOffs  []int32
	pathOffs   []int32 // paths of all rows, one string each
	pathData   []byte

	chain    []*node
	rowPaths int // len(pathOffs) when the current row started
	scratch  []byte

	version       int // bumped on every schema change
	schema        *arrow.Schema
	schemaVersion int
}

// NewDecoder returns a decoder with an empty schema.
func NewDecoder(opts Options) *Decoder {
	mem := opts.Allocator
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	d := &Decoder{mem: mem}
	d.root = &node{kind: kStruct, index: map[string]*node{}}
	d.nullsOffs = []int32{0}
	d.pathOffs = []int32{0}
	d.schemaVersion = -1
	return d
}

// Len is the number of rows buffered since the last Flush.
func (d *Decoder) Len() int { return d.rows }

// Release drops the decoder's buffers. The decoder must not be used after.
func (d *Decoder) Release() {
	d.root = &node{kind: kStruct, index: map[string]*node{}}
	d.rows = 0
	d.nullsState, d.nullsOffs, d.pathOffs, d.pathData = nil, []int32{0}, []int32{0}, nil
	d.sc = scanner{}
	d.scratch, d.chain = nil, nil
	d.schema = nil
	d.version++
}

// Append parses line, one JSON object (a trailing "\n" or "\r\n" and a
// leading UTF-8 byte order mark are ignored), and buffers it as a row.
//
// An empty or whitespace-only line returns ErrEmptyLine. A line that is not
// valid JSON returns a *SyntaxError ("invalid JSON at offset 17: ..."); a
// JSON value that is not an object returns an error such as "expected a JSON
// object, got array"; an object with a top-level key that starts with
// sdk.ReservedPrefix returns an error too. In all these cases no row is
// appended, the schema is unchanged, and the decoder stays usable. (A batch
// whose strings outgrow 32-bit offsets also fails the row; Flush sooner.)
func (d *Decoder) Append(line []byte) error {
	line = trimLine(line)
	if isBlank(line) {
		return ErrEmptyLine
	}
	if len(line) > math.MaxInt32 {
		return errTooBig
	}
	if err := d.sc.scan(line); err != nil {
		return err
	}
	if k := d.sc.toks[0].kind; k != tObject {
		return fmt.Errorf("expected a JSON object, got %s", kindName[k])
	}
	toks := d.sc.toks
	for k := int32(1); k < toks[0].next; k = d.skip(k + 1) {
		if key := d.str(&toks[k]); bytes.HasPrefix(key, reservedPrefix) {
			return fmt.Errorf("key %q uses the prefix %q, which is reserved for the engine's columns", key, sdk.ReservedPrefix)
		}
	}
	pathMark := len(d.pathOffs)
	d.rowPaths = pathMark
	if err := d.appendObject(d.root, 0); err != nil {
		d.rollback(pathMark)
		return err
	}
	if n := len(d.pathOffs); n > pathMark || d.nullsOn {
		if !d.nullsOn {
			d.nullsOn = true
			d.version++
			for i := 0; i < d.rows; i++ {
				d.nullsState = append(d.nullsState, stAbsent)
				d.nullsOffs = append(d.nullsOffs, int32(pathMark-1))
			}
		}
		if n > pathMark {
			d.nullsState = append(d.nullsState, stValid)
		} else {
			d.nullsState = append(d.nullsState, stAbsent)
		}
		d.nullsOffs = append(d.nullsOffs, int32(n-1))
	}
	d.rows++
	return nil
}

var kindName = [...]string{
	tNull: "null", tFalse: "boolean", tTrue: "boolean", tInt: "number",
	tFloat: "number", tString: "string", tObject: "object", tArray: "array",
}

// rollback removes a partly appended row.
func (d *Decoder) rollback(pathMark int) {
	truncate(d.root, d.rows)
	d.pathOffs = d.pathOffs[:pathMark]
	d.pathData = d.pathData[:d.pathOffs[pathMark-1]]
}

var (
	bom            = []byte("\xef\xbb\xbf")
	reservedPrefix = []byte(sdk.ReservedPrefix)
)

func trimLine(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
		if n > 1 && line[n-2] == '\r' {
			line = line[:n-2]
		}
	}
	if bytes.HasPrefix(line, bom) {
		line = line[len(bom):]
	}
	return line
}

func isBlank(line []byte) bool {
	for _, c := range line {
		if !isSpace[c] {
			return false
		}
	}
	return true
}

// str returns the decoded text of string token t. It is only valid until
// the next call.
func (d *Decoder) str(t *token) []byte {
	raw := d.sc.buf[t.start:t.end]
	if !t.esc {
		return raw
	}
	d.scratch = decodeString(d.scratch[:0], raw)
	return d.scratch
}

// skip returns the index of the token after value token i.
func (d *Decoder) skip(i int32) int32 {
	if k := d.sc.toks[i].kind; k == tObject || k == tArray {
		return d.sc.toks[i].next
	}
	return i + 1
}

// appendObject appends object token ti as an entry of struct node n.
//
// Members are appended in one pass. Keys normally come in the order of
// n.children, and children whose key is skipped get a null. A key that
// comes out of that order, or twice, replaces the entry its child already
// got, so for a duplicate key the last value wins.
func (d *Decoder) appendObject(n *node, ti int32) error {
	cursor := 0 // n.children[:cursor] have their entry
	end := d.sc.toks[ti].next
	for k := ti + 1; k < end; k = d.skip(k + 1) {
		key := d.str(&d.sc.toks[k])
		var c *node
		if cursor < len(n.children) && n.children[cursor].name == string(key) {
			c = n.children[cursor]
		} else if c = n.index[string(key)]; c == nil {
			c = d.newChild(n, string(key))
		}
		if c.pos >= cursor {
			for _, skipped := range n.children[cursor:c.pos] {
				skipped.appendNull(stAbsent)
			}
			cursor = c.pos + 1
		} else {
			d.unappend(c)
		}
		if err := d.appendValue(c, k+1); err != nil {
			return err
		}
		if c.poisoned {
			// A conflict below c that c cannot hold: c becomes raw JSON.
			c.poisoned = false
			truncate(c, c.len()-1)
			d.toRaw(c)
			if err := d.appendRaw(c, k+1); err != nil {
				return err
			}
		}
	}
	for _, skipped := range n.children[cursor:] {
		skipped.appendNull(stAbsent)
	}
	n.state = append(n.state, stValid)
	return nil
}

// unappend removes the entry field c got for the object being appended,
// and the explicit-null paths recorded for it in the current row.
func (d *Decoder) unappend(c *node) {
	truncate(c, c.len()-1)
	if len(d.pathOffs) == d.rowPaths {
		return
	}
	prefix := string(d.appendPath(nil, c))
	w := d.rowPaths
	at := d.pathOffs[w-1] // where the next kept path goes
	from := at
	for j := d.rowPaths; j < len(d.pathOffs); j++ {
		p := d.pathData[from:d.pathOffs[j]]
		from = d.pathOffs[j]
		if string(p) == prefix || len(p) > len(prefix) && string(p[:len(prefix)]) == prefix &&
			(p[len(prefix)] == '.' || p[len(prefix)] == '[') {
			continue
		}
		at += int32(copy(d.pathData[at:], p))
		d.pathOffs[w] = at
		w++
	}
	d.pathOffs = d.pathOffs[:w]
	d.pathData = d.pathData[:at]
}

func (d *Decoder) newChild(n *node, name string) *node {
	c := &node{name: name, seg: escapeSegment(name), parent: n, isField: true, pos: len(n.children)}
	for range n.len() {
		c.state = append(c.state, stAbsent)
	}
	n.children = append(n.children, c)
	n.index[name] = c
	d.version++
	return c
}

func (d *Decoder) appendList(n *node, ti int32) error {
	e := n.elem
	end := d.sc.toks[ti].next
	idx := 0
	for k := ti + 1; k < end; k = d.skip(k) {
		n.curIdx = idx
		idx++
		if err := d.appendValue(e, k); err != nil {
			return err
		}
	}
	if e.len() > math.MaxInt32 {
		return errTooBig
	}
	n.offs = append(n.offs, int32(e.len()))
	n.state = append(n.state, stValid)
	return nil
}

var errTooBig = errors.New("arrowjson: batch too large for 32-bit offsets; Flush more often")

// appendValue appends value token ti as the next entry of n.
func (d *Decoder) appendValue(n *node, ti int32) error {
	t := &d.sc.toks[ti]
	switch t.kind {
	case tString:
		switch n.kind {
		case kString:
		case kNull:
			d.become(n, kString)
		case kRaw:
			return d.appendRaw(n, ti)
		default:
			d.conflict(n)
			return nil
		}
		if src := d.sc.buf[t.start:t.end]; t.esc {
			n.data = decodeString(n.data, src)
		} else if l := len(n.data); cap(n.data)-l >= len(src) {
			// (not append: that would store the slice pointer, with a
			// write barrier while the GC runs)
			n.data = n.data[:l+len(src)]
			copy(n.data[l:], src)
		} else {
			n.data = append(n.data, src...)
		}
		if len(n.data) > math.MaxInt32 {
			return errTooBig
		}
		n.offs = append(n.offs, int32(len(n.data)))
		n.state = append(n.state, stValid)
	case tInt:
		switch n.kind {
		case kInt:
			n.ints = append(n.ints, int64(t.num))
		case kFloat:
			n.floats = append(n.floats, float64(int64(t.num)))
		case kNull:
			d.become(n, kInt)
			n.ints = append(n.ints, int64(t.num))
		case kRaw:
			return d.appendRaw(n, ti)
		default:
			d.conflict(n)
			return nil
		}
		n.state = append(n.state, stValid)
	case tFloat:
		switch n.kind {
		case kFloat:
		case kInt:
			d.widen(n)
		case kNull:
			d.become(n, kFloat)
		case kRaw:
			return d.appendRaw(n, ti)
		default:
			d.conflict(n)
			return nil
		}
		n.floats = append(n.floats, math.Float64frombits(t.num))
		n.state = append(n.state, stValid)
	case tObject:
		switch n.kind {
		case kStruct:
		case kNull:
			d.become(n, kStruct)
		case kRaw:
			return d.appendRaw(n, ti)
		default:
			d.conflict(n)
			return nil
		}
		return d.appendObject(n, ti)
	case tArray:
		switch n.kind {
		case kList:
		case kNull:
			d.become(n, kList)
		case kRaw:
			return d.appendRaw(n, ti)
		default:
			d.conflict(n)
			return nil
		}
		return d.appendList(n, ti)
	case tTrue, tFalse:
		switch n.kind {
		case kBool:
		case kNull:
			d.become(n, kBool)
		case kRaw:
			return d.appendRaw(n, ti)
		default:
			d.conflict(n)
			return nil
		}
		n.bools = append(n.bools, byte(t.kind-tFalse))
		n.state = append(n.state, stValid)
	default: // null
		n.appendNull(stNull)
		if n.isField {
			d.recordNull(n)
		}
	}
	return nil
}

// conflict handles a value that n's type cannot hold: the nearest enclosing
// object field is marked to become raw JSON once its value is appended, and
// n gets a placeholder null meanwhile.
func (d *Decoder) conflict(n *node) {
	a := n
	for !a.isField {
		a = a.parent
	}
	a.poisoned = true
	n.appendNull(stAbsent)
}

// appendNull appends a null entry to n (and its descendants, for structs).
func (n *node) appendNull(st byte) {
	n.state = append(n.state, st)
	switch n.kind {
	case kBool:
		n.bools = append(n.bools, 0)
	case kInt:
		n.ints = append(n.ints, 0)
	case kFloat:
		n.floats = append(n.floats, 0)
	case kString, kRaw, kList:
		n.offs = append(n.offs, n.offs[len(n.offs)-1])
	case kStruct:
		for _, c := range n.children {
			c.appendNull(stAbsent)
		}
	}
}

// become gives a node that has seen only nulls its first real type.
func (d *Decoder) become(n *node, k kind) {
	l := n.len()
	n.kind = k
	switch k {
	case kBool:
		n.bools = append(n.bools[:0], make([]byte, l)...)
	case kInt:
		n.ints = append(n.ints[:0], make([]int64, l)...)
	case kFloat:
		n.floats = append(n.floats[:0], make([]float64, l)...)
	case kString, kRaw:
		n.offs = append(n.offs[:0], make([]int32, l+1)...)
		n.data = n.data[:0]
	case kList:
		n.offs = append(n.offs[:0], make([]int32, l+1)...)
		n.elem = &node{parent: n, name: "item"}
	case kStruct:
		n.index = map[string]*node{}
	}
	d.version++
}

// widen turns an int64 node into a float64 one.
func (d *Decoder) widen(n *node) {
	n.floats = n.floats[:0]
	for _, v := range n.ints {
		n.floats = append(n.floats, float64(v))
	}
	n.ints = nil
	n.kind = kFloat
	d.version++
}

// toRaw turns n into a raw JSON node, converting the buffered entries.
func (d *Decoder) toRaw(n *node) {
	l := n.len()
	offs := make([]int32, 1, l+1)
	var data []byte
	for i := 0; i < l; i++ {
		if n.state[i] == stValid {
			data = appendStored(data, n, i)
		}
		offs = append(offs, int32(len(data)))
	}
	n.kind = kRaw
	n.offs, n.data = offs, data
	n.ints, n.floats, n.bools = nil, nil, nil
	n.children, n.index, n.elem = nil, nil, nil
	d.version++
}

// appendRaw appends the JSON text of value token ti to raw node n.
func (d *Decoder) appendRaw(n *node, ti int32) error {
	l := len(n.data)
	n.data = d.appendToken(n.data, ti)
	if len(n.data) > math.MaxInt32 {
		n.data = n.data[:l]
		return errTooBig
	}
	n.offs = append(n.offs, int32(len(n.data)))
	n.state = append(n.state, stValid)
	return nil
}

// truncate cuts n (and its descendants) back to l entries.
func truncate(n *node, l int) {
	if l > n.len() {
		l = n.len()
	}
	n.state = n.state[:l]
	switch n.kind {
	case kBool:
		n.bools = n.bools[:l]
	case kInt:
		n.ints = n.ints[:l]
	case kFloat:
		n.floats = n.floats[:l]
	case kString, kRaw:
		n.offs = n.offs[:l+1]
		n.data = n.data[:n.offs[l]]
	case kList:
		n.offs = n.offs[:l+1]
		truncate(n.elem, int(n.offs[l]))
	case kStruct:
		for _, c := range n.children {
			truncate(c, l)
			c.poisoned = false
		}
	}
}

// recordNull lists the path of field n, which holds an explicit null in the
// current row, in the row's nulls.
func (d *Decoder) recordNull(n *node) {
	d.pathData = d.appendPath(d.pathData, n)
	d.pathOffs = append(d.pathOffs, int32(len(d.pathData)))
}

// appendPath appends the null path of n's current entry (see NullPath).
func (d *Decoder) appendPath(dst []byte, n *node) []byte {
	d.chain = d.chain[:0]
	for c := n; c.parent != nil; c = c.parent {
		d.chain = append(d.chain, c)
	}
	for i := len(d.chain) - 1; i >= 0; i-- {
		c := d.chain[i]
		if c.isField {
			if i != len(d.chain)-1 {
				dst = append(dst, '.')
			}
			dst = append(dst, c.seg...)
		} else {
			dst = append(dst, '[')
			dst = strconv.AppendInt(dst, int64(c.parent.curIdx), 10)
			dst = append(dst, ']')
		}
	}
	return dst
}

// escapeSegment escapes a key for use in a null path: '\', '.' and '['
// get a backslash in front.
func escapeSegment(key string) string {
	if !strings.ContainsAny(key, `\.[`) {
		return key
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; c {
		case '\\', '.', '[':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// NullPath builds the path under which a field's explicit null is listed in
// sdk.NullsColumn. Each element of elems is either a string, an object key,
// or an int, an array index. Keys are joined with '.', indexes are written
// as "[i]" after the array's key, and '\', '.' and '[' inside a key are
// escaped with a backslash: NullPath("a", "b.c", 2, "d") is `a.b\.c[2].d`.
func NullPath(elems ...any) string {
	var b []byte
	for i, e := range elems {
		switch e := e.(type) {
		case int:
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(e), 10)
			b = append(b, ']')
		case string:
			if i > 0 {
				b = append(b, '.')
			}
			b = append(b, escapeSegment(e)...)
		default:
			if i > 0 {
				b = append(b, '.')
			}
			b = append(b, escapeSegment(fmt.Sprint(e))...)
		}
	}
	return string(b)
}
