package arrowjson

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk"
)

// typeString renders a field's type compactly: raw JSON columns are "raw",
// nested types are spelled out: struct<a: int64, b: list<utf8>>.
func typeString(f arrow.Field) string {
	if IsRaw(f) {
		return "raw"
	}
	switch t := f.Type.(type) {
	case *arrow.StructType:
		parts := make([]string, len(t.Fields()))
		for i, c := range t.Fields() {
			parts[i] = c.Name + ": " + typeString(c)
		}
		return "struct<" + strings.Join(parts, ", ") + ">"
	case *arrow.ListType:
		return "list<" + typeString(t.ElemField()) + ">"
	default:
		return f.Type.String()
	}
}

// schemaString renders a schema as "name: type; name: type".
func schemaString(s *arrow.Schema) string {
	parts := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		parts[i] = f.Name + ": " + typeString(f)
	}
	return strings.Join(parts, "; ")
}

// mustAppend appends lines to d, failing the test on an error.
func mustAppend(t testing.TB, d *Decoder, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if err := d.Append([]byte(l)); err != nil {
			t.Fatalf("Append(%s): %v", l, err)
		}
	}
}

// encodeRows encodes every row of rec.
func encodeRows(e *Encoder, rec arrow.RecordBatch) []string {
	var out []string
	for i := 0; i < int(rec.NumRows()); i++ {
		out = append(out, string(e.AppendRow(nil, rec, i)))
	}
	return out
}

// nullsOf returns the sdk.NullsColumn of every row: nil for a null entry.
func nullsOf(t testing.TB, rec arrow.RecordBatch) [][]string {
	t.Helper()
	idx := rec.Schema().FieldIndices(sdk.NullsColumn)
	if len(idx) == 0 {
		return nil
	}
	l := rec.Column(idx[0]).(*array.List)
	vals := l.ListValues().(*array.String)
	out := make([][]string, rec.NumRows())
	for i := range out {
		if l.IsNull(i) {
			continue
		}
		s, e := l.ValueOffsets(i)
		out[i] = []string{}
		for j := s; j < e; j++ {
			out[i] = append(out[i], vals.Value(int(j)))
		}
	}
	return out
}

// unmarshal decodes JSON text keeping numbers as json.Number.
func unmarshal(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data")
	}
	return v, nil
}

// jsonEqual compares decoded JSON values; numbers are equal when their
// text, their int64 value or their float64 value is.
func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		if x == y {
			return true
		}
		xi, err1 := strconv.ParseInt(string(x), 10, 64)
		yi, err2 := strconv.ParseInt(string(y), 10, 64)
		if err1 == nil && err2 == nil && xi == yi {
			return true
		}
		xf, err1 := strconv.ParseFloat(string(x), 64)
		yf, err2 := strconv.ParseFloat(string(y), 64)
		return err1 == nil && err2 == nil && xf == yf
	default:
		return a == b
	}
}

// assertSameJSON fails unless got and want are semantically equal JSON.
func assertSameJSON(t testing.TB, got, want string) {
	t.Helper()
	g, err := unmarshal(got)
	if err != nil {
		t.Fatalf("output is not valid JSON: %v\n%s", err, got)
	}
	w, err := unmarshal(want)
	if err != nil {
		t.Fatalf("bad test input %q: %v", want, err)
	}
	if !jsonEqual(g, w) {
		t.Fatalf("JSON differs\n got: %s\nwant: %s", got, want)
	}
}

// roundTrip decodes lines into one batch and encodes them back.
func roundTrip(t testing.TB, lines ...string) []string {
	t.Helper()
	d := NewDecoder(Options{})
	defer d.Release()
	mustAppend(t, d, lines...)
	rec := d.Flush()
	defer rec.Release()
	return encodeRows(NewEncoder(), rec)
}
