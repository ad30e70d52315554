package expr

import (
	"errors"
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/compute"
	exprlang "github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/types"
)

var _ = compute.FilterRecordBatch

func TestScratch(t *testing.T) {
	env := types.Map{
		"classifications": types.Map{"churn_risk": types.Map{"label": types.String, "confidence": types.Float64}},
		"metadata":        types.Map{"queue": types.String},
		"n":               types.Int,
		"raw":             types.Any,
	}
	for _, src := range []string{
		"classifications.churn_rsk.label == 'x'",
		"metdata.queue == 'x'",
		"metadata.queue ==",
		"metadata.queue\n  && metdata.x",
		"héllo == 'x' && metdata",
		"metadata.queue > 1",
		"metadata.queue matches '('",
		"metadata.queue",
		"raw.x.y > 1",
		"n == 'a'",
		"'é' + ",
		"metadata.queue not in ['a']",
		"metadata.queue not contains 'a'",
		"'abc",
	} {
		_, err := exprlang.Compile(src, exprlang.Env(env), exprlang.AsBool())
		var fe *file.Error
		if errors.As(err, &fe) {
			fmt.Printf("%q: from=%d line=%d col=%d msg=%q\n", src, fe.From, fe.Line, fe.Column, fe.Message)
		} else {
			fmt.Printf("%q: %v\n", src, err)
		}
	}
}
