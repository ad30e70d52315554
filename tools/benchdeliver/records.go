package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
)

// template is a record of -records that satisfies the filter, split around
// its row_id value: head + id + tail is the record with that row_id. tail
// ends with the record's closing brace.
type template struct {
	head, tail []byte
}

// readTemplates returns the records of path that satisfy the filter
// (classifications.churn_risk.confidence > 0.8), ready to be given new
// row_ids.
func readTemplates(path string) ([]template, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w (run from the repository root, or pass -records)", err)
	}
	defer f.Close()
	var out []template
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r struct {
			RowID           string `json:"row_id"`
			Classifications struct {
				ChurnRisk *struct {
					Confidence *float64 `json:"confidence"`
				} `json:"churn_risk"`
			} `json:"classifications"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		cr := r.Classifications.ChurnRisk
		if r.RowID == "" || cr == nil || cr.Confidence == nil || !(*cr.Confidence > 0.8) {
			continue
		}
		key := []byte(`"row_id":` + strconv.Quote(r.RowID))
		if bytes.Count(line, key) != 1 || line[len(line)-1] != '}' || bytes.Contains(line, []byte(sentField)) {
			continue
		}
		i := bytes.Index(line, key)
		head := append([]byte(nil), line[:i+len(`"row_id":"`)]...)
		tail := append([]byte(nil), line[i+len(key)-1:]...) // from the closing quote
		out = append(out, template{head: head, tail: tail})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no records with a row_id that satisfy %s", path, where)
	}
	return out, nil
}

// appendRecord appends the i-th template (cycled) with row_id id, and with
// sent_unix_ns when sent is not zero, and a newline.
func appendRecord(b []byte, ts []template, i int, id string, sent int64) []byte {
	t := ts[i%len(ts)]
	b = append(b, t.head...)
	b = append(b, id...)
	if sent == 0 {
		b = append(b, t.tail...)
	} else {
		b = append(b, t.tail[:len(t.tail)-1]...)
		b = append(b, ',')
		b = append(b, sentField...)
		b = strconv.AppendInt(b, sent, 10)
		b = append(b, '}')
	}
	return append(b, '\n')
}

// writeInput writes n matching records, row_id row_1 … row_<n>.
func writeInput(path string, ts []template, n int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var buf []byte
	var size int64
	for i := 0; i < n; i++ {
		buf = appendRecord(buf[:0], ts, i, "row_"+strconv.Itoa(i+1), 0)
		size += int64(len(buf))
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	return size, f.Close()
}

// hcl is the pipeline file: source "file" → filter → sink "webhook" with
// url and secret, and concurrency when it is not the default.
func hcl(name, input, url string, concurrency int) string {
	conc := ""
	if concurrency != defaultConcurrency {
		conc = fmt.Sprintf("  concurrency = %d\n", concurrency)
	}
	return fmt.Sprintf(`pipeline { name = %q }

source "file" "calls" {
  path = %q
}

filter "high_churn" {
  inputs = [source.calls]
  where  = %q
}

sink "webhook" "crm" {
  inputs = [filter.high_churn]
  url    = %q
  secret = %q
%s}
`, name, input, where, url, secret, conc)
}
