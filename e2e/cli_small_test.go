package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// deliveriesHCL sends every record of input to the receiver's webhook.
func deliveriesHCL(input string) string {
	return fmt.Sprintf(`
pipeline { name = "many" }

source "file" "calls" {
  path = %q
}

sink "webhook" "crm" {
  inputs = [source.calls]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
}
`, input)
}

func TestCLISmallDeliveriesSaysWhenTheListIsCut(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t)
	writeFile(t, filepath.Join(dir, "in.jsonl"), goodLines(t, 0, 150))
	writeFile(t, filepath.Join(dir, "p.hcl"), deliveriesHCL(filepath.Join(dir, "in.jsonl")))
	if res := pipeline(t, dir, rcv.env(), "run", "p.hcl"); res.code != 0 {
		t.Fatalf("run: exit %d\n%s", res.code, res.stderr)
	}
	if n := len(rcv.ids()); n != 150 {
		t.Fatalf("the receiver got %d records, want 150", n)
	}

	list := func(args ...string) ([]map[string]any, string) {
		t.Helper()
		res := pipeline(t, dir, nil, append([]string{"deliveries", "--json"}, append(args, "p.hcl")...)...)
		if res.code != 0 {
			t.Fatalf("deliveries %v: exit %d\n%s", args, res.code, res.stderr)
		}
		var out []map[string]any
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
			t.Fatalf("deliveries %v --json is not one JSON array (%v):\n%s", args, err, res.stdout)
		}
		return out, res.stderr
	}
	for _, tc := range []struct {
		args     []string
		want     int
		wantNote string // "" for none
	}{
		{nil, 100, "showing the newest 100 of 150 deliveries; --limit 0 for all"},
		{[]string{"--limit", "0"}, 150, ""},
		{[]string{"--limit", "150"}, 150, ""},
		{[]string{"--limit", "200"}, 150, ""},
		{[]string{"--status", "delivered", "--limit", "10"}, 10, "showing the newest 10 of 150 deliveries"},
		{[]string{"--status", "dead", "--limit", "10"}, 0, ""},
	} {
		t.Run(strings.Join(append([]string{"args"}, tc.args...), " "), func(t *testing.T) {
			got, stderr := list(tc.args...)
			if len(got) != tc.want {
				t.Errorf("%d deliveries, want %d", len(got), tc.want)
			}
			if tc.wantNote == "" && strings.Contains(stderr, "showing") {
				t.Errorf("a complete list says it is cut:\n%s", stderr)
			}
			if tc.wantNote != "" && !strings.Contains(stderr, tc.wantNote) {
				t.Errorf("stderr does not say %q:\n%s", tc.wantNote, stderr)
			}
		})
	}
	// The table says it too.
	res := pipeline(t, dir, nil, "deliveries", "p.hcl")
	if res.code != 0 || !strings.Contains(res.stderr, "showing the newest 100 of 150 deliveries") {
		t.Errorf("table: exit %d, stderr:\n%s", res.code, res.stderr)
	}
	if res := pipeline(t, dir, nil, "deliveries", "--limit", "-1", "p.hcl"); res.code != 2 || !strings.Contains(res.stderr, "--limit -1") {
		t.Errorf("--limit -1: exit %d, want 2 and a message\n%s", res.code, res.stderr)
	}
}
