package config

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// order sorts the stages (filters and transforms) so that every stage comes
// after the stages it reads, reports each cycle among them, and records who
// reads whom.
func (d *decoder) order() {
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[Node]int{}
	var path []Node
	var sorted []Node
	var visit func(n Node)
	visit = func(n Node) {
		state[n] = visiting
		path = append(path, n)
		for _, in := range n.Upstream() {
			if !isStage(in.Node) {
				continue
			}
			switch state[in.Node] {
			case unvisited:
				visit(in.Node)
			case visiting:
				d.cycle(path, in.Node, in.Range)
			}
		}
		path = path[:len(path)-1]
		state[n] = done
		sorted = append(sorted, n)
	}
	for _, n := range d.p.Stages {
		if state[n] == unvisited {
			visit(n)
		}
	}
	d.p.Stages = sorted
	d.p.Filters, d.p.Transforms = nil, nil
	for _, n := range sorted {
		switch n := n.(type) {
		case *Filter:
			d.p.Filters = append(d.p.Filters, n)
		case *Transform:
			d.p.Transforms = append(d.p.Transforms, n)
		}
	}

	for _, n := range d.p.Stages {
		for _, in := range n.Upstream() {
			d.p.readers[in.Node] = append(d.p.readers[in.Node], n)
		}
	}
	for _, s := range d.p.Sinks {
		for _, in := range s.Inputs {
			d.p.readers[in.Node] = append(d.p.readers[in.Node], s)
		}
	}
}

func isStage(n Node) bool {
	switch n.(type) {
	case *Filter, *Transform:
		return true
	}
	return false
}

// cycle reports the cycle closed by the input at rng, which leads from the
// last stage on path back to to.
func (d *decoder) cycle(path []Node, to Node, rng hcl.Range) {
	start := 0
	for i, n := range path {
		if n == to {
			start = i
		}
	}
	members := path[start:]
	// Records flow against the inputs lists, so name the cycle in the order
	// records would take: each stage is read by the one after it.
	names := make([]string, 0, len(members)+1)
	summary := "Cycle among filters"
	for i := len(members) - 1; i >= 0; i-- {
		names = append(names, members[i].Addr())
		members[i].Base().broken = true
		if _, ok := members[i].(*Transform); ok {
			summary = "Cycle among filters and transforms"
		}
	}
	names = append(names, members[len(members)-1].Addr())
	detail := fmt.Sprintf("Records would go round forever: %s. Remove one of these inputs.", strings.Join(names, " → "))
	if len(members) == 1 {
		detail = fmt.Sprintf("%s lists itself in its inputs.", to.Addr())
	}
	d.errorf(&rng, summary, detail)
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
	for _, t := range d.p.Transforms {
		if len(d.p.readers[t]) == 0 {
			d.warnf(&t.DefRange, "Unused transform",
				fmt.Sprintf("Nothing reads %s: no filter, transform or sink lists it in its inputs.", t.Addr()))
		}
	}
}

// Readers returns the filters, transforms and sinks that list n in their
// inputs, the stages first in topological order (Stages), then sinks. A runner fans a node's output out to
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
		for _, in := range n.Upstream() {
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
