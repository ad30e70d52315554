package sinkpostgres

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// PostgreSQL column types the sink creates.
const (
	tText        = "text"
	tBigint      = "bigint"
	tDouble      = "double precision"
	tBool        = "boolean"
	tTimestamptz = "timestamptz"
	tDate        = "date"
	tBytea       = "bytea"
	tJSONB       = "jsonb"
)

// column is one column the held records fill.
type column struct {
	name   string   // column name
	path   []string // field path: top-level name, then struct fields (flatten)
	typ    string   // type the records call for; "" when only nulls were seen
	id     bool     // holds the record id (_pipeline_id)
	key    bool     // the merge key
	ver    bool     // the version (merge with version)
	absent bool     // the version, which no held record has
	table  string   // the table's type of the column, once known
}

// sqlType maps an Arrow type to the column type the sink creates.
func sqlType(f arrow.Field) string {
	dt := f.Type
	switch dt.ID() {
	case arrow.NULL:
		return ""
	case arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW:
		if arrowjson.IsRaw(f) {
			return tJSONB
		}
		return tText
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return tBigint
	case arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64:
		return tDouble
	case arrow.BOOL:
		return tBool
	case arrow.TIMESTAMP:
		return tTimestamptz
	case arrow.DATE32, arrow.DATE64:
		return tDate
	case arrow.BINARY, arrow.LARGE_BINARY, arrow.FIXED_SIZE_BINARY, arrow.BINARY_VIEW:
		return tBytea
	default: // struct, list, map, dictionary, ...: the value as JSON
		return tJSONB
	}
}

// plan lists the columns the held batches fill, in order of first
// appearance, each with the type its records call for. A field whose type
// differs between held batches gets the wider type: bigint and double
// precision make double precision; anything with jsonb makes jsonb.
func (s *Sink) plan() ([]*column, error) {
	var cols []*column
	byName := map[string]*column{}
	idCol := &column{name: IDColumn, typ: tText, id: true, key: s.cfg.Key == "" && s.cfg.Mode == ModeMerge}
	cols = append(cols, idCol)
	byName[IDColumn] = idCol
	add := func(name string, path []string, typ string) error {
		if len(name) > 63 {
			return fmt.Errorf("field %q: the column name is longer than PostgreSQL's 63 bytes", strings.Join(path, "."))
		}
		c := byName[name]
		if c == nil {
			c = &column{name: name, path: path, typ: typ, key: s.cfg.Key != "" && name == s.cfg.Key && len(path) == 1}
			cols = append(cols, c)
			byName[name] = c
			return nil
		}
		if !samePath(c.path, path) {
			return fmt.Errorf("fields %q and %q both become column %q; rename one or set flatten = false", strings.Join(c.path, "."), strings.Join(path, "."), name)
		}
		switch {
		case c.typ == typ || typ == "":
		case c.typ == "":
			c.typ = typ
		case c.typ == tJSONB || typ == tJSONB:
			c.typ = tJSONB
		case (c.typ == tBigint && typ == tDouble) || (c.typ == tDouble && typ == tBigint):
			c.typ = tDouble
		default:
			return fmt.Errorf("field %q is %s in some records and %s in others; the column can hold only one", strings.Join(path, "."), c.typ, typ)
		}
		return nil
	}
	var walk func(f arrow.Field, path []string) error
	walk = func(f arrow.Field, path []string) error {
		if st, ok := f.Type.(*arrow.StructType); ok && s.cfg.Flatten {
			for _, child := range st.Fields() {
				if err := walk(child, append(path[:len(path):len(path)], child.Name)); err != nil {
					return err
				}
			}
			return nil
		}
		name := strings.Join(path, "_")
		typ := sqlType(f)
		if tt, ok := s.declaredType(name, path); ok {
			switch typ {
			case tText, "":
				typ = tt
			case tTimestamptz:
			default:
				return fmt.Errorf("types: field %q is declared a timestamp but the records have %s, not strings", strings.Join(path, "."), typ)
			}
		}
		return add(name, path, typ)
	}
	for _, h := range s.held {
		for _, f := range h.rec.Schema().Fields() {
			if sdk.IsReserved(f.Name) {
				continue
			}
			if err := walk(f, []string{f.Name}); err != nil {
				return nil, err
			}
		}
	}
	if k := s.cfg.Key; k != "" {
		c := byName[k]
		if c == nil || len(c.path) != 1 {
			return nil, fmt.Errorf("key %q: the records have no such top-level field", k)
		}
		if c.typ != tText && c.typ != tBigint {
			return nil, fmt.Errorf("key %q: the field is %s; a key must be a string or an integer", k, orNull(c.typ))
		}
	}
	if v := s.cfg.Version; v != "" {
		c := byName[v]
		if c == nil {
			// No record has the field: every version is null. The table's
			// column, if any, gives the type.
			c = &column{name: v, path: []string{v}, absent: true}
			cols = append(cols, c)
			byName[v] = c
		}
		if len(c.path) != 1 {
			return nil, fmt.Errorf("version %q: the records have no such top-level field (column %q holds field %q)", v, c.name, strings.Join(c.path, "."))
		}
		if !versionType(c.typ) && c.typ != "" {
			return nil, fmt.Errorf("version %q: the field is %s; a version must be a timestamp or a number (a string of RFC 3339 times can be declared with types = { %s = \"timestamp\" })", v, c.typ, v)
		}
		c.ver = true
	}
	return cols, nil
}

// versionType reports whether a column of this type (the records' or the
// table's) can hold a version: a timestamp or a number, which SQL orders.
func versionType(t string) bool {
	switch t {
	case tTimestamptz, "timestamp", tBigint, "integer", "smallint", tDouble, "real", "numeric":
		return true
	}
	return false
}

func orNull(t string) string {
	if t == "" {
		return "always null"
	}
	return t
}

func (s *Sink) declaredType(name string, path []string) (string, bool) {
	for _, k := range []string{name, strings.Join(path, ".")} {
		if t, ok := s.cfg.Types[k]; ok && t != "" {
			return tTimestamptz, true
		}
	}
	return "", false
}

func samePath(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// canon names a type from information_schema.columns.data_type.
func canon(dataType string) string {
	switch dataType {
	case "timestamp with time zone":
		return tTimestamptz
	case "timestamp without time zone":
		return "timestamp"
	case "character varying":
		return "varchar"
	case "character":
		return "char"
	}
	return dataType
}

// compatible reports whether records of type want can go into a column of
// the table's type have, and whether the column must first be widened
// (bigint to double precision).
func compatible(have, want string) (ok, widen bool) {
	if want == "" || have == want {
		return true, false
	}
	switch have {
	case tJSONB, "json":
		return true, false // any value, encoded as JSON
	case tDouble, "real", "numeric":
		return want == tBigint, false
	case "integer", "smallint":
		return want == tBigint, false
	case tBigint:
		return false, want == tDouble
	case "varchar", "char":
		return want == tText, false
	case "timestamp":
		return want == tTimestamptz, false
	}
	return false, false
}

// value kinds: what a getter hands pgx for the table's column type.
type kind int

const (
	kText kind = iota
	kInt
	kFloat
	kBool
	kTime
	kDate
	kBytes
	kJSON
)

func kindOf(tableType string, src arrow.DataType) kind {
	switch tableType {
	case tJSONB, "json":
		return kJSON
	case tBigint, "integer", "smallint":
		return kInt
	case tDouble, "real":
		return kFloat
	case "numeric":
		if src != nil && isInt(src.ID()) {
			return kInt
		}
		return kFloat
	case tBool:
		return kBool
	case tTimestamptz, "timestamp":
		return kTime
	case tDate:
		return kDate
	case tBytea:
		return kBytes
	}
	return kText
}

func isInt(id arrow.Type) bool {
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

// getter returns row i's value for a column, nil for null.
type getter func(i int) (any, error)

// binding resolves each column in one held batch.
func (s *Sink) bind(h held, cols []*column, enc *arrowjson.Encoder) ([]getter, error) {
	gets := make([]getter, len(cols))
	rec := h.rec
	for ci, c := range cols {
		if c.id {
			ids := h.ids
			gets[ci] = func(i int) (any, error) {
				if ids[i] == "" {
					return nil, nil
				}
				return ids[i], nil
			}
			continue
		}
		arr, f, parents := lookup(rec, c.path)
		if arr == nil {
			gets[ci] = func(int) (any, error) { return nil, nil }
			continue
		}
		get, err := convert(arr, f, kindOf(c.table, f.Type), c, enc)
		if err != nil {
			return nil, err
		}
		if len(parents) > 0 {
			inner := get
			get = func(i int) (any, error) {
				for _, p := range parents {
					if p.IsNull(i) {
						return nil, nil
					}
				}
				return inner(i)
			}
		}
		gets[ci] = get
	}
	return gets, nil
}

// lookup finds the array at path, with the struct arrays above it.
func lookup(rec arrow.RecordBatch, path []string) (arrow.Array, arrow.Field, []arrow.Array) {
	idx := rec.Schema().FieldIndices(path[0])
	if len(idx) == 0 {
		return nil, arrow.Field{}, nil
	}
	arr := rec.Column(idx[0])
	f := rec.Schema().Field(idx[0])
	var parents []arrow.Array
	for _, name := range path[1:] {
		st, ok := arr.(*array.Struct)
		if !ok {
			return nil, arrow.Field{}, nil
		}
		j, ok := st.DataType().(*arrow.StructType).FieldIdx(name)
		if !ok {
			return nil, arrow.Field{}, nil
		}
		parents = append(parents, arr)
		f = st.DataType().(*arrow.StructType).Field(j)
		arr = st.Field(j)
	}
	return arr, f, parents
}

type stringer interface {
	Value(int) string
}

func convert(arr arrow.Array, f arrow.Field, k kind, c *column, enc *arrowjson.Encoder) (getter, error) {
	field := strings.Join(c.path, ".")
	if arr.DataType().ID() == arrow.NULL {
		return func(int) (any, error) { return nil, nil }, nil
	}
	if k == kJSON {
		return func(i int) (any, error) {
			if arr.IsNull(i) {
				return nil, nil
			}
			return string(enc.AppendValue(nil, f, arr, i)), nil
		}, nil
	}
	bad := func() (getter, error) {
		return nil, fmt.Errorf("column %q: the table has %s, the records have %s; change the column or the data (nothing was loaded)", c.name, c.table, orNull(sqlType(f)))
	}
	nullable := func(g func(i int) (any, error)) getter {
		return func(i int) (any, error) {
			if arr.IsNull(i) {
				return nil, nil
			}
			return g(i)
		}
	}
	switch k {
	case kText:
		if sv, ok := arr.(stringer); ok && sqlType(f) == tText {
			return nullable(func(i int) (any, error) { return sv.Value(i), nil }), nil
		}
		if sqlType(f) == tText {
			return nullable(func(i int) (any, error) { return arr.ValueStr(i), nil }), nil
		}
		return bad()
	case kInt:
		switch a := arr.(type) {
		case *array.Int64:
			return nullable(func(i int) (any, error) { return a.Value(i), nil }), nil
		case *array.Int32:
			return nullable(func(i int) (any, error) { return int64(a.Value(i)), nil }), nil
		case *array.Int16:
			return nullable(func(i int) (any, error) { return int64(a.Value(i)), nil }), nil
		case *array.Int8:
			return nullable(func(i int) (any, error) { return int64(a.Value(i)), nil }), nil
		case *array.Uint32:
			return nullable(func(i int) (any, error) { return int64(a.Value(i)), nil }), nil
		case *array.Uint16:
			return nullable(func(i int) (any, error) { return int64(a.Value(i)), nil }), nil
		case *array.Uint8:
			return nullable(func(i int) (any, error) { return int64(a.Value(i)), nil }), nil
		case *array.Uint64:
			return nullable(func(i int) (any, error) {
				v := a.Value(i)
				if v > math.MaxInt64 {
					return nil, fmt.Errorf("field %q: %d is beyond bigint", field, v)
				}
				return int64(v), nil
			}), nil
		case *array.Float64:
			if c.table == "numeric" {
				return nullable(func(i int) (any, error) { return a.Value(i), nil }), nil
			}
		}
		return bad()
	case kFloat:
		switch a := arr.(type) {
		case *array.Float64:
			return nullable(func(i int) (any, error) { return a.Value(i), nil }), nil
		case *array.Float32:
			return nullable(func(i int) (any, error) { return float64(a.Value(i)), nil }), nil
		case *array.Float16:
			return nullable(func(i int) (any, error) { return float64(a.Value(i).Float32()), nil }), nil
		}
		if isInt(arr.DataType().ID()) {
			ig, err := convert(arr, f, kInt, c, enc)
			if err != nil {
				return nil, err
			}
			return func(i int) (any, error) {
				v, err := ig(i)
				if v == nil || err != nil {
					return v, err
				}
				return float64(v.(int64)), nil
			}, nil
		}
		return bad()
	case kBool:
		if a, ok := arr.(*array.Boolean); ok {
			return nullable(func(i int) (any, error) { return a.Value(i), nil }), nil
		}
		return bad()
	case kTime:
		switch a := arr.(type) {
		case *array.Timestamp:
			unit := a.DataType().(*arrow.TimestampType).Unit
			return nullable(func(i int) (any, error) { return a.Value(i).ToTime(unit), nil }), nil
		case stringer:
			return nullable(func(i int) (any, error) {
				v := a.Value(i)
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return nil, &timeError{field: field, value: v}
				}
				return t, nil
			}), nil
		}
		return bad()
	case kDate:
		switch a := arr.(type) {
		case *array.Date32:
			return nullable(func(i int) (any, error) { return a.Value(i).ToTime(), nil }), nil
		case *array.Date64:
			return nullable(func(i int) (any, error) { return a.Value(i).ToTime(), nil }), nil
		}
		return bad()
	case kBytes:
		if a, ok := arr.(interface{ Value(int) []byte }); ok {
			return nullable(func(i int) (any, error) { return a.Value(i), nil }), nil
		}
		return bad()
	}
	return bad()
}

// timeError is a string that is not RFC 3339 in a timestamp field; the
// loader adds the record id.
type timeError struct {
	field, value string
}

func (e *timeError) Error() string {
	v := e.value
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return fmt.Sprintf("field %q: %s is not an RFC 3339 timestamp such as 2024-05-01T12:00:00Z (nothing was loaded)", e.field, strconv.Quote(v))
}
