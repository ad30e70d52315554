package sinkfile

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

func configure(t *testing.T, path, format string) *Sink {
	t.Helper()
	cfg := map[string]any{"path": path}
	if format != "" {
		cfg["format"] = format
	}
	data, _ := json.Marshal(cfg)
	s := &Sink{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "out", JSON: data}); err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, s *Sink, records ...string) error {
	t.Helper()
	batches, _, err := sdktest.Batches(records, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		if err := s.Write(context.Background(), sdk.NewBatch(b)); err != nil {
			return err
		}
	}
	return nil
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestJSONLAppendsAcrossRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "out.jsonl")
	s := configure(t, path, "")
	if err := write(t, s, `{"row_id":"a","n":1}`, `{"row_id":"b","text":"Hallå"}`); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	s = configure(t, path, "")
	if err := write(t, s, `{"row_id":"c","ok":true}`); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	want := `{"row_id":"a","n":1}` + "\n" + `{"row_id":"b","text":"Hallå"}` + "\n" + `{"row_id":"c","ok":true}` + "\n"
	if got := read(t, path); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestCSVKeepsTheHeaderWhenAppending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	s := configure(t, path, "") // csv from the extension
	if err := write(t, s, `{"row_id":"a","m":{"q":"retention"},"c":0.5}`); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	s = configure(t, path, "")
	if err := write(t, s, `{"row_id":"b","m":{"q":"billing, \"vip\""},"c":1}`); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	want := "row_id,m.q,c\na,retention,0.5\nb,\"billing, \"\"vip\"\"\",1\n"
	if got := read(t, path); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

func TestCSVNewColumnIsAClearError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	s := configure(t, path, "csv")
	if err := write(t, s, `{"a":1}`); err != nil {
		t.Fatal(err)
	}
	err := write(t, s, `{"a":2,"late":"x"}`)
	if err == nil || !strings.Contains(err.Error(), "late") {
		t.Fatalf("got %v, want an error naming the new column", err)
	}
}

func TestConfigureRejectsUnknownFormat(t *testing.T) {
	data, _ := json.Marshal(map[string]any{"path": "x", "format": "xml"})
	err := (&Sink{}).Configure(context.Background(), sdk.Config{JSON: data})
	if err == nil || !strings.Contains(err.Error(), "format") {
		t.Fatalf("got %v", err)
	}
}

func TestSinkConformance(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	cfg, _ := json.Marshal(map[string]any{"path": path})
	sdktest.TestSink(t, func() sdk.Sink { return &Sink{} }, "", sdktest.SinkTest{
		Config:  string(cfg),
		Records: []string{`{"row_id":"r1","x":1}`, `{"row_id":"r2","x":2}`, `{"row_id":"r3","y":"z"}`},
		Setup:   func(testing.TB) { os.Remove(path) },
		Check: func(t testing.TB, sent []sdktest.Record) {
			lines := strings.Split(strings.TrimSpace(read(t.(*testing.T), path)), "\n")
			if len(lines) != len(sent) {
				t.Fatalf("%d lines, want %d", len(lines), len(sent))
			}
			for i, r := range sent {
				if lines[i] != r.JSON {
					t.Errorf("line %d = %s, want %s", i+1, lines[i], r.JSON)
				}
			}
		},
	})
}
