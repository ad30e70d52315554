package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// adminClient calls one worker's admin API.
type adminClient struct {
	t    *testing.T
	addr string
}

func (a adminClient) do(method, path string, out any) int {
	a.t.Helper()
	req, _ := http.NewRequest(method, "http://"+a.addr+path, nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			a.t.Fatalf("%s %s: %v\n%s", method, path, err, body)
		}
	}
	if resp.StatusCode != http.StatusOK {
		a.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return resp.StatusCode
}

type clusterDelivery struct {
	Key      string `json:"key"`
	ID       string `json:"id"`
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	LastCode int    `json:"last_status_code"`
	Log      []struct {
		StatusCode int    `json:"status_code"`
		Response   string `json:"response"`
	} `json:"log"`
}

// deliveries lists every delivery of a query, page by page.
func (a adminClient) deliveries(query string) []clusterDelivery {
	a.t.Helper()
	var all []clusterDelivery
	cursor := ""
	for {
		var page struct {
			Deliveries []clusterDelivery `json:"deliveries"`
			Next       string            `json:"next_cursor"`
		}
		q := query + "&limit=7"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		if code := a.do("GET", "/api/deliveries?"+q, &page); code != http.StatusOK {
			a.t.Fatalf("GET /api/deliveries?%s: %d", q, code)
		}
		all = append(all, page.Deliveries...)
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
}

func deliveryIDs(ds []clusterDelivery) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	slices.Sort(out)
	return out
}

// On a cluster, every worker's admin API shows the cluster's deliveries
// (from its streams) and checkpoints (from its bucket), and replays its
// dead letters: what one worker delivered, another's API lists.
func TestClusterAdminAPIShowsTheClustersDeliveries(t *testing.T) {
	prefix := clusterPrefix(t)
	dir := t.TempDir()
	rcv, refuse := refusingReceiver(t)
	glob, want := clusterInput(t, dir, 2, 20)
	bad := []string{want[filepath.Join(dir, "in", "calls-0.jsonl")][1], want[filepath.Join(dir, "in", "calls-1.jsonl")][3]}
	slices.Sort(bad)
	for _, id := range bad {
		refuse.Store(id, true)
	}
	var good []string
	for _, ids := range want {
		for _, id := range ids {
			if !slices.Contains(bad, id) {
				good = append(good, id)
			}
		}
	}
	slices.Sort(good)
	file := clusterPipeline(t, dir, glob)
	env := append(rcv.env(), "PIPELINE_ADMIN_TOKEN=tok")
	var ws []*worker
	var apis []adminClient
	for i := range 2 {
		addr := freeAddr(t)
		ws = append(ws, startWorkerArgs(t, machineNATS, dir, fmt.Sprintf("w%d", i), prefix, "", env, []string{"--admin-addr", addr}, file))
		apis = append(apis, adminClient{t: t, addr: addr})
	}
	waitDelivered(t, rcv, map[string][]string{"good": good}, 60*time.Second, ws...)
	deadline := time.Now().Add(60 * time.Second)
	for len(apis[1].deliveries("status=dead")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, fewer than 2 dead letters in the admin API\n%s", ws[0].stderr())
		}
		time.Sleep(200 * time.Millisecond)
	}

	for i, api := range apis {
		// Every worker's API: the dead letters with the receiver's answer...
		dead := api.deliveries("status=dead")
		if got := deliveryIDs(dead); !slices.Equal(got, bad) {
			t.Errorf("worker %d: dead %v, want %v", i, got, bad)
		}
		for _, d := range dead {
			if d.LastCode != http.StatusUnprocessableEntity || len(d.Log) == 0 || d.Log[len(d.Log)-1].StatusCode != http.StatusUnprocessableEntity ||
				!strings.Contains(d.Log[len(d.Log)-1].Response, "unknown customer") {
				t.Errorf("worker %d: dead letter %+v: want its 422 attempts with the answer", i, d)
			}
		}
		// ...every delivered one, page by page, whichever worker sent it...
		if got := deliveryIDs(api.deliveries("status=delivered&pipeline=churn")); !slices.Equal(got, good) {
			t.Errorf("worker %d: %d delivered listed, want %d", i, len(got), len(good))
		}
		if got := api.deliveries("q=" + url.QueryEscape(good[0])); len(got) != 1 || got[0].ID != good[0] || got[0].Status != "delivered" || got[0].Log[0].StatusCode != 200 {
			t.Errorf("worker %d: search for %s: %+v", i, good[0], got)
		}
		// ...and the counts and checkpoints of the pipeline.
		var p struct {
			Sinks []struct {
				Name       string         `json:"name"`
				Deliveries map[string]int `json:"deliveries"`
			} `json:"sinks"`
			Checkpoints []struct {
				Source  string `json:"source"`
				Records int64  `json:"records"`
			} `json:"checkpoints"`
		}
		// (The partitions are committed once the dead letters are stored:
		// a moment after they show.)
		deadline := time.Now().Add(30 * time.Second)
		for {
			if code := api.do("GET", "/api/pipelines/churn", &p); code != http.StatusOK {
				t.Fatalf("worker %d: GET /api/pipelines/churn: %d", i, code)
			}
			if len(p.Checkpoints) == 2 && p.Checkpoints[0].Records == 20 && p.Checkpoints[1].Records == 20 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(p.Sinks) != 1 || p.Sinks[0].Deliveries["delivered"] != len(good) || p.Sinks[0].Deliveries["dead"] != 2 || p.Sinks[0].Deliveries["pending"] != 0 {
			t.Errorf("worker %d: sinks %+v, want crm with %d delivered, 2 dead, 0 pending", i, p.Sinks, len(good))
		}
		if len(p.Checkpoints) != 2 || p.Checkpoints[0].Records != 20 || p.Checkpoints[1].Records != 20 || !strings.HasPrefix(p.Checkpoints[0].Source, "calls["+filepath.Join(dir, "in")) {
			t.Errorf("worker %d: checkpoints %+v, want both partitions of source calls at 20 records", i, p.Checkpoints)
		}
	}
	// A delivered one cannot be replayed on a cluster: 409, nothing sent.
	before := rcv.total()
	delivered := apis[0].deliveries("q=" + url.QueryEscape(good[0]))
	if code := apis[0].do("POST", "/api/deliveries/"+delivered[0].Key+"/replay", nil); code != http.StatusConflict {
		t.Errorf("replay of a delivered one: %d, want 409", code)
	}
	// Paused, the dead letters replayed through one worker's API wait in
	// the outbox (pending on every API); resumed, they are delivered.
	for _, id := range bad {
		refuse.Delete(id)
	}
	if code := apis[0].do("POST", "/api/pipelines/churn/sinks/crm/pause", nil); code != http.StatusOK {
		t.Fatalf("pause: %d", code)
	}
	time.Sleep(time.Second) // the workers read the flag every half second
	var replayed map[string]int
	if code := apis[0].do("POST", "/api/deliveries/replay?pipeline=churn&sink=crm", &replayed); code != http.StatusOK || replayed["replayed"] != 2 {
		t.Fatalf("replay: %d %v, want 2 replayed", code, replayed)
	}
	if got := deliveryIDs(apis[1].deliveries("status=pending")); !slices.Equal(got, bad) {
		t.Errorf("pending after the replay while paused: %v, want %v", got, bad)
	}
	if n := len(apis[1].deliveries("status=dead")); n != 0 {
		t.Errorf("%d dead letters after the replay, want 0", n)
	}
	if code := apis[1].do("POST", "/api/pipelines/churn/sinks/crm/resume", nil); code != http.StatusOK {
		t.Fatalf("resume: %d", code)
	}
	deadline = time.Now().Add(60 * time.Second)
	for rcv.total() < before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("the replayed deliveries did not arrive within 60 s\n%s", ws[0].stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Each replayed one is delivered now, its 422s and its 200 in its log.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var ok []string
		for _, d := range apis[1].deliveries("status=delivered") {
			if slices.Contains(bad, d.ID) && len(d.Log) >= 2 && d.Log[0].StatusCode == http.StatusUnprocessableEntity && d.Log[len(d.Log)-1].StatusCode == 200 {
				ok = append(ok, d.ID)
			}
		}
		if len(ok) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replayed deliveries are not listed delivered with their attempts: %v", apis[1].deliveries("q="+url.QueryEscape(bad[0])))
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopWorkers(t, ws...)
}
