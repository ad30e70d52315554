package run

import "testing"

func TestTrackerCommitsOnlyInOrder(t *testing.T) {
	tr := &tracker{source: "calls"}
	a := tr.add([]byte("a"), 10)
	b := tr.add(nil, 5) // first half of a split batch: no position of its own
	c := tr.add([]byte("c"), 5)
	d := tr.add([]byte("d"), 1)
	for _, e := range []*entry{a, b, c, d} {
		e.hold() // one sink send each
		e.release()
	}

	// The later batches finish first: nothing may be committed yet.
	d.release()
	c.release()
	if _, _, ok := tr.takeCommit(); ok {
		t.Fatal("committed past an unacked batch")
	}
	a.release()
	pos, n, ok := tr.takeCommit()
	if !ok || string(pos) != "a" || n != 10 {
		t.Fatalf("after a: pos=%q n=%d ok=%v", pos, n, ok)
	}
	// b has no position: once it is done, c and d follow, and the newest
	// position wins.
	b.release()
	pos, n, ok = tr.takeCommit()
	if !ok || string(pos) != "d" || n != 11 {
		t.Fatalf("after b: pos=%q n=%d ok=%v", pos, n, ok)
	}
	if _, _, ok := tr.takeCommit(); ok {
		t.Fatal("nothing new, yet a commit")
	}
}

func TestTrackerFilteredBatchIsDoneAtOnce(t *testing.T) {
	tr := &tracker{source: "calls"}
	e := tr.add([]byte("p1"), 100)
	e.release() // routing found no sink for any row
	pos, _, ok := tr.takeCommit()
	if !ok || string(pos) != "p1" {
		t.Fatalf("pos=%q ok=%v", pos, ok)
	}
}

func TestTrackerAbandonedBatchBlocksLaterCommits(t *testing.T) {
	tr := &tracker{source: "calls"}
	a := tr.add([]byte("a"), 1)
	b := tr.add([]byte("b"), 1)
	c := tr.add([]byte("c"), 1)
	a.release()
	b.hold()
	b.abandon() // the run stopped while b was routed: its sink never got it
	b.release()
	c.release()
	pos, _, ok := tr.takeCommit()
	if !ok || string(pos) != "a" {
		t.Fatalf("pos=%q ok=%v; want a", pos, ok)
	}
	b.release()
	if pos, _, ok := tr.takeCommit(); ok {
		t.Fatalf("committed %q past an abandoned batch", pos)
	}
}
