package run

import (
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// addGivenIDs appends the record id column from the ids the source
// assigned (a push source, which answered them to its clients).
func addGivenIDs(mem memory.Allocator, rec arrow.RecordBatch, schema *arrow.Schema, ids []string) arrow.RecordBatch {
	b := array.NewStringBuilder(mem)
	defer b.Release()
	b.AppendValues(ids, nil)
	col := b.NewArray()
	defer col.Release()
	cols := append(append([]arrow.Array(nil), rec.Columns()...), col)
	return array.NewRecordBatch(schema, cols, rec.NumRows())
}
