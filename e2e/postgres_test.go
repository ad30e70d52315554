package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pipelinehq/pipeline/internal/testpg"
)

// postgresDSN is the test server, or a skip.
func postgresDSN(t testing.TB) string { t.Helper(); return testpg.DSN(t) }

// pgRecord is record i of the generated input.
func pgRecord(i int) map[string]any {
	labels := []string{"High", "Medium", "Low"}
	return map[string]any{
		"row_id": fmt.Sprintf("row_%06d", i),
		"n":      i,
		"text":   fmt.Sprintf("Kunden säger upp avtalet 🙂 №%d — “quoted” \\ end", i),
		"classifications": map[string]any{
			"churn_risk": map[string]any{"label": labels[i%3], "confidence": float64(i%100) / 100},
			"topics":     []any{"billing", fmt.Sprintf("t%d", i%7)},
		},
		"metadata": map[string]any{"queue": "retention", "agent": fmt.Sprintf("agent-%d", i%13)},
	}
}

func TestPostgresSIGKILLMidLoadLeavesExactlyOneRowPerRecord(t *testing.T) {
	dsn := postgresDSN(t)
	const total = 100_000
	dir := t.TempDir()
	input := filepath.Join(dir, "calls.jsonl")
	var buf bytes.Buffer
	for i := range total {
		line, _ := json.Marshal(pgRecord(i))
		buf.Write(line)
		buf.WriteByte('\n')
	}
	writeFile(t, input, buf.String())

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	schema := fmt.Sprintf("e2e_pg_%d", rand.IntN(1e9))
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	table := schema + ".calls"

	writeFile(t, filepath.Join(dir, "load.hcl"), fmt.Sprintf(`
pipeline { name = "warehouse" }

source "file" "calls" {
  path       = %q
  batch_rows = 500
}

sink "postgres" "dw" {
  inputs = [source.calls]
  dsn    = %q
  schema = %q
  table  = "calls"
  key    = "row_id"
  batch {
    rows     = 2000
    interval = "200ms"
  }
}
`, input, dsn, schema))
	state := filepath.Join(dir, "state.db")
	env := []string{"HOME=" + dir}

	count := func() int64 {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			return -1 // not created yet
		}
		return n
	}

	// Kill the engine and its plugins three times, each at a random moment
	// after more rows were committed.
	var prev int64
	kills := 0
	for attempt := 0; attempt < 3; attempt++ {
		cmd := exec.Command(bin("pipeline"), "run", "--state", state, "load.hcl")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		deadline := time.Now().Add(30 * time.Second)
		target := prev + 1 + int64(rand.IntN(20000))
		for count() < target && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		var exitErr error
		select {
		case exitErr = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the engine did not die")
		}
		n := count()
		if ee, ok := exitErr.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
			kills++
		} else {
			t.Logf("run %d ended before the kill (%v)\n%s", attempt+1, exitErr, stderr.String())
		}
		t.Logf("kill %d: %d rows committed", attempt+1, n)
		if n < prev {
			t.Fatalf("the table lost rows: %d after %d", n, prev)
		}
		prev = n
		if n >= total {
			break
		}
	}
	if kills == 0 {
		t.Fatal("no run was killed mid-load: the test proves nothing")
	}

	res := pipeline(t, dir, env, "run", "--json", "--state", state, "load.hcl")
	if res.code != 0 {
		t.Fatalf("final run exited %d\n%s", res.code, res.stderr)
	}

	// Every record exactly once, equal to its input.
	var rows, ids, sumN, high, conf100 int64
	var textsOK, metaOK int64
	err = conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT row_id), sum(n)::bigint,
		count(*) FILTER (WHERE classifications->'churn_risk'->>'label' = 'High'),
		sum(round((classifications->'churn_risk'->>'confidence')::numeric * 100))::bigint,
		count(*) FILTER (WHERE text = 'Kunden säger upp avtalet 🙂 №' || n || ' — “quoted” \ end' AND row_id = 'row_' || lpad(n::text, 6, '0')),
		count(*) FILTER (WHERE metadata->>'agent' = 'agent-' || (n % 13) AND metadata->>'queue' = 'retention' AND classifications->'topics' = jsonb_build_array('billing', 't' || (n % 7)))
		FROM `+table).Scan(&rows, &ids, &sumN, &high, &conf100, &textsOK, &metaOK)
	if err != nil {
		t.Fatal(err)
	}
	var wantHigh, wantConf int64
	for i := range total {
		if i%3 == 0 {
			wantHigh++
		}
		wantConf += int64(i % 100)
	}
	if rows != total || ids != total || sumN != int64(total)*(total-1)/2 || high != wantHigh || conf100 != wantConf || textsOK != total || metaOK != total {
		t.Fatalf("table: %d rows, %d distinct row_ids, sum(n) %d, %d High, confidence×100 %d, %d texts and %d metadata equal; want %d rows, sum %d, %d High, %d",
			rows, ids, sumN, high, conf100, textsOK, metaOK, total, int64(total)*(total-1)/2, wantHigh, wantConf)
	}
	// Spot-check whole JSON values.
	for range 200 {
		i := rand.IntN(total)
		var cls, meta string
		if err := conn.QueryRow(ctx, "SELECT classifications::text, metadata::text FROM "+table+" WHERE row_id = $1", fmt.Sprintf("row_%06d", i)).Scan(&cls, &meta); err != nil {
			t.Fatal(err)
		}
		want := pgRecord(i)
		wc, _ := json.Marshal(want["classifications"])
		wm, _ := json.Marshal(want["metadata"])
		if !jsonEqual([]byte(cls), wc) || !jsonEqual([]byte(meta), wm) {
			t.Fatalf("row %d: %s %s, want %s %s", i, cls, meta, wc, wm)
		}
	}
	var loads int64
	conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+"._pipeline_loads").Scan(&loads)
	if !strings.Contains(res.stderr, "warehouse done") {
		t.Logf("stderr: %s", res.stderr)
	}
	t.Logf("%d kills; %d loads committed in all", kills, loads)
}

// TestWarehousePostgresExampleRunsAsItIs runs pipelines/warehouse-postgres.hcl
// against the local server twice: 1,000 rows, typed columns, and the re-run
// (a full refresh, which reads everything again) leaves them at 1,000.
func TestWarehousePostgresExampleRunsAsItIs(t *testing.T) {
	dsn := postgresDSN(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, calls(), filepath.Join(dir, "testdata"))
	example := copyFile(t, filepath.Join(repoRoot(), "pipelines", "warehouse-postgres.hcl"), dir)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	schema := fmt.Sprintf("example_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	// The example's table lands in the connection's current schema.
	env := []string{"DATABASE_URL=" + dsn + " options='-c search_path=" + schema + "'"}
	for i, args := range [][]string{{"run", example}, {"run", "--full-refresh", example}} {
		if res := pipeline(t, dir, env, args...); res.code != 0 {
			t.Fatalf("run %d exited %d\n%s", i+1, res.code, res.stderr)
		}
		var rows, distinct int
		var tsType string
		if err := conn.QueryRow(ctx, "SELECT count(*), count(DISTINCT row_id) FROM "+schema+".classified_calls").Scan(&rows, &distinct); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'classified_calls' AND column_name = 'timestamp'", schema).Scan(&tsType); err != nil {
			t.Fatal(err)
		}
		if rows != 1000 || distinct != 1000 || tsType != "timestamp with time zone" {
			t.Fatalf("after run %d: %d rows, %d distinct row_ids, timestamp is %s; want 1000, 1000, timestamp with time zone", i+1, rows, distinct, tsType)
		}
	}
}
