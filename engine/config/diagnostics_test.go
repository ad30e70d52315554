package config

import (
	"bufio"
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/sdk"
)

var update = flag.Bool("update", false, "rewrite the want.err files of testdata/diagnostics from the current output")

// testInfos are the plugins the diagnostics cases know, as the host would
// describe them.
var testInfos = []sdk.Info{
	{
		Kind: sdk.KindSource, Type: "file", Version: "1.0.0",
		Config: []sdk.Attribute{
			{Name: "path", Type: sdk.String, Required: true},
			{Name: "format", Type: sdk.String, Default: "jsonl"},
		},
	},
	{
		Kind: sdk.KindSink, Type: "webhook", Version: "1.0.0",
		Config: []sdk.Attribute{
			{Name: "url", Type: sdk.String, Required: true},
			{Name: "secret", Type: sdk.String},
			{Name: "headers", Type: sdk.MapOf(sdk.String)},
			{Name: "text", Type: sdk.String, Template: true},
		},
	},
	{
		Kind: sdk.KindSink, Type: "slack", Version: "1.0.0",
		Config: []sdk.Attribute{
			{Name: "webhook_url", Type: sdk.String, Required: true},
			{Name: "text", Type: sdk.String, Required: true, Template: true},
		},
	},
}

func testKnown() []PluginType {
	var known []PluginType
	for _, info := range testInfos {
		known = append(known, PluginType{Kind: info.Kind, Type: info.Type})
	}
	return known
}

// testSchema is the classified-conversation record of DESIGN.md.
var testSchema = arrow.NewSchema([]arrow.Field{
	{Name: "event", Type: arrow.BinaryTypes.String},
	{Name: "timestamp", Type: arrow.BinaryTypes.String},
	{Name: "row_id", Type: arrow.BinaryTypes.String},
	{Name: "text", Type: arrow.BinaryTypes.String},
	{Name: "classifications", Type: arrow.StructOf(
		arrow.Field{Name: "churn_risk", Type: arrow.StructOf(
			arrow.Field{Name: "label", Type: arrow.BinaryTypes.String},
			arrow.Field{Name: "confidence", Type: arrow.PrimitiveTypes.Float64},
		)},
		arrow.Field{Name: "contact_reason", Type: arrow.StructOf(
			arrow.Field{Name: "label", Type: arrow.BinaryTypes.String},
			arrow.Field{Name: "confidence", Type: arrow.PrimitiveTypes.Float64},
		)},
	)},
	{Name: "metadata", Type: arrow.StructOf(
		arrow.Field{Name: "queue", Type: arrow.BinaryTypes.String},
		arrow.Field{Name: "customer_id", Type: arrow.BinaryTypes.String},
		arrow.Field{Name: "channel", Type: arrow.BinaryTypes.String},
	)},
}, nil)

// testSchemaOf knows the schema of every source except those named
// "unknown_*", as a source that cannot tell its schema up front.
func testSchemaOf(name string) *arrow.Schema {
	if strings.HasPrefix(name, "unknown_") {
		return nil
	}
	return testSchema
}

// validate runs every stage the way `pipeline validate` does, and returns
// all their diagnostics.
func validate(l *Loader, filenames ...string) (*Pipeline, hcl.Diagnostics) {
	p, diags := l.Load(filenames...)
	diags = append(diags, CheckPluginTypes(p, testKnown())...)
	cfgs, d := DecodePlugins(p, testInfos)
	diags = append(diags, d...)
	_, d = CheckExpressions(p, CheckOptions{SchemaOf: testSchemaOf, Configs: cfgs, Compiler: fakeCompiler})
	return p, append(diags, d...)
}

// readEnv reads a case's optional env file of NAME=value lines.
func readEnv(t *testing.T, path string) map[string]string {
	env := map[string]string{}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return env
	}
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if name, value, ok := strings.Cut(sc.Text(), "="); ok {
			env[name] = value
		}
	}
	return env
}

// TestDiagnostics walks testdata/diagnostics/<case>/ and checks that
// validating pipeline.hcl (and any other *.hcl there, as one pipeline) gives
// exactly the diagnostics in want.err, one a line, in file order:
//
//	FILE:LINE:COL: SEVERITY: SUMMARY: DETAIL
//
// An optional env file sets environment variables (NAME=value lines); nothing
// else is set. Run with -update to rewrite want.err, then read the diff.
func TestDiagnostics(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "diagnostics", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no cases in testdata/diagnostics")
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			env := readEnv(t, filepath.Join(dir, "env"))
			l := &Loader{LookupEnv: func(name string) (string, bool) {
				v, ok := env[name]
				return v, ok
			}}
			files, err := filepath.Glob(filepath.Join(dir, "*.hcl"))
			if err != nil || len(files) == 0 {
				t.Fatalf("no .hcl file in %s", dir)
			}
			p, diags := validate(l, files...)

			var got strings.Builder
			for _, d := range SortDiagnostics(diags) {
				got.WriteString(strings.ReplaceAll(CompactDiagnostic(d), dir+string(filepath.Separator), ""))
				got.WriteByte('\n')
			}
			// Rendering must work on whatever the stages produced.
			var rendered bytes.Buffer
			if err := WriteDiagnostics(&rendered, p.Files, diags, false); err != nil {
				t.Fatalf("WriteDiagnostics: %v", err)
			}

			wantPath := filepath.Join(dir, "want.err")
			if *update {
				if err := os.WriteFile(wantPath, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != string(want) {
				t.Errorf("diagnostics differ\n--- got\n%s--- want\n%s--- rendered\n%s", got.String(), want, rendered.String())
			}
		})
	}
}
