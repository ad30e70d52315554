package expr

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// FuzzCompile compiles arbitrary sources against the sample schema, as a
// predicate and as a template, and evaluates what compiles over the sample
// rows. Nothing may panic (the package turns panics into "internal error"
// errors, so those fail the target too), and where both the planned and
// the row-by-row evaluation succeed they must agree.
func FuzzCompile(f *testing.F) {
	for _, tc := range predicateCases {
		f.Add(tc.src)
	}
	for _, s := range []string{
		"", "(", "{{", "}}", "{{ n }", "a {{ 'x }} b", "metadata.", "$env", "$env[n]", "#", "#acc",
		"classifications.churn_rsk.label == 'High'", "metdata.queue", "n % 0 == 1", "1 / 0 > 1",
		"tags[-1] == 'b'", "text[0:3] == 'Jag'", "ts.Year() == 2025", "payload[0] == 1",
		"map(tags, # + '!')[0] == 'a!'", "reduce(tags, #acc + #, '') == 'ab'", "repeat('x', 1000000000) == ''",
		"let x = 1; x + n > 2", "metadata?.queue ?? 'none'", "{\"a\": n}.a == 2", "toJSON(metadata)",
		"upper(text) matches '^[A-Z]'", "lower(text) == lower(text)", "n in 1..3", "'a' in tags",
		"Churn {{ classifications.churn_risk.confidence }} for {{ metadata.customer_id }}",
	} {
		f.Add(s)
	}
	schema := sampleSchema()
	rec := batch(f, schema, sampleRows)
	internal := func(t *testing.T, err error) {
		if err != nil && strings.Contains(err.Error(), "internal error") {
			t.Fatalf("internal error: %v", err)
		}
	}
	f.Fuzz(func(t *testing.T, src string) {
		_, err := CompilePredicate(src, nil)
		internal(t, err)
		_, err = CompileTemplate(src, nil)
		internal(t, err)

		p, err := compilePredicate("where", src, schema, false)
		internal(t, err)
		if err != nil {
			// Only expr's own verdict, or a non-boolean result, may reject it:
			// never the planning or the null-safe rewriting.
			if tree, cerr := checkSource(src, schema); cerr == nil && isBoolOrUnknown(tree.Node) {
				t.Fatalf("expr accepts it, CompilePredicate says: %v", err)
			}
		}
		if err == nil {
			var e *Error
			mask, err := p.Eval(rec)
			internal(t, err)
			if errors.As(err, &e) {
				t.Fatalf("compile error at evaluation: %v", err)
			}
			forced, ferr := compilePredicate("where", src, schema, true)
			if ferr != nil {
				t.Fatalf("compiles planned but not row by row: %v", ferr)
			}
			fmask, ferr := forced.Eval(rec)
			internal(t, ferr)
			if err == nil && ferr == nil && !reflect.DeepEqual(mask, fmask) {
				t.Fatalf("planned rows %v, row by row %v", rowsOf(mask), rowsOf(fmask))
			}
			if err == nil {
				out, err := p.Filter(rec)
				internal(t, err)
				if err == nil {
					out.Release()
				}
			}
		}

		tpl, err := compileTemplate(src, schema, false)
		internal(t, err)
		if err != nil && !strings.Contains(src, "{{") {
			t.Fatalf("text without placeholders does not compile as a template: %v", err)
		}
		if err == nil {
			out, err := tpl.Render(rec)
			internal(t, err)
			forced, ferr := compileTemplate(src, schema, true)
			if ferr != nil {
				t.Fatalf("template compiles planned but not with expr only: %v", ferr)
			}
			fout, ferr := forced.Render(rec)
			internal(t, ferr)
			if err == nil && ferr == nil {
				for i := 0; i < out.Len(); i++ {
					if out.Value(i) != fout.Value(i) {
						t.Fatalf("row %d: planned %q, expr only %q", i+1, out.Value(i), fout.Value(i))
					}
				}
			}
			if out != nil {
				out.Release()
			}
			if fout != nil {
				fout.Release()
			}
		}
	})
}
