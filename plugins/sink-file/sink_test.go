package sinkfile

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

func configure(t *testing.T, path, format string) *Sink {
	t.Helper()
	return configureWith(t, path, format, false)
}

func configureWith(t *testing.T, path, format string, fullRefresh bool) *Sink {
	t.Helper()
	cfg := map[string]any{"path": path}
	if format != "" {
		cfg["format"] = format
	}
	data, _ := json.Marshal(cfg)
	s := &Sink{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "out", JSON: data, FullRefresh: fullRefresh}); err != nil {
		t.Fatal(err)
	}
	return s
}

// runOnce writes records as one run would: Write, Flush at the end, Close.
func runOnce(t *testing.T, s *Sink, records ...string) {
	t.Helper()
	if err := write(t, s, records...); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
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

var exportRecords = []string{
	`{"row_id":"a","text":"Grüße 👋 日本","classifications":{"churn_risk":{"label":"High","confidence":0.91}},"n":1,"ok":true}`,
	`{"row_id":"b","text":null,"classifications":{"churn_risk":{"label":"Low","confidence":0.2}},"n":2,"ok":false}`,
	`{"row_id":"c","classifications":{"churn_risk":{"label":"Medium","confidence":0.5}},"ok":null}`,
}

func TestJSONArrayIsReplacedByEachRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.json")
	runOnce(t, configure(t, path, ""), exportRecords...)
	var got []json.RawMessage
	if err := json.Unmarshal([]byte(read(t, path)), &got); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, read(t, path))
	}
	if len(got) != len(exportRecords) {
		t.Fatalf("%d records, want %d", len(got), len(exportRecords))
	}
	for i, r := range exportRecords {
		if !sdktest.SameJSON(string(got[i]), r) {
			t.Errorf("record %d = %s, want %s", i, got[i], r)
		}
	}
	// The next (incremental) run's file holds that run's records.
	runOnce(t, configure(t, path, ""), `{"row_id":"d","n":4}`)
	if err := json.Unmarshal([]byte(read(t, path)), &got); err != nil || len(got) != 1 || !sdktest.SameJSON(string(got[0]), `{"row_id":"d","n":4}`) {
		t.Fatalf("after the second run: %s (%v)", read(t, path), err)
	}
}

func TestParquetFileReadsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "calls.parquet")
	runOnce(t, configure(t, path, ""), exportRecords...)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := pqarrow.ReadTable(context.Background(), f, parquet.NewReaderProperties(memory.DefaultAllocator), pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	if tbl.NumRows() != 3 {
		t.Fatalf("%d rows, want 3", tbl.NumRows())
	}
	text := tbl.Column(tbl.Schema().FieldIndices("text")[0]).Data().Chunk(0).(*array.String)
	if text.Value(0) != "Grüße 👋 日本" || !text.IsNull(1) || !text.IsNull(2) {
		t.Fatalf("text column: %v", text)
	}
	cls := tbl.Column(tbl.Schema().FieldIndices("classifications")[0]).Data().Chunk(0).(*array.Struct)
	conf := cls.Field(0).(*array.Struct).Field(1).(*array.Float64)
	if conf.Value(0) != 0.91 || conf.Value(2) != 0.5 {
		t.Fatalf("classifications.churn_risk.confidence: %v", conf)
	}
	if strings.Contains(tbl.Schema().String(), sdk.ReservedPrefix) {
		t.Fatalf("reserved columns written: %v", tbl.Schema())
	}
}

func TestFullRefreshReplacesAnAppendedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	runOnce(t, configure(t, path, ""), `{"row_id":"a"}`, `{"row_id":"b"}`)
	runOnce(t, configure(t, path, ""), `{"row_id":"c"}`)
	runOnce(t, configureWith(t, path, "", true), `{"row_id":"a"}`, `{"row_id":"b"}`, `{"row_id":"c"}`)
	if got, want := read(t, path), `{"row_id":"a"}`+"\n"+`{"row_id":"b"}`+"\n"+`{"row_id":"c"}`+"\n"; got != want {
		t.Fatalf("after a full refresh:\n%s\nwant\n%s", got, want)
	}
}

func TestFailedRunLeavesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.parquet")
	runOnce(t, configure(t, path, ""), exportRecords...)
	before := read(t, path)
	s := configure(t, path, "")
	if err := write(t, s, `{"row_id":"z"}`); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background()) // no Flush: the run failed
	if read(t, path) != before {
		t.Fatal("a failed run changed the file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files left: %v", entries)
	}
}

func TestGzipAppendsMembersThatReadAsOneStream(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.csv.gz")
	runOnce(t, configure(t, path, ""), `{"row_id":"a","q":"Grüße"}`, `{"row_id":"b","q":"x, \"y\""}`)
	runOnce(t, configure(t, path, ""), `{"row_id":"c","q":"z"}`)
	rows, err := csv.NewReader(strings.NewReader(gunzip(t, path))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"row_id", "q"}, {"a", "Grüße"}, {"b", `x, "y"`}, {"c", "z"}}
	if len(rows) != len(want) {
		t.Fatalf("rows %q, want %q", rows, want)
	}
	for i := range want {
		if strings.Join(rows[i], "|") != strings.Join(want[i], "|") {
			t.Fatalf("row %d = %q, want %q", i, rows[i], want[i])
		}
	}
}

func TestOrderByNeedsGroupBy(t *testing.T) {
	data, _ := json.Marshal(map[string]any{"path": "x.jsonl", "order_by": "timestamp"})
	err := (&Sink{}).Configure(context.Background(), sdk.Config{JSON: data, Templates: []string{"order_by"}})
	if err == nil || !strings.Contains(err.Error(), "group_by") {
		t.Fatalf("got %v", err)
	}
}

func configureCfg(t *testing.T, cfg map[string]any, fullRefresh bool) *Sink {
	t.Helper()
	data, _ := json.Marshal(cfg)
	s := &Sink{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "out", JSON: data, FullRefresh: fullRefresh}); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCSVNewFieldOnAnAppendedRunSaysWhatToDo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	runOnce(t, configure(t, path, ""), `{"a":1,"m":{"q":"x"}}`)
	before := read(t, path)
	s := configure(t, path, "")
	err := write(t, s, `{"a":2,"m":{"q":"y"},"late":"x","z":1}`)
	s.Close(context.Background())
	if err == nil {
		t.Fatal("a new field was appended under the old header")
	}
	for _, want := range []string{
		`new fields "late", "z"`,
		"columns (a, m.q)",
		`columns = ["a", "m.q"]`,
		`columns = ["a", "m.q", "late", "z"]`,
		"--full-refresh",
		path,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "NewWriterWithColumns") {
		t.Errorf("error speaks of the Go API:\n%v", err)
	}
	if read(t, path) != before {
		t.Errorf("the file changed: %q", read(t, path))
	}
}

func TestCSVColumnsWritesExactlyThoseAcrossRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	cfg := map[string]any{"path": path, "columns": []string{"m.q", "row_id", "missing", "m"}}
	runOnce(t, configureCfg(t, cfg, false), `{"row_id":"a","m":{"q":"x","r":2},"drop":true}`, `{"row_id":"b"}`)
	// A later run with a field no one declared: dropped, the file goes on.
	runOnce(t, configureCfg(t, cfg, false), `{"row_id":"c","late":1,"m":{"q":"z"}}`)
	want := "m.q,row_id,missing,m\n" +
		"x,a,,\"{\"\"q\"\":\"\"x\"\",\"\"r\"\":2}\"\n" +
		",b,,\n" +
		"z,c,,\"{\"\"q\"\":\"\"z\"\"}\"\n"
	if got := read(t, path); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestCSVColumnsFullRefreshAndEmptyRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	runOnce(t, configure(t, path, ""), `{"a":1}`)
	cfg := map[string]any{"path": path, "columns": []string{"b", "a"}}
	runOnce(t, configureCfg(t, cfg, true), `{"a":2}`, `{"a":3,"b":"x","c":true}`)
	if got, want := read(t, path), "b,a\n,2\nx,3\n"; got != want {
		t.Fatalf("after a full refresh: %q, want %q", got, want)
	}
	runOnce(t, configureCfg(t, cfg, true))
	if got, want := read(t, path), "b,a\n"; got != want {
		t.Fatalf("after an empty full refresh: %q, want %q", got, want)
	}
}

func TestCSVColumnsOtherThanTheFilesAreAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	runOnce(t, configure(t, path, ""), `{"a":1}`)
	s := configureCfg(t, map[string]any{"path": path, "columns": []string{"a", "b"}}, false)
	err := write(t, s, `{"a":2,"b":3}`)
	s.Close(context.Background())
	for _, want := range []string{"columns (a)", `columns = ["a", "b"]`, "--full-refresh", `columns = ["a"]`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if got := read(t, path); got != "a\n1\n" {
		t.Errorf("the file changed: %q", got)
	}
}

func TestConfigureColumns(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  map[string]any
		want string
	}{
		"not csv":   {map[string]any{"path": "x.parquet", "columns": []string{"a"}}, "csv"},
		"empty":     {map[string]any{"path": "x.csv", "columns": []string{}}, "at least one"},
		"twice":     {map[string]any{"path": "x.csv", "columns": []string{"a", "a"}}, `"a" is listed twice`},
		"empty one": {map[string]any{"path": "x.csv", "columns": []string{"a", " "}}, "empty"},
	} {
		t.Run(name, func(t *testing.T) {
			data, _ := json.Marshal(tc.cfg)
			err := (&Sink{}).Configure(context.Background(), sdk.Config{JSON: data})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCancelledRunRemovesItsFileAndKeepsTheOld(t *testing.T) {
	for _, format := range []string{"parquet", "json"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out."+format)
			runOnce(t, configure(t, path, ""), exportRecords...)
			before := read(t, path)

			// The engine cancels the Write stream of a failed run; the SDK
			// then calls neither Flush nor Close.
			s := configure(t, path, "")
			ctx, cancel := context.WithCancel(context.Background())
			batches, _, err := sdktest.Batches([]string{`{"row_id":"z"}`}, 100)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Write(ctx, sdk.NewBatch(batches[0])); err != nil {
				t.Fatal(err)
			}
			if n := len(entries(t, dir)); n != 2 {
				t.Fatalf("%d files while writing, want the old one and the new", n)
			}
			cancel()
			waitFor(t, "the new file to be removed", func() bool { return len(entries(t, dir)) == 1 })
			// A Flush that races the cancellation must not put it in place.
			if err := s.Flush(ctx); err == nil {
				t.Fatal("a Flush after the run was cancelled succeeded")
			}
			if read(t, path) != before {
				t.Fatal("a cancelled run changed the file")
			}
			if names := entries(t, dir); len(names) != 1 {
				t.Fatalf("files left: %v", names)
			}
		})
	}
}

func TestFlushWithAnEndedContextKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.parquet")
	runOnce(t, configure(t, path, ""), exportRecords...)
	before := read(t, path)
	s := configure(t, path, "")
	if err := write(t, s, `{"row_id":"z"}`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Flush(ctx); err == nil {
		t.Fatal("Flush with an ended context succeeded")
	}
	if read(t, path) != before {
		t.Fatal("the file was replaced")
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("files left: %v", names)
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestParquetTypeChangeNamesTheFieldAndTypes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.parquet")
	s := configure(t, path, "")
	if err := write(t, s, `{"row_id":"a","score":3}`); err != nil {
		t.Fatal(err)
	}
	err := write(t, s, `{"row_id":"b","score":"high"}`)
	s.Close(context.Background())
	want := `field "score": the file has int64, this batch has string`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v\nwant the path and %s", err, want)
	}
	if strings.Contains(err.Error(), "schema:") {
		t.Errorf("the error dumps the schemas: %v", err)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("files left by the failed run: %v", names)
	}
}
