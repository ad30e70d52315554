package run

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/sdk"
)

// A record on which a stage's expression fails (a field whose type changed
// mid-stream, an integer modulo by zero) either stops the run, naming the
// record's place in its input (on_error = "fail", the default), or is
// dropped, counted and logged with that place (on_error = "skip").

// showRejected is how many rejected records a stage logs one by one; the
// rest are counted.
const showRejected = 10

// stage is one block whose expressions are evaluated per record.
type stage struct {
	name  string // "filter high_churn", "sink crm"
	skip  bool
	shown atomic.Int64
	count atomic.Int64
}

func newStage(kind, name string, skip bool) *stage {
	return &stage{name: kind + " " + name, skip: skip}
}

// guarded applies f to rec and hands each output to emit, with the slice of
// rec it came from. When f fails on records of rec (an *expr.RowError or
// *expr.Error), those records are rejected (or fail the run) and f is
// applied to each run of the other records on its own: slices of rec that
// keep its schema, so f's compiled plans still fit.
func (r *Runner) guarded(st *stage, rec arrow.RecordBatch, e *entry, f func(arrow.RecordBatch) (arrow.RecordBatch, error), emit func(in, out arrow.RecordBatch) error) error {
	out, err := f(rec)
	if err == nil {
		defer out.Release()
		return emit(rec, out)
	}
	if !isRecordError(err) {
		if he := (*host.Error)(nil); errors.As(err, &he) {
			return err // a plugin's error names the plugin already
		}
		return fmt.Errorf("%s: %w", st.name, err)
	}
	n := int(rec.NumRows())
	keep := make([]bool, n)
	eval := func(b arrow.RecordBatch) error {
		out, err := f(b)
		if err == nil {
			out.Release()
		}
		return err
	}
	if err := r.findBad(st, rec, e, 0, n, keep, eval); err != nil {
		return err
	}
	for lo := 0; lo < n; {
		if !keep[lo] {
			lo++
			continue
		}
		hi := lo
		for hi < n && keep[hi] {
			hi++
		}
		piece := rec.NewSlice(int64(lo), int64(hi))
		out, err := f(piece)
		if err != nil {
			piece.Release()
			return fmt.Errorf("%s: %w", st.name, err)
		}
		err = emit(piece, out)
		out.Release()
		piece.Release()
		if err != nil {
			return err
		}
		lo = hi
	}
	return nil
}

// findBad marks in keep the rows in [lo, hi) that eval accepts, rejecting
// the others.
func (r *Runner) findBad(st *stage, rec arrow.RecordBatch, e *entry, lo, hi int, keep []bool, eval func(arrow.RecordBatch) error) error {
	for lo < hi {
		sl := rec.NewSlice(int64(lo), int64(hi))
		err := eval(sl)
		sl.Release()
		if err == nil {
			for i := lo; i < hi; i++ {
				keep[i] = true
			}
			return nil
		}
		var re *expr.RowError
		var ce *expr.Error
		switch {
		case errors.As(err, &re) && re.Row >= 1 && lo+re.Row-1 < hi:
			bad := lo + re.Row - 1
			if bad > lo {
				// The rows before the bad one are evaluated again on their
				// own: evaluation stopped at the bad row.
				if err := r.findBad(st, rec, e, lo, bad, keep, eval); err != nil {
					return err
				}
			}
			if err := r.reject(st, rec, e, bad, fmt.Sprintf("%q: %s", re.Expr, firstLine(re.Err.Error()))); err != nil {
				return err
			}
			lo = bad + 1
		case errors.As(err, &ce):
			// The expression does not compile against this batch's schema (a
			// field changed type): it fails on every record of the batch.
			for i := lo; i < hi; i++ {
				if err := r.reject(st, rec, e, i, firstLine(ce.Msg)); err != nil {
					return err
				}
			}
			return nil
		default:
			return fmt.Errorf("%s: %w", st.name, err)
		}
	}
	return nil
}

// reject drops row i of rec, or fails the run when the stage does not skip.
func (r *Runner) reject(st *stage, rec arrow.RecordBatch, e *entry, i int, cause string) error {
	at := e.place(rec, i)
	if !st.skip {
		return fmt.Errorf("%s: %s: %s (set on_error = \"skip\" in %s to skip such records)", st.name, at, cause, st.name)
	}
	r.Stats.Rejected.Add(1)
	st.count.Add(1)
	switch k := st.shown.Add(1); {
	case k <= showRejected:
		r.opts.Logger.Warn("record rejected", "stage", st.name, "at", at, "error", cause)
	case k == showRejected+1:
		r.opts.Logger.Warn("more records rejected; they are counted, not logged", "stage", st.name)
	}
	return nil
}

// place names row i of rec, a batch that came from e, by its place in the
// source's input ("calls.jsonl:3001"), else by its record id.
func (e *entry) place(rec arrow.RecordBatch, i int) string {
	var id string
	if idx := rec.Schema().FieldIndices(sdk.IDColumn); len(idx) > 0 {
		if ids, ok := rec.Column(idx[0]).(*array.String); ok && ids.IsValid(i) {
			id = ids.Value(i)
		}
	}
	if e != nil && e.ids != nil && e.origin.name != "" && id != "" {
		for j := 0; j < e.ids.Len() && j < len(e.origin.places); j++ {
			if e.ids.Value(j) != id {
				continue
			}
			p := strconv.FormatInt(e.origin.places[j], 10)
			if e.origin.unit == "row" {
				return e.origin.name + " row " + p
			}
			return e.origin.name + ":" + p
		}
	}
	if id != "" {
		return "record " + id
	}
	return "row " + strconv.Itoa(i+1) + " of a batch"
}

// firstLine drops the source excerpt expr adds under a message.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
