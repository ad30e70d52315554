package run

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/expr"
)

// A source's schema may grow between batches (a field first appears later),
// and a resumed run may see fewer fields than the schema the expressions were
// checked against. The runner keeps one merged schema per source and pads
// every batch to it, so expressions compiled against it always find their
// fields (as nulls when absent) and each source's batches share one schema.

// mergeSchema is expr.MergeSchemas, the one rule validate uses too: a
// field whose types conflict keeps the first type, and a batch that brings
// the other keeps its own column (conform).
func mergeSchema(a, b *arrow.Schema) *arrow.Schema {
	m, _ := expr.MergeSchemas(a, b)
	return m
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
	schema := target
	var fields []arrow.Field // set when a column keeps a type other than target's
	for i, f := range target.Fields() {
		idx := rec.Schema().FieldIndices(f.Name)
		var err error
		if len(idx) == 0 {
			cols[i] = nullArray(mem, f.Type, n)
		} else if cols[i], err = conformArray(mem, rec.Column(idx[0]), f.Type); err != nil {
			return nil, err
		}
		if !arrow.TypeEqual(cols[i].DataType(), f.Type) {
			if fields == nil {
				fields = append([]arrow.Field(nil), target.Fields()...)
			}
			// The batch's own field, metadata included (a raw JSON column
			// stays marked as one).
			fields[i] = rec.Schema().Field(idx[0])
			fields[i].Type, fields[i].Nullable = cols[i].DataType(), true
		}
	}
	if fields != nil {
		// A field whose type changed: this batch keeps its own column, and
		// expressions compiled for the target's type fail on its records
		// (on_error).
		md := target.Metadata()
		schema = arrow.NewSchema(fields, &md)
	}
	return array.NewRecordBatch(schema, cols, rec.NumRows()), nil
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
		// A child whose type changed keeps its own column (conform): the
		// struct's type must say so.
		typ := arrow.DataType(st)
		for i, f := range st.Fields() {
			if !arrow.TypeEqual(children[i].DataType(), f.Type) {
				fields := append([]arrow.Field(nil), st.Fields()...)
				for k := range fields {
					if j, found := srcType.FieldIdx(fields[k].Name); found && !arrow.TypeEqual(children[k].DataType(), fields[k].Type) {
						fields[k] = srcType.Field(j)
						fields[k].Nullable = true
					}
				}
				typ = arrow.StructOf(fields...)
				break
			}
		}
		data := array.NewData(typ, sa.Len(), []*memory.Buffer{validity}, children, sa.NullN(), 0)
		for _, c := range children {
			c.Release()
		}
		defer data.Release()
		return array.MakeFromData(data), nil
	}
	if isNumeric(t) && isNumeric(arr.DataType()) {
		return compute.CastArray(context.Background(), arr, compute.SafeCastOptions(t))
	}
	// Not a shape we can change (the field's type changed): keep the
	// column as it is; conform gives the batch a schema that says so.
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
