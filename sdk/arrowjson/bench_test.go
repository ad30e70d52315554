package arrowjson

import (
	"testing"

	"github.com/valyala/fastjson"
)

// sampleRecord is the typical record of the design doc.
const sampleRecord = `{"event":"classification.completed","timestamp":"2025-11-14T09:22:47Z","dataset_id":"ds_7f3a9b2c","row_id":"row_90312","text":"I want to cancel, I found a better deal with Telia","classifications":{"contact_reason":{"label":"Cancellation","confidence":0.94},"churn_risk":{"label":"High","confidence":0.91},"competitor_mention":{"label":"Telia","confidence":0.98}},"metadata":{"agent_id":"agent_4821","customer_id":"cust_90312","channel":"phone","queue":"retention","product":"fiber_100"}}`

const benchBatch = 4096

func BenchmarkDecode(b *testing.B) {
	line := []byte(sampleRecord)
	d := NewDecoder(Options{})
	defer d.Release()
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.Append(line); err != nil {
			b.Fatal(err)
		}
		if d.Len() == benchBatch {
			d.Flush().Release()
		}
	}
	if rec := d.Flush(); rec != nil {
		rec.Release()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkEncode(b *testing.B) {
	line := []byte(sampleRecord)
	d := NewDecoder(Options{})
	defer d.Release()
	for i := 0; i < benchBatch; i++ {
		if err := d.Append(line); err != nil {
			b.Fatal(err)
		}
	}
	rec := d.Flush()
	defer rec.Release()
	e := NewEncoder()
	var buf []byte
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf = e.AppendRow(buf[:0], rec, i%benchBatch)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkScan measures the scanner alone: checking and tokenizing the
// sample record.
func BenchmarkScan(b *testing.B) {
	var s scanner
	line := []byte(sampleRecord)
	b.SetBytes(int64(len(line)))
	for i := 0; i < b.N; i++ {
		if err := s.scan(line); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFastjsonParseOnly is the yardstick the decoder was measured
// against: valyala/fastjson's reused Parser parsing the sample record,
// without reading any value out of it (which costs more again).
func BenchmarkFastjsonParseOnly(b *testing.B) {
	var p fastjson.Parser
	line := []byte(sampleRecord)
	b.SetBytes(int64(len(line)))
	for i := 0; i < b.N; i++ {
		if _, err := p.ParseBytes(line); err != nil {
			b.Fatal(err)
		}
	}
}
