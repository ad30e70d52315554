package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pipeline run with a push source says, in its progress line and its JSON
// summary, what the source accepted, what is pending and the requests it
// answered by status.
func TestHTTPPushProgress(t *testing.T) {
	rcv := newReceiver(t)
	dir := t.TempDir()
	listen := freeAddr(t)
	writeFile(t, filepath.Join(dir, "push.hcl"), pushHCL(listen, rcv.srv.URL+"/crm", rcv.secret.Encode()))
	l := startLive(t, dir, []string{"INGEST_TOKEN=s3cret"}, nil, "run", "--json", "--progress-interval", "100ms", "--state", filepath.Join(dir, "state.db"), "push.hcl")
	base := "http://" + listen
	waitHealthy(t, base, l)
	url := base + "/v1/records"
	auth := map[string]string{"Authorization": "Bearer s3cret"}
	body := `{"row_id":"p1","score":0.9}` + "\n" + `{"row_id":"p2","score":0.1}` + "\n" + `{"row_id":"p3","score":0.8}` + "\n"
	if a := post(t, url, "application/x-ndjson", []byte(body), auth); a.status != 202 {
		t.Fatalf("post: %d %s", a.status, a.body)
	}
	if a := post(t, url, "application/x-ndjson", []byte(body), nil); a.status != 401 {
		t.Fatalf("post without a token: %d %s", a.status, a.body)
	}
	waitFor(t, "the matching records at the receiver", 30*time.Second, func() bool { return len(rcv.ids()) >= 2 })
	l.waitLine("a progress line with the push source's counts", 30*time.Second, func(line string) bool {
		return strings.Contains(line, "push: accepted 3, pending 0") && strings.Contains(line, "requests 202: 1, 401: 1")
	})
	if code, _ := l.signal(syscall.SIGINT); code != 130 {
		t.Fatalf("exit %d after SIGINT, want 130\n%s", code, l.stderr())
	}
	var sum struct {
		Push map[string]struct {
			Accepted int64            `json:"accepted"`
			Pending  int64            `json:"pending"`
			Requests map[string]int64 `json:"requests"`
		} `json:"push"`
	}
	out := l.stdout.String()
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &sum); err != nil {
		t.Fatalf("summary: %v\n%s", err, out)
	}
	p := sum.Push["push"]
	if p.Accepted != 3 || p.Pending != 0 || p.Requests["202"] != 1 || p.Requests["401"] != 1 {
		t.Fatalf("summary push = %+v, want 3 accepted, 0 pending, one 202 and one 401\n%s", p, out)
	}
}
