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

// appendRow appends record i's projection to dst as a JSON object. A field
// that is null or absent is left out, as the encoder leaves it out of a
// whole record; so is a path through a field that is not an object.
func (n *fieldTree) appendRow(dst []byte, enc *arrowjson.Encoder, rec arrow.RecordBatch, i int) []byte {
	schema := rec.Schema()
	dst = append(dst, '{')
	first := true
	for _, c := range n.children {
		idx := schema.FieldIndices(c.name)
		if len(idx) == 0 {
			continue
		}
		dst, first = c.appendMember(dst, enc, schema.Field(idx[0]), rec.Column(idx[0]), i, first)
	}
	return append(dst, '}')
}

// appendMember appends `"name":value` (preceded by a comma unless first)
// when the value at i is there; first says whether the object is still
// without members afterwards.
func (n *fieldTree) appendMember(dst []byte, enc *arrowjson.Encoder, f arrow.Field, arr arrow.Array, i int, first bool) ([]byte, bool) {
	if arr.IsNull(i) {
		return dst, first
	}
	st, isStruct := arr.(*array.Struct)
	if !n.leaf && !isStruct {
		return dst, first
	}
	if !first {
		dst = append(dst, ',')
	}
	dst = append(arrowjson.AppendString(dst, n.name), ':')
	if n.leaf {
		return enc.AppendValue(dst, f, arr, i), false
	}
	typ := st.DataType().(*arrow.StructType)
	dst = append(dst, '{')
	inner := true
	for _, c := range n.children {
		j, ok := typ.FieldIdx(c.name)
		if !ok {
			continue
		}
		dst, inner = c.appendMember(dst, enc, typ.Field(j), st.Field(j), i, inner)
	}
	return append(dst, '}'), false
}
