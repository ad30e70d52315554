package sinksnowflake

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// BenchmarkLoadParquet builds the Parquet files the sink would PUT for the
// input, with the default batch limits, by the sink's own code (no
// warehouse): bytes/record is the figure docs/benchmarks.md reports.
func BenchmarkLoadParquet(b *testing.B) {
	path := sdktest.BenchJSONL()
	for range b.N {
		s := &Sink{}
		if err := s.Configure(context.Background(), sdk.Config{Name: "bench", JSON: []byte(`{"dsn":"u:p@acct/db/schema","table":"calls"}`)}); err != nil {
			b.Fatal(err)
		}
		var records, bytes, files int64
		load := func() {
			cols, err := s.heldColumns()
			if err != nil {
				b.Fatal(err)
			}
			_, data, err := s.loadFile(cols)
			if err != nil {
				b.Fatal(err)
			}
			records += s.heldRows
			bytes += int64(len(data))
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
		b.ReportMetric(float64(bytes)/float64(records), "bytes/record")
		b.ReportMetric(float64(records)/time.Since(start).Seconds(), "records/s")
		b.ReportMetric(float64(files), "files")
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
			b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
		}
	}
}
