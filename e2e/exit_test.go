package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// `pipeline run` exits with 2 when it completed but deliveries went dead in
// it, with 0 when every one was delivered (issue 10, item 7).
func TestExitStatusOfARunWithDeadDeliveries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer int // what the endpoint answers every request; 0: accept
		code   int
		line   string // a line of the summary on stderr
	}{
		{"all delivered", 0, 0, "sink crm: 20 delivered, 0 dead, 0 pending"},
		{"410 Gone", http.StatusGone, 2, "sink crm: 0 delivered, 20 dead, 0 pending"},
		{"400 Bad Request", http.StatusBadRequest, 2, "sink crm: 0 delivered, 20 dead, 0 pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			input := filepath.Join(dir, "in.jsonl")
			writeScored(t, input, 20, 20, nil)
			writeFile(t, filepath.Join(dir, "p.hcl"), fmt.Sprintf(`
pipeline { name = "exits" }

source "file" "in" {
  path = %q
}

sink "webhook" "crm" {
  inputs = [source.in]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
  retry {
    schedule = ["0s", "50ms", "50ms"]
  }
}
`, input))
			rcv := newReceiver(t)
			if tc.answer != 0 {
				rcv.wrap(func(http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
						http.Error(w, "no", tc.answer)
					})
				})
			}
			r := runFaults(t, dir, rcv.env(), "run", "--json", "p.hcl")
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\nstderr:\n%s", r.code, tc.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "exits done: ") || !strings.Contains(r.stderr, tc.line) {
				t.Errorf("stderr lacks the summary (exits done: …, %q):\n%s", tc.line, r.stderr)
			}
			if tc.code == 2 && !strings.Contains(r.stderr, "20 deliveries of sink crm are dead") {
				t.Errorf("stderr does not say the deliveries are dead:\n%s", r.stderr)
			}
			if s := parseSummary(t, r); s.Status != "done" || s.Read != 20 {
				t.Errorf("--json: status %q, read %d; want done, 20", s.Status, s.Read)
			}
		})
	}
}

func TestExitStatusIsDocumented(t *testing.T) {
	r := pipeline(t, t.TempDir(), nil, "run", "--help")
	for _, want := range []string{"Exit status:", "\n  0 ", "\n  1 ", "\n  2 ", "\n  75 ", "\n  130 "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("run --help lacks %q:\n%s", want, r.stdout)
		}
	}
}
