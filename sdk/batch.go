package sdk

import (
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// Column names starting with ReservedPrefix carry the engine's bookkeeping
// next to a batch's records. Encoders (sdk/arrowjson, sdk/arrowcsv) skip them
// and expressions cannot see them.
const (
	ReservedPrefix = "_pipeline_"
	// IDColumn holds each record's stable id: the record's row_id where it
	// has one, else a hash of the source, the batch position and the row.
	IDColumn = ReservedPrefix + "id"
	// TemplateColumnPrefix + attribute name holds a template attribute's
	// rendered value for each record.
	TemplateColumnPrefix = ReservedPrefix + "tpl_"
	// NullsColumn (list<string>) lists, per record, the dotted paths of
	// fields that were an explicit JSON null in the input, so that writers
	// can tell them from absent keys. It is null for records with none.
	NullsColumn = ReservedPrefix + "nulls"
)

// IsReserved reports whether a column name is engine bookkeeping.
func IsReserved(name string) bool { return strings.HasPrefix(name, ReservedPrefix) }

// Batch is what a Sink's Write receives: a record batch plus, for each
// record, its stable id and the rendered template attributes.
type Batch struct {
	// Record holds the records. Its columns are the source's, which may
	// include NullsColumn; the id and template columns are split off.
	Record    arrow.RecordBatch
	ids       *array.String
	templates map[string]*array.String
}

// NewBatch splits the id and template columns off rec. The Batch shares
// rec's memory; it does not retain rec.
func NewBatch(rec arrow.RecordBatch) Batch {
	b := Batch{}
	schema := rec.Schema()
	var keep []int
	for i, f := range schema.Fields() {
		col, isString := rec.Column(i).(*array.String)
		switch {
		case f.Name == IDColumn && isString:
			b.ids = col
		case strings.HasPrefix(f.Name, TemplateColumnPrefix) && isString:
			if b.templates == nil {
				b.templates = map[string]*array.String{}
			}
			b.templates[strings.TrimPrefix(f.Name, TemplateColumnPrefix)] = col
		default:
			keep = append(keep, i)
		}
	}
	if len(keep) == len(schema.Fields()) {
		b.Record = rec
		return b
	}
	fields := make([]arrow.Field, len(keep))
	cols := make([]arrow.Array, len(keep))
	for j, i := range keep {
		fields[j] = schema.Field(i)
		cols[j] = rec.Column(i)
	}
	md := schema.Metadata()
	b.Record = array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, rec.NumRows())
	return b
}

// Len is the number of records in the batch.
func (b Batch) Len() int { return int(b.Record.NumRows()) }

// ID returns record i's stable id, or "" when the batch carries none.
func (b Batch) ID(i int) string {
	if b.ids == nil || b.ids.IsNull(i) {
		return ""
	}
	return b.ids.Value(i)
}

// Template returns the rendered value of template attribute attr for record
// i, and false when the attribute has no placeholders (use the configured
// value as it is).
func (b Batch) Template(attr string, i int) (string, bool) {
	col, ok := b.templates[attr]
	if !ok {
		return "", false
	}
	return col.Value(i), true
}

// RecordBytes is the size of rec's Arrow buffers: what holding it costs,
// for sinks that gather batches up to a size.
func RecordBytes(rec arrow.RecordBatch) int64 {
	var n int64
	for _, c := range rec.Columns() {
		n += dataBytes(c.Data())
	}
	return n
}

func dataBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}
