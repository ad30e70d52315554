package arrowjson

import (
	"encoding/base64"
	"strconv"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/float16"

	"github.com/pipelinehq/pipeline/sdk"
)

// Encoder writes rows of record batches as JSON objects. It compiles a
// writer for a batch's schema and keeps it while batches with an equal schema
// follow; a batch with another schema gets a new one, so batches may change
// schema freely. An Encoder is not safe for concurrent use.
type Encoder struct {
	plan   *recordPlan
	values map[valueKey]writer // for AppendValue

	// the batch the plan is bound to
	recSchema *arrow.Schema
	recCols   *arrow.Array
	recLen    int
	recRows   int64

	// the current row's explicit-null paths
	hasNulls  bool
	nullStart int
	nullEnd   int
	path      []byte
	nest      int // path segments pushed
}

// NewEncoder returns an Encoder.
func NewEncoder() *Encoder {
	return &Encoder{}
}

type recordPlan struct {
	schema *arrow.Schema
	fields []fieldPlan
	nulls  int // index of sdk.NullsColumn, or -1

	nullList array.ListLike
	nullVals interface{ Value(int) string }
}

type fieldPlan struct {
	key    []byte // "name":
	seg    []byte // name as a null-path segment
	col    int    // column or struct field index
	always bool   // type null: every value is null
	w      writer
	arr    arrow.Array
}

// writer writes the non-null value i of the array it is bound to.
type writer interface {
	bind(a arrow.Array) bool
	write(e *Encoder, dst []byte, i int) []byte
}

// AppendRow appends row of rec to dst as one compact JSON object (no
// newline) and returns the extended buffer. Null fields are left out unless
// the row's sdk.NullsColumn lists their path, in which case they are written
// as null; reserved columns are not written; raw JSON columns are written
// verbatim. row must be in [0, rec.NumRows()).
func (e *Encoder) AppendRow(dst []byte, rec arrow.RecordBatch, row int) []byte {
	cols := rec.Columns()
	if len(cols) == 0 || rec.Schema() != e.recSchema || unsafe.SliceData(cols) != e.recCols ||
		len(cols) != e.recLen || rec.NumRows() != e.recRows {
		e.use(rec)
	}
	p := e.plan
	e.hasNulls = false
	if p.nullList != nil && p.nullList.IsValid(row) {
		s, end := p.nullList.ValueOffsets(row)
		if s < end {
			e.hasNulls = true
			e.nullStart, e.nullEnd = int(s), int(end)
			e.path, e.nest = e.path[:0], 0
		}
	}
	return e.writeFields(dst, p.fields, row)
}

// AppendValue appends value i of arr, a column described by f, to dst as
// JSON text: "null" when the value is null, raw JSON columns (see IsRaw)
// verbatim, nested values in full. It serves writers that put one value per
// cell, such as CSV. The Encoder keeps a writer for each of the last few
// arrays it was given (and so keeps them alive); an Encoder per batch
// avoids holding on to old ones.
func (e *Encoder) AppendValue(dst []byte, f arrow.Field, arr arrow.Array, i int) []byte {
	if arr.IsNull(i) || arr.DataType().ID() == arrow.NULL {
		return append(dst, "null"...)
	}
	key := valueKey{arr, IsRaw(f)}
	w := e.values[key]
	if w == nil {
		if len(e.values) >= 32 {
			clear(e.values)
		}
		if e.values == nil {
			e.values = map[valueKey]writer{}
		}
		w = newWriter(f)
		bindWriter(&w, arr)
		e.values[key] = w
	}
	hasNulls := e.hasNulls
	e.hasNulls = false
	dst = w.write(e, dst, i)
	e.hasNulls = hasNulls
	return dst
}

type valueKey struct {
	arr arrow.Array
	raw bool
}

// use binds the plan for rec's schema to rec's columns. The plan of the
// previous schema is reused when the schema is equal, else rebuilt; only the
// last plan is kept, so only the last batch is referenced.
func (e *Encoder) use(rec arrow.RecordBatch) {
	schema := rec.Schema()
	if e.plan == nil || (e.plan.schema != schema && !e.plan.schema.Equal(schema)) {
		e.plan = newRecordPlan(schema)
	}
	e.plan.schema = schema
	p := e.plan
	cols := rec.Columns()
	for k := range p.fields {
		f := &p.fields[k]
		f.arr = cols[f.col]
		bindWriter(&f.w, f.arr)
	}
	p.nullList, p.nullVals = nil, nil
	if p.nulls >= 0 {
		if l, ok := cols[p.nulls].(array.ListLike); ok {
			if v, ok := l.ListValues().(interface{ Value(int) string }); ok {
				p.nullList, p.nullVals = l, v
			}
		}
	}
	e.recSchema, e.recCols, e.recLen, e.recRows = schema, unsafe.SliceData(cols), len(cols), rec.NumRows()
}

func newRecordPlan(schema *arrow.Schema) *recordPlan {
	p := &recordPlan{schema: schema, nulls: -1}
	for i, f := range schema.Fields() {
		if sdk.IsReserved(f.Name) {
			if f.Name == sdk.NullsColumn && p.nulls < 0 {
				p.nulls = i
			}
			continue
		}
		p.fields = append(p.fields, newFieldPlan(f, i))
	}
	return p
}

func newFieldPlan(f arrow.Field, col int) fieldPlan {
	key := AppendString(nil, f.Name)
	key = append(key, ':')
	return fieldPlan{
		key:    key,
		seg:    []byte(escapeSegment(f.Name)),
		col:    col,
		always: f.Type.ID() == arrow.NULL,
		w:      newWriter(f),
	}
}

// bindWriter binds *w to a, replacing it with the String() fallback when a
// is not the array type the writer expects.
func bindWriter(w *writer, a arrow.Array) {
	if !(*w).bind(a) {
		*w = &fallbackWriter{}
		(*w).bind(a)
	}
}

// writeFields writes an object with the given fields of row i.
func (e *Encoder) writeFields(dst []byte, fields []fieldPlan, i int) []byte {
	dst = append(dst, '{')
	first := true
	for k := range fields {
		f := &fields[k]
		if f.always || f.arr.IsNull(i) {
			if !e.hasNulls || !e.listed(f.seg) {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, f.key...)
			dst = append(dst, "null"...)
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, f.key...)
		if e.hasNulls {
			mark := e.push(f.seg)
			dst = f.w.write(e, dst, i)
			e.pop(mark)
		} else {
			dst = f.w.write(e, dst, i)
		}
	}
	return append(dst, '}')
}

// push appends a key segment to the current path and returns the length to
// cut back to.
func (e *Encoder) push(seg []byte) int {
	mark := len(e.path)
	if e.nest > 0 {
		e.path = append(e.path, '.')
	}
	e.path = append(e.path, seg...)
	e.nest++
	return mark
}

// pushIndex appends an array index to the current path.
func (e *Encoder) pushIndex(i int64) int {
	mark := len(e.path)
	e.path = append(e.path, '[')
	e.path = strconv.AppendInt(e.path, i, 10)
	e.path = append(e.path, ']')
	e.nest++
	return mark
}

// pop undoes a push.
func (e *Encoder) pop(mark int) {
	e.path = e.path[:mark]
	e.nest--
}

// listed reports whether the current path plus seg is one of the row's
// explicit-null paths.
func (e *Encoder) listed(seg []byte) bool {
	mark := e.push(seg)
	p := b2s(e.path)
	found := false
	for j := e.nullStart; j < e.nullEnd; j++ {
		if e.plan.nullVals.Value(j) == p {
			found = true
			break
		}
	}
	e.pop(mark)
	return found
}

func newWriter(f arrow.Field) writer {
	if IsRaw(f) {
		return &rawWriter{}
	}
	return newTypeWriter(f.Type)
}

func newTypeWriter(dt arrow.DataType) writer {
	switch dt.ID() {
	case arrow.NULL:
		return nullWriter{}
	case arrow.BOOL:
		return &boolWriter{}
	case arrow.INT8:
		return &intWriter[int8]{}
	case arrow.INT16:
		return &intWriter[int16]{}
	case arrow.INT32:
		return &intWriter[int32]{}
	case arrow.INT64:
		return &int64Writer{}
	case arrow.UINT8:
		return &uintWriter[uint8]{}
	case arrow.UINT16:
		return &uintWriter[uint16]{}
	case arrow.UINT32:
		return &uintWriter[uint32]{}
	case arrow.UINT64:
		return &uintWriter[uint64]{}
	case arrow.FLOAT16:
		return &float16Writer{}
	case arrow.FLOAT32:
		return &float32Writer{}
	case arrow.FLOAT64:
		return &float64Writer{}
	case arrow.STRING:
		return &stringWriter{}
	case arrow.LARGE_STRING, arrow.STRING_VIEW:
		return &anyStringWriter{}
	case arrow.BINARY, arrow.LARGE_BINARY, arrow.BINARY_VIEW, arrow.FIXED_SIZE_BINARY:
		return &binaryWriter{}
	case arrow.DATE32:
		return &date32Writer{}
	case arrow.DATE64:
		return &date64Writer{}
	case arrow.TIMESTAMP:
		t := dt.(*arrow.TimestampType)
		loc, err := t.GetZone()
		if err != nil || loc == nil {
			loc = time.UTC
		}
		return &timestampWriter{unit: t.Unit, loc: loc}
	case arrow.LIST, arrow.LARGE_LIST, arrow.FIXED_SIZE_LIST, arrow.LIST_VIEW, arrow.LARGE_LIST_VIEW:
		return &listWriter{elem: newWriter(dt.(arrow.ListLikeType).ElemField())}
	case arrow.MAP:
		m := dt.(*arrow.MapType)
		return &mapWriter{key: newWriter(m.KeyField()), item: newWriter(m.ItemField())}
	case arrow.STRUCT:
		st := dt.(*arrow.StructType)
		w := &structWriter{}
		for i, f := range st.Fields() {
			w.fields = append(w.fields, newFieldPlan(f, i))
		}
		return w
	case arrow.DICTIONARY:
		return &dictWriter{values: newTypeWriter(dt.(*arrow.DictionaryType).ValueType)}
	default:
		return &fallbackWriter{}
	}
}

type nullWriter struct{}

func (nullWriter) bind(arrow.Array) bool { return true }
func (nullWriter) write(_ *Encoder, dst []byte, _ int) []byte {
	return append(dst, "null"...)
}

type boolWriter struct{ a *array.Boolean }

func (w *boolWriter) bind(a arrow.Array) (ok bool) { w.a, ok = a.(*array.Boolean); return }
func (w *boolWriter) write(_ *Encoder, dst []byte, i int) []byte {
	if w.a.Value(i) {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}

type valuer[T any] interface {
	arrow.Array
	Value(int) T
}

type intWriter[T int8 | int16 | int32] struct{ a valuer[T] }

func (w *intWriter[T]) bind(a arrow.Array) (ok bool) { w.a, ok = a.(valuer[T]); return }
func (w *intWriter[T]) write(_ *Encoder, dst []byte, i int) []byte {
	return strconv.AppendInt(dst, int64(w.a.Value(i)), 10)
}

type int64Writer struct{ a *array.Int64 }

func (w *int64Writer) bind(a arrow.Array) (ok bool) { w.a, ok = a.(*array.Int64); return }
func (w *int64Writer) write(_ *Encoder, dst []byte, i int) []byte {
	return strconv.AppendInt(dst, w.a.Value(i), 10)
}

type uintWriter[T uint8 | uint16 | uint32 | uint64] struct{ a valuer[T] }

func (w *uintWriter[T]) bind(a arrow.Array) (ok bool) { w.a, ok = a.(valuer[T]); return }
func (w *uintWriter[T]) write(_ *Encoder, dst []byte, i int) []byte {
	return strconv.AppendUint(dst, uint64(w.a.Value(i)), 10)
}

type float16Writer struct{ a valuer[float16.Num] }

func (w *float16Writer) bind(a arrow.Array) (ok bool) { w.a, ok = a.(valuer[float16.Num]); return }
func (w *float16Writer) write(_ *Encoder, dst []byte, i int) []byte {
	return appendFloat(dst, float64(w.a.Value(i).Float32()), 32)
}

type float32Writer struct{ a *array.Float32 }

func (w *float32Writer) bind(a arrow.Array) (ok bool) { w.a, ok = a.(*array.Float32); return }
func (w *float32Writer) write(_ *Encoder, dst []byte, i int) []byte {
	return appendFloat(dst, float64(w.a.Value(i)), 32)
}

type float64Writer struct{ a *array.Float64 }

func (w *float64Writer) bind(a arrow.Array) (ok bool) { w.a, ok = a.(*array.Float64); return }
func (w *float64Writer) write(_ *Encoder, dst []byte, i int) []byte {
	return appendFloat(dst, w.a.Value(i), 64)
}

type stringWriter struct{ a *array.String }

func (w *stringWriter) bind(a arrow.Array) (ok bool) { w.a, ok = a.(*array.String); return }
func (w *stringWriter) write(_ *Encoder, dst []byte, i int) []byte {
	return AppendString(dst, w.a.Value(i))
}

type anyStringWriter struct{ a valuer[string] }

func (w *anyStringWriter) bind(a arrow.Array) (ok bool) { w.a, ok = a.(valuer[string]); return }
func (w *anyStringWriter) write(_ *Encoder, dst []byte, i int) []byte {
	return AppendString(dst, w.a.Value(i))
}

// rawWriter writes a raw JSON column's text as it is.
type rawWriter struct{ a valuer[string] }

func (w *rawWriter) bind(a arrow.Array) (ok bool) { w.a, ok = a.(valuer[string]); return }
func (w *rawWriter) write(_ *Encoder, dst []byte, i int) []byte {
	v := w.a.Value(i)
	if v == "" {
		return append(dst, "null"...)
	}
	return append(dst, v...)
}

type binaryWriter struct{ a valuer[[]byte] }

func (w *binaryWriter) bind(a arrow.Array) (ok bool) { w.a, ok = a.(valuer[[]byte]); return }
func (w *binaryWriter) write(_ *Encoder, dst []byte, i int) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, w.a.Value(i))
	return append(dst, '"')
}

type date32Writer struct{ a *array.Date32 }

func (w *date32Writer) bind(a arrow.Array) (ok bool) { w.a, ok = a.(*array.Date32); return }
func (w *date32Writer) write(_ *Encoder, dst []byte, i int) []byte {
	dst = append(dst, '"')
	dst = w.a.Value(i).ToTime().AppendFormat(dst, time.DateOnly)
	return append(dst, '"')
}

type date64Writer struct{ a *array.Date64 }

func (w *date64Writer) bind(a arrow.Array) (ok bool) { w.a, ok = a.(*array.Date64); return }
func (w *date64Writer) write(_ *Encoder, dst []byte, i int) []byte {
	dst = append(dst, '"')
	dst = w.a.Value(i).ToTime().AppendFormat(dst, time.DateOnly)
	return append(dst, '"')
}

type timestampWriter struct {
	a    *array.Timestamp
	unit arrow.TimeUnit
	loc  *time.Location
}

func (w *timestampWriter) bind(a arrow.Array) (ok bool) { w.a, ok = a.(*array.Timestamp); return }
func (w *timestampWriter) write(_ *Encoder, dst []byte, i int) []byte {
	dst = append(dst, '"')
	dst = w.a.Value(i).ToTime(w.unit).In(w.loc).AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

type listWriter struct {
	a    array.ListLike
	vals arrow.Array
	elem writer
}

func (w *listWriter) bind(a arrow.Array) (ok bool) {
	if w.a, ok = a.(array.ListLike); ok {
		w.vals = w.a.ListValues()
		bindWriter(&w.elem, w.vals)
	}
	return
}

func (w *listWriter) write(e *Encoder, dst []byte, i int) []byte {
	start, end := w.a.ValueOffsets(i)
	dst = append(dst, '[')
	for j := start; j < end; j++ {
		if j > start {
			dst = append(dst, ',')
		}
		if w.vals.IsNull(int(j)) {
			dst = append(dst, "null"...)
			continue
		}
		if e.hasNulls {
			mark := e.pushIndex(j - start)
			dst = w.elem.write(e, dst, int(j))
			e.pop(mark)
		} else {
			dst = w.elem.write(e, dst, int(j))
		}
	}
	return append(dst, ']')
}

type structWriter struct{ fields []fieldPlan }

func (w *structWriter) bind(a arrow.Array) bool {
	s, ok := a.(*array.Struct)
	if !ok || s.NumField() != len(w.fields) {
		return false
	}
	for k := range w.fields {
		f := &w.fields[k]
		f.arr = s.Field(f.col)
		bindWriter(&f.w, f.arr)
	}
	return true
}

func (w *structWriter) write(e *Encoder, dst []byte, i int) []byte {
	return e.writeFields(dst, w.fields, i)
}

// mapWriter writes a map as an object; keys that are not strings are
// written as the text of their JSON value.
type mapWriter struct {
	a           *array.Map
	keys, items arrow.Array
	key, item   writer
}

func (w *mapWriter) bind(a arrow.Array) (ok bool) {
	if w.a, ok = a.(*array.Map); ok {
		w.keys, w.items = w.a.Keys(), w.a.Items()
		bindWriter(&w.key, w.keys)
		bindWriter(&w.item, w.items)
	}
	return
}

func (w *mapWriter) write(e *Encoder, dst []byte, i int) []byte {
	start, end := w.a.ValueOffsets(i)
	dst = append(dst, '{')
	hasNulls := e.hasNulls
	e.hasNulls = false // map entries are never left out
	for j := int(start); j < int(end); j++ {
		if j > int(start) {
			dst = append(dst, ',')
		}
		switch {
		case w.keys.IsNull(j):
			dst = append(dst, `""`...)
		case w.keys.DataType().ID() == arrow.STRING:
			dst = w.key.write(e, dst, j)
		default:
			k := w.key.write(e, nil, j)
			if len(k) > 0 && k[0] == '"' {
				dst = append(dst, k...)
			} else {
				dst = AppendString(dst, b2s(k))
			}
		}
		dst = append(dst, ':')
		if w.items.IsNull(j) {
			dst = append(dst, "null"...)
		} else {
			dst = w.item.write(e, dst, j)
		}
	}
	e.hasNulls = hasNulls
	return append(dst, '}')
}

type dictWriter struct {
	a      *array.Dictionary
	dict   arrow.Array
	values writer
}

func (w *dictWriter) bind(a arrow.Array) (ok bool) {
	if w.a, ok = a.(*array.Dictionary); ok {
		w.dict = w.a.Dictionary()
		bindWriter(&w.values, w.dict)
	}
	return
}

func (w *dictWriter) write(e *Encoder, dst []byte, i int) []byte {
	k := w.a.GetValueIndex(i)
	if k < 0 || k >= w.dict.Len() || w.dict.IsNull(k) {
		return append(dst, "null"...)
	}
	return w.values.write(e, dst, k)
}

// fallbackWriter writes any other type as the JSON string of its
// ValueStr.
type fallbackWriter struct{ a arrow.Array }

func (w *fallbackWriter) bind(a arrow.Array) bool { w.a = a; return true }
func (w *fallbackWriter) write(_ *Encoder, dst []byte, i int) (out []byte) {
	defer func() {
		if recover() != nil {
			out = append(dst, "null"...)
		}
	}()
	return AppendString(dst, w.a.ValueStr(i))
}
