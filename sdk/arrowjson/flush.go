package arrowjson

import (
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

var nullsField = arrow.Field{
	Name:     sdk.NullsColumn,
	Type:     arrow.ListOfField(arrow.Field{Name: "item", Type: arrow.BinaryTypes.String, Nullable: true}),
	Nullable: true,
}

// Schema returns the schema inferred so far: the schema of the next Flush.
// It is the same *arrow.Schema value until the schema changes.
func (d *Decoder) Schema() *arrow.Schema {
	if d.schema != nil && d.schemaVersion == d.version {
		return d.schema
	}
	fields := make([]arrow.Field, 0, len(d.root.children)+1)
	for _, c := range d.root.children {
		fields = append(fields, fieldOf(c))
	}
	if d.nullsOn {
		fields = append(fields, nullsField)
	}
	d.schema = arrow.NewSchema(fields, nil)
	d.schemaVersion = d.version
	return d.schema
}

func fieldOf(n *node) arrow.Field {
	f := arrow.Field{Name: n.name, Type: dtype(n), Nullable: true}
	if n.kind == kRaw {
		f.Metadata = rawMetadata
	}
	return f
}

func dtype(n *node) arrow.DataType {
	switch n.kind {
	case kBool:
		return arrow.FixedWidthTypes.Boolean
	case kInt:
		return arrow.PrimitiveTypes.Int64
	case kFloat:
		return arrow.PrimitiveTypes.Float64
	case kString, kRaw:
		return arrow.BinaryTypes.String
	case kList:
		return arrow.ListOfField(arrow.Field{Name: "item", Type: dtype(n.elem), Nullable: true})
	case kStruct:
		fields := make([]arrow.Field, len(n.children))
		for i, c := range n.children {
			fields[i] = fieldOf(c)
		}
		return arrow.StructOf(fields...)
	default:
		return arrow.Null
	}
}

// Flush returns the rows buffered since the last Flush as a record batch
// with the current Schema, or nil when there are none. The caller must
// Release the batch. The inferred schema is kept for the next batch.
func (d *Decoder) Flush() arrow.RecordBatch {
	if d.rows == 0 {
		return nil
	}
	schema := d.Schema()
	cols := make([]arrow.Array, schema.NumFields())
	for i, c := range d.root.children {
		data := d.build(c, schema.Field(i).Type)
		cols[i] = array.MakeFromData(data)
		data.Release()
	}
	if d.nullsOn {
		data := d.buildNulls()
		cols[len(cols)-1] = array.MakeFromData(data)
		data.Release()
	}
	rec := array.NewRecordBatch(schema, cols, int64(d.rows))
	for _, c := range cols {
		c.Release()
	}
	d.reset()
	return rec
}

func (d *Decoder) reset() {
	d.rows = 0
	resetNode(d.root)
	d.nullsState = d.nullsState[:0]
	d.nullsOffs = d.nullsOffs[:1]
	d.pathOffs = d.pathOffs[:1]
	d.pathData = d.pathData[:0]
}

func resetNode(n *node) {
	n.state = n.state[:0]
	n.ints = n.ints[:0]
	n.floats = n.floats[:0]
	n.bools = n.bools[:0]
	if len(n.offs) > 0 {
		n.offs = n.offs[:1]
	}
	n.data = n.data[:0]
	for _, c := range n.children {
		resetNode(c)
	}
	if n.elem != nil {
		resetNode(n.elem)
	}
}

// buffer copies b into a buffer from the decoder's allocator.
func (d *Decoder) buffer(b []byte) *memory.Buffer {
	buf := memory.NewResizableBuffer(d.mem)
	buf.Resize(len(b))
	copy(buf.Bytes(), b)
	return buf
}

// bitmap packs one byte per entry (set where keep(v)) into a bitmap buffer.
func (d *Decoder) bitmap(v []byte, want byte) *memory.Buffer {
	buf := memory.NewResizableBuffer(d.mem)
	buf.Resize(int(bitutil.BytesForBits(int64(len(v)))))
	b := buf.Bytes()
	clear(b)
	for i, x := range v {
		if x == want {
			b[i>>3] |= 1 << (i & 7)
		}
	}
	return buf
}

// validity returns the validity bitmap of states (nil when all are valid)
// and the number of nulls.
func (d *Decoder) validity(states []byte) (*memory.Buffer, int) {
	nulls := 0
	for _, s := range states {
		if s != stValid {
			nulls++
		}
	}
	if nulls == 0 {
		return nil, 0
	}
	return d.bitmap(states, stValid), nulls
}

// build turns n's buffered entries into array data of type dt.
func (d *Decoder) build(n *node, dt arrow.DataType) arrow.ArrayData {
	l := n.len()
	if n.kind == kNull {
		return array.NewData(arrow.Null, l, []*memory.Buffer{nil}, nil, l, 0)
	}
	valid, nulls := d.validity(n.state)
	var bufs []*memory.Buffer
	var children []arrow.ArrayData
	switch n.kind {
	case kBool:
		bufs = []*memory.Buffer{valid, d.bitmap(n.bools, 1)}
	case kInt:
		bufs = []*memory.Buffer{valid, d.buffer(arrow.Int64Traits.CastToBytes(n.ints))}
	case kFloat:
		bufs = []*memory.Buffer{valid, d.buffer(arrow.Float64Traits.CastToBytes(n.floats))}
	case kString, kRaw:
		bufs = []*memory.Buffer{valid, d.buffer(arrow.Int32Traits.CastToBytes(n.offs)), d.buffer(n.data)}
	case kList:
		bufs = []*memory.Buffer{valid, d.buffer(arrow.Int32Traits.CastToBytes(n.offs))}
		children = []arrow.ArrayData{d.build(n.elem, dt.(*arrow.ListType).Elem())}
	case kStruct:
		bufs = []*memory.Buffer{valid}
		st := dt.(*arrow.StructType)
		children = make([]arrow.ArrayData, len(n.children))
		for i, c := range n.children {
			children[i] = d.build(c, st.Field(i).Type)
		}
	}
	data := array.NewData(dt, l, bufs, children, nulls, 0)
	for _, b := range bufs {
		if b != nil {
			b.Release()
		}
	}
	for _, c := range children {
		c.Release()
	}
	return data
}

func (d *Decoder) buildNulls() arrow.ArrayData {
	paths := array.NewData(arrow.BinaryTypes.String, len(d.pathOffs)-1,
		[]*memory.Buffer{nil, d.buffer(arrow.Int32Traits.CastToBytes(d.pathOffs)), d.buffer(d.pathData)}, nil, 0, 0)
	valid, nulls := d.validity(d.nullsState)
	offs := d.buffer(arrow.Int32Traits.CastToBytes(d.nullsOffs))
	data := array.NewData(nullsField.Type, d.rows, []*memory.Buffer{valid, offs}, []arrow.ArrayData{paths}, nulls, 0)
	for _, b := range paths.Buffers() {
		if b != nil {
			b.Release()
		}
	}
	paths.Release()
	offs.Release()
	if valid != nil {
		valid.Release()
	}
	return data
}
