package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPostgresVersionKeepsTheNewestEvent runs the real binary with
// sink "postgres" and version = "updated_at": webhook events that arrive
// newest first, within a load, across loads and in a later run, leave each
// label at its newest event.
func TestPostgresVersionKeepsTheNewestEvent(t *testing.T) {
	dsn := postgresDSN(t)
	dir := t.TempDir()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	schema := fmt.Sprintf("e2e_version_%d", rand.IntN(1e9))
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })

	event := func(id, label, kind, value, at string) string {
		v := "null"
		if at != "" {
			v = `"2024-05-01T12:00:0` + at + `Z"`
		}
		return fmt.Sprintf(`{"row_id":%q,"label_id":%q,"event":%q,"value":%q,"updated_at":%s}`, id, label, kind, value, v)
	}
	// Run 1: L1's updates newest first (three loads of two records); L2
	// created without a time, then updated; L3's two updates at the same
	// time: the later one wins.
	writeFile(t, filepath.Join(dir, "run1.jsonl"), strings.Join([]string{
		event("e1", "L1", "LABEL_UPDATED", "cat v3", "3"),
		event("e2", "L1", "LABEL_UPDATED", "cat v2", "2"),
		event("e3", "L2", "LABEL_CREATED", "dog", ""),
		event("e4", "L1", "LABEL_CREATED", "cat v1", "1"),
		event("e5", "L3", "LABEL_UPDATED", "bird a", "5"),
		event("e6", "L3", "LABEL_UPDATED", "bird b", "5"),
		event("e7", "L2", "LABEL_UPDATED", "dog v4", "4"),
	}, "\n")+"\n")
	// Run 2, later: an old L1 event arrives late; a null-time event for L2;
	// L3 again at the same time.
	writeFile(t, filepath.Join(dir, "run2.jsonl"), strings.Join([]string{
		event("e8", "L1", "LABEL_UPDATED", "cat v2 late", "2"),
		event("e9", "L2", "LABEL_UPDATED", "dog untimed", ""),
		event("e10", "L3", "LABEL_UPDATED", "bird c", "5"),
	}, "\n")+"\n")
	hcl := func(name, input, mode, key string) string {
		path := filepath.Join(dir, name)
		writeFile(t, path, fmt.Sprintf(`
pipeline { name = "labels" }

source "file" "events" {
  path       = %q
  batch_rows = 1
}

sink "postgres" "dw" {
  inputs  = [source.events]
  dsn     = %q
  schema  = %q
  table   = "labels"
  %s
  version = "updated_at"
  mode    = %q
  types   = { updated_at = "timestamp" }
  batch {
    rows     = 2
    interval = "1m"
  }
}
`, input, dsn, schema, key, mode))
		return path
	}

	for i, run := range []string{"run1", "run2"} {
		p := hcl(run+".hcl", filepath.Join(dir, run+".jsonl"), "merge", `key     = "label_id"`)
		if res := pipeline(t, dir, nil, "run", "--state", filepath.Join(dir, run+".db"), p); res.code != 0 {
			t.Fatalf("run %d exited %d\n%s", i+1, res.code, res.stderr)
		}
	}
	rows, err := conn.Query(ctx, "SELECT label_id, value, event, _pipeline_id FROM "+schema+".labels ORDER BY label_id")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var label, value, kind, id string
		if err := rows.Scan(&label, &value, &kind, &id); err != nil {
			t.Fatal(err)
		}
		got = append(got, label+"="+value+"/"+kind+"/"+id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := "L1=cat v3/LABEL_UPDATED/e1 L2=dog v4/LABEL_UPDATED/e7 L3=bird c/LABEL_UPDATED/e10"
	if strings.Join(got, " ") != want {
		t.Errorf("labels:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	var loads int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+"._pipeline_loads").Scan(&loads); err != nil {
		t.Fatal(err)
	}
	if loads != 6 {
		t.Errorf("%d loads, want 6 (4 + 2: two records each)", loads)
	}

	// version with mode = "append" is refused before anything runs.
	bad := hcl("append.hcl", filepath.Join(dir, "run1.jsonl"), "append", "")
	res := pipeline(t, dir, nil, "validate", bad)
	if res.code == 0 || !strings.Contains(res.stderr, `version is for mode = "merge"; append inserts every row and replaces none`) {
		t.Errorf("validate of version with append: exit %d\n%s", res.code, res.stderr)
	}
}
