package expr

import (
	"math"
	"testing"
	"time"
)

func TestAppendValue(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"nil", nil, ""},
		{"string raw", `a "quoted" <b>`, `a "quoted" <b>`},
		{"int", 42, "42"},
		{"negative int", -7, "-7"},
		{"shortest float", 0.91, "0.91"},
		{"whole float", 3.0, "3"},
		{"tiny float", 1e-7, "1e-7"},
		{"huge float", 1e21, "1e+21"},
		{"large float", 1e20, "100000000000000000000"},
		{"NaN", math.NaN(), "NaN"},
		{"infinity", math.Inf(-1), "-Inf"},
		{"bool", true, "true"},
		{"time", time.Date(2025, 11, 14, 9, 22, 47, 0, time.UTC), "2025-11-14T09:22:47Z"},
		{"duration", 1500 * time.Millisecond, "1.5s"},
		{"map sorted", map[string]any{"label": "High", "confidence": 0.91}, `{"confidence":0.91,"label":"High"}`},
		{"nested", map[string]any{"a": []any{1, nil, "x"}, "b": map[string]any{}}, `{"a":[1,null,"x"],"b":{}}`},
		{"no HTML escaping", []any{"<&>"}, `["<&>"]`},
		{"control characters", []any{"a\nb\x01\"\\"}, `["a\nb\u0001\"\\"]`},
		{"invalid utf-8", []any{"a\xffb"}, `["a\ufffdb"]`},
		{"typed slice", []string{"a", "b"}, `["a","b"]`},
		{"int range", []int{1, 2, 3}, `[1,2,3]`},
		{"non-finite in JSON", []any{math.Inf(1)}, `[null]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(appendValue(nil, tc.v)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
