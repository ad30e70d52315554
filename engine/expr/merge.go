package expr

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
)

// MergeSchemas is the one rule by which the schemas of several inputs (or
// of one input's batches over time) combine into the schema a node's
// expressions see; `pipeline validate` and the run both use it, so they
// cannot disagree about a field. The result has every field of a and b: a's
// order, then b's new fields. For a field in both:
//   - the same type stays;
//   - structs merge field by field;
//   - int64 and float64 widen to float64;
//   - a null-typed field (a field known only by name) takes the other type;
//   - any other pair is a conflict: the field keeps a's type (the first one
//     seen), and the conflict is reported. A batch whose column has the other
//     type keeps its own column; expressions that need a's type fail on its
//     records, which on_error then handles.
//
// Metadata is b's (a sampled schema stays marked as such when either is).
func MergeSchemas(a, b *arrow.Schema) (*arrow.Schema, []Conflict) {
	if a == nil {
		return b, nil
	}
	if b == nil {
		return a, nil
	}
	var conflicts []Conflict
	fields := mergeFieldList(a.Fields(), b.Fields(), "", &conflicts)
	md := b.Metadata()
	if md.Len() == 0 {
		md = a.Metadata()
	}
	return arrow.NewSchema(fields, &md), conflicts
}

// Conflict is a field whose types cannot be merged.
type Conflict struct {
	Path      string // dotted
	Have, Got arrow.DataType
}

func (c Conflict) String() string { return fmt.Sprintf("%s (%s, then %s)", c.Path, c.Have, c.Got) }

func mergeFieldList(a, b []arrow.Field, prefix string, conflicts *[]Conflict) []arrow.Field {
	out := make([]arrow.Field, 0, len(a)+len(b))
	idx := make(map[string]int, len(a))
	for _, f := range a {
		idx[f.Name] = len(out)
		out = append(out, f)
	}
	for _, f := range b {
		i, ok := idx[f.Name]
		if !ok {
			idx[f.Name] = len(out)
			out = append(out, f)
			continue
		}
		out[i] = mergeOneField(out[i], f, prefix, conflicts)
	}
	return out
}

func mergeOneField(a, b arrow.Field, prefix string, conflicts *[]Conflict) arrow.Field {
	if arrow.TypeEqual(a.Type, b.Type) {
		return a
	}
	a.Nullable = a.Nullable || b.Nullable
	as, aok := a.Type.(*arrow.StructType)
	bs, bok := b.Type.(*arrow.StructType)
	switch {
	case aok && bok:
		a.Type = arrow.StructOf(mergeFieldList(as.Fields(), bs.Fields(), prefix+a.Name+".", conflicts)...)
		a.Nullable = true
	case isNumber(a.Type) && isNumber(b.Type):
		a.Type = arrow.PrimitiveTypes.Float64
	case a.Type.ID() == arrow.NULL:
		a.Type, a.Nullable = b.Type, true
	case b.Type.ID() == arrow.NULL:
		a.Nullable = true
	default:
		*conflicts = append(*conflicts, Conflict{Path: prefix + a.Name, Have: a.Type, Got: b.Type})
	}
	return a
}

func isNumber(t arrow.DataType) bool { return t.ID() == arrow.INT64 || t.ID() == arrow.FLOAT64 }
