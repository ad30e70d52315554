package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Content types a body of records may have.
const (
	ContentJSON   = "application/json"
	ContentNDJSON = "application/x-ndjson"
)

// ParseRecords splits a body into records: a JSON object (one record), a
// JSON array of objects, or JSON lines (contentType application/x-ndjson,
// also application/jsonl and application/json-seq-less variants). Each
// record comes back as one compact JSON object that the engine's decoder
// accepts. A problem is a 400 *Error naming the line and column (and the
// record's place); an unknown content type is a 415.
func ParseRecords(contentType string, body []byte) ([][]byte, error) {
	lines, err := recordsType(contentType)
	if err != nil {
		return nil, err
	}
	v := validators.Get().(*validator)
	defer validators.Put(v)
	defer v.reset()
	if lines {
		return v.parseLines(body)
	}
	return v.parseJSON(body)
}

// CheckContentType is ParseRecords' 415 for a content type it does not
// read, without a body: a source checks it before reading one.
func CheckContentType(contentType string) error {
	_, err := recordsType(contentType)
	return err
}

// recordsType tells JSON lines (true) from JSON (false, also when
// contentType is empty), or is a 415.
func recordsType(contentType string) (lines bool, err error) {
	if contentType == "" {
		return false, nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, Errorf(http.StatusUnsupportedMediaType, "Content-Type %q is not valid: send application/json or application/x-ndjson", contentType)
	}
	switch mt {
	case ContentJSON:
		return false, nil
	case ContentNDJSON, "application/jsonl", "application/x-jsonlines", "application/jsonlines":
		return true, nil
	}
	return false, Errorf(http.StatusUnsupportedMediaType, "Content-Type %q is not supported: send application/json (an object or an array of objects) or application/x-ndjson (one object per line)", mt)
}

// IsJSON reports whether contentType is JSON: application/json, a
// structured syntax type such as application/vnd.api+json, or none at all
// (senders that do not say).
func IsJSON(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == ContentJSON || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// validator checks records with the decoder the source uses to read them,
// so that every stored record can be read.
type validator struct {
	dec *arrowjson.Decoder
	n   int
}

var validators = sync.Pool{New: func() any { return &validator{dec: arrowjson.NewDecoder(arrowjson.Options{})} }}

func (v *validator) check(rec []byte) error {
	if err := v.dec.Append(rec); err != nil {
		return err
	}
	if v.n++; v.n >= 1024 {
		v.reset()
	}
	return nil
}

func (v *validator) reset() {
	if rec := v.dec.Flush(); rec != nil {
		rec.Release()
	}
	v.n = 0
}

// lineCol is the 1-based line and column of offset in body.
func lineCol(body []byte, offset int) (int, int) {
	if offset > len(body) {
		offset = len(body)
	}
	line := 1 + bytes.Count(body[:offset], []byte{'\n'})
	col := offset - bytes.LastIndexByte(body[:offset], '\n')
	return line, col
}

func (v *validator) parseLines(body []byte) ([][]byte, error) {
	var out [][]byte
	line := 0
	for rest := body; len(rest) > 0; {
		line++
		var l []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			l, rest = rest[:i], rest[i+1:]
		} else {
			l, rest = rest, nil
		}
		l = bytes.TrimRight(l, "\r")
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		if err := v.check(l); err != nil {
			col := 1
			var se *arrowjson.SyntaxError
			if errors.As(err, &se) {
				col = se.Offset + 1
			}
			return nil, Errorf(http.StatusBadRequest, "line %d, column %d: %s (record %d)", line, col, message(err), len(out)+1)
		}
		out = append(out, bytes.TrimSpace(l))
	}
	if len(out) == 0 {
		return nil, Errorf(http.StatusBadRequest, "the body holds no records: send one JSON object per line")
	}
	return out, nil
}

func (v *validator) parseJSON(body []byte) ([][]byte, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, Errorf(http.StatusBadRequest, "the body is empty: send a JSON object or an array of objects")
	}
	start := len(body) - len(trimmed)
	bad := func(offset int, format string, args ...any) error {
		line, col := lineCol(body, offset)
		return Errorf(http.StatusBadRequest, "line %d, column %d: %s", line, col, fmt.Sprintf(format, args...))
	}
	// invalid names where the body stops being JSON: encoding/json's
	// Compact and Decoder report offsets that are not the body's.
	invalid := func(err error, suffix string) error {
		offset, msg := syntaxErrorAt(body, err)
		return bad(offset, "%s%s", msg, suffix)
	}
	if trimmed[0] != '[' {
		var rec bytes.Buffer
		if err := json.Compact(&rec, trimmed); err != nil {
			return nil, invalid(err, "")
		}
		if err := v.check(rec.Bytes()); err != nil {
			return nil, bad(start, "%s", message(err))
		}
		return [][]byte{rec.Bytes()}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // [
		return nil, invalid(err, "")
	}
	var out [][]byte
	for dec.More() {
		at := int(dec.InputOffset())
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, invalid(err, fmt.Sprintf(" (record %d)", len(out)+1))
		}
		// The element starts after the separator and spaces.
		elemAt := at + bytes.Index(body[at:], raw[:1])
		var rec bytes.Buffer
		if err := json.Compact(&rec, raw); err != nil {
			return nil, invalid(err, fmt.Sprintf(" (record %d)", len(out)+1))
		}
		if err := v.check(rec.Bytes()); err != nil {
			return nil, bad(elemAt, "%s (record %d)", message(err), len(out)+1)
		}
		out = append(out, rec.Bytes())
	}
	if _, err := dec.Token(); err != nil { // ]
		return nil, invalid(err, "")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid(err, "")
	}
	if len(out) == 0 {
		return nil, Errorf(http.StatusBadRequest, "the array holds no records")
	}
	return out, nil
}

// syntaxErrorAt is the byte offset in body where it stops being JSON, and
// what is wrong there; err is what the parse that failed said, used when
// the body as a whole turns out valid (data after a complete array).
func syntaxErrorAt(body []byte, err error) (int, string) {
	// Unmarshal checks the whole body first, counting every byte: its
	// offsets are the body's.
	var raw json.RawMessage
	verr := json.Unmarshal(body, &raw)
	var se *json.SyntaxError
	if errors.As(verr, &se) {
		if se.Error() == "unexpected end of JSON input" {
			// The JSON ends too soon: say so where its text ends.
			return len(bytes.TrimRight(body, " \t\r\n")), jsonMessage(io.ErrUnexpectedEOF)
		}
		return max(int(se.Offset)-1, 0), jsonMessage(verr)
	}
	if err == nil {
		return len(body), "unexpected data after the array"
	}
	return len(body), jsonMessage(err)
}

func jsonMessage(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "the JSON ends too soon"
	}
	return "invalid JSON: " + err.Error()
}

// message is the decoder's complaint without its offset (the caller names
// line and column).
func message(err error) string {
	var se *arrowjson.SyntaxError
	if errors.As(err, &se) {
		return "invalid JSON: " + se.Msg
	}
	return err.Error()
}

// decoder turns stored entries into one batch.
type decoder struct {
	dec *arrowjson.Decoder
}

func newDecoder() *decoder { return &decoder{dec: arrowjson.NewDecoder(arrowjson.Options{})} }

func (d *decoder) release() { d.dec.Release() }

// decode makes one batch of the records of entries after record number
// after; last is the number of the last record in entries.
func (d *decoder) decode(source string, entries []sdk.InboxStored, after int64) (arrow.RecordBatch, sdk.Origin, int64, error) {
	origin := sdk.Origin{Name: "inbox", Unit: "row"}
	var last int64
	for _, e := range entries {
		records := bytes.Split(bytes.TrimSuffix(e.Records, []byte{'\n'}), []byte{'\n'})
		if len(records) != e.Count {
			return nil, origin, 0, fmt.Errorf("inbox entry %d holds %d records, not %d", e.First, len(records), e.Count)
		}
		ids := RecordIDs(source, e.Origin, records)
		for i, rec := range records {
			n := e.First + int64(i)
			last = n
			if n <= after {
				continue
			}
			if err := d.dec.Append(rec); err != nil {
				return nil, origin, 0, fmt.Errorf("inbox record %d: %v", n, err)
			}
			origin.Places = append(origin.Places, n)
			origin.IDs = append(origin.IDs, ids[i])
		}
	}
	if len(origin.Places) == 0 {
		return nil, origin, last, nil
	}
	return d.dec.Flush(), origin, last, nil
}
