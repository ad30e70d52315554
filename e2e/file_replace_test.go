package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// replaceHCL exports every record of the input glob as Parquet and as a JSON
// array (the replacing formats), plus extra blocks.
func replaceHCL(input, extra string) string {
	return fmt.Sprintf(`
pipeline { name = "replace" }

source "file" "calls" {
  path       = %q
  batch_rows = 10
  on_error   = "fail"
}

sink "file" "parquet" {
  inputs = [source.calls]
  path   = "out/out.parquet"
}

sink "file" "json" {
  inputs = [source.calls]
  path   = "out/out.json"
}
%s
`, input, extra)
}

// snapshotDir reads every file in dir by name.
func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = data
	}
	return out
}

// checkUnchanged fails unless dir holds exactly the files of before, each
// byte-identical: a failed run neither replaced an export nor left a
// temporary file behind.
func checkUnchanged(t *testing.T, dir string, before map[string][]byte) {
	t.Helper()
	after := snapshotDir(t, dir)
	for name, data := range before {
		got, ok := after[name]
		switch {
		case !ok:
			t.Errorf("%s is gone after the failed run", name)
		case !bytes.Equal(got, data):
			t.Errorf("%s was replaced by the failed run (%d bytes, was %d)", name, len(got), len(data))
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("the failed run left %s behind", name)
		}
	}
}

// goodLines returns n records of the sample input, from the first'th on.
func goodLines(t *testing.T, first, n int) string {
	t.Helper()
	var b strings.Builder
	for _, r := range readRecords(t, calls())[first : first+n] {
		b.WriteString(r.raw + "\n")
	}
	return b.String()
}

// firstRun writes the exports from 40 records and returns what they hold.
func firstRun(t *testing.T, dir, hcl string, env []string) map[string][]byte {
	t.Helper()
	writeFile(t, filepath.Join(dir, "in", "a.jsonl"), goodLines(t, 0, 40))
	writeFile(t, filepath.Join(dir, "p.hcl"), hcl)
	if res := pipeline(t, dir, env, "run", "p.hcl"); res.code != 0 {
		t.Fatalf("first run: exit %d\n%s", res.code, res.stderr)
	}
	before := snapshotDir(t, filepath.Join(dir, "out"))
	for _, name := range []string{"out.parquet", "out.json"} {
		if len(before[name]) == 0 {
			t.Fatalf("the first run wrote no %s: %v", name, before)
		}
	}
	return before
}

// A source fails after the sinks were sent some of the run's records. The
// engine then ends the sinks' streams normally (CloseSend, so that what was
// read is delivered and committed: engine/run's
// TestSourceFailureDeliversAndCommitsWhatCameBefore), which a sink cannot
// tell from a successful end; this fails until the engine cancels, or
// otherwise marks, the streams of a failed run.
func TestFileReplaceSourceFailureKeepsTheExports(t *testing.T) {
	for _, refresh := range []bool{false, true} {
		t.Run(fmt.Sprintf("full_refresh=%v", refresh), func(t *testing.T) {
			dir := t.TempDir()
			before := firstRun(t, dir, replaceHCL(filepath.Join(dir, "in", "*.jsonl"), ""), nil)

			// Three good batches, then a bad line: the source fails after
			// the sinks were sent records of this run.
			writeFile(t, filepath.Join(dir, "in", "b.jsonl"), goodLines(t, 40, 30)+`{"row_id": "broken", "text": "unterminated`+"\n")
			args := []string{"run", "p.hcl"}
			if refresh {
				args = []string{"run", "--full-refresh", "p.hcl"}
			}
			res := pipeline(t, dir, nil, args...)
			if res.code != 1 || !strings.Contains(res.stderr, "b.jsonl:31") {
				t.Fatalf("second run: exit %d, want 1 naming b.jsonl:31\n%s", res.code, res.stderr)
			}
			checkUnchanged(t, filepath.Join(dir, "out"), before)
		})
	}
}

func crashyBlock() string {
	return fmt.Sprintf(`
plugin "sink" "crashy" {
  command = %q
}

sink "crashy" "ids" {
  inputs = [source.calls]
  path   = "ids.txt"
}
`, bin("sink-crashy"))
}

// Another sink crashes mid-run. The engine lets the other sinks finish
// what they were sent and ends their streams normally (CloseSend; engine/run
// sinkFailed), and even when it cancels a stream, a file sink that already
// had its normal end has renamed its file. Nothing in the protocol tells a
// sink that the run as a whole failed, so this fails until the engine
// cancels the streams of replacing sinks on a failed run and ends them only
// once the run's outcome is known (or the protocol gets a commit step).
func TestFileReplaceSinkCrashKeepsTheExports(t *testing.T) {
	dir := t.TempDir()
	before := firstRun(t, dir, replaceHCL(filepath.Join(dir, "in", "*.jsonl"), crashyBlock()), nil)

	// 60 batches; the crashy sink dies on its third.
	writeFile(t, filepath.Join(dir, "in", "b.jsonl"), goodLines(t, 40, 600))
	res := pipeline(t, dir, []string{"CRASHY_AFTER=2"}, "run", "p.hcl")
	if res.code != 1 || !strings.Contains(res.stderr, "exit status 3") {
		t.Fatalf("second run: exit %d, want 1 and the crash\n%s", res.code, res.stderr)
	}
	checkUnchanged(t, filepath.Join(dir, "out"), before)

	// The next good run replaces both files with what it read.
	res = pipeline(t, dir, nil, "run", "p.hcl")
	if res.code != 0 {
		t.Fatalf("third run: exit %d\n%s", res.code, res.stderr)
	}
	after := snapshotDir(t, filepath.Join(dir, "out"))
	if len(after) != 2 || bytes.Equal(after["out.json"], before["out.json"]) || bytes.Equal(after["out.parquet"], before["out.parquet"]) {
		t.Fatalf("the good run after the failure did not replace the exports: %d files", len(after))
	}
}
