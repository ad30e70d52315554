package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/engine/transform"
	"github.com/pipelinehq/pipeline/sdk"
)

// transform decodes a transform block.
// pluginTransformSchema is what the engine takes of a plugin transform
// block; the rest is the plugin's (decoded against its schema like a sink's).
var pluginTransformSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "inputs", Required: true}, {Name: "on_error"}},
}

// pluginTransform decodes transform "TYPE" "NAME" { inputs = [...] ... }: a
// transform plugin, whose other attributes belong to the plugin.
func (d *decoder) pluginTransform(b *hcl.Block) {
	t := &Transform{Block: Block{Kind: KindTransform, DefRange: b.DefRange,
		Type: b.Labels[0], TypeRange: b.LabelRanges[0], Name: b.Labels[1], NameRange: b.LabelRanges[1]}}
	t.EvalCtx, t.unsetEnv = d.blockContext(b.DefRange.Filename)
	if !d.checkName(&t.Block) {
		return
	}
	if first, ok := d.trans[t.Name]; ok {
		d.duplicate(&t.Block, &first.Block)
		return
	}
	content, remain, diags := b.Body.PartialContent(pluginTransformSchema)
	d.diags = append(d.diags, diags...)
	t.Body = remain
	if attr, ok := content.Attributes["inputs"]; ok {
		d.inputs(&t.Block, attr)
	} else {
		t.broken = true
	}
	t.OnError = d.onError(content.Attributes["on_error"], t.EvalCtx)
	d.trans[t.Name] = t
	d.p.Transforms = append(d.p.Transforms, t)
	d.p.Stages = append(d.p.Stages, t)
}

// IsPlugin reports whether t is a transform plugin (transform "TYPE" "NAME")
// rather than the built-in set/drop/keep/rename.
func (t *Transform) IsPlugin() bool { return t.Type != "" }

func (d *decoder) transform(b *hcl.Block) {
	t := &Transform{Block: d.header(b, KindTransform)}
	if !d.checkName(&t.Block) {
		return
	}
	if first, ok := d.trans[t.Name]; ok {
		d.duplicate(&t.Block, &first.Block)
		return
	}
	content, diags := b.Body.Content(transformSchema)
	d.diags = append(d.diags, diags...)
	if attr, ok := content.Attributes["inputs"]; ok {
		d.inputs(&t.Block, attr)
	} else {
		t.broken = true
	}
	ctx := t.EvalCtx
	if attr, ok := content.Attributes["set"]; ok {
		for _, kv := range d.objectAttr(attr, ctx, `set is an object of field = "expression", like set = { priority = "score > 0.9 ? 'urgent' : 'normal'" }.`) {
			src, ok := d.stringExpr(kv.value, ctx, fmt.Sprintf("The value of %s in set is an expression in quotes, like %q.", kv.key, "score * 100"))
			if !ok {
				continue
			}
			t.Set = append(t.Set, SetAttr{Target: kv.key, TargetRange: kv.keyRange,
				Expr: &Expr{Src: src, Range: kv.value.Range(), expr: kv.value}})
		}
	}
	for _, name := range []string{"drop", "keep"} {
		attr, ok := content.Attributes[name]
		if !ok {
			continue
		}
		paths := d.pathListAttr(attr, ctx)
		if name == "drop" {
			t.Drop = paths
		} else {
			t.Keep = paths
		}
	}
	if attr, ok := content.Attributes["rename"]; ok {
		for _, kv := range d.objectAttr(attr, ctx, `rename is an object of field = "new name", like rename = { "metadata.customer_id" = "customer" }.`) {
			to, ok := d.stringExpr(kv.value, ctx, "The new name is a string.")
			if !ok {
				continue
			}
			t.Rename = append(t.Rename, RenameAttr{From: kv.key, To: to, Range: kv.keyRange})
		}
	}
	if len(t.Set) == 0 && len(t.Drop) == 0 && len(t.Keep) == 0 && len(t.Rename) == 0 && !diags.HasErrors() {
		d.errorf(&t.DefRange, "Empty transform",
			"A transform has at least one of set, drop, keep and rename, like set = { priority = \"'normal'\" }.")
	}
	t.OnError = d.onError(content.Attributes["on_error"], ctx)
	d.trans[t.Name] = t
	d.p.Transforms = append(d.p.Transforms, t)
	d.p.Stages = append(d.p.Stages, t)
}

type keyValue struct {
	key      string
	keyRange hcl.Range
	value    hcl.Expression
}

// objectAttr reads an attribute written as an object, { key = value }, with
// string keys (quoted when dotted), in the order written.
func (d *decoder) objectAttr(attr *hcl.Attribute, ctx *hcl.EvalContext, hint string) []keyValue {
	pairs, diags := hcl.ExprMap(attr.Expr)
	if diags.HasErrors() {
		d.errorf(attr.Expr.Range().Ptr(), "Incorrect attribute value type",
			fmt.Sprintf("Inappropriate value for attribute %q: object required. %s", attr.Name, hint))
		return nil
	}
	var out []keyValue
	seen := map[string]hcl.Range{}
	for _, kv := range pairs {
		key, ok := d.stringExpr(kv.Key, ctx, "")
		if !ok {
			continue
		}
		if key == "" {
			d.errorf(kv.Key.Range().Ptr(), "Invalid field name", fmt.Sprintf("A field name in %s cannot be empty.", attr.Name))
			continue
		}
		if first, dup := seen[key]; dup {
			d.errorf(kv.Key.Range().Ptr(), "Duplicate field",
				fmt.Sprintf("%s is already in %s at %s.", key, attr.Name, at(first)))
			continue
		}
		seen[key] = kv.Key.Range()
		out = append(out, keyValue{key: key, keyRange: kv.Key.Range(), value: kv.Value})
	}
	return out
}

// stringExpr evaluates an expression that must be a string.
func (d *decoder) stringExpr(e hcl.Expression, ctx *hcl.EvalContext, hint string) (string, bool) {
	v, diags := e.Value(ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || !v.IsWhollyKnown() {
		return "", false
	}
	if v.IsNull() || v.Type() != cty.String {
		detail := "A string is required here."
		if hint != "" {
			detail += " " + hint
		}
		d.errorf(e.Range().Ptr(), "Incorrect value type", detail)
		return "", false
	}
	return v.AsString(), true
}

// pathListAttr reads a list of dotted field paths, each with its range.
func (d *decoder) pathListAttr(attr *hcl.Attribute, ctx *hcl.EvalContext) []PathAttr {
	exprs, diags := hcl.ExprList(attr.Expr)
	if diags.HasErrors() {
		d.errorf(attr.Expr.Range().Ptr(), "Incorrect attribute value type",
			fmt.Sprintf("Inappropriate value for attribute %q: list of string required, like %s = [\"text\", \"metadata.agent_id\"].", attr.Name, attr.Name))
		return nil
	}
	var out []PathAttr
	for _, e := range exprs {
		s, ok := d.stringExpr(e, ctx, fmt.Sprintf("%s lists field paths in quotes.", attr.Name))
		if ok {
			out = append(out, PathAttr{Path: s, Range: e.Range()})
		}
	}
	return out
}

// checkTransform compiles t against in, the schema flowing into it, and
// returns the compiled transform (nil when it does not compile) and the
// schema it emits (nil when unknown). gone are the fields a transform
// upstream removed: a drop, keep or rename of one is an error naming it.
// against gives the schema to compile each set expression against (see
// CheckExpressions).
func checkTransform(p *Pipeline, t *Transform, in *arrow.Schema, gone removals, against func(Node, *Expr, string, [][]string, *arrow.Schema) *arrow.Schema) (*transform.Transform, *arrow.Schema, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	isSample := sdk.IsSampled(in)
	orig := in
	// An entry of drop, keep or rename naming a field removed upstream is
	// checked against the input as it is, before the set expressions pad it.
	removed, reported := checkRemovedEntries(t, orig, gone)
	diags = append(diags, removed...)
	if in != nil {
		for _, s := range t.Set {
			paths, _ := expr.Fields(s.Expr.Src)
			in = against(t, s.Expr, "Invalid computed field", paths, in)
		}
	}
	schemaOf := func(tr *transform.Transform) (*arrow.Schema, error) {
		s, err := tr.Schema(in)
		if err != nil || in == orig {
			return s, err
		}
		return unpad(s, orig, t), nil
	}
	tr, err := transform.Compile(t.Spec(), in)
	if err == nil {
		if in == nil {
			return tr, nil, diags
		}
		outSchema, err := schemaOf(tr)
		if err != nil {
			return nil, nil, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid transform",
				Detail: err.Error(), Subject: t.DefRange.Ptr()})
		}
		return tr, outSchema, diags
	}
	var errs transform.Errors
	if !errors.As(err, &errs) {
		return nil, nil, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid transform",
			Detail: err.Error(), Subject: t.DefRange.Ptr()})
	}
	onlyMissing := true
	for _, e := range errs {
		missing := errors.Is(e, transform.ErrNoField)
		if missing && reported[entryKey(e.Attr, e.Index, e.Key)] {
			continue // removed upstream: reported already
		}
		sev := hcl.DiagError
		if missing && isSample {
			// The sample may lack a field that records will carry.
			sev = hcl.DiagWarning
		} else {
			onlyMissing = false
		}
		diags = append(diags, transformDiag(p, t, e, sev))
	}
	if onlyMissing && in != nil {
		// Only warnings: compile without the checks against the schema.
		if tr, err := transform.Compile(t.Spec(), nil); err == nil {
			if outSchema, err := schemaOf(tr); err == nil {
				return tr, outSchema, diags
			}
		}
	}
	return nil, nil, diags
}

// checkRemovedEntries reports each entry of t's drop, keep and rename that
// names a field in lacks because a transform upstream removed it (gone): an
// error whatever the sampling. It returns the entries reported, as keys of
// entryKey, for the compiler's errors about them to be left out.
func checkRemovedEntries(t *Transform, in *arrow.Schema, gone removals) (hcl.Diagnostics, map[string]bool) {
	if in == nil || len(gone) == 0 {
		return nil, nil
	}
	var diags hcl.Diagnostics
	reported := map[string]bool{}
	check := func(key, path string, rng hcl.Range) {
		p := strings.Split(path, ".")
		if missing, _ := missingPath(in.Fields(), p); missing == nil {
			return
		}
		if r, ok := gone.find(p); ok {
			reported[key] = true
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid transform",
				Detail: r.detail(path, t), Subject: rng.Ptr()})
		}
	}
	for i, d := range t.Drop {
		check(entryKey("drop", i, ""), d.Path, d.Range)
	}
	for i, k := range t.Keep {
		check(entryKey("keep", i, ""), k.Path, k.Range)
	}
	for _, r := range t.Rename {
		check(entryKey("rename", -1, r.From), r.From, r.Range)
	}
	return diags, reported
}

// entryKey names an entry of a transform's attributes as transform.Error does.
func entryKey(attr string, index int, key string) string {
	return fmt.Sprintf("%s/%d/%s", attr, index, key)
}

// unpad removes from out the top-level null fields that checkSampled added
// to the input schema (orig lacks them) and no assignment sets: they stand
// for fields the sample lacks, which batches do not carry either.
func unpad(out, orig *arrow.Schema, t *Transform) *arrow.Schema {
	set := map[string]bool{}
	for _, s := range t.Set {
		top, _, _ := strings.Cut(s.Target, ".")
		set[top] = true
	}
	var fields []arrow.Field
	for _, f := range out.Fields() {
		if f.Type.ID() == arrow.NULL && !set[f.Name] && len(orig.FieldIndices(f.Name)) == 0 {
			continue
		}
		fields = append(fields, f)
	}
	md := out.Metadata()
	return arrow.NewSchema(fields, &md)
}

// transformDiag places a transform's compile error at what it is about.
func transformDiag(p *Pipeline, t *Transform, e *transform.Error, sev hcl.DiagnosticSeverity) *hcl.Diagnostic {
	d := &hcl.Diagnostic{Severity: sev, Summary: "Invalid transform", Detail: e.Err.Error() + ".", Subject: t.DefRange.Ptr()}
	switch e.Attr {
	case "set":
		if e.Index < 0 || e.Index >= len(t.Set) {
			break
		}
		s := t.Set[e.Index]
		var xe *expr.Error
		if errors.As(e.Err, &xe) {
			xd := exprDiag(p.Files, "Invalid computed field", s.Expr, e.Err)
			xd.Severity = sev
			return xd
		}
		d.Summary = "Invalid computed field"
		d.Subject = s.TargetRange.Ptr()
	case "drop", "keep":
		list := t.Drop
		if e.Attr == "keep" {
			list = t.Keep
		}
		if e.Index >= 0 && e.Index < len(list) {
			d.Subject = list[e.Index].Range.Ptr()
		}
		if errors.Is(e, transform.ErrNoField) && sev == hcl.DiagWarning {
			d.Summary = fmt.Sprintf("Field %q is not in the sample", list[e.Index].Path)
			d.Detail += fmt.Sprintf(" The input's schema was inferred from a sample of it; records that carry %s get the %s applied. Check the spelling if no record will ever have it.", list[e.Index].Path, e.Attr)
		}
	case "rename":
		for _, r := range t.Rename {
			if r.From == e.Key {
				d.Subject = r.Range.Ptr()
			}
		}
	}
	return d
}
