package config

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// transformCases is the folder of the transform cases, shared with the
// end-to-end tests that run them through the pipeline binary.
var transformCases = filepath.Join("..", "..", "testdata", "transforms")

// transformInfos are the plugins the transform cases use.
var transformInfos = []sdk.Info{
	{Kind: sdk.KindSource, Type: "file", Version: "1.0.0", Config: []sdk.Attribute{
		{Name: "path", Type: sdk.String, Required: true},
		{Name: "format", Type: sdk.String, Default: "jsonl"},
	}},
	{Kind: sdk.KindSink, Type: "file", Version: "1.0.0", Config: []sdk.Attribute{
		{Name: "path", Type: sdk.String, Required: true},
		{Name: "format", Type: sdk.String},
	}},
}

// readJSONL decodes a case's input.jsonl into one batch.
func readJSONL(t *testing.T, path string) arrow.RecordBatch {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := arrowjson.NewDecoder(arrowjson.Options{})
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		if err := d.Append(sc.Bytes()); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	rec := d.Flush()
	t.Cleanup(rec.Release)
	return rec
}

// checkCase validates a case's pipeline.hcl with the real expression
// compiler, every source reading the schema of input.jsonl.
func checkCase(t *testing.T, dir string) (*Pipeline, *Compiled, arrow.RecordBatch, hcl.Diagnostics) {
	t.Helper()
	rec := readJSONL(t, filepath.Join(dir, "input.jsonl"))
	p, diags := Load(filepath.Join(dir, "pipeline.hcl"))
	var known []PluginType
	for _, info := range transformInfos {
		known = append(known, PluginType{Kind: info.Kind, Type: info.Type})
	}
	diags = append(diags, CheckPluginTypes(p, known)...)
	cfgs, d := DecodePlugins(p, transformInfos)
	diags = append(diags, d...)
	compiled, d := CheckExpressions(p, CheckOptions{
		SchemaOf: func(string) *arrow.Schema { return rec.Schema() },
		Configs:  cfgs,
	})
	return p, compiled, rec, append(diags, d...)
}

func compactIn(diags hcl.Diagnostics, dir string) string {
	var b strings.Builder
	for _, d := range SortDiagnostics(diags) {
		b.WriteString(strings.ReplaceAll(CompactDiagnostic(d), dir+string(filepath.Separator), ""))
		b.WriteByte('\n')
	}
	return b.String()
}

func caseDirs(t *testing.T, want string) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(transformCases, "*", want))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no cases with %s in %s", want, transformCases)
	}
	for i := range dirs {
		dirs[i] = filepath.Dir(dirs[i])
	}
	return dirs
}

// TestTransformDiagnostics walks testdata/transforms/<case>/ with a
// want.err and checks that validating pipeline.hcl against the schema of
// input.jsonl gives exactly those diagnostics, in the format of
// TestDiagnostics. Run with -update to rewrite want.err.
func TestTransformDiagnostics(t *testing.T) {
	for _, dir := range caseDirs(t, "want.err") {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			p, _, _, diags := checkCase(t, dir)
			got := compactIn(diags, dir)
			var rendered bytes.Buffer
			if err := WriteDiagnostics(&rendered, p.Files, diags, false); err != nil {
				t.Fatalf("WriteDiagnostics: %v", err)
			}
			wantPath := filepath.Join(dir, "want.err")
			if *update {
				if err := os.WriteFile(wantPath, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("diagnostics differ\n--- got\n%s--- want\n%s--- rendered\n%s", got, want, rendered.String())
			}
		})
	}
}

// TestTransformCases walks testdata/transforms/<case>/ with a want.jsonl:
// it validates pipeline.hcl (no diagnostics allowed), sends input.jsonl as
// one batch from every source through the compiled filters and transforms
// to the one sink (applying its when), and compares what arrives, encoded
// as JSON Lines, with want.jsonl. Run with -update to rewrite want.jsonl.
func TestTransformCases(t *testing.T) {
	for _, dir := range caseDirs(t, "want.jsonl") {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			p, c, rec, diags := checkCase(t, dir)
			if len(diags) > 0 {
				t.Fatalf("diagnostics:\n%s", compactIn(diags, dir))
			}
			if len(p.Sinks) != 1 {
				t.Fatalf("a case has one sink, this one %d", len(p.Sinks))
			}
			var held []arrow.RecordBatch
			defer func() {
				for _, b := range held {
					b.Release()
				}
			}()
			keep := func(b arrow.RecordBatch) arrow.RecordBatch { held = append(held, b); return b }
			out := map[Node][]arrow.RecordBatch{}
			for _, s := range p.Sources {
				out[s] = []arrow.RecordBatch{rec}
			}
			for _, n := range p.Stages {
				for _, in := range n.Upstream() {
					for _, b := range out[in.Node] {
						var next arrow.RecordBatch
						var err error
						switch n := n.(type) {
						case *Filter:
							next, err = c.Where[n].Filter(b)
						case *Transform:
							next, err = c.Transforms[n].Apply(memory.DefaultAllocator, b)
							if err == nil && !next.Schema().Equal(c.OutputSchema[n]) {
								t.Errorf("%s: batch schema %s\nvalidate said %s", n.Addr(), next.Schema(), c.OutputSchema[n])
							}
						}
						if err != nil {
							t.Fatalf("%s: %v", n.Addr(), err)
						}
						out[n] = append(out[n], keep(next))
					}
				}
			}
			sink := p.Sinks[0]
			enc := arrowjson.NewEncoder()
			var got []byte
			for _, in := range sink.Inputs {
				for _, b := range out[in.Node] {
					if when := c.When[sink]; when != nil {
						f, err := when.Filter(b)
						if err != nil {
							t.Fatalf("when: %v", err)
						}
						b = keep(f)
					}
					for i := 0; i < int(b.NumRows()); i++ {
						got = enc.AppendRow(got, b, i)
						got = append(got, '\n')
					}
				}
			}
			wantPath := filepath.Join(dir, "want.jsonl")
			if *update {
				if err := os.WriteFile(wantPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("output differs\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}
