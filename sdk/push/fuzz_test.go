package push

import (
	"bytes"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// FuzzParseRecords: whatever the body, ParseRecords never panics, refuses
// with a 400 or 415 *Error whose line and column (when it names them) are
// in the body, and every record it accepts is one line the source's
// decoder reads back.
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
			checkPosition(t, []byte(body), he.Msg)
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

var position = regexp.MustCompile(`^line (\d+), column (\d+): `)

// checkPosition fails unless the line and column msg names, if any, are in
// body: an existing line, and a column from 1 to one past its last byte.
func checkPosition(t *testing.T, body []byte, msg string) {
	t.Helper()
	m := position.FindStringSubmatch(msg)
	if m == nil {
		return
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	lines := bytes.Split(body, []byte{'\n'})
	if line < 1 || line > len(lines) || col < 1 || col > len(lines[line-1])+1 {
		t.Fatalf("%q names line %d, column %d, outside the body %q (%d lines)", msg, line, col, body, len(lines))
	}
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
		{"application/json", `{"a":1} x`, 400, "line 1, column 9: invalid JSON: invalid character 'x' after top-level value"},
		// A single object, an array: the line and column of the byte where
		// the body stops being JSON, as for JSON lines.
		{"application/json", "{\"a\":1,\n \"b\": }", 400, "line 2, column 7: invalid JSON: invalid character '}'"},
		{"application/json", "\r\n  \n{\"a\":\n tru}", 400, "line 4, column 5: "},
		{"application/json", "{\"a\":\n\"\\u12\"}", 400, "line 2, column 6: "},
		{"application/json", "{\"a\":\n1", 400, "line 2, column 2: the JSON ends too soon"},
		{"application/json", "{\"a\":1,\n\n", 400, "line 1, column 8: the JSON ends too soon"},
		{"application/json", "{\"a\":[1,2,}", 400, "line 1, column 11: "},
		{"application/json", "[{\"a\":1},\n {\"b\": }]", 400, "line 2, column 8: invalid JSON: invalid character '}' looking for beginning of value (record 2)"},
		{"application/json", "[{\"a\":1},\n {\"b\" 2}]", 400, "line 2, column 7: invalid JSON: invalid character '2' after object key (record 2)"},
		{"application/json", "[{\"a\":1}\n x]", 400, "line 2, column 2: "},
		{"application/json", "[{\"a\":1}] \n x", 400, "line 2, column 2: invalid JSON: invalid character 'x' after top-level value"},
		{"application/json", "[\n{\"a\":1},\n{\"b\":", 400, "line 3, column 6: the JSON ends too soon (record 2)"},
		{"application/json", "[\n {\"a\":1},\n 3]", 400, "line 3, column 2: "},
	} {
		_, err := ParseRecords(c.ct, []byte(c.body))
		var he *Error
		if !errors.As(err, &he) || he.Status != c.status || !strings.Contains(he.Msg, c.says) {
			t.Errorf("%s %q: %v; want %d saying %q", c.ct, c.body, err, c.status, c.says)
			continue
		}
		checkPosition(t, []byte(c.body), he.Msg)
	}
	recs, err := ParseRecords("application/json; charset=utf-8", []byte("[ {\"a\": 1,\n \"b\": [1, 2]} ]"))
	if err != nil || len(recs) != 1 || string(recs[0]) != `{"a":1,"b":[1,2]}` {
		t.Errorf("array: %q, %v", recs, err)
	}
}
