package transformhttp

import (
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// parsePath splits a dotted path ("metadata.customer_id") into its keys.
func parsePath(p string) ([]string, error) {
	if p == "" {
		return nil, errors.New("the path is empty")
	}
	keys := strings.Split(p, ".")
	for _, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("%q has an empty key: write keys joined by single dots, such as \"metadata.customer_id\"", p)
		}
	}
	return keys, nil
}

// fieldTree is the `fields` projection: the paths, merged into a tree, so
// that "a.b" and "a.c" go into one object "a". A node that is itself listed
// (leaf) is sent whole, whatever else under it is listed.
type fieldTree struct {
	name     string
	leaf     bool
	children []*fieldTree
}

func newFieldTree(paths []string) (*fieldTree, error) {
	root := &fieldTree{}
	for i, p := range paths {
		keys, err := parsePath(p)
		if err != nil {
			return nil, fmt.Errorf("fields[%d]: %w", i, err)
		}
		n := root
		for _, k := range keys {
			if n.leaf {
				break // an enclosing object is sent whole already
			}
			n = n.child(k)
		}
		n.leaf, n.children = true, nil
	}
	return root, nil
}

func (n *fieldTree) child(name string) *fieldTree {
	for _, c := range n.children {
		if c.name == name {
			return c
		}
	}
	c := &fieldTree{name: name}
	n.children = append(n.children, c)
	return c
}

// member is a fieldTree node resolved against one batch's columns, so
// that a record's projection looks nothing up by name.
type member struct {
	key   []byte // the member's name as a JSON string, and the colon
	field arrow.Field
	arr   arrow.Array // nil for a path through a field that is not an object
	leaf  bool
	// children are the listed fields of the object, when it is not sent
	// whole.
	children []member
}

// project resolves the projection's fields among rec's columns; a field
// that rec lacks is left out.
func (n *fieldTree) project(rec arrow.RecordBatch) []member {
	schema := rec.Schema()
	var ms []member
	for _, c := range n.children {
		if idx := schema.FieldIndices(c.name); len(idx) > 0 {
			ms = append(ms, c.member(schema.Field(idx[0]), rec.Column(idx[0])))
		}
	}
	return ms
}

func (n *fieldTree) member(f arrow.Field, arr arrow.Array) member {
	m := member{key: append(arrowjson.AppendString(nil, n.name), ':'), field: f, arr: arr, leaf: n.leaf}
	if n.leaf {
		return m
	}
	st, ok := arr.(*array.Struct)
	if !ok {
		m.arr = nil
		return m
	}
	typ := st.DataType().(*arrow.StructType)
	for _, c := range n.children {
		if j, ok := typ.FieldIdx(c.name); ok {
			m.children = append(m.children, c.member(typ.Field(j), st.Field(j)))
		}
	}
	return m
}

// appendProjection appends record i's projection (ms, resolved against
// its batch) to dst as a JSON object. A field that is null or absent is
// left out, as the encoder leaves it out of a whole record; so is a path
// through a field that is not an object.
func appendProjection(dst []byte, enc *arrowjson.Encoder, ms []member, i int) []byte {
	dst = append(dst, '{')
	first := true
	for k := range ms {
		dst, first = ms[k].append(dst, enc, i, first)
	}
	return append(dst, '}')
}

// append appends `"name":value` (preceded by a comma unless first) when the
// value at i is there; first says whether the object is still without
// members afterwards.
func (m *member) append(dst []byte, enc *arrowjson.Encoder, i int, first bool) ([]byte, bool) {
	if m.arr == nil || m.arr.IsNull(i) {
		return dst, first
	}
	if !first {
		dst = append(dst, ',')
	}
	dst = append(dst, m.key...)
	if m.leaf {
		return enc.AppendValue(dst, m.field, m.arr, i), false
	}
	dst = append(dst, '{')
	inner := true
	for k := range m.children {
		dst, inner = m.children[k].append(dst, enc, i, inner)
	}
	return append(dst, '}'), false
}
