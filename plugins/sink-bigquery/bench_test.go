package sinkbigquery

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// benchInput is the JSON Lines file the load benchmark encodes:
// BENCH_JSONL, else make bench's 1M-record file, else the demo data.
func benchInput() string {
	if p := os.Getenv("BENCH_JSONL"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if p := filepath.Join(root, ".cache", "bench", "calls-1000000.jsonl"); fileExists(p) {
		return p
	}
	return filepath.Join(root, "testdata", "calls.jsonl")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// BenchmarkLoadParquet builds the Parquet files the sink would load for the
// input, with the default batch limits, by the sink's own code (no
// BigQuery): bytes/record is the figure docs/benchmarks.md reports.
func BenchmarkLoadParquet(b *testing.B) {
	path := benchInput()
	for range b.N {
		// No BigQuery is reached: the endpoint only spares Configure a
		// search for credentials.
		s := &Sink{}
		if err := s.Configure(context.Background(), sdk.Config{Name: "bench", JSON: []byte(`{"project":"p","dataset":"d","table":"calls","endpoint":"http://127.0.0.1:1"}`)}); err != nil {
			b.Fatal(err)
		}
		var records, files int64
		out := &countingWriter{}
		load := func() {
			fields, err := s.heldFields()
			if err != nil {
				b.Fatal(err)
			}
			if err := s.writeParquet(out, fields); err != nil {
				b.Fatal(err)
			}
			records += s.heldRows
			files++
			s.release()
		}
		start := time.Now()
		err := sdktest.ReadJSONL(path, 8192, func(batch sdk.Batch) error {
			if err := s.Write(context.Background(), batch); err != nil {
				return err
			}
			if s.FlushDue(time.Now()) {
				load()
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if len(s.held) > 0 {
			load()
		}
		b.ReportMetric(float64(out.n)/float64(records), "bytes/record")
		b.ReportMetric(float64(records)/time.Since(start).Seconds(), "records/s")
		b.ReportMetric(float64(files), "files")
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
			b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
		}
	}
}
