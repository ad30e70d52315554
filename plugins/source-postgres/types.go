package sourcepostgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// kind is how a column's binary values become Arrow values.
type kind uint8

const (
	kBool kind = iota
	kInt2
	kInt4
	kInt8
	kFloat4
	kFloat8
	kDecimal     // numeric(p,s) with 0 <= s <= p <= 38: decimal128(p, s)
	kNumericText // any other numeric: its exact text, utf8
	kText        // text, varchar, char(n), name, citext, enums
	kChar        // "char": one byte
	kBytea
	kTimestamptz
	kTimestamp
	kDate
	kUUID
	kJSON  // json: text
	kJSONB // jsonb: a version byte, then text
	kList
)

// pgType is a column's PostgreSQL type and how it maps.
type pgType struct {
	kind      kind
	oid       uint32
	precision int32   // kDecimal
	scale     int32   // kDecimal
	elem      *pgType // kList
}

// Offsets between PostgreSQL's epoch (2000-01-01) and Unix's.
const (
	pgEpochMicros = 946684800 * 1000000
	pgEpochDays   = 10957
)

var scalarKinds = map[uint32]kind{
	pgtype.BoolOID:        kBool,
	pgtype.Int2OID:        kInt2,
	pgtype.Int4OID:        kInt4,
	pgtype.Int8OID:        kInt8,
	pgtype.Float4OID:      kFloat4,
	pgtype.Float8OID:      kFloat8,
	pgtype.NumericOID:     kNumericText, // refined by the type modifier
	pgtype.TextOID:        kText,
	pgtype.VarcharOID:     kText,
	pgtype.BPCharOID:      kText,
	pgtype.NameOID:        kText,
	pgtype.QCharOID:       kChar,
	pgtype.ByteaOID:       kBytea,
	pgtype.TimestamptzOID: kTimestamptz,
	pgtype.TimestampOID:   kTimestamp,
	pgtype.DateOID:        kDate,
	pgtype.UUIDOID:        kUUID,
	pgtype.JSONOID:        kJSON,
	pgtype.JSONBOID:       kJSONB,
}

var arrayElems = map[uint32]uint32{
	pgtype.BoolArrayOID:        pgtype.BoolOID,
	pgtype.Int2ArrayOID:        pgtype.Int2OID,
	pgtype.Int4ArrayOID:        pgtype.Int4OID,
	pgtype.Int8ArrayOID:        pgtype.Int8OID,
	pgtype.Float4ArrayOID:      pgtype.Float4OID,
	pgtype.Float8ArrayOID:      pgtype.Float8OID,
	pgtype.NumericArrayOID:     pgtype.NumericOID,
	pgtype.TextArrayOID:        pgtype.TextOID,
	pgtype.VarcharArrayOID:     pgtype.VarcharOID,
	pgtype.BPCharArrayOID:      pgtype.BPCharOID,
	pgtype.NameArrayOID:        pgtype.NameOID,
	pgtype.QCharArrayOID:       pgtype.QCharOID,
	pgtype.ByteaArrayOID:       pgtype.ByteaOID,
	pgtype.TimestamptzArrayOID: pgtype.TimestamptzOID,
	pgtype.TimestampArrayOID:   pgtype.TimestampOID,
	pgtype.DateArrayOID:        pgtype.DateOID,
	pgtype.UUIDArrayOID:        pgtype.UUIDOID,
	pgtype.JSONArrayOID:        pgtype.JSONOID,
	pgtype.JSONBArrayOID:       pgtype.JSONBOID,
}

// errUnmapped says a type has no Arrow mapping; the caller names it.
var errUnmapped = errors.New("no Arrow mapping")

// resolveType maps a column's type. Types outside the built-in table
// (enums, citext, arrays of them) are looked up in pg_type.
func resolveType(ctx context.Context, conn *pgx.Conn, oid uint32, typmod int32) (*pgType, error) {
	if k, ok := scalarKinds[oid]; ok {
		t := &pgType{kind: k, oid: oid}
		if k == kNumericText && typmod >= 4 {
			// typmod is ((precision << 16) | scale) + 4; scale is 11-bit
			// signed since PostgreSQL 15 (numeric(5,-2), numeric(3,5)).
			p := (typmod - 4) >> 16 & 0xffff
			sc := (((typmod - 4) & 0x7ff) ^ 1024) - 1024
			if p >= 1 && p <= 38 && sc >= 0 && sc <= p {
				t.kind, t.precision, t.scale = kDecimal, p, sc
			}
		}
		return t, nil
	}
	if elem, ok := arrayElems[oid]; ok {
		e, err := resolveType(ctx, conn, elem, typmod)
		if err != nil {
			return nil, err
		}
		return &pgType{kind: kList, oid: oid, elem: e}, nil
	}
	var typtype, category string
	var name string
	var elem, base uint32
	var basemod int32
	err := conn.QueryRow(ctx, `SELECT typtype::text, typcategory::text, typname::text, typelem, typbasetype, typtypmod FROM pg_catalog.pg_type WHERE oid = $1`, oid).Scan(&typtype, &category, &name, &elem, &base, &basemod)
	if err != nil {
		return nil, err
	}
	switch {
	case typtype == "d" && base != 0:
		// A domain (as an array element: a column's domain is described
		// as its base type) has its base type's binary format.
		if basemod == -1 {
			basemod = typmod
		}
		return resolveType(ctx, conn, base, basemod)
	case typtype == "e", typtype == "b" && name == "citext":
		return &pgType{kind: kText, oid: oid}, nil
	case category == "A" && elem != 0:
		e, err := resolveType(ctx, conn, elem, typmod)
		if err != nil {
			return nil, err
		}
		return &pgType{kind: kList, oid: oid, elem: e}, nil
	}
	return nil, errUnmapped
}

// arrowType is the Arrow type of a column of type t (json as its text).
func (t *pgType) arrowType() arrow.DataType {
	switch t.kind {
	case kBool:
		return arrow.FixedWidthTypes.Boolean
	case kInt2:
		return arrow.PrimitiveTypes.Int16
	case kInt4:
		return arrow.PrimitiveTypes.Int32
	case kInt8:
		return arrow.PrimitiveTypes.Int64
	case kFloat4:
		return arrow.PrimitiveTypes.Float32
	case kFloat8:
		return arrow.PrimitiveTypes.Float64
	case kDecimal:
		return &arrow.Decimal128Type{Precision: t.precision, Scale: t.scale}
	case kBytea:
		return arrow.BinaryTypes.Binary
	case kTimestamptz:
		return &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	case kTimestamp:
		return &arrow.TimestampType{Unit: arrow.Microsecond}
	case kDate:
		return arrow.FixedWidthTypes.Date32
	case kList:
		return arrow.ListOfField(t.elem.field("item"))
	default: // text, numeric text, uuid, json
		return arrow.BinaryTypes.String
	}
}

func (t *pgType) isJSON() bool { return t.kind == kJSON || t.kind == kJSONB }

// field is the Arrow field of a column of type t holding raw JSON text
// where t is json.
func (t *pgType) field(name string) arrow.Field {
	f := arrow.Field{Name: name, Type: t.arrowType(), Nullable: true}
	if t.isJSON() {
		f.Metadata = arrow.NewMetadata([]string{arrowjson.MetadataKey}, []string{arrowjson.MetadataRaw})
	}
	return f
}

// orderable kinds may be the cursor; keyable ones the key.
func (t *pgType) cursorOK() bool {
	switch t.kind {
	case kInt2, kInt4, kInt8, kFloat4, kFloat8, kDecimal, kNumericText, kTimestamptz, kTimestamp, kDate:
		return true
	}
	return false
}

func (t *pgType) keyOK() bool {
	switch t.kind {
	case kInt2, kInt4, kInt8, kDecimal, kNumericText, kText, kUUID, kTimestamptz, kTimestamp, kDate:
		return t.oid != pgtype.QCharOID
	}
	return false
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func wrongLength(what string, n int) error {
	return fmt.Errorf("a %s value of %d bytes (want the binary format's length)", what, n)
}

func timestampMicros(v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, wrongLength("timestamp", len(v))
	}
	us := int64(be64(v))
	switch {
	case us == math.MaxInt64:
		return 0, errors.New("timestamp 'infinity' has no Arrow value; map it to NULL or a date in a query (NULLIF(col, 'infinity'))")
	case us == math.MinInt64:
		return 0, errors.New("timestamp '-infinity' has no Arrow value; map it to NULL or a date in a query (NULLIF(col, '-infinity'))")
	case us > math.MaxInt64-pgEpochMicros:
		return 0, errors.New("a timestamp beyond the range of Arrow's timestamp[us]")
	}
	return us + pgEpochMicros, nil
}

func dateDays(v []byte) (int32, error) {
	if len(v) != 4 {
		return 0, wrongLength("date", len(v))
	}
	d := int32(be32(v))
	switch {
	case d == math.MaxInt32:
		return 0, errors.New("date 'infinity' has no Arrow value; map it to NULL in a query (NULLIF(col, 'infinity'))")
	case d == math.MinInt32:
		return 0, errors.New("date '-infinity' has no Arrow value; map it to NULL in a query (NULLIF(col, '-infinity'))")
	case d > math.MaxInt32-pgEpochDays:
		return 0, errors.New("a date beyond the range of Arrow's date32")
	}
	return d + pgEpochDays, nil
}

const hexDigits = "0123456789abcdef"

// appendUUID appends the canonical form of a 16-byte uuid.
func appendUUID(dst, v []byte) []byte {
	for i, c := range v {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return dst
}

// jsonText is the JSON text of a json or jsonb binary value.
func jsonText(v []byte, jsonb bool) ([]byte, error) {
	if !jsonb {
		return v, nil
	}
	if len(v) == 0 || v[0] != 1 {
		return nil, errors.New("a jsonb value in an unknown binary format version")
	}
	return v[1:], nil
}

// compactJSON appends src, valid JSON text, without the whitespace between
// tokens: jsonb prints `{"a": 1, "b": [1, 2]}`, and a json value keeps
// whatever newlines and indentation it was written with. (About 1 ns a
// byte; eight-bytes-at-a-time scanning measured no faster on such short
// tokens.)
func compactJSON(dst, src []byte) []byte {
	start := 0
	for i := 0; i < len(src); i++ {
		switch src[i] {
		case '"':
			// Jump to the closing quote: one not escaped by an odd number
			// of backslashes.
			j := i + 1
			for {
				k := bytes.IndexByte(src[j:], '"')
				if k < 0 {
					return append(dst, src[start:]...)
				}
				j += k
				bs := 0
				for m := j - 1; m > i && src[m] == '\\'; m-- {
					bs++
				}
				if bs%2 == 0 {
					break
				}
				j++
			}
			i = j
		case ' ', '\t', '\n', '\r':
			dst = append(dst, src[start:i]...)
			start = i + 1
		}
	}
	return append(dst, src[start:]...)
}

// describeError names a column whose type has no mapping.
func describeError(ctx context.Context, conn *pgx.Conn, fd pgconn.FieldDescription) error {
	var name string
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.format_type($1::oid, NULLIF($2::int4, -1))`, fd.DataTypeOID, fd.TypeModifier).Scan(&name); err != nil || name == "" {
		name = "oid " + strconv.FormatUint(uint64(fd.DataTypeOID), 10)
	}
	return &typeError{column: fd.Name, typ: name}
}

type typeError struct{ column, typ string }

func (e *typeError) Error() string {
	n := sqlName(e.column)
	return fmt.Sprintf(`column %q has type %s, which has no Arrow mapping; convert it in a query, e.g. query = "SELECT …, %s::text AS %s FROM …" (see the type table in the plugin's README)`, e.column, e.typ, n, n)
}

// sqlName is a column name as SQL text: as it is when it needs no quotes.
func sqlName(s string) string {
	if simpleName.MatchString(s) {
		return s
	}
	return quoteIdent(s)
}

var simpleName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// column is one result column: its name, type and buffer.
type column struct {
	name string
	typ  *pgType
	// structJSON decodes this json column into nested fields (json =
	// "struct"); it has no buffer then.
	structJSON bool
	buf        colBuf
}
