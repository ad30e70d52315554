package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// testPipelineHCL is a pipeline whose source file does not exist and whose
// sinks would POST to crmURL and write out.jsonl: `pipeline test` must do
// neither.
func testPipelineHCL(crmURL string) string {
	return `
pipeline { name = "churn-tested" }

source "file" "calls" {
  path = "does-not-exist.jsonl"
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}

transform "enrich" {
  inputs = [filter.high_churn]
  set = {
    priority = "classifications.churn_risk.confidence > 0.9 ? 'urgent' : 'normal'"
    bucket   = "n % m"
  }
}

sink "webhook" "crm" {
  inputs = [transform.enrich]
  when   = "priority == 'urgent'"
  url    = "` + crmURL + `"
  secret = env("CRM_SECRET_NOT_SET_IN_TESTS")
  headers = { "X-Customer" = "{{ metadata.customer_id }}" }
}

sink "file" "retention" {
  inputs = [transform.enrich]
  when   = "metadata.queue == 'retention'"
  path   = "out.jsonl"
}
`
}

const passingTests = `
test "urgent churn reaches the CRM" {
  input "calls" {
    records = [
      { row_id = "r1", n = 7, m = 2, classifications = { churn_risk = { label = "High", confidence = 0.95 } }, metadata = { queue = "retention", customer_id = "c1" } },
      { row_id = "r2", n = 7, m = 2, classifications = { churn_risk = { label = "High", confidence = 0.85 } }, metadata = { queue = "billing", customer_id = "c2" } },
    ]
  }
  expect "crm" {
    count = 1
    where = "priority == 'urgent' && row_id == 'r1'"
  }
  expect "retention" { count = 1 }
}

test "records from a file" {
  input "calls" { path = "calls.jsonl" }
  expect "crm" { count = 2 }
  expect "retention" { where = "metadata.queue == 'retention'" }
}
`

const failingTests = `
test "normal churn is not sent" {
  input "calls" {
    records = [
      { row_id = "r3", n = 1, m = 1, classifications = { churn_risk = { label = "High", confidence = 0.99 } }, metadata = { queue = "billing", customer_id = "c3" } },
    ]
  }
  expect "crm" { count = 0 }
}

test "a record the transform fails on" {
  input "calls" {
    records = [
      { row_id = "r4", n = 1, m = 1, classifications = { churn_risk = { confidence = 0.95 } } },
      { row_id = "r5", n = 1, m = 0, classifications = { churn_risk = { confidence = 0.95 } } },
    ]
  }
  expect "crm" { count = 2 }
}
`

func setupTestCmd(t *testing.T, tests string) (dir string, posts *atomic.Int64) {
	t.Helper()
	posts = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
	}))
	t.Cleanup(srv.Close)
	dir = t.TempDir()
	writeFile(t, filepath.Join(dir, "churn.hcl"), testPipelineHCL(srv.URL))
	writeFile(t, filepath.Join(dir, "churn.test.hcl"), tests)
	writeFile(t, filepath.Join(dir, "calls.jsonl"),
		`{"row_id":"f1","n":3,"m":2,"classifications":{"churn_risk":{"confidence":0.97}},"metadata":{"queue":"retention"}}`+"\n"+
			`{"row_id":"f2","n":3,"m":2,"classifications":{"churn_risk":{"confidence":0.5}},"metadata":{"queue":"retention"}}`+"\n"+
			`{"row_id":"f3","n":3,"m":2,"classifications":{"churn_risk":{"confidence":0.93}},"metadata":{"queue":"billing"}}`+"\n")
	return dir, posts
}

// nothingTouched asserts that a test sent nothing, wrote no sink output and
// created no state.
func nothingTouched(t *testing.T, dir string, posts *atomic.Int64) {
	t.Helper()
	if n := posts.Load(); n != 0 {
		t.Errorf("the webhook endpoint got %d requests; pipeline test must send nothing", n)
	}
	for _, f := range []string{"out.jsonl", ".pipeline", "state.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("pipeline test created %s", f)
		}
	}
}

func TestPipelineTestPasses(t *testing.T) {
	dir, posts := setupTestCmd(t, passingTests)
	r := pipeline(t, dir, nil, "test", "--state", filepath.Join(dir, "state.db"), "churn.hcl")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"--- PASS: urgent churn reaches the CRM (churn.test.hcl:2)",
		"--- PASS: records from a file (churn.test.hcl:16)",
		"ok   churn.hcl: 2 passed, 0 failed",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the report lacks %q\n%s", want, r.stderr)
		}
	}
	nothingTouched(t, dir, posts)

	// The test file on its own names the same pipeline; --json has what
	// each sink received, templates rendered.
	r = pipeline(t, dir, nil, "test", "--json", "churn.test.hcl")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\n%s", r.code, r.stderr)
	}
	var reports []struct {
		File   string `json:"file"`
		Passed bool   `json:"passed"`
		Tests  []struct {
			Name    string `json:"name"`
			Passed  bool   `json:"passed"`
			Expects []struct {
				Sink     string `json:"sink"`
				Received []struct {
					ID        string            `json:"id"`
					Record    map[string]any    `json:"record"`
					Templates map[string]string `json:"templates"`
				} `json:"received"`
			} `json:"expects"`
		} `json:"tests"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &reports); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if len(reports) != 1 || !reports[0].Passed || len(reports[0].Tests) != 2 {
		t.Fatalf("--json: %+v", reports)
	}
	crm := reports[0].Tests[0].Expects[0]
	if crm.Sink != "crm" || len(crm.Received) != 1 || crm.Received[0].ID != "r1" ||
		crm.Received[0].Record["priority"] != "urgent" || crm.Received[0].Templates["headers.X-Customer"] != "c1" {
		t.Errorf("crm received %+v; want r1 with priority urgent and its X-Customer header rendered", crm)
	}
	fromFile := reports[0].Tests[1].Expects[0]
	var ids []string
	for _, rec := range fromFile.Received {
		ids = append(ids, rec.ID)
	}
	if strings.Join(ids, ",") != "f1,f3" {
		t.Errorf("from calls.jsonl the crm received %v, want [f1 f3]", ids)
	}
	nothingTouched(t, dir, posts)
}

func TestPipelineTestFails(t *testing.T) {
	dir, posts := setupTestCmd(t, passingTests+failingTests)
	r := pipeline(t, dir, nil, "test", "churn.hcl")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		"--- PASS: urgent churn reaches the CRM",
		"--- FAIL: normal churn is not sent (churn.test.hcl:22)",
		`expect "crm": count = 0, but the sink received 1 record`,
		// What was received is shown.
		`"row_id":"r3"`,
		"--- FAIL: a record the transform fails on (churn.test.hcl:31)",
		// The failing record is named where it is written.
		"churn.test.hcl:35",
		"integer divide by zero",
		"FAIL churn.hcl: 2 passed, 2 failed",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the report lacks %q\n%s", want, r.stderr)
		}
	}
	nothingTouched(t, dir, posts)
}

// Errors in test blocks are reported at their line and column, by
// validate too, and no test runs.
func TestPipelineTestBlockErrors(t *testing.T) {
	dir, posts := setupTestCmd(t, `
test "wrong names" {
  input "cals" { records = [{ row_id = "r1" }] }
  expect "crm" { where = "priority ==" }
}
`)
	for _, cmd := range []string{"test", "validate"} {
		r := pipeline(t, dir, nil, cmd, "churn.hcl", "churn.test.hcl")
		if cmd == "validate" {
			r = pipeline(t, dir, []string{"CRM_SECRET_NOT_SET_IN_TESTS=x"}, cmd, "churn.test.hcl")
		}
		if r.code != 1 {
			t.Fatalf("%s: exit %d, want 1\n%s", cmd, r.code, r.stderr)
		}
		if cmd == "test" && !strings.Contains(r.stderr, "FAIL churn.hcl: the pipeline has errors; no test ran") {
			t.Errorf("%s: %s", cmd, r.stderr)
		}
	}
	r := pipeline(t, dir, nil, "test", "churn.hcl")
	for _, want := range []string{"churn.test.hcl:3:9", `there is no source named "cals"`, "churn.test.hcl:4:37"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("test: the report lacks %q\n%s", want, r.stderr)
		}
	}
	nothingTouched(t, dir, posts)
}

// Test blocks in the pipeline's own file do not change what a run does.
func TestRunIgnoresTestBlocks(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "in.jsonl"), `{"row_id":"a","v":1}`+"\n"+`{"row_id":"b","v":9}`+"\n")
	writeFile(t, filepath.Join(dir, "p.hcl"), `
source "file" "in" { path = "in.jsonl" }
filter "big" {
  inputs = [source.in]
  where  = "v > 5"
}
sink "file" "out" {
  inputs = [filter.big]
  path   = "out.jsonl"
}
test "big ones only" {
  input "in" { records = [{ v = 1 }, { v = 6 }] }
  expect "out" { count = 1 }
}
`)
	if r := pipeline(t, dir, nil, "test", "p.hcl"); r.code != 0 || !strings.Contains(r.stderr, "--- PASS: big ones only (p.hcl:11)") {
		t.Fatalf("test: exit %d\n%s", r.code, r.stderr)
	}
	if r := pipeline(t, dir, nil, "run", "--state", filepath.Join(dir, "s.db"), "p.hcl"); r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	got, err := os.ReadFile(filepath.Join(dir, "out.jsonl"))
	if err != nil || strings.Count(string(got), "\n") != 1 || !strings.Contains(string(got), `"row_id":"b"`) {
		t.Fatalf("run wrote %q, %v; want the one record b", got, err)
	}
}

// The tests shipped with pipelines/ pass, as README and docs/testing.md
// show them.
func TestShippedPipelineTests(t *testing.T) {
	r := pipeline(t, repoRoot(), nil, "test", "pipelines/")
	if r.code != 0 || !strings.Contains(r.stderr, "ok   pipelines/churn.hcl: 3 passed, 0 failed") {
		t.Fatalf("pipeline test pipelines/: exit %d\n%s", r.code, r.stderr)
	}
}

// `pipeline test` checks the file as validate does before it runs a test:
// a built-in sink whose plugin rejects its block (a webhook without its
// secret, csv's columns on a jsonl file) fails with validate's errors at
// their line and column, and no test runs. A sink whose secret comes from
// an env() variable that is not set is not judged by its stand-in "".
func TestPipelineTestChecksSinksAsValidateDoes(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.hcl"), `source "file" "calls" {
  path = "does-not-exist.jsonl"
}

sink "webhook" "crm" {
  inputs = [source.calls]
  url    = "https://crm.example.com/hook"
}

sink "file" "out" {
  inputs  = [source.calls]
  path    = "out.jsonl"
  columns = ["row_id"]
}

sink "webhook" "audit" {
  inputs = [source.calls]
  url    = "https://audit.example.com/hook"
  secret = env("AUDIT_SECRET_NOT_SET_IN_TESTS")
}

test "every record reaches the CRM" {
  input "calls" { records = [{ row_id = "r1" }] }
  expect "crm" { count = 1 }
}
`)
	wants := []string{
		`on p.hcl:5:1, in sink "webhook" "crm"`,
		`The sink plugin "webhook" says: secret: signature = "standard" needs a secret (or set signature = "none").`,
		`on p.hcl:13:13, in sink "file" "out"`,
		`The sink plugin "file" says: columns applies to csv; jsonl writes every field.`,
	}
	// validate (with the audit secret set) says the same.
	r := pipeline(t, dir, []string{"AUDIT_SECRET_NOT_SET_IN_TESTS=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "validate", "p.hcl")
	for _, want := range wants {
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Fatalf("validate: exit %d, want 1 and %q\n%s", r.code, want, r.stderr)
		}
	}
	r = pipeline(t, dir, nil, "test", "p.hcl")
	if r.code != 1 {
		t.Fatalf("test: exit %d, want 1\n%s", r.code, r.stderr)
	}
	for _, want := range append(wants, "FAIL p.hcl: the pipeline has errors; no test ran") {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("test: the report lacks %q\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, `"audit"`) || strings.Contains(r.stderr, "--- PASS") {
		t.Errorf("test: the audit sink, whose secret is a stand-in, was judged, or a test ran:\n%s", r.stderr)
	}
	r = pipeline(t, dir, nil, "test", "--json", "p.hcl")
	var reports []struct {
		Passed bool     `json:"passed"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &reports); err != nil || r.code != 1 {
		t.Fatalf("--json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if len(reports) != 1 || reports[0].Passed || len(reports[0].Errors) != 2 ||
		!strings.HasPrefix(reports[0].Errors[0], "p.hcl:5:1: error: Invalid sink configuration") ||
		!strings.HasPrefix(reports[0].Errors[1], "p.hcl:13:13: error: Invalid sink configuration") {
		t.Fatalf("--json: %+v; want the two errors at p.hcl:5:1 and p.hcl:13:13", reports)
	}
	for _, f := range []string{"out.jsonl", ".pipeline"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("pipeline test created %s", f)
		}
	}

	// With the two blocks fixed the test runs and passes.
	fixed := strings.Replace(strings.Replace(mustRead(t, filepath.Join(dir, "p.hcl")),
		`  url    = "https://crm.example.com/hook"`, `  url       = "https://crm.example.com/hook"`+"\n"+`  signature = "none"`, 1),
		`  columns = ["row_id"]`+"\n", "", 1)
	writeFile(t, filepath.Join(dir, "p.hcl"), fixed)
	if r := pipeline(t, dir, nil, "test", "p.hcl"); r.code != 0 || !strings.Contains(r.stderr, "--- PASS: every record reaches the CRM") {
		t.Fatalf("test of the fixed file: exit %d\n%s", r.code, r.stderr)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
