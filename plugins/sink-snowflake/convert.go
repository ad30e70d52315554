package sinksnowflake

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Declared types (the types attribute).
const (
	declTimestamp = "timestamp"
	declDate      = "date"
	declVariant   = "variant"
	declString    = "string"
)

// loadCol is one column of a held batch, converted to its transport form:
// a String, Int64, Float64 or Boolean array the sink owns.
type loadCol struct {
	column
	arr arrow.Array
}

// mapper turns a batch's fields into columns.
type mapper struct {
	flatten bool
	types   map[string]string // field path → declared type
	key     string            // key column name
	version string            // version column name, or ""
	mem     memory.Allocator
}

// columnName is the Snowflake name of a field path: upper case, as an
// unquoted identifier would be stored, with flattened paths joined by "_".
func columnName(path []string) string {
	return strings.ToUpper(strings.Join(path, "_"))
}

// convert turns b into its load columns: _PIPELINE_ID first, then each
// data field (flattened structs give a column per leaf). Null-typed fields
// (never seen with a value) are left out until they have a type.
func (m *mapper) convert(b sdk.Batch) ([]loadCol, error) {
	n := b.Len()
	ids := array.NewStringBuilder(m.mem)
	defer ids.Release()
	for i := 0; i < n; i++ {
		if id := b.ID(i); id != "" {
			ids.Append(id)
		} else {
			ids.AppendNull()
		}
	}
	cols := []loadCol{{column: column{Name: colID, Field: "the record id", Type: typeVarchar}, arr: ids.NewArray()}}
	release := func() {
		for _, c := range cols {
			c.arr.Release()
		}
	}
	seen := map[string]string{colID: "the record id"}
	rec := b.Record
	for i, f := range rec.Schema().Fields() {
		if sdk.IsReserved(f.Name) {
			continue
		}
		if err := m.field(&cols, seen, []string{f.Name}, f, rec.Column(i), nil); err != nil {
			release()
			return nil, err
		}
	}
	if m.key != colID {
		var found *loadCol
		for i := range cols {
			if cols[i].Name == m.key {
				found = &cols[i]
			}
		}
		if found == nil {
			release()
			return nil, fmt.Errorf("key %q: the records have no such field (fields: %s)", m.key, fieldList(rec.Schema()))
		}
		if nulls := found.arr.NullN(); nulls > 0 {
			release()
			return nil, fmt.Errorf("key %q is null in %d of %d records: every record needs a key to be merged on", m.key, nulls, n)
		}
	}
	if m.version != "" {
		if err := m.checkVersion(rec.Schema(), cols); err != nil {
			release()
			return nil, err
		}
	}
	return cols, nil
}

// versionField is the top-level field that holds the version.
func (m *mapper) versionField(s *arrow.Schema) (arrow.Field, bool) {
	for _, f := range s.Fields() {
		if !sdk.IsReserved(f.Name) && columnName([]string{f.Name}) == m.version {
			return f, true
		}
	}
	return arrow.Field{}, false
}

// hasVersion reports whether the records have the version field, perhaps
// only with nulls.
func (m *mapper) hasVersion(s *arrow.Schema) bool {
	_, ok := m.versionField(s)
	return ok
}

// checkVersion checks that the version column, when the batch has one,
// comes from a top-level field and holds timestamps or numbers.
func (m *mapper) checkVersion(s *arrow.Schema, cols []loadCol) error {
	for _, c := range cols {
		if c.Name != m.version {
			continue
		}
		f, ok := m.versionField(s)
		if !ok {
			return fmt.Errorf("version %q: column %s holds field %q, not a top-level field", m.version, quoteIdent(c.Name), c.Field)
		}
		if !versionType(c.Type) {
			return fmt.Errorf("version %q: field %q is %s (%s); a version must be a timestamp or a number: TIMESTAMP_TZ, NUMBER or FLOAT (a string of times can be declared with types = { %q = \"timestamp\" })",
				m.version, f.Name, c.Type, f.Type, f.Name)
		}
		return nil
	}
	if f, ok := m.versionField(s); ok && f.Type.ID() == arrow.STRUCT {
		return fmt.Errorf("version %q: field %q is a struct (flattened into columns); a version must be a timestamp or a number", m.version, f.Name)
	}
	return nil // no values: null versions
}

func fieldList(s *arrow.Schema) string {
	var names []string
	for _, f := range s.Fields() {
		if !sdk.IsReserved(f.Name) {
			names = append(names, f.Name)
		}
	}
	return strings.Join(names, ", ")
}

// field converts one field; parentNull, when set, tells which rows of an
// enclosing (flattened) struct are null.
func (m *mapper) field(cols *[]loadCol, seen map[string]string, path []string, f arrow.Field, arr arrow.Array, parentNull func(int) bool) error {
	dotted := strings.Join(path, ".")
	decl := m.types[dotted]
	if st, ok := arr.(*array.Struct); ok && m.flatten && decl == "" && st.NumField() > 0 {
		nullAt := func(i int) bool { return st.IsNull(i) || (parentNull != nil && parentNull(i)) }
		t := f.Type.(*arrow.StructType)
		for j, cf := range t.Fields() {
			if err := m.field(cols, seen, append(append([]string(nil), path...), cf.Name), cf, st.Field(j), nullAt); err != nil {
				return err
			}
		}
		return nil
	}
	if arr.DataType().ID() == arrow.NULL && decl == "" {
		return nil
	}
	name := columnName(path)
	if prev, dup := seen[name]; dup {
		return fmt.Errorf("fields %q and %q both become column %s: Snowflake column names are case-insensitive; rename one of them", prev, dotted, name)
	}
	seen[name] = dotted
	typ, conv, err := m.mapType(dotted, f, arr, decl)
	if err != nil {
		return err
	}
	var out arrow.Array
	if parentNull == nil && passesAsIs(arr, typ, decl, f) {
		// Already the transport type, with its own nulls: no copy.
		arr.Retain()
		out = arr
	} else {
		null := func(i int) bool { return arr.IsNull(i) || (parentNull != nil && parentNull(i)) }
		if out, err = conv(arr, null); err != nil {
			return fmt.Errorf("field %q: %w", dotted, err)
		}
	}
	*cols = append(*cols, loadCol{column: column{Name: name, Field: dotted, Type: typ}, arr: out})
	return nil
}

type converter func(arr arrow.Array, null func(int) bool) (arrow.Array, error)

// passesAsIs reports whether the converter mapType picks for arr would
// copy it unchanged: an int64, float64, bool or string column that is
// already the transport type of its Snowflake type. (A raw-JSON string
// declared "variant" is re-encoded, so it does not pass.)
func passesAsIs(arr arrow.Array, typ, decl string, f arrow.Field) bool {
	switch arr.(type) {
	case *array.Int64:
		return typ == typeNumber
	case *array.Float64:
		return typ == typeFloat
	case *array.Boolean:
		return typ == typeBoolean
	case *array.String:
		return !(decl == declVariant && arrowjson.IsRaw(f))
	}
	return false
}

// mapType picks a field's Snowflake type and its conversion.
func (m *mapper) mapType(path string, f arrow.Field, arr arrow.Array, decl string) (string, converter, error) {
	id := arr.DataType().ID()
	isString := id == arrow.STRING || id == arrow.LARGE_STRING
	switch decl {
	case "":
	case declTimestamp:
		switch {
		case id == arrow.TIMESTAMP:
			return typeTimestampTZ, m.timestamps, nil
		case isString, id == arrow.NULL:
			return typeTimestampTZ, m.strings, nil
		}
		return "", nil, fmt.Errorf("types: field %q is declared a timestamp but holds %s; only string and timestamp fields can be", path, arr.DataType())
	case declDate:
		switch {
		case id == arrow.DATE32 || id == arrow.DATE64:
			return typeDate, m.dates, nil
		case isString, id == arrow.NULL:
			return typeDate, m.strings, nil
		}
		return "", nil, fmt.Errorf("types: field %q is declared a date but holds %s; only string and date fields can be", path, arr.DataType())
	case declVariant:
		if isString && !arrowjson.IsRaw(f) {
			return typeVariant, m.strings, nil // the string holds JSON
		}
		return typeVariant, m.jsonText(f), nil
	case declString:
		if isString {
			return typeVarchar, m.strings, nil
		}
		return typeVarchar, m.jsonText(f), nil
	default:
		return "", nil, fmt.Errorf("types: field %q has type %q; use \"timestamp\", \"date\", \"variant\" or \"string\"", path, decl)
	}
	switch {
	case isString && arrowjson.IsRaw(f):
		return typeVariant, m.strings, nil
	case isString:
		return typeVarchar, m.strings, nil
	}
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return typeNumber, m.ints, nil
	case arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64:
		return typeFloat, m.floats, nil
	case arrow.BOOL:
		return typeBoolean, m.bools, nil
	case arrow.TIMESTAMP:
		return typeTimestampTZ, m.timestamps, nil
	case arrow.DATE32, arrow.DATE64:
		return typeDate, m.dates, nil
	}
	// Structs, lists, maps and anything else: VARIANT, as JSON.
	return typeVariant, m.jsonText(f), nil
}

func (m *mapper) strings(arr arrow.Array, null func(int) bool) (arrow.Array, error) {
	b := array.NewStringBuilder(m.mem)
	defer b.Release()
	for i := 0; i < arr.Len(); i++ {
		switch a := arr.(type) {
		case *array.String:
			if null(i) {
				b.AppendNull()
			} else {
				b.Append(a.Value(i))
			}
		case *array.LargeString:
			if null(i) {
				b.AppendNull()
			} else {
				b.Append(a.Value(i))
			}
		default:
			b.AppendNull() // a null-typed field
		}
	}
	return b.NewArray(), nil
}

func (m *mapper) ints(arr arrow.Array, null func(int) bool) (arrow.Array, error) {
	b := array.NewInt64Builder(m.mem)
	defer b.Release()
	for i := 0; i < arr.Len(); i++ {
		if null(i) {
			b.AppendNull()
			continue
		}
		var v int64
		switch a := arr.(type) {
		case *array.Int8:
			v = int64(a.Value(i))
		case *array.Int16:
			v = int64(a.Value(i))
		case *array.Int32:
			v = int64(a.Value(i))
		case *array.Int64:
			v = a.Value(i)
		case *array.Uint8:
			v = int64(a.Value(i))
		case *array.Uint16:
			v = int64(a.Value(i))
		case *array.Uint32:
			v = int64(a.Value(i))
		case *array.Uint64:
			u := a.Value(i)
			if u > math.MaxInt64 {
				return nil, fmt.Errorf("value %d does not fit a signed 64-bit NUMBER", u)
			}
			v = int64(u)
		}
		b.Append(v)
	}
	return b.NewArray(), nil
}

func (m *mapper) floats(arr arrow.Array, null func(int) bool) (arrow.Array, error) {
	b := array.NewFloat64Builder(m.mem)
	defer b.Release()
	for i := 0; i < arr.Len(); i++ {
		if null(i) {
			b.AppendNull()
			continue
		}
		switch a := arr.(type) {
		case *array.Float16:
			b.Append(float64(a.Value(i).Float32()))
		case *array.Float32:
			b.Append(float64(a.Value(i)))
		case *array.Float64:
			b.Append(a.Value(i))
		}
	}
	return b.NewArray(), nil
}

func (m *mapper) bools(arr arrow.Array, null func(int) bool) (arrow.Array, error) {
	b := array.NewBooleanBuilder(m.mem)
	defer b.Release()
	a := arr.(*array.Boolean)
	for i := 0; i < arr.Len(); i++ {
		if null(i) {
			b.AppendNull()
		} else {
			b.Append(a.Value(i))
		}
	}
	return b.NewArray(), nil
}

// timestamps become RFC 3339 text in UTC, read by TO_TIMESTAMP_TZ.
func (m *mapper) timestamps(arr arrow.Array, null func(int) bool) (arrow.Array, error) {
	b := array.NewStringBuilder(m.mem)
	defer b.Release()
	a := arr.(*array.Timestamp)
	unit := a.DataType().(*arrow.TimestampType).Unit
	for i := 0; i < arr.Len(); i++ {
		if null(i) {
			b.AppendNull()
		} else {
			b.Append(a.Value(i).ToTime(unit).UTC().Format(time.RFC3339Nano))
		}
	}
	return b.NewArray(), nil
}

func (m *mapper) dates(arr arrow.Array, null func(int) bool) (arrow.Array, error) {
	b := array.NewStringBuilder(m.mem)
	defer b.Release()
	for i := 0; i < arr.Len(); i++ {
		if null(i) {
			b.AppendNull()
			continue
		}
		switch a := arr.(type) {
		case *array.Date32:
			b.Append(a.Value(i).ToTime().Format(time.DateOnly))
		case *array.Date64:
			b.Append(a.Value(i).ToTime().Format(time.DateOnly))
		}
	}
	return b.NewArray(), nil
}

// jsonText encodes each value as JSON text, for a VARIANT (PARSE_JSON).
func (m *mapper) jsonText(f arrow.Field) converter {
	return func(arr arrow.Array, null func(int) bool) (arrow.Array, error) {
		b := array.NewStringBuilder(m.mem)
		defer b.Release()
		enc := arrowjson.NewEncoder()
		var buf []byte
		for i := 0; i < arr.Len(); i++ {
			if null(i) {
				b.AppendNull()
				continue
			}
			buf = enc.AppendValue(buf[:0], f, arr, i)
			b.Append(string(buf))
		}
		return b.NewArray(), nil
	}
}

// widen converts an int64 transport column to float64, for a column that
// is FLOAT in the table or elsewhere in the flush.
func widen(mem memory.Allocator, arr arrow.Array) arrow.Array {
	a := arr.(*array.Int64)
	b := array.NewFloat64Builder(mem)
	defer b.Release()
	for i := 0; i < a.Len(); i++ {
		if a.IsNull(i) {
			b.AppendNull()
		} else {
			b.Append(float64(a.Value(i)))
		}
	}
	return b.NewArray()
}

// arrowType is the transport Arrow type of a staging column.
func arrowType(sfType string) arrow.DataType {
	switch stagingType(sfType) {
	case typeNumber:
		return arrow.PrimitiveTypes.Int64
	case typeFloat:
		return arrow.PrimitiveTypes.Float64
	case typeBoolean:
		return arrow.FixedWidthTypes.Boolean
	}
	return arrow.BinaryTypes.String
}
