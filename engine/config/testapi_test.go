package config

// What only tests use: reading a pipeline from bytes and walking the graph
// by address and path. The engine itself goes from config to engine/plan.

import (
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// LoadBytes reads one pipeline from src as if it were the file filename; see
// Loader.LoadBytes.
func LoadBytes(src []byte, filename string) (*Pipeline, hcl.Diagnostics) {
	return (&Loader{}).LoadBytes(src, filename)
}

// LoadBytes reads one pipeline from src as if it were the file filename, which
// still names the directory for relative paths (plugin commands, file()).
func (l *Loader) LoadBytes(src []byte, filename string) (*Pipeline, hcl.Diagnostics) {
	parser := hclparse.NewParser()
	f, diags := parse(parser, src, filename)
	p, d := l.decode(parser, []string{filename}, []*hcl.File{f}, diags.HasErrors())
	return p, append(diags, d...)
}

// Node returns the block with the given address ("source.calls",
// "filter.high_churn", "sink.crm"), or nil.
func (p *Pipeline) Node(addr string) Node {
	kind, name, _ := strings.Cut(addr, ".")
	switch Kind(kind) {
	case KindSource:
		for _, s := range p.Sources {
			if s.Name == name {
				return s
			}
		}
	case KindFilter:
		for _, f := range p.Filters {
			if f.Name == name {
				return f
			}
		}
	case KindTransform:
		for _, t := range p.Transforms {
			if t.Name == name {
				return t
			}
		}
	case KindSink:
		for _, s := range p.Sinks {
			if s.Name == name {
				return s
			}
		}
	}
	return nil
}

// Paths returns every chain of filters that records take from a source to a
// sink, each in the order records pass them. Transforms on the way are
// passed through and left out of the chains; StagePaths includes them. An empty chain means the sink
// reads the source directly; no chains means no records of from reach to.
// With shared filters (a diamond) a record can reach a sink by more than one
// chain; the runner decides whether it then arrives once per chain.
func (p *Pipeline) Paths(from *Source, to *Sink) [][]*Filter {
	var out [][]*Filter
	for _, chain := range p.StagePaths(from, to) {
		filters := []*Filter{}
		for _, n := range chain {
			if f, ok := n.(*Filter); ok {
				filters = append(filters, f)
			}
		}
		out = append(out, filters)
	}
	return out
}

// StagePaths is Paths with every stage of a chain, filters and transforms,
// in the order records pass them.
func (p *Pipeline) StagePaths(from *Source, to *Sink) [][]Node {
	var out [][]Node
	var chain []Node
	onChain := map[Node]bool{}
	var walk func(n Node)
	walk = func(n Node) {
		for _, r := range p.readers[n] {
			switch r := r.(type) {
			case *Sink:
				if r == to {
					out = append(out, append([]Node{}, chain...))
				}
			case *Filter, *Transform:
				if onChain[r] {
					continue // a cycle; reported by Load
				}
				onChain[r] = true
				chain = append(chain, r)
				walk(r)
				chain = chain[:len(chain)-1]
				onChain[r] = false
			}
		}
	}
	walk(from)
	return out
}
