package expr

import (
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/expr-lang/expr/file"
)

// Error is a compile error. Line and Column are 1-based and count inside the
// expression source (for a template, inside the whole template string).
// Columns count runes, as expr does.
type Error struct {
	Line, Column int
	Msg          string
}

func (e *Error) Error() string { return e.Msg }

// RowError is an evaluation error in one row of a batch: a type error that
// the schema could not rule out (a raw JSON field holding a string where a
// number is compared), or an integer modulo by zero. Nulls never cause one.
type RowError struct {
	Row  int    // 1-based row within the batch
	Expr string // the expression's source
	Err  error
}

func (e *RowError) Error() string {
	msg := e.Err.Error()
	var fe *file.Error
	if errors.As(e.Err, &fe) {
		msg = fe.Message
	}
	return fmt.Sprintf("row %d: %q: %s", e.Row, e.Expr, msg)
}

func (e *RowError) Unwrap() error { return e.Err }

// Predicate is a compiled boolean expression (`where`, `when`). It is safe
// for concurrent use.
type Predicate struct {
	src, attr string
	force     bool // run row by row only: tests and benchmarks compare the two
	plans     planCache[*predPlan]
}

// CompilePredicate compiles src against schema. With a nil schema only the
// syntax is checked. Errors are *Error.
func CompilePredicate(src string, schema *arrow.Schema) (*Predicate, error) {
	return CompilePredicateFor("predicate", src, schema)
}

// CompilePredicateFor is CompilePredicate for the attribute attr ("where",
// "when"), which names it in messages: "where must be a boolean
// expression, got string".
func CompilePredicateFor(attr, src string, schema *arrow.Schema) (*Predicate, error) {
	return compilePredicate(attr, src, schema, false)
}

func compilePredicate(attr, src string, schema *arrow.Schema, force bool) (*Predicate, error) {
	plan, err := buildPredicate(src, attr, schema, force)
	if err != nil {
		return nil, err
	}
	p := &Predicate{src: src, attr: attr, force: force}
	if schema != nil {
		p.plans.entries = []planEntry[*predPlan]{{schema: schema, plan: plan}}
	}
	return p, nil
}

// String returns the predicate's source.
func (p *Predicate) String() string { return p.src }

// plan returns the plan for schema, compiling it the first time a batch
// brings a schema other than the one the predicate was compiled for.
func (p *Predicate) plan(schema *arrow.Schema) (*predPlan, error) {
	return p.plans.get(schema, func(s *arrow.Schema) (*predPlan, error) {
		return buildPredicate(p.src, p.attr, s, p.force)
	})
}

// Eval evaluates the predicate for every row of rec. A row whose values are
// null where the predicate compares them does not match. An error is a
// compile error against a schema rec brought (*Error), or a *RowError.
func (p *Predicate) Eval(rec arrow.RecordBatch) (mask []bool, err error) {
	if p == nil {
		return nil, errors.New("expr: nil predicate")
	}
	plan, err := p.plan(rec.Schema())
	if err != nil {
		return nil, err
	}
	defer recovered(&err, fmt.Sprintf("evaluating %s %q", p.attr, p.src))
	bc := newBatchCtx(rec, plan.refs)
	mask = make([]bool, bc.n)
	if err := plan.root.eval(bc, nil, mask); err != nil {
		return nil, err
	}
	return mask, nil
}

// Filter returns the rows of rec for which the predicate is true. The caller
// releases the result. All columns are kept, engine bookkeeping included.
// When every row matches the result is rec itself, retained; when none
// does it is a zero-row slice of rec.
func (p *Predicate) Filter(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	mask, err := p.Eval(rec)
	if err != nil {
		return nil, err
	}
	return filterByMask(rec, mask)
}

func filterByMask(rec arrow.RecordBatch, mask []bool) (out arrow.RecordBatch, err error) {
	count, first, last := 0, -1, -1
	for i, m := range mask {
		if m {
			count++
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	switch {
	case count == len(mask):
		rec.Retain()
		return rec, nil
	case count == 0:
		return rec.NewSlice(0, 0), nil
	case last-first+1 == count:
		// One run of rows: a zero-copy slice.
		return rec.NewSlice(int64(first), int64(last+1)), nil
	}
	bits := make([]byte, bitutil.BytesForBits(int64(len(mask))))
	for i, m := range mask {
		if m {
			bitutil.SetBit(bits, i)
		}
	}
	filter := array.NewBoolean(len(mask), memory.NewBufferBytes(bits), nil, 0)
	defer filter.Release()
	defer recovered(&err, "filtering batch")
	return compute.FilterRecordBatch(context.Background(), rec, filter, compute.DefaultFilterOptions())
}
