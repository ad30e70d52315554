package sourcepostgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
)

// partitions = N splits the rows by a hash of the key: each partition,
// read on its own (and resumed from its own positions), holds rows no
// other holds, together every row, each with the id a whole Read gives it.
func TestKeyHashPartitions(t *testing.T) {
	d := newDB(t)
	d.exec(`CREATE TABLE {s}.tickets (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, subject text)`)
	d.exec(`INSERT INTO {s}.tickets SELECT i, '2025-03-01 10:00:00+00'::timestamptz + (i % 17) * interval '1 minute', 'subject ' || i FROM generate_series(1, 200) i`)
	whole := read(t, d.source(map[string]any{"table": "{s}.tickets"}), nil)
	idOf := map[int64]string{}
	for i, id := range idsOf(t, whole.records) {
		idOf[id] = whole.ids[i]
	}

	s := d.source(map[string]any{"table": "{s}.tickets", "partitions": 4, "batch_rows": 7})
	parts, err := s.Partitions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(parts) != "[key-hash-0-of-4 key-hash-1-of-4 key-hash-2-of-4 key-hash-3-of-4]" {
		t.Fatalf("partitions %v", parts)
	}
	seen := map[int64]string{}
	for _, p := range parts {
		c := &collect{}
		if err := s.ReadPartition(context.Background(), p, nil, c); err != nil {
			t.Fatal(err)
		}
		if len(c.records) == 0 || len(c.records) == 200 {
			t.Errorf("partition %s holds %d of 200 rows", p, len(c.records))
		}
		for i, id := range idsOf(t, c.records) {
			if other, ok := seen[id]; ok {
				t.Errorf("row %d is in %s and %s", id, other, p)
			}
			seen[id] = p
			if c.ids[i] != idOf[id] {
				t.Errorf("row %d: id %q in its partition, %q in a whole read", id, c.ids[i], idOf[id])
			}
		}
		// Resuming from the end of its first batch reads exactly the rest.
		if len(c.positions) > 1 {
			rest := &collect{}
			if err := s.ReadPartition(context.Background(), p, c.positions[0], rest); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rest.records, c.records[c.sizes[0]:]) {
				t.Errorf("partition %s resumed after its first batch read %d rows, want %d", p, len(rest.records), len(c.records)-c.sizes[0])
			}
		}
		if again := (&collect{}); s.ReadPartition(context.Background(), p, c.last(), again) != nil || len(again.records) != 0 {
			t.Errorf("partition %s read again from its end: %d rows", p, len(again.records))
		}
	}
	if len(seen) != 200 {
		t.Errorf("the partitions hold %d rows, want all 200", len(seen))
	}
	// Without partitions it is one partition, and a bad count is refused.
	one := d.source(map[string]any{"table": "{s}.tickets"})
	if _, err := one.Partitions(context.Background()); !errors.Is(err, sdk.ErrNotPartitioned) {
		t.Errorf("partitions 0: %v, want ErrNotPartitioned", err)
	}
	if _, err := d.configure(map[string]any{"table": "{s}.tickets", "partitions": 5000}); err == nil {
		t.Error("partitions = 5000 accepted")
	}
}
