package expr

import (
	"errors"
	"reflect"
	"testing"
)

func TestHasPlaceholders(t *testing.T) {
	tests := []struct {
		name string
		s    string
		want bool
	}{
		{"plain", "https://x/customers", false},
		{"placeholder", "https://x/customers/{{ metadata.customer_id }}", true},
		{"unterminated", "hello {{ name", true},
		{"closing only", "a }} b", false},
		{"single brace", "{a}", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := HasPlaceholders(tc.s); got != tc.want {
				t.Errorf("HasPlaceholders(%q) = %v, want %v", tc.s, got, tc.want)
			}
		})
	}
}

func TestTemplateRender(t *testing.T) {
	schema := sampleSchema()
	rec := sampleBatch(t)
	tests := []struct {
		name string
		src  string
		want []string // rows 1..8
	}{
		{"slack text", "Churn risk {{ classifications.churn_risk.confidence }} for {{ metadata.customer_id }}", []string{
			"Churn risk 0.91 for cust_90312", "Churn risk 0.3 for cust_2", "Churn risk  for cust_3", "Churn risk  for ",
			"Churn risk 0.95 for cust_5", "Churn risk 0.8 for cust_6", "Churn risk 0.99 for cust_ü", "Churn risk 0.85 for ",
		}},
		{"url", "https://x/customers/{{metadata.customer_id}}", []string{
			"https://x/customers/cust_90312", "https://x/customers/cust_2", "https://x/customers/cust_3", "https://x/customers/",
			"https://x/customers/cust_5", "https://x/customers/cust_6", "https://x/customers/cust_ü", "https://x/customers/",
		}},
		{"ints", "{{ n }}", []string{"2", "1", "", "0", "2", "3", "10", "-1"}},
		{"floats", "{{ x }}", []string{"1.5", "0.5", "", "0", "1", "2", "10.25", "-0.5"}},
		{"bools", "{{ flag }}", []string{"true", "false", "", "false", "true", "true", "false", "true"}},
		{"struct", "{{ classifications.churn_risk }}", []string{
			`{"confidence":0.91,"label":"High"}`, `{"confidence":0.3,"label":"Low"}`, "", "",
			`{"confidence":0.95,"label":null}`, `{"confidence":0.8,"label":"High"}`, `{"confidence":0.99,"label":"HIGH"}`, `{"confidence":0.85,"label":"High"}`,
		}},
		{"list", "{{ tags }}", []string{`["a","b"]`, `["b"]`, "", `[]`, `["c"]`, `["a"]`, `["b","c"]`, `[]`}},
		{"raw json", "{{ payload }}", []string{`{"k":1,"s":"v"}`, `{"k":2.5}`, "", `{"k":0}`, `{"k":5}`, `{"k":3}`, `{"k":null}`, `{"other":true}`}},
		{"raw json member", "{{ payload.k }}", []string{"1", "2.5", "", "0", "5", "3", "", ""}},
		{"timestamp", "{{ ts }}", []string{"2025-11-14T09:22:47Z", "2024-01-01T00:00:00Z", "", "", "", "", "", ""}},
		{"arithmetic", "{{ n * 2 }}/{{ x * 2 }}", []string{"4/3", "2/1", "/", "0/0", "4/2", "6/4", "20/20.5", "-2/-1"}},
		{"function", "{{ upper(metadata.queue) }}", []string{"RETENTION", "SUPPORT", "", "", "RETENTION", "RETENTION", "ÅTERKÖP", "RETENTION"}},
		{"ternary", "{{ flag ? 'yes' : 'no' }}", []string{"yes", "no", "no", "no", "yes", "yes", "no", "yes"}},
		{"braces in a string", `{{ "}}" }}{{ '{{' }}`, []string{"}}{{", "}}{{", "}}{{", "}}{{", "}}{{", "}}{{", "}}{{", "}}{{"}},
		{"map literal", `{{ {"a": n} }}`, []string{`{"a":2}`, `{"a":1}`, `{"a":null}`, `{"a":0}`, `{"a":2}`, `{"a":3}`, `{"a":10}`, `{"a":-1}`}},
		{"json escaping", `{{ {"s": "<&>\"\n"} }}`, []string{`{"s":"<&>\"\n"}`, `{"s":"<&>\"\n"}`, `{"s":"<&>\"\n"}`, `{"s":"<&>\"\n"}`, `{"s":"<&>\"\n"}`, `{"s":"<&>\"\n"}`, `{"s":"<&>\"\n"}`, `{"s":"<&>\"\n"}`}},
		{"small and large floats", "{{ 0.0000001 }} {{ 1e21 }} {{ 1e20 }}", []string{
			"1e-7 1e+21 100000000000000000000", "1e-7 1e+21 100000000000000000000", "1e-7 1e+21 100000000000000000000", "1e-7 1e+21 100000000000000000000",
			"1e-7 1e+21 100000000000000000000", "1e-7 1e+21 100000000000000000000", "1e-7 1e+21 100000000000000000000", "1e-7 1e+21 100000000000000000000",
		}},
		{"constant", "no placeholders", []string{
			"no placeholders", "no placeholders", "no placeholders", "no placeholders",
			"no placeholders", "no placeholders", "no placeholders", "no placeholders",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, force := range []bool{false, true} {
				tpl, err := compileTemplate(tc.src, schema, force)
				if err != nil {
					t.Fatalf("compile: %v", err)
				}
				out, err := tpl.Render(rec)
				if err != nil {
					t.Fatalf("render (expr only: %v): %v", force, err)
				}
				got := make([]string, out.Len())
				for i := range got {
					if out.IsNull(i) {
						t.Errorf("row %d is null", i+1)
					}
					got[i] = out.Value(i)
				}
				out.Release()
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("expr only: %v:\n got %q\nwant %q", force, got, tc.want)
				}
			}
		})
	}
}

func TestTemplateConstant(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		constant bool
	}{
		{"text", "Churn alert", true},
		{"empty", "", true},
		{"placeholder", "Churn {{ n }}", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := CompileTemplate(tc.src, sampleSchema())
			if err != nil {
				t.Fatal(err)
			}
			s, ok := tpl.Constant()
			if ok != tc.constant || (ok && s != tc.src) {
				t.Errorf("Constant() = %q, %v; want constant %v", s, ok, tc.constant)
			}
		})
	}
}

func TestCompileTemplateErrors(t *testing.T) {
	schema := sampleSchema()
	tests := []struct {
		name         string
		src          string
		line, column int
		msg          string
	}{
		{"unknown field", "Churn {{ classifications.churn_rsk.label }}", 1, 26, "unknown field churn_rsk"},
		{"second placeholder", "{{ n }} and {{ metdata.queue }}", 1, 16, "unknown name metdata"},
		{"second line", "Hello\nx {{ metdata.queue }}", 2, 6, "unknown name metdata"},
		{"unicode before", "Hej då {{ metdata.q }}", 1, 11, "unknown name metdata"},
		{"line inside placeholder", "a {{ n +\n  metdata }}", 2, 3, "unknown name metdata"},
		{"unterminated", "Churn risk {{ classifications.churn_risk.confidence", 1, 12, "unterminated placeholder: {{ without a closing }}"},
		{"unterminated on line 2", "ok {{ n }}\nthen {{ n", 2, 6, "unterminated placeholder: {{ without a closing }}"},
		{"empty", "a {{  }} b", 1, 3, "empty placeholder {{ }}"},
		{"syntax", "a {{ n + }} b", 1, 9, "unexpected token EOF"},
		{"unterminated string", "a {{ 'abc }} b", 1, 11, "literal not terminated"},
		{"reserved column", "{{ _pipeline_id }}", 1, 4, "unknown name _pipeline_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CompileTemplate(tc.src, schema)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			if e.Line != tc.line || e.Column != tc.column || e.Msg != tc.msg {
				t.Errorf("got %d:%d %q, want %d:%d %q", e.Line, e.Column, e.Msg, tc.line, tc.column, tc.msg)
			}
		})
	}
}

func TestTemplateWithoutSchema(t *testing.T) {
	tpl, err := CompileTemplate("{{ metadata.queue }}!", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tpl.Render(sampleBatch(t))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	if got := out.Value(0); got != "retention!" {
		t.Errorf("row 1 = %q, want retention!", got)
	}
	if _, err := CompileTemplate("{{ metadata.queue", nil); err == nil {
		t.Error("unterminated placeholder compiled without a schema")
	}
}

func TestTemplateRowError(t *testing.T) {
	rec := batch(t, sampleSchema(), []string{`{"n":1}`, `{"n":0}`})
	tpl, err := CompileTemplate("{{ 10 % n }}", rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpl.Render(rec)
	var re *RowError
	if !errors.As(err, &re) || re.Row != 2 {
		t.Errorf("error %v, want a RowError for row 2", err)
	}
}
