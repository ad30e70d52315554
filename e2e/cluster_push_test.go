package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/engine/cluster"
)

// A push source on a cluster: every worker listens (each on the address
// its environment gives), stores what it accepts in one inbox stream, and
// delivers from it, through a model endpoint of its own (MODEL_URL), to a
// webhook.
func clusterPushPipeline(t *testing.T, dir string) string {
	t.Helper()
	file := filepath.Join(dir, "ingest.hcl")
	writeFile(t, file, `
pipeline { name = "ingest" }

source "http" "api" {
  listen = env("PUSH_LISTEN")
  path   = "/v1/records"
}

transform "http" "enrich" {
  inputs = [source.api]
  url    = env("MODEL_URL")
  fields = ["row_id"]
  into   = "enriched"
  allow_private_networks = true
}

sink "webhook" "crm" {
  inputs = [transform.enrich]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
  retry {
    schedule = ["0s", "100ms", "200ms", "400ms"]
  }
}
`)
	return file
}

// pushModel is the workers' model endpoint (/w0, /w1): it answers each
// record {"ok": true}; once a path is held, it answers nothing more there
// and records the ids it was sent (what that worker read and could not
// pass on).
type pushModel struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hold map[string]bool
	held map[string]bool
}

func newPushModel(t *testing.T) *pushModel {
	m := &pushModel{hold: map[string]bool{}, held: map[string]bool{}}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var recs []struct {
			RowID string `json:"row_id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&recs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m.mu.Lock()
		hold := m.hold[r.URL.Path]
		if hold {
			for _, rec := range recs {
				m.held[rec.RowID] = true
			}
		}
		m.mu.Unlock()
		if hold {
			<-r.Context().Done() // its worker is killed: the connection goes
			return
		}
		out := make([]map[string]bool, len(recs))
		for i := range out {
			out[i] = map[string]bool{"ok": true}
		}
		json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(m.srv.CloseClientConnections)
	t.Cleanup(m.srv.Close)
	return m
}

func (m *pushModel) setHold(path string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hold[path] = true
}

func (m *pushModel) heldIDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for id := range m.held {
		if id != "" {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// tryPost posts records and reports the status and body, or the error of
// a request that got no answer (its worker was killed).
func tryPost(client *http.Client, url string, body []byte, header map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// killTree SIGKILLs a worker and the plugin processes it started, as the
// death of its machine would.
func killTree(t *testing.T, pid int) {
	t.Helper()
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pids[i], pids[i]))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				pids = append(pids, c)
			}
		}
	}
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// Two workers serve one push source behind two addresses; a client posts
// batches to both in turn, and one worker is SIGKILLed mid-way (the client
// goes on posting to the other). Every record that was answered 202 is
// delivered: those the killed worker had stored and not read, and those it
// had read and not committed, which come back to the live worker after the
// inbox consumer's ack wait. Before the kill, the killed worker's model
// endpoint stops answering, so that some of what it read is known to have
// gone no further than it (not to the outbox): only the inbox can bring
// those back.
func TestClusterPushSourceOnTwoWorkersLosesNothing(t *testing.T) {
	prefix := clusterPrefix(t)
	dir := t.TempDir()
	rcv := newReceiver(t)
	model := newPushModel(t)
	file := clusterPushPipeline(t, dir)
	addrs := []string{freeAddr(t), freeAddr(t)}
	metrics := freeAddr(t) // the live worker's
	var ws []*worker
	for i, addr := range addrs {
		env := append(rcv.env(), "PUSH_LISTEN="+addr, fmt.Sprintf("MODEL_URL=%s/w%d", model.srv.URL, i))
		m := ""
		if i == 0 {
			m = metrics
		}
		ws = append(ws, startWorkerMetrics(t, machineNATS, dir, fmt.Sprintf("w%d", i), prefix, m, env, file))
	}
	for i, addr := range addrs {
		waitHealthy(t, "http://"+addr, ws[i].liveRun)
	}
	urls := []string{"http://" + addrs[0] + "/v1/records", "http://" + addrs[1] + "/v1/records"}
	client := &http.Client{Timeout: 30 * time.Second}

	// A retry with the same Idempotency-Key on the other worker is
	// answered as the first was, with the same ids.
	keyed := []byte(`{"row_id":"keyed-0"}` + "\n" + `{"note":"no row_id"}` + "\n")
	code1, body1, err := tryPost(client, urls[0], keyed, map[string]string{"Idempotency-Key": "order-1"})
	if err != nil || code1 != http.StatusAccepted {
		t.Fatalf("first keyed post: %d %s %v\n%s", code1, body1, err, ws[0].stderr())
	}
	code2, body2, err := tryPost(client, urls[1], keyed, map[string]string{"Idempotency-Key": "order-1"})
	if err != nil || code2 != http.StatusAccepted || body2 != body1 {
		t.Fatalf("the retry on the other worker: %d %s %v; want 202 with the first answer %s", code2, body2, err, body1)
	}
	var first struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal([]byte(body1), &first); err != nil || len(first.IDs) != 2 {
		t.Fatalf("first keyed answer %s", body1)
	}
	accepted := append([]string(nil), first.IDs...)
	byFirst := len(first.IDs) // records worker 0 stored (the retry on worker 1 stored nothing)

	// Batches to both in turn. After a third of them worker 1's model
	// endpoint stops answering; once worker 1 has read records it cannot
	// pass on, it is killed, and the rest go to worker 0.
	const batches, perBatch = 120, 25
	victim := ws[1]
	var beforeKill, lost int
	var held []string
	killed := false
	for b := range batches {
		if b == batches/3 {
			for deadline := time.Now().Add(60 * time.Second); rcv.total() == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) { // (deliveries are under way before the hold)
					t.Fatalf("nothing delivered after 60 s\n%s", ws[0].stderr())
				}
			}
			model.setHold("/w1")
		}
		if b > batches/3 && !killed && len(model.heldIDs()) > 0 {
			killTree(t, victim.cmd.Process.Pid)
			victim.finish(time.Minute)
			killed, beforeKill, held = true, len(accepted), model.heldIDs()
		}
		target := b % 2
		if killed {
			target = 0
		}
		var body strings.Builder
		var ids []string
		for r := range perBatch {
			id := fmt.Sprintf("b%d-r%d", b, r)
			ids = append(ids, id)
			fmt.Fprintf(&body, `{"row_id":%q,"batch":%d,"n":%d}`+"\n", id, b, r)
		}
		code, resp, err := tryPost(client, urls[target], []byte(body.String()), nil)
		if err != nil || code != http.StatusAccepted {
			// Not answered 202: the client would retry; nothing is asserted of it.
			lost++
			t.Logf("batch %d to worker %d: %d %v", b, target, code, err)
			continue
		}
		var got struct {
			IDs []string `json:"ids"`
		}
		if err := json.Unmarshal([]byte(resp), &got); err != nil || strings.Join(got.IDs, ",") != strings.Join(ids, ",") {
			t.Fatalf("batch %d: answer %s", b, resp)
		}
		accepted = append(accepted, ids...)
		if target == 0 {
			byFirst += len(ids)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !killed {
		t.Fatalf("worker 1 read nothing after its model endpoint stopped answering\n%s", victim.stderr())
	}
	waitDelivered(t, rcv, map[string][]string{"accepted": accepted}, 120*time.Second, ws...)
	got := rcv.ids()
	for _, id := range held {
		if !got[id] {
			t.Errorf("record %s, read by the killed worker and held there, was not delivered", id)
		}
	}

	// Duplicates are bounded by what the killed worker had in flight past
	// its inbox: the outbox deliveries it may have held leased, sent and
	// not recorded. (The inbox entries it had read and not committed are
	// read again by the live worker; those whose records it had enqueued
	// are enqueued again with the same ids, which the outbox stream drops
	// within its dedupe window.)
	dups := rcv.total() - len(rcv.ids())
	t.Logf("%d records answered 202 (%d before the kill), %d batches not answered 202, %d records held by the killed worker, %d deliveries, %d duplicates",
		len(accepted), beforeKill, lost, len(held), rcv.total(), dups)
	if dups > cluster.DefaultMaxHeld {
		t.Errorf("%d duplicate deliveries, more than the killed worker can have had in flight (%d)", dups, cluster.DefaultMaxHeld)
	}
	// Once all is delivered and committed, the cluster's inbox is empty, as
	// the live worker's metrics say (a hang guard, not a speed bound).
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `pipeline_push_records_pending{pipeline="ingest",source="api"} 0`) {
			// What worker 0 stored: each record it answered 202 for, and
			// perhaps some of a batch it answered otherwise.
			m := regexp.MustCompile(`pipeline_push_records_accepted_total\{pipeline="ingest",source="api"\} (\d+)`).FindStringSubmatch(string(body))
			if m == nil {
				t.Fatalf("no pipeline_push_records_accepted_total in the metrics:\n%s", grepLines(string(body), "pipeline_push"))
			}
			if n, _ := strconv.Atoi(m[1]); n < byFirst || n > byFirst+lost*perBatch {
				t.Errorf("worker 0's accepted_total is %d, want %d (up to %d more from batches not answered 202)", n, byFirst, lost*perBatch)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s the metrics do not show an empty inbox:\n%s", grepLines(string(body), "pipeline_push"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopWorkers(t, ws[0])
}
