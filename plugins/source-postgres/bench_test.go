package sourcepostgres

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// discard is an Emitter that drops every batch.
type discard struct{ rows int64 }

func (d *discard) Emit(rec arrow.RecordBatch, _ []byte) error {
	d.rows += rec.NumRows()
	rec.Release()
	return nil
}
func (d *discard) EmitAt(rec arrow.RecordBatch, p []byte, _ sdk.Origin) error { return d.Emit(rec, p) }
func (d *discard) Skipped(int)                                                {}

// BenchmarkRead reads a table of classified calls: BENCH_PG_TABLE (such as
// one tools/benchpgsource made), else 100,000 generated rows.
func BenchmarkRead(b *testing.B) {
	d := newDB(b)
	table := os.Getenv("BENCH_PG_TABLE")
	if table == "" {
		d.exec(`CREATE TABLE {s}.calls (row_id text PRIMARY KEY, updated_at timestamptz NOT NULL, text text, classifications jsonb, metadata jsonb)`)
		d.exec(`INSERT INTO {s}.calls SELECT 'row_' || i, '2025-11-14 08:00:00+00'::timestamptz + i * interval '20 seconds',
			'Min router funkar inte, det står någon DNS error i webbläsaren. ' || i,
			jsonb_build_object('contact_reason', jsonb_build_object('label', 'Technical issue', 'confidence', 0.89), 'churn_risk', jsonb_build_object('label', 'Medium', 'confidence', (i % 100) / 100.0)),
			jsonb_build_object('agent_id', 'agent_' || (i % 5000), 'queue', 'support', 'channel', 'chat', 'language', 'sv')
			FROM generate_series(1, 100000) i`)
		d.exec(`CREATE INDEX ON {s}.calls (updated_at, row_id)`)
		d.exec(`VACUUM ANALYZE {s}.calls`)
		table = d.schema + ".calls"
	}
	mode := os.Getenv("BENCH_PG_JSON")
	if mode == "" {
		mode = "raw"
	}
	s := d.source(map[string]any{"table": table, "key": "row_id", "json": mode})
	b.ResetTimer()
	var rows int64
	for range b.N {
		e := &discard{}
		if err := s.Read(context.Background(), nil, e); err != nil {
			b.Fatal(err)
		}
		rows += e.rows
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

var compactSamples = [][]byte{
	[]byte(`{"contact_reason":{"label":"Technical issue","confidence":0.89},"churn_risk":{"label":"Medium","confidence":0.81},"competitor_mention":{"label":"None","confidence":0.86},"sentiment":{"label":"Neutral","confidence":0.93}}`),
	[]byte(`{"agent_id": "agent_4320", "customer_id": "cust_42326", "channel": "chat", "queue": "support", "product": "fiber_500", "language": "sv", "conversation_id": "conv_1"}`),
}

func BenchmarkCompactJSON(b *testing.B) {
	for i, src := range compactSamples {
		b.Run(fmt.Sprint(i), func(b *testing.B) {
			dst := make([]byte, 0, 1024)
			b.SetBytes(int64(len(src)))
			for range b.N {
				dst = compactJSON(dst[:0], src)
			}
		})
	}
}
