// Command benchpostgres measures `sink "postgres"` end to end: it generates
// N records (or reads a JSONL file), runs the pipeline binary into a fresh
// table, checks the row count and prints rows/s and the peak RSS of the
// engine and its plugin processes.
//
//	go build -o bin/pipeline ./cmd/pipeline
//	go run ./tools/benchpostgres -n 1000000 -dsn "host=127.0.0.1 dbname=test user=postgres"
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	n := flag.Int("n", 1_000_000, "records to generate")
	input := flag.String("input", "", "a JSONL file to load instead of generated records")
	dsn := flag.String("dsn", "host=127.0.0.1 port=5432 dbname=test user=postgres sslmode=disable", "PostgreSQL connection string")
	binPath := flag.String("bin", "bin/pipeline", "the pipeline binary")
	batchRows := flag.Int("batch-rows", 100000, "the sink's batch { rows }")
	mode := flag.String("mode", "merge", `"merge" or "append"`)
	flatten := flag.Bool("flatten", false, "flatten = true")
	keep := flag.Bool("keep", false, "keep the table (schema benchpg_<time>) afterwards")
	flag.Parse()

	bin, err := filepath.Abs(*binPath)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "benchpostgres-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := *input
	records := int64(*n)
	if path == "" {
		path = filepath.Join(dir, "records.jsonl")
		if err := generate(path, *n); err != nil {
			log.Fatal(err)
		}
	} else if records, err = countLines(path); err != nil {
		log.Fatal(err)
	}
	st, _ := os.Stat(path)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, *dsn)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	schema := fmt.Sprintf("benchpg_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		log.Fatal(err)
	}
	if !*keep {
		defer conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	}
	hcl := fmt.Sprintf(`
pipeline { name = "benchpostgres" }

source "file" "in" {
  path = %q
}

sink "postgres" "dw" {
  inputs  = [source.in]
  dsn     = %q
  schema  = %q
  table   = "records"
  mode    = %q
  flatten = %v
  batch { rows = %d }
}
`, path, *dsn, schema, *mode, *flatten, *batchRows)
	if err := os.WriteFile(filepath.Join(dir, "bench.hcl"), []byte(hcl), 0o644); err != nil {
		log.Fatal(err)
	}

	cmd := exec.Command(bin, "run", "--state", filepath.Join(dir, "state.db"), "bench.hcl")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		log.Fatalf("pipeline run: %v", err)
	}
	elapsed := time.Since(start)
	// wait4's rusage covers the engine and the plugin processes it waited
	// for: ru_maxrss is the largest of them.
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)

	var rows int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+schema+".records").Scan(&rows); err != nil {
		log.Fatal(err)
	}
	var size string
	conn.QueryRow(ctx, "SELECT pg_size_pretty(pg_total_relation_size($1::regclass))", schema+".records").Scan(&size)
	fmt.Printf("records   %d (%.1f MiB of JSONL)\n", records, float64(st.Size())/(1<<20))
	fmt.Printf("rows      %d in the table (%s)\n", rows, size)
	fmt.Printf("time      %v\n", elapsed.Round(time.Millisecond))
	fmt.Printf("rate      %.0f rows/s\n", float64(rows)/elapsed.Seconds())
	fmt.Printf("peak RSS  %.1f MiB (largest of the engine and its plugins)\n", float64(ru.Maxrss)/1024)
	fmt.Printf("cpu       user %v, system %v\n", time.Duration(ru.Utime.Nano()).Round(time.Millisecond), time.Duration(ru.Stime.Nano()).Round(time.Millisecond))
	if rows != records {
		log.Fatalf("the table has %d rows, want %d", rows, records)
	}
}

func generate(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	labels := []string{"High", "Medium", "Low"}
	enc := json.NewEncoder(w)
	for i := range n {
		enc.Encode(map[string]any{
			"row_id": fmt.Sprintf("row_%08d", i),
			"n":      i,
			"text":   fmt.Sprintf("Kunden säger upp avtalet 🙂 call %d: the invoice was wrong and nobody called back", i),
			"classifications": map[string]any{
				"churn_risk": map[string]any{"label": labels[i%3], "confidence": float64(i%100) / 100},
				"topics":     []string{"billing", fmt.Sprintf("t%d", i%7)},
			},
			"metadata": map[string]any{"queue": "retention", "agent": fmt.Sprintf("agent-%d", i%13)},
		})
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var n int64
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			n++
		}
	}
	return n, sc.Err()
}
