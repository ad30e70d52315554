package sources3

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
)

func readPart(t *testing.T, s *Source, key string, from []byte) *collect {
	t.Helper()
	c := &collect{}
	if err := s.ReadPartition(context.Background(), key, from, c); err != nil {
		t.Fatalf("ReadPartition(%s): %v", key, err)
	}
	return c
}

func partitionsOf(t *testing.T, s *Source) []string {
	t.Helper()
	parts, err := s.Partitions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

func posOf(t *testing.T, b []byte) position {
	t.Helper()
	var p position
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("position %s: %v", b, err)
	}
	return p
}

// sameAsWhole checks that each partition, read on its own from the start
// and then from each of its own positions, gives what the whole read gave
// for its object: the same batches, records and places, with positions
// that hold that object alone (its cursor as the whole read's, then its
// hash as finished).
func sameAsWhole(t *testing.T, s *Source, whole *collect, parts []string) {
	t.Helper()
	total := 0
	for _, key := range parts {
		var want []batch
		for _, b := range whole.batches {
			if b.origin == key {
				want = append(want, b)
			}
		}
		got := readPart(t, s, key, nil)
		if len(got.batches) != len(want) || len(want) == 0 {
			t.Fatalf("partition %s: %d batches, the whole read %d", key, len(got.batches), len(want))
		}
		for i, g := range got.batches {
			w := want[i]
			if !slices.Equal(g.records, w.records) || !slices.Equal(g.places, w.places) || g.origin != w.origin {
				t.Fatalf("partition %s batch %d: %v %v, the whole read %v %v", key, i, g.records, g.places, w.records, w.places)
			}
			gp, wp := posOf(t, g.pos), posOf(t, w.pos)
			if gp.V != positionVersion || gp.Through != "" {
				t.Errorf("partition %s batch %d: position %s", key, i, g.pos)
			}
			if wp.Cur != nil {
				if !reflect.DeepEqual(gp.Cur, wp.Cur) || len(gp.Done) != 0 {
					t.Errorf("partition %s batch %d: position %s, the whole read's %s", key, i, g.pos, w.pos)
				}
				continue
			}
			// The object's last batch: finished, and nothing else in it.
			if gp.Cur != nil || len(gp.Done) != 1 || !wp.Done.has(gp.Done[0]) {
				t.Errorf("partition %s last batch: position %s, the whole read's %s", key, g.pos, w.pos)
			}
		}
		for i, b := range got.batches {
			rest := &collect{batches: got.batches[i+1:]}
			from := readPart(t, s, key, b.pos)
			if !slices.Equal(from.records(), rest.records()) || !slices.Equal(from.ids(), rest.ids()) {
				t.Fatalf("partition %s from batch %d: %v %v, want %v %v", key, i, from.records(), from.ids(), rest.records(), rest.ids())
			}
		}
		total += len(got.records())
	}
	if total != len(whole.records()) {
		t.Fatalf("the partitions read %d records together, the whole read %d", total, len(whole.records()))
	}
}

func TestPartitionsAreTheObjects(t *testing.T) {
	l := newLake(t)
	l.put("in/b.jsonl", jsonl("b", 4))
	l.put("in/a.jsonl", jsonl("a", 2))
	l.put("in/d.jsonl.gz", gz(jsonl("d", 5)))
	l.put("in/_manifest-1.json", []byte(`{}`))
	l.put("in/.tmp/x.jsonl", jsonl("x", 1))
	l.put("other/a.jsonl", jsonl("o", 1))
	s := l.source(nil)

	parts := partitionsOf(t, s)
	if !slices.Equal(parts, []string{"in/a.jsonl", "in/b.jsonl", "in/d.jsonl.gz"}) {
		t.Fatalf("partitions %q", parts)
	}
	whole := read(t, s, nil)
	sameAsWhole(t, s, whole, parts)

	// A finished partition reads nothing from its last position, nor from
	// the whole read's checkpoint.
	bRead := readPart(t, s, "in/b.jsonl", nil)
	for _, from := range [][]byte{bRead.last(), whole.last()} {
		if again := readPart(t, s, "in/b.jsonl", from); len(again.batches) != 0 {
			t.Fatalf("b from %s: %v", from, again.records())
		}
	}
	// A key the source does not read is no partition: it reads nothing.
	for _, key := range []string{"in/_manifest-1.json", "other/a.jsonl", "in/a", "in/"} {
		if got := readPart(t, s, key, nil); len(got.batches) != 0 {
			t.Errorf("%s: %v", key, got.records())
		}
	}

	// A rewritten object is read again in full, with the places of the
	// whole read; a new object is a new partition; a deleted one is gone
	// and reads nothing.
	l.put("in/b.jsonl", jsonl("b2", 3))
	l.put("in/c.jsonl", jsonl("c", 1))
	l.delete("in/a.jsonl")
	if parts := partitionsOf(t, s); !slices.Equal(parts, []string{"in/b.jsonl", "in/c.jsonl", "in/d.jsonl.gz"}) {
		t.Fatalf("partitions after the changes %q", parts)
	}
	rewritten := readPart(t, s, "in/b.jsonl", bRead.last())
	wholeAgain := read(t, s, whole.last())
	if got := rewritten.fields("id"); !slices.Equal(got, ids("b2", 3)) {
		t.Fatalf("rewritten b: %v", got)
	}
	if got := rewritten.ids(); !slices.Equal(got, wholeAgain.ids()[:3]) {
		t.Fatalf("rewritten b: places %v, the whole read %v", got, wholeAgain.ids())
	}
	if got := readPart(t, s, "in/c.jsonl", nil); !slices.Equal(got.fields("id"), ids("c", 1)) {
		t.Fatalf("new c: %v", got.fields("id"))
	}
	for _, from := range [][]byte{nil, whole.last()} {
		if got := readPart(t, s, "in/a.jsonl", from); len(got.batches) != 0 {
			t.Fatalf("deleted a: %v", got.records())
		}
	}
}

func TestCSVAndParquetPartitions(t *testing.T) {
	l := newLake(t)
	csvText := "id,n,text\n" +
		"c-0,0,plain\n" +
		"c-1,1,\"two\nlines\"\n" +
		"c-2,2,x\n" +
		"c-3,3,\"three\nmore\nlines\"\n" +
		"c-4,4,y\n"
	l.put("csv/0.csv", []byte(csvText))
	l.put("csv/1.csv.gz", gz([]byte(csvText)))
	l.put("pq/a.parquet", parquetOf(t, jsonl("a", 11), 4))
	l.put("pq/b.parquet", parquetOf(t, jsonl("b", 3), 4))
	for _, tc := range []struct {
		prefix, format string
		want           []string
	}{
		{"csv/", "csv", []string{"csv/0.csv", "csv/1.csv.gz"}},
		{"pq/", "parquet", []string{"pq/a.parquet", "pq/b.parquet"}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			s := l.source(map[string]any{"prefix": tc.prefix, "format": tc.format, "batch_rows": 2})
			parts := partitionsOf(t, s)
			if !slices.Equal(parts, tc.want) {
				t.Fatalf("partitions %q", parts)
			}
			sameAsWhole(t, s, read(t, s, nil), parts)
		})
	}
}
