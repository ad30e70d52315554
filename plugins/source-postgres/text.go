package sourcepostgres

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// appendText appends the text of a binary cursor or key value, in a form
// PostgreSQL parses back to exactly the same value: all digits of a numeric,
// microseconds of a timestamp, the shortest exact form of a float.
func appendText(t *pgType, dst, v []byte) ([]byte, error) {
	switch t.kind {
	case kInt2:
		if len(v) != 2 {
			return dst, wrongLength("smallint", len(v))
		}
		return strconv.AppendInt(dst, int64(int16(be16(v))), 10), nil
	case kInt4:
		if len(v) != 4 {
			return dst, wrongLength("integer", len(v))
		}
		return strconv.AppendInt(dst, int64(int32(be32(v))), 10), nil
	case kInt8:
		if len(v) != 8 {
			return dst, wrongLength("bigint", len(v))
		}
		return strconv.AppendInt(dst, int64(be64(v)), 10), nil
	case kFloat4:
		if len(v) != 4 {
			return dst, wrongLength("real", len(v))
		}
		return appendFloat(dst, float64(math.Float32frombits(be32(v))), 32), nil
	case kFloat8:
		if len(v) != 8 {
			return dst, wrongLength("double precision", len(v))
		}
		return appendFloat(dst, math.Float64frombits(be64(v)), 64), nil
	case kDecimal, kNumericText:
		return appendNumericText(dst, v)
	case kText:
		return append(dst, v...), nil
	case kUUID:
		if len(v) != 16 {
			return dst, wrongLength("uuid", len(v))
		}
		return appendUUID(dst, v), nil
	case kTimestamptz, kTimestamp:
		if len(v) != 8 {
			return dst, wrongLength("timestamp", len(v))
		}
		us := int64(be64(v))
		switch us {
		case math.MaxInt64:
			return append(dst, "infinity"...), nil
		case math.MinInt64:
			return append(dst, "-infinity"...), nil
		}
		// Split into days and microseconds of the day, so that the whole
		// range (4713 BC to 294276 AD) is formatted without overflow.
		days, rest := us/86400e6, us%86400e6
		if rest < 0 {
			days, rest = days-1, rest+86400e6
		}
		dst = appendDate(dst, days)
		dst = append(dst, ' ')
		dst = time.UnixMicro(rest).UTC().AppendFormat(dst, "15:04:05.000000")
		if t.kind == kTimestamptz {
			dst = append(dst, "+00"...)
		}
		return appendEra(dst, days), nil
	case kDate:
		if len(v) != 4 {
			return dst, wrongLength("date", len(v))
		}
		d := int32(be32(v))
		switch d {
		case math.MaxInt32:
			return append(dst, "infinity"...), nil
		case math.MinInt32:
			return append(dst, "-infinity"...), nil
		}
		return appendEra(appendDate(dst, int64(d)), int64(d)), nil
	}
	return dst, fmt.Errorf("no text form for kind %d", t.kind)
}

// appendDate appends the date days after 2000-01-01 as YYYY-MM-DD, the
// year counted BC for dates before 1 AD (appendEra adds the " BC").
func appendDate(dst []byte, days int64) []byte {
	d := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(days))
	y := d.Year()
	if y <= 0 {
		y = 1 - y // 0 is 1 BC
	}
	dst = appendPadded(dst, y, 4)
	dst = append(dst, '-')
	dst = appendPadded(dst, int(d.Month()), 2)
	dst = append(dst, '-')
	return appendPadded(dst, d.Day(), 2)
}

func appendEra(dst []byte, days int64) []byte {
	if time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(days)).Year() <= 0 {
		return append(dst, " BC"...)
	}
	return dst
}

func appendPadded(dst []byte, v, width int) []byte {
	s := strconv.Itoa(v)
	for i := len(s); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}
