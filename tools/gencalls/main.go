// Command gencalls writes realistic, deterministic sample records: customer
// calls as a classification service emits them, in the shape of the design
// document's sample record, one JSON object per line.
//
//	go run ./tools/gencalls -n 1000 -seed 1 -o testdata/calls.jsonl
//
// The same flags always give the same bytes. Without -o, or with -o -, the
// records go to stdout.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gencalls:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("gencalls", flag.ContinueOnError)
	n := fs.Int("n", 1000, "number of records")
	seed := fs.Uint64("seed", 1, "random seed; the same seed gives the same records")
	out := fs.String("o", "-", "output file; - for stdout")
	start := fs.String("start", DefaultStart.Format(time.RFC3339), "timestamp of the first record (RFC 3339)")
	firstRow := fs.Int("first-row", 1, "number of the first row_id (row_<n>); use it to make a follow-up file with new ids")
	dataset := fs.String("dataset", DefaultDatasetID, "dataset_id of every record")
	small := fs.Bool("small", false, "the small shape (~150 bytes: row_id, churn_risk, contact_reason, metadata.queue)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *n < 0 {
		return fmt.Errorf("-n must not be negative")
	}
	t0, err := time.Parse(time.RFC3339, *start)
	if err != nil {
		return fmt.Errorf("-start: %w", err)
	}
	cfg := Config{N: *n, Seed: *seed, Start: t0, FirstRow: *firstRow, DatasetID: *dataset, Small: *small}

	if *out == "" || *out == "-" {
		return Generate(stdout, cfg)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if err := Generate(f, cfg); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// DefaultStart is the timestamp of the first record unless Config.Start says
// otherwise.
var DefaultStart = time.Date(2025, 11, 14, 8, 0, 0, 0, time.UTC)

// DefaultDatasetID is the dataset_id of every record unless Config.DatasetID
// says otherwise.
const DefaultDatasetID = "ds_7f3a9b2c"

// Config says what Generate writes.
type Config struct {
	N         int       // number of records
	Seed      uint64    // the same seed (and Config) gives the same bytes
	Start     time.Time // timestamp of the first record; zero: DefaultStart
	FirstRow  int       // n of the first row_id "row_<n>"; zero: 1
	DatasetID string    // zero: DefaultDatasetID
	Small     bool      // the small shape (~150 bytes) instead of the whole record
}

// Generate writes cfg.N records to w, one JSON object per line.
func Generate(w io.Writer, cfg Config) error {
	if cfg.Start.IsZero() {
		cfg.Start = DefaultStart
	}
	if cfg.FirstRow == 0 {
		cfg.FirstRow = 1
	}
	if cfg.DatasetID == "" {
		cfg.DatasetID = DefaultDatasetID
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	g := newGenerator(cfg)
	line := make([]byte, 0, 1024)
	for range cfg.N {
		line = g.next(line[:0])
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}
