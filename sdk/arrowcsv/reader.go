// Package arrowcsv reads CSV into Arrow record batches and writes record
// batches as CSV.
//
// The Reader infers column types from the data and turns dotted headers
// such as "classifications.churn_risk.label" into nested structs; the Writer
// does the reverse, flattening structs into dotted column names, so a CSV
// written by the Writer reads back into the same nested shape.
package arrowcsv

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// DefaultBatchRows is the batch size Next uses when maxRows <= 0.
const DefaultBatchRows = 1024

// ReaderOptions configures a Reader.
type ReaderOptions struct {
	// Allocator allocates the batches' buffers; nil means
	// memory.DefaultAllocator.
	Allocator memory.Allocator
	// Comma is the field delimiter; 0 means ','.
	Comma rune
}

// RecordError is a CSV record that could not be read. Next returns it
// without consuming the rows read before it; the Reader stays usable, so a
// caller that skips bad records calls Next again and gets the following
// rows. Line is the 1-based line where the record starts (the header is
// line 1).
type RecordError struct {
	Line int
	Err  error
}

func (e *RecordError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *RecordError) Unwrap() error { return e.Err }

type fieldCountError struct{ want, got int }

func (e *fieldCountError) Error() string {
	return fmt.Sprintf("expected %d fields, got %d", e.want, e.got)
}
func (e *fieldCountError) Unwrap() error { return csv.ErrFieldCount }

// kind is a column's inferred type. Kinds only widen: unknown to anything;
// int to float; numbers and booleans to JSON when mixed with other JSON
// values; anything else that disagrees to text.
type kind uint8

const (
	kUnknown kind = iota // only empty values so far
	kBool
	kInt
	kFloat
	kJSON // JSON arrays and objects: a raw JSON column
	kText
)

// Reader reads CSV records into record batches. Empty fields are null.
//
// Column types are inferred from the first batch: int64 when every
// non-empty value is an integer (written without leading zeros or '+', and
// in the int64 range; other integers are kept as text so that ids such as
// "007" survive), float64 when every value is a number (NaN, Inf and -Inf
// count), bool for true/false (any case), a raw JSON column (see
// arrowjson.IsRaw) when every value is JSON text and some are arrays,
// objects, quoted strings or null (as the Writer writes lists, maps and raw
// JSON columns), else utf8. A
// later batch with a value that does not fit widens the column (int to float
// to utf8) from that batch on. A column that has only had empty values is of
// type null.
//
// Headers with dots become nested structs: "a.b" and "a.c" make a column
// "a" of type struct<b, c>. A struct is null in a row where all its fields
// are. When the headers under one first segment conflict ("a" and "a.b",
// a repeated name, an empty segment), those columns keep their flat names.
type Reader struct {
	mem    memory.Allocator
	cr     *csv.Reader
	base   int64 // bytes before what cr reads (a byte order mark)
	header []string
	fields []*field // top-level output fields
	leaves []*field // by CSV column

	kinds  []kind
	vals   [][]string // this batch's values, by column
	n      int        // rows in this batch
	lines  []int64    // the line where each buffered row starts
	last   []int64    // lines of the rows of the batch Next returned last
	line   int
	offset int64
	err    error // sticky I/O error
	eof    bool

	schema *arrow.Schema
}

// field is an output field: a leaf (one CSV column) or a struct.
type field struct {
	name     string
	col      int // leaf: CSV column
	children []*field
}

// NewReader reads the header line from r. Reading a header that is empty,
// malformed or uses the engine's reserved column prefix fails with an error
// naming line 1.
func NewReader(r io.Reader, opts ReaderOptions) (*Reader, error) {
	mem := opts.Allocator
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	br := bufio.NewReader(r)
	var base int64
	if b, _ := br.Peek(3); bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		_, _ = br.Discard(3)
		base = 3
	}
	cr := csv.NewReader(br)
	if opts.Comma != 0 {
		cr.Comma = opts.Comma
	}
	header, err := cr.Read()
	switch {
	case err == io.EOF:
		return nil, errors.New("line 1: empty input, expected a header line")
	case err != nil:
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("line %d: invalid header: %v", pe.StartLine, pe.Err)
		}
		return nil, fmt.Errorf("line 1: reading the header: %w", err)
	}
	for _, h := range header {
		if sdk.IsReserved(h) {
			return nil, fmt.Errorf("line 1: column %q uses the prefix %q, which is reserved for the engine's columns", h, sdk.ReservedPrefix)
		}
	}
	rd := &Reader{
		mem:    mem,
		cr:     cr,
		base:   base,
		header: header,
		kinds:  make([]kind, len(header)),
		vals:   make([][]string, len(header)),
		line:   1,
		offset: base + cr.InputOffset(),
	}
	rd.fields, rd.leaves = nest(header)
	rd.schema = rd.makeSchema()
	return rd, nil
}

// nest builds the output fields from the header.
func nest(header []string) (top, leaves []*field) {
	leaves = make([]*field, len(header))
	groups := map[string][]int{}
	var order []string
	for i, h := range header {
		g, _, _ := strings.Cut(h, ".")
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], i)
	}
	for _, g := range order {
		cols := groups[g]
		if root, ok := tryNest(header, cols, leaves); ok {
			top = append(top, root)
			continue
		}
		for _, c := range cols {
			leaves[c] = &field{name: header[c], col: c}
			top = append(top, leaves[c])
		}
	}
	return top, leaves
}

// tryNest builds the tree of one group of columns sharing a first segment,
// or reports a conflict.
func tryNest(header []string, cols []int, leaves []*field) (*field, bool) {
	if len(cols) == 1 && !strings.Contains(header[cols[0]], ".") {
		leaves[cols[0]] = &field{name: header[cols[0]], col: cols[0]}
		return leaves[cols[0]], true
	}
	root := &field{col: -1}
	found := map[*field]bool{} // nodes that are leaves
	for _, c := range cols {
		segs := strings.Split(header[c], ".")
		n := root
		for k, s := range segs {
			if s == "" || found[n] {
				return nil, false
			}
			var child *field
			for _, ch := range n.children {
				if ch.name == s {
					child = ch
				}
			}
			last := k == len(segs)-1
			switch {
			case child == nil:
				child = &field{name: s, col: -1}
				n.children = append(n.children, child)
			case last: // the path exists already, as a leaf or a struct
				return nil, false
			}
			n = child
		}
		n.col = c
		found[n] = true
		leaves[c] = n
	}
	return root.children[0], true
}

// Line is the line number where the last record read starts (the header is
// line 1). After a RecordError it is that record's line.
func (r *Reader) Line() int { return r.line }

// Offset is the byte offset just after the last record read, good or bad.
func (r *Reader) Offset() int64 { return r.offset }

// Header returns the column names of the header line.
func (r *Reader) Header() []string { return r.header }

// Schema is the schema of the last batch returned. Before the first, it has
// the header's columns (nested as described above), all of type null.
func (r *Reader) Schema() *arrow.Schema { return r.schema }

// Next reads up to maxRows records (DefaultBatchRows when maxRows <= 0) and
// returns them as a batch, which the caller must Release. At the end of the
// input it returns (nil, io.EOF).
//
// A record that cannot be read (wrong number of fields, bad quoting)
// returns (nil, *RecordError) naming its line; the rows read before it stay
// buffered and come with the next batch, so calling Next again skips the bad
// record. Other errors (from the underlying reader) are returned on every
// later call.
func (r *Reader) Next(maxRows int) (arrow.RecordBatch, error) {
	if maxRows <= 0 {
		maxRows = DefaultBatchRows
	}
	for r.n < maxRows && !r.eof && r.err == nil {
		rec, err := r.cr.Read()
		if err == io.EOF {
			r.eof = true
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				r.err = fmt.Errorf("line %d: %w", r.line+1, err)
				break
			}
			r.line = pe.StartLine
			r.offset = r.base + r.cr.InputOffset()
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				return nil, &RecordError{Line: pe.StartLine, Err: &fieldCountError{want: len(r.header), got: len(rec)}}
			}
			if pe.Line != pe.StartLine {
				return nil, &RecordError{Line: pe.StartLine, Err: fmt.Errorf("%w (line %d, column %d)", pe.Err, pe.Line, pe.Column)}
			}
			return nil, &RecordError{Line: pe.StartLine, Err: fmt.Errorf("%w (column %d)", pe.Err, pe.Column)}
		}
		r.line, _ = r.cr.FieldPos(0)
		r.offset = r.base + r.cr.InputOffset()
		r.lines = append(r.lines, int64(r.line))
		for c, v := range rec {
			r.vals[c] = append(r.vals[c], v)
		}
		r.n++
	}
	if r.n == 0 {
		if r.err != nil {
			return nil, r.err
		}
		return nil, io.EOF
	}
	return r.build(), nil
}

// build turns the buffered values into a batch.
func (r *Reader) build() arrow.RecordBatch {
	changed := false
	for c, vs := range r.vals {
		k := r.kinds[c]
		for _, v := range vs {
			switch {
			case v == "" || fits(k, v):
			case k == kJSON: // v is not JSON
				k = kText
			default:
				k = widen(k, classify(v))
			}
		}
		if k == kJSON && k != r.kinds[c] {
			// values judged as numbers or booleans before the column
			// became JSON may not be JSON ("TRUE", "NaN")
			for _, v := range vs {
				if v != "" && !isJSON(v) {
					k = kText
					break
				}
			}
		}
		if k != r.kinds[c] {
			r.kinds[c] = k
			changed = true
		}
	}
	if changed {
		r.schema = r.makeSchema()
	}
	cols := make([]arrow.Array, len(r.fields))
	for i, f := range r.fields {
		cols[i] = r.buildField(f, r.schema.Field(i).Type)
	}
	rec := array.NewRecordBatch(r.schema, cols, int64(r.n))
	for _, c := range cols {
		c.Release()
	}
	for c := range r.vals {
		clear(r.vals[c])
		r.vals[c] = r.vals[c][:0]
	}
	r.n = 0
	r.last, r.lines = r.lines, r.last[:0]
	return rec
}

// Lines returns the 1-based line where each row of the batch Next returned
// last starts (the header is line 1). The slice is reused by the next call.
func (r *Reader) Lines() []int64 { return r.last }

func (r *Reader) makeSchema() *arrow.Schema {
	fields := make([]arrow.Field, len(r.fields))
	for i, f := range r.fields {
		fields[i] = r.arrowField(f)
	}
	return arrow.NewSchema(fields, nil)
}

var rawMetadata = arrow.NewMetadata([]string{arrowjson.MetadataKey}, []string{arrowjson.MetadataRaw})

func (r *Reader) arrowField(f *field) arrow.Field {
	af := arrow.Field{Name: f.name, Nullable: true}
	if f.children != nil {
		cf := make([]arrow.Field, len(f.children))
		for i, c := range f.children {
			cf[i] = r.arrowField(c)
		}
		af.Type = arrow.StructOf(cf...)
		return af
	}
	switch r.kinds[f.col] {
	case kUnknown:
		af.Type = arrow.Null
	case kBool:
		af.Type = arrow.FixedWidthTypes.Boolean
	case kInt:
		af.Type = arrow.PrimitiveTypes.Int64
	case kFloat:
		af.Type = arrow.PrimitiveTypes.Float64
	case kJSON:
		af.Type = arrow.BinaryTypes.String
		af.Metadata = rawMetadata
	default:
		af.Type = arrow.BinaryTypes.String
	}
	return af
}

// buildField builds the array of one output field.
func (r *Reader) buildField(f *field, dt arrow.DataType) arrow.Array {
	if f.children == nil {
		return r.buildLeaf(r.vals[f.col], r.kinds[f.col])
	}
	st := dt.(*arrow.StructType)
	children := make([]arrow.Array, len(f.children))
	for i, c := range f.children {
		children[i] = r.buildField(c, st.Field(i).Type)
	}
	// a struct row is valid when any of its fields is
	valid := memory.NewResizableBuffer(r.mem)
	valid.Resize(int(bitutil.BytesForBits(int64(r.n))))
	bits := valid.Bytes()
	clear(bits)
	nulls := 0
	for i := 0; i < r.n; i++ {
		for _, c := range children {
			if c.IsValid(i) && c.DataType().ID() != arrow.NULL {
				bitutil.SetBit(bits, i)
				break
			}
		}
		if !bitutil.BitIsSet(bits, i) {
			nulls++
		}
	}
	childData := make([]arrow.ArrayData, len(children))
	for i, c := range children {
		childData[i] = c.Data()
	}
	data := array.NewData(dt, r.n, []*memory.Buffer{valid}, childData, nulls, 0)
	arr := array.MakeFromData(data)
	data.Release()
	valid.Release()
	for _, c := range children {
		c.Release()
	}
	return arr
}

func (r *Reader) buildLeaf(vs []string, k kind) arrow.Array {
	switch k {
	case kUnknown:
		return array.NewNull(len(vs))
	case kBool:
		b := array.NewBooleanBuilder(r.mem)
		defer b.Release()
		b.Reserve(len(vs))
		for _, v := range vs {
			if v == "" {
				b.AppendNull()
			} else {
				b.UnsafeAppend(strings.EqualFold(v, "true"))
			}
		}
		return b.NewArray()
	case kInt:
		b := array.NewInt64Builder(r.mem)
		defer b.Release()
		b.Reserve(len(vs))
		for _, v := range vs {
			if v == "" {
				b.AppendNull()
			} else {
				n, _ := strconv.ParseInt(v, 10, 64)
				b.UnsafeAppend(n)
			}
		}
		return b.NewArray()
	case kFloat:
		b := array.NewFloat64Builder(r.mem)
		defer b.Release()
		b.Reserve(len(vs))
		for _, v := range vs {
			if v == "" {
				b.AppendNull()
			} else {
				b.UnsafeAppend(parseFloat(v))
			}
		}
		return b.NewArray()
	default:
		b := array.NewStringBuilder(r.mem)
		defer b.Release()
		b.Reserve(len(vs))
		size := 0
		for _, v := range vs {
			size += len(v)
		}
		b.ReserveData(size)
		for _, v := range vs {
			if v == "" {
				b.AppendNull()
			} else {
				b.Append(v)
			}
		}
		return b.NewArray()
	}
}

// fits reports whether the non-empty value v can be held by a column of
// kind k.
func fits(k kind, v string) bool {
	switch k {
	case kBool:
		return isBool(v)
	case kInt:
		return isInt(v)
	case kFloat:
		return isInt(v) || isFloat(v)
	case kJSON:
		return isJSON(v)
	case kText:
		return true
	default:
		return false
	}
}

// classify returns the narrowest kind that holds the non-empty value v.
func classify(v string) kind {
	switch {
	case isInt(v):
		return kInt
	case isFloat(v):
		return kFloat
	case isBool(v):
		return kBool
	case (v[0] == '[' || v[0] == '{' || v[0] == '"' || v == "null") && isJSON(v):
		return kJSON
	default:
		return kText
	}
}

func widen(a, b kind) kind {
	switch {
	case a == b:
		return a
	case a == kUnknown:
		return b
	case b == kUnknown:
		return a
	case a == kInt && b == kFloat || a == kFloat && b == kInt:
		return kFloat
	case a == kJSON && b <= kFloat || b == kJSON && a <= kFloat:
		return kJSON
	default:
		return kText
	}
}

func isBool(v string) bool {
	return strings.EqualFold(v, "true") || strings.EqualFold(v, "false")
}

// isInt accepts integers written as JSON does (no '+', no leading zeros)
// that fit int64.
func isInt(v string) bool {
	d := v
	if strings.HasPrefix(d, "-") {
		d = d[1:]
	}
	if d == "" || len(d) > 19 || d[0] == '0' && len(d) > 1 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	_, err := strconv.ParseInt(v, 10, 64)
	return err == nil
}

// isFloat accepts a JSON number with a fraction or an exponent in the
// float64 range, and NaN, Inf and -Inf, which is how the Writer writes those.
func isFloat(v string) bool {
	switch v {
	case "NaN", "Inf", "-Inf", "+Inf":
		return true
	}
	i := 0
	if i < len(v) && v[i] == '-' {
		i++
	}
	digits := func() int {
		s := i
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		return i - s
	}
	if n := digits(); n == 0 || n > 1 && v[i-n] == '0' {
		return false
	}
	frac := false
	if i < len(v) && v[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
		frac = true
	}
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
		frac = true
	}
	if i != len(v) || !frac {
		return false
	}
	f, err := strconv.ParseFloat(v, 64)
	return err == nil || !math.IsInf(f, 0)
}

func parseFloat(v string) float64 {
	switch v {
	case "NaN":
		return math.NaN()
	case "Inf", "+Inf":
		return math.Inf(1)
	case "-Inf":
		return math.Inf(-1)
	}
	f, _ := strconv.ParseFloat(v, 64)
	return f
}

// isJSON accepts a JSON text without surrounding white space. Plain
// numbers and true/false are JSON too, but a column only becomes JSON when
// some value in it is an array, an object, a quoted string or null.
func isJSON(v string) bool {
	return v != "" && !isSpace(v[0]) && !isSpace(v[len(v)-1]) && json.Valid([]byte(v))
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
