package arrowjson

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// SyntaxError is returned by Decoder.Append for a line that is not valid
// JSON.
type SyntaxError struct {
	Offset int    // byte offset in the line where the problem was found
	Msg    string // what is wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.Offset, e.Msg)
}

// MaxDepth is the deepest nesting of objects and arrays the decoder accepts.
const MaxDepth = 256

type tokKind uint8

const (
	tNull tokKind = iota
	tFalse
	tTrue
	tInt
	tFloat
	tString
	tObject
	tArray
)

// token is one value (or object key) of a scanned line. Tokens are laid out
// in document order: an object's token is followed by its members' key and
// value tokens, an array's by its elements'.
type token struct {
	kind tokKind
	// esc marks a string whose bytes need decoding: it has escapes or
	// invalid UTF-8.
	esc   bool
	start int32 // first byte (for strings: after the opening quote)
	end   int32 // one past the last byte (for strings: the closing quote)
	next  int32 // containers: index of the first token after the container
	num   uint64
}

// scanner checks a line against the JSON grammar (RFC 8259) and records its
// tokens.
type scanner struct {
	buf   []byte
	toks  []token
	depth int
	err   *SyntaxError
}

var (
	isSpace [256]bool
	// plainString marks the bytes that stand for themselves in a JSON
	// string: printable ASCII other than '"' and '\'.
	plainString [256]bool
)

func init() {
	for _, c := range " \t\r\n" {
		isSpace[c] = true
	}
	for c := 0x20; c < 0x80; c++ {
		plainString[c] = c != '"' && c != '\\'
	}
}

// push adds a token and returns it for the caller to fill in. (Filling in
// the slice element in place avoids building the token on the stack and
// copying it, which stalls on store forwarding.)
func (s *scanner) push(k tokKind, start, end int) *token {
	n := len(s.toks)
	if n == cap(s.toks) {
		s.toks = append(s.toks, token{})
	} else {
		s.toks = s.toks[:n+1]
	}
	t := &s.toks[n]
	t.kind, t.esc, t.start, t.end, t.next, t.num = k, false, int32(start), int32(end), 0, 0
	return t
}

func (s *scanner) fail(off int, format string, args ...any) int {
	if s.err == nil {
		s.err = &SyntaxError{Offset: off, Msg: fmt.Sprintf(format, args...)}
	}
	return -1
}

// scan tokenizes line, which must hold exactly one JSON value.
func (s *scanner) scan(line []byte) error {
	s.buf, s.toks, s.depth, s.err = line, s.toks[:0], 0, nil
	i := s.value(s.space(0))
	if i < 0 {
		return s.err
	}
	if i = s.space(i); i < len(line) {
		s.fail(i, "invalid character %s after top-level value", quoteChar(line[i]))
		return s.err
	}
	return nil
}

// space skips white space from i.
func (s *scanner) space(i int) int {
	for i < len(s.buf) && isSpace[s.buf[i]] {
		i++
	}
	return i
}

func quoteChar(c byte) string {
	if c < 0x20 || c >= 0x7f {
		return fmt.Sprintf("0x%02x", c)
	}
	return strconv.QuoteRune(rune(c))
}

// value scans the value at i and returns the position after it, or -1.
func (s *scanner) value(i int) int {
	b := s.buf
	if i >= len(b) {
		return s.fail(i, "unexpected end of input")
	}
	switch c := b[i]; {
	case c == '"':
		return s.str(i)
	case c == '{':
		return s.object(i)
	case c == '[':
		return s.array(i)
	case c == '-' || c >= '0' && c <= '9':
		return s.number(i)
	case c == 't':
		return s.literal(i, "true", tTrue)
	case c == 'f':
		return s.literal(i, "false", tFalse)
	case c == 'n':
		return s.literal(i, "null", tNull)
	default:
		return s.fail(i, "invalid character %s looking for beginning of value", quoteChar(c))
	}
}

func (s *scanner) literal(i int, word string, k tokKind) int {
	if len(s.buf)-i < len(word) || string(s.buf[i:i+len(word)]) != word {
		return s.fail(i, "invalid literal, expected %s", word)
	}
	s.push(k, i, i+len(word))
	return i + len(word)
}

func (s *scanner) object(i int) int {
	if s.depth++; s.depth > MaxDepth {
		return s.fail(i, "nested deeper than %d levels", MaxDepth)
	}
	b := s.buf
	ti := len(s.toks)
	s.push(tObject, i, 0)
	i++
	if i < len(b) && isSpace[b[i]] {
		i = s.space(i)
	}
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) {
				return s.fail(i, "unexpected end of input in object")
			}
			if b[i] != '"' {
				return s.fail(i, "invalid character %s looking for beginning of object key", quoteChar(b[i]))
			}
			if i = s.str(i); i < 0 {
				return i
			}
			if i < len(b) && isSpace[b[i]] {
				i = s.space(i)
			}
			if i >= len(b) {
				return s.fail(i, "unexpected end of input after object key")
			}
			if b[i] != ':' {
				return s.fail(i, "invalid character %s after object key", quoteChar(b[i]))
			}
			i++
			if i < len(b) && isSpace[b[i]] {
				i = s.space(i)
			}
			if i = s.value(i); i < 0 {
				return i
			}
			if i < len(b) && isSpace[b[i]] {
				i = s.space(i)
			}
			if i >= len(b) {
				return s.fail(i, "unexpected end of input in object")
			}
			c := b[i]
			i++
			if c == '}' {
				break
			}
			if c != ',' {
				return s.fail(i-1, "invalid character %s after object value", quoteChar(c))
			}
			if i < len(b) && isSpace[b[i]] {
				i = s.space(i)
			}
		}
	}
	s.toks[ti].end = int32(i)
	s.toks[ti].next = int32(len(s.toks))
	s.depth--
	return i
}

func (s *scanner) array(i int) int {
	if s.depth++; s.depth > MaxDepth {
		return s.fail(i, "nested deeper than %d levels", MaxDepth)
	}
	b := s.buf
	ti := len(s.toks)
	s.push(tArray, i, 0)
	i = s.space(i + 1)
	if i < len(b) && b[i] == ']' {
		i++
	} else {
		for {
			if i = s.value(i); i < 0 {
				return i
			}
			i = s.space(i)
			if i >= len(b) {
				return s.fail(i, "unexpected end of input in array")
			}
			c := b[i]
			i++
			if c == ']' {
				break
			}
			if c != ',' {
				return s.fail(i-1, "invalid character %s after array element", quoteChar(c))
			}
			i = s.space(i)
		}
	}
	s.toks[ti].end = int32(i)
	s.toks[ti].next = int32(len(s.toks))
	s.depth--
	return i
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// specialBytes returns a mask with the high bit set in the lowest byte of x
// (and maybe in higher bytes too) that does not stand for itself in a JSON
// string: a control character, '"', '\\' or a non-ASCII byte. It is 0 when
// all 8 bytes are plain.
func specialBytes(x uint64) uint64 {
	q := x ^ (lsb * '"')
	bs := x ^ (lsb * '\\')
	return (x | (x-lsb*0x20)&^x | (q-lsb)&^q | (bs-lsb)&^bs) & msb
}

// str scans the string whose opening quote is at i.
func (s *scanner) str(i int) int {
	b := s.buf
	start := i + 1
	i = start
	esc := false
	for {
		for i+8 <= len(b) {
			if m := specialBytes(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				goto special
			}
			i += 8
		}
		for i < len(b) && plainString[b[i]] {
			i++
		}
	special:
		if i >= len(b) {
			return s.fail(start-1, "unterminated string")
		}
		switch c := b[i]; {
		case c == '"':
			s.push(tString, start, i).esc = esc
			return i + 1
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return s.fail(start-1, "unterminated string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if hex4(b[i+2:]) < 0 {
					return s.fail(i, `invalid \u escape in string`)
				}
				i += 6
			default:
				return s.fail(i, "invalid escape %s in string", quoteChar(b[i+1]))
			}
		case c < 0x20:
			return s.fail(i, "invalid control character %s in string", quoteChar(c))
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				esc = true // invalid UTF-8: replaced by U+FFFD when decoded
			}
			i += size
		}
	}
}

// exact powers of ten for the float fast path
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// number scans the number at i.
func (s *scanner) number(i int) int {
	b := s.buf
	start := i
	neg := b[i] == '-'
	if neg {
		i++
	}
	var mant uint64 // all digits, while they fit
	digits := 0     // significant digits in mant
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			mant = mant*10 + uint64(b[i]-'0')
			i++
			digits++
		}
	default:
		return s.fail(i, "invalid number: expected a digit")
	}
	intDigits := digits
	integer := true
	frac := 0
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if digits < 19 {
				mant = mant*10 + uint64(b[i]-'0')
				if mant != 0 {
					digits++
				}
				frac++
			} else {
				digits = 99 // too many for the fast path
			}
			i++
		}
		if i == d {
			return s.fail(i, "invalid number: expected a digit after the decimal point")
		}
		integer = false
	}
	exp := 0
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if exp < 10000 {
				exp = exp*10 + int(b[i]-'0')
			}
			i++
		}
		if i == d {
			return s.fail(i, "invalid number: expected a digit in the exponent")
		}
		if eneg {
			exp = -exp
		}
		integer = false
	}
	if integer && intDigits <= 18 {
		n := int64(mant)
		if neg {
			n = -n
		}
		s.push(tInt, start, i).num = uint64(n)
		return i
	}
	if !integer && digits <= 15 {
		// mant and 10^e are exact float64s, so one multiplication or
		// division rounds correctly.
		if e := exp - frac; e >= -22 && e <= 22 {
			f := float64(mant)
			if e < 0 {
				f /= pow10[-e]
			} else {
				f *= pow10[e]
			}
			if neg {
				f = -f
			}
			s.push(tFloat, start, i).num = math.Float64bits(f)
			return i
		}
	}
	text := b2s(b[start:i])
	if integer {
		if n, err := strconv.ParseInt(text, 10, 64); err == nil {
			s.push(tInt, start, i).num = uint64(n)
			return i
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil && (math.IsInf(f, 0) || math.IsNaN(f)) {
		return s.fail(start, "number %s is out of the float64 range", text)
	}
	s.push(tFloat, start, i).num = math.Float64bits(f)
	return i
}
