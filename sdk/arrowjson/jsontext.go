package arrowjson

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fastjson"
)

// b2s views b as a string without copying; b must not change while the
// string is in use.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

const hexDigits = "0123456789abcdef"

// safeASCII marks the ASCII bytes a JSON string may hold unescaped.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// AppendString appends s to dst as a JSON string. Non-ASCII characters are
// kept as UTF-8; control characters, '"' and '\' are escaped; invalid UTF-8
// bytes become U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendFloat appends f in the shortest form that parses back to the same
// value: plain decimal notation for 1e-6 <= |f| < 1e21, exponent notation
// outside that range (as JavaScript and encoding/json do). NaN and ±Inf have
// no JSON form and are written as null.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	format := byte('f')
	if a := math.Abs(f); a != 0 {
		if bits == 64 && (a < 1e-6 || a >= 1e21) ||
			bits == 32 && (float32(a) < 1e-6 || float32(a) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// 1e-07 -> 1e-7
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendFastJSON appends v as compact JSON text. Numbers are checked
// against the JSON grammar and kept verbatim.
func appendFastJSON(dst []byte, v *fastjson.Value) ([]byte, error) {
	var err error
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		dst = append(dst, '{')
		first := true
		o.Visit(func(k []byte, vv *fastjson.Value) {
			if err != nil {
				return
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = AppendString(dst, b2s(k))
			dst = append(dst, ':')
			dst, err = appendFastJSON(dst, vv)
		})
		dst = append(dst, '}')
	case fastjson.TypeArray:
		arr, _ := v.Array()
		dst = append(dst, '[')
		for i, e := range arr {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendFastJSON(dst, e); err != nil {
				break
			}
		}
		dst = append(dst, ']')
	case fastjson.TypeString:
		s, _ := v.StringBytes()
		dst = AppendString(dst, b2s(s))
	case fastjson.TypeNumber:
		n := len(dst)
		dst = v.MarshalTo(dst)
		_, _, _, err = parseNumber(dst[n:])
	case fastjson.TypeTrue:
		dst = append(dst, "true"...)
	case fastjson.TypeFalse:
		dst = append(dst, "false"...)
	default:
		dst = append(dst, "null"...)
	}
	return dst, err
}

// appendStored appends entry i of n, as buffered, as JSON text. Explicit
// nulls of object members are written; absent ones are left out.
func appendStored(dst []byte, n *node, i int) []byte {
	if n.state[i] != stValid {
		return append(dst, "null"...)
	}
	switch n.kind {
	case kBool:
		if n.bools[i] != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case kInt:
		return strconv.AppendInt(dst, n.ints[i], 10)
	case kFloat:
		return appendFloat(dst, n.floats[i], 64)
	case kString:
		return AppendString(dst, b2s(n.data[n.offs[i]:n.offs[i+1]]))
	case kRaw:
		return append(dst, n.data[n.offs[i]:n.offs[i+1]]...)
	case kList:
		dst = append(dst, '[')
		for j := n.offs[i]; j < n.offs[i+1]; j++ {
			if j > n.offs[i] {
				dst = append(dst, ',')
			}
			dst = appendStored(dst, n.elem, int(j))
		}
		return append(dst, ']')
	case kStruct:
		dst = append(dst, '{')
		first := true
		for _, c := range n.children {
			st := c.state[i]
			if st == stAbsent {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = AppendString(dst, c.name)
			dst = append(dst, ':')
			dst = appendStored(dst, c, i)
		}
		return append(dst, '}')
	}
	return append(dst, "null"...)
}

var (
	errUnterminated = errors.New("unterminated string")
	errBadEscape    = errors.New("invalid escape in string")
)

// normalize rewrites the strings of a JSON text so that fastjson reads them
// exactly as encoding/json does: escapes are decoded (a \u escape that is not
// a valid surrogate pair becomes U+FFFD), invalid UTF-8 bytes become U+FFFD,
// and only '"' and '\' stay escaped. Text outside strings is copied as is.
func normalize(dst, line []byte) ([]byte, error) {
	i := 0
	for i < len(line) {
		c := line[i]
		if c != '"' {
			dst = append(dst, c)
			i++
			continue
		}
		dst = append(dst, '"')
		i++
		for {
			if i >= len(line) {
				return dst, errUnterminated
			}
			c = line[i]
			switch {
			case c == '"':
				dst = append(dst, '"')
				i++
			case c == '\\':
				if i+1 >= len(line) {
					return dst, errUnterminated
				}
				i += 2
				switch line[i-1] {
				case '"':
					dst = append(dst, '\\', '"')
				case '\\':
					dst = append(dst, '\\', '\\')
				case '/':
					dst = append(dst, '/')
				case 'b':
					dst = append(dst, '\b')
				case 'f':
					dst = append(dst, '\f')
				case 'n':
					dst = append(dst, '\n')
				case 'r':
					dst = append(dst, '\r')
				case 't':
					dst = append(dst, '\t')
				case 'u':
					r := hex4(line[i:])
					if r < 0 {
						return dst, errBadEscape
					}
					i += 4
					if utf16.IsSurrogate(r) {
						r2 := rune(-1)
						if i+1 < len(line) && line[i] == '\\' && line[i+1] == 'u' {
							r2 = hex4(line[i+2:])
						}
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							r = dec
							i += 6
						} else {
							r = utf8.RuneError
						}
					}
					switch r {
					case '"', '\\':
						dst = append(dst, '\\', byte(r))
					default:
						dst = utf8.AppendRune(dst, r)
					}
				default:
					return dst, errBadEscape
				}
				continue
			case c < utf8.RuneSelf:
				dst = append(dst, c)
				i++
				continue
			default:
				r, size := utf8.DecodeRune(line[i:])
				if r == utf8.RuneError && size == 1 {
					dst = append(dst, "\uFFFD"...)
				} else {
					dst = append(dst, line[i:i+size]...)
				}
				i += size
				continue
			}
			break
		}
	}
	return dst, nil
}

// hex4 decodes the 4 hex digits at the start of b, or returns -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}
