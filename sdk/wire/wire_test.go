package wire

import (
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func intBatch(t *testing.T, mem memory.Allocator, names []string, rows int) arrow.RecordBatch {
	t.Helper()
	fields := make([]arrow.Field, len(names))
	for i, n := range names {
		fields[i] = arrow.Field{Name: n, Type: arrow.PrimitiveTypes.Int64, Nullable: true}
	}
	b := array.NewRecordBuilder(mem, arrow.NewSchema(fields, nil))
	defer b.Release()
	for r := 0; r < rows; r++ {
		for i := range names {
			b.Field(i).(*array.Int64Builder).Append(int64(r*10 + i))
		}
	}
	return b.NewRecordBatch()
}

func TestRoundTripWithSchemaChange(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)

	batches := []arrow.RecordBatch{
		intBatch(t, mem, []string{"a"}, 3),
		intBatch(t, mem, []string{"a"}, 2),
		intBatch(t, mem, []string{"a", "b"}, 4), // schema grows
		intBatch(t, mem, []string{"a", "b"}, 1),
	}
	enc := NewEncoder(mem)
	dec := NewDecoder(mem)
	defer dec.Release()
	for i, want := range batches {
		data, err := enc.Encode(want)
		if err != nil {
			t.Fatalf("batch %d: encode: %v", i, err)
		}
		got, err := dec.Decode(append([]byte(nil), data...))
		if err != nil {
			t.Fatalf("batch %d: decode: %v", i, err)
		}
		if !array.RecordEqual(want, got) {
			t.Fatalf("batch %d: got %v, want %v", i, got, want)
		}
		got.Release()
		want.Release()
	}
	if enc.w != nil {
		enc.w.Close()
	}
}

func TestSplitKeepsAllRowsInOrder(t *testing.T) {
	rec := intBatch(t, memory.DefaultAllocator, []string{"a"}, 10)
	defer rec.Release()
	enc := NewEncoder(nil)
	enc.SplitAt = 1 // every piece with more than one row is "too big"
	dec := NewDecoder(nil)
	var next int64
	var pieces, lasts int
	err := enc.Split(rec, func(data []byte, rows int64, last bool) error {
		got, err := dec.Decode(append([]byte(nil), data...))
		if err != nil {
			return err
		}
		defer got.Release()
		col := got.Column(0).(*array.Int64)
		for i := 0; i < col.Len(); i++ {
			if col.Value(i) != next*10 {
				t.Fatalf("row %d: got %d", next, col.Value(i))
			}
			next++
		}
		pieces++
		if last {
			lasts++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != 10 || lasts != 1 || pieces != 10 {
		t.Fatalf("rows=%d pieces=%d lasts=%d", next, pieces, lasts)
	}
}

func TestSchemaRoundTrip(t *testing.T) {
	s := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	data, err := EncodeSchema(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSchema(data)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(s) {
		t.Fatalf("got %v", got)
	}
}

func TestDecodeGarbageFails(t *testing.T) {
	if _, err := NewDecoder(nil).Decode([]byte("not arrow at all")); err == nil {
		t.Fatal("want error")
	}
}

// A decoded batch's buffers are the message's bytes, not a copy of them;
// a body that is not 8-byte aligned in memory is copied, and decodes the
// same (under -race, checkptr would catch a misaligned view).
func TestDecodeSharesTheMessageBytes(t *testing.T) {
	want := intBatch(t, memory.DefaultAllocator, []string{"a", "b"}, 100)
	defer want.Release()
	enc := NewEncoder(nil)
	data, err := enc.Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	within := func(buf, in []byte) bool {
		p := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(in)))
		return p >= lo && p < lo+uintptr(len(in))
	}
	for _, shift := range []int{0, 8, 3} {
		msg := make([]byte, shift+len(data))[shift:]
		copy(msg, data)
		got, err := NewDecoder(nil).Decode(msg)
		if err != nil {
			t.Fatalf("shift %d: %v", shift, err)
		}
		if !array.RecordEqual(want, got) {
			t.Fatalf("shift %d: got %v", shift, got)
		}
		values := got.Column(1).Data().Buffers()[1].Bytes()
		if aliased := within(values, msg); aliased != (shift%8 == 0) {
			t.Fatalf("shift %d: values within the message bytes: %v", shift, aliased)
		}
		got.Release()
	}
}

// A truncated message fails with an error, never a panic.
func TestDecodeTruncatedFails(t *testing.T) {
	rec := intBatch(t, memory.DefaultAllocator, []string{"a"}, 10)
	defer rec.Release()
	data, err := NewEncoder(nil).Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(data); n++ {
		if got, err := NewDecoder(nil).Decode(append([]byte(nil), data[:n]...)); err == nil {
			got.Release()
			t.Fatalf("%d of %d bytes: decoded", n, len(data))
		}
	}

}

// BenchmarkDecode decodes a message of 8,192 rows of 20 int64 columns and
// a string column (about 1.6 MB).
func BenchmarkDecode(b *testing.B) {
	fields := []arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}
	for i := range 20 {
		fields = append(fields, arrow.Field{Name: string(rune('a' + i)), Type: arrow.PrimitiveTypes.Int64})
	}
	rb := array.NewRecordBuilder(memory.DefaultAllocator, arrow.NewSchema(fields, nil))
	for r := range 8192 {
		rb.Field(0).(*array.StringBuilder).Append("a string of some forty bytes, give or take")
		for i := 1; i <= 20; i++ {
			rb.Field(i).(*array.Int64Builder).Append(int64(r * i))
		}
	}
	rec := rb.NewRecordBatch()
	enc, dec := NewEncoder(nil), NewDecoder(nil)
	first, err := enc.Encode(rec) // with the schema
	if err != nil {
		b.Fatal(err)
	}
	if _, err := dec.Decode(append([]byte(nil), first...)); err != nil {
		b.Fatal(err)
	}
	data, err := enc.Encode(rec) // the batch alone, as most messages are
	if err != nil {
		b.Fatal(err)
	}
	msg := append([]byte(nil), data...)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := dec.Decode(msg)
		if err != nil {
			b.Fatal(err)
		}
		got.Release()
	}
}
