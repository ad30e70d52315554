package expr

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

// FuzzCompileValue: any text compiles to a value expression or is refused
// with an error; a compiled one evaluates to one array of its own type per
// row of the batch, or fails with an error. Never a panic or an internal
// error.
func FuzzCompileValue(f *testing.F) {
	for _, tc := range predicateCases {
		f.Add(tc.src)
	}
	for _, s := range []string{
		"", "(", "metadata.customer_id", "'normal'", "n * 100", "n > 1 ? 'a' : 'b'", "n % 0",
		"classifications.churn_risk.confidence > 0.9 ? 'urgent' : 'normal'", "tags", "metadata", "nil",
		"{\"a\": n}", "n > 1 ? n : 'x'", "toJSON(metadata)", "len(text) < 30", "text[0:3]", "1..3",
	} {
		f.Add(s)
	}
	schema := sampleSchema()
	rec := batch(f, schema, sampleRows)
	f.Fuzz(func(t *testing.T, src string) {
		v, err := CompileValue("set", src, schema)
		if err != nil {
			if strings.Contains(err.Error(), "internal error") {
				t.Fatalf("internal error: %v", err)
			}
			return
		}
		arr, err := v.Eval(rec)
		if err != nil {
			if strings.Contains(err.Error(), "internal error") {
				t.Fatalf("internal error: %v", err)
			}
			return
		}
		defer arr.Release()
		if int64(arr.Len()) != rec.NumRows() {
			t.Fatalf("%q: %d values for %d rows", src, arr.Len(), rec.NumRows())
		}
		if typ := v.Type(); typ != nil && !arrow.TypeEqual(typ, arr.DataType()) {
			t.Fatalf("%q: Type() says %s, Eval gave %s", src, typ, arr.DataType())
		}
	})
}
