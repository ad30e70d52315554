// Command demomodel is a stand-in for a classification model endpoint, for
// `make demo-classify` and the transform "http" benchmark: it answers each
// POSTed JSON array of {"text": …} with one {"label", "confidence"} per
// record, in order, by keywords.
//
// It is cheap, so that it weighs little on what a benchmark measures: the
// usual body (objects with one plain "text" string each) is read by a small
// scanner and the answer is built from ready-made objects (anything else
// goes through encoding/json, with the same result), and it runs on one
// thread unless GOMAXPROCS says otherwise.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

var intents = []struct {
	label string
	words []string
}{
	{"cancellation", []string{"cancel", "säga upp", "terminate"}},
	{"billing", []string{"bill", "invoice", "faktura", "charge", "price"}},
	{"technical", []string{"router", "wifi", "internet", "slow", "outage", "connection"}},
}

const (
	otherLabel      = "other"
	matchConfidence = 0.9
	otherConfidence = 0.5
)

func classify(text string) (string, float64) {
	t := strings.ToLower(text)
	for _, in := range intents {
		for _, w := range in.words {
			if strings.Contains(t, w) {
				return in.label, matchConfidence
			}
		}
	}
	return otherLabel, otherConfidence
}

// answers are the encoded results, by label index (len(intents) for
// "other"), as encoding/json writes {"label": …, "confidence": …}.
var answers = func() [][]byte {
	enc := func(label string, conf float64) []byte {
		b, err := json.Marshal(map[string]any{"label": label, "confidence": conf})
		if err != nil {
			panic(err)
		}
		return b
	}
	out := make([][]byte, 0, len(intents)+1)
	for _, in := range intents {
		out = append(out, enc(in.label, matchConfidence))
	}
	return append(out, enc(otherLabel, otherConfidence))
}()

// words are the keywords as bytes, by label index.
var words = func() [][][]byte {
	out := make([][][]byte, len(intents))
	for i, in := range intents {
		for _, w := range in.words {
			out[i] = append(out[i], []byte(w))
		}
	}
	return out
}()

// classifyLower is classify over a text already lower-cased, returning the
// label's index in answers.
func classifyLower(t []byte) int {
	for i, ws := range words {
		for _, w := range ws {
			if bytes.Contains(t, w) {
				return i
			}
		}
	}
	return len(intents)
}

// appendLower appends s lower-cased as strings.ToLower does for valid UTF-8.
func appendLower(dst, s []byte, ascii bool) []byte {
	if ascii {
		n := len(dst)
		dst = append(dst, s...)
		for i, c := range dst[n:] {
			if 'A' <= c && c <= 'Z' {
				dst[n+i] = c + 'a' - 'A'
			}
		}
		return dst
	}
	for len(s) > 0 {
		if c := s[0]; c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			s = s[1:]
			continue
		}
		r, n := utf8.DecodeRune(s)
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
		s = s[n:]
	}
	return dst
}

// scanner reads the usual request body: [{"text": "…"}, …].
type scanner struct {
	b     []byte
	i     int
	lower []byte // scratch for a lower-cased text
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str reads a string without escapes or control characters, in valid
// UTF-8; ok is false for any other string.
func (s *scanner) str() (v []byte, ascii, ok bool) {
	if s.peek() != '"' {
		return nil, false, false
	}
	s.i++
	start := s.i
	var or byte
	for s.i < len(s.b) && plain[s.b[s.i]] {
		or |= s.b[s.i]
		s.i++
	}
	if s.i == len(s.b) || s.b[s.i] != '"' {
		return nil, false, false // an escape, a control character or the end
	}
	v = s.b[start:s.i]
	s.i++
	ascii = or < utf8.RuneSelf
	if !ascii && !utf8.Valid(v) {
		return nil, false, false
	}
	return v, ascii, true
}

// plain says which bytes stand for themselves in a JSON string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// record reads one {"text": "…"} object and returns its label's index.
func (s *scanner) record() (int, bool) {
	if s.peek() != '{' {
		return 0, false
	}
	s.i++
	s.ws()
	var text []byte
	ascii := true
	if s.peek() != '}' {
		for {
			key, _, ok := s.str()
			if !ok || string(key) != "text" {
				return 0, false
			}
			s.ws()
			if s.peek() != ':' {
				return 0, false
			}
			s.i++
			s.ws()
			if text, ascii, ok = s.str(); !ok {
				return 0, false
			}
			s.ws()
			if s.peek() == ',' {
				s.i++
				s.ws()
				continue
			}
			break
		}
		if s.peek() != '}' {
			return 0, false
		}
	}
	s.i++
	s.lower = appendLower(s.lower[:0], text, ascii)
	return classifyLower(s.lower), true
}

// appendAnswer appends the answer to body, a JSON array of {"text": …}
// records, as the handler writes it. ok is false when body is not of that
// plain shape (other fields, escapes, anything unusual): the caller then
// decodes it with encoding/json.
func (s *scanner) appendAnswer(dst, body []byte) ([]byte, bool) {
	s.b, s.i = body, 0
	start := len(dst)
	s.ws()
	if s.peek() != '[' {
		return dst[:start], false
	}
	s.i++
	dst = append(dst, '[')
	s.ws()
	if s.peek() != ']' {
		for n := 0; ; n++ {
			label, ok := s.record()
			if !ok {
				return dst[:start], false
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, answers[label]...)
			s.ws()
			if s.peek() == ',' {
				s.i++
				s.ws()
				continue
			}
			break
		}
		if s.peek() != ']' {
			return dst[:start], false
		}
	}
	s.i++
	s.ws()
	if s.i != len(s.b) {
		return dst[:start], false
	}
	return append(dst, ']', '\n'), true
}

// decodeAnswer is the general path: the body decoded by encoding/json.
func decodeAnswer(body []byte) ([]byte, error) {
	var recs []struct {
		Text string `json:"text"`
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&recs); err != nil {
		return nil, err
	}
	out := make([]map[string]any, len(recs))
	for i, rec := range recs {
		label, conf := classify(rec.Text)
		out[i] = map[string]any{"label": label, "confidence": conf}
	}
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(out); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

type buffers struct{ body, out, lower []byte }

var pool = sync.Pool{New: func() any { return &buffers{} }}

func handle(w http.ResponseWriter, r *http.Request) {
	bufs := pool.Get().(*buffers)
	defer pool.Put(bufs)
	body := bytes.NewBuffer(bufs.body[:0])
	if r.ContentLength > 0 {
		body.Grow(int(r.ContentLength))
	}
	_, err := body.ReadFrom(r.Body)
	bufs.body = body.Bytes()
	if err != nil {
		http.Error(w, "want a JSON array of records: "+err.Error(), http.StatusBadRequest)
		return
	}
	s := scanner{lower: bufs.lower}
	out, ok := s.appendAnswer(bufs.out[:0], bufs.body)
	bufs.lower = s.lower
	if !ok {
		if out, err = decodeAnswer(bufs.body); err != nil {
			http.Error(w, "want a JSON array of records: "+err.Error(), http.StatusBadRequest)
			return
		}
	} else {
		bufs.out = out
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.Write(out)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8788", "where to listen")
	flag.Parse()
	if os.Getenv("GOMAXPROCS") == "" {
		// One thread serves a pipeline's few concurrent requests (about
		// 20,000 a second) and keeps the stand-in from contending for the
		// cores with the pipeline beside it: a real model runs elsewhere.
		runtime.GOMAXPROCS(1)
	}
	http.HandleFunc("POST /classify", handle)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("model listening on http://%s/classify\n", ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
