package push

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// FuzzParseRecords: whatever the body, ParseRecords never panics, refuses
// with a 400 or 415 *Error, and every record it accepts is one line the
// source's decoder reads back.
func FuzzParseRecords(f *testing.F) {
	for _, s := range []string{
		`{"a":1}`, `[{"a":1},{"b":[1,2,{"c":null}]}]`, "{\"a\":1}\n{\"a\":\"x\"}\n", "{\"a\":1}\r\n\r\n{}", `[]`, `[1]`, `{"_pipeline_id":"x"}`,
		`{"a":1} {"b":2}`, "[{\"a\":\n1}]", `"text"`, `{"a":"\u00e9\ud83d\ude00"}`, "\xef\xbb\xbf{\"bom\":1}", `[{"a":1},`, `{"a":{"b":{"c":[[[[]]]]}}}`,
	} {
		f.Add(s, "application/json")
		f.Add(s, "application/x-ndjson")
	}
	f.Fuzz(func(t *testing.T, body, ct string) {
		recs, err := ParseRecords(ct, []byte(body))
		if err != nil {
			var he *Error
			if !errors.As(err, &he) || (he.Status != http.StatusBadRequest && he.Status != http.StatusUnsupportedMediaType) {
				t.Fatalf("error %v is not a 400 or 415", err)
			}
			return
		}
		dec := arrowjson.NewDecoder(arrowjson.Options{})
		defer dec.Release()
		for i, r := range recs {
			if strings.ContainsAny(string(r), "\n") {
				t.Fatalf("record %d holds a newline: %q", i, r)
			}
			if err := dec.Append(r); err != nil {
				t.Fatalf("record %d (%q) does not read back: %v", i, r, err)
			}
		}
		if rec := dec.Flush(); rec != nil {
			if int(rec.NumRows()) != len(recs) {
				t.Fatalf("%d rows for %d records", rec.NumRows(), len(recs))
			}
			rec.Release()
		}
	})
}

func TestParseRecordsErrors(t *testing.T) {
	for _, c := range []struct {
		ct, body string
		status   int
		says     string
	}{
		{"application/x-ndjson", "{\"a\":1}\n{\"a\": }\n", 400, "line 2, column 7"},
		{"application/json", "[{\"a\":1},\n  {\"a\" 2}]", 400, "line 2"},
		{"application/json", `[{"a":1}, 3]`, 400, "record 2"},
		{"application/json", `{"_pipeline_x":1}`, 400, "_pipeline_"},
		{"application/json", ``, 400, "empty"},
		{"text/plain", `{}`, 415, "text/plain"},
		{"application/json", `{"a":1} x`, 400, "line 1"},
	} {
		_, err := ParseRecords(c.ct, []byte(c.body))
		var he *Error
		if !errors.As(err, &he) || he.Status != c.status || !strings.Contains(he.Msg, c.says) {
			t.Errorf("%s %q: %v; want %d saying %q", c.ct, c.body, err, c.status, c.says)
		}
	}
	recs, err := ParseRecords("application/json; charset=utf-8", []byte("[ {\"a\": 1,\n \"b\": [1, 2]} ]"))
	if err != nil || len(recs) != 1 || string(recs[0]) != `{"a":1,"b":[1,2]}` {
		t.Errorf("array: %q, %v", recs, err)
	}
}
