package transformhttp

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// splitArray answers as json.Unmarshal into []json.RawMessage does.
func checkSplit(t *testing.T, data string) {
	t.Helper()
	var want []json.RawMessage
	err := json.Unmarshal([]byte(data), &want)
	wantOK := err == nil && want != nil
	out := make([]json.RawMessage, len(want)+1)
	n, ok := splitArray([]byte(data), out)
	if ok != wantOK {
		t.Fatalf("%q: ok %v, encoding/json: %v (%v)", data, ok, wantOK, err)
	}
	if !ok {
		return
	}
	if n != len(want) {
		t.Fatalf("%q: %d elements, encoding/json: %d", data, n, len(want))
	}
	for i := range want {
		if !bytes.Equal(out[i], want[i]) {
			t.Fatalf("%q: element %d is %q, encoding/json: %q", data, i, out[i], want[i])
		}
	}
}

func TestSplitArrayAsEncodingJSON(t *testing.T) {
	for _, data := range []string{
		`[]`, ` [ ] `, `[1]`, "[\n 1 , \"a\" ,\t{} ]\n", `[{"label":"x","confidence":0.9},null,true,false]`,
		`[-0, 0.5, 1e10, -1.5E-3, 12]`, `[{"a":[1,{"b":"\u00e9\"\\\/\b\f\n\r\t"}]}]`, `["caf` + "\xff" + `"]`,
		`null`, `{}`, `"a"`, `1`, ``, ` `, `[`, `]`, `[1,]`, `[,1]`, `[1 2]`, `[01]`, `[1.]`, `[.5]`, `[1e]`, `[-]`,
		`[+1]`, `[tru]`, `[nul]`, `[True]`, `["a]`, `["\x"]`, `["\u12g4"]`, "[\"a\tb\"]", `[{"a"}]`, `[{"a":}]`,
		`[{"a":1,}]`, `[{1:2}]`, `[] []`, `[1] x`, `[{"a":1}`, `[[[]]]`, `[[[]]`,
		"[" + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "]",
	} {
		checkSplit(t, data)
	}
}

func FuzzSplitArray(f *testing.F) {
	for _, s := range []string{`[]`, `[{"label":"x","confidence":0.9},null]`, `[1,"a",[true]]`, `{"a":1}`, `[1e5,-0.1]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) { checkSplit(t, data) })
}
