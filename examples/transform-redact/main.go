// Command transform-redact is a complete custom transform: it masks the
// e-mail addresses in one string field of every record, or drops the
// records that hold one.
package main

import (
	"context"
	"fmt"
	"regexp"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

var email = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)

// Redact is the transform. Its fields hold the decoded config.
type Redact struct {
	Field string `json:"field"`
	Drop  bool   `json:"drop"`
}

// Info declares the plugin and the attributes its block takes.
func (r *Redact) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindTransform, Type: "redact", Version: "1.0.0",
		Description: "Masks e-mail addresses in a field, or drops the records that hold one.",
		Config: []sdk.Attribute{
			{Name: "field", Type: sdk.String, Required: true, Description: "a top-level string field"},
			{Name: "drop", Type: sdk.Bool, Default: false, Description: "drop records with an address instead of masking it"},
		}}
}

// Configure receives the block, already checked against Info.
func (r *Redact) Configure(_ context.Context, cfg sdk.Config) error { return cfg.Decode(r) }

// Transform masks or drops; records without the field pass unchanged.
func (r *Redact) Transform(_ context.Context, b sdk.Batch) (sdk.Batch, error) {
	i := b.Record.Schema().FieldIndices(r.Field)
	if len(i) == 0 {
		return b, nil
	}
	col, ok := b.Record.Column(i[0]).(*array.String)
	if !ok {
		return b, fmt.Errorf("field %q is %s, not a string", r.Field, b.Record.Column(i[0]).DataType())
	}
	keep := make([]bool, b.Len())
	masked := array.NewStringBuilder(memory.DefaultAllocator)
	defer masked.Release()
	for row := 0; row < b.Len(); row++ {
		keep[row] = col.IsNull(row) || !email.MatchString(col.Value(row))
		if col.IsNull(row) {
			masked.AppendNull()
		} else {
			masked.Append(email.ReplaceAllString(col.Value(row), "[email]"))
		}
	}
	if r.Drop {
		return b.Filter(keep), nil
	}
	arr := masked.NewArray()
	defer arr.Release()
	return b.With(r.Field, arr)
}

func main() { sdk.Serve(&Redact{}) }
