package export

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// This file brings arrays of differing schemas to one type: unify computes
// a type that every input fits into, covers says whether an array fits a
// given type, and conform rebuilds an array as that type. The rules follow
// sdk/arrowjson's schema evolution: a missing field is null, int widens to
// float64, and any other conflict becomes a raw JSON column (utf8 with the
// arrowjson raw metadata, holding each value as JSON text).

var rawMetadata = arrow.NewMetadata([]string{arrowjson.MetadataKey}, []string{arrowjson.MetadataRaw})

func rawField(name string) arrow.Field {
	return arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true, Metadata: rawMetadata}
}

// dataFields returns the non-reserved fields of a schema.
func dataFields(s *arrow.Schema) []arrow.Field {
	var out []arrow.Field
	for _, f := range s.Fields() {
		if !sdk.IsReserved(f.Name) {
			out = append(out, f)
		}
	}
	return out
}

func isInteger(id arrow.Type) bool {
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

func isNumber(id arrow.Type) bool {
	return isInteger(id) || id == arrow.FLOAT32 || id == arrow.FLOAT64
}

// unifyFields merges two field lists by name: a's fields in a's order, then
// the fields only b has. Every field of the result is nullable.
func unifyFields(a, b []arrow.Field) []arrow.Field {
	out := make([]arrow.Field, 0, len(a)+len(b))
	index := make(map[string]int, len(a))
	for _, f := range a {
		if _, dup := index[f.Name]; dup {
			continue
		}
		index[f.Name] = len(out)
		f.Nullable = true
		out = append(out, f)
	}
	for _, f := range b {
		if i, ok := index[f.Name]; ok {
			out[i] = unifyField(out[i], f)
			continue
		}
		index[f.Name] = len(out)
		f.Nullable = true
		out = append(out, f)
	}
	return out
}

// unifyField returns a field that both a and b conform to, named as a.
func unifyField(a, b arrow.Field) arrow.Field {
	ar, br := arrowjson.IsRaw(a), arrowjson.IsRaw(b)
	switch {
	case ar || br:
		return rawField(a.Name)
	case arrow.TypeEqual(a.Type, b.Type):
		a.Nullable = true
		return a
	case a.Type.ID() == arrow.NULL:
		b.Name, b.Nullable = a.Name, true
		return b
	case b.Type.ID() == arrow.NULL:
		a.Nullable = true
		return a
	}
	at, bt := a.Type, b.Type
	if as, ok := at.(*arrow.StructType); ok {
		if bs, ok := bt.(*arrow.StructType); ok {
			return arrow.Field{Name: a.Name, Type: arrow.StructOf(unifyFields(as.Fields(), bs.Fields())...), Nullable: true, Metadata: a.Metadata}
		}
	}
	if al, ok := at.(*arrow.ListType); ok {
		if bl, ok := bt.(*arrow.ListType); ok {
			elem := unifyField(al.ElemField(), bl.ElemField())
			return arrow.Field{Name: a.Name, Type: arrow.ListOfField(elem), Nullable: true, Metadata: a.Metadata}
		}
	}
	if isNumber(at.ID()) && isNumber(bt.ID()) {
		return arrow.Field{Name: a.Name, Type: arrow.PrimitiveTypes.Float64, Nullable: true}
	}
	return rawField(a.Name)
}

// coversFields reports whether an array with fields src conforms to dst
// without dst changing: every src field is covered by the dst field of
// its name, and dst fields src lacks are nullable.
func coversFields(dst, src []arrow.Field) bool {
	index := make(map[string]int, len(dst))
	for i, f := range dst {
		index[f.Name] = i
	}
	seen := make([]bool, len(dst))
	for _, f := range src {
		i, ok := index[f.Name]
		if !ok || seen[i] || !covers(dst[i], f) {
			return false
		}
		seen[i] = true
	}
	for i, f := range dst {
		if !seen[i] && !f.Nullable {
			return false
		}
	}
	return true
}

// misfit says why src does not conform to dst (coversFields is false):
// the first field, by its dotted path, that is new or has another type.
func misfit(dst, src []arrow.Field, prefix string) string {
	index := make(map[string]int, len(dst))
	for i, f := range dst {
		index[f.Name] = i
	}
	seen := make([]bool, len(dst))
	for _, f := range src {
		path := prefix + f.Name
		i, ok := index[f.Name]
		switch {
		case !ok:
			return fmt.Sprintf("new field %q, which the file's first batch did not have", path)
		case seen[i]:
			return fmt.Sprintf("field %q appears twice", path)
		case !covers(dst[i], f):
			if ds, ok := dst[i].Type.(*arrow.StructType); ok {
				if ss, ok := f.Type.(*arrow.StructType); ok {
					return misfit(ds.Fields(), ss.Fields(), path+".")
				}
			}
			return fmt.Sprintf("field %q: the file has %s, this batch has %s", path, typeName(dst[i]), typeName(f))
		}
		seen[i] = true
	}
	for i, f := range dst {
		if !seen[i] && !f.Nullable {
			return fmt.Sprintf("field %q is missing, and the file's column may not be null", prefix+f.Name)
		}
	}
	return "the batch does not fit the file's schema"
}

// typeName is a field's type as a message shows it: "int64", "string",
// "struct", "list of string", "JSON text".
func typeName(f arrow.Field) string {
	if arrowjson.IsRaw(f) {
		return "JSON text"
	}
	switch t := f.Type.(type) {
	case *arrow.StructType:
		return "struct"
	case *arrow.ListType:
		return "list of " + typeName(t.ElemField())
	case *arrow.StringType, *arrow.LargeStringType, *arrow.StringViewType:
		return "string"
	case *arrow.BooleanType:
		return "bool"
	}
	return f.Type.String()
}

func covers(dst, src arrow.Field) bool {
	dr, sr := arrowjson.IsRaw(dst), arrowjson.IsRaw(src)
	switch {
	case dr:
		return true
	case sr:
		return false
	case src.Type.ID() == arrow.NULL:
		return dst.Nullable
	case src.Nullable && !dst.Nullable:
		return false
	case arrow.TypeEqual(dst.Type, src.Type):
		return true
	}
	if ds, ok := dst.Type.(*arrow.StructType); ok {
		if ss, ok := src.Type.(*arrow.StructType); ok {
			return coversFields(ds.Fields(), ss.Fields())
		}
		return false
	}
	if dl, ok := dst.Type.(*arrow.ListType); ok {
		if sl, ok := src.Type.(*arrow.ListType); ok {
			return covers(dl.ElemField(), sl.ElemField())
		}
		return false
	}
	return dst.Type.ID() == arrow.FLOAT64 && isNumber(src.Type.ID())
}

// conformer rebuilds arrays as a wider type. It shares buffers wherever
// the type allows.
type conformer struct {
	mem memory.Allocator
	enc *arrowjson.Encoder
	buf []byte
}

func newConformer(mem memory.Allocator) *conformer {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	return &conformer{mem: mem}
}

// conformRecord rebuilds rec's non-reserved columns as the fields dst
// (which must cover them), keeping its reserved columns after them.
func (c *conformer) conformRecord(rec arrow.RecordBatch, dst []arrow.Field) arrow.RecordBatch {
	src := rec.Schema()
	n := int(rec.NumRows())
	fields := append([]arrow.Field(nil), dst...)
	cols := make([]arrow.Array, 0, len(dst)+2)
	for _, f := range dst {
		var col arrow.Array
		if idx := src.FieldIndices(f.Name); len(idx) > 0 {
			d := c.conform(rec.Column(idx[0]).Data(), src.Field(idx[0]), f)
			col = array.MakeFromData(d)
			d.Release()
		} else {
			col = array.MakeArrayOfNull(c.mem, f.Type, n)
		}
		cols = append(cols, col)
	}
	for i, f := range src.Fields() {
		if sdk.IsReserved(f.Name) {
			fields = append(fields, f)
			col := rec.Column(i)
			col.Retain()
			cols = append(cols, col)
		}
	}
	md := src.Metadata()
	out := array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, int64(n))
	for _, col := range cols {
		col.Release()
	}
	return out
}

// conform returns d, an array of field src, as an array of field dst. The
// result has d's length and is retained for the caller.
func (c *conformer) conform(d arrow.ArrayData, src, dst arrow.Field) arrow.ArrayData {
	dr, sr := arrowjson.IsRaw(dst), arrowjson.IsRaw(src)
	if dr == sr && arrow.TypeEqual(src.Type, dst.Type) {
		d.Retain()
		return d
	}
	if dr {
		return c.toRaw(d, src)
	}
	if src.Type.ID() == arrow.NULL {
		a := array.MakeArrayOfNull(c.mem, dst.Type, d.Len())
		out := a.Data()
		out.Retain()
		a.Release()
		return out
	}
	switch dt := dst.Type.(type) {
	case *arrow.StructType:
		if st, ok := src.Type.(*arrow.StructType); ok {
			width := d.Offset() + d.Len()
			children := make([]arrow.ArrayData, dt.NumFields())
			for j, f := range dt.Fields() {
				if k, ok := st.FieldIdx(f.Name); ok {
					children[j] = c.conform(d.Children()[k], st.Field(k), f)
				} else {
					a := array.MakeArrayOfNull(c.mem, f.Type, width)
					children[j] = a.Data()
					children[j].Retain()
					a.Release()
				}
			}
			out := array.NewData(dt, d.Len(), d.Buffers()[:1], children, d.NullN(), d.Offset())
			for _, ch := range children {
				ch.Release()
			}
			return out
		}
	case *arrow.ListType:
		if st, ok := src.Type.(*arrow.ListType); ok {
			child := c.conform(d.Children()[0], st.ElemField(), dt.ElemField())
			out := array.NewData(dt, d.Len(), d.Buffers()[:2], []arrow.ArrayData{child}, d.NullN(), d.Offset())
			child.Release()
			return out
		}
	case *arrow.Float64Type:
		if isNumber(src.Type.ID()) {
			return c.toFloat64(d)
		}
	}
	return c.toRaw(d, src)
}

func (c *conformer) toFloat64(d arrow.ArrayData) arrow.ArrayData {
	a := array.MakeFromData(d)
	defer a.Release()
	b := array.NewFloat64Builder(c.mem)
	defer b.Release()
	b.Reserve(a.Len())
	var get func(int) float64
	switch a := a.(type) {
	case *array.Int8:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Int16:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Int32:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Int64:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Uint8:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Uint16:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Uint32:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Uint64:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Float32:
		get = func(i int) float64 { return float64(a.Value(i)) }
	case *array.Float64:
		get = a.Value
	default:
		get = func(int) float64 { return 0 }
	}
	for i := 0; i < a.Len(); i++ {
		if a.IsNull(i) {
			b.AppendNull()
		} else {
			b.Append(get(i))
		}
	}
	out := b.NewArray()
	defer out.Release()
	od := out.Data()
	od.Retain()
	return od
}

// toRaw writes each value as JSON text (raw JSON column). Explicit nulls
// inside a value are not kept.
func (c *conformer) toRaw(d arrow.ArrayData, src arrow.Field) arrow.ArrayData {
	a := array.MakeFromData(d)
	defer a.Release()
	if c.enc == nil {
		c.enc = arrowjson.NewEncoder()
	}
	b := array.NewStringBuilder(c.mem)
	defer b.Release()
	b.Reserve(a.Len())
	for i := 0; i < a.Len(); i++ {
		if a.IsNull(i) || a.DataType().ID() == arrow.NULL {
			b.AppendNull()
			continue
		}
		c.buf = c.enc.AppendValue(c.buf[:0], src, a, i)
		b.Append(string(c.buf))
	}
	c.enc = nil // it keeps the arrays it saw
	out := b.NewArray()
	defer out.Release()
	od := out.Data()
	od.Retain()
	return od
}
