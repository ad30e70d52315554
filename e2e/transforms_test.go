package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The cases of testdata/transforms through the real binary: a case with
// want.jsonl runs and must deliver exactly those records, in order; a case
// with want.err reports each of those diagnostics at its line and column.
// engine/config checks want.err against the complete schema of input.jsonl;
// `source "file"` reports a sample, so there a field the sample lacks is a
// warning (issue 10) at the same line and column, which is what the binary
// must say for such lines. A field a transform removed is absent whatever
// the sample: reading it downstream is an error through the binary too.
func TestTransformCasesEndToEnd(t *testing.T) {
	root := filepath.Join(repoRoot(), "testdata", "transforms")
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n++
		name := e.Name()
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{"pipeline.hcl", "input.jsonl"} {
				copyFile(t, filepath.Join(root, name, f), dir)
			}
			if want, err := os.ReadFile(filepath.Join(root, name, "want.err")); err == nil {
				for _, cmd := range []string{"validate", "run"} {
					args := []string{cmd, "pipeline.hcl"}
					if cmd == "run" {
						args = []string{cmd, "--state", filepath.Join(dir, "state.db"), "pipeline.hcl"}
					}
					r := pipeline(t, dir, nil, args...)
					errors := 0
					for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
						if checkDiagnostic(t, r.stderr, line) {
							errors++
						}
					}
					if errors > 0 && r.code == 0 {
						t.Fatalf("%s passed although it reported %d errors\n%s", cmd, errors, r.stderr)
					}
					if errors > 0 {
						if _, err := os.Stat(filepath.Join(dir, "out.jsonl")); err == nil {
							t.Fatal("a run of a file with errors wrote out.jsonl")
						}
					}
				}
				return
			}
			r := pipeline(t, dir, nil, "run", "--state", filepath.Join(dir, "state.db"), "pipeline.hcl")
			if r.code != 0 {
				t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
			}
			got := jsonLines(t, filepath.Join(dir, "out.jsonl"))
			want := jsonLines(t, filepath.Join(root, name, "want.jsonl"))
			if len(got) != len(want) {
				t.Fatalf("out.jsonl has %d records, want %d\ngot:\n%s", len(got), len(want), strings.Join(got, "\n"))
			}
			for i := range want {
				if !jsonEqual([]byte(got[i]), []byte(want[i])) {
					t.Errorf("record %d:\n got %s\nwant %s", i+1, got[i], want[i])
				}
			}
		})
	}
	if n < 9 {
		t.Fatalf("found %d cases in %s, want at least 9", n, root)
	}
}

// A set expression that fails on one record (an integer modulo by zero)
// fails the run naming the record's file and line, and commits nothing;
// with on_error = "skip" that record is dropped and counted, and every
// other record reaches the sink with its computed field.
func TestTransformOnErrorSkip(t *testing.T) {
	dir := t.TempDir()
	ns := []int{1, 2, 0, 4, 5, 3} // line 3 has n = 0
	var b strings.Builder
	for i, n := range ns {
		fmt.Fprintf(&b, `{"row_id":"r%d","n":%d}`+"\n", i+1, n)
	}
	input := filepath.Join(dir, "in.jsonl")
	writeFile(t, input, b.String())
	out := filepath.Join(dir, "out.jsonl")
	hcl := func(onError string) string {
		return fmt.Sprintf(`
source "file" "in" {
  path = %q
}

transform "enrich" {
  inputs = [source.in]
  set = {
    m = "61 %% n"
  }
  %s
}

sink "file" "out" {
  inputs = [transform.enrich]
  path   = %q
}
`, input, onError, out)
	}
	p := filepath.Join(dir, "p.hcl")
	state := filepath.Join(dir, "state.db")

	writeFile(t, p, hcl(""))
	r := pipeline(t, dir, nil, "run", "--state", state, p)
	if r.code == 0 {
		t.Fatalf("the run succeeded although n is 0 at %s:3\n%s", input, r.stderr)
	}
	for _, want := range []string{"transform enrich", input + ":3:", "divide by zero", `on_error = "skip"`} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("the error does not name %q:\n%s", want, r.stderr)
		}
	}
	if _, err := os.Stat(out); err == nil && len(jsonLines(t, out)) > 0 {
		t.Fatalf("records reached the sink although the run failed: %v", jsonLines(t, out))
	}

	// The failed run committed nothing: the next run reads every record.
	writeFile(t, p, hcl(`on_error = "skip"`))
	r = pipeline(t, dir, nil, "run", "--json", "--state", state, p)
	if r.code != 0 {
		t.Fatalf("run with on_error = \"skip\": exit %d\n%s", r.code, r.stderr)
	}
	s := parseSummary(t, r)
	if s.Read != 6 || s.Rejected != 1 || s.Sinks["out"] != 5 {
		t.Fatalf("summary: read %d, rejected %d, delivered %v; want 6, 1 and 5\n%s", s.Read, s.Rejected, s.Sinks, r.stdout)
	}
	if !strings.Contains(r.stderr, input+":3") {
		t.Errorf("the skipped record is not logged with its place %s:3:\n%s", input, r.stderr)
	}
	var got []string
	for _, line := range jsonLines(t, out) {
		var v struct {
			RowID string `json:"row_id"`
			N, M  int
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatal(err)
		}
		if v.M != 61%v.N {
			t.Errorf("%s: m = %d, want 61 %% %d = %d", v.RowID, v.M, v.N, 61%v.N)
		}
		got = append(got, v.RowID)
	}
	if strings.Join(got, ",") != "r1,r2,r4,r5,r6" {
		t.Fatalf("the sink got %v, want every record but r3", got)
	}
}

var wantErrRE = regexp.MustCompile(`^([^:]+):(\d+):(\d+): (error|warning): ([^:]+): (.*)$`)

// cliDiag is one diagnostic as the CLI renders it: "Error: SUMMARY", then
// "on FILE:LINE:COL, in …", the source line, and the detail.
type cliDiag struct {
	severity, summary string
	// flat is the rest of it with runs of white space made one space.
	flat string
}

func cliDiagnostics(stderr string) []cliDiag {
	var out []cliDiag
	var body []string
	flush := func() {
		if len(out) > 0 {
			out[len(out)-1].flat = strings.Join(strings.Fields(strings.Join(body, "\n")), " ")
		}
		body = nil
	}
	for _, l := range strings.Split(stderr, "\n") {
		sev, summary, ok := strings.Cut(l, ": ")
		if ok && (sev == "Error" || sev == "Warning") {
			flush()
			out = append(out, cliDiag{severity: sev, summary: summary})
			continue
		}
		body = append(body, l)
	}
	flush()
	return out
}

// missingFieldRE matches the details of errors about a field that the
// complete schema of input.jsonl lacks: against the sample the binary reads
// they are warnings. A field a transform removed is no such field.
var missingFieldRE = regexp.MustCompile(`^(unknown field|unknown name|there is no field) `)

// checkDiagnostic finds a want.err line (FILE:LINE:COL: SEVERITY: SUMMARY:
// DETAIL) in the CLI's diagnostics, with that severity, summary and detail
// at that line and column, and reports whether it is an error there. An
// error about a field the input lacks (missingFieldRE) may instead be the
// warning that the sample lacks it, at the same line and column.
func checkDiagnostic(t *testing.T, stderr, line string) bool {
	t.Helper()
	m := wantErrRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("want.err line %q is not FILE:LINE:COL: SEVERITY: SUMMARY: DETAIL", line)
	}
	at := regexp.MustCompile(`(^| )on ` + regexp.QuoteMeta(m[1]+":"+m[2]+":"+m[3]) + `\D`)
	sev := map[string]string{"error": "Error", "warning": "Warning"}[m[4]]
	detail := strings.Join(strings.Fields(m[6]), " ")
	diags := cliDiagnostics(stderr)
	for _, d := range diags {
		if d.severity == sev && d.summary == m[5] && at.MatchString(d.flat) && strings.Contains(d.flat, detail) {
			return m[4] == "error"
		}
	}
	if m[4] == "error" && missingFieldRE.MatchString(m[6]) {
		for _, d := range diags {
			if d.severity == "Warning" && strings.Contains(d.summary, "is not in the sample") && at.MatchString(d.flat) {
				return false
			}
		}
	}
	t.Errorf("stderr lacks %s %q with %q at %s:%s:%s (from %q):\n%s", m[4], m[5], detail, m[1], m[2], m[3], line, stderr)
	return false
}

func jsonLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// A sink with incremental = false behind a transform exports every record
// again each run (its source is read from the start), as it does behind a
// filter; and a source that reaches it through a transform cannot feed an
// incremental sink too.
func TestTransformFullExportRereadsEveryRun(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	writeFile(t, input, `{"row_id":"a","n":1}`+"\n"+`{"row_id":"b","n":2}`+"\n")
	out := filepath.Join(dir, "snapshot.jsonl")
	writeFile(t, filepath.Join(dir, "full.hcl"), fmt.Sprintf(`
pipeline { name = "snapshot" }
source "file" "in" { path = %q }
transform "double" {
  inputs = [source.in]
  set    = { m = "n * 2" }
  drop   = ["n"]
}
sink "file" "snapshot" {
  inputs      = [transform.double]
  path        = %q
  incremental = false
}
`, input, out))
	state := filepath.Join(dir, "state.db")
	for run, want := range [][]string{
		{`{"row_id":"a","m":2}`, `{"row_id":"b","m":4}`},
		{`{"row_id":"a","m":2}`, `{"row_id":"b","m":4}`, `{"row_id":"c","m":6}`},
	} {
		if run == 1 {
			f, err := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(`{"row_id":"c","n":3}` + "\n")
			f.Close()
		}
		r := pipeline(t, dir, nil, "run", "--json", "--state", state, "full.hcl")
		if r.code != 0 {
			t.Fatalf("run %d exited %d\n%s", run+1, r.code, r.stderr)
		}
		if s := parseSummary(t, r); s.Read != int64(len(want)) {
			t.Errorf("run %d read %d records, want all %d", run+1, s.Read, len(want))
		}
		got := jsonLines(t, out)
		if len(got) != len(want) {
			t.Fatalf("after run %d the snapshot holds %d records, want %d:\n%s", run+1, len(got), len(want), strings.Join(got, "\n"))
		}
		for i := range want {
			if !jsonEqual([]byte(got[i]), []byte(want[i])) {
				t.Errorf("after run %d record %d is %s, want %s", run+1, i+1, got[i], want[i])
			}
		}
	}

	writeFile(t, filepath.Join(dir, "mixed.hcl"), fmt.Sprintf(`
pipeline { name = "mixed" }
source "file" "in" { path = %q }
transform "double" {
  inputs = [source.in]
  set    = { m = "n * 2" }
}
sink "file" "snapshot" {
  inputs      = [transform.double]
  path        = "a.jsonl"
  incremental = false
}
sink "file" "log" {
  inputs = [transform.double]
  path   = "b.jsonl"
}
`, input))
	r := pipeline(t, dir, nil, "validate", "mixed.hcl")
	if r.code == 0 || !strings.Contains(r.stderr, "Incremental and full exports share a source") ||
		!strings.Contains(r.stderr, "mixed.hcl:8:") || !strings.Contains(r.stderr, `sink "file" "log"`) {
		t.Fatalf("validate exited %d; want the shared-source error at mixed.hcl:8 naming the incremental sink\n%s", r.code, r.stderr)
	}
}
