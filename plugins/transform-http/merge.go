package transformhttp

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// merge returns b with results[i] set at path into of record i.
//
// The results are decoded by sdk/arrowjson's Decoder, each wrapped as
// {"a":{"b":result}} for into = "a.b", so they get the types a JSON source
// would give them: objects of one shape become a struct, numbers int64 or
// float64, and results that disagree (an object here, a string there) a raw
// JSON column. A nested into extends the record's struct at that path (a
// new or replaced child) and creates it where the record has none. An
// explicit null result is kept as an explicit null (listed in
// sdk.NullsColumn, as the decoder lists it), so it is written back as null.
//
// The record is rebuilt here rather than with Batch.With: With drops the
// field metadata that marks a raw JSON column, and refuses to touch
// sdk.NullsColumn. The ids are b's, untouched.
func merge(b sdk.Batch, into []string, results []json.RawMessage) (sdk.Batch, error) {
	var prefix, suffix []byte
	for _, k := range into {
		prefix = append(arrowjson.AppendString(append(prefix, '{'), k), ':')
		suffix = append(suffix, '}')
	}
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	line := make([]byte, 0, 256)
	for i, r := range results {
		line = append(append(append(line[:0], prefix...), r...), suffix...)
		if err := dec.Append(line); err != nil {
			return b, fmt.Errorf("result for record %d (id %q): %w", i+1, b.ID(i), err)
		}
	}
	got := dec.Flush()
	defer got.Release()

	n := b.Len()
	schema := b.Record.Schema()
	fields := append([]arrow.Field(nil), schema.Fields()...)
	cols := append([]arrow.Array(nil), b.Record.Columns()...)
	var owned []arrow.Array // arrays made here, released once the record holds them
	defer func() {
		for _, a := range owned {
			a.Release()
		}
	}()

	var oldF *arrow.Field
	var oldCol arrow.Array
	at := -1
	if idx := schema.FieldIndices(into[0]); len(idx) > 0 {
		at = idx[0]
		oldF, oldCol = &fields[at], cols[at]
	}
	f, col, err := mergeField(oldF, oldCol, got.Schema().Field(0), got.Column(0), into, &owned)
	if err != nil {
		return b, err
	}
	if at >= 0 {
		fields[at], cols[at] = f, col
	} else if k := len(fields) - 1; k >= 0 && fields[k].Name == sdk.NullsColumn {
		// The nulls column stays last, as the decoder puts it.
		fields = append(fields[:k], f, fields[k])
		cols = append(cols[:k], col, cols[k])
	} else {
		fields, cols = append(fields, f), append(cols, col)
	}

	var newNulls *array.List
	if idx := got.Schema().FieldIndices(sdk.NullsColumn); len(idx) > 0 {
		newNulls, _ = got.Column(idx[0]).(*array.List)
	}
	nullsAt := -1
	var oldNulls *array.List
	for i := range fields {
		if fields[i].Name == sdk.NullsColumn {
			nullsAt = i
			oldNulls, _ = cols[i].(*array.List)
		}
	}
	if newNulls != nil || oldNulls != nil {
		nulls := mergeNulls(oldNulls, newNulls, arrowjson.NullPath(keysAsAny(into)...), n)
		owned = append(owned, nulls)
		if nullsAt >= 0 {
			cols[nullsAt] = nulls
		} else {
			fields, cols = append(fields, got.Schema().Field(got.Schema().FieldIndices(sdk.NullsColumn)[0])), append(cols, nulls)
		}
	}
	md := schema.Metadata()
	out := b
	out.Record = array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, int64(n))
	return out, nil
}

// mergeField puts newCol (the decoded {path[1]: {…}} column, field newF) at
// path into the record's field oldF (nil when the record lacks it).
func mergeField(oldF *arrow.Field, oldCol arrow.Array, newF arrow.Field, newCol arrow.Array, path []string, owned *[]arrow.Array) (arrow.Field, arrow.Array, error) {
	newF.Name = path[0]
	if len(path) == 1 || oldF == nil || oldF.Type.ID() == arrow.NULL {
		return newF, newCol, nil
	}
	oldSt, ok := oldCol.(*array.Struct)
	if !ok {
		return arrow.Field{}, nil, fmt.Errorf("into: the records' field %q is %s, not an object, so %q cannot go inside it: choose another into", path[0], oldF.Type, strings.Join(path[1:], "."))
	}
	newSt := newCol.(*array.Struct) // every decoded result was wrapped in objects
	oldType := oldSt.DataType().(*arrow.StructType)
	childFields := append([]arrow.Field(nil), oldType.Fields()...)
	children := make([]arrow.Array, len(childFields))
	for j := range children {
		children[j] = oldSt.Field(j)
	}
	var oldChildF *arrow.Field
	var oldChild arrow.Array
	j, found := oldType.FieldIdx(path[1])
	if found {
		oldChildF, oldChild = &childFields[j], children[j]
	}
	cf, cc, err := mergeField(oldChildF, oldChild, newSt.DataType().(*arrow.StructType).Field(0), newSt.Field(0), path[1:], owned)
	if err != nil {
		return arrow.Field{}, nil, fmt.Errorf("%s.%w", path[0], err)
	}
	if found {
		childFields[j], children[j] = cf, cc
	} else {
		childFields, children = append(childFields, cf), append(children, cc)
	}

	// A record is an object here where it was one before or where a result
	// goes under it (always, as the decoder makes every wrapping object;
	// even a null result is an explicit null inside it). Children of a null
	// struct are null, as the decoder and the Arrow builders leave them, so
	// the other children of a newly valid row stay absent.
	n := oldSt.Len()
	valid := memory.NewResizableBuffer(memory.DefaultAllocator)
	valid.Resize(int(bitutil.BytesForBits(int64(n))))
	bits := valid.Bytes()
	nulls := 0
	for i := 0; i < n; i++ {
		if oldSt.IsValid(i) || newSt.IsValid(i) {
			bitutil.SetBit(bits, i)
		} else {
			bitutil.ClearBit(bits, i)
			nulls++
		}
	}
	childData := make([]arrow.ArrayData, len(children))
	for i, c := range children {
		childData[i] = c.Data()
	}
	typ := arrow.StructOf(childFields...)
	data := array.NewData(typ, n, []*memory.Buffer{valid}, childData, nulls, 0)
	valid.Release()
	st := array.NewStructData(data)
	data.Release()
	*owned = append(*owned, st)
	f := arrow.Field{Name: path[0], Type: typ, Nullable: true, Metadata: oldF.Metadata}
	return f, st, nil
}

// mergeNulls is the record's explicit-null paths with those under prefix
// (the into path, replaced) dropped and the results' added.
func mergeNulls(old, added *array.List, prefix string, n int) arrow.Array {
	bld := array.NewListBuilder(memory.DefaultAllocator, arrow.BinaryTypes.String)
	defer bld.Release()
	vals := bld.ValueBuilder().(*array.StringBuilder)
	var row []string
	for i := 0; i < n; i++ {
		row = row[:0]
		if old != nil && old.IsValid(i) {
			s, e := old.ValueOffsets(i)
			strs := old.ListValues().(*array.String)
			for k := s; k < e; k++ {
				p := strs.Value(int(k))
				if p == prefix || strings.HasPrefix(p, prefix+".") || strings.HasPrefix(p, prefix+"[") {
					continue
				}
				row = append(row, p)
			}
		}
		if added != nil && added.IsValid(i) {
			s, e := added.ValueOffsets(i)
			strs := added.ListValues().(*array.String)
			for k := s; k < e; k++ {
				row = append(row, strs.Value(int(k)))
			}
		}
		if len(row) == 0 {
			bld.AppendNull()
			continue
		}
		bld.Append(true)
		for _, p := range row {
			vals.Append(p)
		}
	}
	return bld.NewArray()
}

func keysAsAny(keys []string) []any {
	out := make([]any, len(keys))
	for i, k := range keys {
		out[i] = k
	}
	return out
}
