package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// validateDiag is one diagnostic as `pipeline validate` prints it: the summary
// and where it points.
type validateDiag struct {
	severity, summary, at string // at is FILE:LINE
}

var validateDiagRe = regexp.MustCompile(`(?m)^(Error|Warning): (.+)\n\n  on ([^:\n]+):(\d+):\d+`)

func validateDiags(stderr string) []validateDiag {
	var out []validateDiag
	for _, m := range validateDiagRe.FindAllStringSubmatch(stderr, -1) {
		out = append(out, validateDiag{severity: m[1], summary: m[2], at: m[3] + ":" + m[4]})
	}
	return out
}

func writeIn(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestValidateReportsEverything: one validate lists the errors of every
// stage and every block, and exits non-zero.
func TestValidateReportsEverything(t *testing.T) {
	dir := t.TempDir()
	writeIn(t, dir, "calls.jsonl", `{"row_id":"r1","a":"x","n":1}`+"\n")
	writeIn(t, dir, "broken.hcl", `source "file" "calls" {
  path  = "calls.jsonl"
  bogus = 1
}

source "file" "other" {
  path = 12
}

source "file" "good" {
  path = "calls.jsonl"
}

filter "bad_expr" {
  inputs = [source.good]
  where  = "a == "
}

filter "dangling" {
  inputs = [source.nope]
  where  = "a == 'x'"
}

sink "webhook" "crm" {
  inputs    = [filter.bad_expr]
  url       = "http://127.0.0.1:9/crm"
  signature = "none"
  timeout   = "ten"
  retry {
    schedule = ["0s", "bad"]
  }
}

sink "webhook" "limited" {
  inputs     = [source.other, source.calls, filter.dangling]
  url        = "http://127.0.0.1:9/limited"
  signature  = "none"
  rate_limit = 3
}
`)
	r := pipeline(t, dir, nil, "validate", "broken.hcl")
	if r.code == 0 {
		t.Fatalf("validate passed:\n%s", r.stderr)
	}
	want := []validateDiag{
		{"Error", "Unsupported argument", "broken.hcl:3"},
		{"Error", "Incorrect attribute value type", "broken.hcl:7"}, // path = 12
		{"Error", "Invalid filter expression", "broken.hcl:16"},
		{"Error", "Reference to undeclared source", "broken.hcl:20"},
		// timeout and retry.schedule are declared as durations: the engine
		// checks both, so the bad timeout does not hide the bad schedule.
		{"Error", "Invalid duration", "broken.hcl:28"},
		{"Error", "Invalid duration", "broken.hcl:30"},
		{"Error", "Incorrect attribute value type", "broken.hcl:38"}, // rate_limit = 3
	}
	got := validateDiags(r.stderr)
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("no %s %q at %s in:\n%s", w.severity, w.summary, w.at, r.stderr)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d diagnostics, want %d: %v\n%s", len(got), len(want), got, r.stderr)
	}
	for _, s := range []string{`"path": string required`, `"rate_limit": string required`, `timeout = "ten" is not a duration`, `retry.schedule[1] = "bad" is not a duration`} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

// readJSONL reads a sink's output file, one object per line.
func readOutJSONL(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func outRowIDs(recs []map[string]any) []string {
	var ids []string
	for _, r := range recs {
		ids = append(ids, fmt.Sprint(r["row_id"]))
	}
	return ids
}

// TestValidateLateField: a field that first appears past the sample (line
// 2,500 of a file, or only in the 17th file of a glob) is a warning at
// validate, and the run filters on it.
func TestValidateLateField(t *testing.T) {
	tests := []struct {
		name  string
		files func(dir string)
		path  string
		want  []string
	}{
		{
			name: "past line 2000",
			files: func(dir string) {
				var b strings.Builder
				for i := 1; i <= 3000; i++ {
					late := ""
					switch {
					case i == 2500, i == 2900:
						late = `,"late":"x"`
					case i == 2700:
						late = `,"late":"y"`
					}
					fmt.Fprintf(&b, `{"row_id":"r%d","a":"x"%s}`+"\n", i, late)
				}
				writeIn(t, dir, "calls.jsonl", b.String())
			},
			path: "calls.jsonl",
			want: []string{"r2500", "r2900"},
		},
		{
			name: "in the 17th file",
			files: func(dir string) {
				for i := 1; i <= 17; i++ {
					line := fmt.Sprintf(`{"row_id":"f%02d","a":"x"}`+"\n", i)
					if i == 17 {
						line += `{"row_id":"f17b","a":"x","late":"x"}` + "\n"
					}
					writeIn(t, dir, fmt.Sprintf("in/%02d.jsonl", i), line)
				}
			},
			path: "in/*.jsonl",
			want: []string{"f17b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.files(dir)
			writeIn(t, dir, "late.hcl", fmt.Sprintf(`source "file" "calls" {
  path = %q
}

filter "late" {
  inputs = [source.calls]
  where  = "late == \"x\""
}

sink "file" "out" {
  inputs = [filter.late]
  path   = "out.jsonl"
}
`, tt.path))
			r := pipeline(t, dir, nil, "validate", "late.hcl")
			if r.code != 0 {
				t.Fatalf("validate failed (%d):\n%s", r.code, r.stderr)
			}
			want := validateDiag{"Warning", `Field "late" is not in the sample of source "calls"`, "late.hcl:7"}
			if got := validateDiags(r.stderr); len(got) != 1 || got[0] != want {
				t.Errorf("diagnostics %v, want [%v]:\n%s", got, want, r.stderr)
			}
			if !strings.Contains(r.stderr, "late.hcl: ok") {
				t.Errorf("validate did not say ok:\n%s", r.stderr)
			}

			r = pipeline(t, dir, nil, "run", "late.hcl")
			if r.code != 0 {
				t.Fatalf("run failed (%d):\n%s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, want.summary) {
				t.Errorf("run did not print the warning:\n%s", r.stderr)
			}
			recs := readOutJSONL(t, filepath.Join(dir, "out.jsonl"))
			if got := outRowIDs(recs); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("out.jsonl has %v, want %v", got, tt.want)
			}
			for _, rec := range recs {
				if rec["late"] != "x" || rec["a"] != "x" {
					t.Errorf("record %v", rec)
				}
			}
		})
	}
}

// TestValidateEmptyInput: a pipeline whose input is still empty validates
// with a warning, and runs writing nothing.
func TestValidateEmptyInput(t *testing.T) {
	dir := t.TempDir()
	writeIn(t, dir, "calls.jsonl", "")
	writeIn(t, dir, "empty.hcl", `source "file" "calls" {
  path = "calls.jsonl"
}

filter "f" {
  inputs = [source.calls]
  where  = "a == 'x'"
}

sink "file" "out" {
  inputs = [filter.f]
  path   = "out.jsonl"
}
`)
	r := pipeline(t, dir, nil, "validate", "empty.hcl")
	if r.code != 0 {
		t.Fatalf("validate failed (%d):\n%s", r.code, r.stderr)
	}
	want := validateDiag{"Warning", `Field "a" is not in the sample of source "calls"`, "empty.hcl:7"}
	if got := validateDiags(r.stderr); len(got) != 1 || got[0] != want {
		t.Errorf("diagnostics %v, want [%v]:\n%s", got, want, r.stderr)
	}
	r = pipeline(t, dir, nil, "run", "--json", "empty.hcl")
	if r.code != 0 {
		t.Fatalf("run failed (%d):\n%s", r.code, r.stderr)
	}
	if s := parseSummary(t, r); s.Status != "done" || s.Read != 0 || s.Delivered != 0 {
		t.Errorf("summary %+v", s)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "out.jsonl")); err == nil && len(data) > 0 {
		t.Errorf("out.jsonl holds %q", data)
	} else if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}
