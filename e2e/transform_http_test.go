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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// model is a local classification endpoint: it answers each POSTed array of
// {"text": …} with one {"label": …} per record, in order. fail makes its
// next answers 503; short makes it answer one result too few.
type model struct {
	mu       sync.Mutex
	delay    time.Duration
	fail     int
	short    bool
	requests int
	seen     map[string]int // texts classified, with how often
}

func newModel(t *testing.T) (*model, string) {
	m := &model{seen: map[string]int{}}
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
		for _, rec := range recs {
			m.seen[rec.Text]++
			label := "other"
			if strings.Contains(strings.ToLower(rec.Text), "cancel") {
				label = "cancel"
			}
			out = append(out, map[string]string{"label": label})
		}
		if m.short {
			out = out[:len(out)-1]
		}
		json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return m, srv.URL + "/classify"
}

func classifyHCL(input, url, out string) string {
	return fmt.Sprintf(`
pipeline { name = "classify" }

source "file" "calls" {
  path       = %q
  batch_rows = 40
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
`, input, url, out)
}

func classifyInput(t *testing.T, dir string, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		text := fmt.Sprintf("question %d about my bill", i)
		if i%3 == 0 {
			text = fmt.Sprintf("I want to cancel, call %d", i)
		}
		fmt.Fprintf(&b, `{"row_id":"r%03d","text":%q}`+"\n", i, text)
	}
	path := filepath.Join(dir, "calls.jsonl")
	writeFile(t, path, b.String())
	return path
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
	var got []string
	for _, line := range jsonLines(t, out) {
		var v struct {
			RowID           string `json:"row_id"`
			Text            string `json:"text"`
			Classifications struct {
				Intent struct {
					Label string `json:"label"`
				} `json:"intent"`
			} `json:"classifications"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatal(err)
		}
		if v.Classifications.Intent.Label != "cancel" || !strings.Contains(v.Text, "cancel") {
			t.Fatalf("record %s reached the sink with intent %q: %s", v.RowID, v.Classifications.Intent.Label, line)
		}
		got = append(got, v.RowID)
	}
	var want []string
	for i := 0; i < 100; i += 3 {
		want = append(want, fmt.Sprintf("r%03d", i))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("the sink got %v, want %v", got, want)
	}
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

// A response of the wrong length fails the run naming the request and the
// endpoint, and nothing is checkpointed past it: the next run, against a
// fixed endpoint, sends every record.
func TestTransformHTTPWrongLengthFailsWithNothingCheckpointed(t *testing.T) {
	dir := t.TempDir()
	m, url := newModel(t)
	m.short = true
	input := classifyInput(t, dir, 30)
	out := filepath.Join(dir, "out.jsonl")
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, classifyHCL(input, url, out))
	state := filepath.Join(dir, "state.db")
	r := pipeline(t, dir, nil, "run", "--state", state, hcl)
	if r.code == 0 {
		t.Fatalf("the run succeeded on a short answer\n%s", r.stderr)
	}
	// Requests for a batch run concurrently: whichever fails first is named.
	for _, want := range []string{`transform "http" "intent"`, strings.TrimSuffix(url, "/classify"), `(records `, `ids "r0`} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("the error does not name %q:\n%s", want, r.stderr)
		}
	}
	if _, err := os.Stat(out); err == nil && len(jsonLines(t, out)) > 0 {
		t.Fatalf("records reached the sink past a failed transform: %v", jsonLines(t, out))
	}
	m.mu.Lock()
	m.short = false
	m.mu.Unlock()
	r = pipeline(t, dir, nil, "run", "--state", state, hcl)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	if got := len(jsonLines(t, out)); got != 10 {
		t.Fatalf("after the fix the sink has %d records, want all 10 cancellations", got)
	}
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
