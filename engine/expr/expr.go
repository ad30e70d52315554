// Package expr compiles the per-record language (expr-lang) against an Arrow
// schema and evaluates it over whole record batches.
package expr

import (
	"errors"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// Error is a compile error. Line and Column are 1-based and count inside the
// expression source (for a template, inside the whole template string).
type Error struct {
	Line, Column int
	Msg          string
}

func (e *Error) Error() string { return e.Msg }

// Predicate is a compiled boolean expression (`where`, `when`).
type Predicate struct{}

// CompilePredicate compiles src against schema. With a nil schema only the
// syntax is checked. Errors are *Error.
func CompilePredicate(src string, schema *arrow.Schema) (*Predicate, error) {
	return nil, errors.New("not implemented")
}

// Filter returns the rows of rec for which the predicate is true. The caller
// releases the result.
func (p *Predicate) Filter(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	return nil, errors.New("not implemented")
}

// Template is a string with {{ expr }} placeholders.
type Template struct{}

// HasPlaceholders reports whether s contains a {{ }} placeholder.
func HasPlaceholders(s string) bool { return false }

// CompileTemplate compiles the placeholders in src against schema.
func CompileTemplate(src string, schema *arrow.Schema) (*Template, error) {
	return nil, errors.New("not implemented")
}

// Render evaluates the template for every row of rec.
func (t *Template) Render(rec arrow.RecordBatch) (*array.String, error) {
	return nil, errors.New("not implemented")
}
