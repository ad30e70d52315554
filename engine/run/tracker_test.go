package run

import "testing"

func TestTrackerCommitsOnlyInOrder(t *testing.T) {
	tr := &tracker{source: "calls"}
	a := tr.add([]byte("a"), 10)
	b := tr.add(nil, 5) // first half of a split batch: no position of its own
	c := tr.add([]byte("c"), 5)
	d := tr.add([]byte("d"), 1)
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
	e := tr.add([]byte("p1"), 100)
	e.routedAll() // routing found no sink for any row
	cs, ok := tr.takeCommit()
	pos := cs.position
	if !ok || string(pos) != "p1" {
		t.Fatalf("pos=%q ok=%v", pos, ok)
	}
}

func TestTrackerAbandonedBatchBlocksLaterCommits(t *testing.T) {
	tr := &tracker{source: "calls"}
	a := tr.add([]byte("a"), 1)
	b := tr.add([]byte("b"), 1)
	c := tr.add([]byte("c"), 1)
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

// A sink that acked batches another sink still holds is ahead of the
// committed position by exactly what it acked in order.
func TestTrackerPerSinkProgress(t *testing.T) {
	tr := &tracker{source: "calls", sinks: 2}
	a := tr.add([]byte("a"), 10)
	b := tr.add([]byte("b"), 20)
	c := tr.add([]byte("c"), 30)
	for _, e := range []*entry{a, b, c} {
		e.hold(0)
		e.hold(1)
		e.routedAll()
	}
	a.release(0)
	c.release(0) // out of order: sink 0 is through a only
	cs, ok := tr.takeCommit()
	if !ok || cs.position != nil || cs.ahead[0] != 10 || cs.ahead[1] != 0 {
		t.Fatalf("after a, c by sink 0: %+v ok=%v", cs, ok)
	}
	b.release(0)
	a.release(1)
	cs, ok = tr.takeCommit()
	if !ok || string(cs.position) != "a" || cs.ahead[0] != 50 || cs.ahead[1] != 0 {
		t.Fatalf("sink 0 through c, sink 1 through a: %+v ok=%v", cs, ok)
	}
	if _, ok := tr.takeCommit(); ok {
		t.Fatal("nothing moved, yet a commit")
	}

	// The next run starts at a; sink 0 had acked 50 records past it, so it
	// is not sent b and c again, and keeps its progress until it moves on.
	next := &tracker{source: "calls", sinks: 2, lastPos: []byte("a"), skip: []int64{50, 0}}
	b2 := next.add([]byte("b"), 20)
	c2 := next.add([]byte("c"), 30)
	d2 := next.add([]byte("d"), 5)
	if b2.sent(0) || c2.sent(0) || !d2.sent(0) || !b2.sent(1) {
		t.Fatalf("sent: b=%v c=%v d=%v to sink 0, b=%v to sink 1", b2.sent(0), c2.sent(0), d2.sent(0), b2.sent(1))
	}
	for _, e := range []*entry{b2, c2} {
		e.hold(1)
		e.routedAll()
	}
	cs, _ = next.takeCommit()
	if cs.ahead[0] != 50 {
		t.Fatalf("sink 0 lost its progress before the rerun caught up: %+v", cs)
	}
	b2.release(1)
	cs, _ = next.takeCommit()
	if string(cs.position) != "b" || cs.ahead[0] != 30 || cs.ahead[1] != 0 {
		t.Fatalf("after b: %+v", cs)
	}
}
