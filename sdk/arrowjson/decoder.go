package arrowjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/valyala/fastjson"

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

	// scratch used while appending one value
	stamp    uint64
	cur      *fastjson.Value
	curIdx   int
	poisoned bool
}

func (n *node) len() int { return len(n.state) }

// Decoder turns JSON objects into Arrow record batches. It is not safe for
// concurrent use; use one per goroutine.
type Decoder struct {
	mem    memory.Allocator
	parser fastjson.Parser
	root   *node
	rows   int
	stamp  uint64

	// the NullsColumn: one list of paths per row
	nullsOn    bool
	nullsState []byte
	nullsOffs  []int32
	pathOffs   []int32 // paths of all rows, one string each
	pathData   []byte

	chain   []*node
	norm    []byte
	scratch []byte
	err     error

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
	d.norm, d.scratch, d.chain = nil, nil, nil
	d.schema = nil
	d.version++
}

// Append parses line, one JSON object (a trailing "\n" or "\r\n" and a
// leading UTF-8 byte order mark are ignored), and buffers it as a row.
//
// An empty or whitespace-only line returns ErrEmptyLine. A line that is not a
// JSON object returns an error saying why ("invalid JSON at offset 17: ...",
// "expected a JSON object, got array"). In both cases no row is appended and
// the decoder stays usable.
func (d *Decoder) Append(line []byte) error {
	line = trimLine(line)
	if isBlank(line) {
		return ErrEmptyLine
	}
	src := line
	if bytes.IndexByte(line, '\\') >= 0 || !utf8.Valid(line) {
		var err error
		if d.norm, err = normalize(d.norm[:0], line); err != nil {
			return describe(line, err)
		}
		src = d.norm
	}
	v, err := d.parser.ParseBytes(src)
	if err != nil {
		return describe(line, err)
	}
	if v.Type() != fastjson.TypeObject {
		return fmt.Errorf("expected a JSON object, got %s", typeName(v))
	}
	o, _ := v.Object()
	pathMark := len(d.pathOffs)
	d.err = nil
	if err := d.appendObject(d.root, o); err != nil {
		d.rollback(pathMark)
		if ne := (*numberError)(nil); errors.As(err, &ne) && !ne.outOfRange {
			return describe(line, err)
		}
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

// rollback removes a partly appended row.
func (d *Decoder) rollback(pathMark int) {
	truncate(d.root, d.rows)
	d.pathOffs = d.pathOffs[:pathMark]
	d.pathData = d.pathData[:d.pathOffs[pathMark-1]]
	for _, c := range d.root.children {
		c.cur = nil
		c.poisoned = false
	}
}

func typeName(v *fastjson.Value) string {
	switch v.Type() {
	case fastjson.TypeTrue, fastjson.TypeFalse:
		return "boolean"
	default:
		return v.Type().String()
	}
}

var bom = []byte("\xef\xbb\xbf")

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
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// describe turns a parse failure into an error with the offset of the first
// syntax error, as encoding/json finds it.
func describe(line []byte, cause error) error {
	var raw json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("invalid JSON at offset %d: %s", se.Offset, se.Error())
		}
	}
	return fmt.Errorf("invalid JSON: %v", cause)
}

// appendObject appends one object as an entry of struct node n.
//
// First every key is matched to its child node, which remembers the value
// (so for a duplicate key the last value wins); then every child appends its
// value, or a null when the key was absent.
func (d *Decoder) appendObject(n *node, o *fastjson.Object) error {
	d.stamp++
	st := d.stamp
	next := 0
	o.Visit(func(key []byte, v *fastjson.Value) {
		var c *node
		if next < len(n.children) && n.children[next].name == string(key) {
			c = n.children[next]
		} else if c = n.index[string(key)]; c == nil {
			if n == d.root && strings.HasPrefix(string(key), sdk.ReservedPrefix) {
				if d.err == nil {
					d.err = fmt.Errorf("key %q uses the prefix %q, which is reserved for the engine's columns", key, sdk.ReservedPrefix)
				}
				return
			}
			c = d.newChild(n, string(key))
		}
		next = c.pos + 1
		c.stamp = st
		c.cur = v
	})
	if d.err != nil {
		return d.err
	}
	for _, c := range n.children {
		if c.stamp != st {
			c.appendNull(stAbsent)
			continue
		}
		v := c.cur
		c.cur = nil
		if err := d.appendValue(c, v); err != nil {
			return err
		}
		if c.poisoned {
			// A conflict below c that c cannot hold: c becomes raw JSON.
			c.poisoned = false
			truncate(c, c.len()-1)
			d.toRaw(c)
			if err := d.appendRaw(c, v); err != nil {
				return err
			}
		}
	}
	n.state = append(n.state, stValid)
	return nil
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

func (d *Decoder) appendList(n *node, arr []*fastjson.Value) error {
	e := n.elem
	for i, v := range arr {
		n.curIdx = i
		if err := d.appendValue(e, v); err != nil {
			return err
		}
	}
	end := e.len()
	if end > math.MaxInt32 {
		return errTooBig
	}
	n.offs = append(n.offs, int32(end))
	n.state = append(n.state, stValid)
	return nil
}

var errTooBig = errors.New("arrowjson: batch too large for 32-bit offsets; Flush more often")

// appendValue appends v as the next entry of n.
func (d *Decoder) appendValue(n *node, v *fastjson.Value) error {
	switch v.Type() {
	case fastjson.TypeString:
		switch n.kind {
		case kString:
		case kNull:
			d.become(n, kString)
		case kRaw:
			return d.appendRaw(n, v)
		default:
			d.conflict(n)
			return nil
		}
		s, _ := v.StringBytes()
		if len(n.data)+len(s) > math.MaxInt32 {
			return errTooBig
		}
		n.data = append(n.data, s...)
		n.offs = append(n.offs, int32(len(n.data)))
		n.state = append(n.state, stValid)
	case fastjson.TypeNumber:
		d.scratch = v.MarshalTo(d.scratch[:0])
		i, f, isInt, err := parseNumber(d.scratch)
		if err != nil {
			return err
		}
		switch n.kind {
		case kInt:
			if !isInt {
				d.widen(n)
				n.floats = append(n.floats, f)
			} else {
				n.ints = append(n.ints, i)
			}
		case kFloat:
			if isInt {
				f = float64(i)
			}
			n.floats = append(n.floats, f)
		case kNull:
			if isInt {
				d.become(n, kInt)
				n.ints = append(n.ints, i)
			} else {
				d.become(n, kFloat)
				n.floats = append(n.floats, f)
			}
		case kRaw:
			return d.appendRaw(n, v)
		default:
			d.conflict(n)
			return nil
		}
		n.state = append(n.state, stValid)
	case fastjson.TypeObject:
		switch n.kind {
		case kStruct:
		case kNull:
			d.become(n, kStruct)
		case kRaw:
			return d.appendRaw(n, v)
		default:
			d.conflict(n)
			return nil
		}
		o, _ := v.Object()
		return d.appendObject(n, o)
	case fastjson.TypeArray:
		switch n.kind {
		case kList:
		case kNull:
			d.become(n, kList)
		case kRaw:
			return d.appendRaw(n, v)
		default:
			d.conflict(n)
			return nil
		}
		arr, _ := v.Array()
		return d.appendList(n, arr)
	case fastjson.TypeTrue, fastjson.TypeFalse:
		switch n.kind {
		case kBool:
		case kNull:
			d.become(n, kBool)
		case kRaw:
			return d.appendRaw(n, v)
		default:
			d.conflict(n)
			return nil
		}
		b := byte(0)
		if v.Type() == fastjson.TypeTrue {
			b = 1
		}
		n.bools = append(n.bools, b)
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

// appendRaw appends v's JSON text to raw node n.
func (d *Decoder) appendRaw(n *node, v *fastjson.Value) error {
	l := len(n.data)
	var err error
	if n.data, err = appendFastJSON(n.data, v); err != nil {
		n.data = n.data[:l]
		return err
	}
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
			c.cur = nil
			c.poisoned = false
		}
	}
}

// recordNull lists the path of field n, which holds an explicit null in the
// current row, in the row's nulls.
func (d *Decoder) recordNull(n *node) {
	d.chain = d.chain[:0]
	for c := n; c.parent != nil; c = c.parent {
		d.chain = append(d.chain, c)
	}
	first := true
	for i := len(d.chain) - 1; i >= 0; i-- {
		c := d.chain[i]
		if c.isField {
			if !first {
				d.pathData = append(d.pathData, '.')
			}
			d.pathData = append(d.pathData, c.seg...)
		} else {
			d.pathData = append(d.pathData, '[')
			d.pathData = strconv.AppendInt(d.pathData, int64(c.parent.curIdx), 10)
			d.pathData = append(d.pathData, ']')
		}
		first = false
	}
	d.pathOffs = append(d.pathOffs, int32(len(d.pathData)))
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

// parseNumber parses a JSON number literal. It reports whether the literal
// is an integer that fits int64 (returned in i); otherwise f holds it.
func parseNumber(s []byte) (i int64, f float64, isInt bool, err error) {
	n := len(s)
	p := 0
	neg := false
	if p < n && s[p] == '-' {
		neg = true
		p++
	}
	start := p
	switch {
	case p < n && s[p] == '0':
		p++
	case p < n && s[p] >= '1' && s[p] <= '9':
		for p < n && s[p] >= '0' && s[p] <= '9' {
			p++
		}
	default:
		return 0, 0, false, badNumber(s)
	}
	intEnd := p
	integer := true
	if p < n && s[p] == '.' {
		p++
		ds := p
		for p < n && s[p] >= '0' && s[p] <= '9' {
			p++
		}
		if p == ds {
			return 0, 0, false, badNumber(s)
		}
		integer = false
	}
	if p < n && (s[p] == 'e' || s[p] == 'E') {
		p++
		if p < n && (s[p] == '+' || s[p] == '-') {
			p++
		}
		ds := p
		for p < n && s[p] >= '0' && s[p] <= '9' {
			p++
		}
		if p == ds {
			return 0, 0, false, badNumber(s)
		}
		integer = false
	}
	if p != n {
		return 0, 0, false, badNumber(s)
	}
	str := unsafe.String(&s[0], n)
	if integer {
		if intEnd-start <= 18 {
			var v int64
			for _, c := range s[start:intEnd] {
				v = v*10 + int64(c-'0')
			}
			if neg {
				v = -v
			}
			return v, 0, true, nil
		}
		if v, err := strconv.ParseInt(str, 10, 64); err == nil {
			return v, 0, true, nil
		}
	}
	f, err = strconv.ParseFloat(str, 64)
	if err != nil {
		if math.IsInf(f, 0) {
			return 0, 0, false, &numberError{text: string(s), outOfRange: true}
		}
		return 0, 0, false, badNumber(s)
	}
	return 0, f, false, nil
}

// numberError is a number literal the decoder rejects.
type numberError struct {
	text       string
	outOfRange bool
}

func (e *numberError) Error() string {
	if e.outOfRange {
		return fmt.Sprintf("number %s is out of the float64 range", e.text)
	}
	return fmt.Sprintf("invalid JSON: invalid number literal %q", e.text)
}

func badNumber(s []byte) error { return &numberError{text: string(s)} }
