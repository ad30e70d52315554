package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The example custom sink, built from examples/sink-audit, run from HCL.
func TestCustomSinkFromHCL(t *testing.T) {
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.log")
	writeFile(t, filepath.Join(dir, "audit.hcl"), fmt.Sprintf(`
plugin "sink" "audit" {
  command = %q
}

source "file" "calls" {
  path = %q
}

filter "retention" {
  inputs = [source.calls]
  where  = "metadata.queue == 'retention'"
}

sink "audit" "log" {
  inputs = [filter.retention]
  path   = %q
}
`, bin("sink-audit"), calls(), audit))

	plugins := pipeline(t, dir, nil, "plugins", "audit.hcl")
	if plugins.code != 0 || !strings.Contains(plugins.stdout, `sink "audit"  1.0.0`) || !strings.Contains(plugins.stdout, `sink "webhook"`) {
		t.Fatalf("pipeline plugins:\n%s%s", plugins.stdout, plugins.stderr)
	}

	res := pipeline(t, dir, nil, "run", "--json", "audit.hcl")
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	data, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, r := range readRecords(t, calls()) {
		if md, _ := r.value["metadata"].(map[string]any); md["queue"] == "retention" {
			want[rowID(r.value)] = r.raw
		}
	}
	got := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("audit log has %d lines, want %d", len(got), len(want))
	}
	for _, line := range got {
		id, body, _ := strings.Cut(line, " ")
		if raw, ok := want[id]; !ok || !jsonEqual([]byte(body), []byte(raw)) {
			t.Errorf("unexpected audit line %q", line)
		}
	}
}
