package run

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// A tap sees the next n records leaving a node, secret-looking fields
// redacted, then closes; a node the pipeline lacks is an error.
func TestTapShowsRecordsPassingANode(t *testing.T) {
	src := &fakeSource{batches: [][]string{
		{`{"row_id":"a1","x":1,"auth":{"api_key":"k-1","user":"ann"}}`, `{"row_id":"a2","x":5,"password":"hunter2"}`},
		{`{"row_id":"a3","x":7,"n":2.5}`, `{"row_id":"a4","x":9}`},
	}}
	out := &fakeSink{}
	plan := &Plan{
		Pipeline: "p",
		Sources:  []*Source{{Name: "a", Plugin: src}},
		Stages:   []Stage{&Filter{Name: "big", Where: "x > 1", Inputs: []string{"source.a"}}},
		Sinks:    []*Sink{{Name: "out", Plugin: out, Inputs: []string{"filter.big"}}},
	}
	r, err := New(plan, Options{Store: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Tap("filter.nope", 1); !errors.Is(err, ErrNoNode) {
		t.Errorf("a tap on a missing node: %v, want ErrNoNode", err)
	}
	source, _, err := r.Tap("source.a", 3)
	if err != nil {
		t.Fatal(err)
	}
	filtered, _, _ := r.Tap("filter.big", 10)
	sink, _, _ := r.Tap("sink.out", 1)
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	collect := func(ch <-chan Tapped) []string {
		var got []string
		for x := range ch { // closed after n records or at the run's end
			got = append(got, x.Node+" "+x.ID+" "+string(x.Record))
		}
		return got
	}
	want := []string{
		`source.a a1 {"auth":{"api_key":"[redacted]","user":"ann"},"row_id":"a1","x":1}`,
		`source.a a2 {"password":"[redacted]","row_id":"a2","x":5}`,
		`source.a a3 {"row_id":"a3","x":7,"n":2.5}`,
	}
	if got := collect(source); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("source tap:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := collect(filtered); len(got) != 3 || !strings.HasPrefix(got[0], "filter.big a2 ") {
		t.Errorf("filter tap: %q, want a2, a3, a4 (x > 1)", got)
	}
	if got := collect(sink); len(got) != 1 || !strings.HasPrefix(got[0], "sink.out a2 ") {
		t.Errorf("sink tap (n = 1): %q", got)
	}
}
