package sinkbigquery

import (
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Staging columns. They do not start with sdk.ReservedPrefix, so that the
// Parquet writer keeps them.
const (
	stagingIDColumn  = "__pipeline_id"
	stagingSeqColumn = "__pipeline_seq"
	stagingRowNumber = "__pipeline_rn"
)

var tsType = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

// converter turns a batch's columns into the Arrow types a BigQuery load of
// Parquet maps onto the wanted column types.
type converter struct {
	mem     memory.Allocator
	flatten bool
	types   map[string]string // column → "timestamp" | "json" | "string"
	version string            // the version column, left out while it has only nulls
}

// convertBatch returns b's data columns converted, then the id and sequence
// columns. seq is the first row's arrival number.
func (c *converter) convertBatch(b sdk.Batch, seq int64) (arrow.RecordBatch, error) {
	rec := b.Record
	n := int(rec.NumRows())
	var fields []arrow.Field
	var cols []arrow.Array
	release := func() {
		for _, a := range cols {
			a.Release()
		}
	}
	for i, f := range rec.Schema().Fields() {
		if sdk.IsReserved(f.Name) {
			continue
		}
		if c.version != "" && strings.EqualFold(f.Name, c.version) && f.Type.ID() == arrow.NULL && c.types[f.Name] == "" {
			continue // no type yet: see Sink.versionColumn
		}
		fs, as, err := c.convertTop(f, rec.Column(i))
		if err != nil {
			release()
			return nil, err
		}
		fields = append(fields, fs...)
		cols = append(cols, as...)
	}
	idb := array.NewStringBuilder(c.mem)
	seqb := array.NewInt64Builder(c.mem)
	for i := 0; i < n; i++ {
		if id := b.ID(i); id != "" {
			idb.Append(id)
		} else {
			idb.AppendNull()
		}
		seqb.Append(seq + int64(i))
	}
	fields = append(fields,
		arrow.Field{Name: stagingIDColumn, Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: stagingSeqColumn, Type: arrow.PrimitiveTypes.Int64, Nullable: true})
	cols = append(cols, idb.NewArray(), seqb.NewArray())
	idb.Release()
	seqb.Release()
	out := array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, int64(n))
	release()
	return out, nil
}

// convertTop converts a top-level column, flattening structs when asked.
func (c *converter) convertTop(f arrow.Field, a arrow.Array) ([]arrow.Field, []arrow.Array, error) {
	if st, ok := f.Type.(*arrow.StructType); ok && c.flatten && c.types[f.Name] == "" && !arrowjson.IsRaw(f) && st.NumFields() > 0 {
		sa := a.(*array.Struct)
		var fields []arrow.Field
		var cols []arrow.Array
		for i, cf := range st.Fields() {
			child := array.NewSlice(sa.Field(i), int64(sa.Offset()), int64(sa.Offset()+sa.Len()))
			// A null parent makes its children null.
			child = withParentNulls(c.mem, child, sa)
			cf.Name = f.Name + "_" + cf.Name
			fs, as, err := c.convertTop(cf, child)
			child.Release()
			if err != nil {
				for _, x := range cols {
					x.Release()
				}
				return nil, nil, err
			}
			fields = append(fields, fs...)
			cols = append(cols, as...)
		}
		return fields, cols, nil
	}
	nf, na, err := c.convert(f, a, f.Name)
	if err != nil {
		return nil, nil, err
	}
	return []arrow.Field{nf}, []arrow.Array{na}, nil
}

// withParentNulls returns child with the rows where parent is null set null.
func withParentNulls(mem memory.Allocator, child arrow.Array, parent arrow.Array) arrow.Array {
	if parent.NullN() == 0 {
		return child
	}
	// Rebuild through a one-field struct's take would be heavy; copy the
	// child's data with a merged validity bitmap instead.
	n := child.Len()
	bm := memory.NewResizableBuffer(mem)
	bm.Resize(int(bitutil.BytesForBits(int64(n))))
	bits := bm.Bytes()
	nulls := 0
	for i := 0; i < n; i++ {
		if child.IsValid(i) && parent.IsValid(i) {
			bitutil.SetBit(bits, i)
		} else {
			bitutil.ClearBit(bits, i)
			nulls++
		}
	}
	d := child.Data()
	if d.Offset() != 0 {
		// Slices keep their offset; materialise a zero-offset copy via concat.
		cp, err := array.Concatenate([]arrow.Array{child}, mem)
		if err == nil {
			defer cp.Release()
			d = cp.Data()
		}
	}
	bufs := append([]*memory.Buffer{bm}, d.Buffers()[1:]...)
	nd := array.NewData(d.DataType(), n, bufs, d.Children(), nulls, 0)
	bm.Release()
	out := array.MakeFromData(nd)
	nd.Release()
	child.Release()
	return out
}

// convert returns a column as the Arrow type that loads as its BigQuery type.
func (c *converter) convert(f arrow.Field, a arrow.Array, path string) (arrow.Field, arrow.Array, error) {
	out := arrow.Field{Name: f.Name, Nullable: true, Metadata: f.Metadata}
	switch c.types[path] {
	case "json":
		return c.toJSON(f, a, out)
	case "string":
		if f.Type.ID() == arrow.STRING || f.Type.ID() == arrow.LARGE_STRING {
			break
		}
		return c.toJSON(f, a, out)
	case "timestamp":
		return c.toTimestamp(f, a, out, path)
	}
	if arrowjson.IsRaw(f) {
		out.Type = f.Type
		a.Retain()
		return out, a, nil
	}
	switch t := f.Type.(type) {
	case *arrow.StringType, *arrow.BooleanType, *arrow.Float64Type, *arrow.Int64Type, *arrow.Date32Type, *arrow.BinaryType:
		out.Type = f.Type
		a.Retain()
		return out, a, nil
	case *arrow.LargeStringType:
		b := array.NewStringBuilder(c.mem)
		defer b.Release()
		s := a.(*array.LargeString)
		for i := 0; i < s.Len(); i++ {
			if s.IsNull(i) {
				b.AppendNull()
			} else {
				b.Append(s.Value(i))
			}
		}
		out.Type = arrow.BinaryTypes.String
		return out, b.NewArray(), nil
	case *arrow.NullType:
		out.Type = arrow.BinaryTypes.String
		return out, array.MakeArrayOfNull(c.mem, out.Type, a.Len()), nil
	case *arrow.TimestampType:
		b := array.NewTimestampBuilder(c.mem, tsType)
		defer b.Release()
		ta := a.(*array.Timestamp)
		toTime, _ := t.GetToTimeFunc()
		for i := 0; i < ta.Len(); i++ {
			if ta.IsNull(i) {
				b.AppendNull()
				continue
			}
			b.Append(arrow.Timestamp(toTime(ta.Value(i)).UnixMicro()))
		}
		out.Type = tsType
		return out, b.NewArray(), nil
	case *arrow.StructType:
		if t.NumFields() == 0 {
			return c.toJSON(f, a, out)
		}
		sa := a.(*array.Struct)
		fields := make([]arrow.Field, t.NumFields())
		children := make([]arrow.Array, t.NumFields())
		for i, cf := range t.Fields() {
			child := array.NewSlice(sa.Field(i), int64(sa.Offset()), int64(sa.Offset()+sa.Len()))
			nf, na, err := c.convert(cf, child, path+"."+cf.Name)
			child.Release()
			if err != nil {
				for _, x := range children[:i] {
					x.Release()
				}
				return out, nil, err
			}
			fields[i], children[i] = nf, na
		}
		var bm *memory.Buffer
		if sa.NullN() > 0 {
			bm = memory.NewResizableBuffer(c.mem)
			bm.Resize(int(bitutil.BytesForBits(int64(sa.Len()))))
			for i := 0; i < sa.Len(); i++ {
				if sa.IsValid(i) {
					bitutil.SetBit(bm.Bytes(), i)
				} else {
					bitutil.ClearBit(bm.Bytes(), i)
				}
			}
			defer bm.Release()
		}
		out.Type = arrow.StructOf(fields...)
		datas := make([]arrow.ArrayData, len(children))
		for i, ch := range children {
			datas[i] = ch.Data()
		}
		nd := array.NewData(out.Type, sa.Len(), []*memory.Buffer{bm}, datas, sa.NullN(), 0)
		for _, ch := range children {
			ch.Release()
		}
		res := array.MakeFromData(nd)
		nd.Release()
		return out, res, nil
	case *arrow.ListType:
		if _, nested := t.Elem().(*arrow.ListType); nested {
			return out, nil, fmt.Errorf("column %q is a list of lists, which BigQuery cannot hold (an ARRAY cannot contain an ARRAY): declare it as JSON with types = { %s = \"json\" }", path, topName(path))
		}
		la := a.(*array.List)
		// Rebuild the list with offsets from zero over converted values.
		raw := la.Offsets()
		lo, hi := int64(raw[0]), int64(raw[la.Len()])
		vals := array.NewSlice(la.ListValues(), lo, hi)
		ef, ev, err := c.convert(t.ElemField(), vals, path)
		vals.Release()
		if err != nil {
			return out, nil, err
		}
		defer ev.Release()
		if ev.NullN() > 0 {
			return out, nil, fmt.Errorf("column %q holds a list with a null element, which a BigQuery REPEATED column cannot hold: declare it as JSON with types = { %s = \"json\" }", path, topName(path))
		}
		offs := make([]int32, la.Len()+1)
		for i := range offs {
			offs[i] = raw[i] - int32(lo)
		}
		ob := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs))
		var bm *memory.Buffer
		if la.NullN() > 0 {
			bm = memory.NewResizableBuffer(c.mem)
			bm.Resize(int(bitutil.BytesForBits(int64(la.Len()))))
			for i := 0; i < la.Len(); i++ {
				if la.IsValid(i) {
					bitutil.SetBit(bm.Bytes(), i)
				} else {
					bitutil.ClearBit(bm.Bytes(), i)
				}
			}
			defer bm.Release()
		}
		ef.Nullable = true
		out.Type = arrow.ListOfField(ef)
		nd := array.NewData(out.Type, la.Len(), []*memory.Buffer{bm, ob}, []arrow.ArrayData{ev.Data()}, la.NullN(), 0)
		res := array.MakeFromData(nd)
		nd.Release()
		return out, res, nil
	}
	switch f.Type.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		b := array.NewInt64Builder(c.mem)
		defer b.Release()
		for i := 0; i < a.Len(); i++ {
			if a.IsNull(i) {
				b.AppendNull()
				continue
			}
			var v int64
			switch x := a.(type) {
			case *array.Int8:
				v = int64(x.Value(i))
			case *array.Int16:
				v = int64(x.Value(i))
			case *array.Int32:
				v = int64(x.Value(i))
			case *array.Uint8:
				v = int64(x.Value(i))
			case *array.Uint16:
				v = int64(x.Value(i))
			case *array.Uint32:
				v = int64(x.Value(i))
			case *array.Uint64:
				if x.Value(i) > 1<<63-1 {
					return out, nil, fmt.Errorf("column %q: %d does not fit BigQuery's INT64", path, x.Value(i))
				}
				v = int64(x.Value(i))
			}
			b.Append(v)
		}
		out.Type = arrow.PrimitiveTypes.Int64
		return out, b.NewArray(), nil
	case arrow.FLOAT16, arrow.FLOAT32:
		b := array.NewFloat64Builder(c.mem)
		defer b.Release()
		for i := 0; i < a.Len(); i++ {
			if a.IsNull(i) {
				b.AppendNull()
				continue
			}
			switch x := a.(type) {
			case *array.Float32:
				b.Append(float64(x.Value(i)))
			case *array.Float16:
				b.Append(float64(x.Value(i).Float32()))
			}
		}
		out.Type = arrow.PrimitiveTypes.Float64
		return out, b.NewArray(), nil
	}
	return out, nil, fmt.Errorf("column %q has the Arrow type %s, which the BigQuery sink cannot map: declare it as JSON with types = { %s = \"json\" }", path, f.Type, topName(path))
}

func topName(path string) string {
	if i := strings.IndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return path
}

func (c *converter) toJSON(f arrow.Field, a arrow.Array, out arrow.Field) (arrow.Field, arrow.Array, error) {
	enc := arrowjson.NewEncoder()
	b := array.NewStringBuilder(c.mem)
	defer b.Release()
	var buf []byte
	for i := 0; i < a.Len(); i++ {
		if a.IsNull(i) {
			b.AppendNull()
			continue
		}
		buf = enc.AppendValue(buf[:0], f, a, i)
		b.Append(string(buf))
	}
	out.Type = arrow.BinaryTypes.String
	out.Metadata = arrow.NewMetadata([]string{bqTypeKey}, []string{string(bigquery.JSONFieldType)})
	return out, b.NewArray(), nil
}

// timestampLayouts are the string forms a timestamp column accepts.
var timestampLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", "2006-01-02"}

func (c *converter) toTimestamp(f arrow.Field, a arrow.Array, out arrow.Field, path string) (arrow.Field, arrow.Array, error) {
	out.Type = tsType
	switch f.Type.ID() {
	case arrow.TIMESTAMP:
		return c.convert(arrow.Field{Name: f.Name, Type: f.Type}, a, "\x00")
	case arrow.NULL:
		return out, array.MakeArrayOfNull(c.mem, tsType, a.Len()), nil
	case arrow.STRING:
	default:
		return out, nil, fmt.Errorf(`column %q is declared a timestamp (types = { %s = "timestamp" }) but holds %s, not strings`, path, topName(path), f.Type)
	}
	s := a.(*array.String)
	b := array.NewTimestampBuilder(c.mem, tsType)
	defer b.Release()
	for i := 0; i < s.Len(); i++ {
		if s.IsNull(i) || s.Value(i) == "" {
			b.AppendNull()
			continue
		}
		v := s.Value(i)
		var t time.Time
		var err error
		for _, layout := range timestampLayouts {
			if t, err = time.Parse(layout, v); err == nil {
				break
			}
		}
		if err != nil {
			return out, nil, fmt.Errorf(`column %q is declared a timestamp but record %d holds %q, which is not an RFC 3339 time such as "2024-05-01T12:00:00Z"`, path, i, v)
		}
		b.Append(arrow.Timestamp(t.UnixMicro()))
	}
	return out, b.NewArray(), nil
}

// bqTypeKey marks a string column that loads as JSON.
const bqTypeKey = "bigquery.type"

// unionFields merges the fields of the flush's records: a field that
// appeared is added, null widens to anything, INT64 widens to FLOAT64;
// other differences are errors.
func unionFields(dst, src []arrow.Field, path string) ([]arrow.Field, error) {
	index := map[string]int{}
	for i, f := range dst {
		index[f.Name] = i
	}
	for _, f := range src {
		i, ok := index[f.Name]
		if !ok {
			index[f.Name] = len(dst)
			dst = append(dst, f)
			continue
		}
		m, err := unionField(dst[i], f, path+f.Name)
		if err != nil {
			return nil, err
		}
		dst[i] = m
	}
	return dst, nil
}

func unionField(a, b arrow.Field, path string) (arrow.Field, error) {
	if arrow.TypeEqual(a.Type, b.Type) && isJSONField(a) == isJSONField(b) {
		return a, nil
	}
	ds, aok := a.Type.(*arrow.StructType)
	ss, bok := b.Type.(*arrow.StructType)
	if aok && bok {
		fs, err := unionFields(append([]arrow.Field(nil), ds.Fields()...), ss.Fields(), path+".")
		if err != nil {
			return a, err
		}
		a.Type = arrow.StructOf(fs...)
		return a, nil
	}
	dl, aok := a.Type.(*arrow.ListType)
	sl, bok := b.Type.(*arrow.ListType)
	if aok && bok {
		e, err := unionField(dl.ElemField(), sl.ElemField(), path)
		if err != nil {
			return a, err
		}
		a.Type = arrow.ListOfField(e)
		return a, nil
	}
	ta, tb := bqTypeOf(a), bqTypeOf(b)
	if ta == "INT64" && tb == "FLOAT64" {
		return b, nil
	}
	if ta == "FLOAT64" && tb == "INT64" {
		return a, nil
	}
	return a, fmt.Errorf("column %q changed type within one flush: %s, then %s; BigQuery cannot hold both in one column: declare it as JSON with types = { %s = \"json\" }", path, ta, tb, topName(path))
}

func isJSONField(f arrow.Field) bool {
	if arrowjson.IsRaw(f) {
		return true
	}
	v, ok := f.Metadata.GetValue(bqTypeKey)
	return ok && v == string(bigquery.JSONFieldType)
}

// bqTypeOf names a converted field's BigQuery type in Standard SQL.
func bqTypeOf(f arrow.Field) string {
	if isJSONField(f) {
		return "JSON"
	}
	switch t := f.Type.(type) {
	case *arrow.StringType:
		return "STRING"
	case *arrow.Int64Type:
		return "INT64"
	case *arrow.Float64Type:
		return "FLOAT64"
	case *arrow.BooleanType:
		return "BOOL"
	case *arrow.TimestampType:
		return "TIMESTAMP"
	case *arrow.Date32Type:
		return "DATE"
	case *arrow.BinaryType:
		return "BYTES"
	case *arrow.StructType:
		return "RECORD"
	case *arrow.ListType:
		return "ARRAY<" + bqTypeOf(t.ElemField()) + ">"
	}
	return f.Type.String()
}

// toBQSchema maps converted fields to a BigQuery schema: every column
// NULLABLE, lists REPEATED.
func toBQSchema(fields []arrow.Field) bigquery.Schema {
	out := make(bigquery.Schema, 0, len(fields))
	for _, f := range fields {
		out = append(out, toBQField(f))
	}
	return out
}

func toBQField(f arrow.Field) *bigquery.FieldSchema {
	fs := &bigquery.FieldSchema{Name: f.Name}
	if l, ok := f.Type.(*arrow.ListType); ok {
		fs = toBQField(arrow.Field{Name: f.Name, Type: l.Elem(), Metadata: l.ElemField().Metadata})
		fs.Repeated = true
		return fs
	}
	if isJSONField(f) {
		fs.Type = bigquery.JSONFieldType
		return fs
	}
	switch t := f.Type.(type) {
	case *arrow.StructType:
		fs.Type = bigquery.RecordFieldType
		fs.Schema = toBQSchema(t.Fields())
	default:
		fs.Type = canonicalType(bqTypeOf(f))
	}
	return fs
}

// canonicalType maps Standard SQL type names to the REST API's.
func canonicalType(t string) bigquery.FieldType {
	switch strings.ToUpper(t) {
	case "INT64", "INTEGER":
		return bigquery.IntegerFieldType
	case "FLOAT64", "FLOAT":
		return bigquery.FloatFieldType
	case "BOOL", "BOOLEAN":
		return bigquery.BooleanFieldType
	case "STRUCT", "RECORD":
		return bigquery.RecordFieldType
	}
	return bigquery.FieldType(strings.ToUpper(t))
}

// sqlType names a field's type as a user reads it in BigQuery's console.
func sqlType(f *bigquery.FieldSchema) string {
	var t string
	switch canonicalType(string(f.Type)) {
	case bigquery.IntegerFieldType:
		t = "INT64"
	case bigquery.FloatFieldType:
		t = "FLOAT64"
	case bigquery.BooleanFieldType:
		t = "BOOL"
	case bigquery.RecordFieldType:
		t = "RECORD"
	default:
		t = string(f.Type)
	}
	if f.Repeated {
		return "REPEATED " + t
	}
	return t
}

// evolve returns have with the fields of want that it lacks added (as
// NULLABLE columns), the dotted names of those added, and an error naming
// the column and both types when a field's type differs.
func evolve(table string, have, want bigquery.Schema, path string) (bigquery.Schema, []string, error) {
	out := append(bigquery.Schema(nil), have...)
	index := map[string]int{}
	for i, f := range have {
		index[strings.ToLower(f.Name)] = i
	}
	var added []string
	for _, w := range want {
		i, ok := index[strings.ToLower(w.Name)]
		if !ok {
			nf := *w
			nf.Required = false
			out = append(out, &nf)
			added = append(added, path+w.Name)
			continue
		}
		h := have[i]
		if canonicalType(string(h.Type)) != canonicalType(string(w.Type)) || h.Repeated != w.Repeated {
			// Loading INT64 values into a FLOAT64 column converts them.
			if !(canonicalType(string(h.Type)) == bigquery.FloatFieldType && canonicalType(string(w.Type)) == bigquery.IntegerFieldType && h.Repeated == w.Repeated) {
				return nil, nil, fmt.Errorf("column %q of table %s is %s, but the records now carry %s: BigQuery cannot change a column's type in place. Rename the field upstream, declare it with types = { %s = \"json\" } or \"string\", or drop or rename the column in BigQuery and run again",
					path+w.Name, table, sqlType(h), sqlType(w), topName(path+w.Name))
			}
		}
		if canonicalType(string(h.Type)) == bigquery.RecordFieldType {
			sub, subAdded, err := evolve(table, h.Schema, w.Schema, path+w.Name+".")
			if err != nil {
				return nil, nil, err
			}
			if len(subAdded) > 0 {
				nf := *h
				nf.Schema = sub
				out[i] = &nf
				added = append(added, subAdded...)
			}
		}
	}
	return out, added, nil
}
