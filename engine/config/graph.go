package config

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// order sorts the filters so that every filter comes after the filters it
// reads, reports each cycle among filters, and records who reads whom.
func (d *decoder) order() {
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[*Filter]int{}
	var path []*Filter
	var sorted []*Filter
	var visit func(f *Filter)
	visit = func(f *Filter) {
		state[f] = visiting
		path = append(path, f)
		for _, in := range f.Inputs {
			g, ok := in.Node.(*Filter)
			if !ok {
				continue
			}
			switch state[g] {
			case unvisited:
				visit(g)
			case visiting:
				d.cycle(path, g, in.Range)
			}
		}
		path = path[:len(path)-1]
		state[f] = done
		sorted = append(sorted, f)
	}
	for _, f := range d.p.Filters {
		if state[f] == unvisited {
			visit(f)
		}
	}
	d.p.Filters = sorted

	for _, f := range d.p.Filters {
		for _, in := range f.Inputs {
			d.p.readers[in.Node] = append(d.p.readers[in.Node], f)
		}
	}
	for _, s := range d.p.Sinks {
		for _, in := range s.Inputs {
			d.p.readers[in.Node] = append(d.p.readers[in.Node], s)
		}
	}
}

// cycle reports the cycle closed by the input at rng, which leads from the
// last filter on path back to to.
func (d *decoder) cycle(path []*Filter, to *Filter, rng hcl.Range) {
	start := 0
	for i, f := range path {
		if f == to {
			start = i
		}
	}
	members := path[start:]
	// Records flow against the inputs lists, so name the cycle in the order
	// records would take: each filter is read by the one after it.
	names := make([]string, 0, len(members)+1)
	for i := len(members) - 1; i >= 0; i-- {
		names = append(names, members[i].Addr())
		members[i].broken = true
	}
	names = append(names, members[len(members)-1].Addr())
	detail := fmt.Sprintf("Records would go round forever: %s. Remove one of these inputs.", strings.Join(names, " → "))
	if len(members) == 1 {
		detail = fmt.Sprintf("%s lists itself in its inputs.", to.Addr())
	}
	d.errorf(&rng, "Cycle among filters", detail)
}

// checkGraph reports a pipeline with nothing to read or nowhere to write, and
// warns about sources and filters that nothing reads (unless a reference is
// dangling, which may be the reason).
func (d *decoder) checkGraph() {
	var subject *hcl.Range
	if d.pipelineBlock != nil {
		subject = d.pipelineBlock.DefRange.Ptr()
	} else if d.p.File != "" {
		subject = &hcl.Range{Filename: d.p.File, Start: hcl.InitialPos, End: hcl.InitialPos}
	}
	if !d.sawSource {
		d.errorf(subject, "No source", `A pipeline reads from at least one source block, like source "file" "calls" { path = "calls.jsonl" }.`)
	}
	if !d.sawSink {
		d.errorf(subject, "No sink", `A pipeline writes to at least one sink block, like sink "webhook" "crm" { inputs = [source.calls] }.`)
	}
	// A misspelt reference would make its target look unused; the error
	// about the reference says enough.
	if d.dangling > 0 {
		return
	}
	for _, s := range d.p.Sources {
		if len(d.p.readers[s]) == 0 {
			d.warnf(&s.DefRange, "Unused source",
				fmt.Sprintf("Nothing reads %s: no filter or sink lists it in its inputs, so it will not be read.", s.Addr()))
		}
	}
	for _, f := range d.p.Filters {
		if len(d.p.readers[f]) == 0 {
			d.warnf(&f.DefRange, "Unused filter",
				fmt.Sprintf("Nothing reads %s: no filter or sink lists it in its inputs.", f.Addr()))
		}
	}
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
	case KindSink:
		for _, s := range p.Sinks {
			if s.Name == name {
				return s
			}
		}
	}
	return nil
}

// Readers returns the filters and sinks that list n in their inputs, filters
// first in topological order, then sinks. A runner fans a node's output out to
// these.
func (p *Pipeline) Readers(n Node) []Node {
	return p.readers[n]
}

// SourcesOf returns the sources whose records can reach n, in declaration
// order; for a source, that is itself. A sink's result is the set of sources
// whose positions wait for its acks.
func (p *Pipeline) SourcesOf(n Node) []*Source {
	seen := map[Node]bool{}
	var walk func(Node)
	walk = func(n Node) {
		if seen[n] {
			return
		}
		seen[n] = true
		for _, in := range inputsOf(n) {
			walk(in.Node)
		}
	}
	walk(n)
	var out []*Source
	for _, s := range p.Sources {
		if seen[s] {
			out = append(out, s)
		}
	}
	return out
}

// SinksOf returns the sinks that records from n can reach, in declaration
// order: the sinks that must ack a source's batch before its position is
// committed.
func (p *Pipeline) SinksOf(n Node) []*Sink {
	seen := map[Node]bool{}
	var walk func(Node)
	walk = func(n Node) {
		if seen[n] {
			return
		}
		seen[n] = true
		for _, r := range p.readers[n] {
			walk(r)
		}
	}
	walk(n)
	var out []*Sink
	for _, s := range p.Sinks {
		if seen[s] {
			out = append(out, s)
		}
	}
	return out
}

// Paths returns every chain of filters that records take from a source to a
// sink, each in the order records pass them. An empty chain means the sink
// reads the source directly; no chains means no records of from reach to.
// With shared filters (a diamond) a record can reach a sink by more than one
// chain; the runner decides whether it then arrives once per chain.
func (p *Pipeline) Paths(from *Source, to *Sink) [][]*Filter {
	var out [][]*Filter
	var chain []*Filter
	onChain := map[*Filter]bool{}
	var walk func(n Node)
	walk = func(n Node) {
		for _, r := range p.readers[n] {
			switch r := r.(type) {
			case *Sink:
				if r == to {
					out = append(out, append([]*Filter(nil), chain...))
				}
			case *Filter:
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

func inputsOf(n Node) []Input {
	switch n := n.(type) {
	case *Filter:
		return n.Inputs
	case *Sink:
		return n.Inputs
	}
	return nil
}
