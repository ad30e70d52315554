package config

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes through every stage and the renderers:
// nothing may panic, whatever the input.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "diagnostics", "*", "*.hcl"))
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	f.Add([]byte(`{"source": {"file": {"calls": {"path": "c"}}}, "filter": {"f": {"inputs": ["source.calls"], "where": "a ="}}, "sink": {"webhook": {"crm": {"inputs": ["filter.f", "filter.g"], "text": "{{ x"}}}}`), true)
	f.Add([]byte("filter \"f\" {\n  inputs = [filter.f]\n  where = <<-EOT\n    a\\u00e9 == $${x}\n  EOT\n}\n"), false)
	tseeds, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "transforms", "*", "pipeline.hcl"))
	for _, s := range tseeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	f.Add([]byte(`transform "t" {
  inputs = [source.calls, transform.t]
  set = { "a.b" = "x ?", a = 1, "" = "y" }
  drop = ["a..b", 3]
  keep = "x"
  rename = { "a" = "b.c" }
  on_error = "sometimes"
}
`), false)

	f.Fuzz(func(t *testing.T, src []byte, json bool) {
		name := "fuzz.hcl"
		if json {
			name = "fuzz.hcl.json"
		}
		l := &Loader{
			LookupEnv: func(n string) (string, bool) { return "v", n == "SET" },
			ReadFile:  func(string) ([]byte, error) { return src, nil },
		}
		p, diags := l.LoadBytes(src, name)
		if p == nil {
			t.Fatal("nil pipeline")
		}
		diags = append(diags, CheckPluginTypes(p, testKnown())...)
		cfgs, d := DecodePlugins(p, testInfos)
		diags = append(diags, d...)
		_, d = CheckExpressions(p, CheckOptions{SchemaOf: testSchemaOf, Configs: cfgs, Compiler: fakeCompiler})
		diags = append(diags, d...)

		for _, col := range []bool{false, true} {
			if err := WriteDiagnostics(io.Discard, p.Files, diags, col); err != nil {
				t.Fatal(err)
			}
		}
		for _, dg := range diags {
			_ = CompactDiagnostic(dg)
		}
		for _, fl := range p.Filters {
			p.Readers(fl)
			p.SourcesOf(fl)
			p.SinksOf(fl)
			if fl.Where != nil {
				for line := 0; line < 3; line++ {
					for col := 0; col < len(fl.Where.Src)+2; col++ {
						fl.Where.RangeAt(p.Files, line, col)
					}
				}
			}
		}
		for _, s := range p.Sources {
			p.SinksOf(s)
			if len(p.Filters) < 8 {
				for _, k := range p.Sinks {
					p.Paths(s, k)
				}
			}
		}
		for _, c := range cfgs {
			for _, tm := range c.Templates {
				tm.RangeAt(p.Files, 1, len(tm.Src))
			}
		}
	})
}
