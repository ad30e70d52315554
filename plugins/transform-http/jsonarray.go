package transformhttp

import "encoding/json"

// maxDepth is how deeply values may nest, as in encoding/json.
const maxDepth = 10000

// splitArray checks that data is one JSON array (whitespace around it
// allowed) and puts its elements, as sub-slices of data, into out; it
// returns how many elements the array has, also when that is not len(out),
// and ok false when data is not a JSON array. It is json.Unmarshal into a
// []json.RawMessage in one pass and without copies.
func splitArray(data []byte, out []json.RawMessage) (n int, ok bool) {
	v := validator{b: data}
	v.ws()
	if v.peek() != '[' {
		return 0, false
	}
	v.i++
	v.ws()
	if v.peek() == ']' {
		v.i++
	} else {
		for {
			start := v.i
			if !v.value(1) {
				return 0, false
			}
			if n < len(out) {
				out[n] = data[start:v.i:v.i]
			}
			n++
			v.ws()
			c := v.peek()
			v.i++
			if c == ']' {
				break
			}
			if c != ',' {
				return 0, false
			}
			v.ws()
		}
	}
	v.ws()
	return n, v.i == len(data)
}

// validator checks JSON syntax as encoding/json does (strings are not
// checked for valid UTF-8).
type validator struct {
	b []byte
	i int
}

func (v *validator) peek() byte {
	if v.i < len(v.b) {
		return v.b[v.i]
	}
	return 0
}

func (v *validator) ws() {
	for v.i < len(v.b) {
		switch v.b[v.i] {
		case ' ', '\t', '\n', '\r':
			v.i++
		default:
			return
		}
	}
}

// value reads one value at nesting depth.
func (v *validator) value(depth int) bool {
	switch c := v.peek(); {
	case c == '{':
		return v.object(depth)
	case c == '[':
		return v.array(depth)
	case c == '"':
		return v.str()
	case c == '-' || ('0' <= c && c <= '9'):
		return v.number()
	case c == 't':
		return v.literal("true")
	case c == 'f':
		return v.literal("false")
	case c == 'n':
		return v.literal("null")
	}
	return false
}

func (v *validator) literal(lit string) bool {
	if len(v.b)-v.i < len(lit) || string(v.b[v.i:v.i+len(lit)]) != lit {
		return false
	}
	v.i += len(lit)
	return true
}

func (v *validator) object(depth int) bool {
	if depth > maxDepth {
		return false
	}
	v.i++ // {
	v.ws()
	if v.peek() == '}' {
		v.i++
		return true
	}
	for {
		if v.peek() != '"' || !v.str() {
			return false
		}
		v.ws()
		if v.peek() != ':' {
			return false
		}
		v.i++
		v.ws()
		if !v.value(depth + 1) {
			return false
		}
		v.ws()
		c := v.peek()
		v.i++
		if c == '}' {
			return true
		}
		if c != ',' {
			return false
		}
		v.ws()
	}
}

func (v *validator) array(depth int) bool {
	if depth > maxDepth {
		return false
	}
	v.i++ // [
	v.ws()
	if v.peek() == ']' {
		v.i++
		return true
	}
	for {
		if !v.value(depth + 1) {
			return false
		}
		v.ws()
		c := v.peek()
		v.i++
		if c == ']' {
			return true
		}
		if c != ',' {
			return false
		}
		v.ws()
	}
}

func (v *validator) str() bool {
	v.i++ // "
	for v.i < len(v.b) {
		c := v.b[v.i]
		switch {
		case c == '"':
			v.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			v.i++
			switch v.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				v.i++
			case 'u':
				v.i++
				for k := 0; k < 4; k++ {
					if !isHex(v.peek()) {
						return false
					}
					v.i++
				}
			default:
				return false
			}
		default:
			v.i++
		}
	}
	return false
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func (v *validator) digits() bool {
	start := v.i
	for v.i < len(v.b) && '0' <= v.b[v.i] && v.b[v.i] <= '9' {
		v.i++
	}
	return v.i > start
}

func (v *validator) number() bool {
	if v.peek() == '-' {
		v.i++
	}
	switch c := v.peek(); {
	case c == '0':
		v.i++
	case '1' <= c && c <= '9':
		v.digits()
	default:
		return false
	}
	if v.peek() == '.' {
		v.i++
		if !v.digits() {
			return false
		}
	}
	if c := v.peek(); c == 'e' || c == 'E' {
		v.i++
		if c := v.peek(); c == '+' || c == '-' {
			v.i++
		}
		if !v.digits() {
			return false
		}
	}
	return true
}
