package sdk

import (
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// With returns b with the field name set to col: replaced where b has that
// field (keeping the field's metadata when col has its type), added as the
// last one where it has not. col must hold one value per record; With takes
// its own reference to col. Use it in a Transform, so the records keep
// their ids.
func (b Batch) With(name string, col arrow.Array) (Batch, error) {
	if IsReserved(name) {
		return b, fmt.Errorf("field %q: names starting with %q are the engine's", name, ReservedPrefix)
	}
	if col.Len() != b.Len() {
		return b, fmt.Errorf("field %q: %d values for %d records", name, col.Len(), b.Len())
	}
	schema := b.Record.Schema()
	fields := append([]arrow.Field(nil), schema.Fields()...)
	cols := append([]arrow.Array(nil), b.Record.Columns()...)
	f := arrow.Field{Name: name, Type: col.DataType(), Nullable: true}
	if i := schema.FieldIndices(name); len(i) > 0 {
		if old := fields[i[0]]; arrow.TypeEqual(old.Type, col.DataType()) {
			f.Metadata = old.Metadata
		}
		fields[i[0]], cols[i[0]] = f, col
	} else {
		fields, cols = append(fields, f), append(cols, col)
	}
	md := schema.Metadata()
	b.Record = array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, int64(b.Len()))
	return b, nil
}

// Filter returns the records of b for which keep is true, in their order,
// each with its id and template values. keep holds one flag per record; a
// keep of another length is a bug and panics.
func (b Batch) Filter(keep []bool) Batch {
	if len(keep) != b.Len() {
		panic(fmt.Sprintf("sdk: Batch.Filter: %d flags for %d records", len(keep), b.Len()))
	}
	// Runs of kept records, so that long stretches are sliced, not copied.
	var runs [][2]int64
	var n int64
	for i := 0; i < len(keep); {
		if !keep[i] {
			i++
			continue
		}
		j := i
		for j < len(keep) && keep[j] {
			j++
		}
		runs = append(runs, [2]int64{int64(i), int64(j)})
		n += int64(j - i)
		i = j
	}
	if n == int64(b.Len()) {
		return b
	}
	out := Batch{}
	cols := make([]arrow.Array, b.Record.NumCols())
	for i, c := range b.Record.Columns() {
		cols[i] = take(c, runs)
		defer cols[i].Release()
	}
	out.Record = array.NewRecordBatch(b.Record.Schema(), cols, n)
	if b.ids != nil {
		out.ids = take(b.ids, runs).(*array.String)
	}
	for name, col := range b.templates {
		if out.templates == nil {
			out.templates = map[string]*array.String{}
		}
		out.templates[name] = take(col, runs).(*array.String)
	}
	return out
}

// take returns the rows of arr in runs ([from, to) pairs) as a new array.
func take(arr arrow.Array, runs [][2]int64) arrow.Array {
	switch len(runs) {
	case 0:
		return array.NewSlice(arr, 0, 0)
	case 1:
		return array.NewSlice(arr, runs[0][0], runs[0][1])
	}
	parts := make([]arrow.Array, len(runs))
	for i, r := range runs {
		parts[i] = array.NewSlice(arr, r[0], r[1])
		defer parts[i].Release()
	}
	out, err := array.Concatenate(parts, memory.DefaultAllocator)
	if err != nil {
		// Slices of one array always share its type.
		panic(fmt.Sprintf("sdk: concatenate %s: %v", arr.DataType(), err))
	}
	return out
}

// transformOutput is what a Transform returned for in, as it goes on the
// wire: its record with the id column put back. The caller releases it.
func transformOutput(in, out Batch) (arrow.RecordBatch, error) {
	if out.Record == nil {
		return nil, errors.New("the transform returned a batch without a record")
	}
	rows := out.Record.NumRows()
	if in.ids != nil && (out.ids == nil || int64(out.ids.Len()) != rows) {
		have := 0
		if out.ids != nil {
			have = out.ids.Len()
		}
		return nil, fmt.Errorf("the transform returned %d records but %d record ids: build the result from its input batch with Batch.With and Batch.Filter", rows, have)
	}
	if out.ids == nil {
		out.Record.Retain()
		return out.Record, nil
	}
	schema := out.Record.Schema()
	fields := append(append([]arrow.Field(nil), schema.Fields()...), arrow.Field{Name: IDColumn, Type: arrow.BinaryTypes.String, Nullable: true})
	cols := append(append([]arrow.Array(nil), out.Record.Columns()...), out.ids)
	md := schema.Metadata()
	return array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, rows), nil
}
