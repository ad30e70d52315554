package export

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

// Template attributes the Exporter reads when grouping: the batches carry
// them as sdk.TemplateColumnPrefix + name.
const (
	GroupByAttr = "group_by"
	OrderByAttr = "order_by"
)

// Columns of a grouped row besides the group key.
const (
	MessageCountField = "message_count"
	MessagesField     = "messages"
)

// groupChunkRows is about how many records go into one record batch
// returned by Grouper.Records (a group is never split).
const groupChunkRows = 64 << 10

// Grouper gathers batches and returns one row per group:
//
//	{<field>: string, "message_count": int64, "messages": list<struct<record>>}
//
// The group of a record is its rendered group_by template value; a record
// whose value is null or empty, or a batch without the column, goes to the
// group "". Groups come in the order of their first record's arrival.
// Messages come in arrival order or, when ordered, by their rendered
// order_by value: numerically when both values parse as numbers ("9" <
// "10"), else as strings; ties keep arrival order.
//
// The message struct has every non-reserved field seen in any batch (in
// first-seen order); a field a batch lacks is null there, int and float
// columns of one name become float64, and any other type conflict makes
// the field a raw JSON column (see sdk/arrowjson).
//
// Each returned record also carries sdk.IDColumn, the id of the group's
// first arrived record, and, when any record had explicit nulls,
// sdk.NullsColumn with their paths under "messages[i].", so that JSON
// writers keep them.
type Grouper struct {
	field   string
	ordered bool
	batches []arrow.RecordBatch
	groups  []*group
	index   map[string]*group
	n       int
}

type group struct {
	key     string
	firstID string // of the first arrived record
	members []member
}

type member struct {
	batch, row int32
	num        float64
	isNum      bool
	id, ord    string
}

// NewGrouper returns a Grouper whose rows name the group key column field
// ("group" when empty); ordered sorts messages by their order_by value.
func NewGrouper(field string, ordered bool) *Grouper {
	if field == "" {
		field = DefaultGroupField
	}
	return &Grouper{field: field, ordered: ordered, index: map[string]*group{}}
}

// Add takes in b's records. It retains b.Record until Records or Reset.
func (g *Grouper) Add(b sdk.Batch) {
	n := b.Len()
	if n == 0 {
		return
	}
	b.Record.Retain()
	bi := int32(len(g.batches))
	g.batches = append(g.batches, b.Record)
	for i := 0; i < n; i++ {
		key, _ := b.Template(GroupByAttr, i)
		gr := g.index[key]
		if gr == nil {
			gr = &group{key: key, firstID: b.ID(i)}
			g.index[key] = gr
			g.groups = append(g.groups, gr)
		}
		m := member{batch: bi, row: int32(i), id: b.ID(i)}
		if g.ordered {
			m.ord, _ = b.Template(OrderByAttr, i)
			if f, err := strconv.ParseFloat(strings.TrimSpace(m.ord), 64); err == nil && !math.IsNaN(f) {
				m.num, m.isNum = f, true
			}
		}
		gr.members = append(gr.members, m)
	}
	g.n += n
}

// Len is the number of records held.
func (g *Grouper) Len() int { return g.n }

// Reset drops everything held.
func (g *Grouper) Reset() {
	for _, b := range g.batches {
		b.Release()
	}
	g.batches, g.groups, g.n = nil, nil, 0
	clear(g.index)
}

func compareMembers(a, b member) int {
	if a.isNum && b.isNum {
		switch {
		case a.num < b.num:
			return -1
		case a.num > b.num:
			return 1
		}
		return 0
	}
	return strings.Compare(a.ord, b.ord)
}

// Records returns the grouped rows of everything added since the last
// call, as record batches of one schema (nil when nothing is held), and
// resets the Grouper. The caller releases the batches.
func (g *Grouper) Records(mem memory.Allocator) (out []arrow.RecordBatch, err error) {
	defer g.Reset()
	if g.n == 0 {
		return nil, nil
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	defer func() {
		if err != nil {
			for _, r := range out {
				r.Release()
			}
			out = nil
		}
	}()

	// the message struct, and each batch's records as such structs
	var fields []arrow.Field
	for _, b := range g.batches {
		fields = unifyFields(fields, dataFields(b.Schema()))
	}
	msgType := arrow.StructOf(fields...)
	conf := newConformer(mem)
	msgs := make([]arrow.Array, len(g.batches))
	nulls := make([]nullPaths, len(g.batches))
	defer func() {
		for _, m := range msgs {
			if m != nil {
				m.Release()
			}
		}
	}()
	hasNulls := false
	for bi, rec := range g.batches {
		msgs[bi] = structOf(conf, rec, msgType)
		nulls[bi] = findNulls(rec)
		hasNulls = hasNulls || nulls[bi].list != nil
	}
	if g.ordered {
		for _, gr := range g.groups {
			slices.SortStableFunc(gr.members, compareMembers)
		}
	}

	schemaFields := []arrow.Field{
		{Name: g.field, Type: arrow.BinaryTypes.String},
		{Name: MessageCountField, Type: arrow.PrimitiveTypes.Int64},
		{Name: MessagesField, Type: arrow.ListOf(msgType)},
		{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
	}
	if hasNulls {
		schemaFields = append(schemaFields, arrow.Field{Name: sdk.NullsColumn, Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true})
	}
	schema := arrow.NewSchema(schemaFields, nil)

	for start := 0; start < len(g.groups); {
		end, rows := start, 0
		for end < len(g.groups) && (end == start || rows+len(g.groups[end].members) <= groupChunkRows) {
			rows += len(g.groups[end].members)
			end++
		}
		rec, err := g.chunk(mem, schema, msgs, nulls, g.groups[start:end], rows, hasNulls)
		if err != nil {
			return out, err
		}
		out = append(out, rec)
		start = end
	}
	return out, nil
}

// chunk builds the record of groups.
func (g *Grouper) chunk(mem memory.Allocator, schema *arrow.Schema, msgs []arrow.Array, nulls []nullPaths,
	groups []*group, rows int, hasNulls bool) (arrow.RecordBatch, error) {
	keys := array.NewStringBuilder(mem)
	defer keys.Release()
	counts := array.NewInt64Builder(mem)
	defer counts.Release()
	ids := array.NewStringBuilder(mem)
	defer ids.Release()
	nullsB := array.NewListBuilder(mem, arrow.BinaryTypes.String)
	defer nullsB.Release()
	nullVals := nullsB.ValueBuilder().(*array.StringBuilder)

	offsets := make([]int32, 1, len(groups)+1)
	type run struct{ batch, start, end int32 }
	var runs []run
	var paths []string
	for _, gr := range groups {
		keys.Append(gr.key)
		counts.Append(int64(len(gr.members)))
		paths = paths[:0]
		for k, m := range gr.members {
			if n := len(runs); n > 0 && runs[n-1].batch == m.batch && runs[n-1].end == m.row {
				runs[n-1].end++
			} else {
				runs = append(runs, run{m.batch, m.row, m.row + 1})
			}
			if hasNulls {
				paths = nulls[m.batch].appendPaths(paths, int(m.row), k)
			}
		}
		ids.Append(gr.firstID)
		offsets = append(offsets, offsets[len(offsets)-1]+int32(len(gr.members)))
		if hasNulls {
			if len(paths) == 0 {
				nullsB.AppendNull()
			} else {
				nullsB.Append(true)
				for _, p := range paths {
					nullVals.Append(p)
				}
			}
		}
	}

	parts := make([]arrow.Array, len(runs))
	for i, r := range runs {
		parts[i] = array.NewSlice(msgs[r.batch], int64(r.start), int64(r.end))
	}
	var values arrow.Array
	if len(parts) == 1 {
		values = parts[0]
	} else {
		var err error
		values, err = array.Concatenate(parts, mem)
		for _, p := range parts {
			p.Release()
		}
		if err != nil {
			return nil, fmt.Errorf("export: group %d records: %w", rows, err)
		}
	}
	defer values.Release()
	offBuf := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offsets))
	listData := array.NewData(schema.Field(2).Type, len(groups), []*memory.Buffer{nil, offBuf}, []arrow.ArrayData{values.Data()}, 0, 0)
	list := array.MakeFromData(listData)
	listData.Release()

	cols := []arrow.Array{keys.NewArray(), counts.NewArray(), list, ids.NewArray()}
	if hasNulls {
		cols = append(cols, nullsB.NewArray())
	}
	rec := array.NewRecordBatch(schema, cols, int64(len(groups)))
	for _, c := range cols {
		c.Release()
	}
	return rec, nil
}

// structOf returns rec's non-reserved columns as a struct array of type t,
// which must cover them.
func structOf(conf *conformer, rec arrow.RecordBatch, t *arrow.StructType) arrow.Array {
	src := rec.Schema()
	n := int(rec.NumRows())
	children := make([]arrow.ArrayData, t.NumFields())
	for j, f := range t.Fields() {
		if idx := src.FieldIndices(f.Name); len(idx) > 0 {
			children[j] = conf.conform(rec.Column(idx[0]).Data(), src.Field(idx[0]), f)
		} else {
			a := array.MakeArrayOfNull(conf.mem, f.Type, n)
			children[j] = a.Data()
			children[j].Retain()
			a.Release()
		}
	}
	d := array.NewData(t, n, []*memory.Buffer{nil}, children, 0, 0)
	for _, c := range children {
		c.Release()
	}
	defer d.Release()
	return array.MakeFromData(d)
}

// nullPaths reads a batch's sdk.NullsColumn.
type nullPaths struct {
	list array.ListLike
	vals *array.String
}

func findNulls(rec arrow.RecordBatch) nullPaths {
	for i, f := range rec.Schema().Fields() {
		if f.Name != sdk.NullsColumn {
			continue
		}
		if l, ok := rec.Column(i).(array.ListLike); ok {
			if v, ok := l.ListValues().(*array.String); ok {
				return nullPaths{list: l, vals: v}
			}
		}
	}
	return nullPaths{}
}

// appendPaths appends row's explicit-null paths as paths inside message k.
func (n nullPaths) appendPaths(dst []string, row, k int) []string {
	if n.list == nil || !n.list.IsValid(row) {
		return dst
	}
	start, end := n.list.ValueOffsets(row)
	for j := start; j < end; j++ {
		if n.vals.IsValid(int(j)) {
			dst = append(dst, MessagesField+"["+strconv.Itoa(k)+"]."+n.vals.Value(int(j)))
		}
	}
	return dst
}
