package export

import (
	"context"
	"fmt"
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
)

const benchRows = 4096

func benchBatch(b *testing.B) sdk.Batch {
	ids := make([]string, benchRows)
	lines := make([]string, benchRows)
	for i := range lines {
		ids[i] = fmt.Sprintf("row_%06d", i)
		lines[i] = fmt.Sprintf(`{"event":"classification.completed","timestamp":"2025-11-14T09:22:47Z","row_id":"row_%d","text":"I want to cancel, I found a better deal with Telia","classifications":{"contact_reason":{"label":"Cancellation","confidence":0.94},"churn_risk":{"label":"High","confidence":0.91}},"metadata":{"agent_id":"agent_%d","customer_id":"cust_%d","channel":"phone"}}`, i, i%50, i)
	}
	return makeBatch(b, ids, nil, lines...)
}

func benchExport(b *testing.B, opts Options) {
	batch := benchBatch(b)
	ctx := context.Background()
	opts.RollRows = 1 << 20
	e, err := New(discardStore{}, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.Write(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*benchRows)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkExportParquet(b *testing.B) { benchExport(b, Options{Format: FormatParquet}) }
func BenchmarkExportCSV(b *testing.B)     { benchExport(b, Options{Format: FormatCSV}) }
func BenchmarkExportJSONL(b *testing.B)   { benchExport(b, Options{Format: FormatJSONL}) }
func BenchmarkExportJSONLGzip(b *testing.B) {
	benchExport(b, Options{Format: FormatJSONL, Compression: CompressionGzip})
}
