package transformhttp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// BenchmarkHTTPTransform measures the plugin's own cost in process: input
// batches of 100 and 1,000 records, batch_size 100, against a loopback
// endpoint that answers at once with a fixed array of 100 small objects.
func BenchmarkHTTPTransform(b *testing.B) {
	const size = 100
	answer := "[" + strings.TrimSuffix(strings.Repeat(`{"intent":"refund","score":0.93},`, size), ",") + "]"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer srv.Close()
	for _, rows := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", rows), func(b *testing.B) {
			records := make([]string, rows)
			for i := range records {
				records[i] = fmt.Sprintf(`{"row_id":"call-%d","text":"I was charged twice for my subscription, please refund order %d","metadata":{"customer_id":"c%d","channel":"email"},"duration_s":%d}`, i, i, i%97, i%600)
			}
			recs, _, err := sdktest.Batches(records, rows)
			if err != nil {
				b.Fatal(err)
			}
			defer recs[0].Release()
			in := sdk.NewBatch(recs[0])
			tr := &Transform{}
			cfg := fmt.Sprintf(`{"url": %q, "fields": ["text", "metadata.customer_id"], "into": "classifications.intent", "batch_size": %d, "timeout": "10s", "concurrency": 4, "allow_private_networks": true}`, srv.URL, size)
			if err := tr.Configure(context.Background(), sdk.Config{Name: "bench", JSON: []byte(cfg)}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out, err := tr.Transform(context.Background(), in)
				if err != nil {
					b.Fatal(err)
				}
				out.Record.Release()
			}
			b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
