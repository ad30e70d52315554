package sinkpostgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/jackc/pgx/v5"

	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// COPY's binary format, written straight from the Arrow columns: a header,
// then per row the field count and each field as its length (-1 for null)
// and its bytes in the type's binary send format, then a trailer. pgx's
// CopyFrom does the same through a []any per row and its type map; writing
// it here costs about half the sink's CPU (no boxing, no allocation per
// value, JSON encoded straight into the COPY stream). Only the column types
// below are written here; a table with any other type (numeric, real, uuid,
// ...) is loaded through pgx, which knows them all.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// binaryCopyable reports whether every column's table type is one the
// binary encoder writes.
func binaryCopyable(cols []*column) bool {
	for _, c := range cols {
		switch c.table {
		case tText, "varchar", tBigint, "integer", "smallint", tDouble, tBool,
			tTimestamptz, "timestamp", tDate, tBytea, tJSONB, "json":
		default:
			return false
		}
	}
	return true
}

// copyBinary COPYs the source's rows into table (columns names) in the
// binary format.
func copyBinary(ctx context.Context, tx pgx.Tx, table string, names []string, src *copySource) (int64, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = ident(n)
	}
	sql := "COPY " + table + " (" + strings.Join(quoted, ", ") + ") FROM STDIN (FORMAT binary)"
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, &binReader{c: src}, sql)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// appender appends row i's field (length and bytes) to b.
type appender func(b []byte, i int) ([]byte, error)

// binReader is the COPY stream: rows are encoded as pgconn reads.
type binReader struct {
	c       *copySource // the rows, their order and what to skip
	apps    []appender  // the current batch's columns
	buf     []byte
	off     int
	started bool
	done    bool
}

func (r *binReader) Read(p []byte) (int, error) {
	for r.off == len(r.buf) {
		if r.done {
			return 0, io.EOF
		}
		r.buf, r.off = r.buf[:0], 0
		if !r.started {
			r.buf = append(r.buf, copyHeader...)
			r.started = true
		}
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// fill encodes rows into buf until it holds 64 KiB or the rows end.
func (r *binReader) fill() error {
	c := r.c
	for len(r.buf) < 1<<16 {
		if c.b >= len(c.s.held) {
			r.buf = append(r.buf, 0xff, 0xff)
			r.done = true
			return nil
		}
		h := c.s.held[c.b]
		if r.apps == nil {
			// A fresh encoder per batch keeps it from holding old arrays.
			c.enc = arrowjson.NewEncoder()
			apps, err := c.s.bindBinary(h, c.cols, c.enc)
			if err != nil {
				c.err = err
				return err
			}
			r.apps = apps
		}
		c.i++
		if c.i >= len(h.ids) {
			c.b, c.i, r.apps = c.b+1, -1, nil
			continue
		}
		if c.skip != nil && c.skip[c.b][c.i] {
			continue
		}
		fields := len(r.apps)
		if c.seq {
			fields++
		}
		r.buf = binary.BigEndian.AppendUint16(r.buf, uint16(fields))
		for _, app := range r.apps {
			var err error
			if r.buf, err = app(r.buf, c.i); err != nil {
				c.err = c.recordError(err)
				return c.err
			}
		}
		if c.seq {
			r.buf = appendInt64(r.buf, c.n)
		}
		c.n++
	}
	return nil
}

func appendNull(b []byte) []byte { return append(b, 0xff, 0xff, 0xff, 0xff) }

func appendText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendInt64(b []byte, v int64) []byte {
	b = append(b, 0, 0, 0, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

func nullAppender(b []byte, _ int) ([]byte, error) { return appendNull(b), nil }

// bindBinary resolves each column of one held batch to its appender.
func (s *Sink) bindBinary(h held, cols []*column, enc *arrowjson.Encoder) ([]appender, error) {
	apps := make([]appender, len(cols))
	for ci, c := range cols {
		if c.id {
			ids := h.ids
			apps[ci] = func(b []byte, i int) ([]byte, error) {
				if ids[i] == "" {
					return appendNull(b), nil
				}
				return appendText(b, ids[i]), nil
			}
			continue
		}
		arr, f, parents := lookup(h.rec, c.path)
		if arr == nil || arr.DataType().ID() == arrow.NULL {
			apps[ci] = nullAppender
			continue
		}
		// convert says whether the records' type can go into the
		// column, with the same error as the pgx path.
		if _, err := convert(arr, f, kindOf(c.table, f.Type), c, enc); err != nil {
			return nil, err
		}
		app, err := binaryAppender(arr, f, c, enc)
		if err != nil {
			return nil, err
		}
		apps[ci] = func(b []byte, i int) ([]byte, error) {
			if arr.IsNull(i) {
				return appendNull(b), nil
			}
			for _, p := range parents {
				if p.IsNull(i) {
					return appendNull(b), nil
				}
			}
			return app(b, i)
		}
	}
	return apps, nil
}

// microsFromUnixToY2K is PostgreSQL's epoch for timestamps, 2000-01-01.
const microsFromUnixToY2K = 946684800000000

// binaryAppender encodes a non-null value of arr for the column's table
// type; convert has checked that the two go together.
func binaryAppender(arr arrow.Array, f arrow.Field, c *column, enc *arrowjson.Encoder) (appender, error) {
	field := strings.Join(c.path, ".")
	switch c.table {
	case tJSONB, "json":
		version := c.table == tJSONB
		return func(b []byte, i int) ([]byte, error) {
			at := len(b)
			b = append(b, 0, 0, 0, 0)
			if version {
				b = append(b, 1)
			}
			b = enc.AppendValue(b, f, arr, i)
			binary.BigEndian.PutUint32(b[at:], uint32(len(b)-at-4))
			return b, nil
		}, nil
	case tText, "varchar":
		if sv, ok := arr.(stringer); ok {
			return func(b []byte, i int) ([]byte, error) { return appendText(b, sv.Value(i)), nil }, nil
		}
		return func(b []byte, i int) ([]byte, error) { return appendText(b, arr.ValueStr(i)), nil }, nil
	case tBigint, "integer", "smallint":
		get, err := int64Getter(arr, field)
		if err != nil {
			return nil, err
		}
		lo, hi, size := int64(math.MinInt64), int64(math.MaxInt64), 8
		switch c.table {
		case "integer":
			lo, hi, size = math.MinInt32, math.MaxInt32, 4
		case "smallint":
			lo, hi, size = math.MinInt16, math.MaxInt16, 2
		}
		return func(b []byte, i int) ([]byte, error) {
			v, err := get(i)
			if err != nil {
				return b, err
			}
			if v < lo || v > hi {
				return b, fmt.Errorf("field %q: %d is beyond the column's type %s", field, v, c.table)
			}
			switch size {
			case 4:
				b = append(b, 0, 0, 0, 4)
				return binary.BigEndian.AppendUint32(b, uint32(int32(v))), nil
			case 2:
				b = append(b, 0, 0, 0, 2)
				return binary.BigEndian.AppendUint16(b, uint16(int16(v))), nil
			}
			return appendInt64(b, v), nil
		}, nil
	case tDouble:
		var get func(i int) (float64, error)
		switch a := arr.(type) {
		case *array.Float64:
			get = func(i int) (float64, error) { return a.Value(i), nil }
		case *array.Float32:
			get = func(i int) (float64, error) { return float64(a.Value(i)), nil }
		case *array.Float16:
			get = func(i int) (float64, error) { return float64(a.Value(i).Float32()), nil }
		default:
			ig, err := int64Getter(arr, field)
			if err != nil {
				return nil, err
			}
			get = func(i int) (float64, error) {
				v, err := ig(i)
				return float64(v), err
			}
		}
		return func(b []byte, i int) ([]byte, error) {
			v, err := get(i)
			if err != nil {
				return b, err
			}
			b = append(b, 0, 0, 0, 8)
			return binary.BigEndian.AppendUint64(b, math.Float64bits(v)), nil
		}, nil
	case tBool:
		a := arr.(*array.Boolean)
		return func(b []byte, i int) ([]byte, error) {
			v := byte(0)
			if a.Value(i) {
				v = 1
			}
			return append(b, 0, 0, 0, 1, v), nil
		}, nil
	case tTimestamptz, "timestamp":
		var get func(i int) (time.Time, error)
		switch a := arr.(type) {
		case *array.Timestamp:
			unit := a.DataType().(*arrow.TimestampType).Unit
			get = func(i int) (time.Time, error) { return a.Value(i).ToTime(unit), nil }
		case stringer:
			get = func(i int) (time.Time, error) {
				v := a.Value(i)
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return t, &timeError{field: field, value: v}
				}
				return t, nil
			}
		default:
			return nil, fmt.Errorf("column %q: no binary encoding of %s as %s", c.name, arr.DataType(), c.table)
		}
		wall := c.table == "timestamp"
		return func(b []byte, i int) ([]byte, error) {
			t, err := get(i)
			if err != nil {
				return b, err
			}
			if wall && t.Location() != time.UTC {
				// timestamp without time zone keeps the wall clock, as pgx does.
				t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
			}
			return appendInt64(b, t.Unix()*1_000_000+int64(t.Nanosecond())/1000-microsFromUnixToY2K), nil
		}, nil
	case tDate:
		var days func(i int) int64
		switch a := arr.(type) {
		case *array.Date32:
			days = func(i int) int64 { return int64(a.Value(i)) - 10957 } // 1970-01-01 to 2000-01-01
		case *array.Date64:
			days = func(i int) int64 {
				t := a.Value(i).ToTime()
				day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).Unix()
				return (day - microsFromUnixToY2K/1_000_000) / 86400
			}
		default:
			return nil, fmt.Errorf("column %q: no binary encoding of %s as %s", c.name, arr.DataType(), c.table)
		}
		return func(b []byte, i int) ([]byte, error) {
			b = append(b, 0, 0, 0, 4)
			return binary.BigEndian.AppendUint32(b, uint32(int32(days(i)))), nil
		}, nil
	case tBytea:
		a, ok := arr.(interface{ Value(int) []byte })
		if !ok {
			return nil, fmt.Errorf("column %q: no binary encoding of %s as %s", c.name, arr.DataType(), c.table)
		}
		return func(b []byte, i int) ([]byte, error) {
			v := a.Value(i)
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			return append(b, v...), nil
		}, nil
	}
	return nil, fmt.Errorf("column %q: no binary encoding for %s", c.name, c.table)
}

// int64Getter reads an integer array's values as int64.
func int64Getter(arr arrow.Array, field string) (func(i int) (int64, error), error) {
	switch a := arr.(type) {
	case *array.Int64:
		return func(i int) (int64, error) { return a.Value(i), nil }, nil
	case *array.Int32:
		return func(i int) (int64, error) { return int64(a.Value(i)), nil }, nil
	case *array.Int16:
		return func(i int) (int64, error) { return int64(a.Value(i)), nil }, nil
	case *array.Int8:
		return func(i int) (int64, error) { return int64(a.Value(i)), nil }, nil
	case *array.Uint32:
		return func(i int) (int64, error) { return int64(a.Value(i)), nil }, nil
	case *array.Uint16:
		return func(i int) (int64, error) { return int64(a.Value(i)), nil }, nil
	case *array.Uint8:
		return func(i int) (int64, error) { return int64(a.Value(i)), nil }, nil
	case *array.Uint64:
		return func(i int) (int64, error) {
			v := a.Value(i)
			if v > math.MaxInt64 {
				return 0, fmt.Errorf("field %q: %d is beyond bigint", field, v)
			}
			return int64(v), nil
		}, nil
	}
	return nil, fmt.Errorf("field %q: %s is not an integer", field, arr.DataType())
}
