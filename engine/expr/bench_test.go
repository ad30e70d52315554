package expr

import (
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

const benchRows = 8192

const churn = "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.8"

// benchBatch is benchRows records shaped like the DESIGN.md one, a third of
// them high churn risk, some with null parts.
func benchBatch(b *testing.B) arrow.RecordBatch {
	b.Helper()
	labels := []string{"High", "Low", "Medium"}
	queues := []string{"retention", "support", "billing"}
	rows := make([]string, benchRows)
	for i := range rows {
		churnRisk := fmt.Sprintf(`{"label":%q,"confidence":%g}`, labels[i%3], float64(i%100)/100)
		if i%17 == 0 {
			churnRisk = "null"
		}
		rows[i] = fmt.Sprintf(`{"event":"classification.completed","timestamp":"2025-11-14T09:22:47Z","dataset_id":"ds_7f3a9b2c",`+
			`"row_id":"row_%d","text":"I want to cancel, I found a better deal with Telia",`+
			`"classifications":{"contact_reason":{"label":"Cancellation","confidence":0.94},"churn_risk":%s,`+
			`"competitor_mention":{"label":"Telia","confidence":0.98}},`+
			`"metadata":{"agent_id":"agent_4821","customer_id":"cust_%d","channel":"phone","queue":%q,"product":"fiber_100"},`+
			`"n":%d,"x":%g,"_pipeline_id":"id%d"}`, i, churnRisk, i, queues[i%3], i, float64(i)/3, i)
	}
	return batch(b, sampleSchema(), rows)
}

func benchFilter(b *testing.B, src string, force bool) {
	rec := benchBatch(b)
	p, err := compilePredicate("where", src, rec.Schema(), force)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var matched int64
	for b.Loop() {
		out, err := p.Filter(rec)
		if err != nil {
			b.Fatal(err)
		}
		matched = out.NumRows()
		out.Release()
	}
	if matched == 0 || matched == benchRows {
		b.Fatalf("%d of %d rows matched: the benchmark would not measure filtering", matched, benchRows)
	}
	b.ReportMetric(float64(b.N)*benchRows/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkFilterVectorised is the churn predicate, which runs column at a
// time.
func BenchmarkFilterVectorised(b *testing.B) {
	benchFilter(b, churn, false)
}

// BenchmarkFilterFallback runs expr row by row: an expression that needs
// it, and the churn predicate forced through it, for a like-for-like
// comparison with BenchmarkFilterVectorised.
func BenchmarkFilterFallback(b *testing.B) {
	b.Run("arithmetic", func(b *testing.B) {
		benchFilter(b, "classifications.churn_risk.confidence * 100 > 80 && len(classifications.churn_risk.label) == 4", false)
	})
	b.Run("churn-forced", func(b *testing.B) {
		benchFilter(b, churn, true)
	})
}

func BenchmarkRender(b *testing.B) {
	rec := benchBatch(b)
	for _, tc := range []struct{ name, src string }{
		{"columns", "Churn risk {{ classifications.churn_risk.confidence }} for {{ metadata.customer_id }}"},
		{"expr", "Churn risk {{ classifications.churn_risk.confidence * 100 }}% for {{ upper(metadata.customer_id) }}"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tpl, err := CompileTemplate(tc.src, rec.Schema())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				out, err := tpl.Render(rec)
				if err != nil {
					b.Fatal(err)
				}
				out.Release()
			}
			b.ReportMetric(float64(b.N)*benchRows/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkEval is the predicate alone, without building the filtered
// batch.
func BenchmarkEval(b *testing.B) {
	for _, tc := range []struct {
		name  string
		src   string
		force bool
	}{
		{"vectorised", churn, false},
		{"fallback", churn, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			rec := benchBatch(b)
			p, err := compilePredicate("where", tc.src, rec.Schema(), tc.force)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Eval(rec); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*benchRows/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
