package run

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// A source's schema may grow between batches (a field first appears later),
// and a resumed run may see fewer fields than the schema the expressions were
// checked against. The runner keeps one merged schema per source and pads
// every batch to it, so expressions compiled against it always find their
// fields (as nulls when absent) and each source's batches share one schema.

// mergeSchema returns a schema with every field of a and b: a's order, then
// b's new fields. For a field in both, structs merge recursively, int64 and
// float64 widen to float64, and otherwise b's type wins.
func mergeSchema(a, b *arrow.Schema) *arrow.Schema {
	if a == nil {
		return b
	}
	fields := mergeFields(a.Fields(), b.Fields())
	md := b.Metadata()
	return arrow.NewSchema(fields, &md)
}

func mergeFields(a, b []arrow.Field) []arrow.Field {
	out := make([]arrow.Field, 0, len(a)+len(b))
	idx := make(map[string]int, len(a))
	for _, f := range a {
		idx[f.Name] = len(out)
		out = append(out, f)
	}
	for _, f := range b {
		i, ok := idx[f.Name]
		if !ok {
			out = append(out, f)
			continue
		}
		out[i] = mergeField(out[i], f)
	}
	return out
}

func mergeField(a, b arrow.Field) arrow.Field {
	if arrow.TypeEqual(a.Type, b.Type) {
		return a
	}
	as, aok := a.Type.(*arrow.StructType)
	bs, bok := b.Type.(*arrow.StructType)
	if aok && bok {
		a.Type = arrow.StructOf(mergeFields(as.Fields(), bs.Fields())...)
		a.Nullable = true
		return a
	}
	if isNumeric(a.Type) && isNumeric(b.Type) {
		a.Type = arrow.PrimitiveTypes.Float64
		return a
	}
	return b
}

func isNumeric(t arrow.DataType) bool {
	return t.ID() == arrow.INT64 || t.ID() == arrow.FLOAT64
}

// conform returns rec laid out as target (a merge of rec's schema): missing
// fields become nulls, ints are cast to floats where target widened them.
// It returns rec itself, retained, when nothing needs to change.
func conform(mem memory.Allocator, rec arrow.RecordBatch, target *arrow.Schema) (arrow.RecordBatch, error) {
	if rec.Schema().Equal(target) {
		rec.Retain()
		return rec, nil
	}
	n := int(rec.NumRows())
	cols := make([]arrow.Array, target.NumFields())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for i, f := range target.Fields() {
		idx := rec.Schema().FieldIndices(f.Name)
		var err error
		if len(idx) == 0 {
			cols[i] = nullArray(mem, f.Type, n)
		} else if cols[i], err = conformArray(mem, rec.Column(idx[0]), f.Type); err != nil {
			return nil, err
		}
	}
	return array.NewRecordBatch(target, cols, rec.NumRows()), nil
}

func conformArray(mem memory.Allocator, arr arrow.Array, t arrow.DataType) (arrow.Array, error) {
	if arrow.TypeEqual(arr.DataType(), t) {
		arr.Retain()
		return arr, nil
	}
	st, ok := t.(*arrow.StructType)
	sa, isStruct := arr.(*array.Struct)
	if ok && isStruct {
		srcType := sa.DataType().(*arrow.StructType)
		children := make([]arrow.ArrayData, st.NumFields())
		for i, f := range st.Fields() {
			var child arrow.Array
			if j, found := srcType.FieldIdx(f.Name); found {
				var err error
				if child, err = conformArray(mem, sa.Field(j), f.Type); err != nil {
					for _, c := range children[:i] {
						c.Release()
					}
					return nil, err
				}
			} else {
				child = nullArray(mem, f.Type, sa.Len())
			}
			children[i] = child.Data()
			children[i].Retain()
			child.Release()
		}
		// The children are already sliced to the struct's rows, so the
		// validity bitmap must start at bit 0 too.
		var validity *memory.Buffer
		if src := sa.Data().Buffers()[0]; src != nil && sa.NullN() > 0 {
			if off := sa.Data().Offset(); off == 0 {
				validity = src
			} else {
				validity = memory.NewResizableBuffer(mem)
				validity.Resize(int(bitutil.BytesForBits(int64(sa.Len()))))
				bitutil.CopyBitmap(src.Bytes(), off, sa.Len(), validity.Bytes(), 0)
				defer validity.Release()
			}
		}
		data := array.NewData(st, sa.Len(), []*memory.Buffer{validity}, children, sa.NullN(), 0)
		for _, c := range children {
			c.Release()
		}
		defer data.Release()
		return array.MakeFromData(data), nil
	}
	if isNumeric(t) && isNumeric(arr.DataType()) {
		return compute.CastArray(context.Background(), arr, compute.SafeCastOptions(t))
	}
	// Not a shape we can change: keep the column as it is. The merged
	// schema took the newer type, so this is an older batch's leftover.
	arr.Retain()
	return arr, nil
}

// withPaths returns schema with a null-typed field for every path it lacks,
// inside structs where the path goes through them. A path that runs into a
// field that is not a struct is left alone: the expression compiler says
// what is wrong with it.
func withPaths(schema *arrow.Schema, paths [][]string) *arrow.Schema {
	fields := schema.Fields()
	changed := false
	for _, p := range paths {
		var added bool
		fields, added = addPath(fields, p)
		changed = changed || added
	}
	if !changed {
		return schema
	}
	md := schema.Metadata()
	return arrow.NewSchema(fields, &md)
}

func addPath(fields []arrow.Field, path []string) ([]arrow.Field, bool) {
	if len(path) == 0 {
		return fields, false
	}
	for i, f := range fields {
		if f.Name != path[0] {
			continue
		}
		st, ok := f.Type.(*arrow.StructType)
		if !ok || len(path) == 1 {
			return fields, false
		}
		children, added := addPath(st.Fields(), path[1:])
		if !added {
			return fields, false
		}
		out := append([]arrow.Field(nil), fields...)
		out[i].Type = arrow.StructOf(children...)
		return out, true
	}
	return append(append([]arrow.Field(nil), fields...), nullField(path)), true
}

// nullField is a field for path: nested structs down to a null leaf.
func nullField(path []string) arrow.Field {
	if len(path) == 1 {
		return arrow.Field{Name: path[0], Type: arrow.Null, Nullable: true}
	}
	return arrow.Field{Name: path[0], Type: arrow.StructOf(nullField(path[1:])), Nullable: true}
}

// nullArray is an all-null array of type t. arrow-go's MakeArrayOfNull does
// not handle structs with a null-typed child, which withPaths makes.
func nullArray(mem memory.Allocator, t arrow.DataType, n int) arrow.Array {
	switch t := t.(type) {
	case *arrow.NullType:
		return array.NewNull(n)
	case *arrow.StructType:
		children := make([]arrow.ArrayData, t.NumFields())
		for i, f := range t.Fields() {
			c := nullArray(mem, f.Type, n)
			children[i] = c.Data()
			children[i].Retain()
			c.Release()
		}
		validity := memory.NewResizableBuffer(mem)
		validity.Resize(int(bitutil.BytesForBits(int64(n))))
		clear(validity.Bytes())
		data := array.NewData(t, n, []*memory.Buffer{validity}, children, n, 0)
		validity.Release()
		for _, c := range children {
			c.Release()
		}
		defer data.Release()
		return array.MakeFromData(data)
	}
	return array.MakeArrayOfNull(mem, t, n)
}
