package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"

	"github.com/pipelinehq/pipeline/sdk"
)

// Loader reads pipeline files. The zero Loader reads the real environment and
// file system; tests replace them.
type Loader struct {
	// LookupEnv backs the env() function; nil means os.LookupEnv.
	LookupEnv func(name string) (string, bool)
	// ReadFile reads pipeline files and backs the file() function; nil
	// means os.ReadFile.
	ReadFile func(name string) ([]byte, error)
	// UnsetEnvEmpty makes env("NAME") of an unset variable without a
	// default read as "" instead of failing (`pipeline test`, which calls
	// no sink and so needs none of their secrets).
	UnsetEnvEmpty bool
}

// Load reads one pipeline from the named files with the real environment; see
// Loader.Load.
func Load(filenames ...string) (*Pipeline, hcl.Diagnostics) {
	return (&Loader{}).Load(filenames...)
}

// Load reads the named files as ONE pipeline: their blocks are put together
// as if they were written in one file, in the order given, and the pipeline's
// default name comes from the first file. To check several pipelines, call
// Load once per file. A file whose name ends in ".json" is read as HCL's JSON
// syntax. The Pipeline is never nil; see Pipeline for what it holds when there
// are errors. When any file has a syntax error, only the syntax errors are
// reported: decoding a half-parsed file reports blocks and references that
// are missing only because of the syntax error.
func (l *Loader) Load(filenames ...string) (*Pipeline, hcl.Diagnostics) {
	parser := hclparse.NewParser()
	var diags hcl.Diagnostics
	var files []*hcl.File
	seen := map[string]bool{}
	for _, name := range filenames {
		if seen[filepath.Clean(name)] {
			continue
		}
		seen[filepath.Clean(name)] = true
		src, err := l.readFile(name)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Failed to read file",
				Detail:   fmt.Sprintf("The pipeline file %q could not be read: %s.", name, err),
			})
			continue
		}
		f, d := parse(parser, src, name)
		diags = append(diags, d...)
		files = append(files, f)
	}
	p, d := l.decode(parser, filenames, files, diags.HasErrors())
	return p, append(diags, d...)
}

func parse(parser *hclparse.Parser, src []byte, filename string) (*hcl.File, hcl.Diagnostics) {
	if strings.HasSuffix(filename, ".json") {
		return parser.ParseJSON(src, filename)
	}
	return parser.ParseHCL(src, filename)
}

var topSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "pipeline"},
		{Type: "source", LabelNames: []string{"type", "name"}},
		{Type: "filter", LabelNames: []string{"name"}},
		{Type: "transform", LabelNames: []string{"name"}},
		{Type: "sink", LabelNames: []string{"type", "name"}},
		{Type: "plugin", LabelNames: []string{"kind", "type"}},
		{Type: "test", LabelNames: []string{"name"}},
	},
}

var (
	pipelineSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "name"}, {Name: "schedule"}, {Name: "timezone"}},
	}
	filterSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "inputs", Required: true},
			{Name: "where", Required: true},
			{Name: "on_error"},
		},
	}
	transformSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "inputs", Required: true},
			{Name: "set"},
			{Name: "drop"},
			{Name: "keep"},
			{Name: "rename"},
			{Name: "on_error"},
		},
	}
	sinkSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "inputs", Required: true},
			{Name: "when"},
			{Name: "incremental"},
			{Name: "on_error"},
		},
	}
	pluginSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "command", Required: true},
			{Name: "args"},
			{Name: "sha256"},
		},
	}
)

// reservedAttrs are the sink attributes the engine takes before the plugin
// sees the block; a plugin cannot declare them.
var reservedAttrs = map[string]bool{"inputs": true, "when": true, "incremental": true, "on_error": true}

// ref is an element of an inputs list before resolution.
type ref struct {
	kind  Kind
	name  string
	rng   hcl.Range
	owner *Block
}

// decoder holds the state of stage 1 for one pipeline.
type decoder struct {
	l     *Loader
	p     *Pipeline
	diags hcl.Diagnostics

	pipelineBlock *hcl.Block
	sawSource     bool
	sawSink       bool
	dangling      int // references to undeclared blocks

	sources map[string]*Source
	filters map[string]*Filter
	trans   map[string]*Transform
	sinks   map[string]*Sink
	plugins map[string]*PluginDecl
	refs    map[*Block][]ref
	ctxs    map[string]*hcl.EvalContext
}

func (l *Loader) decode(parser *hclparse.Parser, filenames []string, files []*hcl.File, parseFailed bool) (*Pipeline, hcl.Diagnostics) {
	d := &decoder{
		l:       l,
		p:       &Pipeline{Files: parser.Files(), Location: time.UTC, readers: map[Node][]Node{}},
		sources: map[string]*Source{},
		filters: map[string]*Filter{},
		trans:   map[string]*Transform{},
		sinks:   map[string]*Sink{},
		plugins: map[string]*PluginDecl{},
		refs:    map[*Block][]ref{},
		ctxs:    map[string]*hcl.EvalContext{},
	}
	if len(filenames) == 0 {
		d.errorf(nil, "No pipeline file", "Name at least one pipeline file.")
		return d.p, d.diags
	}
	d.p.File = filenames[0]
	base := filepath.Base(filenames[0])
	d.p.Name = strings.TrimSuffix(base, filepath.Ext(base))
	// A syntax error leaves a partial body behind, and decoding it would
	// report blocks and references that are only missing because of the
	// syntax error. The syntax errors alone are the useful report.
	if parseFailed {
		return d.p, d.diags
	}
	for _, f := range files {
		if f == nil || f.Body == nil {
			continue
		}
		content, pluginTransforms, diags := topContent(f.Body)
		d.diags = append(d.diags, diags...)
		for _, b := range content.Blocks {
			d.block(b)
		}
		for _, b := range pluginTransforms {
			d.pluginTransform(b)
		}
	}
	d.resolve()
	d.order()
	d.checkGraph()
	return d.p, d.diags
}

// topContent is body.Content(topSchema), except that a transform block with
// two labels (transform "http" "classify": a plugin transform) is set apart
// from the one-label built-in kind, since an HCL schema fixes one label
// count per block type. In JSON files every transform block is built in.
func topContent(body hcl.Body) (*hcl.BodyContent, []*hcl.Block, hcl.Diagnostics) {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		c, d := body.Content(topSchema)
		return c, nil, d
	}
	var plugins []*hcl.Block
	rest := *sb
	rest.Blocks = nil
	for _, b := range sb.Blocks {
		if b.Type == "transform" && len(b.Labels) == 2 {
			plugins = append(plugins, b.AsHCLBlock())
			continue
		}
		rest.Blocks = append(rest.Blocks, b)
	}
	c, d := rest.Content(topSchema)
	return c, plugins, d
}

func (d *decoder) block(b *hcl.Block) {
	for _, h := range topSchema.Blocks {
		if h.Type == b.Type && len(h.LabelNames) != len(b.Labels) {
			return // HCL reported it already
		}
	}
	switch b.Type {
	case "pipeline":
		d.pipeline(b)
	case "source":
		d.sawSource = true
		s := &Source{Block: d.header(b, KindSource)}
		if !d.checkName(&s.Block) {
			return
		}
		if first, ok := d.sources[s.Name]; ok {
			d.duplicate(&s.Block, &first.Block)
			return
		}
		s.Body = b.Body
		d.sources[s.Name] = s
		d.p.Sources = append(d.p.Sources, s)
	case "filter":
		f := &Filter{Block: d.header(b, KindFilter)}
		if !d.checkName(&f.Block) {
			return
		}
		if first, ok := d.filters[f.Name]; ok {
			d.duplicate(&f.Block, &first.Block)
			return
		}
		content, diags := b.Body.Content(filterSchema)
		d.diags = append(d.diags, diags...)
		if attr, ok := content.Attributes["inputs"]; ok {
			d.inputs(&f.Block, attr)
		} else {
			f.broken = true
		}
		if attr, ok := content.Attributes["where"]; ok {
			f.Where = d.exprAttr(attr, f.EvalCtx)
		}
		f.OnError = d.onError(content.Attributes["on_error"], f.EvalCtx)
		d.filters[f.Name] = f
		d.p.Filters = append(d.p.Filters, f)
		d.p.Stages = append(d.p.Stages, f)
	case "transform":
		d.transform(b)
	case "sink":
		d.sawSink = true
		s := &Sink{Block: d.header(b, KindSink), Incremental: true}
		if !d.checkName(&s.Block) {
			return
		}
		if first, ok := d.sinks[s.Name]; ok {
			d.duplicate(&s.Block, &first.Block)
			return
		}
		content, remain, diags := b.Body.PartialContent(sinkSchema)
		d.diags = append(d.diags, diags...)
		s.Body = remain
		if attr, ok := content.Attributes["inputs"]; ok {
			d.inputs(&s.Block, attr)
		} else {
			s.broken = true
		}
		if attr, ok := content.Attributes["when"]; ok {
			s.When = d.exprAttr(attr, s.EvalCtx)
		}
		if attr, ok := content.Attributes["incremental"]; ok {
			if v, ok := d.boolAttr(attr, s.EvalCtx,
				"incremental is true (the default) or false, without quotes."); ok {
				s.Incremental = v
			}
		}
		s.OnError = d.onError(content.Attributes["on_error"], s.EvalCtx)
		d.sinks[s.Name] = s
		d.p.Sinks = append(d.p.Sinks, s)
	case "plugin":
		d.plugin(b)
	case "test":
		d.test(b)
	}
}

// onError decodes a stage's on_error attribute: "fail" (the default) or "skip".
func (d *decoder) onError(attr *hcl.Attribute, ctx *hcl.EvalContext) OnError {
	if attr == nil {
		return OnErrorFail
	}
	v, ok := d.stringAttr(attr, ctx, `on_error is "fail" (the default) or "skip".`)
	if !ok {
		return OnErrorFail
	}
	switch OnError(v) {
	case OnErrorFail, OnErrorSkip:
		return OnError(v)
	}
	d.errorf(attr.Expr.Range().Ptr(), "Invalid on_error", fmt.Sprintf(`on_error is "fail" (the default) or "skip", not %q.`, v))
	return OnErrorFail
}

// header fills in the labels and ranges of a source, filter or sink block.
func (d *decoder) header(b *hcl.Block, kind Kind) Block {
	h := Block{Kind: kind, DefRange: b.DefRange}
	h.EvalCtx, h.unsetEnv = d.blockContext(b.DefRange.Filename)
	if kind == KindFilter || kind == KindTransform {
		h.Name, h.NameRange = b.Labels[0], b.LabelRanges[0]
	} else {
		h.Type, h.TypeRange = b.Labels[0], b.LabelRanges[0]
		h.Name, h.NameRange = b.Labels[1], b.LabelRanges[1]
	}
	return h
}

// blockContext is the evaluation context of a block in filename: the file's,
// and with Loader.UnsetEnvEmpty one of its own whose env() records the
// variables it reads as "" in the list returned (Block.UnsetEnv).
func (d *decoder) blockContext(filename string) (*hcl.EvalContext, *[]string) {
	ctx := d.evalContext(filename)
	if !d.l.UnsetEnvEmpty {
		return ctx, nil
	}
	unset := new([]string)
	child := ctx.NewChild()
	child.Functions = map[string]function.Function{"env": d.l.envFunc(unset)}
	return child, unset
}

func (d *decoder) evalContext(filename string) *hcl.EvalContext {
	if ctx, ok := d.ctxs[filename]; ok {
		return ctx
	}
	ctx := d.l.evalContext(filepath.Dir(filename))
	d.ctxs[filename] = ctx
	return ctx
}

// checkName insists on names that can be written in a reference (source.NAME).
func (d *decoder) checkName(b *Block) bool {
	if hclsyntax.ValidIdentifier(b.Name) {
		return true
	}
	d.errorf(&b.NameRange, fmt.Sprintf("Invalid %s name", b.Kind),
		fmt.Sprintf("%q cannot be used in a reference like %s.NAME: a name starts with a letter or underscore and holds only letters, digits, underscores and dashes.", b.Name, b.Kind))
	return false
}

func (d *decoder) duplicate(b, first *Block) {
	d.errorf(&b.DefRange, fmt.Sprintf("Duplicate %s name", b.Kind),
		fmt.Sprintf("A %s named %q was already declared at %s. Names must be unique among %ss.", b.Kind, b.Name, at(first.DefRange), b.Kind))
}

func (d *decoder) pipeline(b *hcl.Block) {
	if d.pipelineBlock != nil {
		d.errorf(&b.DefRange, "Duplicate pipeline block",
			fmt.Sprintf("A pipeline has at most one pipeline block; the first is at %s.", at(d.pipelineBlock.DefRange)))
		return
	}
	d.pipelineBlock = b
	content, diags := b.Body.Content(pipelineSchema)
	d.diags = append(d.diags, diags...)
	ctx := d.evalContext(b.DefRange.Filename)
	if attr, ok := content.Attributes["name"]; ok {
		if name, ok := d.stringAttr(attr, ctx, ""); ok {
			if validPipelineName.MatchString(name) {
				d.p.Name = name
			} else {
				d.errorf(attr.Expr.Range().Ptr(), "Invalid pipeline name",
					fmt.Sprintf("The pipeline name %q names the pipeline's saved state: it starts with a letter or digit and holds only letters, digits, '_', '-' and '.'.", name))
			}
		}
	}
	d.schedule(content.Attributes["schedule"], content.Attributes["timezone"], ctx)
}

var (
	validPipelineName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	validSHA256       = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

func (d *decoder) plugin(b *hcl.Block) {
	pd := &PluginDecl{
		Kind:      sdk.Kind(b.Labels[0]),
		Type:      b.Labels[1],
		DefRange:  b.DefRange,
		KindRange: b.LabelRanges[0],
		TypeRange: b.LabelRanges[1],
	}
	content, diags := b.Body.Content(pluginSchema)
	d.diags = append(d.diags, diags...)
	ok := true
	if pd.Kind != sdk.KindSource && pd.Kind != sdk.KindSink && pd.Kind != sdk.KindTransform {
		detail := fmt.Sprintf("A plugin is a %q, a %q or a %q, not %q.", sdk.KindSource, sdk.KindTransform, sdk.KindSink, pd.Kind)
		if s := Suggest(string(pd.Kind), []string{string(sdk.KindSource), string(sdk.KindTransform), string(sdk.KindSink)}); s != "" {
			detail += fmt.Sprintf(" Did you mean %q?", s)
		}
		d.errorf(&pd.KindRange, "Invalid plugin kind", detail)
		ok = false
	}
	if pd.Type == "" {
		d.errorf(&pd.TypeRange, "Invalid plugin type", "A plugin's type cannot be empty: it is the first label of the blocks that use it.")
		ok = false
	}
	if ok {
		// Known even if the rest of the block is wrong, so that the blocks
		// using it are not also reported as of an unknown type.
		d.p.declared = append(d.p.declared, PluginType{Kind: pd.Kind, Type: pd.Type})
	}
	ctx := d.evalContext(b.DefRange.Filename)
	if attr, found := content.Attributes["command"]; found {
		pd.CommandRange = attr.Expr.Range()
		cmd, good := d.stringAttr(attr, ctx, "")
		switch {
		case !good:
			ok = false
		case cmd == "":
			d.errorf(attr.Expr.Range().Ptr(), "Invalid plugin command", "The command is the plugin's executable and cannot be empty.")
			ok = false
		default:
			pd.Command = resolveCommand(cmd, filepath.Dir(b.DefRange.Filename))
		}
	}
	if attr, found := content.Attributes["args"]; found {
		args, good := d.stringListAttr(attr, ctx)
		pd.Args = args
		ok = ok && good
	}
	if attr, found := content.Attributes["sha256"]; found {
		sum, good := d.stringAttr(attr, ctx, "")
		if good && !validSHA256.MatchString(sum) {
			d.errorf(attr.Expr.Range().Ptr(), "Invalid sha256",
				fmt.Sprintf("The sha256 pin is the executable's SHA-256 digest as 64 hexadecimal digits (as sha256sum prints it); this one has %d characters.", len(sum)))
			good = false
		}
		pd.SHA256 = strings.ToLower(sum)
		ok = ok && good
	}
	if !ok || diags.HasErrors() {
		return
	}
	key := string(pd.Kind) + "." + pd.Type
	if first, dup := d.plugins[key]; dup {
		d.errorf(&pd.DefRange, "Duplicate plugin declaration",
			fmt.Sprintf("A %s plugin %q was already declared at %s.", pd.Kind, pd.Type, at(first.DefRange)))
		return
	}
	d.plugins[key] = pd
	d.p.Plugins = append(d.p.Plugins, pd)
}

// resolveCommand takes a command with a path separator relative to dir, the
// directory of the pipeline file, and makes it absolute so that the current
// directory of whoever starts it does not matter. A bare name is left for a
// PATH lookup.
func resolveCommand(cmd, dir string) string {
	if !strings.ContainsRune(cmd, '/') && !strings.ContainsRune(cmd, filepath.Separator) {
		return cmd
	}
	if !filepath.IsAbs(cmd) {
		cmd = filepath.Join(dir, cmd)
	}
	if abs, err := filepath.Abs(cmd); err == nil {
		return abs
	}
	return filepath.Clean(cmd)
}

// stringAttr evaluates an attribute that must be a string. hint, when given,
// is added to the detail of a type error.
func (d *decoder) stringAttr(attr *hcl.Attribute, ctx *hcl.EvalContext, hint string) (string, bool) {
	v, diags := attr.Expr.Value(ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || !v.IsWhollyKnown() {
		return "", false
	}
	if v.IsNull() || v.Type() != cty.String {
		detail := fmt.Sprintf("Inappropriate value for attribute %q: string required.", attr.Name)
		if hint != "" {
			detail += " " + hint
		}
		d.errorf(attr.Expr.Range().Ptr(), "Incorrect attribute value type", detail)
		return "", false
	}
	return v.AsString(), true
}

// boolAttr evaluates an attribute that must be a bool (true or false, not a
// string). hint, when given, is added to the detail of a type error.
func (d *decoder) boolAttr(attr *hcl.Attribute, ctx *hcl.EvalContext, hint string) (bool, bool) {
	v, diags := attr.Expr.Value(ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || !v.IsWhollyKnown() {
		return false, false
	}
	if v.IsNull() || v.Type() != cty.Bool {
		detail := fmt.Sprintf("Inappropriate value for attribute %q: bool required.", attr.Name)
		if hint != "" {
			detail += " " + hint
		}
		d.errorf(attr.Expr.Range().Ptr(), "Incorrect attribute value type", detail)
		return false, false
	}
	return v.True(), true
}

func (d *decoder) stringListAttr(attr *hcl.Attribute, ctx *hcl.EvalContext) ([]string, bool) {
	v, diags := attr.Expr.Value(ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() || !v.IsWhollyKnown() {
		return nil, false
	}
	bad := func() ([]string, bool) {
		d.errorf(attr.Expr.Range().Ptr(), "Incorrect attribute value type",
			fmt.Sprintf("Inappropriate value for attribute %q: list of string required.", attr.Name))
		return nil, false
	}
	if v.IsNull() {
		return bad()
	}
	lv, err := convert.Convert(v, cty.List(cty.String))
	if err != nil {
		return bad()
	}
	var out []string
	for it := lv.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() {
			return bad()
		}
		out = append(out, e.AsString())
	}
	return out, true
}

// exprAttr evaluates a where or when attribute: a string holding an
// expression in the per-record language.
func (d *decoder) exprAttr(attr *hcl.Attribute, ctx *hcl.EvalContext) *Expr {
	src, ok := d.stringAttr(attr, ctx,
		fmt.Sprintf("The %s attribute holds an expression in quotes, like %s = \"amount > 100\".", attr.Name, attr.Name))
	if !ok {
		return nil
	}
	return &Expr{Src: src, Range: attr.Expr.Range(), expr: attr.Expr}
}

// inputs reads an inputs list into references, resolved once every block is
// known. A bad element marks the block broken; the good ones are kept.
func (d *decoder) inputs(b *Block, attr *hcl.Attribute) {
	exprs, diags := hcl.ExprList(attr.Expr)
	if diags.HasErrors() {
		detail := "inputs is a list of references to sources and filters, like inputs = [source.calls, filter.high_churn]."
		if _, td := hcl.AbsTraversalForExpr(attr.Expr); !td.HasErrors() {
			if f := d.p.Files[attr.Expr.Range().Filename]; f != nil && attr.Expr.Range().End.Byte <= len(f.Bytes) {
				detail += fmt.Sprintf(" Put the reference in brackets: inputs = [%s].", attr.Expr.Range().SliceBytes(f.Bytes))
			}
		}
		d.errorf(attr.Expr.Range().Ptr(), "Invalid inputs", detail)
		b.broken = true
		return
	}
	if len(exprs) == 0 {
		d.errorf(attr.Expr.Range().Ptr(), "Empty inputs",
			fmt.Sprintf("A %s reads from at least one source or filter, like inputs = [source.calls].", b.Kind))
		b.broken = true
		return
	}
	const kinds = "An input is a source or a filter, like source.calls or filter.high_churn."
	for _, e := range exprs {
		rng := e.Range()
		trav, td := hcl.AbsTraversalForExpr(e)
		if td.HasErrors() {
			d.errorf(&rng, "Invalid input reference", "An input must be a reference, not a value. "+kinds)
			b.broken = true
			continue
		}
		root := trav.RootName()
		switch root {
		case "source", "filter", "transform":
		case "sink":
			d.errorf(&rng, "Invalid input reference", "A sink cannot be an input: records end at a sink. "+kinds)
			b.broken = true
			continue
		default:
			detail := fmt.Sprintf("%q is not a kind of block. %s", root, kinds)
			if s := Suggest(root, []string{"source", "filter"}); s != "" {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
			d.errorf(&rng, "Invalid input reference", detail)
			b.broken = true
			continue
		}
		var name string
		if len(trav) >= 2 {
			if step, ok := trav[1].(hcl.TraverseAttr); ok {
				name = step.Name
			}
		}
		if name == "" || len(trav) > 2 {
			d.errorf(&rng, "Invalid input reference",
				fmt.Sprintf("An input names a whole block, as %s.NAME, and nothing more.", root))
			b.broken = true
			continue
		}
		d.refs[b] = append(d.refs[b], ref{kind: Kind(root), name: name, rng: rng, owner: b})
	}
}

// resolve turns references into inputs, in declaration order of their blocks.
func (d *decoder) resolve() {
	for _, f := range d.p.Filters {
		f.Inputs = d.resolveRefs(&f.Block)
	}
	for _, t := range d.p.Transforms {
		t.Inputs = d.resolveRefs(&t.Block)
	}
	for _, s := range d.p.Sinks {
		s.Inputs = d.resolveRefs(&s.Block)
	}
	d.resolveTests()
}

func (d *decoder) resolveRefs(b *Block) []Input {
	var inputs []Input
	seen := map[Node]hcl.Range{}
	for _, r := range d.refs[b] {
		var n Node
		switch r.kind {
		case KindSource:
			if s, ok := d.sources[r.name]; ok {
				n = s
			}
		case KindFilter:
			if f, ok := d.filters[r.name]; ok {
				n = f
			}
		case KindTransform:
			if t, ok := d.trans[r.name]; ok {
				n = t
			}
		}
		if n == nil {
			d.dangling++
			d.errorf(&r.rng, fmt.Sprintf("Reference to undeclared %s", r.kind),
				fmt.Sprintf("There is no %s named %q.%s", r.kind, r.name, d.didYouMean(r)))
			b.broken = true
			continue
		}
		if first, dup := seen[n]; dup {
			d.errorf(&r.rng, "Duplicate input",
				fmt.Sprintf("%s is already an input at %s; reading it twice would pass every record twice.", n.Addr(), at(first)))
			continue
		}
		seen[n] = r.rng
		inputs = append(inputs, Input{Node: n, Range: r.rng})
	}
	return inputs
}

// didYouMean suggests the closest declared name of the same kind, or the same
// name under the other kind.
func (d *decoder) didYouMean(r ref) string {
	var names []string
	var other bool
	switch r.kind {
	case KindSource:
		for _, s := range d.p.Sources {
			names = append(names, s.Name)
		}
		_, other = d.filters[r.name]
	case KindFilter:
		for _, f := range d.p.Filters {
			if f.Name != r.owner.Name || r.owner.Kind != KindFilter {
				names = append(names, f.Name)
			}
		}
		_, other = d.sources[r.name]
	case KindTransform:
		for _, t := range d.p.Transforms {
			if t.Name != r.owner.Name || r.owner.Kind != KindTransform {
				names = append(names, t.Name)
			}
		}
	}
	if s := Suggest(r.name, names); s != "" {
		return fmt.Sprintf(" Did you mean %s.%s?", r.kind, s)
	}
	if other {
		k := KindFilter
		if r.kind == KindFilter {
			k = KindSource
		}
		return fmt.Sprintf(" Did you mean %s.%s?", k, r.name)
	}
	// The same name under another kind of stage.
	for _, k := range []Kind{KindSource, KindFilter, KindTransform} {
		if k == r.kind {
			continue
		}
		var found bool
		switch k {
		case KindSource:
			_, found = d.sources[r.name]
		case KindFilter:
			_, found = d.filters[r.name]
		case KindTransform:
			_, found = d.trans[r.name]
		}
		if found {
			return fmt.Sprintf(" Did you mean %s.%s?", k, r.name)
		}
	}
	return ""
}

func (d *decoder) errorf(subject *hcl.Range, summary, detail string) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  subject,
	})
}

func (d *decoder) warnf(subject *hcl.Range, summary, detail string) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   detail,
		Subject:  subject,
	})
}

// at names a range as FILE:LINE for a message.
func at(r hcl.Range) string {
	return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line)
}
