package config

import (
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/engine/expr"
)

// Compiler compiles the per-record language. The zero Compiler uses
// engine/expr; tests put in their own. A compile error that is an
// *expr.Error is reported at its line and column inside the string.
type Compiler struct {
	Predicate func(src string, schema *arrow.Schema) (*expr.Predicate, error)
	Template  func(src string, schema *arrow.Schema) (*expr.Template, error)
}

// CheckOptions are the inputs of CheckExpressions.
type CheckOptions struct {
	// SchemaOf returns the record schema of a source, or nil when it is not
	// known before reading (the plugin is no sdk.SchemaSource). Expressions
	// fed by a source of unknown schema are checked for syntax only. A nil
	// SchemaOf knows no schema.
	SchemaOf func(sourceName string) *arrow.Schema
	// Configs are the sinks' decoded blocks (DecodePlugins), for their
	// template attributes. Sinks missing here have no templates checked.
	Configs map[Node]DecodedConfig
	// Compiler compiles the expressions; its nil fields mean engine/expr.
	Compiler Compiler
}

// Compiled holds what CheckExpressions compiled, so the runner compiles
// nothing twice. An entry is missing when its expression did not compile.
type Compiled struct {
	// InputSchema is the schema flowing into each filter and sink: the
	// union of its inputs' schemas (a filter passes its input schema on).
	// It is nil when any input's schema is unknown, when the inputs disagree
	// on a field's type, or when an input is broken; expressions were then
	// checked for syntax only, and the runner should compile them again
	// against the first batch's schema.
	InputSchema map[Node]*arrow.Schema
	Where       map[*Filter]*expr.Predicate
	When        map[*Sink]*expr.Predicate
	// Templates are by sink, then by attribute name.
	Templates map[*Sink]map[string]*expr.Template
}

// CheckExpressions compiles every where, when and template of p against the
// schema flowing into its block and reports each that does not compile, at
// the character inside the string where the compiler stopped.
func CheckExpressions(p *Pipeline, opts CheckOptions) (*Compiled, hcl.Diagnostics) {
	compilePred := opts.Compiler.Predicate
	if compilePred == nil {
		compilePred = expr.CompilePredicate
	}
	// The real compiler names the attribute in its messages ("where must
	// be a boolean expression"); an injected one is called as it is.
	predFor := func(attr, src string, schema *arrow.Schema) (*expr.Predicate, error) {
		if opts.Compiler.Predicate == nil {
			return expr.CompilePredicateFor(attr, src, schema)
		}
		return compilePred(src, schema)
	}
	compileTmpl := opts.Compiler.Template
	if compileTmpl == nil {
		compileTmpl = expr.CompileTemplate
	}
	c := &Compiled{
		InputSchema: map[Node]*arrow.Schema{},
		Where:       map[*Filter]*expr.Predicate{},
		When:        map[*Sink]*expr.Predicate{},
		Templates:   map[*Sink]map[string]*expr.Template{},
	}
	var diags hcl.Diagnostics

	out := map[Node]*arrow.Schema{} // the schema each node emits
	for _, s := range p.Sources {
		if opts.SchemaOf != nil {
			out[s] = opts.SchemaOf(s.Name)
		}
	}
	inputSchema := func(b *Block, inputs []Input) *arrow.Schema {
		if b.broken || len(inputs) == 0 {
			return nil
		}
		schemas := make([]*arrow.Schema, len(inputs))
		for i, in := range inputs {
			schemas[i] = out[in.Node]
			if schemas[i] == nil {
				return nil
			}
		}
		u, err := unionSchemas(schemas)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Inputs disagree on a field",
				Detail:   fmt.Sprintf("The inputs of %s disagree on %s, so its expressions are checked for syntax only until records arrive.", b.Addr(), err),
				Subject:  inputs[len(inputs)-1].Range.Ptr(),
			})
			return nil
		}
		return u
	}

	for _, f := range p.Filters {
		in := inputSchema(&f.Block, f.Inputs)
		c.InputSchema[f] = in
		out[f] = in
		if f.Where == nil {
			continue
		}
		pred, err := predFor("where", f.Where.Src, in)
		if err != nil {
			diags = append(diags, exprDiag(p.Files, "Invalid filter expression", f.Where, err))
			continue
		}
		c.Where[f] = pred
	}
	for _, s := range p.Sinks {
		in := inputSchema(&s.Block, s.Inputs)
		c.InputSchema[s] = in
		if s.When != nil {
			pred, err := predFor("when", s.When.Src, in)
			if err != nil {
				diags = append(diags, exprDiag(p.Files, "Invalid sink condition", s.When, err))
			} else {
				c.When[s] = pred
			}
		}
		for _, t := range opts.Configs[s].Templates {
			tmpl, err := compileTmpl(t.TemplateSrc(), in)
			if err != nil {
				var xe *expr.Error
				if t.Expression && errors.As(err, &xe) && xe.Line == 1 {
					// Columns count in the wrapped "{{ src }}".
					shifted := *xe
					shifted.Column = max(1, xe.Column-3)
					err = &shifted
				}
				summary := "Invalid template"
				if t.Expression {
					summary = "Invalid expression"
				}
				diags = append(diags, exprDiag(p.Files, summary, &t.Expr, err))
				continue
			}
			if c.Templates[s] == nil {
				c.Templates[s] = map[string]*expr.Template{}
			}
			c.Templates[s][t.Name] = tmpl
		}
	}
	return c, diags
}

func exprDiag(files map[string]*hcl.File, summary string, e *Expr, err error) *hcl.Diagnostic {
	d := &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   err.Error(),
		Subject:  e.Range.Ptr(),
	}
	var xe *expr.Error
	if errors.As(err, &xe) {
		d.Detail = xe.Msg
		d.Subject = e.RangeAt(files, xe.Line, xe.Column).Ptr()
		d.Context = e.Range.Ptr()
	}
	return d
}

// unionSchemas merges schemas field by field, in order of first appearance.
// Struct fields merge recursively; any other field must have one type.
func unionSchemas(schemas []*arrow.Schema) (*arrow.Schema, error) {
	if len(schemas) == 1 {
		return schemas[0], nil
	}
	var fields []arrow.Field
	for _, s := range schemas {
		var err error
		fields, err = mergeFields(fields, s.Fields(), "")
		if err != nil {
			return nil, err
		}
	}
	return arrow.NewSchema(fields, nil), nil
}

func mergeFields(into, more []arrow.Field, prefix string) ([]arrow.Field, error) {
	index := map[string]int{}
	for i, f := range into {
		index[f.Name] = i
	}
	for _, f := range more {
		i, ok := index[f.Name]
		if !ok {
			index[f.Name] = len(into)
			into = append(into, f)
			continue
		}
		have := into[i]
		merged := have
		merged.Nullable = have.Nullable || f.Nullable
		merged.Metadata = arrow.Metadata{}
		switch {
		case arrow.TypeEqual(have.Type, f.Type):
		case have.Type.ID() == arrow.STRUCT && f.Type.ID() == arrow.STRUCT:
			children, err := mergeFields(
				append([]arrow.Field(nil), have.Type.(*arrow.StructType).Fields()...),
				f.Type.(*arrow.StructType).Fields(),
				prefix+f.Name+".")
			if err != nil {
				return nil, err
			}
			merged.Type = arrow.StructOf(children...)
		default:
			return nil, fmt.Errorf("the type of %s%s (%s, then %s)", prefix, f.Name, have.Type, f.Type)
		}
		into[i] = merged
	}
	return into, nil
}
