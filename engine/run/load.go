package run

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/plan"
	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// Builtin is a plugin compiled into the engine's binary.
type Builtin struct {
	Info sdk.Info
	// Command starts it, e.g. [/usr/local/bin/pipeline plugin serve sink-webhook].
	Command []string
}

// SinkStateServer serves a sink its State over the plugin protocol.
type SinkStateServer interface {
	pluginv1.StateServer
	Close() error
}

// SourceStateServer serves a push source its State (its inbox) as the
// workers of a cluster share it, and hears what the run committed.
type SourceStateServer interface {
	pluginv1.StateServer
	plan.SharedState
	Close() error
}

// LoadOptions say which plugins exist and how to start them.
type LoadOptions struct {
	Builtins []Builtin
	Host     host.Options
	// Store, when set, is served to every sink as its State (the outbox of
	// action sinks). Validation leaves it nil: nothing is written.
	Store *state.Store
	// SinkState, when set, serves each sink its State (the outbox) instead
	// of Store (`pipeline serve --cluster`: engine/cluster's outbox on
	// JetStream). Close is called when the load is closed.
	SinkState func(ctx context.Context, pipeline, sink string) (SinkStateServer, error)
	// SourceState, when set, serves each push source (sdk.Info.Push) its
	// State (the inbox) instead of Store, and is the source's Shared state
	// in the plan (`pipeline serve --cluster`: engine/cluster's inbox on
	// JetStream, which every worker's push source shares). Close is called
	// when the load is closed.
	SourceState func(ctx context.Context, pipeline, source string) (SourceStateServer, error)
	// NoWait lets sinks end a run with deliveries still pending.
	NoWait bool
	// FullRefresh tells every sink that this run exports everything again.
	FullRefresh bool
	// Loader reads the files; nil reads them with the real environment.
	Loader *config.Loader
	// Substitute, when set, replaces every source and sink (`pipeline test`).
	Substitute *Substitute
}

// Substitute replaces a pipeline's sources and sinks by stand-ins in the
// engine's process (`pipeline test`). Their plugins are not started, except
// that a custom sink plugin is started to describe its config, so that the
// block and its templates are checked; nothing reads the sources' inputs or
// writes anything. Stages run as they do in a run.
type Substitute struct {
	// Source gives a source's stand-in and the schema of what it reads
	// (nil when unknown: what reads it is then checked for syntax only).
	Source func(*config.Source) (plan.SourcePlugin, *arrow.Schema)
	Sink   func(*config.Sink) plan.SinkPlugin
	// ConfigureSink, when set, makes the load a check as `pipeline validate`
	// does it, whose Loaded is not run: it checks the block of each built-in
	// sink as its plugin's Configure does, in the engine's process (a
	// built-in's Configure checks and keeps its config; it connects to
	// nothing and sends nothing), and reports its error at the block, or at
	// the attribute it names, as validate does. A block that read an env()
	// variable that is not set (config.Block.UnsetEnv) is not checked, nor
	// configured if it is a transform plugin: its values are stand-ins that
	// its plugin would judge.
	ConfigureSink func(ctx context.Context, s *config.Sink, cfg sdk.Config) error
}

// Loaded is a checked pipeline with its plugins started and configured.
type Loaded struct {
	Config *config.Pipeline
	Plan   *Plan
	// Compiled is what the check compiled, with the schema flowing into
	// each block where it is known.
	Compiled *config.Compiled

	plugins  []*host.Plugin
	services []interface{ Close() error }
}

// Close stops every plugin and ends the sinks' outbox sessions (their
// background pruning included).
func (l *Loaded) Close() {
	for _, p := range l.plugins {
		p.Stop()
	}
	l.plugins = nil
	for _, s := range l.services {
		s.Close()
	}
	l.services = nil
}

// Load reads and checks the pipeline in files in stages, and reports every
// problem of every stage in one call: a block that a stage rejects is left
// out of the stages that need it (its plugin is not configured, the
// expressions it feeds are checked for syntax only), and every other block
// goes on. So it configures the plugins of the blocks that decoded without
// errors even when other blocks have errors (configure and schema only:
// nothing is read or written), and checks the expressions against the
// schemas of the sources that were configured. Custom plugins are started
// to describe their config. On any error it stops whatever it started and
// returns the diagnostics with a Loaded that has no Plan (its Config still
// holds the files, for printing the diagnostics).
func Load(ctx context.Context, files []string, opts LoadOptions) (*Loaded, hcl.Diagnostics) {
	loader := opts.Loader
	if loader == nil {
		loader = &config.Loader{}
	}
	p, diags := loader.Load(files...)
	if p == nil {
		return nil, diags
	}
	l := &Loaded{Config: p}
	fail := func() (*Loaded, hcl.Diagnostics) {
		l.Close()
		return l, diags
	}

	builtins := map[config.PluginType]Builtin{}
	var known []config.PluginType
	for _, b := range opts.Builtins {
		t := config.PluginType{Kind: b.Info.Kind, Type: b.Info.Type}
		builtins[t] = b
		known = append(known, t)
	}
	diags = append(diags, config.CheckPluginTypes(p, known)...)

	// Stage 2: every block against its plugin's schema. Custom plugins are
	// asked for theirs; the process is kept for the run. decoded holds
	// every block that was decoded, errors or not, for its templates;
	// configs only those without errors, which alone are configured.
	custom := map[config.PluginType]*config.PluginDecl{}
	for _, d := range p.Plugins {
		custom[config.PluginType{Kind: d.Kind, Type: d.Type}] = d
	}
	started := map[config.Node]*host.Plugin{}
	push := map[config.Node]bool{} // what the plugin described itself as
	configs := map[config.Node]config.DecodedConfig{}
	decoded := map[config.Node]config.DecodedConfig{}
	decode := func(n config.Node) {
		b := n.Base()
		t := config.PluginType{Kind: sdk.Kind(b.Kind), Type: b.Type}
		var info sdk.Info
		if d, ok := custom[t]; ok {
			spec := host.Spec{Kind: d.Kind, Type: d.Type, Name: b.Name, Command: append([]string{d.Command}, d.Args...), SHA256: d.SHA256}
			plug, err := host.Start(ctx, spec, opts.Host)
			if err == nil {
				l.plugins = append(l.plugins, plug)
				info, err = plug.Describe(ctx)
			}
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin failed to start",
					Detail: err.Error(), Subject: d.DefRange.Ptr(), Context: b.DefRange.Ptr()})
				return
			}
			started[n] = plug
		} else if bi, ok := builtins[t]; ok {
			info = bi.Info
		} else {
			return // reported by CheckPluginTypes
		}
		push[n] = info.Push
		cfg, d := config.DecodePluginBody(b.Body, info, b.EvalCtx)
		diags = append(diags, d...)
		decoded[n] = cfg
		if !d.HasErrors() {
			configs[n] = cfg
		}
	}
	sub := opts.Substitute
	for _, s := range p.Sources {
		if sub == nil {
			decode(s)
		}
	}
	for _, s := range p.Sinks {
		decode(s)
	}
	for _, t := range p.Transforms {
		if t.IsPlugin() {
			decode(t)
		}
	}

	// Start and configure the blocks that decoded; sources report their
	// schemas. A block with errors so far is skipped: its plugin would
	// only say again what is wrong, or be handed half a config.
	failedConfigure := map[config.Node]bool{}
	outboxes := map[config.Node]*state.Outbox{}
	shared := map[string]plan.SharedState{}
	configure := func(n config.Node) {
		if _, ok := configs[n]; !ok {
			failedConfigure[n] = true
			return
		}
		b := n.Base()
		plug := started[n]
		builtin := plug == nil
		if plug == nil {
			bi := builtins[config.PluginType{Kind: sdk.Kind(b.Kind), Type: b.Type}]
			var err error
			plug, err = host.Start(ctx, host.Spec{Kind: bi.Info.Kind, Type: bi.Info.Type, Name: b.Name, Command: bi.Command}, opts.Host)
			if err != nil {
				failedConfigure[n] = true
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin failed to start", Detail: err.Error(), Subject: b.DefRange.Ptr()})
				return
			}
			l.plugins = append(l.plugins, plug)
			started[n] = plug
		}
		cfg := configs[n].SDKConfig(b.Name)
		copts := host.ConfigureOptions{NoWait: opts.NoWait, FullRefresh: opts.FullRefresh, BaseDir: baseDir(b.DefRange.Filename)}
		if sk, ok := n.(*config.Sink); ok && !sk.Incremental {
			copts.FullRefresh = true
		}
		if b.Kind == config.KindSink && builtin {
			// A built-in sink is not asked to describe itself to decode its
			// block; ask now whether it buffers.
			if _, err := plug.Describe(ctx); err != nil {
				failedConfigure[n] = true
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Plugin failed to start", Detail: err.Error(), Subject: b.DefRange.Ptr()})
				return
			}
		}
		if opts.SourceState != nil && b.Kind == config.KindSource && push[n] {
			// The workers of a cluster share the push source's inbox.
			svc, err := opts.SourceState(ctx, p.Name, b.Name)
			if err != nil {
				failedConfigure[n] = true
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cluster state failed", Detail: err.Error(), Subject: b.DefRange.Ptr()})
				return
			}
			copts.State = svc
			l.services = append(l.services, svc)
			shared[b.Name] = svc
		} else if opts.Store != nil && b.Kind == config.KindSource {
			// A push source keeps what it accepts in its inbox.
			copts.State = state.NewInboxService(opts.Store, p.Name, b.Name)
		}
		if opts.SinkState != nil && b.Kind == config.KindSink {
			svc, err := opts.SinkState(ctx, p.Name, b.Name)
			if err != nil {
				failedConfigure[n] = true
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cluster state failed", Detail: err.Error(), Subject: b.DefRange.Ptr()})
				return
			}
			copts.State = svc
			l.services = append(l.services, svc)
		} else if opts.Store != nil && b.Kind == config.KindSink {
			svc, err := state.NewService(ctx, opts.Store, p.Name, b.Name)
			if err != nil {
				failedConfigure[n] = true
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "State store failed", Detail: err.Error(), Subject: b.DefRange.Ptr()})
				return
			}
			copts.State = svc
			l.services = append(l.services, svc)
			outboxes[n] = svc.Outbox()
		}
		err := plug.Configure(ctx, cfg.JSON, cfg.Templates, copts)
		if he, ok := err.(*host.Error); ok && he.Exit == "" {
			err = pluginSays{he.Msg}
		}
		for _, w := range plug.ConfigWarnings() {
			subject, context := b.DefRange.Ptr(), (*hcl.Range)(nil)
			if r := config.MentionedRange(b.Body, w); r != nil {
				subject, context = r, b.DefRange.Ptr()
			}
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: fmt.Sprintf("The %s plugin %q warns", b.Kind, b.Type),
				Detail: w, Subject: subject, Context: context})
		}
		if err != nil {
			failedConfigure[n] = true
			diags = append(diags, configureDiag(b, err))
		}
	}
	schemas := map[string]*arrow.Schema{}
	for _, s := range p.Sources {
		if sub != nil {
			continue
		}
		configure(s)
		if plug := started[s]; plug != nil && !failedConfigure[s] {
			schema, err := plug.Schema(ctx)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Source cannot be read",
					Detail: err.Error(), Subject: s.DefRange.Ptr()})
				continue
			}
			schemas[s.Name] = schema
		}
	}
	for _, s := range p.Sinks {
		if sub == nil {
			configure(s)
		}
	}
	if sub != nil && sub.ConfigureSink != nil {
		for _, s := range p.Sinks {
			cfg, decoded := configs[s]
			_, builtin := builtins[config.PluginType{Kind: sdk.KindSink, Type: s.Type}]
			if !decoded || !builtin || started[s] != nil || len(s.UnsetEnv()) > 0 {
				continue // errors reported already, a custom plugin, or stand-ins
			}
			sc := cfg.SDKConfig(s.Name)
			sc.NoWait, sc.FullRefresh, sc.BaseDir = opts.NoWait, opts.FullRefresh || !s.Incremental, baseDir(s.DefRange.Filename)
			if err := sub.ConfigureSink(ctx, s, sc); err != nil {
				diags = append(diags, configureDiag(&s.Block, pluginSays{err.Error()}))
			}
		}
	}
	standIns := map[*config.Source]plan.SourcePlugin{}
	if sub != nil {
		for _, s := range p.Sources {
			plug, schema := sub.Source(s)
			standIns[s] = plug
			if schema != nil {
				schemas[s.Name] = schema
			}
		}
	}
	for _, t := range p.Transforms {
		if t.IsPlugin() && !(sub != nil && sub.ConfigureSink != nil && len(t.UnsetEnv()) > 0) {
			configure(t)
		}
	}

	// Stage 3: expressions against the schemas (syntax only for a source
	// whose schema is unknown, or whose block failed), even after errors
	// in other blocks, so that one validate reports everything.
	compiled, d := config.CheckExpressions(p, config.CheckOptions{
		SchemaOf: func(name string) *arrow.Schema { return schemas[name] },
		Configs:  decoded,
	})
	diags = append(diags, d...)
	l.Compiled = compiled

	fromStart, d := nonIncremental(p)
	if diags = append(diags, d...); diags.HasErrors() {
		return fail()
	}
	parts := plan.Started{Sources: map[*config.Source]plan.SourcePlugin{}, Schemas: schemas, FromStart: fromStart, Sinks: map[*config.Sink]plan.StartedSink{},
		Transforms: map[*config.Transform]plan.TransformPlugin{}, Push: map[string]bool{}, Shared: shared}
	for _, t := range p.Transforms {
		if t.IsPlugin() {
			parts.Transforms[t] = started[t]
		}
	}
	for _, s := range p.Sources {
		parts.Sources[s] = started[s]
		parts.Push[s.Name] = push[s]
		if sub != nil {
			parts.Sources[s] = standIns[s]
		}
	}
	for _, s := range p.Sinks {
		var ss plan.StartedSink
		if sub != nil {
			ss.Plugin = sub.Sink(s)
		} else {
			ss = plan.StartedSink{Plugin: sinkAdapter{started[s]}, Buffered: started[s].Buffered(), Outbox: outboxes[s]}
		}
		for _, t := range configs[s].Templates {
			if ss.Templates == nil {
				ss.Templates = map[string]string{}
			}
			ss.Templates[t.Name] = t.TemplateSrc()
		}
		parts.Sinks[s] = ss
	}
	// The one hand-off from config to run: expressions compiled once.
	l.Plan = plan.Build(p, compiled, parts)
	return l, diags
}

// pluginSays is a plugin's own answer to Configure: what is wrong with its
// block, rather than a failure to ask it.
type pluginSays struct{ msg string }

func (e pluginSays) Error() string { return e.msg }

// configureDiag is the error of a block whose plugin's Configure failed: at
// the attribute the plugin's message names, else at the block.
func configureDiag(b *config.Block, err error) *hcl.Diagnostic {
	msg := err.Error()
	subject, context := b.DefRange.Ptr(), (*hcl.Range)(nil)
	if says, ok := err.(pluginSays); ok {
		msg = fmt.Sprintf("The %s plugin %q says: %s.", b.Kind, b.Type, says.msg)
		if r := config.MentionedRange(b.Body, says.msg); r != nil {
			subject, context = r, b.DefRange.Ptr()
		}
	}
	return &hcl.Diagnostic{Severity: hcl.DiagError,
		Summary: fmt.Sprintf("Invalid %s configuration", b.Kind), Detail: msg, Subject: subject, Context: context}
}

// nonIncremental finds the sources that feed a sink with incremental =
// false: they are read from the start every run. Such a source must feed no
// incremental sink, which would get the same records again and again.
func nonIncremental(p *config.Pipeline) (map[string]bool, hcl.Diagnostics) {
	// SourcesOf walks every block's inputs (config.Node.Upstream), whatever
	// kind of stage lies between a sink and its sources.
	feeds := map[*config.Sink][]*config.Source{}
	for _, sk := range p.Sinks {
		feeds[sk] = p.SourcesOf(sk)
	}
	fromStart := map[string]*config.Sink{}
	for _, sk := range p.Sinks {
		if !sk.Incremental {
			for _, src := range feeds[sk] {
				if fromStart[src.Name] == nil {
					fromStart[src.Name] = sk
				}
			}
		}
	}
	var diags hcl.Diagnostics
	for _, sk := range p.Sinks {
		if !sk.Incremental {
			continue
		}
		for _, src := range feeds[sk] {
			if full := fromStart[src.Name]; full != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
					Summary: "Incremental and full exports share a source",
					Detail: fmt.Sprintf("sink %q %q has incremental = false, so source %q %q is read from its start every run; sink %q %q reads it too and would get every record again each run. Put the full export in a pipeline file of its own.",
						full.Type, full.Name, src.Type, src.Name, sk.Type, sk.Name),
					Subject: full.DefRange.Ptr(), Context: sk.DefRange.Ptr()})
			}
		}
	}
	out := map[string]bool{}
	for name := range fromStart {
		out[name] = true
	}
	return out, diags
}

type sinkAdapter struct{ p *host.Plugin }

func (s sinkAdapter) OpenStream(ctx context.Context) (SinkStream, error) { return s.p.Write(ctx) }

// DrainSinks delivers what the named sinks' outboxes hold (after a replay):
// each sink gets an empty stream, and ends it once its outbox is drained.
func (l *Loaded) DrainSinks(ctx context.Context, names []string) error {
	for _, sk := range l.Plan.Sinks {
		if len(names) > 0 && !slices.Contains(names, sk.Name) {
			continue
		}
		stream, err := sk.Plugin.OpenStream(ctx)
		if err != nil {
			return err
		}
		if err := stream.CloseSend(); err != nil {
			return err
		}
		for range stream.Acks() {
		}
		if err := stream.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// baseDir is the absolute directory of a pipeline file.
func baseDir(filename string) string {
	if filename == "" {
		return ""
	}
	dir, err := filepath.Abs(filepath.Dir(filename))
	if err != nil {
		return filepath.Dir(filename)
	}
	return dir
}
