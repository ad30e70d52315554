// Package plugins lists the plugins compiled into the pipeline binary. They
// are written exactly as a user's plugin would be (they import only sdk/),
// and still run out of process: the host re-executes the pipeline binary as
// `pipeline plugin serve <kind>-<type>`.
package plugins

import (
	"sort"

	"github.com/pipelinehq/pipeline/sdk"

	sinkbigquery "github.com/pipelinehq/pipeline/plugins/sink-bigquery"
	sinkfile "github.com/pipelinehq/pipeline/plugins/sink-file"
	sinkpostgres "github.com/pipelinehq/pipeline/plugins/sink-postgres"
	sinks3 "github.com/pipelinehq/pipeline/plugins/sink-s3"
	sinkslack "github.com/pipelinehq/pipeline/plugins/sink-slack"
	sinksnowflake "github.com/pipelinehq/pipeline/plugins/sink-snowflake"
	sinkwebhook "github.com/pipelinehq/pipeline/plugins/sink-webhook"
	sinkzendesk "github.com/pipelinehq/pipeline/plugins/sink-zendesk"
	sourcefile "github.com/pipelinehq/pipeline/plugins/source-file"
	sourcehttp "github.com/pipelinehq/pipeline/plugins/source-http"
	sourcepostgres "github.com/pipelinehq/pipeline/plugins/source-postgres"
	sources3 "github.com/pipelinehq/pipeline/plugins/source-s3"
	sourcewebhook "github.com/pipelinehq/pipeline/plugins/source-webhook"
	transformhttp "github.com/pipelinehq/pipeline/plugins/transform-http"
)

// Builtin is a plugin compiled into the binary.
type Builtin struct {
	// New returns a fresh sdk.Source, sdk.Sink or sdk.Transform.
	New func() any
	// Info is what the plugin says of itself.
	Info sdk.Info
}

// Name is the plugin's name on the command line: "sink-webhook".
func (b Builtin) Name() string { return string(b.Info.Kind) + "-" + b.Info.Type }

var builtins = map[string]Builtin{}

// register adds a built-in; a duplicate name is a programming error.
func register(newFn func() any) {
	var info sdk.Info
	switch p := newFn().(type) {
	case sdk.Source:
		info = p.Info()
	case sdk.Sink:
		info = p.Info()
	case sdk.Transform:
		info = p.Info()
	default:
		panic("plugins: not a source, sink or transform")
	}
	b := Builtin{New: newFn, Info: info}
	if _, dup := builtins[b.Name()]; dup {
		panic("plugins: duplicate built-in " + b.Name())
	}
	builtins[b.Name()] = b
}

func init() {
	register(func() any { return &sourcefile.Source{} })
	register(func() any { return &sourcehttp.Source{} })
	register(func() any { return &sources3.Source{} })
	register(func() any { return &sourcepostgres.Source{} })
	register(func() any { return &sourcewebhook.Source{} })
	register(func() any { return &sinkfile.Sink{} })
	register(func() any { return &sinkwebhook.Sink{} })
	register(func() any { return &sinkslack.Sink{} })
	register(func() any { return &sinkzendesk.Sink{} })
	register(func() any { return &sinks3.Sink{} })
	register(func() any { return &sinksnowflake.Sink{} })
	register(func() any { return &sinkbigquery.Sink{} })
	register(func() any { return &sinkpostgres.Sink{} })
	register(func() any { return &transformhttp.Transform{} })
}

// Lookup finds a built-in by name ("sink-webhook").
func Lookup(name string) (Builtin, bool) {
	b, ok := builtins[name]
	return b, ok
}

// All returns the built-ins sorted by name.
func All() []Builtin {
	out := make([]Builtin, 0, len(builtins))
	for _, b := range builtins {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}
