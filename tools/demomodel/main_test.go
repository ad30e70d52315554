package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The scanner answers exactly what encoding/json answers, and leaves every
// body it does not read plainly to it.
func TestScannerAnswersAsEncodingJSON(t *testing.T) {
	for _, tc := range []struct {
		body  string
		plain bool // read by the scanner
	}{
		{`[]`, true},
		{` [ ] `, true},
		{`[{"text":"I want to CANCEL my plan"}]`, true},
		{`[{"text":"Jag vill SÄGA UPP mitt abonnemang"},{"text":"Min router är långsam"},{"text":"hej"}]`, true},
		{"[\n {\"text\": \"my Bill is wrong\"} ,\n {} ,{\"text\":\"\"}]\n", true},
		{`[{"text":"a","text":"the Internet is down"}]`, true},
		{`[{"text":"SLOW"},{"text":"ΣΑΣ bill"}]`, true},
		{`[{"text":"a \"quoted\" cancel"}]`, false},
		{`[{"text":"caf\u00e9 invoice"}]`, false},
		{`[{"Text":"cancel"}]`, false},
		{`[{"text":"cancel","id":3}]`, false},
		{`[{"text":null}]`, false},
		{`null`, false},
		{`[{"text":"cancel"}] trailing`, false},
		{"[{\"text\":\"bad \xff utf-8 cancel\"}]", false},
	} {
		want, err := decodeAnswer([]byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		var s scanner
		got, ok := s.appendAnswer(nil, []byte(tc.body))
		if ok != tc.plain {
			t.Errorf("%s: read by the scanner: %v, want %v", tc.body, ok, tc.plain)
		}
		if ok && !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", tc.body, got, want)
		}
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(handle))
	defer srv.Close()
	for _, tc := range []struct{ body, want string }{
		{`[{"text":"please cancel"},{"text":"hello"}]`, `[{"confidence":0.9,"label":"cancellation"},{"confidence":0.5,"label":"other"}]` + "\n"},
		{`[{"text":"the wifi is \"slow\""}]`, `[{"confidence":0.9,"label":"technical"}]` + "\n"},
		{`{"text":"cancel"}`, "want a JSON array of records: json: cannot unmarshal object into Go value of type []struct { Text string \"json:\\\"text\\\"\" }\n"},
	} {
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != tc.want {
			t.Errorf("%s: got %q, want %q", tc.body, got, tc.want)
		}
	}
}

func BenchmarkAnswer(b *testing.B) {
	var body bytes.Buffer
	body.WriteByte('[')
	for i := 0; i < 100; i++ {
		if i > 0 {
			body.WriteByte(',')
		}
		body.WriteString(`{"text":"Min router funkar inte, det står någon DNS error i webbläsaren."}`)
	}
	body.WriteByte(']')
	b.Run("scanner", func(b *testing.B) {
		var s scanner
		var out []byte
		for i := 0; i < b.N; i++ {
			out, _ = s.appendAnswer(out[:0], body.Bytes())
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			decodeAnswer(body.Bytes())
		}
	})
}
