package parquetread

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/apache/arrow-go/v18/parquet/schema"
)

// This file turns the Arrow types pqarrow reads into the types batches
// carry (see the package documentation): every field nullable, pqarrow's
// PARQUET:field_id metadata dropped, list elements named "item", and
// dictionary, large, view, fixed-size-list, UUID and JSON-annotated columns
// converted to the plain types the rest of the engine handles. A column is
// planned once per file (plan) and converted batch by batch (convert);
// columns whose type does not change are passed on as they are.

// Field metadata that batches carry for a column of JSON text; the same
// key and value as sdk/arrowjson's raw JSON columns.
const (
	rawJSONKey   = "pipeline.json"
	rawJSONValue = "raw"
	fieldIDKey   = "PARQUET:field_id"
)

type kind int

const (
	kindSame      kind = iota // the type stays: the array is passed on
	kindRetype                // same buffers, another type (field names, metadata, nullability; children converted)
	kindNarrow                // large_string, large_binary, large_list → 32-bit offsets
	kindFixedList             // fixed_size_list → list
	kindDict                  // dictionary → its values (then children[0] converts them)
	kindView                  // string_view, binary_view → string, binary
	kindUUID                  // arrow.uuid → its canonical text
	kindJSON                  // BYTE_ARRAY annotated JSON → string, each value checked
	kindStorage               // another extension type → its storage (then children[0])
)

// node converts the arrays of one field.
type node struct {
	kind     kind
	path     string // dotted, for messages
	to       arrow.DataType
	children []*node
}

// planFields plans the top-level fields of a file.
func planFields(fields []pqarrow.SchemaField, descr *schema.Schema) ([]arrow.Field, []*node, error) {
	out := make([]arrow.Field, len(fields))
	nodes := make([]*node, len(fields))
	for i := range fields {
		f, n, err := plan(*fields[i].Field, &fields[i], descr, fields[i].Field.Name)
		if err != nil {
			return nil, nil, err
		}
		out[i], nodes[i] = f, n
	}
	return out, nodes, nil
}

// plan returns the field that batches carry for f, a field as pqarrow
// reads it, and the node that converts its arrays. sf is f's place in
// pqarrow's manifest (nil when not known), which names the Parquet leaf
// column of a primitive field.
func plan(f arrow.Field, sf *pqarrow.SchemaField, descr *schema.Schema, path string) (arrow.Field, *node, error) {
	out := arrow.Field{Name: f.Name, Nullable: true, Metadata: dropFieldID(f.Metadata)}
	n := &node{path: path}
	child := func(i int) *pqarrow.SchemaField {
		if sf == nil || i >= len(sf.Children) {
			return nil
		}
		return &sf.Children[i]
	}
	var err error
	switch t := f.Type.(type) {
	case *arrow.DictionaryType:
		var vf arrow.Field
		var vn *node
		vf, vn, err = plan(arrow.Field{Name: f.Name, Type: t.ValueType, Metadata: f.Metadata}, sf, descr, path)
		out.Type, out.Metadata = vf.Type, vf.Metadata
		n.kind, n.children = kindDict, []*node{vn}
	case arrow.ExtensionType:
		switch t.ExtensionName() {
		case "arrow.uuid":
			out.Type, n.kind = arrow.BinaryTypes.String, kindUUID
		case "arrow.json":
			var sn *node
			var sfld arrow.Field
			sfld, sn, err = plan(arrow.Field{Name: f.Name, Type: t.StorageType()}, nil, descr, path)
			out.Type = sfld.Type
			out.Metadata = withRaw(out.Metadata)
			n.kind, n.children = kindStorage, []*node{sn}
		default:
			var sn *node
			var sfld arrow.Field
			sfld, sn, err = plan(arrow.Field{Name: f.Name, Type: t.StorageType(), Metadata: f.Metadata}, sf, descr, path)
			out.Type, out.Metadata = sfld.Type, sfld.Metadata
			n.kind, n.children = kindStorage, []*node{sn}
		}
	case *arrow.StructType:
		fields := make([]arrow.Field, t.NumFields())
		n.children = make([]*node, t.NumFields())
		for i, cf := range t.Fields() {
			if fields[i], n.children[i], err = plan(cf, child(i), descr, path+"."+cf.Name); err != nil {
				return out, nil, err
			}
		}
		out.Type, n.kind = arrow.StructOf(fields...), kindRetype
	case *arrow.ListType:
		var ef arrow.Field
		var en *node
		ef, en, err = plan(t.ElemField(), child(0), descr, path+"[]")
		ef.Name = "item"
		out.Type, n.kind, n.children = arrow.ListOfField(ef), kindRetype, []*node{en}
	case *arrow.LargeListType:
		var ef arrow.Field
		var en *node
		ef, en, err = plan(t.ElemField(), child(0), descr, path+"[]")
		ef.Name = "item"
		out.Type, n.kind, n.children = arrow.ListOfField(ef), kindNarrow, []*node{en}
	case *arrow.FixedSizeListType:
		var ef arrow.Field
		var en *node
		ef, en, err = plan(t.ElemField(), child(0), descr, path+"[]")
		ef.Name = "item"
		out.Type, n.kind, n.children = arrow.ListOfField(ef), kindFixedList, []*node{en}
	case *arrow.MapType:
		// The map's child is its entries struct {key, value}: planned as
		// one, so that the map keeps its layout.
		entries := child(0)
		var kf, vf arrow.Field
		var kn, vn *node
		var kc, vc *pqarrow.SchemaField
		if entries != nil && len(entries.Children) == 2 {
			kc, vc = &entries.Children[0], &entries.Children[1]
		}
		if kf, kn, err = plan(t.KeyField(), kc, descr, path+".key"); err != nil {
			return out, nil, err
		}
		if vf, vn, err = plan(t.ItemField(), vc, descr, path+".value"); err != nil {
			return out, nil, err
		}
		kf.Nullable = false // map keys are never null
		mt := arrow.MapOfFields(kf, vf)
		mt.KeysSorted = t.KeysSorted
		en := &node{kind: kindRetype, path: path, to: mt.Elem(), children: []*node{kn, vn}}
		en.settle(t.Elem())
		out.Type, n.kind, n.children = mt, kindRetype, []*node{en}
	case *arrow.LargeStringType:
		out.Type, n.kind = arrow.BinaryTypes.String, kindNarrow
	case *arrow.LargeBinaryType:
		out.Type, n.kind = arrow.BinaryTypes.Binary, kindNarrow
	case *arrow.StringViewType:
		out.Type, n.kind = arrow.BinaryTypes.String, kindView
	case *arrow.BinaryViewType:
		out.Type, n.kind = arrow.BinaryTypes.Binary, kindView
	case *arrow.BinaryType:
		out.Type = f.Type
		switch leafLogical(sf, descr).(type) {
		case schema.JSONLogicalType:
			out.Type, n.kind = arrow.BinaryTypes.String, kindJSON
			out.Metadata = withRaw(out.Metadata)
		case schema.EnumLogicalType:
			out.Type, n.kind = arrow.BinaryTypes.String, kindRetype
		}
	default:
		out.Type = f.Type
	}
	if err != nil {
		return out, nil, err
	}
	n.to = out.Type
	n.settle(f.Type)
	return out, n, nil
}

// settle turns a retype that changes nothing into kindSame.
func (n *node) settle(from arrow.DataType) {
	if n.kind == kindSame {
		return
	}
	if n.kind == kindRetype && arrow.TypeEqual(from, n.to, arrow.CheckMetadata()) {
		n.kind = kindSame
	}
}

func leafLogical(sf *pqarrow.SchemaField, descr *schema.Schema) schema.LogicalType {
	if sf == nil || !sf.IsLeaf() || descr == nil || sf.ColIndex >= descr.NumColumns() {
		return nil
	}
	return descr.Column(sf.ColIndex).LogicalType()
}

func dropFieldID(md arrow.Metadata) arrow.Metadata {
	if md.FindKey(fieldIDKey) < 0 {
		return md
	}
	var keys, values []string
	for i, k := range md.Keys() {
		if k != fieldIDKey {
			keys, values = append(keys, k), append(values, md.Values()[i])
		}
	}
	if len(keys) == 0 {
		return arrow.Metadata{}
	}
	return arrow.NewMetadata(keys, values)
}

func withRaw(md arrow.Metadata) arrow.Metadata {
	if i := md.FindKey(rawJSONKey); i >= 0 && md.Values()[i] == rawJSONValue {
		return md
	}
	keys := append(append([]string(nil), md.Keys()...), rawJSONKey)
	values := append(append([]string(nil), md.Values()...), rawJSONValue)
	return arrow.NewMetadata(keys, values)
}

// valueError is a value that cannot be converted; row is within the
// array being converted.
type valueError struct {
	path string
	row  int
	msg  string
}

func (e *valueError) Error() string { return fmt.Sprintf("column %s: %s", e.path, e.msg) }

// convert returns d as n.to. The result is the caller's to release.
func (n *node) convert(mem memory.Allocator, d arrow.ArrayData) (arrow.ArrayData, error) {
	switch n.kind {
	case kindSame:
		d.Retain()
		return d, nil
	case kindRetype, kindNarrow, kindFixedList:
		children, err := n.convertChildren(mem, d.Children())
		if err != nil {
			return nil, err
		}
		defer releaseAll(children)
		buffers := d.Buffers()
		switch n.kind {
		case kindNarrow:
			off, err := narrowOffsets(mem, buffers[1], d.Offset(), d.Len(), n.path)
			if err != nil {
				return nil, err
			}
			defer off.Release()
			buffers = append([]*memory.Buffer{buffers[0], off}, buffers[2:]...)
		case kindFixedList:
			size := int32(d.DataType().(*arrow.FixedSizeListType).Len())
			off := memory.NewResizableBuffer(mem)
			off.Resize((d.Offset() + d.Len() + 1) * 4)
			o := arrow.Int32Traits.CastFromBytes(off.Bytes())
			for i := range o {
				o[i] = int32(i) * size
			}
			defer off.Release()
			buffers = []*memory.Buffer{buffers[0], off}
		}
		return array.NewData(n.to, d.Len(), buffers, children, d.NullN(), d.Offset()), nil
	case kindDict:
		dense, err := unpackDictionary(mem, d)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", n.path, err)
		}
		defer dense.Release()
		return n.children[0].convert(mem, dense)
	case kindView:
		arr := array.MakeFromData(d)
		defer arr.Release()
		out, err := compute.CastArray(compute.WithAllocator(context.Background(), mem), arr, compute.SafeCastOptions(n.to))
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", n.path, err)
		}
		defer out.Release()
		data := out.Data()
		data.Retain()
		return data, nil
	case kindUUID:
		return uuidStrings(mem, d), nil
	case kindJSON:
		arr := array.NewBinaryData(d)
		defer arr.Release()
		for i := 0; i < arr.Len(); i++ {
			if arr.IsValid(i) && !json.Valid(arr.Value(i)) {
				return nil, &valueError{path: n.path, row: i, msg: "the column is annotated JSON but the value is not valid JSON"}
			}
		}
		return array.NewData(n.to, d.Len(), d.Buffers(), nil, d.NullN(), d.Offset()), nil
	case kindStorage:
		storage := array.NewData(d.DataType().(arrow.ExtensionType).StorageType(), d.Len(), d.Buffers(), d.Children(), d.NullN(), d.Offset())
		defer storage.Release()
		return n.children[0].convert(mem, storage)
	}
	return nil, fmt.Errorf("column %s: no conversion", n.path)
}

func (n *node) convertChildren(mem memory.Allocator, in []arrow.ArrayData) ([]arrow.ArrayData, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]arrow.ArrayData, len(in))
	for i, c := range in {
		var err error
		if out[i], err = n.children[i].convert(mem, c); err != nil {
			releaseAll(out[:i])
			return nil, err
		}
	}
	return out, nil
}

func releaseAll(ds []arrow.ArrayData) {
	for _, d := range ds {
		if d != nil {
			d.Release()
		}
	}
}

// narrowOffsets returns 64-bit offsets as 32-bit ones, for the slots
// [offset, offset+length] (the ones before offset are left zero, so the
// array keeps its offset and validity bitmap).
func narrowOffsets(mem memory.Allocator, buf *memory.Buffer, offset, length int, path string) (*memory.Buffer, error) {
	out := memory.NewResizableBuffer(mem)
	out.Resize((offset + length + 1) * 4)
	o := arrow.Int32Traits.CastFromBytes(out.Bytes())
	if buf == nil || length == 0 {
		return out, nil
	}
	in := arrow.Int64Traits.CastFromBytes(buf.Bytes())
	if in[offset+length] > math.MaxInt32 {
		out.Release()
		return nil, fmt.Errorf("column %s: a batch holds more than 2 GiB of it; read fewer rows per batch", path)
	}
	for i := offset; i <= offset+length; i++ {
		o[i] = int32(in[i])
	}
	return out, nil
}

// unpackDictionary returns a dictionary array's values, one per row.
func unpackDictionary(mem memory.Allocator, d arrow.ArrayData) (arrow.ArrayData, error) {
	arr := array.MakeFromData(d).(*array.Dictionary)
	defer arr.Release()
	if out := unpackBinaryDictionary(mem, arr); out != nil {
		return out, nil
	}
	dense, err := compute.TakeArray(compute.WithAllocator(context.Background(), mem), arr.Dictionary(), arr.Indices())
	if err != nil {
		return nil, err
	}
	defer dense.Release()
	data := dense.Data()
	data.Retain()
	return data, nil
}

// unpackBinaryDictionary is the fast path of unpackDictionary for string
// and binary values with int32 indices (what pqarrow reads), nil when the
// array is of another kind.
func unpackBinaryDictionary(mem memory.Allocator, arr *array.Dictionary) arrow.ArrayData {
	idx, ok := arr.Indices().(*array.Int32)
	if !ok || arr.Data().Offset() != 0 {
		return nil
	}
	var offsets []int32
	var data []byte
	var dt arrow.DataType
	switch v := arr.Dictionary().(type) {
	case *array.String:
		if v.NullN() > 0 {
			return nil
		}
		offsets, data, dt = v.ValueOffsets(), v.ValueBytes(), arrow.BinaryTypes.String
		if v.Data().Offset() != 0 {
			return nil
		}
	case *array.Binary:
		if v.NullN() > 0 || v.Data().Offset() != 0 {
			return nil
		}
		offsets, data, dt = v.ValueOffsets(), v.ValueBytes(), arrow.BinaryTypes.Binary
	default:
		return nil
	}
	n := idx.Len()
	ix := idx.Int32Values()
	base := int32(0)
	if len(offsets) > 0 {
		base = offsets[0]
	}
	total := 0
	for i, k := range ix {
		if idx.IsValid(i) {
			total += int(offsets[k+1] - offsets[k])
		}
	}
	if total > math.MaxInt32 {
		return nil
	}
	offBuf := memory.NewResizableBuffer(mem)
	offBuf.Resize((n + 1) * 4)
	dataBuf := memory.NewResizableBuffer(mem)
	dataBuf.Resize(total)
	out := arrow.Int32Traits.CastFromBytes(offBuf.Bytes())
	dst := dataBuf.Bytes()
	pos := int32(0)
	for i, k := range ix {
		out[i] = pos
		if idx.IsValid(i) {
			pos += int32(copy(dst[pos:], data[offsets[k]-base:offsets[k+1]-base]))
		}
	}
	out[n] = pos
	var validity *memory.Buffer
	if idx.NullN() > 0 {
		validity = idx.Data().Buffers()[0]
	}
	res := array.NewData(dt, n, []*memory.Buffer{validity, offBuf, dataBuf}, nil, idx.NullN(), 0)
	offBuf.Release()
	dataBuf.Release()
	return res
}

// uuidStrings writes 16-byte UUIDs as their canonical text.
func uuidStrings(mem memory.Allocator, d arrow.ArrayData) arrow.ArrayData {
	storage := array.NewData(&arrow.FixedSizeBinaryType{ByteWidth: 16}, d.Len(), d.Buffers(), nil, d.NullN(), d.Offset())
	defer storage.Release()
	arr := array.NewFixedSizeBinaryData(storage)
	defer arr.Release()
	b := array.NewStringBuilder(mem)
	defer b.Release()
	b.Reserve(arr.Len())
	b.ReserveData(arr.Len() * 36)
	var buf [36]byte
	for i := 0; i < arr.Len(); i++ {
		if arr.IsNull(i) {
			b.AppendNull()
			continue
		}
		u := arr.Value(i)
		hex.Encode(buf[0:8], u[0:4])
		buf[8] = '-'
		hex.Encode(buf[9:13], u[4:6])
		buf[13] = '-'
		hex.Encode(buf[14:18], u[6:8])
		buf[18] = '-'
		hex.Encode(buf[19:23], u[8:10])
		buf[23] = '-'
		hex.Encode(buf[24:36], u[10:16])
		b.BinaryBuilder.Append(buf[:])
	}
	out := b.NewArray()
	defer out.Release()
	data := out.Data()
	data.Retain()
	return data
}
