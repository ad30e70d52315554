package sources3

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func listing(keys ...string) []object {
	var out []object
	for _, k := range keys {
		out = append(out, object{Key: k, ETag: "e-" + k, hash: objectHash(k, "e-"+k)})
	}
	return out
}

func TestPositionRoundTripsAndCompacts(t *testing.T) {
	tr, err := decodePosition(nil, 3)
	if err != nil {
		t.Fatal(err)
	}
	objs := listing("a", "b", "c", "d", "e")
	tr.prune(objs)
	for i, o := range objs {
		if tr.finished(o) {
			t.Fatalf("%s finished before it was read", o.Key)
		}
		tr.at(cursor{Key: o.Key, ETag: o.ETag, Offset: 10})
		tr.finish(o.Key, o.ETag)
		if want := max(0, i+1-3); len(tr.pos.Done) != min(i+1, 3) || (want > 0 && tr.pos.Through != objs[want-1].Key) {
			t.Fatalf("after %s: through %q, %d done", o.Key, tr.pos.Through, len(tr.pos.Done))
		}
	}
	enc := tr.encode()
	if !strings.Contains(string(enc), `"through":"b"`) || strings.Contains(string(enc), `"cur"`) {
		t.Fatalf("position %s", enc)
	}
	back, err := decodePosition(enc, 3)
	if err != nil {
		t.Fatal(err)
	}
	back.prune(objs[2:]) // the listing starts after through
	for _, o := range objs {
		if !back.finished(o) {
			t.Fatalf("%s is not finished after the round trip of %s", o.Key, enc)
		}
	}
	// A rewrite in the window is not finished; its old hash is pruned.
	rewritten := object{Key: "d", ETag: "v2", hash: objectHash("d", "v2")}
	back, _ = decodePosition(enc, 3)
	back.prune([]object{objs[2], rewritten, objs[4]})
	if back.finished(rewritten) || len(back.pos.Done) != 2 {
		t.Fatalf("rewritten d: finished %v, %d done", back.finished(rewritten), len(back.pos.Done))
	}
	// A smaller limit folds the excess at once, but never past the first
	// object still to read.
	back, _ = decodePosition(enc, 1)
	back.prune(append(listing("bb"), objs[2:]...))
	if back.pos.Through != "b" || len(back.pos.Done) != 3 {
		t.Fatalf("with bb unread: through %q, %d done", back.pos.Through, len(back.pos.Done))
	}
	back, _ = decodePosition(enc, 1)
	back.prune(objs[2:])
	if back.pos.Through != "d" || len(back.pos.Done) != 1 {
		t.Fatalf("nothing unread: through %q, %d done", back.pos.Through, len(back.pos.Done))
	}
}

func TestPositionCursorOnlyForTheSameVersion(t *testing.T) {
	tr, _ := decodePosition(nil, 10)
	o := listing("a")[0]
	tr.at(cursor{Key: "a", ETag: o.ETag, Offset: 42, Line: 3})
	enc := tr.encode()
	back, _ := decodePosition(enc, 10)
	back.prune([]object{o})
	if c := back.resume(o); c == nil || c.Offset != 42 || c.Line != 3 {
		t.Fatalf("resume %+v from %s", c, enc)
	}
	back, _ = decodePosition(enc, 10)
	v2 := object{Key: "a", ETag: "v2", hash: objectHash("a", "v2")}
	back.prune([]object{v2})
	if c := back.resume(v2); c != nil || back.pos.Cur != nil {
		t.Fatalf("a cursor into the old version was kept: %+v", c)
	}
}

func TestPositionSize(t *testing.T) {
	tr, _ := decodePosition(nil, defaultTrackObjects)
	var keys []string
	for i := 0; i < 5000; i++ {
		keys = append(keys, fmt.Sprintf("classified/dt=2025-11-%02d/part-%08d.parquet", i/200, i))
	}
	objs := listing(keys...)
	tr.prune(objs)
	for _, o := range objs {
		tr.finish(o.Key, o.ETag)
	}
	enc := tr.encode()
	// 8 bytes per remembered object, base64: about 11 KB for 1000.
	if n := len(enc); n > 11000+200 {
		t.Fatalf("position of %d bytes for %d tracked objects", n, defaultTrackObjects)
	}
	var p position
	if err := json.Unmarshal(enc, &p); err != nil || len(p.Done) != defaultTrackObjects || p.Through != keys[len(keys)-defaultTrackObjects-1] {
		t.Fatalf("%v: %d done, through %q", err, len(p.Done), p.Through)
	}
}

func TestPositionRejectsOthers(t *testing.T) {
	for _, from := range []string{`{"files":{}}`, `not json`, `{"v":1,"done":"AAA"}`} {
		if _, err := decodePosition([]byte(from), 10); err == nil || !strings.Contains(err.Error(), "pipeline state reset") {
			t.Errorf("%s: %v", from, err)
		}
	}
}
