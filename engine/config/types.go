package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/pipelinehq/pipeline/sdk"
)

// A plugin declares each attribute's type in go-cty's JSON type notation,
// plus sdk.Duration, which is a string the engine checks. hcldec decodes
// with cty's conversions, which turn a number or a bool into a string
// without a word: `path = 12` would reach the plugin as "12". The engine
// refuses that, and checks durations, before the plugin sees the block. A
// string that holds a number or a bool is still accepted for a number or
// bool attribute (cty converts "16" to 16), because env() and file() return
// strings and there is no other way to take a number from the environment.

// declType is a parsed sdk.Type: the cty type hcldec decodes with, and the
// declared shape for the checks cty does not make.
type declType struct {
	ty cty.Type
	// kind is "string", "duration", "number", "bool", "dynamic", "list",
	// "set", "map", "object" or "tuple".
	kind  string
	elem  *declType            // list, set, map
	attrs map[string]*declType // object
	elems []*declType          // tuple
}

func parseDeclType(t sdk.Type) (*declType, error) {
	var raw any
	if err := json.Unmarshal([]byte(t), &raw); err != nil {
		return nil, err
	}
	return declTypeOf(raw)
}

func declTypeOf(raw any) (*declType, error) {
	switch r := raw.(type) {
	case string:
		d := &declType{kind: r}
		switch r {
		case "string", "duration":
			d.ty = cty.String
		case "number":
			d.ty = cty.Number
		case "bool":
			d.ty = cty.Bool
		case "dynamic":
			d.ty = cty.DynamicPseudoType
		default:
			return nil, fmt.Errorf("unknown type %q", r)
		}
		return d, nil
	case []any:
		if len(r) != 2 {
			return nil, fmt.Errorf("a type is a name or a pair, not %v", r)
		}
		kind, _ := r[0].(string)
		d := &declType{kind: kind}
		switch kind {
		case "list", "set", "map":
			elem, err := declTypeOf(r[1])
			if err != nil {
				return nil, err
			}
			d.elem = elem
			switch kind {
			case "list":
				d.ty = cty.List(elem.ty)
			case "set":
				d.ty = cty.Set(elem.ty)
			default:
				d.ty = cty.Map(elem.ty)
			}
			return d, nil
		case "object":
			m, ok := r[1].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("an object type takes an object of attribute types")
			}
			d.attrs = map[string]*declType{}
			tys := map[string]cty.Type{}
			for name, at := range m {
				a, err := declTypeOf(at)
				if err != nil {
					return nil, err
				}
				d.attrs[name], tys[name] = a, a.ty
			}
			d.ty = cty.Object(tys)
			return d, nil
		case "tuple":
			list, ok := r[1].([]any)
			if !ok {
				return nil, fmt.Errorf("a tuple type takes a list of element types")
			}
			var tys []cty.Type
			for _, et := range list {
				e, err := declTypeOf(et)
				if err != nil {
					return nil, err
				}
				d.elems = append(d.elems, e)
				tys = append(tys, e.ty)
			}
			d.ty = cty.Tuple(tys)
			return d, nil
		}
		return nil, fmt.Errorf("unknown type %q", kind)
	}
	// Let cty say what is wrong with anything else.
	b, _ := json.Marshal(raw)
	_, err := ctyjson.UnmarshalType(b)
	if err == nil {
		err = fmt.Errorf("unsupported type %s", b)
	}
	return nil, err
}

// typeChecker checks a plugin body's values against the declared types,
// for what hcldec lets through: numbers and bools given for strings, and
// strings that are no duration.
type typeChecker struct {
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics
}

// body checks the attributes and nested blocks of body against attrs.
// prefix names the nested block in messages ("retry.").
func (c *typeChecker) body(body hcl.Body, attrs []sdk.Attribute, spec hcldec.ObjectSpec, prefix string) {
	content, _, _ := body.PartialContent(hcldec.ImpliedSchema(spec))
	if content == nil {
		return
	}
	for _, a := range attrs {
		if _, ok := spec[a.Name]; !ok {
			continue // the plugin's schema is broken here; reported
		}
		if len(a.Nested) > 0 {
			nspec, _ := nestedSpec(spec[a.Name])
			for _, b := range content.Blocks {
				if b.Type == a.Name {
					c.body(b.Body, a.Nested, nspec, prefix+a.Name+".")
				}
			}
			continue
		}
		attr, ok := content.Attributes[a.Name]
		if !ok {
			continue
		}
		t, err := parseDeclType(a.Type)
		if err != nil {
			continue // reported as a bug in the plugin
		}
		v, d := attr.Expr.Value(c.ctx)
		if d.HasErrors() {
			continue // hcldec reports it
		}
		c.value(attr.Expr, v, t, prefix+a.Name, attr.Expr.Range())
	}
}

// nestedSpec is the ObjectSpec inside a nested block's spec.
func nestedSpec(s hcldec.Spec) (hcldec.ObjectSpec, bool) {
	if b, ok := s.(*hcldec.BlockSpec); ok {
		o, ok := b.Nested.(hcldec.ObjectSpec)
		return o, ok
	}
	return nil, false
}

// value checks v, the value of expr (nil when it is part of a larger
// expression that has no expression of its own), against t. name is the
// attribute path for messages (retry.schedule[1]); rng is where to point.
func (c *typeChecker) value(expr hcl.Expression, v cty.Value, t *declType, name string, rng hcl.Range) {
	if v.IsNull() || !v.IsKnown() {
		return
	}
	if expr != nil {
		rng = expr.Range()
	}
	vt := v.Type()
	switch t.kind {
	case "string", "duration":
		if vt == cty.Number || vt == cty.Bool {
			what := "a number"
			if vt == cty.Bool {
				what = "a bool"
			}
			req := "string"
			if t.kind == "duration" {
				req = `string holding a duration, such as "10s",`
			}
			c.diags = append(c.diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Incorrect attribute value type",
				Detail: fmt.Sprintf("Inappropriate value for %s: %s required, not %s. If it is meant as text, put it in quotes: %q.",
					attrName(name), req, what, ctyString(v)),
				Subject: rng.Ptr(),
			})
			return
		}
		if t.kind == "duration" && vt == cty.String {
			s := v.AsString()
			if _, err := time.ParseDuration(s); err != nil {
				c.diags = append(c.diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid duration",
					Detail: fmt.Sprintf("%s = %q is not a duration: a duration is a number and a unit, such as \"500ms\", \"10s\", \"5m\" or \"2h30m\".",
						name, s),
					Subject: rng.Ptr(),
				})
			}
		}
	case "list", "set":
		if !(vt.IsListType() || vt.IsSetType() || vt.IsTupleType()) {
			return // hcldec reports it
		}
		var exprs []hcl.Expression
		if expr != nil {
			if es, d := hcl.ExprList(expr); !d.HasErrors() && len(es) == v.LengthInt() {
				exprs = es
			}
		}
		i := 0
		for it := v.ElementIterator(); it.Next(); i++ {
			_, ev := it.Element()
			var ee hcl.Expression
			if exprs != nil {
				ee = exprs[i]
			}
			c.value(ee, ev, t.elem, fmt.Sprintf("%s[%d]", name, i), rng)
		}
	case "map", "object":
		if !(vt.IsMapType() || vt.IsObjectType()) {
			return
		}
		exprs := map[string]hcl.Expression{}
		if expr != nil {
			if pairs, d := hcl.ExprMap(expr); !d.HasErrors() {
				for _, kv := range pairs {
					if k, d := kv.Key.Value(c.ctx); !d.HasErrors() && k.Type() == cty.String && k.IsKnown() && !k.IsNull() {
						exprs[k.AsString()] = kv.Value
					}
				}
			}
		}
		for it := v.ElementIterator(); it.Next(); {
			k, ev := it.Element()
			key := k.AsString()
			et := t.elem
			if t.kind == "object" {
				if et = t.attrs[key]; et == nil {
					continue // hcldec reports it
				}
			}
			c.value(exprs[key], ev, et, fmt.Sprintf("%s[%q]", name, key), rng)
		}
	case "tuple":
		if !(vt.IsListType() || vt.IsTupleType()) || v.LengthInt() != len(t.elems) {
			return
		}
		i := 0
		for it := v.ElementIterator(); it.Next(); i++ {
			_, ev := it.Element()
			c.value(nil, ev, t.elems[i], fmt.Sprintf("%s[%d]", name, i), rng)
		}
	}
}

// attrName is how a message names an attribute or a part of one.
func attrName(name string) string {
	if strings.ContainsAny(name, ".[") {
		return name
	}
	return fmt.Sprintf("attribute %q", name)
}

func ctyString(v cty.Value) string {
	switch v.Type() {
	case cty.Number:
		return v.AsBigFloat().Text('f', -1)
	case cty.Bool:
		if v.True() {
			return "true"
		}
		return "false"
	}
	return ""
}
