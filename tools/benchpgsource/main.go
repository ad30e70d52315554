// Command benchpgsource measures `source "postgres"` end to end: it loads N
// classified call records (tools/gencalls) into a table, then runs
// `pipeline run` of source "postgres" → sink "file" (JSONL), checks that
// every row was written, and prints rows/s and the peak RSS of the engine
// and its plugin processes (wait4's rusage, as /usr/bin/time reports it).
//
// -shape jsonb (the default) keeps the record's nested parts as jsonb:
//
//	row_id text PRIMARY KEY, updated_at timestamptz NOT NULL, text text,
//	classifications jsonb, metadata jsonb
//
// -shape flat has one column per leaf instead (contact_reason text,
// contact_reason_confidence double precision, ..., queue text, ...), and
// -shape json the nested parts as json (stored as text). Every table has an
// index on (updated_at, row_id), the order the source reads in.
//
//	go build -o bin/pipeline ./cmd/pipeline
//	go run ./tools/benchpgsource -n 1000000
//	go run ./tools/benchpgsource -n 1000000 -shape flat
//	go run ./tools/benchpgsource -n 1000000 -json struct
//
// The table is made once per shape and -n in schema benchpgsource (kept, so
// runs can be repeated without loading again; -drop removes it).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	n := flag.Int("n", 1_000_000, "rows")
	input := flag.String("input", "", "a gencalls JSONL file to load (default: generate with go run ./tools/gencalls -n N -seed 7)")
	dsn := flag.String("dsn", "host=127.0.0.1 port=5432 dbname=test user=postgres sslmode=disable", "PostgreSQL connection string")
	binPath := flag.String("bin", "bin/pipeline", "the pipeline binary")
	jsonMode := flag.String("json", "raw", `the source's json attribute: "raw" or "struct"`)
	batchRows := flag.Int("batch-rows", 8192, "the source's batch_rows")
	runs := flag.Int("runs", 1, "how many times to run the pipeline")
	shape := flag.String("shape", "jsonb", `"jsonb", "json" or "flat"`)
	drop := flag.Bool("drop", false, "drop the benchmark table afterwards")
	outDir := flag.String("dir", "", "where the pipeline's state and output go (default: a new temporary directory; /dev/shm keeps disk stalls out of the figure)")
	flag.Parse()

	bin, err := filepath.Abs(*binPath)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, *dsn)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	const schema = "benchpgsource"
	if _, ok := shapes[*shape]; !ok {
		log.Fatalf("-shape %q: want jsonb, json or flat", *shape)
	}
	name := fmt.Sprintf("calls_%s_%d", *shape, *n)
	table := schema + "." + name
	if err := ensureTable(ctx, conn, schema, name, *shape, *n, *input); err != nil {
		log.Fatal(err)
	}
	if *drop {
		defer conn.Exec(ctx, "DROP TABLE "+table)
	}
	var size string
	conn.QueryRow(ctx, "SELECT pg_size_pretty(pg_total_relation_size($1::regclass))", table).Scan(&size)

	dir, err := os.MkdirTemp(*outDir, "benchpgsource-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	hcl := fmt.Sprintf(`
pipeline { name = "benchpgsource" }

source "postgres" "calls" {
  dsn        = %q
  table      = %q
  cursor     = "updated_at"
  key        = "row_id"
  json       = %q
  batch_rows = %d
}

sink "file" "out" {
  inputs = [source.calls]
  path   = "out.jsonl"
}
`, *dsn, table, *jsonMode, *batchRows)
	if err := os.WriteFile(filepath.Join(dir, "bench.hcl"), []byte(hcl), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("table     %s: %d rows (%s, shape %s), json = %q, batch_rows = %d\n", table, *n, size, *shape, *jsonMode, *batchRows)
	for r := 0; r < *runs; r++ {
		os.Remove(filepath.Join(dir, "out.jsonl"))
		os.Remove(filepath.Join(dir, "state.db"))
		// --full-refresh: every run reads the whole table.
		cmd := exec.Command(bin, "run", "--full-refresh", "--state", filepath.Join(dir, "state.db"), "bench.hcl")
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			log.Fatalf("pipeline run: %v\n%s", err, stderr.String())
		}
		elapsed := time.Since(start)
		// wait4's rusage covers the engine and the plugin processes it
		// waited for: ru_maxrss is the largest of them.
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		lines, bytes, err := countLines(filepath.Join(dir, "out.jsonl"))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("run %d     %v  %.0f rows/s  peak RSS %.1f MiB  cpu user %v sys %v  (%d lines, %.1f MiB of JSONL)\n", r+1,
			elapsed.Round(time.Millisecond), float64(lines)/elapsed.Seconds(), float64(ru.Maxrss)/1024,
			time.Duration(ru.Utime.Nano()).Round(time.Millisecond), time.Duration(ru.Stime.Nano()).Round(time.Millisecond),
			lines, float64(bytes)/(1<<20))
		if lines != int64(*n) {
			log.Fatalf("the file has %d lines, want %d", lines, *n)
		}
	}
}

// ensureTable creates and loads the table unless it already holds n rows.
func ensureTable(ctx context.Context, conn *pgx.Conn, schema, name, shape string, n int, input string) error {
	table := schema + "." + name
	var have int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&have); err == nil && have == int64(n) {
		return nil
	}
	fmt.Printf("loading %d rows into %s\n", n, table)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
		return err
	}
	cols := shapes[shape]
	var ddl []string
	for _, c := range cols {
		ddl = append(ddl, c[0]+" "+c[1])
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (\n"+strings.Join(ddl, ",\n")+")"); err != nil {
		return err
	}
	var names []string
	for _, c := range cols {
		names = append(names, c[0])
	}
	var r io.Reader
	if input != "" {
		f, err := os.Open(input)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	} else {
		cmd := exec.Command("go", "run", "./tools/gencalls", "-n", fmt.Sprint(n), "-seed", "7")
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		defer cmd.Wait()
		r = out
	}
	src := &records{sc: bufio.NewScanner(r), limit: n, flat: shape == "flat"}
	src.sc.Buffer(make([]byte, 1<<20), 64<<20)
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{schema, name}, names, src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if copied != int64(n) {
		return fmt.Errorf("loaded %d rows, want %d", copied, n)
	}
	for _, q := range []string{
		"CREATE INDEX ON " + table + " (updated_at, row_id)",
		"VACUUM ANALYZE " + table,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// shapes are the tables' columns.
var shapes = map[string][][2]string{
	"jsonb": {{"row_id", "text PRIMARY KEY"}, {"updated_at", "timestamptz NOT NULL"}, {"text", "text"}, {"classifications", "jsonb"}, {"metadata", "jsonb"}},
	"json":  {{"row_id", "text PRIMARY KEY"}, {"updated_at", "timestamptz NOT NULL"}, {"text", "text"}, {"classifications", "json"}, {"metadata", "json"}},
	"flat": {{"row_id", "text PRIMARY KEY"}, {"updated_at", "timestamptz NOT NULL"}, {"text", "text"},
		{"contact_reason", "text"}, {"contact_reason_confidence", "double precision"},
		{"churn_risk", "text"}, {"churn_risk_confidence", "double precision"},
		{"competitor_mention", "text"}, {"competitor_mention_confidence", "double precision"},
		{"sentiment", "text"}, {"sentiment_confidence", "double precision"},
		{"agent_id", "text"}, {"customer_id", "text"}, {"channel", "text"}, {"queue", "text"},
		{"product", "text"}, {"language", "text"}, {"conversation_id", "text"}},
}

type label struct {
	Label      string  `json:"label"`
	Confidence float64 `json:"confidence"`
}

// records reads gencalls lines as rows.
type records struct {
	sc    *bufio.Scanner
	limit int
	flat  bool
	n     int
	row   []any
	err   error
}

func (r *records) Next() bool {
	if r.n >= r.limit || !r.sc.Scan() {
		r.err = r.sc.Err()
		return false
	}
	var v struct {
		RowID           string          `json:"row_id"`
		Timestamp       time.Time       `json:"timestamp"`
		Text            string          `json:"text"`
		Classifications json.RawMessage `json:"classifications"`
		Metadata        json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(r.sc.Bytes(), &v); err != nil {
		r.err = err
		return false
	}
	r.n++
	if !r.flat {
		r.row = []any{v.RowID, v.Timestamp, v.Text, string(v.Classifications), string(v.Metadata)}
		return true
	}
	var cls struct {
		ContactReason     label `json:"contact_reason"`
		ChurnRisk         label `json:"churn_risk"`
		CompetitorMention label `json:"competitor_mention"`
		Sentiment         label `json:"sentiment"`
	}
	var md struct {
		AgentID        string `json:"agent_id"`
		CustomerID     string `json:"customer_id"`
		Channel        string `json:"channel"`
		Queue          string `json:"queue"`
		Product        string `json:"product"`
		Language       string `json:"language"`
		ConversationID string `json:"conversation_id"`
	}
	if err := json.Unmarshal(v.Classifications, &cls); err != nil {
		r.err = err
		return false
	}
	if err := json.Unmarshal(v.Metadata, &md); err != nil {
		r.err = err
		return false
	}
	r.row = []any{v.RowID, v.Timestamp, v.Text,
		cls.ContactReason.Label, cls.ContactReason.Confidence, cls.ChurnRisk.Label, cls.ChurnRisk.Confidence,
		cls.CompetitorMention.Label, cls.CompetitorMention.Confidence, cls.Sentiment.Label, cls.Sentiment.Confidence,
		md.AgentID, md.CustomerID, md.Channel, md.Queue, md.Product, md.Language, md.ConversationID}
	return true
}

func (r *records) Values() ([]any, error) { return r.row, nil }
func (r *records) Err() error             { return r.err }

func countLines(path string) (int64, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var n, size int64
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		size += int64(k)
		if err == io.EOF {
			return n, size, nil
		}
		if err != nil {
			return n, size, err
		}
	}
}
