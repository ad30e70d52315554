package sinkfile

import (
	"bytes"
	"encoding/csv"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// A run killed while appending a batch leaves the file ending in part of a
// record (the batch was not acked, so its records come again). The next
// run must cut that part off before it appends, or its first record is
// glued to half of another and the file no longer parses.

func TestJSONLTornLastLineIsCutBeforeAppending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	runOnce(t, configure(t, path, ""), `{"row_id":"a"}`, `{"row_id":"b"}`)
	appendRaw(t, path, `{"row_id":"c"}`+"\n"+`{"row_id":"d","upd`) // killed mid-batch
	runOnce(t, configure(t, path, ""), `{"row_id":"d"}`, `{"row_id":"e"}`)
	want := `{"row_id":"a"}` + "\n" + `{"row_id":"b"}` + "\n" + `{"row_id":"c"}` + "\n" + `{"row_id":"d"}` + "\n" + `{"row_id":"e"}` + "\n"
	if got := read(t, path); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

func TestJSONLTornFirstLineLeavesAnEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	appendRaw(t, path, `{"row_id":"a","te`)
	runOnce(t, configure(t, path, ""), `{"row_id":"a"}`)
	if got, want := read(t, path), `{"row_id":"a"}`+"\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestCSVTornRowIsCutBeforeAppending(t *testing.T) {
	for name, torn := range map[string]string{
		"mid-field":             "c,tor",
		"inside a quoted field": "c,\"two\nlines",
		// cut just after a newline that is inside quotes: the file ends
		// in "\n" but not at the end of a row
		"after a quoted newline": "c,\"two\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out.csv")
			runOnce(t, configure(t, path, ""), `{"row_id":"a","q":"x"}`, `{"row_id":"b","q":"one\nmore"}`)
			appendRaw(t, path, torn)
			runOnce(t, configure(t, path, ""), `{"row_id":"c","q":"y"}`)
			rows, err := csv.NewReader(strings.NewReader(read(t, path))).ReadAll()
			if err != nil {
				t.Fatalf("%v\n%q", err, read(t, path))
			}
			want := [][]string{{"row_id", "q"}, {"a", "x"}, {"b", "one\nmore"}, {"c", "y"}}
			if !equalRows(rows, want) {
				t.Fatalf("rows %q, want %q", rows, want)
			}
		})
	}
}

func TestCSVTornHeaderStartsTheFileAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	appendRaw(t, path, "row_id,q")
	runOnce(t, configure(t, path, ""), `{"row_id":"a","q":"x"}`)
	if got, want := read(t, path), "row_id,q\na,x\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestGzipTornMemberIsCutBeforeAppending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl.gz")
	runOnce(t, configure(t, path, ""), `{"row_id":"a"}`)
	good := len(read(t, path))
	// The next batch's member, cut short.
	var m bytes.Buffer
	zw := gzip.NewWriter(&m)
	zw.Write([]byte(`{"row_id":"b"}` + "\n" + `{"row_id":"c"}` + "\n"))
	zw.Close()
	appendRaw(t, path, string(m.Bytes()[:m.Len()-5]))
	runOnce(t, configure(t, path, ""), `{"row_id":"b"}`)
	if got := len(read(t, path)); got <= good {
		t.Fatalf("file is %d bytes, was %d before the torn member", got, good)
	}
	if got, want := gunzip(t, path), `{"row_id":"a"}`+"\n"+`{"row_id":"b"}`+"\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestGzipDamagedInTheMiddleIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl.gz")
	runOnce(t, configure(t, path, ""), `{"row_id":"a"}`)
	runOnce(t, configure(t, path, ""), `{"row_id":"b"}`)
	data := []byte(read(t, path))
	data[20] ^= 0xff // a flipped byte in the first member's compressed data (its header is 10 bytes)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := configure(t, path, "")
	err := write(t, s, `{"row_id":"c"}`)
	s.Close(t.Context())
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--full-refresh") {
		t.Fatalf("appending to a damaged gzip file: %v, want an error naming the file and what to do", err)
	}
	if got := read(t, path); got != string(data) {
		t.Fatal("the damaged file was changed")
	}
}

func appendRaw(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func equalRows(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], "\x00") != strings.Join(b[i], "\x00") {
			return false
		}
	}
	return true
}

// FuzzCSVRowsEnd: whatever the rows hold, a CSV file cut anywhere is cut
// back to exactly the rows that were whole.
func FuzzCSVRowsEnd(f *testing.F) {
	f.Add("a", "b\nc", "\"q\"\n", uint16(7))
	f.Add("", "x,y", "z\r\n", uint16(3))
	f.Fuzz(func(t *testing.T, a, b, c string, cut uint16) {
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		var ends []int
		for _, row := range [][]string{{a, b}, {c}, {b, c, a}} {
			w.Write(row)
			w.Flush()
			ends = append(ends, buf.Len())
		}
		data := buf.Bytes()[:int(cut)%(buf.Len()+1)]
		path := filepath.Join(t.TempDir(), "f.csv")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		file, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		end, err := csvRowsEnd(file)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, e := range ends {
			if e <= len(data) {
				want = e
			}
		}
		if end != int64(want) {
			t.Fatalf("cut at %d of %q: rows end at %d, want %d", len(data), buf.Bytes(), end, want)
		}
	})
}
