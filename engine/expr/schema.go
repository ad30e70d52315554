package expr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/expr-lang/expr/types"

	"github.com/pipelinehq/pipeline/sdk"
)

// rawJSONKey and rawJSONValue mark a utf8 field whose strings hold JSON
// documents (a field of no fixed shape; sdk/arrowjson writes them).
// Expressions see the decoded value, typed as any.
const (
	rawJSONKey   = "pipeline.json"
	rawJSONValue = "raw"
)

var (
	timeType     = types.TypeOf(time.Time{})
	durationType = types.TypeOf(time.Duration(0))
)

// isRaw reports whether f carries raw JSON text.
func isRaw(f arrow.Field) bool {
	if !isStringType(f.Type) {
		return false
	}
	i := f.Metadata.FindKey(rawJSONKey)
	return i >= 0 && f.Metadata.Values()[i] == rawJSONValue
}

func isStringType(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW:
		return true
	}
	return false
}

// envType is the expr type environment for the visible columns of schema.
func envType(schema *arrow.Schema) types.Map {
	env := types.Map{}
	for _, f := range schema.Fields() {
		if sdk.IsReserved(f.Name) || f.Name == types.Extra {
			continue
		}
		if _, dup := env[f.Name]; dup {
			continue // the first of duplicate names wins, as in field lookups
		}
		env[f.Name] = fieldType(f)
	}
	return env
}

func fieldType(f arrow.Field) types.Type {
	if isRaw(f) {
		return types.Any
	}
	return dataType(f.Type)
}

func dataType(dt arrow.DataType) types.Type {
	switch dt.ID() {
	case arrow.BOOL:
		return types.Bool
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return types.Int
	case arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64,
		arrow.DECIMAL32, arrow.DECIMAL64, arrow.DECIMAL128, arrow.DECIMAL256:
		return types.Float64
	case arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW,
		arrow.BINARY, arrow.LARGE_BINARY, arrow.BINARY_VIEW, arrow.FIXED_SIZE_BINARY:
		return types.String
	case arrow.TIMESTAMP, arrow.DATE32, arrow.DATE64:
		return timeType
	case arrow.DURATION:
		return durationType
	case arrow.STRUCT:
		st := dt.(*arrow.StructType)
		m := types.Map{}
		for _, f := range st.Fields() {
			if _, dup := m[f.Name]; dup || f.Name == types.Extra {
				continue
			}
			m[f.Name] = fieldType(f)
		}
		return m
	case arrow.MAP:
		return types.Map{types.Extra: fieldType(dt.(*arrow.MapType).ItemField())}
	case arrow.LIST, arrow.LARGE_LIST, arrow.FIXED_SIZE_LIST, arrow.LIST_VIEW, arrow.LARGE_LIST_VIEW:
		return types.Array(fieldType(dt.(arrow.ListLikeType).ElemField()))
	case arrow.DICTIONARY:
		return dataType(dt.(*arrow.DictionaryType).ValueType)
	}
	return types.Any
}

// field resolves a dotted path against schema. It returns the column and
// struct child indices, and the leaf field. n is how many names of path it
// could follow: a path can go on past a column that is not a struct (a
// method, a map key), and that tail is not part of the column path.
func resolvePath(schema *arrow.Schema, path []string) (idx []int, leaf arrow.Field, n int) {
	if len(path) == 0 {
		return nil, arrow.Field{}, 0
	}
	top := schema.FieldIndices(path[0])
	if len(top) == 0 || sdk.IsReserved(path[0]) {
		return nil, arrow.Field{}, 0
	}
	idx = []int{top[0]}
	leaf = schema.Field(top[0])
	for _, name := range path[1:] {
		st, ok := leaf.Type.(*arrow.StructType)
		if !ok || isRaw(leaf) {
			break
		}
		i, ok := st.FieldIdx(name)
		if !ok {
			break
		}
		idx = append(idx, i)
		leaf = st.Field(i)
	}
	return idx, leaf, len(idx)
}

// valueAt converts row i of arr into the value an expression sees: nil for
// null, int, float64, string, bool, time.Time, time.Duration,
// map[string]any for structs and maps, []any for lists, and for raw JSON
// fields the decoded document.
func valueAt(arr arrow.Array, i int, raw bool) (any, error) {
	if arr.IsNull(i) {
		return nil, nil
	}
	switch a := arr.(type) {
	case *array.Boolean:
		return a.Value(i), nil
	case *array.Int8:
		return int(a.Value(i)), nil
	case *array.Int16:
		return int(a.Value(i)), nil
	case *array.Int32:
		return int(a.Value(i)), nil
	case *array.Int64:
		return int(a.Value(i)), nil
	case *array.Uint8:
		return int(a.Value(i)), nil
	case *array.Uint16:
		return int(a.Value(i)), nil
	case *array.Uint32:
		return int(a.Value(i)), nil
	case *array.Uint64:
		v := a.Value(i)
		if v > math.MaxInt64 {
			// int would wrap, and expr's operators convert uint64 to int:
			// float keeps comparisons right at the cost of digits.
			return float64(v), nil
		}
		return int(v), nil
	case *array.Float16:
		return float64(a.Value(i).Float32()), nil
	case *array.Float32:
		return float64(a.Value(i)), nil
	case *array.Float64:
		return a.Value(i), nil
	case *array.Decimal128:
		return a.Value(i).ToFloat64(a.DataType().(*arrow.Decimal128Type).Scale), nil
	case *array.Decimal256:
		return a.Value(i).ToFloat64(a.DataType().(*arrow.Decimal256Type).Scale), nil
	case *array.String:
		return stringValue(a.Value(i), raw)
	case *array.LargeString:
		return stringValue(a.Value(i), raw)
	case *array.StringView:
		return stringValue(a.Value(i), raw)
	case *array.Binary:
		return string(a.Value(i)), nil
	case *array.LargeBinary:
		return string(a.Value(i)), nil
	case *array.BinaryView:
		return string(a.Value(i)), nil
	case *array.FixedSizeBinary:
		return string(a.Value(i)), nil
	case *array.Timestamp:
		return a.Value(i).ToTime(a.DataType().(*arrow.TimestampType).Unit), nil
	case *array.Date32:
		return a.Value(i).ToTime(), nil
	case *array.Date64:
		return a.Value(i).ToTime(), nil
	case *array.Duration:
		return time.Duration(a.Value(i)) * a.DataType().(*arrow.DurationType).Unit.Multiplier(), nil
	case *array.Struct:
		st := a.DataType().(*arrow.StructType)
		m := make(map[string]any, a.NumField())
		for k := 0; k < a.NumField(); k++ {
			f := st.Field(k)
			if _, dup := m[f.Name]; dup {
				continue
			}
			v, err := valueAt(a.Field(k), i, isRaw(f))
			if err != nil {
				return nil, err
			}
			m[f.Name] = v
		}
		return m, nil
	case *array.Map:
		start, end := a.ValueOffsets(i)
		itemRaw := isRaw(a.DataType().(*arrow.MapType).ItemField())
		m := make(map[string]any, end-start)
		for j := int(start); j < int(end); j++ {
			k, err := valueAt(a.Keys(), j, false)
			if err != nil {
				return nil, err
			}
			v, err := valueAt(a.Items(), j, itemRaw)
			if err != nil {
				return nil, err
			}
			m[fmt.Sprint(k)] = v
		}
		return m, nil
	case array.ListLike:
		start, end := a.ValueOffsets(i)
		elemRaw := false
		if lt, ok := a.DataType().(arrow.ListLikeType); ok {
			elemRaw = isRaw(lt.ElemField())
		}
		values := a.ListValues()
		out := make([]any, 0, end-start)
		for j := int(start); j < int(end); j++ {
			v, err := valueAt(values, j, elemRaw)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case *array.Dictionary:
		return valueAt(a.Dictionary(), a.GetValueIndex(i), raw)
	case *array.Null:
		return nil, nil
	}
	return arr.GetOneForMarshal(i), nil
}

func stringValue(s string, raw bool) (any, error) {
	if !raw {
		return s, nil
	}
	return decodeJSON(s)
}

// decodeJSON decodes a raw JSON field. Numbers that are integers become int
// and the others float64, as for typed columns.
func decodeJSON(s string) (any, error) {
	if s == "" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("raw JSON field: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("raw JSON field: more than one JSON value")
	}
	return fromJSONNumbers(v), nil
}

func fromJSONNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return int(i)
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return string(x)
		}
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = fromJSONNumbers(e)
		}
	case []any:
		for k, e := range x {
			x[k] = fromJSONNumbers(e)
		}
	}
	return v
}

// typeName names v's type as expr does in its messages.
func typeName(v any) string {
	if v == nil {
		return "nil"
	}
	return reflect.TypeOf(v).String()
}
