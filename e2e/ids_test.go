package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ticketLines returns n JSONL tickets without a row_id, numbered from first.
func ticketLines(first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, `{"ticket":%d,"text":"ticket %d","classifications":{"churn_risk":{"label":"High","confidence":0.95}}}`+"\n", i, i)
	}
	return b.String()
}

// A record's id depends on its own place in its input, so a full refresh
// after incremental runs cuts batches differently and still sends every
// record under the id it had (issue 10, item 2).
func TestRecordIDsStableAcrossFullRefresh(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "tickets.jsonl")
	writeFile(t, input, ticketLines(0, 200))
	rcv := newReceiver(t)
	hcl := filepath.Join(dir, "p.hcl")
	writeFile(t, hcl, fmt.Sprintf(`
pipeline { name = "tickets" }

source "file" "tickets" {
  path       = %q
  batch_rows = 64
}

sink "webhook" "crm" {
  inputs = [source.tickets]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
}
`, input))
	state := filepath.Join(dir, "state.db")
	run := func(args ...string) {
		t.Helper()
		r := pipeline(t, dir, rcv.env(), append([]string{"run", "--state", state, hcl}, args...)...)
		if r.code != 0 {
			t.Fatalf("run %v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	run()
	first := rcv.ids()
	if len(first) != 200 {
		t.Fatalf("first run delivered %d ids, want 200", len(first))
	}
	f, err := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(ticketLines(200, 10)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run()
	if got := len(rcv.ids()); got != 210 {
		t.Fatalf("after the appended run the endpoint has %d ids, want 210", got)
	}
	byTicket := idsByTicket(t, rcv)
	run("--full-refresh")
	if got := len(rcv.ids()); got != 210 {
		t.Fatalf("after --full-refresh the endpoint has %d distinct ids for 210 records, want 210 (ids changed with the batch cuts)", got)
	}
	for ticket, id := range idsByTicket(t, rcv) {
		if byTicket[ticket] != id {
			t.Fatalf("ticket %s: id %s after the full refresh, %s before", ticket, id, byTicket[ticket])
		}
	}
}

// idsByTicket maps each ticket number to the webhook-id it arrived under;
// a ticket that arrived under two ids fails the test.
func idsByTicket(t *testing.T, rcv *receiver) map[string]string {
	t.Helper()
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	out := map[string]string{}
	for id, body := range rcv.bodies {
		i := strings.Index(string(body), `"ticket":`)
		if i < 0 {
			t.Fatalf("body of %s has no ticket: %s", id, body)
		}
		rest := string(body)[i+len(`"ticket":`):]
		ticket := rest[:strings.IndexAny(rest, ",}")]
		if prev, ok := out[ticket]; ok && prev != id {
			t.Fatalf("ticket %s arrived under two ids: %s and %s", ticket, prev, id)
		}
		out[ticket] = id
	}
	return out
}
