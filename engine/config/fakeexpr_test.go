package config

import (
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/engine/expr"
)

// fakeCompiler stands in for engine/expr, which is written concurrently: it
// knows just enough of the language to find a syntax error or an unknown
// field and report its line and column the way engine/expr does.
var fakeCompiler = Compiler{
	Predicate: func(src string, schema *arrow.Schema) (*expr.Predicate, error) {
		if err := fakeCheck(src, schema, 1, 1); err != nil {
			return nil, err
		}
		return &expr.Predicate{}, nil
	},
	Template: func(src string, schema *arrow.Schema) (*expr.Template, error) {
		line, col := 1, 1
		for i := 0; i < len(src); {
			if strings.HasPrefix(src[i:], "{{") {
				end := strings.Index(src[i+2:], "}}")
				if end < 0 {
					return nil, &expr.Error{Line: line, Column: col, Msg: "placeholder {{ is not closed with }}"}
				}
				inner := src[i+2 : i+2+end]
				if err := fakeCheck(inner, schema, line, col+2); err != nil {
					return nil, err
				}
				for _, r := range src[i : i+2+end+2] {
					line, col = step(r, line, col)
				}
				i += 2 + end + 2
				continue
			}
			r := []rune(src[i:])[0]
			line, col = step(r, line, col)
			i += len(string(r))
		}
		return &expr.Template{}, nil
	},
}

func step(r rune, line, col int) (int, int) {
	if r == '\n' {
		return line + 1, 1
	}
	return line, col + 1
}

type fakeToken struct {
	kind      string // "operand", "ident", "binary", "unary", "(", ")", ","
	text      string
	line, col int
	segs      []fakeSeg // for "ident": the parts of a.b.c
}

type fakeSeg struct {
	name string
	col  int
}

var fakeOps = []string{"==", "!=", ">=", "<=", "&&", "||", ">", "<", "+", "-", "*", "/", "%", "!", "(", ")", ","}

// fakeCheck lexes and checks src, whose first character sits at line:col.
func fakeCheck(src string, schema *arrow.Schema, line, col int) error {
	rs := []rune(src)
	var toks []fakeToken
	errAt := func(l, c int, format string, args ...any) error {
		return &expr.Error{Line: l, Column: c, Msg: fmt.Sprintf(format, args...)}
	}
	isLetter := func(r rune) bool { return r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }
	isDigit := func(r rune) bool { return r >= '0' && r <= '9' }
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case r == ' ' || r == '\t' || r == '\n':
			line, col = step(r, line, col)
			i++
		case isLetter(r):
			t := fakeToken{kind: "ident", line: line, col: col}
			for {
				start, startCol := i, col
				for i < len(rs) && (isLetter(rs[i]) || isDigit(rs[i])) {
					i++
					col++
				}
				t.segs = append(t.segs, fakeSeg{name: string(rs[start:i]), col: startCol})
				if i+1 < len(rs) && rs[i] == '.' && isLetter(rs[i+1]) {
					i++
					col++
					continue
				}
				break
			}
			switch t.segs[0].name {
			case "and", "or", "in":
				if len(t.segs) == 1 {
					t.kind = "binary"
				}
			case "not":
				if len(t.segs) == 1 {
					t.kind = "unary"
				}
			case "true", "false", "nil":
				if len(t.segs) == 1 {
					t.kind = "operand"
				}
			}
			t.text = t.segs[0].name
			toks = append(toks, t)
		case isDigit(r):
			t := fakeToken{kind: "operand", line: line, col: col}
			for i < len(rs) && (isDigit(rs[i]) || rs[i] == '.') {
				i++
				col++
			}
			toks = append(toks, t)
		case r == '\'' || r == '"':
			t := fakeToken{kind: "operand", line: line, col: col}
			i++
			col++
			for {
				if i >= len(rs) || rs[i] == '\n' {
					return errAt(t.line, t.col, "literal not terminated")
				}
				if rs[i] == '\\' {
					i++
					col++
				} else if rs[i] == r {
					i++
					col++
					break
				}
				i++
				col++
			}
			toks = append(toks, t)
		default:
			op := ""
			for _, o := range fakeOps {
				if strings.HasPrefix(string(rs[i:]), o) {
					op = o
					break
				}
			}
			if op == "" {
				return errAt(line, col, "unexpected token %q", string(r))
			}
			t := fakeToken{kind: "binary", text: op, line: line, col: col}
			switch op {
			case "!":
				t.kind = "unary"
			case "(", ")", ",":
				t.kind = op
			}
			toks = append(toks, t)
			i += len(op)
			col += len(op)
		}
	}

	expectOperand := true
	depth := 0
	for j, t := range toks {
		switch t.kind {
		case "operand", "ident":
			if !expectOperand {
				return errAt(t.line, t.col, "unexpected token %q", t.text)
			}
			expectOperand = false
			call := t.kind == "ident" && j+1 < len(toks) && toks[j+1].kind == "("
			if t.kind == "ident" && !call && schema != nil {
				if err := fakeField(t, schema); err != nil {
					return err
				}
			}
		case "unary":
			if !expectOperand {
				return errAt(t.line, t.col, "unexpected token %q", t.text)
			}
		case "binary":
			if expectOperand {
				if t.text == "-" {
					continue
				}
				return errAt(t.line, t.col, "unexpected token %q", t.text)
			}
			expectOperand = true
		case "(":
			// After an operand it opens a call's arguments.
			depth++
			expectOperand = true
			if j+1 < len(toks) && toks[j+1].kind == ")" {
				expectOperand = false
			}
		case ")":
			if depth == 0 || expectOperand && toks[j-1].kind != "(" {
				return errAt(t.line, t.col, "unexpected token %q", ")")
			}
			depth--
			expectOperand = false
		case ",":
			if depth == 0 || expectOperand {
				return errAt(t.line, t.col, "unexpected token %q", ",")
			}
			expectOperand = true
		}
	}
	if expectOperand || depth > 0 {
		return errAt(line, col, "unexpected end of expression")
	}
	return nil
}

// fakeField looks a.b.c up in the schema, through struct fields.
func fakeField(t fakeToken, schema *arrow.Schema) error {
	fields := schema.Fields()
	path := ""
	for _, seg := range t.segs {
		if path != "" {
			path += "."
		}
		path += seg.name
		if fields == nil {
			return &expr.Error{Line: t.line, Column: seg.col, Msg: fmt.Sprintf("unknown field %s", path)}
		}
		var found *arrow.Field
		for i := range fields {
			if fields[i].Name == seg.name {
				found = &fields[i]
				break
			}
		}
		if found == nil {
			return &expr.Error{Line: t.line, Column: seg.col, Msg: fmt.Sprintf("unknown field %s", path)}
		}
		fields = nil
		if st, ok := found.Type.(*arrow.StructType); ok {
			fields = st.Fields()
		}
	}
	return nil
}
