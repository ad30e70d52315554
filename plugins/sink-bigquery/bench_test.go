package sinkbigquery

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// BenchmarkLoadParquet builds the Parquet files the sink would load for the
// input, with the default batch limits, by the sink's own code (no
// BigQuery): bytes/record is the figure docs/benchmarks.md reports.
func BenchmarkLoadParquet(b *testing.B) {
	path := sdktest.BenchJSONL()
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
