package plan

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

const planHCL = `
source "file" "calls" {
  path = "calls.jsonl"
}

# Declared before what it reads: the plan puts it after.
transform "label" {
  inputs = [filter.risky]
  set    = { band = "risk > 0.9 ? 'very high' : 'high'" }
  keep   = ["row_id", "risk"]
}

filter "risky" {
  inputs   = [transform.score]
  where    = "risk > 0.8"
  on_error = "skip"
}

transform "score" {
  inputs = [source.calls]
  set    = { risk = "confidence * 1.0", "routing.team" = "'tier2'" }
  drop   = ["text"]
}

transform "http" "intent" {
  inputs = [source.calls]
  url    = "http://model"
}

sink "file" "out" {
  inputs = [transform.label, transform.intent]
  when   = "band == 'very high'"
  path   = "out.jsonl"
}
`

func decode(t *testing.T, lines ...string) arrow.RecordBatch {
	t.Helper()
	d := arrowjson.NewDecoder(arrowjson.Options{})
	for _, l := range lines {
		if err := d.Append([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	rec := d.Flush()
	t.Cleanup(rec.Release)
	return rec
}

func rows(t *testing.T, rec arrow.RecordBatch) []string {
	t.Helper()
	enc := arrowjson.NewEncoder()
	var out []string
	for i := 0; i < int(rec.NumRows()); i++ {
		out = append(out, string(enc.AppendRow(nil, rec, i)))
	}
	return out
}

func fieldNames(s *arrow.Schema) []string {
	var out []string
	for _, f := range s.Fields() {
		out = append(out, f.Name)
	}
	return out
}

// buildPlan checks planHCL against the schema of in (nil: unknown) and
// builds its plan.
func buildPlan(t *testing.T, in *arrow.Schema) (*config.Pipeline, *Plan) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.hcl")
	if err := os.WriteFile(path, []byte(planHCL), 0o644); err != nil {
		t.Fatal(err)
	}
	p, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	compiled, diags := config.CheckExpressions(p, config.CheckOptions{SchemaOf: func(string) *arrow.Schema { return in }})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	st := Started{
		Sources:   map[*config.Source]SourcePlugin{},
		Schemas:   map[string]*arrow.Schema{"calls": in},
		FromStart: map[string]bool{"calls": true},
		Sinks:     map[*config.Sink]StartedSink{p.Sinks[0]: {Buffered: true, Templates: map[string]string{"path": "out.jsonl"}}},
	}
	return p, Build(p, compiled, st)
}

// TestBuild: the plan holds the stages in topological order with their
// inputs as node keys, each transform's output schema as validate computed
// it, the expressions the check compiled, and what was started for sinks.
func TestBuild(t *testing.T) {
	rec := decode(t,
		`{"row_id":"a","confidence":0.95,"text":"x"}`,
		`{"row_id":"b","confidence":0.85,"text":"y"}`,
		`{"row_id":"c","confidence":0.5,"text":"z"}`)
	_, pl := buildPlan(t, rec.Schema())

	var keys, inputs []string
	for _, s := range pl.Stages {
		keys = append(keys, s.NodeKey())
		inputs = append(inputs, strings.Join(s.InputKeys(), "+"))
	}
	if want := []string{"transform.score", "filter.risky", "transform.label", "transform.intent"}; !slices.Equal(keys, want) {
		t.Errorf("stages %v, want %v", keys, want)
	}
	if want := []string{"source.calls", "transform.score", "filter.risky", "source.calls"}; !slices.Equal(inputs, want) {
		t.Errorf("stage inputs %v, want %v", inputs, want)
	}
	if _, ok := pl.Stages[3].(AsyncStage); !ok {
		t.Errorf("the transform plugin's stage is %T, not an AsyncStage", pl.Stages[3])
	}
	if !pl.Stages[1].SkipsErrors() || pl.Stages[0].SkipsErrors() {
		t.Error("on_error is not carried to the stages")
	}
	if len(pl.Sources) != 1 || pl.Sources[0].Name != "calls" || !pl.Sources[0].FromStart || pl.Sources[0].Schema != rec.Schema() {
		t.Errorf("sources %+v", pl.Sources)
	}
	sk := pl.Sinks[0]
	if !slices.Equal(sk.Inputs, []string{"transform.label", "transform.intent"}) || sk.When != "band == 'very high'" || sk.WhenPred == nil ||
		!sk.Buffered || sk.Templates["path"] != "out.jsonl" {
		t.Errorf("sink %+v", sk)
	}

	// A transform's output schema is validate's, and what Apply makes.
	score := pl.Stages[0].(*Transform)
	if score.Compiled == nil {
		t.Fatal("the check's compiled transform is not in the plan")
	}
	out := score.OutputSchema(rec.Schema())
	if got := fieldNames(out); !slices.Equal(got, []string{"row_id", "confidence", "risk", "routing"}) {
		t.Errorf("score's output fields %v", got)
	}
	scored, err := score.Apply(rec)
	if err != nil {
		t.Fatal(err)
	}
	defer scored.Release()
	if !scored.Schema().Equal(out) {
		t.Errorf("Apply made %s, OutputSchema said %s", scored.Schema(), out)
	}
	risky, err := pl.Stages[1].Apply(scored)
	if err != nil {
		t.Fatal(err)
	}
	defer risky.Release()
	labelled, err := pl.Stages[2].Apply(risky)
	if err != nil {
		t.Fatal(err)
	}
	defer labelled.Release()
	want := []string{`{"row_id":"a","risk":0.95,"band":"very high"}`, `{"row_id":"b","risk":0.85,"band":"high"}`}
	if got := rows(t, labelled); !slices.Equal(got, want) {
		t.Errorf("through score, risky and label: %v, want %v", got, want)
	}
	if got := pl.Stages[2].(*Transform).OutputSchema(risky.Schema()); !got.Equal(labelled.Schema()) {
		t.Errorf("label's output schema %s, batches %s", got, labelled.Schema())
	}
}

// TestBuildWithoutSchema: when the source's schema is unknown the check
// compiles for syntax only and knows no output schema; the stages take
// their types from the batches that come.
func TestBuildWithoutSchema(t *testing.T) {
	_, pl := buildPlan(t, nil)
	score, risky := pl.Stages[0].(*Transform), pl.Stages[1].(*Filter)
	if pl.Sources[0].Schema != nil || score.OutputSchema(nil) != nil {
		t.Fatal("a schema is known although the source reported none")
	}
	rec := decode(t, `{"row_id":"a","confidence":0.95}`, `{"row_id":"b","confidence":0.2}`)
	scored, err := score.Apply(rec)
	if err != nil {
		t.Fatal(err)
	}
	defer scored.Release()
	kept, err := risky.Apply(scored)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Release()
	if got := rows(t, kept); len(got) != 1 || !strings.Contains(got[0], `"row_id":"a"`) || !strings.Contains(got[0], `"routing":{"team":"tier2"}`) {
		t.Errorf("compiled on the first batch: %v", got)
	}
}
