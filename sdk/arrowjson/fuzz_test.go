package arrowjson

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	sampleRecord,
	`{}`,
	`{"a":1,"b":"x","c":true,"d":null,"e":[1,2.5],"f":{"g":[{"h":null}]}}`,
	`{"a":"1"}`,
	`{"a":[1,"x",null,{"k":[]}]}`,
	`{"a":1,"a":null,"a":{"b":null}}`,
	`{"a.b":null,"c[0]":{"d\\e":null}}`,
	`{"s":"\ud83d\ude00 \ud800 \u00e5 \"q\" \\ \/ \n","åäö":"😀"}`,
	"{\"bad\":\"\xff\xfe\"}",
	`{"n":-0.0e-0,"m":9223372036854775808,"o":1E+2,"p":0.1}`,
	`{"x":[[[]]],"y":[{},{"z":1}],"z":[null]}`,
	`[1]`,
	`{"a":`,
	`{"a":01}`,
	"{\"a\":1}\r\n",
}

// validObject reports whether line is what encoding/json accepts as one
// JSON object (after the line ending and byte order mark the decoder drops).
func validObject(line string) bool {
	line = string(trimLine([]byte(line)))
	return json.Valid([]byte(line)) && strings.HasPrefix(strings.TrimLeft(line, " \t\r\n"), "{")
}

// allowedRejection reports whether err is one of the documented reasons to
// reject a valid JSON object.
func allowedRejection(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "nested deeper than") ||
		strings.Contains(msg, "out of the float64 range") ||
		strings.Contains(msg, "reserved for the engine")
}

// FuzzDecode feeds arbitrary bytes, split into lines, to a decoder: it must
// never panic, a failed Append must not add a row, and whatever it accepts
// must encode to valid JSON.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(strings.Join(fuzzSeeds, "\n")))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoder(Options{})
		defer d.Release()
		e := NewEncoder()
		check := func() {
			rec := d.Flush()
			if rec == nil {
				return
			}
			defer rec.Release()
			for i := 0; i < int(rec.NumRows()); i++ {
				if out := e.AppendRow(nil, rec, i); !json.Valid(out) {
					t.Fatalf("row %d encodes to invalid JSON: %s", i, out)
				}
			}
		}
		for n, line := range bytes.Split(data, []byte("\n")) {
			before := d.Len()
			err := d.Append(line)
			switch {
			case err != nil && d.Len() != before:
				t.Fatalf("Append(%q) failed (%v) but added a row", line, err)
			case err == nil && d.Len() != before+1:
				t.Fatalf("Append(%q) succeeded but Len went %d -> %d", line, before, d.Len())
			}
			if n%3 == 2 {
				check()
			}
		}
		check()
	})
}

// FuzzRoundTrip checks that decoding then encoding any JSON object gives the
// same JSON value, and that the decoder accepts exactly the JSON objects
// encoding/json accepts (apart from the documented limits). The two lines go
// through one decoder, first in separate batches, then in the same one, so
// schema evolution between and within batches is exercised.
func FuzzRoundTrip(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add(s, fuzzSeeds[(i+1)%len(fuzzSeeds)])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		d := NewDecoder(Options{})
		defer d.Release()
		e := NewEncoder()
		var accepted []string
		add := func(line string) {
			err := d.Append([]byte(line))
			valid := validObject(line)
			switch {
			case err != nil && valid && !allowedRejection(err):
				t.Fatalf("rejected a valid JSON object %q: %v", line, err)
			case err == nil && !valid:
				t.Fatalf("accepted %q, which is not a JSON object", line)
			case err == nil:
				accepted = append(accepted, line)
			}
		}
		flush := func() {
			rec := d.Flush()
			if rec == nil {
				return
			}
			defer rec.Release()
			for i, line := range accepted {
				assertSameJSON(t, string(e.AppendRow(nil, rec, i)), string(trimLine([]byte(line))))
			}
			accepted = accepted[:0]
		}
		add(a)
		flush()
		add(b)
		flush()
		add(a)
		add(b)
		add(a)
		flush()
	})
}
