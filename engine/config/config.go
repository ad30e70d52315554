// Package config reads pipeline files and checks them. It parses and checks;
// it starts nothing and runs nothing.
//
// Checking happens in three stages, so that every stage can report all of its
// errors and later stages still run for the blocks that earlier ones accepted
// (`pipeline validate` shows everything at once):
//
//  1. Load parses the files, decodes the top-level blocks and the engine's own
//     attributes (inputs, where, when, the pipeline and plugin blocks), resolves
//     the references between blocks and orders the graph.
//  2. CheckPluginTypes reports blocks whose type names no known plugin, and
//     DecodePluginBody (or DecodePlugins for the whole pipeline) decodes each
//     source and sink body against the schema its plugin declares (sdk.Info).
//  3. CheckExpressions compiles every where, when, {{ }} template and
//     transform (engine/transform) against the record schema that flows
//     into its block; a transform's output schema flows on to its readers. A field that a sampled
//     schema (sdk.SampledSchema) lacks is a warning; one that a complete
//     schema lacks is an error, and so is one that a transform upstream
//     removed (drop, keep, rename), whatever the sampling: it names the
//     transform.
//
// Every diagnostic carries the file, line and column it is about; render them
// with WriteDiagnostics. Every stage runs whatever the earlier ones reported,
// leaving out only the blocks they rejected, so one pass reports everything.
// A runner may configure the plugins of blocks that decoded without errors
// (to learn their schemas), but must not read or write anything while any
// stage returned an error. In outline:
//
//	p, diags := config.Load(file)
//	diags = append(diags, config.CheckPluginTypes(p, builtins)...)
//	// start each declared plugin (p.Plugins) once to learn its sdk.Info
//	cfgs, d := config.DecodePlugins(p, infos)
//	diags = append(diags, d...)
//	compiled, d := config.CheckExpressions(p, config.CheckOptions{SchemaOf: schemaOf, Configs: cfgs})
//	diags = append(diags, d...)
//	if diags.HasErrors() {
//		config.WriteDiagnostics(os.Stderr, p.Files, diags, isTerminal)
//		return errValidate
//	}
//	// run: for each source, send batches through p.Readers(node) using
//	// compiled.Where / When / Templates; configure plugins with
//	// cfgs[node].SDKConfig(node.Base().Name); wait for p.SinksOf(source)
//	// to ack before committing a source's position.
package config

import (
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/robfig/cron/v3"

	"github.com/pipelinehq/pipeline/engine/transform"
	"github.com/pipelinehq/pipeline/sdk"
)

// Kind is the kind of a block in the graph.
type Kind string

const (
	KindSource Kind = "source"
	KindFilter Kind = "filter"
	// KindTransform is a transform block: computed fields, drop, keep and
	// rename (engine/transform).
	KindTransform Kind = "transform"
	KindSink      Kind = "sink"
)

// Pipeline is one decoded pipeline: its blocks in topological order.
//
// Load returns a Pipeline even when it reports errors. It then holds the blocks
// that decoded well enough to be checked further, so that stage 2 and 3 can
// report their own errors too. It must not be run unless no stage reported an
// error.
type Pipeline struct {
	// Name is the pipeline's state namespace: the pipeline block's name, or
	// the first file's name without its extension.
	Name string
	// Schedule is the pipeline block's schedule attribute as written (a cron
	// expression or a descriptor like "@daily"), or "" when the pipeline has
	// none: `pipeline serve` then runs it continuously. `pipeline run`
	// ignores it. ScheduleSpec is Schedule parsed, nil when there is none.
	Schedule     string
	ScheduleSpec cron.Schedule
	// Location is the time zone the schedule is read in: the timezone
	// attribute, UTC by default. It is never nil.
	Location *time.Location

	// File is the first file the pipeline was loaded from.
	File string
	// Files holds every parsed file by name, for WriteDiagnostics.
	Files map[string]*hcl.File

	// Sources are in declaration order. Filters are in topological order:
	// a filter comes after every filter it reads from, and otherwise in
	// declaration order (filters on a cycle, an error, keep a stable but
	// arbitrary place). Sinks are in declaration order; nothing reads them.
	Sources []*Source
	Filters []*Filter
	Sinks   []*Sink
	// Transforms are in topological order, like Filters. Stages holds the
	// filters and transforms together in one topological order: a stage
	// comes after every stage it reads from. Filters and Transforms are
	// Stages split by kind, each in that order.
	Transforms []*Transform
	Stages     []Node
	// Plugins are the custom plugins declared with plugin blocks.
	Plugins []*PluginDecl
	// Tests are the test blocks, in declaration order (`pipeline test`).
	Tests []*Test

	readers  map[Node][]Node // who lists a node in its inputs, in topological order
	declared []PluginType    // every plugin block's kind and type, valid or not
}

// Node is a source, filter, transform or sink in the graph: *Source,
// *Filter, *Transform or *Sink.
type Node interface {
	// Addr is how the block is named in messages and references:
	// "source.calls", "filter.high_churn", "sink.crm".
	Addr() string
	// Base returns the attributes every block has.
	Base() *Block
	// Upstream is the block's resolved inputs list: what it reads (nil for
	// a source). Whatever walks the graph walks it through Upstream, so a
	// new kind of block is walked as soon as it is a Node.
	Upstream() []Input
}

// Block is what sources, filters and sinks have in common.
type Block struct {
	Kind Kind
	// Type is the plugin type, the first label of a source or sink block
	// ("webhook" in sink "webhook" "crm"). It is empty for filters and
	// transforms.
	Type string
	// Name is the block's name label, unique among blocks of its kind.
	Name string

	// DefRange covers the block's type and labels; TypeRange and NameRange
	// cover the labels themselves (TypeRange is empty for filters).
	DefRange  hcl.Range
	TypeRange hcl.Range
	NameRange hcl.Range

	// Body is what is left of the block once the engine took its own
	// attributes (inputs, when). Stage 2 decodes it against the plugin's
	// schema. It is nil for filters, whose attributes all belong to the engine.
	Body hcl.Body
	// EvalCtx holds the functions (env, file) for expressions in this block's
	// file; pass it to DecodePluginBody.
	EvalCtx *hcl.EvalContext

	// broken is set when some input of the block could not be resolved or
	// lies on a cycle: its input schema is then unknown.
	broken bool
	// unsetEnv collects the env() variables read as "" (UnsetEnvEmpty).
	unsetEnv *[]string
}

// UnsetEnv names the environment variables that the block's expressions
// read with env() and that were not set, so that they read as "" (only
// with Loader.UnsetEnvEmpty, as `pipeline test` loads), in the order first
// read. It covers what has been evaluated so far: the engine's attributes
// once loaded, the plugin's once DecodePluginBody decoded the body. A
// block that has any holds stand-ins for those values: a plugin's check of
// them says nothing about the real ones.
func (b *Block) UnsetEnv() []string {
	if b.unsetEnv == nil {
		return nil
	}
	var out []string
	for _, n := range *b.unsetEnv {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Addr implements Node.
func (b *Block) Addr() string { return string(b.Kind) + "." + b.Name }

// Base implements Node.
func (b *Block) Base() *Block { return b }

// Source is a source block: source "TYPE" "NAME" { ... }.
type Source struct {
	Block
}

// Upstream implements Node: a source reads no other block.
func (*Source) Upstream() []Input { return nil }

// Upstream implements Node.
func (f *Filter) Upstream() []Input { return f.Inputs }

// Upstream implements Node.
func (t *Transform) Upstream() []Input { return t.Inputs }

// Upstream implements Node.
func (s *Sink) Upstream() []Input { return s.Inputs }

// Filter is a filter block: filter "NAME" { inputs = [...]; where = "..." }.
type Filter struct {
	Block
	Inputs []Input
	// Where is the filter's predicate; nil only when the pipeline has errors.
	Where *Expr
	// OnError says what a record whose where fails to evaluate does.
	OnError OnError
}

// OnError is a stage's on_error: what happens to a record whose expression
// fails to evaluate (a type that changed mid-stream, a division by zero).
type OnError string

const (
	// OnErrorFail stops the run, naming the record's place in its input.
	OnErrorFail OnError = "fail"
	// OnErrorSkip drops the record, counts it and logs its place.
	OnErrorSkip OnError = "skip"
)

// Transform is a transform block:
//
//	transform "enrich" {
//	  inputs   = [filter.high_churn]
//	  set      = { priority = "x > 0.9 ? 'urgent' : 'normal'", "routing.team" = "'tier2'" }
//	  drop     = ["text"]
//	  keep     = ["row_id", "priority"]
//	  rename   = { "metadata.customer_id" = "customer" }
//	  on_error = "skip"
//	}
//
// Spec gives it to engine/transform, which defines what each attribute does.
type Transform struct {
	Block
	Inputs []Input
	// Set are the computed fields in the order written.
	Set []SetAttr
	// Drop and Keep are the dotted paths listed, in order.
	Drop, Keep []PathAttr
	// Rename are rename's entries in the order written.
	Rename []RenameAttr
	// OnError says what a record whose set expression fails to evaluate does.
	OnError OnError
}

// SetAttr is one entry of a transform's set: Target (dotted for a nested
// field, "routing.team") gets the value of Expr.
type SetAttr struct {
	Target      string
	TargetRange hcl.Range
	Expr        *Expr
}

// PathAttr is an element of a drop or keep list: a dotted field path.
type PathAttr struct {
	Path  string
	Range hcl.Range
}

// RenameAttr is one entry of rename: the field at the dotted path From
// gets the name To. Range covers the entry's key.
type RenameAttr struct {
	From, To string
	Range    hcl.Range
}

// Spec returns the transform as engine/transform compiles it.
func (t *Transform) Spec() transform.Spec {
	var spec transform.Spec
	for _, s := range t.Set {
		src := ""
		if s.Expr != nil {
			src = s.Expr.Src
		}
		spec.Set = append(spec.Set, transform.Assignment{Target: strings.Split(s.Target, "."), Src: src})
	}
	for _, d := range t.Drop {
		spec.Drop = append(spec.Drop, strings.Split(d.Path, "."))
	}
	for _, k := range t.Keep {
		spec.Keep = append(spec.Keep, strings.Split(k.Path, "."))
	}
	if len(t.Rename) > 0 {
		spec.Rename = map[string]string{}
		for _, r := range t.Rename {
			spec.Rename[r.From] = r.To
		}
	}
	return spec
}

// Sink is a sink block: sink "TYPE" "NAME" { inputs = [...]; when = "..."; ... }.
type Sink struct {
	Block
	Inputs []Input
	// When is the sink's optional condition; nil when absent.
	When *Expr
	// Incremental is the engine-level incremental attribute: true (the
	// default, also when absent) unless the block says incremental = false.
	Incremental bool
	// OnError says what a record whose when or template fails to evaluate does.
	OnError OnError
}

// Input is one resolved element of an inputs list.
type Input struct {
	// Node is the *Source, *Filter or *Transform the element refers to.
	Node Node
	// Range is the reference's range in the inputs list.
	Range hcl.Range
}

// Expr is an attribute whose string value is an expression in the per-record
// language: a where, a when, or a template attribute of a plugin.
type Expr struct {
	// Src is the attribute's value: the expression's source text.
	Src string
	// Range is the range of the attribute's HCL expression, quotes included.
	Range hcl.Range

	expr hcl.Expression
}

// PluginDecl is a plugin block: plugin "KIND" "TYPE" { command = "..." }.
// It makes TYPE usable as the type label of blocks of kind KIND.
type PluginDecl struct {
	Kind sdk.Kind
	Type string
	// Command is the executable. A command with a path separator is resolved
	// against the directory of the file that declares it and made absolute;
	// a bare name is left for a PATH lookup when the plugin starts.
	Command string
	Args    []string
	// SHA256 is the pinned lower-case hex digest of the executable, or "".
	SHA256 string

	DefRange, KindRange, TypeRange hcl.Range
	CommandRange                   hcl.Range
}

// Compile-time checks that the block types are nodes.
var (
	_ Node = (*Source)(nil)
	_ Node = (*Filter)(nil)
	_ Node = (*Transform)(nil)
	_ Node = (*Sink)(nil)
)
