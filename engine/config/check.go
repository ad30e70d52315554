package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/engine/transform"
	"github.com/pipelinehq/pipeline/sdk"
)

// Compiler compiles the per-record language. The zero Compiler uses
// engine/expr; tests put in their own. Transforms are always compiled with
// engine/transform (and so engine/expr). A compile error that is an
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
	// SchemaOf knows no schema. A schema marked with sdk.SampledSchema is
	// a sample: a field that an expression reads and the sample lacks is a
	// warning (it reads as null until records carry it), where against a
	// complete schema it is an error.
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
	// InputSchema is the schema flowing into each filter, transform and
	// sink: the union of its inputs' schemas (a filter passes its input
	// schema on, a transform its OutputSchema).
	// It is nil when any input's schema is unknown or an input is broken;
	// expressions were then checked for syntax only, and the runner compiles
	// them against the first batch's schema. Inputs that disagree on a
	// field's type merge as the run merges them (expr.MergeSchemas: the
	// first type stays), with a warning.
	InputSchema map[Node]*arrow.Schema
	// OutputSchema is the schema each transform emits (engine/transform's
	// Schema of its input schema); nil under the same conditions as
	// InputSchema, or when the transform did not compile.
	OutputSchema map[Node]*arrow.Schema
	// Transforms are the compiled transforms. A transform whose input
	// schema is unknown is compiled for syntax only: its set values then
	// take their types from each batch's schema.
	Transforms map[*Transform]*transform.Transform
	Where      map[*Filter]*expr.Predicate
	When       map[*Sink]*expr.Predicate
	// Templates are by sink, then by attribute name.
	Templates map[*Sink]map[string]*expr.Template
}

// CheckExpressions compiles every where, when, template and transform of p
// against the schema flowing into its block (a transform's output schema
// flows on to its readers) and reports each that does not compile, at
// the character inside the string where the compiler stopped. When that
// schema is a sample (sdk.IsSampled), each field an expression reads that
// the sample lacks is a warning naming the field and the sampled sources,
// and the expression is compiled with the field as null; type errors
// against the fields the sample has are errors still. A field that a
// transform upstream removed (dropped, left out of its keep, renamed) is
// known to be absent: reading it, or naming it in a later drop, keep or
// rename, is an error naming that transform, sampled schema or not.
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
		InputSchema:  map[Node]*arrow.Schema{},
		OutputSchema: map[Node]*arrow.Schema{},
		Transforms:   map[*Transform]*transform.Transform{},
		Where:        map[*Filter]*expr.Predicate{},
		When:         map[*Sink]*expr.Predicate{},
		Templates:    map[*Sink]map[string]*expr.Template{},
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
		u, conflicts := unionSchemas(schemas)
		for _, c := range conflicts {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagWarning,
				Summary:  "Inputs disagree on a field",
				Detail: fmt.Sprintf("The inputs of %s disagree on the type of %s. Its expressions are checked against the first type, %s, as the run reads them; records whose %s has the other type fail the expressions that need %s, and on_error decides what happens to them.",
					b.Addr(), c, c.Have, c.Path, c.Have),
				Subject: inputs[len(inputs)-1].Range.Ptr(),
			})
		}
		return u
	}

	// gone is what each node's output is known to lack because a
	// transform removed it; into the same for what flows into a node.
	gone := map[Node]removals{}
	into := map[Node]removals{}
	removedIn := func(n Node) removals {
		b, inputs := n.Base(), n.Upstream()
		if b.broken || len(inputs) == 0 {
			return nil
		}
		rs := make([]removals, len(inputs))
		schemas := make([]*arrow.Schema, len(inputs))
		for i, in := range inputs {
			if schemas[i] = out[in.Node]; schemas[i] == nil {
				return nil
			}
			rs[i] = gone[in.Node]
		}
		return unionRemovals(rs, schemas)
	}

	// against is the schema to compile e, an expression of n that reads
	// paths, against: in, where a field that a transform upstream removed
	// is an error (summary) and a field a sample lacks a warning, each then
	// read as null so that the compiler does not report it again.
	against := func(n Node, e *Expr, summary string, paths [][]string, in *arrow.Schema) *arrow.Schema {
		if in == nil {
			return nil
		}
		in, d := checkRemoved(p, n, e, summary, paths, in, into[n])
		diags = append(diags, d...)
		if !sdk.IsSampled(in) {
			return in
		}
		padded, d := checkSampled(p, n, e, paths, in, opts.SchemaOf)
		diags = append(diags, d...)
		return padded
	}
	exprFields := func(src string) [][]string {
		paths, _ := expr.Fields(src)
		return paths
	}

	for _, n := range p.Stages {
		if t, ok := n.(*Transform); ok {
			in := inputSchema(&t.Block, t.Inputs)
			c.InputSchema[t] = in
			into[t] = removedIn(t)
			if t.broken {
				continue
			}
			if t.IsPlugin() {
				// What a transform plugin makes is known only when batches
				// come out of it: what reads it is checked for syntax only.
				continue
			}
			tr, schema, d := checkTransform(p, t, in, into[t], against)
			diags = append(diags, d...)
			if tr != nil {
				c.Transforms[t] = tr
				c.OutputSchema[t] = schema
				out[t] = schema
				if schema != nil {
					gone[t] = transformRemovals(t, in, schema, into[t])
				}
			}
			continue
		}
		f := n.(*Filter)
		in := inputSchema(&f.Block, f.Inputs)
		c.InputSchema[f] = in
		out[f] = in
		into[f] = removedIn(f)
		gone[f] = into[f]
		if f.Where == nil {
			continue
		}
		pred, err := predFor("where", f.Where.Src, against(f, f.Where, "Invalid filter expression", exprFields(f.Where.Src), in))
		if err != nil {
			diags = append(diags, exprDiag(p.Files, "Invalid filter expression", f.Where, err))
			continue
		}
		c.Where[f] = pred
	}
	for _, s := range p.Sinks {
		in := inputSchema(&s.Block, s.Inputs)
		c.InputSchema[s] = in
		into[s] = removedIn(s)
		if s.When != nil {
			pred, err := predFor("when", s.When.Src, against(s, s.When, "Invalid sink condition", exprFields(s.When.Src), in))
			if err != nil {
				diags = append(diags, exprDiag(p.Files, "Invalid sink condition", s.When, err))
			} else {
				c.When[s] = pred
			}
		}
		for _, t := range opts.Configs[s].Templates {
			paths, _ := expr.TemplateFields(t.TemplateSrc())
			summary := "Invalid template"
			if t.Expression {
				summary = "Invalid expression"
			}
			tmpl, err := compileTmpl(t.TemplateSrc(), against(s, &t.Expr, summary, paths, in))
			if err != nil {
				var xe *expr.Error
				if t.Expression && errors.As(err, &xe) && xe.Line == 1 {
					// Columns count in the wrapped "{{ src }}".
					shifted := *xe
					shifted.Column = max(1, xe.Column-3)
					err = &shifted
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
	// A test's where is checked for syntax here: the records it is about
	// are the test's own (`pipeline test` compiles it against them).
	for _, t := range p.Tests {
		for _, ex := range t.Expects {
			if ex.Where == nil {
				continue
			}
			if _, err := predFor("where", ex.Where.Src, nil); err != nil {
				diags = append(diags, exprDiag(p.Files, "Invalid test expectation", ex.Where, err))
			}
		}
	}
	return c, diags
}

// ExprDiagnostic is the error diagnostic for an expression that failed to
// compile: at the character inside the string where the compiler stopped.
func ExprDiagnostic(files map[string]*hcl.File, summary string, e *Expr, err error) *hcl.Diagnostic {
	return exprDiag(files, summary, e, err)
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

// unionSchemas merges schemas with expr.MergeSchemas, the rule the run
// uses too: in order of first appearance, structs field by field, int64 and
// float64 widened, and a field whose types conflict keeping the first type
// (each conflict is returned). The union is a sample when any of them is.
func unionSchemas(schemas []*arrow.Schema) (*arrow.Schema, []expr.Conflict) {
	if len(schemas) == 1 {
		return schemas[0], nil
	}
	var u *arrow.Schema
	var conflicts []expr.Conflict
	sample, isSample := "", false
	for _, s := range schemas {
		var c []expr.Conflict
		u, c = expr.MergeSchemas(u, arrow.NewSchema(s.Fields(), nil))
		conflicts = append(conflicts, c...)
		if sdk.IsSampled(s) && !isSample {
			sample, isSample = sdk.SchemaSample(s), true
		}
	}
	if isSample {
		u = sdk.SampledSchema(u, sample)
	}
	return u, conflicts
}

// checkSampled warns about each field of paths (what e, an expression of
// n, reads) that in, a sampled schema, lacks, and returns in with a null
// field for each, to compile e against: such a field reads as null until
// records carry it, as the runner pads batches. A path that runs into a
// field that is no struct is left for the compiler to report.
func checkSampled(p *Pipeline, n Node, e *Expr, paths [][]string, in *arrow.Schema, schemaOf func(string) *arrow.Schema) (*arrow.Schema, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	fields := in.Fields()
	seen := map[string]bool{}
	for _, path := range paths {
		missing, siblings := missingPath(fields, path)
		if missing == nil {
			continue
		}
		name := strings.Join(missing, ".")
		if seen[name] {
			continue
		}
		seen[name] = true
		fields = padPath(fields, missing)

		var names []string
		sample := ""
		for _, src := range p.SourcesOf(n) {
			if schemaOf == nil {
				continue
			}
			if s := schemaOf(src.Name); sdk.IsSampled(s) {
				names = append(names, fmt.Sprintf("%q", src.Name))
				if sample == "" {
					sample = sdk.SchemaSample(s)
				}
			}
		}
		of := "source " + strings.Join(names, "")
		whose := fmt.Sprintf("The schema of source %s was inferred from a sample of its input", strings.Join(names, ""))
		if len(names) > 1 {
			of = "sources " + strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
			whose = fmt.Sprintf("The schemas of %s were inferred from samples of their input", of)
			sample = ""
		}
		if sample != "" {
			whose += " (" + sample + ")"
		}
		none := fmt.Sprintf("no record in it has %q", name)
		if len(in.Fields()) == 0 {
			none = "it held no records"
		}
		detail := fmt.Sprintf("%s, and %s. Until records carry it, %s reads as null (a comparison with it is false). Check the spelling if no record will ever have it.",
			whose, none, name)
		if s := Suggest(missing[len(missing)-1], siblings); s != "" {
			detail += fmt.Sprintf(" Did you mean %q?", strings.Join(append(append([]string(nil), missing[:len(missing)-1]...), s), "."))
		}
		subject := fieldRange(p, e, missing)
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  fmt.Sprintf("Field %q is not in the sample of %s", name, of),
			Detail:   detail,
			Subject:  subject.Ptr(),
			Context:  e.Range.Ptr(),
		})
	}
	if len(seen) == 0 {
		return in, diags
	}
	md := in.Metadata()
	return arrow.NewSchema(fields, &md), diags
}

// missingPath follows path through fields and nested structs. It returns
// the path up to the first name that is not there, with the names beside
// it (for a suggestion), or nil when the path is there or runs into a field
// that is no struct.
func missingPath(fields []arrow.Field, path []string) ([]string, []string) {
	for i, name := range path {
		var found *arrow.Field
		var names []string
		for j := range fields {
			names = append(names, fields[j].Name)
			if fields[j].Name == name && found == nil {
				found = &fields[j]
			}
		}
		if found == nil {
			return path[:i+1], names
		}
		st, ok := found.Type.(*arrow.StructType)
		if !ok {
			return nil, nil
		}
		fields = st.Fields()
	}
	return nil, nil
}

// padPath adds a null-typed field for path, which missingPath found
// missing, inside the structs it goes through.
func padPath(fields []arrow.Field, path []string) []arrow.Field {
	out := append([]arrow.Field(nil), fields...)
	for i, f := range out {
		if f.Name != path[0] {
			continue
		}
		if st, ok := f.Type.(*arrow.StructType); ok && len(path) > 1 {
			out[i].Type = arrow.StructOf(padPath(st.Fields(), path[1:])...)
		}
		return out
	}
	leaf := arrow.Field{Name: path[len(path)-1], Type: arrow.Null, Nullable: true}
	for j := len(path) - 2; j >= 0; j-- {
		leaf = arrow.Field{Name: path[j], Type: arrow.StructOf(leaf), Nullable: true}
	}
	return append(out, leaf)
}

// fieldRange is where e reads the field at missing, a path up to the first
// name that is not there: that name, from its first character to its last,
// as the compiler places an unknown field (so that the warning against a
// sample and the error against a complete schema point at one place). It
// is e's whole range when the path is not found in e's source.
func fieldRange(p *Pipeline, e *Expr, missing []string) hcl.Range {
	name := strings.Join(missing, ".")
	line, col, ok := wordAt(e.Src, name)
	if !ok {
		return e.Range
	}
	last := missing[len(missing)-1]
	col += utf8.RuneCountInString(name) - utf8.RuneCountInString(last)
	first := e.RangeAt(p.Files, line, col)
	end := e.RangeAt(p.Files, line, col+utf8.RuneCountInString(last)-1)
	if first != e.Range && end.End.Byte > first.Start.Byte {
		return hcl.Range{Filename: first.Filename, Start: first.Start, End: end.End}
	}
	return first
}

// wordAt finds the dotted name in src as a whole word and returns its
// 1-based line and column (in runes, as the compiler counts).
func wordAt(src, name string) (line, col int, ok bool) {
	re := regexp.MustCompile(`(^|[^\w.])(` + regexp.QuoteMeta(name) + `)\b`)
	m := re.FindStringSubmatchIndex(src)
	if m == nil {
		return 0, 0, false
	}
	line, col = 1, 1
	for _, r := range src[:m[4]] {
		if r == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col, true
}
