package sourcepostgres

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Column buffers: each result column is appended to plain Go slices laid
// out as Arrow lays out its arrays (validity bitmap, offsets, values, all
// little-endian), and handed to Arrow without a copy when a batch is cut.
// That is several times cheaper per value than Arrow's builders, and the
// binary protocol's big-endian integers and floats become Arrow's values by
// a byte swap.

// colBuf is one column's values since the last batch.
type colBuf interface {
	// add appends a non-null binary value; addNull a NULL.
	add(v []byte) error
	addNull()
	// build returns the array data of the values added, and starts over.
	build() arrow.ArrayData
	len() int
}

// validity is a column's validity bitmap, made at the first NULL.
type validity struct {
	n     int
	nulls int
	bits  []byte
}

func (v *validity) valid() {
	if v.bits != nil {
		if v.n>>3 >= len(v.bits) {
			v.bits = append(v.bits, 0)
		}
		v.bits[v.n>>3] |= 1 << (v.n & 7)
	}
	v.n++
}

func (v *validity) null() {
	if v.bits == nil {
		v.bits = make([]byte, (v.n+8)/8, max(64, (v.n+8)/4))
		for i := 0; i < v.n>>3; i++ {
			v.bits[i] = 0xff
		}
		v.bits[v.n>>3] = byte(1)<<(v.n&7) - 1
	} else if v.n>>3 >= len(v.bits) {
		v.bits = append(v.bits, 0)
	}
	v.nulls++
	v.n++
}

// take returns the bitmap buffer (nil without NULLs), the length and the
// null count, and starts over.
func (v *validity) take() (*memory.Buffer, int, int) {
	var buf *memory.Buffer
	if v.bits != nil {
		buf = memory.NewBufferBytes(v.bits)
	}
	n, nulls := v.n, v.nulls
	*v = validity{}
	return buf, n, nulls
}

// grown is a new slice for the next batch, sized like the last one.
func grown[T any](last []T) []T { return make([]T, 0, cap(last)) }

// varBuf is a utf8 or binary column: offsets and data.
type varBuf struct {
	validity
	typ  arrow.DataType
	offs []int32
	data []byte
	// conv appends v's value to data; nil appends v as it is.
	conv func(data, v []byte) ([]byte, error)
}

func newVarBuf(typ arrow.DataType, conv func(data, v []byte) ([]byte, error)) *varBuf {
	return &varBuf{typ: typ, offs: make([]int32, 1, 1024), data: make([]byte, 0, 1<<14), conv: conv}
}

func (b *varBuf) add(v []byte) error {
	if b.conv == nil {
		b.data = append(b.data, v...)
	} else {
		var err error
		if b.data, err = b.conv(b.data, v); err != nil {
			return err
		}
	}
	if len(b.data) > math.MaxInt32 {
		return errors.New("more than 2 GiB of values in one batch; lower batch_rows")
	}
	b.offs = append(b.offs, int32(len(b.data)))
	b.valid()
	return nil
}

func (b *varBuf) addNull() {
	b.offs = append(b.offs, int32(len(b.data)))
	b.null()
}

func (b *varBuf) len() int { return b.n }

func (b *varBuf) build() arrow.ArrayData {
	vb, n, nulls := b.take()
	d := array.NewData(b.typ, n, []*memory.Buffer{vb, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(b.offs)), memory.NewBufferBytes(b.data)}, nil, nulls, 0)
	b.offs = append(grown(b.offs), 0)
	b.data = grown(b.data)
	return d
}

// fixedBuf is a fixed-width column: width bytes per value.
type fixedBuf struct {
	validity
	typ   arrow.DataType
	width int
	data  []byte
	// conv appends v's value, exactly width bytes.
	conv func(data, v []byte) ([]byte, error)
}

func newFixedBuf(typ arrow.DataType, width int, conv func(data, v []byte) ([]byte, error)) *fixedBuf {
	return &fixedBuf{typ: typ, width: width, data: make([]byte, 0, 1024*width), conv: conv}
}

func (b *fixedBuf) add(v []byte) error {
	var err error
	if b.data, err = b.conv(b.data, v); err != nil {
		return err
	}
	b.valid()
	return nil
}

var zeros [16]byte

func (b *fixedBuf) addNull() {
	b.data = append(b.data, zeros[:b.width]...)
	b.null()
}

func (b *fixedBuf) len() int { return b.n }

func (b *fixedBuf) build() arrow.ArrayData {
	vb, n, nulls := b.take()
	d := array.NewData(b.typ, n, []*memory.Buffer{vb, memory.NewBufferBytes(b.data)}, nil, nulls, 0)
	b.data = grown(b.data)
	return d
}

// boolBuf is a boolean column: one bit per value.
type boolBuf struct {
	validity
	bits []byte
	k    int
}

func (b *boolBuf) add(v []byte) error {
	if len(v) != 1 {
		return wrongLength("boolean", len(v))
	}
	b.push(v[0] != 0)
	b.valid()
	return nil
}

func (b *boolBuf) addNull() {
	b.push(false)
	b.null()
}

func (b *boolBuf) push(on bool) {
	if b.k>>3 >= len(b.bits) {
		b.bits = append(b.bits, 0)
	}
	if on {
		b.bits[b.k>>3] |= 1 << (b.k & 7)
	}
	b.k++
}

func (b *boolBuf) len() int { return b.n }

func (b *boolBuf) build() arrow.ArrayData {
	vb, n, nulls := b.take()
	bits := b.bits
	if bits == nil {
		bits = []byte{}
	}
	d := array.NewData(arrow.FixedWidthTypes.Boolean, n, []*memory.Buffer{vb, memory.NewBufferBytes(bits)}, nil, nulls, 0)
	b.bits, b.k = grown(b.bits), 0
	return d
}

// listBuf is a one-dimensional array column: offsets into its elements.
type listBuf struct {
	validity
	typ  arrow.DataType
	offs []int32
	elem colBuf
}

func (b *listBuf) add(v []byte) error {
	if err := addArray(v, b.elem); err != nil {
		return err
	}
	b.offs = append(b.offs, int32(b.elem.len()))
	b.valid()
	return nil
}

func (b *listBuf) addNull() {
	b.offs = append(b.offs, int32(b.elem.len()))
	b.null()
}

func (b *listBuf) len() int { return b.n }

func (b *listBuf) build() arrow.ArrayData {
	vb, n, nulls := b.take()
	child := b.elem.build()
	defer child.Release()
	d := array.NewData(b.typ, n, []*memory.Buffer{vb, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(b.offs))}, []arrow.ArrayData{child}, nulls, 0)
	b.offs = append(grown(b.offs), 0)
	return d
}

// addArray appends the elements of a one-dimensional array in PostgreSQL's
// binary array format: ndim, flags, element type, (size, lower bound) per
// dimension, then each element as a length (-1: NULL) and its bytes.
func addArray(v []byte, elem colBuf) error {
	if len(v) < 12 {
		return wrongLength("array", len(v))
	}
	ndim := int32(be32(v))
	switch {
	case ndim == 0:
		return nil // an empty array
	case ndim != 1:
		return errors.New("a " + strconv.Itoa(int(ndim)) + "-dimensional array: a list holds one dimension; unnest it or pick one dimension in a query")
	case len(v) < 20:
		return wrongLength("array", len(v))
	}
	n := int(int32(be32(v[12:])))
	p := 20
	for i := 0; i < n; i++ {
		if p+4 > len(v) {
			return errors.New("a truncated array value")
		}
		l := int(int32(be32(v[p:])))
		p += 4
		if l < 0 {
			elem.addNull()
			continue
		}
		if p+l > len(v) {
			return errors.New("a truncated array value")
		}
		if err := elem.add(v[p : p+l]); err != nil {
			return err
		}
		p += l
	}
	return nil
}

// Conversions of binary values into Arrow's little-endian ones.

func swap2(data, v []byte) ([]byte, error) {
	if len(v) != 2 {
		return data, wrongLength("smallint", len(v))
	}
	return append(data, v[1], v[0]), nil
}

func swap4(what string) func(data, v []byte) ([]byte, error) {
	return func(data, v []byte) ([]byte, error) {
		if len(v) != 4 {
			return data, wrongLength(what, len(v))
		}
		return append(data, v[3], v[2], v[1], v[0]), nil
	}
}

func swap8(what string) func(data, v []byte) ([]byte, error) {
	return func(data, v []byte) ([]byte, error) {
		if len(v) != 8 {
			return data, wrongLength(what, len(v))
		}
		return append(data, v[7], v[6], v[5], v[4], v[3], v[2], v[1], v[0]), nil
	}
}

func convTimestamp(data, v []byte) ([]byte, error) {
	us, err := timestampMicros(v)
	if err != nil {
		return data, err
	}
	return binary.LittleEndian.AppendUint64(data, uint64(us)), nil
}

func convDate(data, v []byte) ([]byte, error) {
	d, err := dateDays(v)
	if err != nil {
		return data, err
	}
	return binary.LittleEndian.AppendUint32(data, uint32(d)), nil
}

func convUUID(data, v []byte) ([]byte, error) {
	if len(v) != 16 {
		return data, wrongLength("uuid", len(v))
	}
	return appendUUID(data, v), nil
}

func convChar(data, v []byte) ([]byte, error) {
	if len(v) == 1 && v[0] >= 0x80 {
		// "char" holds one byte, shown as an octal escape when it is not
		// ASCII.
		return append(append(data, '\\'), strconv.FormatInt(int64(v[0]), 8)...), nil
	}
	return append(data, v...), nil
}

func convJSON(jsonb bool) func(data, v []byte) ([]byte, error) {
	return func(data, v []byte) ([]byte, error) {
		text, err := jsonText(v, jsonb)
		if err != nil {
			return data, err
		}
		return compactJSON(data, text), nil
	}
}

// newColBuf returns the buffer of a column of type t, not decoded as
// nested JSON.
func newColBuf(t *pgType) colBuf {
	typ := t.arrowType()
	switch t.kind {
	case kBool:
		return &boolBuf{bits: make([]byte, 0, 128)}
	case kInt2:
		return newFixedBuf(typ, 2, swap2)
	case kInt4:
		return newFixedBuf(typ, 4, swap4("integer"))
	case kInt8:
		return newFixedBuf(typ, 8, swap8("bigint"))
	case kFloat4:
		return newFixedBuf(typ, 4, swap4("real"))
	case kFloat8:
		return newFixedBuf(typ, 8, swap8("double precision"))
	case kDecimal:
		return newFixedBuf(typ, 16, func(data, v []byte) ([]byte, error) {
			n, err := numericDecimal(v, t.precision, t.scale)
			if err != nil {
				return data, err
			}
			data = binary.LittleEndian.AppendUint64(data, n.LowBits())
			return binary.LittleEndian.AppendUint64(data, uint64(n.HighBits())), nil
		})
	case kTimestamptz, kTimestamp:
		return newFixedBuf(typ, 8, convTimestamp)
	case kDate:
		return newFixedBuf(typ, 4, convDate)
	case kNumericText:
		return newVarBuf(typ, appendNumericText)
	case kText, kBytea:
		return newVarBuf(typ, nil)
	case kChar:
		return newVarBuf(typ, convChar)
	case kUUID:
		return newVarBuf(typ, convUUID)
	case kJSON, kJSONB:
		return newVarBuf(typ, convJSON(t.kind == kJSONB))
	case kList:
		return &listBuf{typ: typ, offs: make([]int32, 1, 1024), elem: newColBuf(t.elem)}
	}
	panic("sourcepostgres: no column buffer for kind " + strconv.Itoa(int(t.kind)))
}
