package config

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/pipelinehq/pipeline/sdk"
)

// PluginType names a plugin the engine can start: a kind and a type label.
type PluginType struct {
	Kind sdk.Kind
	Type string
}

// CheckPluginTypes reports every source and sink whose type label names no
// plugin of its kind, at the label, with a suggestion when a known type is
// close. known lists the engine's built-in plugins; the plugins that p declares
// with plugin blocks are known too, even those whose block has errors (they
// are reported already). A plugin block may declare a type that is also
// built in; which one wins is the host's choice.
func CheckPluginTypes(p *Pipeline, known []PluginType) hcl.Diagnostics {
	byKind := map[sdk.Kind][]string{}
	has := map[PluginType]bool{}
	add := func(t PluginType) {
		if !has[t] {
			has[t] = true
			byKind[t.Kind] = append(byKind[t.Kind], t.Type)
		}
	}
	for _, t := range known {
		add(t)
	}
	for _, t := range p.declared {
		add(t)
	}
	for _, names := range byKind {
		sort.Strings(names)
	}
	var diags hcl.Diagnostics
	check := func(b *Block) {
		kind := sdk.Kind(b.Kind)
		if has[PluginType{Kind: kind, Type: b.Type}] {
			return
		}
		detail := fmt.Sprintf("There is no %s plugin %q.", kind, b.Type)
		other := sdk.KindSink
		if kind == sdk.KindSink {
			other = sdk.KindSource
		}
		switch {
		case Suggest(b.Type, byKind[kind]) != "":
			detail += fmt.Sprintf(" Did you mean %q?", Suggest(b.Type, byKind[kind]))
		case has[PluginType{Kind: other, Type: b.Type}]:
			detail += fmt.Sprintf(" %q is a %s plugin.", b.Type, other)
		case len(byKind[kind]) > 0:
			detail += fmt.Sprintf(" The %s plugins are %s.", kind, quoteList(byKind[kind]))
		}
		detail += fmt.Sprintf(` A custom plugin is declared with plugin %q %q { command = "..." }.`, kind, b.Type)
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Unknown %s type", kind),
			Detail:   detail,
			Subject:  b.TypeRange.Ptr(),
		})
	}
	for _, s := range p.Sources {
		check(&s.Block)
	}
	for _, s := range p.Sinks {
		check(&s.Block)
	}
	for _, t := range p.Transforms {
		if t.IsPlugin() {
			check(&t.Block)
		}
	}
	return diags
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// DecodedConfig is a plugin block decoded against the plugin's schema.
type DecodedConfig struct {
	// JSON is an object of the attributes that are set, defaults applied;
	// absent optional attributes without a default are left out. Numbers
	// stay JSON numbers.
	JSON json.RawMessage
	// Templates are the template attributes whose value holds a {{
	// placeholder, in the order the plugin declares them.
	Templates []TemplateAttr
}

// mapTemplates returns a template per value of a map(string) template
// attribute that holds placeholders, named "<attr>.<key>" (headers.X-Id), in
// key order, each pointing at its own value expression.
func mapTemplates(name string, v cty.Value, attr *hcl.Attribute, body hcl.Body) []TemplateAttr {
	valueExprs := map[string]hcl.Expression{}
	if attr != nil {
		if pairs, d := hcl.ExprMap(attr.Expr); !d.HasErrors() {
			for _, kv := range pairs {
				if k, d := kv.Key.Value(nil); !d.HasErrors() && k.Type() == cty.String && k.IsKnown() && !k.IsNull() {
					valueExprs[k.AsString()] = kv.Value
				}
			}
		}
	}
	var out []TemplateAttr
	for it := v.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		if ev.IsNull() || !ev.IsKnown() || !strings.Contains(ev.AsString(), "{{") {
			continue
		}
		t := TemplateAttr{Name: name + "." + k.AsString(), Expr: Expr{Src: ev.AsString(), Range: body.MissingItemRange()}}
		if attr != nil {
			t.Range = attr.Expr.Range()
		}
		if e, ok := valueExprs[k.AsString()]; ok {
			t.Range = e.Range()
			t.expr = e
		}
		out = append(out, t)
	}
	return out
}

// TemplateAttr is an attribute declared with Template: true whose value holds
// {{ }} placeholders. For a map(string) attribute there is one per value with
// placeholders, named "<attr>.<key>".
type TemplateAttr struct {
	Name string
	// Expression is set for an Expression attribute: Src is one expression
	// without braces; TemplateSrc gives it as a template.
	Expression bool
	Expr
}

// TemplateSrc is the attribute's value as a template: Expression
// attributes are wrapped in {{ }}.
func (t TemplateAttr) TemplateSrc() string {
	if t.Expression {
		return "{{ " + t.Src + " }}"
	}
	return t.Src
}

// SDKConfig is the configuration to send to the plugin of a block named name.
func (c DecodedConfig) SDKConfig(name string) sdk.Config {
	cfg := sdk.Config{Name: name, JSON: c.JSON}
	for _, t := range c.Templates {
		cfg.Templates = append(cfg.Templates, t.Name)
	}
	return cfg
}

// attrSpec is the hcldec spec of one declared attribute; an attribute with
// Nested attributes is a nested block (retry { max_attempts = 8 }).
func attrSpec(a sdk.Attribute, pluginBug func(string, ...any)) (hcldec.Spec, bool) {
	if len(a.Nested) > 0 {
		nested := hcldec.ObjectSpec{}
		for _, n := range a.Nested {
			s, ok := attrSpec(n, pluginBug)
			if !ok {
				return nil, false
			}
			nested[n.Name] = s
		}
		return &hcldec.BlockSpec{TypeName: a.Name, Nested: nested, Required: a.Required}, true
	}
	dt, err := parseDeclType(a.Type)
	if err != nil {
		pluginBug("the attribute %q with the type %s, which is not a type: %s", a.Name, a.Type, err)
		return nil, false
	}
	ty := dt.ty
	var s hcldec.Spec = &hcldec.AttrSpec{Name: a.Name, Type: ty, Required: a.Required}
	if a.Default != nil && !a.Required {
		def, err := defaultValue(a.Default, ty)
		if err != nil {
			pluginBug("a default for the attribute %q that is not a %s: %s", a.Name, ty.FriendlyName(), err)
			return nil, false
		}
		s = &hcldec.DefaultSpec{Primary: s, Default: &hcldec.LiteralSpec{Value: def}}
	}
	return s, true
}

// DecodePluginBody decodes a source or sink body (Block.Body) against the
// attributes its plugin declares, with ctx for functions (Block.EvalCtx). An
// unknown, mistyped or missing attribute is reported at the attribute, or at
// the block for a missing one. A schema the plugin got wrong (a bad type or
// default, a reserved name) is reported at the block too, naming the plugin,
// since the user cannot fix it. With errors, JSON is nil but Templates holds
// the template attributes that could be read, so that stage 3 still checks
// them.
func DecodePluginBody(body hcl.Body, info sdk.Info, ctx *hcl.EvalContext) (DecodedConfig, hcl.Diagnostics) {
	var out DecodedConfig
	if body == nil {
		return out, nil
	}
	var diags hcl.Diagnostics
	pluginBug := func(format string, args ...any) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid plugin schema",
			Detail: fmt.Sprintf("The %s plugin %q (version %s) declares %s. This is a bug in the plugin; its author can fix it.",
				info.Kind, info.Type, info.Version, fmt.Sprintf(format, args...)),
			Subject: body.MissingItemRange().Ptr(),
		})
	}
	spec := hcldec.ObjectSpec{}
	attrs := map[string]sdk.Attribute{}
	for _, a := range info.Config {
		if reservedAttrs[a.Name] && info.Kind == sdk.KindSink {
			pluginBug("the attribute %q, which the engine reserves", a.Name)
			continue
		}
		if _, dup := attrs[a.Name]; dup {
			pluginBug("the attribute %q twice", a.Name)
			continue
		}
		s, ok := attrSpec(a, pluginBug)
		if !ok {
			continue
		}
		attrs[a.Name] = a
		spec[a.Name] = s
	}

	val, d := hcldec.Decode(body, spec, ctx)
	diags = append(diags, d...)
	// What cty converts silently (12 for a string) and what is no type of
	// cty's (durations), reported alongside hcldec's own errors.
	tc := &typeChecker{ctx: ctx}
	tc.body(body, info.Config, spec, "")
	diags = append(diags, tc.diags...)
	if val.IsNull() || !val.IsKnown() || !val.Type().IsObjectType() {
		return out, diags
	}
	set := map[string]cty.Value{}
	for name, v := range val.AsValueMap() {
		if v.IsWhollyKnown() && !v.IsNull() {
			set[name] = v
		}
	}

	// Templates are collected even when other attributes have errors, so
	// that stage 3 can check them too. The expressions give their ranges;
	// a partial read finds them whatever else the body holds.
	content, _, _ := body.PartialContent(hcldec.ImpliedSchema(spec))
	for _, a := range info.Config {
		if _, ok := spec[a.Name]; !ok || !(a.Template || a.Expression) {
			continue
		}
		v, ok := set[a.Name]
		if !ok {
			continue
		}
		var attr *hcl.Attribute
		if content != nil {
			attr = content.Attributes[a.Name]
		}
		if v.Type().IsMapType() && v.Type().ElementType() == cty.String {
			out.Templates = append(out.Templates, mapTemplates(a.Name, v, attr, body)...)
			continue
		}
		if v.Type() != cty.String || (!a.Expression && !strings.Contains(v.AsString(), "{{")) || strings.TrimSpace(v.AsString()) == "" {
			continue
		}
		t := TemplateAttr{Name: a.Name, Expression: a.Expression, Expr: Expr{Src: v.AsString(), Range: body.MissingItemRange()}}
		if attr != nil {
			t.Range = attr.Expr.Range()
			t.expr = attr.Expr
		}
		out.Templates = append(out.Templates, t)
	}
	if diags.HasErrors() {
		return out, diags
	}

	obj := cty.EmptyObjectVal
	if len(set) > 0 {
		obj = cty.ObjectVal(set)
	}
	js, err := ctyjson.Marshal(obj, obj.Type())
	if err != nil {
		// Only unknown or marked values fail to marshal, and nothing here
		// makes them; say so rather than hand on half a config.
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid configuration",
			Detail:   fmt.Sprintf("The block's values cannot be sent to the plugin: %s.", err),
			Subject:  body.MissingItemRange().Ptr(),
		})
		return out, diags
	}
	out.JSON = js
	return out, diags
}

// defaultValue converts an attribute's Go default to a value of type ty, the
// way the plugin would see it: through JSON.
func defaultValue(def any, ty cty.Type) (cty.Value, error) {
	b, err := json.Marshal(def)
	if err != nil {
		return cty.NilVal, err
	}
	if ty == cty.DynamicPseudoType {
		implied, err := ctyjson.ImpliedType(b)
		if err != nil {
			return cty.NilVal, err
		}
		ty = implied
	}
	return ctyjson.Unmarshal(b, ty)
}

// DecodePlugins runs DecodePluginBody for every source and sink of p whose
// plugin is in infos, and returns the results by node, including those with
// errors (see DecodePluginBody) so CheckExpressions can check their templates;
// a runner must not use any of them while diags has errors. Blocks whose plugin is
// not in infos are skipped: CheckPluginTypes reports unknown types, and a
// declared plugin's schema is only known once the host has asked it.
func DecodePlugins(p *Pipeline, infos []sdk.Info) (map[Node]DecodedConfig, hcl.Diagnostics) {
	byType := map[PluginType]sdk.Info{}
	for _, info := range infos {
		byType[PluginType{Kind: info.Kind, Type: info.Type}] = info
	}
	out := map[Node]DecodedConfig{}
	var diags hcl.Diagnostics
	decode := func(n Node) {
		b := n.Base()
		info, ok := byType[PluginType{Kind: sdk.Kind(b.Kind), Type: b.Type}]
		if !ok {
			return
		}
		cfg, d := DecodePluginBody(b.Body, info, b.EvalCtx)
		diags = append(diags, d...)
		out[n] = cfg
	}
	for _, s := range p.Sources {
		decode(s)
	}
	for _, s := range p.Sinks {
		decode(s)
	}
	return out, diags
}
