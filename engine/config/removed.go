package config

import (
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/sdk"
)

// removal says which transform removed a field from the records, and how.
// A removed field is known to be absent from every record downstream, so
// reading it there is an error even against a sampled schema, where a field
// the sample merely lacks is only a warning.
type removal struct {
	by *Transform
	// how is "dropped", "left out by the keep of" or "renamed to NAME".
	how string
	// at is the entry of drop, keep or rename that removed it, or the
	// transform's header when none names it.
	at hcl.Range
	// hint says what to do instead.
	hint string
}

// removals maps the dotted path of each field known to be absent from a
// node's output to what removed it. A path is the outermost field that went
// (metadata, not metadata.queue, when the whole struct went).
type removals map[string]removal

// find returns the removal of path or of the struct that holds it.
func (rs removals) find(path []string) (removal, bool) {
	for i := len(path); i > 0; i-- {
		if r, ok := rs[strings.Join(path[:i], ".")]; ok {
			return r, true
		}
	}
	return removal{}, false
}

// String reads after `field "x"`: `was dropped by transform "slim" (p.hcl:7)`.
func (r removal) String() string {
	return fmt.Sprintf("was %s transform %q (%s)", r.how, r.by.Name, at(r.at))
}

// detail says that the field at path, which n reads, was removed upstream.
func (r removal) detail(path string, n Node) string {
	return fmt.Sprintf("field %q %s, so no record that reaches %s has it. %s", path, r, n.Addr(), r.hint)
}

// transformRemovals is what leaves t removed: the fields of in (its input
// schema) that out (its output schema) lacks, each with what removed it,
// and the removals upstream (inherited) of fields that out does not carry
// again.
func transformRemovals(t *Transform, in, out *arrow.Schema, inherited removals) removals {
	rs := removals{}
	for path, r := range inherited {
		if missing, _ := missingPath(out.Fields(), strings.Split(path, ".")); missing != nil {
			rs[path] = r
		}
	}
	for _, path := range gonePaths(in.Fields(), out.Fields(), nil) {
		rs[strings.Join(path, ".")] = t.removalOf(path)
	}
	return rs
}

// removalOf says which attribute of t removed the field at path.
func (t *Transform) removalOf(path []string) removal {
	name := strings.Join(path, ".")
	for _, d := range t.Drop {
		if d.Path == name || strings.HasPrefix(name, d.Path+".") {
			return removal{by: t, how: "dropped by", at: d.Range, hint: "Read it before that transform, or take it out of its drop."}
		}
	}
	for _, r := range t.Rename {
		if r.From == name {
			return removal{by: t, how: fmt.Sprintf("renamed to %q by", r.To), at: r.Range,
				hint: fmt.Sprintf("Read it by its new name, %q.", strings.Join(append(append([]string(nil), path[:len(path)-1]...), r.To), "."))}
		}
	}
	if len(t.Keep) > 0 {
		return removal{by: t, how: "left out by the keep of", at: t.Keep[0].Range, hint: "Read it before that transform, or add it to its keep."}
	}
	return removal{by: t, how: "removed by", at: t.DefRange, hint: "Read it before that transform."}
}

// gonePaths lists the outermost fields of in that out lacks, looking into
// the structs both have. The engine's own columns are never removed.
func gonePaths(in, out []arrow.Field, prefix []string) [][]string {
	var gone [][]string
	for _, f := range in {
		if len(prefix) == 0 && sdk.IsReserved(f.Name) {
			continue
		}
		path := append(append([]string(nil), prefix...), f.Name)
		var o *arrow.Field
		for i := range out {
			if out[i].Name == f.Name {
				o = &out[i]
				break
			}
		}
		if o == nil {
			gone = append(gone, path)
			continue
		}
		st, ok := f.Type.(*arrow.StructType)
		ost, ok2 := o.Type.(*arrow.StructType)
		if ok && ok2 {
			gone = append(gone, gonePaths(st.Fields(), ost.Fields(), path)...)
		}
	}
	return gone
}

// unionRemovals is what the union of a node's inputs has removed: a field
// removed in one input and that no other input may carry (because it
// removed it too, or its complete schema lacks it). schemas are the inputs'
// schemas, in the order of removed.
func unionRemovals(removed []removals, schemas []*arrow.Schema) removals {
	if len(removed) == 1 {
		return removed[0]
	}
	out := removals{}
	for _, rs := range removed {
		for path, r := range rs {
			if _, done := out[path]; done {
				continue
			}
			p := strings.Split(path, ".")
			mayCarry := false
			for i, other := range removed {
				if _, ok := other.find(p); ok {
					continue
				}
				s := schemas[i]
				if missing, _ := missingPath(s.Fields(), p); missing == nil || sdk.IsSampled(s) {
					mayCarry = true
				}
			}
			if !mayCarry {
				out[path] = r
			}
		}
	}
	return out
}

// checkRemoved reports each field of paths (what e, an expression of n,
// reads) that in lacks because a transform upstream removed it: an error
// whatever the source's sampling, at the field's name, naming the
// transform. It returns in with a null field for each, so that the
// compiler and the sample check do not report it again.
func checkRemoved(p *Pipeline, n Node, e *Expr, summary string, paths [][]string, in *arrow.Schema, gone removals) (*arrow.Schema, hcl.Diagnostics) {
	if len(gone) == 0 {
		return in, nil
	}
	var diags hcl.Diagnostics
	fields := in.Fields()
	seen := map[string]bool{}
	for _, path := range paths {
		missing, _ := missingPath(fields, path)
		if missing == nil {
			continue
		}
		r, ok := gone.find(missing)
		name := strings.Join(missing, ".")
		if !ok || seen[name] {
			continue
		}
		seen[name] = true
		fields = padPath(fields, missing)
		subject := fieldRange(p, e, missing)
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  summary,
			Detail:   r.detail(name, n),
			Subject:  subject.Ptr(),
			Context:  e.Range.Ptr(),
		})
	}
	if len(seen) == 0 {
		return in, nil
	}
	md := in.Metadata()
	return arrow.NewSchema(fields, &md), diags
}
