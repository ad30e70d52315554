package expr

import "github.com/apache/arrow-go/v18/arrow"

// FilterByMask returns the rows of rec where mask is true, as Filter does
// with a predicate's mask. The caller releases the result.
func FilterByMask(rec arrow.RecordBatch, mask []bool) (arrow.RecordBatch, error) {
	return filterByMask(rec, mask)
}
