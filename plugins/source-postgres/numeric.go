package sourcepostgres

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow/decimal128"
)

// PostgreSQL's binary numeric: ndigits, weight, sign and dscale (int16
// each), then ndigits base-10000 digits, the first of weight 10000^weight.
const (
	numPos  = 0x0000
	numNeg  = 0x4000
	numNaN  = 0xC000
	numPInf = 0xD000
	numNInf = 0xF000
)

type numeric struct {
	weight int
	sign   uint16
	dscale int
	digits []byte // 2 bytes per base-10000 digit
}

func parseNumeric(v []byte) (numeric, error) {
	if len(v) < 8 {
		return numeric{}, wrongLength("numeric", len(v))
	}
	n := int(be16(v))
	if len(v) != 8+2*n {
		return numeric{}, wrongLength("numeric", len(v))
	}
	return numeric{weight: int(int16(be16(v[2:]))), sign: be16(v[4:]), dscale: int(int16(be16(v[6:]))), digits: v[8:]}, nil
}

func (x numeric) ndigits() int { return len(x.digits) / 2 }

// digit is the base-10000 digit at index i (0 outside the stored ones).
func (x numeric) digit(i int) int {
	if i < 0 || i >= x.ndigits() {
		return 0
	}
	return int(be16(x.digits[2*i:]))
}

func (x numeric) special() string {
	switch x.sign {
	case numNaN:
		return "NaN"
	case numPInf:
		return "Infinity"
	case numNInf:
		return "-Infinity"
	}
	return ""
}

// appendNumericText appends a numeric's text exactly as PostgreSQL prints
// it: all dscale fraction digits, NaN, Infinity and -Infinity.
func appendNumericText(dst, v []byte) ([]byte, error) {
	x, err := parseNumeric(v)
	if err != nil {
		return dst, err
	}
	if s := x.special(); s != "" {
		return append(dst, s...), nil
	}
	if x.sign != numPos && x.sign != numNeg {
		return dst, fmt.Errorf("a numeric with an unknown sign 0x%04x", x.sign)
	}
	if x.sign == numNeg {
		dst = append(dst, '-')
	}
	if x.weight < 0 {
		dst = append(dst, '0')
	} else {
		for i := 0; i <= x.weight; i++ {
			d := x.digit(i)
			if i == 0 {
				dst = strconv.AppendInt(dst, int64(d), 10)
				continue
			}
			dst = append4(dst, d)
		}
	}
	if x.dscale > 0 {
		dst = append(dst, '.')
		end := len(dst) + x.dscale
		for i := x.weight + 1; len(dst) < end; i++ {
			dst = append4(dst, x.digit(i))
		}
		dst = dst[:end]
	}
	return dst, nil
}

func append4(dst []byte, d int) []byte {
	return append(dst, byte('0'+d/1000), byte('0'+d/100%10), byte('0'+d/10%10), byte('0'+d%10))
}

var pow10u64 = [...]uint64{1, 10, 100, 1000, 10000}

// numericDecimal converts a binary numeric to a decimal128 of the given
// precision and scale (the column's declared ones, which its values fit).
func numericDecimal(v []byte, precision, scale int32) (decimal128.Num, error) {
	x, err := parseNumeric(v)
	if err != nil {
		return decimal128.Num{}, err
	}
	if s := x.special(); s != "" {
		return decimal128.Num{}, fmt.Errorf("numeric %s has no decimal128 value; map it in a query (NULLIF(col, 'NaN'))", s)
	}
	n := x.ndigits()
	if n == 0 {
		return decimal128.Num{}, nil
	}
	// The digits read as one integer A are the value times
	// 10000^(n-1-weight); the unscaled decimal is A * 10^e.
	e := int(scale) - 4*(n-1-x.weight)
	var num decimal128.Num
	if n <= 4 && e >= -4 && e <= 3 {
		var a uint64
		for i := 0; i < n; i++ {
			a = a*10000 + uint64(x.digit(i))
		}
		if e >= 0 {
			a *= pow10u64[e]
		} else {
			if a%pow10u64[-e] != 0 {
				return decimal128.Num{}, fmt.Errorf("numeric has more fraction digits than the column's scale %d", scale)
			}
			a /= pow10u64[-e]
		}
		num = decimal128.FromU64(a)
	} else {
		a := new(big.Int)
		tenK := big.NewInt(10000)
		for i := 0; i < n; i++ {
			a.Mul(a, tenK)
			a.Add(a, big.NewInt(int64(x.digit(i))))
		}
		p := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(e))), nil)
		if e >= 0 {
			a.Mul(a, p)
		} else {
			var rem big.Int
			a.QuoRem(a, p, &rem)
			if rem.Sign() != 0 {
				return decimal128.Num{}, fmt.Errorf("numeric has more fraction digits than the column's scale %d", scale)
			}
		}
		if a.BitLen() > 127 {
			return decimal128.Num{}, errors.New("numeric does not fit decimal128")
		}
		num = decimal128.FromBigInt(a)
	}
	if !num.FitsInPrecision(precision) {
		return decimal128.Num{}, fmt.Errorf("numeric has more digits than the column's precision %d", precision)
	}
	if x.sign == numNeg {
		num = num.Negate()
	}
	return num, nil
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
