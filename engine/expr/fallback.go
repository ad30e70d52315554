package expr

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"github.com/expr-lang/expr/vm/runtime"
)

// rowProg is an expr program run once per row, with an env holding only the
// fields it reads.
type rowProg struct {
	prog *vm.Program
	env  *envPlan
	src  string // the whole expression, for error messages
}

// compileRow compiles node (a subtree of an expression parsed from src and
// already checked) into a program with the package's null semantics. It
// rewrites node in place. With predicate, the program's result is the
// node's truth value: false for nil, an error for a value that is not bool.
func compileRow(src string, node ast.Node, schema *arrow.Schema, predicate bool) (*rowProg, error) {
	paths, all := collectPaths(node)
	config := conf.CreateNew()
	config.WithEnv(envType(schema))
	for name, f := range helpers {
		config.Functions[name] = f
	}
	config.Visitors = append(config.Visitors, nullSafe{})
	tree := &parser.Tree{Node: node, Source: file.NewSource(src)}
	if predicate {
		tree.Node = truth(node)
	}
	if _, err := new(checker.Checker).PatchAndCheck(tree, config); err != nil {
		return nil, err
	}
	prog, err := compiler.Compile(tree, config)
	if err != nil {
		return nil, err
	}
	return &rowProg{prog: prog, env: newEnvPlan(schema, paths, all), src: src}, nil
}

func (p *rowProg) run(bc *batchCtx, env *rowEnv, i int) (any, error) {
	m, err := env.row(i)
	if err == nil {
		var v any
		if v, err = bc.machine.Run(p.prog, m); err == nil {
			return v, nil
		}
	}
	return nil, &RowError{Row: i + 1, Expr: strings.TrimSpace(p.src), Err: err}
}

// ---- which fields a program reads ----

// pathOf returns the field path node names, if it is one: an identifier,
// or member accesses with constant names on one.
func pathOf(node ast.Node) ([]string, bool) {
	switch n := node.(type) {
	case *ast.ChainNode:
		return pathOf(n.Node)
	case *ast.IdentifierNode:
		if n.Value == "$env" {
			return nil, false
		}
		return []string{n.Value}, true
	case *ast.MemberNode:
		prop, ok := n.Property.(*ast.StringNode)
		if !ok || n.Method {
			return nil, false
		}
		if isEnvIdent(n.Node) {
			return []string{prop.Value}, true
		}
		base, ok := pathOf(n.Node)
		if !ok {
			return nil, false
		}
		return append(base, prop.Value), true
	}
	return nil, false
}

func isEnvIdent(n ast.Node) bool {
	id, ok := n.(*ast.IdentifierNode)
	return ok && id.Value == "$env"
}

type visitFunc func(node *ast.Node)

func (f visitFunc) Visit(node *ast.Node) { f(node) }

// collectPaths lists the field paths node reads as values (a.b.c, not also
// a and a.b), and whether it uses $env as a whole.
func collectPaths(node ast.Node) (paths [][]string, all bool) {
	bases := map[ast.Node]bool{}
	ast.Walk(&node, visitFunc(func(n *ast.Node) {
		m, ok := (*n).(*ast.MemberNode)
		if !ok || m.Method {
			return
		}
		if _, ok := m.Property.(*ast.StringNode); !ok {
			return
		}
		for b := m.Node; b != nil; {
			bases[b] = true
			c, ok := b.(*ast.ChainNode)
			if !ok {
				break
			}
			b = c.Node
		}
	}))
	ast.Walk(&node, visitFunc(func(n *ast.Node) {
		if bases[*n] {
			return
		}
		if isEnvIdent(*n) {
			all = true
			return
		}
		if p, ok := pathOf(*n); ok {
			paths = append(paths, p)
		}
	}))
	return paths, all
}

// ---- the per-row env ----

// envPlan is the tree of fields a program reads: a node is converted whole
// when the program uses it as a value, else only its named children are.
type envPlan struct{ top []*envNode }

type envNode struct {
	name     string
	idx      int
	raw      bool
	whole    bool
	children []*envNode
}

func newEnvPlan(schema *arrow.Schema, paths [][]string, all bool) *envPlan {
	p := &envPlan{}
	if all {
		for _, f := range schema.Fields() {
			paths = append(paths, []string{f.Name})
		}
	}
	for _, path := range paths {
		idx, _, n := resolvePath(schema, path)
		if n == 0 {
			continue
		}
		level := &p.top
		var node *envNode
		var field arrow.Field
		for d := 0; d < n; d++ {
			if d == 0 {
				field = schema.Field(idx[0])
			} else {
				field = field.Type.(*arrow.StructType).Field(idx[d])
			}
			node = nil
			for _, c := range *level {
				if c.idx == idx[d] {
					node = c
					break
				}
			}
			if node == nil {
				node = &envNode{name: path[d], idx: idx[d], raw: isRaw(field)}
				*level = append(*level, node)
			}
			level = &node.children
		}
		node.whole = true
	}
	return p
}

// rowEnv is an envPlan resolved against one batch. It reuses its maps from
// row to row: a program never keeps its env.
type rowEnv struct {
	slots []envSlot
	m     map[string]any
}

type envSlot struct {
	name     string
	arr      arrow.Array
	raw      bool
	whole    bool
	children []envSlot
	m        map[string]any
}

func (p *envPlan) resolve(rec arrow.RecordBatch) (*rowEnv, error) {
	n := int(rec.NumRows())
	e := &rowEnv{m: make(map[string]any, len(p.top))}
	for _, t := range p.top {
		if t.idx >= int(rec.NumCols()) {
			return nil, fmt.Errorf("column %s is missing from the batch", t.name)
		}
		s, err := resolveSlot(t, rec.Column(t.idx), n)
		if err != nil {
			return nil, err
		}
		e.slots = append(e.slots, s)
	}
	return e, nil
}

func resolveSlot(t *envNode, arr arrow.Array, n int) (envSlot, error) {
	if arr.Len() < n {
		return envSlot{}, fmt.Errorf("column %s has %d rows, the batch %d", t.name, arr.Len(), n)
	}
	s := envSlot{name: t.name, arr: arr, raw: t.raw, whole: t.whole || len(t.children) == 0}
	st, ok := arr.(*array.Struct)
	if s.whole || !ok {
		s.whole = true
		return s, nil
	}
	s.m = make(map[string]any, len(t.children))
	for _, c := range t.children {
		if c.idx >= st.NumField() {
			return envSlot{}, fmt.Errorf("field %s.%s is missing from the batch", t.name, c.name)
		}
		cs, err := resolveSlot(c, st.Field(c.idx), n)
		if err != nil {
			return envSlot{}, err
		}
		s.children = append(s.children, cs)
	}
	return s, nil
}

func (e *rowEnv) row(i int) (map[string]any, error) {
	for k := range e.slots {
		v, err := e.slots[k].value(i)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", e.slots[k].name, err)
		}
		e.m[e.slots[k].name] = v
	}
	return e.m, nil
}

func (s *envSlot) value(i int) (any, error) {
	if s.whole {
		return valueAt(s.arr, i, s.raw)
	}
	if s.arr.IsNull(i) {
		return nil, nil
	}
	for k := range s.children {
		v, err := s.children[k].value(i)
		if err != nil {
			return nil, err
		}
		s.m[s.children[k].name] = v
	}
	return s.m, nil
}

// ---- null-safe rewriting ----

// Names of the helpers the rewritten programs call. They start with the
// reserved prefix, so no visible field can shadow them.
const helperPrefix = "_pipeline_"

var (
	comparisonHelpers = map[string]string{
		"==": helperPrefix + "eq", "!=": helperPrefix + "ne",
		"<": helperPrefix + "lt", "<=": helperPrefix + "le",
		">": helperPrefix + "gt", ">=": helperPrefix + "ge",
		"in": helperPrefix + "in", "contains": helperPrefix + "contains",
		"startsWith": helperPrefix + "startsWith", "endsWith": helperPrefix + "endsWith",
		"matches": helperPrefix + "matches",
	}
	arithmeticHelpers = map[string]string{
		"+": helperPrefix + "add", "-": helperPrefix + "sub",
		"*": helperPrefix + "mul", "/": helperPrefix + "div",
		"%": helperPrefix + "mod", "**": helperPrefix + "pow", "^": helperPrefix + "pow",
	}
	truthHelper = helperPrefix + "truth"
	notHelper   = helperPrefix + "not"
	isNilHelper = helperPrefix + "isnil"
	negHelper   = helperPrefix + "neg"
	fetchHelper = helperPrefix + "fetch"
	fnPrefix    = helperPrefix + "fn_"

	// Builtins that give a meaningful answer for nil keep expr's behaviour.
	nilAware = map[string]bool{"type": true, "string": true, "toJSON": true, "now": true}
	// Predicate builtins whose closure is a condition.
	conditionClosures = map[string]bool{
		"all": true, "none": true, "any": true, "one": true, "filter": true, "count": true,
		"find": true, "findIndex": true, "findLast": true, "findLastIndex": true,
	}
	boolHelpers = map[string]bool{}
)

// nullSafe rewrites a checked tree so that nulls never cause an error:
// comparisons and string operators with a nil operand are false (except a
// comparison with the nil literal), arithmetic and builtins with a nil
// argument give nil, member access, indexing and slicing of nil give nil,
// and conditions treat nil as false.
type nullSafe struct{}

func (nullSafe) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "==", "!=":
			if isNilLit(n.Left) || isNilLit(n.Right) {
				return
			}
			ast.Patch(node, call(comparisonHelpers[n.Operator], n, n.Left, n.Right))
		case "<", "<=", ">", ">=", "contains", "startsWith", "endsWith":
			ast.Patch(node, call(comparisonHelpers[n.Operator], n, n.Left, n.Right))
		case "in":
			ast.Patch(node, call(comparisonHelpers[n.Operator], n, n.Left, constArray(n.Right)))
		case "matches":
			right := n.Right
			if s, ok := right.(*ast.StringNode); ok {
				if re, err := regexp.Compile(s.Value); err == nil {
					right = &ast.ConstantNode{Value: re}
					right.SetLocation(s.Location())
				}
			}
			ast.Patch(node, call(comparisonHelpers[n.Operator], n, n.Left, right))
		case "&&", "and", "||", "or":
			n.Left = truth(n.Left)
			n.Right = truth(n.Right)
		default:
			if h, ok := arithmeticHelpers[n.Operator]; ok {
				ast.Patch(node, call(h, n, n.Left, n.Right))
			}
		}
	case *ast.UnaryNode:
		switch n.Operator {
		case "!", "not":
			ast.Patch(node, call(notHelper, n, n.Node))
		case "-":
			ast.Patch(node, call(negHelper, n, n.Node))
		}
	case *ast.MemberNode:
		if n.Method || isEnvIdent(n.Node) {
			return
		}
		ast.Patch(node, call(fetchHelper, n, n.Node, n.Property))
	case *ast.SliceNode:
		guard(node, n.Node)
	case *ast.CallNode:
		if m, ok := n.Callee.(*ast.MemberNode); ok && m.Method {
			guard(node, m.Node)
		}
	case *ast.BuiltinNode:
		id, ok := builtin.Index[n.Name]
		if !ok || len(n.Arguments) == 0 || nilAware[n.Name] {
			return
		}
		if builtin.Builtins[id].Predicate {
			if conditionClosures[n.Name] && len(n.Arguments) > 1 {
				if p, ok := n.Arguments[1].(*ast.PredicateNode); ok {
					p.Node = truth(p.Node)
				}
			}
			guard(node, n.Arguments[0])
			return
		}
		if _, ok := helpers[fnPrefix+n.Name]; ok {
			ast.Patch(node, call(fnPrefix+n.Name, n, n.Arguments...))
		}
	case *ast.ConditionalNode:
		n.Cond = truth(n.Cond)
	}
}

func isNilLit(n ast.Node) bool {
	_, ok := n.(*ast.NilNode)
	return ok
}

// call builds a call of helper name at the location of at.
func call(name string, at ast.Node, args ...ast.Node) *ast.CallNode {
	callee := &ast.IdentifierNode{Value: name}
	callee.SetLocation(at.Location())
	c := &ast.CallNode{Callee: callee, Arguments: args}
	c.SetLocation(at.Location())
	return c
}

// truth wraps a condition so that nil counts as false; conditions already
// known to be bool are left alone.
func truth(n ast.Node) ast.Node {
	switch x := n.(type) {
	case *ast.BoolNode:
		return n
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok && boolHelpers[id.Value] {
			return n
		}
	}
	return call(truthHelper, n, n)
}

// guard makes *node nil when base is nil. base is evaluated twice, which
// is harmless: expressions have no side effects.
func guard(node *ast.Node, base ast.Node) {
	orig := *node
	nilNode := &ast.NilNode{}
	nilNode.SetLocation(orig.Location())
	c := &ast.ConditionalNode{Cond: call(isNilHelper, orig, base), Exp1: nilNode, Exp2: orig}
	c.SetLocation(orig.Location())
	*node = c
}

// constArray turns an array of literals into one constant, built once.
func constArray(n ast.Node) ast.Node {
	arr, ok := n.(*ast.ArrayNode)
	if !ok {
		return n
	}
	values := make([]any, len(arr.Nodes))
	for i, e := range arr.Nodes {
		v, ok := literal(e)
		if !ok {
			return n
		}
		values[i] = v
	}
	c := &ast.ConstantNode{Value: values}
	c.SetLocation(n.Location())
	return c
}

// literal returns the value of a literal node: nil, bool, int, float64 or
// string, with a sign applied to numbers.
func literal(n ast.Node) (any, bool) {
	switch x := n.(type) {
	case *ast.NilNode:
		return nil, true
	case *ast.BoolNode:
		return x.Value, true
	case *ast.IntegerNode:
		return x.Value, true
	case *ast.FloatNode:
		return x.Value, true
	case *ast.StringNode:
		return x.Value, true
	case *ast.UnaryNode:
		v, ok := literal(x.Node)
		if !ok || (x.Operator != "-" && x.Operator != "+") {
			return nil, false
		}
		switch num := v.(type) {
		case int:
			if x.Operator == "-" {
				return -num, true
			}
			return num, true
		case float64:
			if x.Operator == "-" {
				return -num, true
			}
			return num, true
		}
	}
	return nil, false
}

// ---- helpers ----

var helpers = map[string]*builtin.Function{}

var (
	boolOf2 = reflect.TypeOf(new(func(any, any) bool)).Elem()
	boolOf1 = reflect.TypeOf(new(func(any) bool)).Elem()
)

func init() {
	cmp2 := func(name string, fn func(a, b any) (bool, error)) {
		helpers[name] = &builtin.Function{
			Name:  name,
			Types: []reflect.Type{boolOf2},
			Func: func(args ...any) (any, error) {
				if len(args) != 2 {
					return nil, fmt.Errorf("%s: want 2 arguments", name)
				}
				if runtime.IsNil(args[0]) || runtime.IsNil(args[1]) {
					return false, nil
				}
				return protect(func() (any, error) { return fn(args[0], args[1]) })
			},
		}
		boolHelpers[name] = true
	}
	cmp2(comparisonHelpers["=="], func(a, b any) (bool, error) { return runtime.Equal(a, b), nil })
	cmp2(comparisonHelpers["!="], func(a, b any) (bool, error) { return !runtime.Equal(a, b), nil })
	cmp2(comparisonHelpers["<"], func(a, b any) (bool, error) { return runtime.Less(a, b), nil })
	cmp2(comparisonHelpers["<="], func(a, b any) (bool, error) { return runtime.LessOrEqual(a, b), nil })
	cmp2(comparisonHelpers[">"], func(a, b any) (bool, error) { return runtime.More(a, b), nil })
	cmp2(comparisonHelpers[">="], func(a, b any) (bool, error) { return runtime.MoreOrEqual(a, b), nil })
	cmp2(comparisonHelpers["in"], func(a, b any) (bool, error) { return runtime.In(a, b), nil })
	strOp := func(op string, f func(s, t string) bool) {
		cmp2(comparisonHelpers[op], func(a, b any) (bool, error) {
			s, ok1 := a.(string)
			t, ok2 := b.(string)
			if !ok1 || !ok2 {
				return false, fmt.Errorf("invalid operation: %s %s %s", typeName(a), op, typeName(b))
			}
			return f(s, t), nil
		})
	}
	strOp("contains", strings.Contains)
	strOp("startsWith", strings.HasPrefix)
	strOp("endsWith", strings.HasSuffix)
	cmp2(comparisonHelpers["matches"], func(a, b any) (bool, error) {
		s, ok := a.(string)
		if !ok {
			return false, fmt.Errorf("invalid operation: %s matches %s", typeName(a), typeName(b))
		}
		switch re := b.(type) {
		case *regexp.Regexp:
			return re.MatchString(s), nil
		case string:
			r, err := regexp.Compile(re)
			if err != nil {
				return false, err
			}
			return r.MatchString(s), nil
		}
		return false, fmt.Errorf("invalid operation: string matches %s", typeName(b))
	})

	one := func(name string, fn func(a any) (any, error), isBool bool) {
		f := &builtin.Function{
			Name: name,
			Func: func(args ...any) (any, error) {
				if len(args) != 1 {
					return nil, fmt.Errorf("%s: want 1 argument", name)
				}
				return protect(func() (any, error) { return fn(args[0]) })
			},
		}
		if isBool {
			f.Types = []reflect.Type{boolOf1}
			boolHelpers[name] = true
		}
		helpers[name] = f
	}
	one(truthHelper, func(a any) (any, error) { return truthOf(a) }, true)
	one(notHelper, func(a any) (any, error) {
		b, err := truthOf(a)
		return !b, err
	}, true)
	one(isNilHelper, func(a any) (any, error) { return runtime.IsNil(a), nil }, true)
	one(negHelper, func(a any) (any, error) {
		if runtime.IsNil(a) {
			return nil, nil
		}
		return runtime.Negate(a), nil
	}, false)

	arith := func(op string, fn func(a, b any) any) {
		name := arithmeticHelpers[op]
		helpers[name] = &builtin.Function{
			Name: name,
			Func: func(args ...any) (any, error) {
				if len(args) != 2 {
					return nil, fmt.Errorf("%s: want 2 arguments", name)
				}
				if runtime.IsNil(args[0]) || runtime.IsNil(args[1]) {
					return nil, nil
				}
				return protect(func() (any, error) { return fn(args[0], args[1]), nil })
			},
		}
	}
	arith("+", runtime.Add)
	arith("-", runtime.Subtract)
	arith("*", runtime.Multiply)
	arith("/", func(a, b any) any { return runtime.Divide(a, b) })
	arith("%", func(a, b any) any { return runtime.Modulo(a, b) })
	arith("**", func(a, b any) any { return runtime.Exponent(a, b) })

	helpers[fetchHelper] = &builtin.Function{
		Name: fetchHelper,
		Func: func(args ...any) (any, error) {
			if len(args) != 2 {
				return nil, fmt.Errorf("%s: want 2 arguments", fetchHelper)
			}
			return protect(func() (any, error) { return fetch(args[0], args[1]), nil })
		},
	}

	for _, b := range builtin.Builtins {
		if b.Predicate || nilAware[b.Name] || (b.Fast == nil && b.Func == nil && b.Safe == nil) {
			continue
		}
		b := b
		name := fnPrefix + b.Name
		helpers[name] = &builtin.Function{
			Name: name,
			Func: func(args ...any) (any, error) {
				for _, a := range args {
					if runtime.IsNil(a) {
						return nil, nil
					}
				}
				return protect(func() (any, error) { return callBuiltin(b, args) })
			},
		}
	}
}

// callBuiltin calls an expr builtin the way its VM would.
func callBuiltin(b *builtin.Function, args []any) (any, error) {
	switch {
	case b.Fast != nil && len(args) == 1:
		return b.Fast(args[0]), nil
	case b.Safe != nil:
		v, mem, err := b.Safe(args...)
		if err == nil && mem > conf.DefaultMemoryBudget {
			return nil, fmt.Errorf("memory budget exceeded")
		}
		return v, err
	case b.Func != nil:
		return b.Func(args...)
	}
	return nil, fmt.Errorf("%s: wrong number of arguments", b.Name)
}

// truthOf is a condition's value: nil is false; anything but bool is an
// error.
func truthOf(v any) (bool, error) {
	switch b := v.(type) {
	case nil:
		return false, nil
	case bool:
		return b, nil
	}
	if runtime.IsNil(v) {
		return false, nil
	}
	return false, fmt.Errorf("expected bool, got %s", typeName(v))
}

// fetch is member access and indexing: nil for a nil base, a missing key
// or an index out of range.
func fetch(from, key any) any {
	if runtime.IsNil(from) {
		return nil
	}
	switch f := from.(type) {
	case map[string]any:
		k, ok := key.(string)
		if !ok {
			panic(fmt.Sprintf("cannot use %s as a key of a map", typeName(key)))
		}
		return f[k]
	case []any:
		i := runtime.ToInt(key)
		if i < 0 {
			i += len(f)
		}
		if i < 0 || i >= len(f) {
			return nil
		}
		return f[i]
	}
	v := reflect.ValueOf(from)
	if k := v.Kind(); k == reflect.Slice || k == reflect.Array || k == reflect.String {
		i := runtime.ToInt(key)
		if i < 0 {
			i += v.Len()
		}
		if i < 0 || i >= v.Len() {
			return nil
		}
	}
	return runtime.Fetch(from, key)
}

// protect turns a panic in expr's runtime helpers (which report type
// errors that way) into an error.
func protect(f func() (any, error)) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("%v", r)
			}
		}
	}()
	return f()
}
