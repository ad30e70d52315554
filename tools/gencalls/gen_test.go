package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
)

type label struct {
	Label      string  `json:"label"`
	Confidence float64 `json:"confidence"`
}

type call struct {
	Event           string            `json:"event"`
	Timestamp       string            `json:"timestamp"`
	DatasetID       string            `json:"dataset_id"`
	RowID           string            `json:"row_id"`
	Text            string            `json:"text"`
	Classifications map[string]label  `json:"classifications"`
	Metadata        map[string]string `json:"metadata"`
}

var (
	topKeys      = []string{"event", "timestamp", "dataset_id", "row_id", "text", "classifications", "metadata"}
	modelKeys    = []string{"contact_reason", "churn_risk", "competitor_mention", "sentiment"}
	metadataKeys = []string{"agent_id", "customer_id", "channel", "queue", "product", "language", "conversation_id"}
	allowed      = map[string][]string{
		"contact_reason":     {"Cancellation", "Billing", "Technical issue", "Upgrade", "Moving", "General inquiry"},
		"churn_risk":         {"High", "Medium", "Low"},
		"competitor_mention": {"Telia", "Tele2", "Telenor", "Tre", "None"},
		"sentiment":          {"Positive", "Neutral", "Negative"},
		"channel":            {"phone", "chat", "email"},
		"queue":              {"retention", "billing", "support", "sales"},
		"language":           {"sv", "en"},
	}
)

func generate(t testing.TB, cfg Config) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Generate(&buf, cfg); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// objectKeys returns the keys of the JSON object in raw, in order.
func objectKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestGenerateShape(t *testing.T) {
	start := time.Date(2025, 11, 14, 9, 0, 0, 0, time.UTC)
	out := generate(t, Config{N: 3000, Seed: 7, Start: start, FirstRow: 90000})
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != 3000 {
		t.Fatalf("%d lines, want 3000", len(lines))
	}
	if !bytes.HasSuffix(out, []byte("\n")) {
		t.Error("output does not end in a newline")
	}

	rowIDs := map[string]bool{}
	var prev time.Time
	var swedishChars, missing, lowConf int
	languages := map[string]int{}
	for i, line := range lines {
		if !json.Valid([]byte(line)) {
			t.Fatalf("line %d is not valid JSON: %s", i+1, line)
		}
		var c call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}

		// Key order, absent models included.
		var raw map[string]json.RawMessage
		_ = json.Unmarshal([]byte(line), &raw)
		if got := objectKeys(t, []byte(line)); !slices.Equal(got, topKeys) {
			t.Fatalf("line %d: keys %v, want %v", i+1, got, topKeys)
		}
		if got := objectKeys(t, raw["metadata"]); !slices.Equal(got, metadataKeys) {
			t.Fatalf("line %d: metadata keys %v, want %v", i+1, got, metadataKeys)
		}
		models := objectKeys(t, raw["classifications"])
		want := slices.DeleteFunc(slices.Clone(modelKeys), func(k string) bool { _, ok := c.Classifications[k]; return !ok })
		if !slices.Equal(models, want) || len(models) < len(modelKeys)-1 {
			t.Fatalf("line %d: models %v: want the order %v with at most one missing", i+1, models, modelKeys)
		}
		if len(models) < len(modelKeys) {
			missing++
		}
		if bytes.Contains(raw["classifications"], []byte("null")) {
			t.Fatalf("line %d: a missing model must be absent, not null: %s", i+1, raw["classifications"])
		}

		if c.Event != "classification.completed" || c.DatasetID != DefaultDatasetID {
			t.Fatalf("line %d: event %q dataset %q", i+1, c.Event, c.DatasetID)
		}
		if want := "row_" + strconv.Itoa(90000+i); c.RowID != want {
			t.Fatalf("line %d: row_id %q, want %q", i+1, c.RowID, want)
		}
		if rowIDs[c.RowID] {
			t.Fatalf("line %d: duplicate row_id %q", i+1, c.RowID)
		}
		rowIDs[c.RowID] = true

		ts, err := time.Parse(time.RFC3339, c.Timestamp)
		if err != nil || !strings.HasSuffix(c.Timestamp, "Z") {
			t.Fatalf("line %d: timestamp %q is not RFC 3339 UTC", i+1, c.Timestamp)
		}
		if i == 0 && !ts.Equal(start) {
			t.Fatalf("first timestamp %v, want %v", ts, start)
		}
		if i > 0 && !ts.After(prev) {
			t.Fatalf("line %d: timestamp %v not after %v", i+1, ts, prev)
		}
		prev = ts

		if strings.TrimSpace(c.Text) == "" || strings.ContainsAny(c.Text, "{}") {
			t.Fatalf("line %d: bad text %q", i+1, c.Text)
		}
		if strings.ContainsAny(c.Text, "åäöÅÄÖ") {
			swedishChars++
		}
		for name, l := range c.Classifications {
			if !slices.Contains(allowed[name], l.Label) {
				t.Fatalf("line %d: %s label %q not in %v", i+1, name, l.Label, allowed[name])
			}
			if l.Confidence <= 0 || l.Confidence >= 1 {
				t.Fatalf("line %d: %s confidence %v outside (0, 1)", i+1, name, l.Confidence)
			}
			if l.Confidence < 0.5 {
				lowConf++
			}
		}
		// The competitor model agrees with the text.
		if cm, ok := c.Classifications["competitor_mention"]; ok {
			words := strings.FieldsFunc(c.Text, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
			for _, comp := range allowed["competitor_mention"][:4] {
				if named := slices.Contains(words, comp); named != (cm.Label == comp) {
					t.Fatalf("line %d: competitor_mention %q but text %q", i+1, cm.Label, c.Text)
				}
			}
		}
		for _, k := range []string{"channel", "queue", "language"} {
			if !slices.Contains(allowed[k], c.Metadata[k]) {
				t.Fatalf("line %d: metadata.%s %q not in %v", i+1, k, c.Metadata[k], allowed[k])
			}
		}
		for k, prefix := range map[string]string{"agent_id": "agent_", "customer_id": "cust_"} {
			if !strings.HasPrefix(c.Metadata[k], prefix) {
				t.Fatalf("line %d: metadata.%s %q lacks prefix %q", i+1, k, c.Metadata[k], prefix)
			}
		}
		if !slices.ContainsFunc(products, func(p product) bool { return p.id == c.Metadata["product"] }) {
			t.Fatalf("line %d: unknown product %q", i+1, c.Metadata["product"])
		}
		languages[c.Metadata["language"]]++
	}

	n := float64(len(lines))
	checks := []struct {
		what     string
		share    float64
		min, max float64
	}{
		{"records lacking one model", float64(missing) / n, 0.06, 0.10},
		{"texts with å, ä or ö", float64(swedishChars) / n, 0.3, 0.7},
		{"Swedish records", float64(languages["sv"]) / n, 0.55, 0.75},
		{"English records", float64(languages["en"]) / n, 0.25, 0.45},
		{"low confidences (< 0.5) per record", float64(lowConf) / n, 0.05, 0.4},
	}
	for _, c := range checks {
		if c.share < c.min || c.share > c.max {
			t.Errorf("share of %s = %.3f, want %.2f..%.2f", c.what, c.share, c.min, c.max)
		}
	}
}

func TestHighChurnShare(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 42} {
		out := generate(t, Config{N: 10000, Seed: seed})
		high, n := 0, 0
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var c struct {
				Classifications struct {
					ChurnRisk *label `json:"churn_risk"`
				} `json:"classifications"`
			}
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				t.Fatal(err)
			}
			n++
			if cr := c.Classifications.ChurnRisk; cr != nil && cr.Label == "High" && cr.Confidence > 0.8 {
				high++
			}
		}
		share := float64(high) / float64(n)
		if share < 0.10 || share > 0.15 {
			t.Errorf("seed %d: %.3f of records have churn_risk High > 0.8, want 0.10..0.15", seed, share)
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	tests := []struct {
		name string
		a, b Config
		same bool
	}{
		{"same seed", Config{N: 500, Seed: 1}, Config{N: 500, Seed: 1}, true},
		{"defaults spelled out", Config{N: 500, Seed: 1}, Config{N: 500, Seed: 1, Start: DefaultStart, FirstRow: 1, DatasetID: DefaultDatasetID}, true},
		{"other seed", Config{N: 500, Seed: 1}, Config{N: 500, Seed: 2}, false},
		{"other first row", Config{N: 500, Seed: 1}, Config{N: 500, Seed: 1, FirstRow: 2}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := generate(t, tt.a), generate(t, tt.b)
			if bytes.Equal(a, b) != tt.same {
				t.Errorf("outputs equal = %v, want %v", !tt.same, tt.same)
			}
		})
	}
	// A prefix of a longer run is the shorter run.
	short, long := generate(t, Config{N: 100, Seed: 9}), generate(t, Config{N: 1000, Seed: 9})
	if !bytes.HasPrefix(long, short) {
		t.Error("the first 100 records of N=1000 differ from N=100")
	}
}

func TestGenerateEdgeCases(t *testing.T) {
	if out := generate(t, Config{N: 0, Seed: 1}); len(out) != 0 {
		t.Errorf("N=0 wrote %d bytes", len(out))
	}
	out := generate(t, Config{N: 1, Seed: 1, DatasetID: `ds_"quoted"`})
	var c call
	if err := json.Unmarshal(out, &c); err != nil || c.DatasetID != `ds_"quoted"` {
		t.Errorf("dataset id with quotes: %v, %q", err, c.DatasetID)
	}
	if err := Generate(failingWriter{}, Config{N: 10000, Seed: 1}); err == nil {
		t.Error("Generate on a failing writer returned nil")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestAppendConfidence(t *testing.T) {
	tests := []struct {
		h    int
		want string
	}{{0, "0.0"}, {5, "0.05"}, {10, "0.1"}, {49, "0.49"}, {80, "0.8"}, {81, "0.81"}, {99, "0.99"}}
	for _, tt := range tests {
		if got := string(appendConfidence(nil, tt.h)); got != tt.want {
			t.Errorf("appendConfidence(%d) = %q, want %q", tt.h, got, tt.want)
		}
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "calls.jsonl")
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		lines   int // on stdout, or in file when -o is a file
		inFile  bool
	}{
		{name: "stdout by default", args: []string{"-n", "3"}, lines: 3},
		{name: "dash is stdout", args: []string{"-n", "4", "-o", "-"}, lines: 4},
		{name: "file", args: []string{"-n", "5", "-seed", "2", "-o", file}, lines: 5, inFile: true},
		{name: "start and first row", args: []string{"-n", "2", "-start", "2026-01-01T00:00:00Z", "-first-row", "1001"}, lines: 2},
		{name: "bad start", args: []string{"-start", "yesterday"}, wantErr: true},
		{name: "negative n", args: []string{"-n", "-1"}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
		{name: "unwritable file", args: []string{"-o", filepath.Join(dir, "no", "such", "dir")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := run(tt.args, &stdout)
			if (err != nil) != tt.wantErr {
				t.Fatalf("run(%q) error = %v, want error %v", tt.args, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			got := stdout.Bytes()
			if tt.inFile {
				if stdout.Len() != 0 {
					t.Errorf("wrote %d bytes to stdout with -o file", stdout.Len())
				}
				if got, err = os.ReadFile(file); err != nil {
					t.Fatal(err)
				}
				if want := generate(t, Config{N: 5, Seed: 2}); !bytes.Equal(got, want) {
					t.Error("file content differs from Generate with the same config")
				}
			}
			if n := bytes.Count(got, []byte("\n")); n != tt.lines {
				t.Errorf("%d lines, want %d", n, tt.lines)
			}
		})
	}
}

// The committed sample must be what the documented command produces.
func TestTestdataUpToDate(t *testing.T) {
	committed, err := os.ReadFile("../../testdata/calls.jsonl")
	if err != nil {
		t.Skipf("no testdata/calls.jsonl: %v", err)
	}
	if want := generate(t, Config{N: 1000, Seed: 1}); !bytes.Equal(committed, want) {
		t.Error("testdata/calls.jsonl is stale: run go run ./tools/gencalls -n 1000 -seed 1 -o testdata/calls.jsonl")
	}
}

func BenchmarkGenerate(b *testing.B) {
	const n = 10000
	b.SetBytes(int64(len(generate(b, Config{N: n, Seed: 1}))))
	for b.Loop() {
		if err := Generate(io.Discard, Config{N: n, Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// The small shape is DESIGN.md's ~150-byte record: valid JSON with an id,
// the churn risk the benchmark filters on, and the same share of high
// churn as the whole records.
func TestGenerateSmall(t *testing.T) {
	var buf bytes.Buffer
	const n = 20000
	if err := Generate(&buf, Config{N: n, Seed: 7, Small: true}); err != nil {
		t.Fatal(err)
	}
	if avg := buf.Len() / n; avg < 135 || avg > 165 {
		t.Fatalf("%d bytes a record on average, want about 150", avg)
	}
	kept := 0
	for i, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		var r struct {
			RowID           string `json:"row_id"`
			Classifications struct {
				ChurnRisk struct {
					Label      string   `json:"label"`
					Confidence *float64 `json:"confidence"`
				} `json:"churn_risk"`
			} `json:"classifications"`
			Metadata struct {
				CustomerID string `json:"customer_id"`
				Queue      string `json:"queue"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, line)
		}
		if r.RowID != fmt.Sprintf("row_%d", i+1) || r.Classifications.ChurnRisk.Confidence == nil || r.Metadata.Queue == "" || r.Metadata.CustomerID == "" {
			t.Fatalf("line %d: %s", i+1, line)
		}
		if *r.Classifications.ChurnRisk.Confidence > 0.8 {
			kept++
		}
	}
	if share := float64(kept) / n; share < 0.4 || share > 0.7 {
		t.Errorf("%.2f of the records have churn_risk.confidence > 0.8, want about the whole records' 0.54", share)
	}
}
