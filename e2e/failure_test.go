package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func crashyHCL(input, out, sha string) string {
	pin := ""
	if sha != "" {
		pin = fmt.Sprintf("sha256 = %q", sha)
	}
	return fmt.Sprintf(`
pipeline { name = "crashy" }

plugin "sink" "crashy" {
  command = %q
  %s
}

source "file" "calls" {
  path       = %q
  batch_rows = 100
}

sink "crashy" "ids" {
  inputs = [source.calls]
  path   = %q
}
`, bin("sink-crashy"), pin, input, out)
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

func TestPluginCrashIsReportedAndNothingUnackedIsCommitted(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ids.txt")
	writeFile(t, filepath.Join(dir, "p.hcl"), crashyHCL(calls(), out, ""))

	res := pipeline(t, dir, []string{"CRASHY_AFTER=3"}, "run", "p.hcl")
	if res.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", res.code, res.stderr)
	}
	for _, want := range []string{`sink "crashy" "ids"`, "exit status 3", "crashing on purpose"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, res.stderr)
		}
	}
	if got := len(lines(t, out)); got != 300 {
		t.Fatalf("the sink wrote %d records before crashing, want 300", got)
	}
	// The sink acked 3 batches before it died, but acks still in its send
	// buffer die with it: the checkpoint covers the acks the engine got
	// (whole batches of 100), never more than the 300 records acked.
	show := pipeline(t, dir, nil, "state", "show", "p.hcl")
	committed := -1
	for _, line := range strings.Split(show.stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "crashy" && f[1] == "calls" {
			committed, _ = strconv.Atoi(f[2])
		}
	}
	if committed == -1 && strings.Contains(show.stdout, "no checkpoints") {
		committed = 0
	}
	if committed < 0 || committed > 300 || committed%100 != 0 {
		t.Fatalf("checkpoint should cover whole acked batches, at most the 300 records acked:\n%s", show.stdout)
	}

	// The next run delivers the rest, from the checkpoint on.
	res = pipeline(t, dir, nil, "run", "--json", "p.hcl")
	if res.code != 0 {
		t.Fatalf("second run exit %d\n%s", res.code, res.stderr)
	}
	if s := parseSummary(t, res); s.Read != int64(1000-committed) {
		t.Fatalf("second run read %d, want the %d records after the checkpoint", s.Read, 1000-committed)
	}
	ids := lines(t, out)
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	for _, r := range readRecords(t, calls()) {
		if !seen[rowID(r.value)] {
			t.Errorf("record %s never delivered", rowID(r.value))
		}
	}
	if len(ids) != 1000+300-committed {
		t.Errorf("%d deliveries in all, want %d (only the batch whose ack was lost comes twice)", len(ids), 1000+300-committed)
	}
}

func TestPluginChecksumMismatchRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ids.txt")
	writeFile(t, filepath.Join(dir, "p.hcl"), crashyHCL(calls(), out, strings.Repeat("ab", 32)))
	res := pipeline(t, dir, nil, "run", "p.hcl")
	if res.code != 1 || !strings.Contains(res.stderr, "sha256 mismatch") {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("the plugin ran despite the wrong checksum")
	}

	data, err := os.ReadFile(bin("sink-crashy"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	writeFile(t, filepath.Join(dir, "p.hcl"), crashyHCL(calls(), out, hex.EncodeToString(sum[:])))
	if res := pipeline(t, dir, nil, "run", "p.hcl"); res.code != 0 {
		t.Fatalf("with the right checksum: exit %d\n%s", res.code, res.stderr)
	}
}

func TestBadDataStopsWithFileAndLine(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t)
	good := readRecords(t, calls())[:20]
	var b strings.Builder
	for i, r := range good {
		if i == 6 {
			b.WriteString(`{"row_id": "broken", "text": "unterminated` + "\n")
		}
		b.WriteString(r.raw + "\n")
	}
	input := filepath.Join(dir, "bad.jsonl")
	writeFile(t, input, b.String())
	writeFile(t, filepath.Join(dir, "fail.hcl"), churnHCL(input, 100, ""))

	res := pipeline(t, dir, rcv.env(), "run", "fail.hcl")
	if res.code != 1 || !strings.Contains(res.stderr, "bad.jsonl:7:") || !strings.Contains(res.stderr, `source "file" "calls"`) {
		t.Fatalf("exit %d; want 1 and a message naming the source and bad.jsonl:7\n%s", res.code, res.stderr)
	}
	if rcv.total() != 0 {
		t.Errorf("%d records delivered from a batch that failed", rcv.total())
	}

	writeFile(t, filepath.Join(dir, "skip.hcl"), churnHCL(input, 100, `on_error = "skip"`))
	res = pipeline(t, dir, rcv.env(), "run", "--json", "skip.hcl")
	if res.code != 0 {
		t.Fatalf("skip: exit %d\n%s", res.code, res.stderr)
	}
	s := parseSummary(t, res)
	want := 0
	for _, r := range good {
		if highChurn(r.value) {
			want++
		}
	}
	if s.Skipped != 1 || s.Read != 20 || int(s.Delivered) != want || len(rcv.ids()) != want {
		t.Fatalf("skip: %+v, receiver %d; want skipped 1, read 20, delivered %d", s, len(rcv.ids()), want)
	}
	if !strings.Contains(res.stderr, "skipping bad record") {
		t.Errorf("the skip was not logged:\n%s", res.stderr)
	}
}

func TestValidateReportsAllProblemsAndRunStartsNothing(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "broken.hcl"), `
source "file" "calls" {
  path = "calls.jsonl"
  colour = "blue"
}

filter "f" {
  inputs = [source.call]
  where  = "x > 1"
}

sink "webhoook" "crm" {
  inputs = [filter.f]
}
`)
	res := pipeline(t, dir, nil, "validate", "broken.hcl")
	if res.code != 1 {
		t.Fatalf("validate exit %d, want 1\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"broken.hcl:4", "colour", "broken.hcl:8", "source.call", "broken.hcl:12", "webhoook", `Did you mean "webhook"?`} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("validate output lacks %q:\n%s", want, res.stderr)
		}
	}
	run := pipeline(t, dir, nil, "run", "broken.hcl")
	if run.code != 1 {
		t.Fatalf("run exit %d, want 1", run.code)
	}
	if _, err := os.Stat(filepath.Join(dir, ".pipeline")); !os.IsNotExist(err) {
		t.Error("run created state despite errors")
	}
}
