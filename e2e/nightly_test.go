package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// conversationRow is one line of the grouped export.
type conversationRow struct {
	ConversationID string `json:"conversation_id"`
	MessageCount   int    `json:"message_count"`
	Messages       []struct {
		RowID     string `json:"row_id"`
		Timestamp string `json:"timestamp"`
		Metadata  struct {
			ConversationID string `json:"conversation_id"`
		} `json:"metadata"`
		Classifications map[string]any `json:"classifications"`
	} `json:"messages"`
}

func readConversations(t *testing.T, path string) []conversationRow {
	t.Helper()
	var rows []conversationRow
	for _, r := range readRecords(t, path) {
		var c conversationRow
		if err := json.Unmarshal([]byte(r.raw), &c); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, c)
	}
	return rows
}

func parquetRows(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := pqarrow.ReadTable(context.Background(), f, parquet.NewReaderProperties(memory.DefaultAllocator), pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer tbl.Release()
	return tbl.NumRows()
}

func csvRows(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rows
}

// checkConversations checks that every message of the rows is there once,
// in its own conversation, in timestamp order, and returns the messages by
// conversation.
func checkConversations(t *testing.T, rows []conversationRow) map[string][]string {
	t.Helper()
	seen := map[string]bool{}
	byConv := map[string][]string{}
	for _, c := range rows {
		if c.MessageCount != len(c.Messages) {
			t.Fatalf("%s: message_count %d, %d messages", c.ConversationID, c.MessageCount, len(c.Messages))
		}
		for i, m := range c.Messages {
			if seen[m.RowID] {
				t.Fatalf("message %s exported twice", m.RowID)
			}
			seen[m.RowID] = true
			if m.Metadata.ConversationID != c.ConversationID {
				t.Fatalf("message %s of %s is in the row of %s", m.RowID, m.Metadata.ConversationID, c.ConversationID)
			}
			if i > 0 && c.Messages[i-1].Timestamp > m.Timestamp {
				t.Fatalf("%s: messages out of order: %s before %s", c.ConversationID, c.Messages[i-1].Timestamp, m.Timestamp)
			}
			if len(m.Classifications) == 0 {
				t.Fatalf("message %s lost its classifications", m.RowID)
			}
			byConv[c.ConversationID] = append(byConv[c.ConversationID], m.RowID)
		}
	}
	return byConv
}

// TestNightlyExportExampleRunsAsItIs runs pipelines/nightly-export.hcl
// unchanged against the demo data, then incrementally, then in full.
func TestNightlyExportExampleRunsAsItIs(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	input := copyFile(t, calls(), filepath.Join(dir, "testdata"))
	example := copyFile(t, filepath.Join(repoRoot(), "pipelines", "nightly-export.hcl"), dir)
	out := filepath.Join(dir, ".pipeline", "out", "nightly")
	records := readRecords(t, input)

	res := pipeline(t, dir, nil, "run", "--json", example)
	if res.code != 0 {
		t.Fatalf("run exited %d\n%s", res.code, res.stderr)
	}
	if s := parseSummary(t, res); s.Read != 1000 || s.Sinks["lake"] != 1000 || s.Sinks["analysts"] != 1000 || s.Sinks["conversations"] != 1000 {
		t.Fatalf("summary %+v", s)
	}
	if n := parquetRows(t, filepath.Join(out, "calls.parquet")); n != 1000 {
		t.Fatalf("calls.parquet has %d rows", n)
	}
	rows := csvRows(t, filepath.Join(out, "calls.csv"))
	if len(rows) != 1001 || !strings.Contains(strings.Join(rows[0], ","), "classifications.churn_risk.label") {
		t.Fatalf("calls.csv: %d rows, header %v", len(rows), rows[0])
	}
	convs := readConversations(t, filepath.Join(out, "conversations.jsonl"))
	byConv := checkConversations(t, convs)
	want := map[string]int{}
	for _, r := range records {
		want[r.value["metadata"].(map[string]any)["conversation_id"].(string)]++
	}
	if len(convs) != len(want) || len(byConv) != len(want) {
		t.Fatalf("%d conversation rows for %d conversations", len(convs), len(want))
	}
	for id, n := range want {
		if len(byConv[id]) != n {
			t.Fatalf("%s: %d messages, want %d", id, len(byConv[id]), n)
		}
	}

	// New records: two more messages of the last conversation, and a new
	// conversation. The incremental run exports only them.
	last := records[len(records)-1].value
	lastConv := last["metadata"].(map[string]any)["conversation_id"].(string)
	f, err := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, conv := range []string{lastConv, "conv_new", lastConv} {
		fmt.Fprintf(f, `{"row_id":"late_%d","timestamp":"2025-11-20T10:00:0%dZ","text":"Hej igen","classifications":{"churn_risk":{"label":"High","confidence":0.9}},"metadata":{"conversation_id":%q,"queue":"retention"}}`+"\n", i, 3-i, conv)
	}
	f.Close()
	res = pipeline(t, dir, nil, "run", "--json", example)
	if res.code != 0 || parseSummary(t, res).Read != 3 {
		t.Fatalf("incremental run exited %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if n := parquetRows(t, filepath.Join(out, "calls.parquet")); n != 3 {
		t.Fatalf("the incremental calls.parquet has %d rows; want the 3 new", n)
	}
	if rows := csvRows(t, filepath.Join(out, "calls.csv")); len(rows) != 1004 {
		t.Fatalf("calls.csv has %d rows after appending 3; want 1004", len(rows))
	}
	convs = readConversations(t, filepath.Join(out, "conversations.jsonl"))
	byConv = checkConversations(t, convs)
	tail := convs[len(want):]
	if len(tail) != 2 || tail[0].ConversationID != lastConv || tail[0].MessageCount != 2 || tail[1].ConversationID != "conv_new" {
		t.Fatalf("incremental conversation rows: %+v; want a row of %s with its 2 new messages, then conv_new", tail, lastConv)
	}
	// Ordered by timestamp, not by arrival: late_2 (…:01) before late_0 (…:03).
	if got := tail[0].Messages[0].RowID + "," + tail[0].Messages[1].RowID; got != "late_2,late_0" {
		t.Fatalf("messages %s; want late_2,late_0 (timestamp order)", got)
	}
	if len(byConv[lastConv]) != want[lastConv]+2 {
		t.Fatalf("%s has %d messages over its rows; want %d", lastConv, len(byConv[lastConv]), want[lastConv]+2)
	}

	// A full refresh replaces every file with everything: one row per
	// conversation again.
	res = pipeline(t, dir, nil, "run", "--json", "--full-refresh", example)
	if res.code != 0 || parseSummary(t, res).Read != 1003 {
		t.Fatalf("full refresh exited %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if n := parquetRows(t, filepath.Join(out, "calls.parquet")); n != 1003 {
		t.Fatalf("calls.parquet has %d rows after a full refresh", n)
	}
	if rows := csvRows(t, filepath.Join(out, "calls.csv")); len(rows) != 1004 {
		t.Fatalf("calls.csv has %d rows after a full refresh; want 1004 (replaced, not appended)", len(rows))
	}
	convs = readConversations(t, filepath.Join(out, "conversations.jsonl"))
	byConv = checkConversations(t, convs)
	ids := make([]string, 0, len(convs))
	for _, c := range convs {
		ids = append(ids, c.ConversationID)
	}
	sort.Strings(ids)
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			t.Fatalf("%s has two rows after a full refresh", ids[i])
		}
	}
	if len(byConv[lastConv]) != want[lastConv]+2 {
		t.Fatalf("after a full refresh %s has %d messages", lastConv, len(byConv[lastConv]))
	}
}

func TestNonIncrementalSinkExportsEverythingEveryRun(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	writeFile(t, input, `{"row_id":"a"}`+"\n"+`{"row_id":"b"}`+"\n")
	out := filepath.Join(dir, "snapshot.jsonl")
	writeFile(t, filepath.Join(dir, "full.hcl"), fmt.Sprintf(`
pipeline { name = "snapshot" }
source "file" "in" { path = %q }
sink "file" "snapshot" {
  inputs      = [source.in]
  path        = %q
  incremental = false
}
`, input, out))
	for run, want := range []string{`{"row_id":"a"}` + "\n" + `{"row_id":"b"}` + "\n", `{"row_id":"a"}` + "\n" + `{"row_id":"b"}` + "\n" + `{"row_id":"c"}` + "\n"} {
		if run == 1 {
			f, _ := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString(`{"row_id":"c"}` + "\n")
			f.Close()
		}
		if res := pipeline(t, dir, nil, "run", "full.hcl"); res.code != 0 {
			t.Fatalf("run %d exited %d\n%s", run+1, res.code, res.stderr)
		}
		data, _ := os.ReadFile(out)
		if string(data) != want {
			t.Fatalf("after run %d the snapshot holds\n%s\nwant\n%s", run+1, data, want)
		}
	}

	// A source cannot feed a full and an incremental sink.
	writeFile(t, filepath.Join(dir, "mixed.hcl"), fmt.Sprintf(`
pipeline { name = "mixed" }
source "file" "in" { path = %q }
sink "file" "snapshot" {
  inputs      = [source.in]
  path        = "a.jsonl"
  incremental = false
}
sink "file" "log" {
  inputs = [source.in]
  path   = "b.jsonl"
}
`, input))
	res := pipeline(t, dir, nil, "validate", "mixed.hcl")
	if res.code == 0 || !strings.Contains(res.stderr, "mixed.hcl:4:") || !strings.Contains(res.stderr, `sink "file" "log"`) {
		t.Fatalf("validate exited %d; want an error at mixed.hcl:4 naming the incremental sink\n%s", res.code, res.stderr)
	}
}
