package config

import (
	"fmt"
	"math/big"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/pipelinehq/pipeline/sdk"
)

// Test is a test block, run by `pipeline test`: records given to sources,
// and what each named sink must receive from them.
//
//	test "urgent churn reaches the CRM" {
//	  input "calls" { records = [{ row_id = "r1", ... }] }   # or path = "calls.jsonl"
//	  expect "crm" {
//	    count = 1
//	    where = "priority == 'urgent'"
//	  }
//	  expect "retention" { count = 0 }
//	}
//
// `pipeline run` and `pipeline serve` ignore test blocks; they may live in
// the pipeline's file or in a file beside it (NAME.test.hcl for NAME.hcl).
type Test struct {
	Name      string
	DefRange  hcl.Range
	NameRange hcl.Range
	// Inputs give records to sources; a source without one reads nothing.
	Inputs  []*TestInput
	Expects []*TestExpect
}

// TestInput is an input block of a test: the records a source reads.
type TestInput struct {
	// Source is the source the records replace; nil when the label names
	// none (an error).
	Source     *Source
	DefRange   hcl.Range
	LabelRange hcl.Range
	// Records are the records given inline, as JSON objects.
	Records []TestRecord
	// Path, when set, is a file of JSON lines holding the records: absolute,
	// or relative to the directory of the file that declares the test.
	Path      string
	PathRange hcl.Range

	label string
}

// TestRecord is one inline record: a JSON object, and where it is written.
type TestRecord struct {
	JSON  []byte
	Range hcl.Range
}

// TestExpect is an expect block of a test: what a sink receives.
type TestExpect struct {
	// Sink is the sink it is about; nil when the label names none (an error).
	Sink       *Sink
	DefRange   hcl.Range
	LabelRange hcl.Range
	// Count is how many records the sink receives, -1 when not said.
	Count      int
	CountRange hcl.Range
	// Where, when set, must hold for every record the sink receives.
	Where *Expr

	label string
}

var (
	testBlockSchema = &hcl.BodySchema{
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "input", LabelNames: []string{"source"}},
			{Type: "expect", LabelNames: []string{"sink"}},
		},
	}
	testBlockInputSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "records"}, {Name: "path"}},
	}
	testBlockExpectSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "count"}, {Name: "where"}},
	}
)

// test decodes a test block; its labels are resolved with the references.
func (d *decoder) test(b *hcl.Block) {
	t := &Test{Name: b.Labels[0], DefRange: b.DefRange, NameRange: b.LabelRanges[0]}
	for _, first := range d.p.Tests {
		if first.Name == t.Name {
			d.errorf(&t.NameRange, "Duplicate test name",
				fmt.Sprintf("A test named %q was already declared at %s. Test names must be unique in a pipeline.", t.Name, at(first.DefRange)))
			return
		}
	}
	ctx := d.evalContext(b.DefRange.Filename)
	content, diags := b.Body.Content(testBlockSchema)
	d.diags = append(d.diags, diags...)
	inputs := map[string]*TestInput{}
	expects := map[string]*TestExpect{}
	for _, blk := range content.Blocks {
		switch blk.Type {
		case "input":
			in := &TestInput{label: blk.Labels[0], DefRange: blk.DefRange, LabelRange: blk.LabelRanges[0]}
			if first, ok := inputs[in.label]; ok {
				d.errorf(&in.LabelRange, "Duplicate test input",
					fmt.Sprintf("This test already gives records to source %q at %s; put them in one input block.", in.label, at(first.DefRange)))
				continue
			}
			inputs[in.label] = in
			d.testInput(in, blk, ctx)
			t.Inputs = append(t.Inputs, in)
		case "expect":
			ex := &TestExpect{label: blk.Labels[0], DefRange: blk.DefRange, LabelRange: blk.LabelRanges[0], Count: -1}
			if first, ok := expects[ex.label]; ok {
				d.errorf(&ex.LabelRange, "Duplicate test expectation",
					fmt.Sprintf("This test already says what sink %q receives at %s; put it in one expect block.", ex.label, at(first.DefRange)))
				continue
			}
			expects[ex.label] = ex
			d.testExpect(ex, blk, ctx)
			t.Expects = append(t.Expects, ex)
		}
	}
	if len(t.Expects) == 0 {
		d.errorf(&t.DefRange, "Test expects nothing",
			`A test needs at least one expect "SINK" block saying what a sink receives (count, where or both).`)
	}
	d.p.Tests = append(d.p.Tests, t)
}

func (d *decoder) testInput(in *TestInput, b *hcl.Block, ctx *hcl.EvalContext) {
	content, diags := b.Body.Content(testBlockInputSchema)
	d.diags = append(d.diags, diags...)
	recs, hasRecs := content.Attributes["records"]
	path, hasPath := content.Attributes["path"]
	switch {
	case hasRecs && hasPath:
		d.errorf(path.NameRange.Ptr(), "Conflicting test input",
			"An input gives its records inline (records = [...]) or from a file of JSON lines (path = \"...\"), not both.")
		return
	case !hasRecs && !hasPath:
		d.errorf(&in.DefRange, "Missing test records",
			"An input gives its records inline (records = [{ ... }]) or from a file of JSON lines (path = \"calls.jsonl\").")
		return
	case hasPath:
		p, ok := d.stringAttr(path, ctx, "path names a file of JSON lines, relative to this file's directory.")
		if !ok {
			return
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(b.DefRange.Filename), p)
		}
		in.Path, in.PathRange = p, path.Expr.Range()
		return
	}
	v, vd := recs.Expr.Value(ctx)
	d.diags = append(d.diags, vd...)
	if vd.HasErrors() {
		return
	}
	bad := func(rng hcl.Range, detail string) {
		d.errorf(&rng, "Invalid test records", detail)
	}
	if v.IsNull() || !v.IsWhollyKnown() || !(v.Type().IsTupleType() || v.Type().IsListType()) {
		bad(recs.Expr.Range(), "records is a list of records, like records = [{ row_id = \"r1\", metadata = { queue = \"retention\" } }].")
		return
	}
	// Each record's own range, for naming it in messages.
	var elems []hclsyntax.Expression
	if tc, ok := recs.Expr.(*hclsyntax.TupleConsExpr); ok {
		elems = tc.Exprs
	}
	i := 0
	for it := v.ElementIterator(); it.Next(); i++ {
		_, ev := it.Element()
		rng := recs.Expr.Range()
		if i < len(elems) {
			rng = elems[i].Range()
		}
		if ev.IsNull() || !(ev.Type().IsObjectType() || ev.Type().IsMapType()) {
			bad(rng, fmt.Sprintf("Record %d is not an object: each record is written { field = value, ... }.", i+1))
			continue
		}
		if msg := reservedKey(ev); msg != "" {
			bad(rng, fmt.Sprintf("Record %d: %s", i+1, msg))
			continue
		}
		js, err := ctyjson.Marshal(ev, ev.Type())
		if err != nil {
			bad(rng, fmt.Sprintf("Record %d cannot be written as JSON: %v.", i+1, err))
			continue
		}
		in.Records = append(in.Records, TestRecord{JSON: js, Range: rng})
	}
}

// reservedKey says what is wrong with a record whose top-level field uses
// the engine's reserved prefix, or "".
func reservedKey(v cty.Value) string {
	for it := v.ElementIterator(); it.Next(); {
		k, _ := it.Element()
		if strings.HasPrefix(k.AsString(), sdk.ReservedPrefix) {
			return fmt.Sprintf("the field %q uses the prefix "+sdk.ReservedPrefix+", which the engine reserves for its own columns.", k.AsString())
		}
	}
	return ""
}

func (d *decoder) testExpect(ex *TestExpect, b *hcl.Block, ctx *hcl.EvalContext) {
	content, diags := b.Body.Content(testBlockExpectSchema)
	d.diags = append(d.diags, diags...)
	if attr, ok := content.Attributes["count"]; ok {
		v, vd := attr.Expr.Value(ctx)
		d.diags = append(d.diags, vd...)
		if !vd.HasErrors() {
			n, ok := wholeNumber(v)
			if !ok {
				d.errorf(attr.Expr.Range().Ptr(), "Invalid count", "count is how many records the sink receives: a whole number, 0 or more, without quotes.")
			} else {
				ex.Count, ex.CountRange = n, attr.Expr.Range()
			}
		}
	}
	if attr, ok := content.Attributes["where"]; ok {
		ex.Where = d.exprAttr(attr, ctx)
	}
	if _, ok := content.Attributes["count"]; !ok && ex.Where == nil {
		if _, ok := content.Attributes["where"]; !ok {
			d.errorf(&ex.DefRange, "Expectation says nothing",
				`An expect block says how many records the sink receives (count = 1), what every one of them satisfies (where = "priority == 'urgent'"), or both.`)
		}
	}
}

// wholeNumber is v as a count: a known, non-negative whole number.
func wholeNumber(v cty.Value) (int, bool) {
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.Number {
		return 0, false
	}
	bf := v.AsBigFloat()
	if !bf.IsInt() || bf.Sign() < 0 || bf.Cmp(big.NewFloat(1<<31)) >= 0 {
		return 0, false
	}
	n, _ := bf.Int64()
	return int(n), true
}

// resolveTests points each test's inputs at their sources and its
// expectations at their sinks.
func (d *decoder) resolveTests() {
	names := func(kind Kind) []string {
		var out []string
		if kind == KindSource {
			for _, s := range d.p.Sources {
				out = append(out, s.Name)
			}
		} else {
			for _, s := range d.p.Sinks {
				out = append(out, s.Name)
			}
		}
		return out
	}
	hint := func(kind Kind, name string) string {
		if s := Suggest(name, names(kind)); s != "" {
			return fmt.Sprintf(" Did you mean %q?", s)
		}
		if len(names(kind)) > 0 {
			return fmt.Sprintf(" The pipeline's %ss are %s.", kind, quoteList(names(kind)))
		}
		return ""
	}
	for _, t := range d.p.Tests {
		for _, in := range t.Inputs {
			if in.Source = d.sources[in.label]; in.Source == nil {
				d.errorf(&in.LabelRange, "Test input for an undeclared source",
					fmt.Sprintf("An input block is named after the source whose records it gives; there is no source named %q.%s", in.label, hint(KindSource, in.label)))
			}
		}
		for _, ex := range t.Expects {
			if ex.Sink = d.sinks[ex.label]; ex.Sink == nil {
				d.errorf(&ex.LabelRange, "Test expectation for an undeclared sink",
					fmt.Sprintf("An expect block is named after the sink whose records it checks; there is no sink named %q.%s", ex.label, hint(KindSink, ex.label)))
			}
		}
	}
}
