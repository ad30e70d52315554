package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// model is a local classification endpoint: it answers each POSTed array of
// {"text": …} with one {"label": …} per record, in order. fail makes its
// next answers 503; a request holding the record numbered shortAt (see
// classifyInput) gets one result too few.
type model struct {
	mu       sync.Mutex
	delay    time.Duration
	fail     int
	shortAt  int // -1: never
	requests int
	seen     map[string]int // texts classified, with how often
	// numbers are the records classified, by their number, in the order
	// the requests came; reset by the test between runs.
	numbers []int
}

var numberRE = regexp.MustCompile(`\d+`)

func newModel(t *testing.T) (*model, string) {
	m := &model{seen: map[string]int{}, shortAt: -1}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m.mu.Lock()
		defer m.mu.Unlock()
		time.Sleep(m.delay) // a model that takes its time (the test kills the run meanwhile)
		m.requests++
		if m.fail > 0 {
			m.fail--
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		var recs []struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(body, &recs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out := make([]map[string]string, 0, len(recs))
		short := false
		for _, rec := range recs {
			n, _ := strconv.Atoi(numberRE.FindString(rec.Text))
			m.numbers = append(m.numbers, n)
			short = short || n == m.shortAt
			m.seen[rec.Text]++
			label := "other"
			if strings.Contains(strings.ToLower(rec.Text), "cancel") {
				label = "cancel"
			}
			out = append(out, map[string]string{"label": label})
		}
		if short {
			out = out[:len(out)-1]
		}
		json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return m, srv.URL + "/classify"
}

func classifyHCL(input, url, out string) string {
	return classifyHCLRows(input, url, out, 40)
}

// classifyHCLRows is classifyHCL with the source's batches of batchRows.
func classifyHCLRows(input, url, out string, batchRows int) string {
	return fmt.Sprintf(`
pipeline { name = "classify" }

source "file" "calls" {
  path       = %q
  batch_rows = %d
}

transform "http" "intent" {
  inputs     = [source.calls]
  url        = %q
  fields     = ["text"]
  into       = "classifications.intent"
  batch_size = 15
  allow_private_networks = true
  retry {
    schedule = ["0s", "10ms", "10ms", "10ms"]
  }
}

sink "file" "out" {
  inputs = [transform.intent]
  when   = "classifications.intent.label == 'cancel'"
  path   = %q
}
`, input, batchRows, url, out)
}

// classifyText is the text of record i of classifyInput: every third one
// asks to cancel. The number in it is the record's.
func classifyText(i int) string {
	if i%3 == 0 {
		return fmt.Sprintf("I want to cancel, call %d", i)
	}
	return fmt.Sprintf("question %d about my bill", i)
}

func classifyInput(t *testing.T, dir string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"row_id":"r%03d","text":%q}`+"\n", i, classifyText(i))
	}
	path := filepath.Join(dir, "calls.jsonl")
	writeFile(t, path, b.String())
	return path
}

// cancellations are the whole records classifyHCL's sink gets for records
// from to to-1 of classifyInput: the cancellations, each as read with its
// classification merged in, in input order.
func cancellations(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		if i%3 == 0 {
			out = append(out, fmt.Sprintf(`{"row_id":"r%03d","text":%q,"classifications":{"intent":{"label":"cancel"}}}`, i, classifyText(i)))
		}
	}
	return out
}

// checkRecords compares every field of every line of got with want, in order.
func checkRecords(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d\ngot:\n%s\nwant:\n%s", what, len(got), len(want), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if !jsonEqual([]byte(got[i]), []byte(want[i])) {
			t.Errorf("%s: record %d is\n%s\nwant\n%s", what, i+1, got[i], want[i])
		}
	}
}

// The records pass through a model endpoint (transform "http"), each gets
// its classification, and the sink's when reads it (issue 11, part 3).
func TestTransformHTTPClassifiesThroughAModelEndpoint(t *testing.T) {
	dir := t.TempDir()
	m, url := newModel(t)
	m.fail = 2 // the first two requests fail: retried, nothing lost
	input := classifyInput(t, dir, 100)
	out := filepath.Join(dir, "out.jsonl")
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, classifyHCL(input, url, out))
	state := filepath.Join(dir, "state.db")
	if r := pipeline(t, dir, nil, "validate", hcl); r.code != 0 {
		t.Fatalf("validate: exit %d\n%s", r.code, r.stderr)
	}
	r := pipeline(t, dir, nil, "run", "--state", state, hcl)
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	// Every field of every record: nothing lost, added or changed but the
	// classification, merged under into.
	checkRecords(t, "out.jsonl", jsonLines(t, out), cancellations(0, 100))
	m.mu.Lock()
	defer m.mu.Unlock()
	for text, n := range m.seen {
		if n != 1 {
			t.Errorf("%q was classified %d times, want once", text, n)
		}
	}
	if len(m.seen) != 100 {
		t.Errorf("the model classified %d records, want 100", len(m.seen))
	}
}

// A response of the wrong length, to a later batch of the source, fails
// the run naming the request and the endpoint. What came before it is
// delivered and committed, nothing at or past it: the checkpoint is exactly
// before the failed batch, so the next run, against a fixed endpoint, sends
// the model that batch and what follows, nothing earlier, and the sink ends
// with every record once.
func TestTransformHTTPWrongLengthFailsWithNothingCheckpointed(t *testing.T) {
	dir := t.TempDir()
	m, url := newModel(t)
	// Batches of 10 records, two requests of 5 each: the first request of
	// the fourth batch (records 30 to 34) gets a short answer.
	m.shortAt = 32
	input := classifyInput(t, dir, 60)
	out := filepath.Join(dir, "out.jsonl")
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, strings.Replace(classifyHCLRows(input, url, out, 10), "batch_size = 15", "batch_size = 5", 1))
	state := filepath.Join(dir, "state.db")
	r := pipeline(t, dir, nil, "run", "--state", state, hcl)
	if r.code == 0 {
		t.Fatalf("the run succeeded on a short answer\n%s", r.stderr)
	}
	for _, want := range []string{`transform "http" "intent"`, strings.TrimSuffix(url, "/classify"), `request 1 of 2 (records 1-5 of the batch, ids "r030" to "r034")`} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("the error does not name %q:\n%s", want, r.stderr)
		}
	}
	// The three batches before the failed one reached the sink, whole.
	checkRecords(t, "out.jsonl after the failed run", jsonLines(t, out), cancellations(0, 30))
	show := pipeline(t, dir, nil, "state", "show", "--state", state, hcl)
	if show.code != 0 {
		t.Fatalf("state show: exit %d\n%s", show.code, show.stderr)
	}
	if !regexp.MustCompile(`(?m)^classify\s+calls\s+30\s`).MatchString(show.stdout) {
		t.Fatalf("the checkpoint is not at 30 records, the end of the batch before the failed one:\n%s", show.stdout)
	}

	m.mu.Lock()
	m.shortAt = -1
	m.numbers = nil
	m.mu.Unlock()
	r = pipeline(t, dir, nil, "run", "--state", state, hcl)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	m.mu.Lock()
	sent := append([]int(nil), m.numbers...)
	m.mu.Unlock()
	slices.Sort(sent)
	var want []int
	for i := 30; i < 60; i++ {
		want = append(want, i)
	}
	if !slices.Equal(sent, want) {
		t.Fatalf("the rerun sent the model records %v; want 30 to 59, each once (from the failed batch on)", sent)
	}
	checkRecords(t, "out.jsonl after the rerun", jsonLines(t, out), cancellations(0, 60))
}

// SIGKILL while records are in the model, then a rerun: every record
// reaches the sink with its classification, none missing.
func TestTransformHTTPSIGKILLThenRerunLosesNothing(t *testing.T) {
	dir := t.TempDir()
	m, url := newModel(t)
	m.delay = 20 * time.Millisecond
	input := classifyInput(t, dir, 600)
	out := filepath.Join(dir, "out.jsonl")
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, classifyHCL(input, url, out))
	state := filepath.Join(dir, "state.db")

	cmd := exec.Command(bin("pipeline"), "run", "--state", state, hcl)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if data, _ := os.ReadFile(out); strings.Count(string(data), "\n") >= 20 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	before := 0
	if data, err := os.ReadFile(out); err == nil {
		before = strings.Count(string(data), "\n")
	}
	if before == 0 || before >= 200 {
		t.Fatalf("the kill came at %d of 200 records; the test needs it mid-run", before)
	}

	m.mu.Lock()
	m.delay = 0
	m.mu.Unlock()
	if r := pipeline(t, dir, nil, "run", "--state", state, hcl); r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	ids := map[string]bool{}
	for _, line := range jsonLines(t, out) {
		var v struct {
			RowID           string `json:"row_id"`
			Classifications struct {
				Intent struct{ Label string } `json:"intent"`
			} `json:"classifications"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatal(err)
		}
		if v.Classifications.Intent.Label != "cancel" {
			t.Fatalf("%s reached the sink without its classification: %s", v.RowID, line)
		}
		ids[v.RowID] = true
	}
	for i := 0; i < 600; i += 3 {
		if id := fmt.Sprintf("r%03d", i); !ids[id] {
			t.Errorf("%s never reached the sink", id)
		}
	}
	t.Logf("%d of 200 records before the kill; %d distinct after the rerun", before, len(ids))
}

// A custom transform plugin (examples/transform-redact) built, declared and
// run from HCL: its output reaches the sink, ids kept, and what follows it
// reads its output.
func TestCustomTransformPluginFromHCL(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	writeFile(t, input, `{"row_id":"a","text":"mail me at ann@example.com"}
{"row_id":"b","text":"no address here"}
{"row_id":"c","text":"bob@example.org or call"}
`)
	out := filepath.Join(dir, "out.jsonl")
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, fmt.Sprintf(`
plugin "transform" "redact" {
  command = %q
}

source "file" "in" {
  path = %q
}

transform "redact" "mask" {
  inputs = [source.in]
  field  = "text"
}

filter "masked" {
  inputs = [transform.mask]
  where  = "text contains '[email]'"
}

sink "file" "out" {
  inputs = [filter.masked]
  path   = %q
}
`, bin("transform-redact"), input, out))
	if r := pipeline(t, dir, nil, "validate", hcl); r.code != 0 {
		t.Fatalf("validate: exit %d\n%s", r.code, r.stderr)
	}
	r := pipeline(t, dir, nil, "run", "--state", filepath.Join(dir, "state.db"), hcl)
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	got := jsonLines(t, out)
	want := []string{`{"row_id":"a","text":"mail me at [email]"}`, `{"row_id":"c","text":"[email] or call"}`}
	if len(got) != len(want) {
		t.Fatalf("out.jsonl: %v, want %v", got, want)
	}
	for i := range want {
		if !jsonEqual([]byte(got[i]), []byte(want[i])) {
			t.Fatalf("record %d: %s, want %s", i+1, got[i], want[i])
		}
	}
}
