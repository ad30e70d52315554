package run

import (
	"fmt"
	"testing"
)

func TestTrackerCommitsOnlyInOrder(t *testing.T) {
	tr := &tracker{source: "calls"}
	a := tr.add([]byte("a"), 10, 0)
	b := tr.add(nil, 5, 0) // first half of a split batch: no position of its own
	c := tr.add([]byte("c"), 5, 0)
	d := tr.add([]byte("d"), 1, 0)
	for _, e := range []*entry{a, b, c, d} {
		e.hold(-1) // one sink send each
		e.routedAll()
	}

	// The later batches finish first: nothing may be committed yet.
	d.release(-1)
	c.release(-1)
	if _, ok := tr.takeCommit(); ok {
		t.Fatal("committed past an unacked batch")
	}
	a.release(-1)
	cs, ok := tr.takeCommit()
	pos, n := cs.position, cs.records
	if !ok || string(pos) != "a" || n != 10 {
		t.Fatalf("after a: pos=%q n=%d ok=%v", pos, n, ok)
	}
	// b has no position: once it is done, c and d follow, and the newest
	// position wins.
	b.release(-1)
	cs, ok = tr.takeCommit()
	pos, n = cs.position, cs.records
	if !ok || string(pos) != "d" || n != 11 {
		t.Fatalf("after b: pos=%q n=%d ok=%v", pos, n, ok)
	}
	if _, ok := tr.takeCommit(); ok {
		t.Fatal("nothing new, yet a commit")
	}
}

func TestTrackerFilteredBatchIsDoneAtOnce(t *testing.T) {
	tr := &tracker{source: "calls"}
	e := tr.add([]byte("p1"), 100, 0)
	e.routedAll() // routing found no sink for any row
	cs, ok := tr.takeCommit()
	pos := cs.position
	if !ok || string(pos) != "p1" {
		t.Fatalf("pos=%q ok=%v", pos, ok)
	}
}

func TestTrackerAbandonedBatchBlocksLaterCommits(t *testing.T) {
	tr := &tracker{source: "calls"}
	a := tr.add([]byte("a"), 1, 0)
	b := tr.add([]byte("b"), 1, 0)
	c := tr.add([]byte("c"), 1, 0)
	a.release(-1)
	b.hold(-1)
	b.abandon() // the run stopped while b was routed: its sink never got it
	b.release(-1)
	c.release(-1)
	cs, ok := tr.takeCommit()
	pos := cs.position
	if !ok || string(pos) != "a" {
		t.Fatalf("pos=%q ok=%v; want a", pos, ok)
	}
	b.release(-1)
	if cs, ok := tr.takeCommit(); ok {
		t.Fatalf("committed %q past an abandoned batch", cs.position)
	}
}

// A sink that acked batches another sink still holds keeps marks of them;
// a later run does not send it those batches again while the re-read
// batches match the marks.
func TestTrackerPerSinkProgress(t *testing.T) {
	tr := &tracker{source: "calls", sinks: 2}
	a := tr.add([]byte("a"), 10, 1)
	b := tr.add([]byte("b"), 20, 2)
	c := tr.add([]byte("c"), 30, 3)
	for _, e := range []*entry{a, b, c} {
		e.hold(0)
		e.hold(1)
		e.routedAll()
	}
	a.release(0)
	c.release(0) // out of order: sink 0 is through a only
	cs, ok := tr.takeCommit()
	if !ok || cs.position != nil || fmt.Sprint(cs.marks) != "[[{1 10}] []]" {
		t.Fatalf("after a, c by sink 0: %+v ok=%v", cs, ok)
	}
	b.release(0)
	a.release(1)
	cs, ok = tr.takeCommit()
	if !ok || string(cs.position) != "a" || fmt.Sprint(cs.marks) != "[[{2 20} {3 30}] []]" {
		t.Fatalf("sink 0 through c, sink 1 through a: %+v ok=%v", cs, ok)
	}
	if _, ok := tr.takeCommit(); ok {
		t.Fatal("nothing moved, yet a commit")
	}

	// The next run starts at a: b and c come again, and d is new.
	next := &tracker{source: "calls", sinks: 2, lastPos: []byte("a")}
	next.resume(cs.marks)
	b2 := next.add([]byte("b"), 20, 2)
	cs2, _ := next.takeCommit()
	if fmt.Sprint(cs2.marks[0]) != "[{2 20} {3 30}]" {
		t.Fatalf("sink 0 lost the marks of c before the rerun read it again: %+v", cs2)
	}
	c2 := next.add([]byte("c"), 30, 3)
	d2 := next.add([]byte("d"), 5, 4)
	if b2.sent(0) || c2.sent(0) || !d2.sent(0) || !b2.sent(1) {
		t.Fatalf("sent: b=%v c=%v d=%v to sink 0, b=%v to sink 1", b2.sent(0), c2.sent(0), d2.sent(0), b2.sent(1))
	}
	for _, e := range []*entry{b2, c2} {
		e.hold(1)
		e.routedAll()
	}
	b2.release(1)
	cs2, _ = next.takeCommit()
	if string(cs2.position) != "b" || fmt.Sprint(cs2.marks[0]) != "[{3 30}]" || len(cs2.marks[1]) != 0 {
		t.Fatalf("after b: %+v", cs2)
	}
}

// A re-read batch that differs from the sink's mark (a new file sorted in
// before the one being read) ends the skipping for that sink: it gets
// everything from there, so nothing is lost.
func TestTrackerStopsSkippingAtTheFirstBatchThatDiffers(t *testing.T) {
	next := &tracker{source: "calls", sinks: 1}
	next.resume([][]Mark{{{FP: 2, Rows: 20}, {FP: 3, Rows: 30}}})
	b := next.add([]byte("b"), 20, 2)
	x := next.add([]byte("x"), 30, 99) // not the batch the sink acked
	c := next.add([]byte("c"), 30, 3)  // matches, but comes after a mismatch
	if b.sent(0) || !x.sent(0) || !c.sent(0) {
		t.Fatalf("sent b=%v x=%v c=%v; want false, true, true", b.sent(0), x.sent(0), c.sent(0))
	}
}
