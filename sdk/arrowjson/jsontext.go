package arrowjson

import (
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
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

// appendToken appends value token ti of the current line as compact JSON
// text.
func (d *Decoder) appendToken(dst []byte, ti int32) []byte {
	t := &d.sc.toks[ti]
	switch t.kind {
	case tObject:
		dst = append(dst, '{')
		for k := ti + 1; k < t.next; {
			if k > ti+1 {
				dst = append(dst, ',')
			}
			dst = d.appendToken(dst, k)
			dst = append(dst, ':')
			dst = d.appendToken(dst, k+1)
			k = d.skip(k + 1)
		}
		return append(dst, '}')
	case tArray:
		dst = append(dst, '[')
		for k := ti + 1; k < t.next; k = d.skip(k) {
			if k > ti+1 {
				dst = append(dst, ',')
			}
			dst = d.appendToken(dst, k)
		}
		return append(dst, ']')
	case tString:
		if !t.esc {
			// no escapes, valid UTF-8, no control characters: as is
			dst = append(dst, '"')
			dst = append(dst, d.sc.buf[t.start:t.end]...)
			return append(dst, '"')
		}
		d.scratch = decodeString(d.scratch[:0], d.sc.buf[t.start:t.end])
		return AppendString(dst, b2s(d.scratch))
	default: // numbers and literals: as written
		return append(dst, d.sc.buf[t.start:t.end]...)
	}
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

// decodeString appends the text of the JSON string contents raw (without
// quotes; already checked by the scanner) to dst, as encoding/json decodes
// it: a \u escape that is not part of a valid surrogate pair and each byte
// of invalid UTF-8 become U+FFFD.
func decodeString(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\' && i+1 < len(raw):
			i += 2
			switch raw[i-1] {
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
				r := hex4(raw[i:])
				if r < 0 {
					dst = append(dst, "\uFFFD"...)
					continue
				}
				i += 4
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						r2 = hex4(raw[i+2:])
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				dst = utf8.AppendRune(dst, r)
			default: // '"', '\\', '/'
				dst = append(dst, raw[i-1])
			}
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\uFFFD"...)
			} else {
				dst = append(dst, raw[i:i+size]...)
			}
			i += size
		}
	}
	return dst
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
