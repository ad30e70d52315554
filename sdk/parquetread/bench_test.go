package parquetread

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// callsFile is a Parquet file shaped like tools/gencalls' records (as sink
// "file" writes them: zstd, the Arrow schema stored, row groups of 128Ki
// rows): unique ids and timestamps, texts and labels from small
// vocabularies, confidences. Built once.
var callsFile = sync.OnceValue(func() []byte {
	const rows = 300_000
	label := arrow.StructOf(
		arrow.Field{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "confidence", Type: arrow.PrimitiveTypes.Float64, Nullable: true})
	meta := []string{"agent_id", "customer_id", "channel", "queue", "product", "language", "conversation_id"}
	var metaFields []arrow.Field
	for _, m := range meta {
		metaFields = append(metaFields, arrow.Field{Name: m, Type: arrow.BinaryTypes.String, Nullable: true})
	}
	models := []string{"contact_reason", "churn_risk", "competitor_mention", "sentiment"}
	var clsFields []arrow.Field
	for _, m := range models {
		clsFields = append(clsFields, arrow.Field{Name: m, Type: label, Nullable: true})
	}
	s := arrow.NewSchema([]arrow.Field{
		{Name: "event", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "timestamp", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "dataset_id", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "row_id", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "text", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "classifications", Type: arrow.StructOf(clsFields...), Nullable: true},
		{Name: "metadata", Type: arrow.StructOf(metaFields...), Nullable: true},
	}, nil)
	rng := rand.New(rand.NewSource(7))
	var texts []string
	for i := 0; i < 300; i++ {
		texts = append(texts, fmt.Sprintf("Min router funkar inte, det står någon DNS error i webbläsaren, fall %d.", i))
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, s)
	defer b.Release()
	str := func(i int) *array.StringBuilder { return b.Field(i).(*array.StringBuilder) }
	for i := 0; i < rows; i++ {
		str(0).Append("classification.completed")
		str(1).Append(fmt.Sprintf("2025-11-14T%02d:%02d:%02dZ", i/3600%24, i/60%60, i%60))
		str(2).Append("ds_7f3a9b2c")
		str(3).Append(fmt.Sprintf("row_%d", i+1))
		str(4).Append(texts[rng.Intn(len(texts))])
		cls := b.Field(5).(*array.StructBuilder)
		cls.Append(true)
		for m := range models {
			lb := cls.FieldBuilder(m).(*array.StructBuilder)
			lb.Append(true)
			lb.FieldBuilder(0).(*array.StringBuilder).Append([]string{"Low", "Medium", "High", "None", "Billing"}[rng.Intn(5)])
			lb.FieldBuilder(1).(*array.Float64Builder).Append(float64(rng.Intn(100)) / 100)
		}
		md := b.Field(6).(*array.StructBuilder)
		md.Append(true)
		md.FieldBuilder(0).(*array.StringBuilder).Append(fmt.Sprintf("agent_%d", rng.Intn(5000)))
		md.FieldBuilder(1).(*array.StringBuilder).Append(fmt.Sprintf("cust_%d", i/7))
		md.FieldBuilder(2).(*array.StringBuilder).Append([]string{"chat", "phone", "email"}[rng.Intn(3)])
		md.FieldBuilder(3).(*array.StringBuilder).Append([]string{"support", "sales", "billing"}[rng.Intn(3)])
		md.FieldBuilder(4).(*array.StringBuilder).Append(fmt.Sprintf("product_%d", rng.Intn(10)))
		md.FieldBuilder(5).(*array.StringBuilder).Append([]string{"sv", "en"}[rng.Intn(2)])
		md.FieldBuilder(6).(*array.StringBuilder).Append(fmt.Sprintf("conv_%d", i/3))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w, err := pqarrow.NewFileWriter(s, &buf, parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd), parquet.WithMaxRowGroupLength(128*1024)),
		pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		panic(err)
	}
	if err := w.Write(rec); err != nil {
		panic(err)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
})

// BenchmarkRead reads a calls-shaped file in batches of 8192 rows, as
// source "file" does.
func BenchmarkRead(b *testing.B) {
	data := callsFile()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	// CPU time as well as wall time: the machine is often shared.
	cpu0 := cpuTime()
	rows := 0
	for i := 0; i < b.N; i++ {
		f, err := Open(bytes.NewReader(data), int64(len(data)), Options{})
		if err != nil {
			b.Fatal(err)
		}
		r, err := f.Read(context.Background(), 0)
		if err != nil {
			b.Fatal(err)
		}
		for {
			batch, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			rows += int(batch.Record.NumRows())
			batch.Record.Release()
		}
		r.Close()
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(rows)/cpu.Seconds(), "rows/cpu-s")
	}
}
