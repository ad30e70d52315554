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
// warning (issue 10), which is what the binary must say for such lines.
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

// checkDiagnostic finds a want.err line (FILE:LINE:COL: SEVERITY: SUMMARY:
// DETAIL) in the CLI's diagnostics and reports whether it is an error
// there. A line about a field the input lacks may be a warning about the
// sample instead, at the same place.
func checkDiagnostic(t *testing.T, stderr, line string) bool {
	t.Helper()
	m := wantErrRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("want.err line %q is not FILE:LINE:COL: SEVERITY: SUMMARY: DETAIL", line)
	}
	at := "on " + m[1] + ":" + m[2] + ":" + m[3]
	flat := strings.Join(strings.Fields(stderr), " ")
	for _, block := range strings.Split(stderr, "\n\n") {
		if !strings.Contains(block, at) && !strings.Contains(block, "on "+m[1]+":"+m[2]+":") {
			continue
		}
		sev := map[string]string{"error": "Error", "warning": "Warning"}[m[4]]
		if strings.Contains(stderr, sev+": "+m[5]) && strings.Contains(stderr, at) {
			if detail := strings.TrimSpace(m[6]); detail != "" && !strings.Contains(flat, strings.Join(strings.Fields(detail), " ")) {
				t.Errorf("stderr lacks the detail %q:\n%s", detail, stderr)
			}
			return m[4] == "error"
		}
	}
	if strings.Contains(stderr, "Warning: ") && strings.Contains(flat, "sample") && strings.Contains(stderr, "on "+m[1]+":"+m[2]+":") {
		return false // the field is missing from the sample: a warning
	}
	t.Errorf("stderr lacks %q at %s (from %q):\n%s", m[5], at, line, stderr)
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
