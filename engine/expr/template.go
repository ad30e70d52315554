package expr

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Template is a string with {{ expr }} placeholders. It is safe for
// concurrent use.
type Template struct {
	src   string
	parts []tplPart
	force bool // render every placeholder with expr: tests compare the two
	plans planCache[*tplPlan]
}

// tplPart is literal text, or a placeholder's source and the rune offset
// at which that source starts in the template.
type tplPart struct {
	lit    string
	expr   string
	base   int
	isExpr bool
}

// HasPlaceholders reports whether s contains a {{ }} placeholder. An
// unterminated "{{" counts, so that compiling s reports it.
func HasPlaceholders(s string) bool { return strings.Contains(s, "{{") }

// CompileTemplate compiles the placeholders in src against schema. With a
// nil schema only their syntax is checked. Errors are *Error, positioned in
// src.
func CompileTemplate(src string, schema *arrow.Schema) (*Template, error) {
	return compileTemplate(src, schema, false)
}

func compileTemplate(src string, schema *arrow.Schema, force bool) (*Template, error) {
	parts, err := splitTemplate(src)
	if err != nil {
		return nil, err
	}
	t := &Template{src: src, parts: parts, force: force}
	plan, err := t.build(schema)
	if err != nil {
		return nil, err
	}
	if schema != nil {
		t.plans.entries = []planEntry[*tplPlan]{{schema: schema, plan: plan}}
	}
	return t, nil
}

// String returns the template's source.
func (t *Template) String() string { return t.src }

// Constant returns the template's text and true when it has no
// placeholders.
func (t *Template) Constant() (string, bool) {
	for _, p := range t.parts {
		if p.isExpr {
			return "", false
		}
	}
	return t.src, true
}

// splitTemplate cuts src into literal text and placeholders.
func splitTemplate(src string) ([]tplPart, error) {
	var parts []tplPart
	rest := 0
	for rest < len(src) {
		open := strings.Index(src[rest:], "{{")
		if open < 0 {
			parts = append(parts, tplPart{lit: src[rest:]})
			break
		}
		open += rest
		if open > rest {
			parts = append(parts, tplPart{lit: src[rest:open]})
		}
		start := open + 2
		end := closing(src, start)
		at := utf8.RuneCountInString(src[:open])
		if end < 0 {
			line, col := position(src, at)
			return nil, &Error{Line: line, Column: col, Msg: "unterminated placeholder: {{ without a closing }}"}
		}
		inner := src[start:end]
		if strings.TrimSpace(inner) == "" {
			line, col := position(src, at)
			return nil, &Error{Line: line, Column: col, Msg: "empty placeholder {{ }}"}
		}
		parts = append(parts, tplPart{expr: inner, base: at + 2, isExpr: true})
		rest = end + 2
	}
	return parts, nil
}

// closing finds the "}}" that ends the placeholder whose source starts at
// byte start, skipping string literals and the braces of map literals. If
// that finds none (an unterminated string, say), the first "}}" ends it and
// expr reports what is wrong inside.
func closing(src string, start int) int {
	depth := 0
	var quote byte
	for i := start; i < len(src); i++ {
		c := src[i]
		switch {
		case quote != 0:
			if c == '\\' && quote != '`' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"' || c == '`':
			quote = c
		case c == '{':
			depth++
		case c == '}':
			if depth == 0 && i+1 < len(src) && src[i+1] == '}' {
				return i
			}
			if depth > 0 {
				depth--
			}
		}
	}
	if i := strings.Index(src[start:], "}}"); i >= 0 {
		return start + i
	}
	return -1
}

// tplPlan is a template compiled against one schema. A placeholder that is
// a plain column path reads the column directly; any other runs with expr.
type tplPlan struct {
	refs  []colRef
	parts []tplStep
}

type tplStep struct {
	lit  string
	col  int // -1: not a column
	raw  bool
	prog *rowProg
}

func (t *Template) build(schema *arrow.Schema) (plan *tplPlan, err error) {
	defer recovered(&err, "compiling template")
	plan = &tplPlan{}
	pl := &planner{schema: schema, ids: map[string]int{}}
	for _, p := range t.parts {
		if !p.isExpr {
			plan.parts = append(plan.parts, tplStep{lit: p.lit, col: -1})
			continue
		}
		tree, err := checkSource(p.expr, schema)
		if err != nil {
			return nil, newError(err, t.src, p.base, p.expr)
		}
		if schema == nil {
			continue
		}
		if !t.force {
			if id, f, ok := pl.column(tree.Node); ok {
				plan.parts = append(plan.parts, tplStep{col: id, raw: isRaw(f)})
				continue
			}
		}
		prog, err := compileRow(p.expr, tree.Node, schema, false)
		if err != nil {
			return nil, newError(err, t.src, p.base, p.expr)
		}
		plan.parts = append(plan.parts, tplStep{col: -1, prog: prog})
	}
	plan.refs = pl.refs
	return plan, nil
}

// Render evaluates the template for every row of rec: one string per row,
// never null. A null or missing value renders as "". The caller releases
// the result. An error is a compile error against a schema rec brought
// (*Error), or a *RowError.
func (t *Template) Render(rec arrow.RecordBatch) (out *array.String, err error) {
	if t == nil {
		return nil, errors.New("expr: nil template")
	}
	plan, err := t.plans.get(rec.Schema(), t.build)
	if err != nil {
		return nil, err
	}
	defer recovered(&err, fmt.Sprintf("rendering template %q", t.src))
	n := int(rec.NumRows())
	b := array.NewStringBuilder(memory.DefaultAllocator)
	defer b.Release()
	b.Reserve(n)
	if s, ok := t.Constant(); ok {
		for i := 0; i < n; i++ {
			b.Append(s)
		}
		return b.NewStringArray(), nil
	}
	bc := newBatchCtx(rec, plan.refs)
	var buf []byte
	for i := 0; i < n; i++ {
		buf = buf[:0]
		for _, s := range plan.parts {
			switch {
			case s.prog != nil:
				env, err := bc.rowEnv(s.prog)
				if err != nil {
					return nil, err
				}
				v, err := s.prog.run(bc, env, i)
				if err != nil {
					return nil, err
				}
				buf = appendValue(buf, v)
			case s.col >= 0:
				c, err := bc.col(s.col)
				if err != nil {
					return nil, err
				}
				if !c.isValid(i) {
					continue
				}
				if sv, ok := c.arr.(stringValues); ok && !s.raw {
					buf = append(buf, sv.Value(i)...)
					continue
				}
				v, err := valueAt(c.arr, i, s.raw)
				if err != nil {
					return nil, &RowError{Row: i + 1, Expr: t.src, Err: err}
				}
				buf = appendValue(buf, v)
			default:
				buf = append(buf, s.lit...)
			}
		}
		b.BinaryBuilder.Append(buf)
	}
	return b.NewStringArray(), nil
}
