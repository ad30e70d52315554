package expr

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
)

// checkSource parses src and, with a schema, type-checks it against the
// schema's visible columns.
func checkSource(src string, schema *arrow.Schema) (*parser.Tree, error) {
	config := conf.CreateNew()
	if schema == nil {
		return parser.ParseWithConfig(src, config)
	}
	config.WithEnv(envType(schema))
	return checker.ParseCheck(src, config)
}

// newError turns an error of expr about src, which starts at rune offset
// base of whole, into an *Error positioned in whole.
func newError(err error, whole string, base int, src string) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	msg := err.Error()
	off := base
	var fe *file.Error
	if errors.As(err, &fe) {
		msg = fe.Message
		from := max(fe.From, 0)
		from = min(from, utf8.RuneCountInString(src))
		off = base + from
	}
	line, col := position(whole, off)
	return &Error{Line: line, Column: col, Msg: msg}
}

// position is the 1-based line and column (counted in runes, as expr does)
// of rune offset off in s.
func position(s string, off int) (line, col int) {
	line, col = 1, 1
	k := 0
	for _, r := range s {
		if k == off {
			break
		}
		if r == '\n' {
			line++
			col = 1
		} else {
			col++
		}
		k++
	}
	return line, col
}

// firstToken is the rune offset of the first non-space rune of s.
func firstToken(s string) int {
	k := 0
	for _, r := range s {
		if r != ' ' && r != '\t' && r != '\n' && r != '\r' {
			return k
		}
		k++
	}
	return 0
}

// recovered turns a panic inside expr or this package into an error, so
// that no expression and no data can crash the engine.
func recovered(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("internal error %s: %v", what, r)
	}
}

// describe names a nature for "must be boolean, got …" messages.
func describe(n *ast.Node) string {
	nt := (*n).Nature()
	switch {
	case nt.Nil:
		return "nil"
	case nt.Kind == reflect.Map:
		return "map"
	case nt.Kind == reflect.Slice || nt.Kind == reflect.Array:
		return "array"
	case nt.Kind == reflect.Float64:
		return "float"
	}
	return nt.String()
}

func isBoolOrUnknown(n ast.Node) bool {
	nt := n.Nature()
	if nt.Nil {
		return false
	}
	return nt.Kind == reflect.Bool || nt.Type == nil || nt.Kind == reflect.Interface
}

// ---- plan caches ----

// planCache holds the plans of one expression for the schemas it has met:
// the one it was compiled for, and any a batch brought later.
type planCache[P any] struct {
	mu      sync.Mutex
	entries []planEntry[P]
}

type planEntry[P any] struct {
	schema *arrow.Schema
	plan   P
	err    error
}

const maxPlans = 8

func (c *planCache[P]) get(schema *arrow.Schema, build func(*arrow.Schema) (P, error)) (P, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.entries {
		if e.schema == schema || e.schema.Equal(schema) {
			if i > 0 {
				copy(c.entries[1:i+1], c.entries[:i])
				c.entries[0] = e
			}
			return e.plan, e.err
		}
	}
	p, err := build(schema)
	e := planEntry[P]{schema: schema, plan: p, err: err}
	if len(c.entries) < maxPlans {
		c.entries = append(c.entries, e)
	}
	copy(c.entries[1:], c.entries[:len(c.entries)-1])
	c.entries[0] = e
	return p, err
}

// ---- predicate plans ----

type predPlan struct {
	root vnode
	refs []colRef
}

// buildPredicate compiles src against schema into a plan; force runs the
// whole expression row by row (for tests and benchmarks).
func buildPredicate(src, attr string, schema *arrow.Schema, force bool) (plan *predPlan, err error) {
	defer recovered(&err, "compiling "+attr)
	tree, err := checkSource(src, schema)
	if err != nil {
		return nil, newError(err, src, 0, src)
	}
	if !isBoolOrUnknown(tree.Node) {
		line, col := position(src, firstToken(src))
		return nil, &Error{Line: line, Column: col,
			Msg: fmt.Sprintf("%s must be a boolean expression, got %s", attr, describe(&tree.Node))}
	}
	if schema == nil {
		return nil, nil
	}
	pl := &planner{src: src, schema: schema, ids: map[string]int{}}
	var root vnode
	if force {
		root, err = pl.row(tree.Node)
	} else {
		root, err = pl.boolean(tree.Node)
	}
	if err != nil {
		return nil, newError(err, src, 0, src)
	}
	return &predPlan{root: root, refs: pl.refs}, nil
}

// planner turns a checked tree into vnodes, vectorising what it can.
type planner struct {
	src    string
	schema *arrow.Schema
	refs   []colRef
	ids    map[string]int
}

// column returns the plan's id for a node that is a column path.
func (pl *planner) column(n ast.Node) (int, arrow.Field, bool) {
	path, ok := pathOf(n)
	if !ok {
		return 0, arrow.Field{}, false
	}
	idx, leaf, k := resolvePath(pl.schema, path)
	if k == 0 || k != len(path) {
		return 0, arrow.Field{}, false
	}
	key := strings.Join(path, "\x00")
	if id, ok := pl.ids[key]; ok {
		return id, leaf, true
	}
	id := len(pl.refs)
	pl.refs = append(pl.refs, colRef{path: strings.Join(path, "."), idx: idx, field: leaf})
	pl.ids[key] = id
	return id, leaf, true
}

// operand is a column path, or lower()/upper() of a string column path.
func (pl *planner) operand(n ast.Node) (id int, kind colKind, fold foldKind, ok bool) {
	if b, isB := n.(*ast.BuiltinNode); isB {
		if (b.Name != "lower" && b.Name != "upper") || len(b.Arguments) != 1 {
			return 0, 0, 0, false
		}
		id, f, ok := pl.column(b.Arguments[0])
		if !ok || kindOf(f) != kindString {
			return 0, 0, 0, false
		}
		fold = foldLower
		if b.Name == "upper" {
			fold = foldUpper
		}
		return id, kindString, fold, true
	}
	id, f, ok := pl.column(n)
	if !ok {
		return 0, 0, 0, false
	}
	return id, kindOf(f), foldNone, true
}

func (pl *planner) row(n ast.Node) (vnode, error) {
	p, err := compileRow(pl.src, n, pl.schema, true)
	if err != nil {
		return nil, err
	}
	return &rowNode{prog: p}, nil
}

func (pl *planner) boolean(n ast.Node) (vnode, error) {
	switch x := n.(type) {
	case *ast.BoolNode:
		return &constNode{v: x.Value}, nil
	case *ast.UnaryNode:
		if x.Operator == "!" || x.Operator == "not" {
			c, err := pl.boolean(x.Node)
			if err != nil {
				return nil, err
			}
			return &notNode{x: c}, nil
		}
	case *ast.BinaryNode:
		switch x.Operator {
		case "&&", "and", "||", "or":
			l, err := pl.boolean(x.Left)
			if err != nil {
				return nil, err
			}
			r, err := pl.boolean(x.Right)
			if err != nil {
				return nil, err
			}
			if x.Operator == "&&" || x.Operator == "and" {
				return &andNode{l: l, r: r}, nil
			}
			return &orNode{l: l, r: r}, nil
		}
		if v := pl.binary(x.Operator, x.Left, x.Right); v != nil {
			return v, nil
		}
	case *ast.BuiltinNode:
		if len(x.Arguments) == 2 && (x.Name == "hasPrefix" || x.Name == "hasSuffix") {
			op := "startsWith"
			if x.Name == "hasSuffix" {
				op = "endsWith"
			}
			if v := pl.binary(op, x.Arguments[0], x.Arguments[1]); v != nil {
				return v, nil
			}
		}
	case *ast.IdentifierNode, *ast.MemberNode, *ast.ChainNode:
		if id, f, ok := pl.column(n); ok && kindOf(f) == kindBool {
			return &boolColNode{col: id}, nil
		}
	}
	return pl.row(n)
}

// binary vectorises `column op literal`, or returns nil.
func (pl *planner) binary(op string, left, right ast.Node) vnode {
	if c, ok := cmpOps[op]; ok {
		if id, kind, fold, ok := pl.operand(left); ok {
			if lit, ok := literal(right); ok {
				return compareNode(id, kind, fold, c, lit)
			}
		}
		if id, kind, fold, ok := pl.operand(right); ok {
			if lit, ok := literal(left); ok {
				return compareNode(id, kind, fold, c.flip(), lit)
			}
		}
		return nil
	}
	id, kind, fold, ok := pl.operand(left)
	if !ok {
		return nil
	}
	switch op {
	case "in":
		arr, ok := right.(*ast.ArrayNode)
		if !ok {
			return nil
		}
		return inArray(id, kind, fold, arr)
	case "contains", "startsWith", "endsWith", "matches":
		s, ok := right.(*ast.StringNode)
		if !ok || kind != kindString {
			return nil
		}
		node := &strOpNode{col: id, op: op, fold: fold, lit: s.Value}
		if op == "matches" {
			re, err := regexp.Compile(s.Value)
			if err != nil {
				return nil
			}
			node.re = re
		}
		return node
	}
	return nil
}

func compareNode(id int, kind colKind, fold foldKind, op cmpOp, lit any) vnode {
	if lit == nil {
		if fold != foldNone || kind == kindRaw || (op != opEQ && op != opNE) {
			return nil
		}
		return &nullNode{col: id, isNull: op == opEQ}
	}
	numeric := kind == kindInt || kind == kindFloat
	switch v := lit.(type) {
	case int:
		if numeric {
			return &numCmpNode{col: id, op: op, intCol: kind == kindInt, intLit: true, i: int64(v), f: float64(v)}
		}
	case float64:
		if numeric {
			return &numCmpNode{col: id, op: op, intCol: kind == kindInt, f: v}
		}
	case string:
		if kind == kindString {
			return &strCmpNode{col: id, op: op, fold: fold, lit: v}
		}
	case bool:
		if kind == kindBool && (op == opEQ || op == opNE) {
			return &boolCmpNode{col: id, eq: op == opEQ, lit: v}
		}
	}
	return nil
}

func inArray(id int, kind colKind, fold foldKind, arr *ast.ArrayNode) vnode {
	if kind == kindOther || kind == kindRaw {
		return nil
	}
	n := &inNode{col: id, kind: kind, fold: fold,
		strs: map[string]struct{}{}, ints: map[int64]struct{}{}, floats: map[float64]struct{}{}}
	for _, e := range arr.Nodes {
		lit, ok := literal(e)
		if !ok {
			return nil
		}
		switch v := lit.(type) {
		case string:
			n.strs[v] = struct{}{}
		case int:
			if kind == kindInt {
				n.ints[int64(v)] = struct{}{}
			} else {
				n.floats[float64(v)] = struct{}{}
			}
		case float64:
			n.floats[v] = struct{}{}
		case bool:
			n.bools[b2i(v)] = true
		}
	}
	return n
}
