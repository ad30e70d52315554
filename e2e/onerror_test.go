package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// typeChangeInput writes 3,000 records whose v is a number, then 10 whose v
// is a string (lines 3001-3010), then 10 numbers again.
func typeChangeInput(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= 3020; i++ {
		if i > 3000 && i <= 3010 {
			fmt.Fprintf(&b, `{"n":%d,"v":"s%d"}`+"\n", i, i)
		} else {
			fmt.Fprintf(&b, `{"n":%d,"v":%d}`+"\n", i, i%10)
		}
	}
	path := filepath.Join(dir, "in.jsonl")
	writeFile(t, path, b.String())
	return path
}

func typeChangeHCL(input, out, onError string) string {
	return fmt.Sprintf(`
pipeline { name = "types" }

source "file" "in" {
  path = %q
}

filter "f" {
  inputs   = [source.in]
  where    = "v > 5"
  %s
}

sink "file" "out" {
  inputs = [filter.f]
  path   = %q
  format = "jsonl"
}
`, input, onError, out)
}

// A field whose type changes mid-stream fails the run with the record's
// file and line, not a batch-relative row (issue 10, item 3).
func TestTypeChangeFailsNamingFileAndLine(t *testing.T) {
	dir := t.TempDir()
	input := typeChangeInput(t, dir)
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, typeChangeHCL(input, filepath.Join(dir, "out.jsonl"), ""))
	r := pipeline(t, dir, nil, "run", "--state", filepath.Join(dir, "state.db"), hcl)
	if r.code == 0 {
		t.Fatalf("run succeeded; want a failure naming %s:3001\n%s", input, r.stderr)
	}
	if !strings.Contains(r.stderr, input+":3001") {
		t.Fatalf("the error does not name %s:3001:\n%s", input, r.stderr)
	}
	if !strings.Contains(r.stderr, `on_error = "skip"`) {
		t.Fatalf("the error does not say how to skip such records:\n%s", r.stderr)
	}
}

// With on_error = "skip" the bad records are counted, logged with their
// place, and the rest is filtered as usual.
func TestTypeChangeSkippedWithOnError(t *testing.T) {
	dir := t.TempDir()
	input := typeChangeInput(t, dir)
	out := filepath.Join(dir, "out.jsonl")
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, typeChangeHCL(input, out, `on_error = "skip"`))
	r := pipeline(t, dir, nil, "run", "--json", "--state", filepath.Join(dir, "state.db"), hcl)
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	for _, line := range []string{":3001", ":3005"} {
		if !strings.Contains(r.stderr, input+line) {
			t.Fatalf("stderr does not name skipped record %s%s:\n%s", input, line, r.stderr)
		}
	}
	s := parseSummary(t, r)
	if s.Rejected != 10 {
		t.Fatalf("summary counts %d records skipped for errors, want 10: %s", s.Rejected, r.stdout)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	// v is i%10 for the 3,010 numeric records: 6..9 pass, 4 of every 10.
	want := 0
	for i := 1; i <= 3020; i++ {
		if (i <= 3000 || i > 3010) && i%10 > 5 {
			want++
		}
	}
	if len(lines) != want {
		t.Fatalf("out.jsonl has %d records, want %d", len(lines), want)
	}
}

// An integer modulo by zero in a sink's when is a record error like any
// other: it names the record, or is skipped with on_error = "skip".
func TestModuloByZeroInWhen(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&b, `{"n":%d,"z":%d}`+"\n", i, i%5)
	}
	input := filepath.Join(dir, "in.jsonl")
	writeFile(t, input, b.String())
	out := filepath.Join(dir, "out.jsonl")
	hcl := func(onError string) string {
		return fmt.Sprintf(`
source "file" "in" {
  path = %q
}

sink "file" "out" {
  inputs = [source.in]
  when   = "n %% z == 0"
  path   = %q
  %s
}
`, input, out, onError)
	}
	p := filepath.Join(dir, "p.hcl")
	writeFile(t, p, hcl(""))
	r := pipeline(t, dir, nil, "run", "--state", filepath.Join(dir, "state.db"), p)
	if r.code == 0 || !strings.Contains(r.stderr, input+":5:") || !strings.Contains(r.stderr, "divide by zero") {
		t.Fatalf("want a failure naming %s:5 and the division by zero; exit %d\n%s", input, r.code, r.stderr)
	}
	writeFile(t, p, hcl(`on_error = "skip"`))
	r = pipeline(t, dir, nil, "run", "--json", "--state", filepath.Join(dir, "state.db"), p)
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	if s := parseSummary(t, r); s.Rejected != 20 {
		t.Fatalf("rejected %d records, want the 20 whose z is 0: %s", s.Rejected, r.stdout)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// n % z == 0 for z in 1..4: every n with z = 1 (n%5 == 1), and the rest by arithmetic.
	want := 0
	for i := 1; i <= 100; i++ {
		if z := i % 5; z != 0 && i%z == 0 {
			want++
		}
	}
	if got := strings.Count(string(data), "\n"); got != want {
		t.Fatalf("out.jsonl has %d records, want %d", got, want)
	}
}

// The same with batches of 500 records: the records whose v is a string
// come in batches of their own, whose schema says v is a string; the merged
// schema keeps the first type, int64, so only those records are rejected.
func TestTypeChangeAcrossBatches(t *testing.T) {
	dir := t.TempDir()
	input := typeChangeInput(t, dir)
	out := filepath.Join(dir, "out.jsonl")
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, strings.Replace(typeChangeHCL(input, out, `on_error = "skip"`), "path = ", "batch_rows = 500\n  path = ", 1))
	r := pipeline(t, dir, nil, "run", "--json", "--state", filepath.Join(dir, "state.db"), hcl)
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	if s := parseSummary(t, r); s.Rejected != 10 {
		t.Fatalf("rejected %d, want the 10 records whose v is a string\n%s", s.Rejected, r.stderr)
	}
	if !strings.Contains(r.stderr, input+":3001") {
		t.Fatalf("stderr does not name %s:3001:\n%s", input, r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := 1; i <= 3020; i++ {
		if (i <= 3000 || i > 3010) && i%10 > 5 {
			want++
		}
	}
	if got := strings.Count(string(data), "\n"); got != want {
		t.Fatalf("out.jsonl has %d records, want %d", got, want)
	}
}
