package arrowcsv

import (
	"bufio"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Writer writes record batches as CSV with a header line.
//
// Struct columns are flattened into dotted column names
// ("classifications.churn_risk.label"); lists, maps, raw JSON columns and
// other nested values are written as JSON text; nulls are empty fields;
// reserved columns (sdk.ReservedPrefix) are left out. Floats are written in
// their shortest exact form, with ".0" on integral values so that they read
// back as floats; NaN and infinities as NaN, Inf and -Inf; timestamps in
// RFC 3339; binary as base64.
//
// A field whose own name contains a dot reads back as a nested struct.
//
// The header is the first batch's columns, unless the Writer was made with
// NewWriterWithColumns. A header cannot change once written: a later batch
// with a column that is not in it makes Write fail with a *ColumnsError,
// and write nothing of that batch, unless DropUnlisted was called. Header
// columns a batch lacks are left empty. A header column that names a struct
// (not one of its fields) holds the struct as JSON text.
type Writer struct {
	bw           *bufio.Writer
	cw           *csv.Writer
	enc          *arrowjson.Encoder
	columns      []string
	index        map[string][]int // positions of each name (names may repeat)
	header       bool             // header written
	dropUnlisted bool

	plan       []leaf // for planSchema
	planSchema *arrow.Schema
	row        []string
	buf        []byte
}

// leaf is one CSV column of a batch: a top-level column or a field inside
// structs.
type leaf struct {
	name  string
	path  []int // column index, then struct field indexes
	field arrow.Field
	pos   int // position in the header
	// bound per batch
	outer []arrow.Array // enclosing structs
	arr   arrow.Array
}

// NewWriter returns a Writer whose header is taken from the first batch.
func NewWriter(w io.Writer) *Writer {
	bw := bufio.NewWriter(w)
	return &Writer{bw: bw, cw: csv.NewWriter(bw)}
}

// NewWriterWithColumns returns a Writer with a fixed header, for when the
// full column list is known up front (see Columns). Batches may then have
// any subset of these columns.
func NewWriterWithColumns(w io.Writer, columns []string) *Writer {
	wr := NewWriter(w)
	wr.setColumns(columns)
	return wr
}

// NewAppendWriter returns a Writer that continues a CSV file whose header,
// columns, is already written: it writes only rows, in those columns.
func NewAppendWriter(w io.Writer, columns []string) *Writer {
	wr := NewWriterWithColumns(w, columns)
	wr.header = true
	return wr
}

// DropUnlisted makes Write leave out the columns of a batch that are not in
// the header (see NewWriterWithColumns), instead of failing. It returns w.
func (w *Writer) DropUnlisted() *Writer {
	w.dropUnlisted = true
	return w
}

// A ColumnsError is what Write returns for a batch with columns the header
// lacks. Nothing of that batch was written.
type ColumnsError struct {
	Header []string // the header's columns
	New    []string // the batch's columns that are not in the header, in its order
}

func (e *ColumnsError) Error() string {
	what := "column " + quoteList(e.New) + " is"
	if len(e.New) > 1 {
		what = "columns " + quoteList(e.New) + " are"
	}
	return fmt.Sprintf("arrowcsv: %s not in the CSV header (%s)", what, strings.Join(e.Header, ", "))
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

func (w *Writer) setColumns(columns []string) {
	w.columns = append([]string(nil), columns...)
	w.index = make(map[string][]int, len(columns))
	for i, c := range columns {
		w.index[c] = append(w.index[c], i)
	}
	w.row = make([]string, len(columns))
}

// Columns returns the CSV column names the Writer makes of schema: structs
// flattened into dotted names, reserved columns left out.
func Columns(schema *arrow.Schema) []string {
	var out []string
	for _, l := range flatten(schema, nil) {
		out = append(out, l.name)
	}
	return out
}

// flatten lists schema's CSV columns. A struct whose name is in keep is
// also a column of its own (JSON text), besides its fields.
func flatten(schema *arrow.Schema, keep map[string][]int) []leaf {
	var out []leaf
	var walk func(prefix string, path []int, f arrow.Field)
	walk = func(prefix string, path []int, f arrow.Field) {
		name := prefix + f.Name
		if st, ok := f.Type.(*arrow.StructType); ok && !arrowjson.IsRaw(f) && st.NumFields() > 0 {
			if _, kept := keep[name]; kept {
				out = append(out, leaf{name: name, path: path, field: f})
			}
			for i, c := range st.Fields() {
				walk(name+".", append(path[:len(path):len(path)], i), c)
			}
			return
		}
		out = append(out, leaf{name: name, path: path, field: f})
	}
	for i, f := range schema.Fields() {
		if sdk.IsReserved(f.Name) {
			continue
		}
		walk("", []int{i}, f)
	}
	return out
}

// Write writes rec's rows (and, first, the header).
func (w *Writer) Write(rec arrow.RecordBatch) error {
	if rec.Schema() != w.planSchema {
		plan := flatten(rec.Schema(), w.index)
		if w.columns == nil {
			names := make([]string, len(plan))
			for i, l := range plan {
				names[i] = l.name
			}
			w.setColumns(names)
		}
		seen := map[string]int{}
		kept := plan[:0:0]
		var unknown []string
		for _, l := range plan {
			positions := w.index[l.name]
			if seen[l.name] >= len(positions) {
				if !w.dropUnlisted {
					unknown = append(unknown, l.name)
				}
				continue
			}
			l.pos = positions[seen[l.name]]
			seen[l.name]++
			kept = append(kept, l)
		}
		if unknown != nil {
			return &ColumnsError{Header: append([]string(nil), w.columns...), New: unknown}
		}
		w.plan, w.planSchema = kept, rec.Schema()
	}
	w.enc = arrowjson.NewEncoder() // a fresh one per batch: it keeps the arrays it saw
	if !w.header {
		if err := w.writeRecord(w.columns); err != nil {
			return err
		}
		w.header = true
	}
	for i := range w.plan {
		l := &w.plan[i]
		l.outer = l.outer[:0]
		a := rec.Column(l.path[0])
		for _, k := range l.path[1:] {
			l.outer = append(l.outer, a)
			a = a.(*array.Struct).Field(k)
		}
		l.arr = a
	}
	for r := 0; r < int(rec.NumRows()); r++ {
		clear(w.row)
		for i := range w.plan {
			l := &w.plan[i]
			w.row[l.pos] = w.cell(l, r)
		}
		if err := w.writeRecord(w.row); err != nil {
			return err
		}
	}
	return w.cw.Error()
}

// writeRecord writes one CSV record. encoding/csv writes a record of one
// empty field as an empty line, which readers skip; it is written as "" here.
func (w *Writer) writeRecord(rec []string) error {
	if len(rec) != 1 || rec[0] != "" {
		return w.cw.Write(rec)
	}
	w.cw.Flush()
	if err := w.cw.Error(); err != nil {
		return err
	}
	_, err := w.bw.WriteString("\"\"\n")
	return err
}

// cell formats row r of column l.
func (w *Writer) cell(l *leaf, r int) string {
	for _, o := range l.outer {
		if o.IsNull(r) {
			return ""
		}
	}
	a := l.arr
	if a.IsNull(r) || a.DataType().ID() == arrow.NULL {
		return ""
	}
	switch a := a.(type) {
	case *array.String:
		return a.Value(r)
	case *array.LargeString:
		return a.Value(r)
	case *array.StringView:
		return a.Value(r)
	case *array.Boolean:
		return strconv.FormatBool(a.Value(r))
	case *array.Int8:
		return strconv.FormatInt(int64(a.Value(r)), 10)
	case *array.Int16:
		return strconv.FormatInt(int64(a.Value(r)), 10)
	case *array.Int32:
		return strconv.FormatInt(int64(a.Value(r)), 10)
	case *array.Int64:
		return strconv.FormatInt(a.Value(r), 10)
	case *array.Uint8:
		return strconv.FormatUint(uint64(a.Value(r)), 10)
	case *array.Uint16:
		return strconv.FormatUint(uint64(a.Value(r)), 10)
	case *array.Uint32:
		return strconv.FormatUint(uint64(a.Value(r)), 10)
	case *array.Uint64:
		return strconv.FormatUint(a.Value(r), 10)
	case *array.Float32:
		return formatFloat(float64(a.Value(r)), 32)
	case *array.Float64:
		return formatFloat(a.Value(r), 64)
	case *array.Date32:
		return a.Value(r).ToTime().Format(time.DateOnly)
	case *array.Date64:
		return a.Value(r).ToTime().Format(time.DateOnly)
	case *array.Timestamp:
		t := a.DataType().(*arrow.TimestampType)
		loc, err := t.GetZone()
		if err != nil || loc == nil {
			loc = time.UTC
		}
		return a.Value(r).ToTime(t.Unit).In(loc).Format(time.RFC3339Nano)
	case *array.Binary:
		return base64.StdEncoding.EncodeToString(a.Value(r))
	case *array.LargeBinary:
		return base64.StdEncoding.EncodeToString(a.Value(r))
	}
	// nested and other types: JSON text, without the quotes of a JSON string
	w.buf = w.enc.AppendValue(w.buf[:0], l.field, a, r)
	if len(w.buf) > 0 && w.buf[0] == '"' && !arrowjson.IsRaw(l.field) {
		var s string
		if json.Unmarshal(w.buf, &s) == nil {
			return s
		}
	}
	return string(w.buf)
}

// formatFloat writes f in its shortest exact form, keeping a ".0" on
// integral values so that the column reads back as float.
func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	s := strconv.FormatFloat(f, format, -1, bits)
	if format == 'f' && !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// Flush writes buffered data to the underlying writer.
func (w *Writer) Flush() error {
	if !w.header && w.columns != nil {
		if err := w.writeRecord(w.columns); err != nil {
			return err
		}
		w.header = true
	}
	w.cw.Flush()
	if err := w.cw.Error(); err != nil {
		return err
	}
	return w.bw.Flush()
}
