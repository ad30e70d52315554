package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// adminAPI talks to a serve's admin listener with its token.
type adminAPI struct {
	t     *testing.T
	base  string
	token string
}

func (a adminAPI) call(method, path string, v any) int {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0 // not listening (yet, or any more)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(body, v); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

type adminDelivery struct {
	Key, ID, Sink, Status string
	Log                   []struct {
		StatusCode int `json:"status_code"`
	}
}

type adminPipeline struct {
	Name, State string
	Sinks       []struct {
		Name       string
		Paused     bool
		Deliveries struct{ Pending, Delivered, Dead int }
	}
}

func (a adminAPI) deliveries(query string) []adminDelivery {
	var page struct{ Deliveries []adminDelivery }
	a.call("GET", "/api/deliveries?limit=1000&"+query, &page)
	return page.Deliveries
}

func (a adminAPI) pipeline(name string) adminPipeline {
	var p adminPipeline
	a.call("GET", "/api/pipelines/"+name, &p)
	return p
}

// The admin API of a real serve: a dead delivery replayed arrives again
// with its webhook-id; a paused sink sends nothing, also after serve
// restarts, and everything once resumed; a reload with a broken file
// keeps the old version running; secrets appear in no answer.
func TestAdminAPIReplayPauseAcrossRestartReload(t *testing.T) {
	dir := t.TempDir()
	pdir := filepath.Join(dir, "pipelines")
	os.MkdirAll(pdir, 0o755)
	input := filepath.Join(dir, "in.jsonl")
	want := writeScored(t, input, 20, 4, nil)
	// The first match is refused (422: dead at once) until replayed by
	// hand. The rest are accepted.
	first := want[0]
	ep := newFaultEndpoint(t, func(id string, n int) (int, bool) {
		if id == first {
			return 422, false
		}
		return 0, false
	})
	hcl := faultsHCL(input, faultsEnvURL, `  retry {
    schedule = ["0s", "100ms"]
  }`)
	writeFile(t, filepath.Join(pdir, "faults.hcl"), hcl)
	state := filepath.Join(dir, "state.db")
	api := adminAPI{t: t, base: "http://" + freeAddr(t), token: "e2e-admin-token"}
	env := append(ep.env(), "PIPELINE_ADMIN_TOKEN="+api.token)
	serve := func() *liveRun {
		l := startLive(t, dir, env, nil, "serve", "--state", state, "--metrics-addr", "", "--poll", "200ms",
			"--admin-addr", strings.TrimPrefix(api.base, "http://"), pdir)
		waitFor(t, "the admin API", 30*time.Second, func() bool { return api.call("GET", "/healthz", nil) == 200 })
		return l
	}
	l := serve()

	if code := (adminAPI{t: t, base: api.base, token: "wrong"}).call("GET", "/api/pipelines", nil); code != 401 {
		t.Errorf("a wrong token: %d, want 401", code)
	}
	var dead []adminDelivery
	waitFor(t, first+" to go dead and the others to arrive", 30*time.Second, func() bool {
		dead = api.deliveries("status=dead")
		return len(dead) == 1 && ep.acceptedTotal() == 3
	})
	if dead[0].ID != first || len(dead[0].Log) != 1 || dead[0].Log[0].StatusCode != 422 {
		t.Fatalf("the dead delivery: %+v", dead[0])
	}
	// Replay it: it arrives again, with the same webhook-id.
	ep.setAnswer(nil)
	var rep struct{ Replayed int }
	if code := api.call("POST", "/api/deliveries/"+dead[0].Key+"/replay", &rep); code != 200 || rep.Replayed != 1 {
		t.Fatalf("replay: %d %+v", code, rep)
	}
	waitFor(t, "the replayed delivery", 15*time.Second, func() bool { return ep.acceptedTotal() == 4 })
	ep.checkHookIDs(t)
	if d := api.deliveries("q=" + first); len(d) != 1 || d[0].Status != "delivered" || len(d[0].Log) != 2 {
		t.Errorf("after the replay: %+v", d)
	}

	// Pause the sink, restart serve, add records: nothing is sent.
	if code := api.call("POST", "/api/pipelines/faults/sinks/crm/pause", nil); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	if code, _ := l.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exited %d on SIGTERM:\n%s", code, l.stderr())
	}
	l = serve()
	if p := api.pipeline("faults"); p.State != "paused" || len(p.Sinks) != 1 || !p.Sinks[0].Paused {
		t.Errorf("after the restart: %+v, want the sink still paused", p)
	}
	// The run before the restart is still listed: it was interrupted (by
	// SIGTERM), after reading the 20 records.
	var withRuns struct {
		Runs []struct {
			Outcome string
			Counts  struct{ Read int }
		}
	}
	waitFor(t, "the new run in the run log", 15*time.Second, func() bool {
		api.call("GET", "/api/pipelines/faults", &withRuns)
		return len(withRuns.Runs) == 2 && withRuns.Runs[0].Outcome == "running"
	})
	if r := withRuns.Runs[1]; r.Outcome != "interrupted" || r.Counts.Read != 20 {
		t.Errorf("the run before the restart: %+v", r)
	}
	f, _ := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
	for i := range 5 {
		fmt.Fprintf(f, `{"row_id":"p%d","score":0.95,"text":"late"}`+"\n", i)
	}
	f.Close()
	waitFor(t, "the new records in the outbox", 15*time.Second, func() bool { return len(api.deliveries("status=pending")) == 5 })
	before := ep.requestsTotal()
	time.Sleep(1500 * time.Millisecond) // longer than the deliverer's 1 s between leases
	if n := ep.requestsTotal(); n != before {
		t.Fatalf("a paused sink sent %d requests", n-before)
	}
	if code := api.call("POST", "/api/pipelines/faults/sinks/crm/resume", nil); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	waitFor(t, "the held deliveries after resume", 15*time.Second, func() bool { return ep.acceptedTotal() == 9 })

	// Reload with a broken file: the error is reported with its place and
	// the old version keeps delivering.
	writeFile(t, filepath.Join(pdir, "faults.hcl"), strings.Replace(hcl, `where  = "score > 0.8"`, `where  = "score > 0.8"
  bogus  = 1`, 1))
	var rl struct {
		Unchanged []string
		Errors    []struct {
			File        string
			Diagnostics []struct {
				Summary      string
				Line, Column int
			}
		}
	}
	if code := api.call("POST", "/api/reload", &rl); code != 200 {
		t.Fatalf("reload: %d", code)
	}
	if len(rl.Errors) != 1 || !strings.HasSuffix(rl.Errors[0].File, "faults.hcl") || len(rl.Errors[0].Diagnostics) == 0 || rl.Errors[0].Diagnostics[0].Line == 0 {
		t.Fatalf("reload of a broken file: %+v", rl)
	}
	f, _ = os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintln(f, `{"row_id":"q0","score":0.99,"text":"after the broken reload"}`)
	f.Close()
	waitFor(t, "a record delivered by the old version", 15*time.Second, func() bool { return ep.acceptedTotal() == 10 })
	if p := api.pipeline("faults"); p.State != "running" {
		t.Errorf("after the broken reload: %+v", p)
	}

	// Nothing secret in what the API says.
	secret := strings.TrimPrefix(ep.env()[1], "CRM_WEBHOOK_SECRET=")
	for _, path := range []string{"/api/pipelines", "/api/pipelines/faults", "/api/deliveries?limit=1000", "/api/openapi.json"} {
		req, _ := http.NewRequest("GET", api.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+api.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, s := range []string{secret, strings.TrimPrefix(secret, "whsec_"), api.token} {
			if strings.Contains(string(body), s) {
				t.Errorf("%s shows a secret", path)
			}
		}
	}
	l.signal(syscall.SIGTERM)
}

// serve refuses an admin listener that others can reach without a token.
func TestAdminRefusesNonLoopbackWithoutToken(t *testing.T) {
	dir := t.TempDir()
	writeScored(t, filepath.Join(dir, "in.jsonl"), 5, 1, nil)
	writeFile(t, filepath.Join(dir, "p.hcl"), faultsHCL(filepath.Join(dir, "in.jsonl"), faultsEnvURL, ""))
	ep := newFaultEndpoint(t, nil)
	res := pipeline(t, dir, append(ep.env(), "PIPELINE_ADMIN_TOKEN="), "serve", "--state", filepath.Join(dir, "s.db"), "--metrics-addr", "", "--admin-addr", "0.0.0.0:0", "p.hcl")
	if res.code == 0 || !strings.Contains(res.stderr, "PIPELINE_ADMIN_TOKEN") {
		t.Errorf("exit %d:\n%s", res.code, res.stderr)
	}
}

// A reload applies a changed schedule: a pipeline that would fire once a
// year fires every second once its file says so and serve reloads it.
func TestAdminReloadAppliesANewSchedule(t *testing.T) {
	dir := t.TempDir()
	pdir := filepath.Join(dir, "pipelines")
	os.MkdirAll(pdir, 0o755)
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	writeFile(t, in, `{"row_id":"r1"}`+"\n"+`{"row_id":"r2"}`+"\n")
	file := func(schedule string) string {
		return fmt.Sprintf(`pipeline {
  name     = "sched"
  schedule = %q
}
source "file" "in" {
  path = %q
}
sink "file" "out" {
  inputs = [source.in]
  path   = %q
}
`, schedule, in, out)
	}
	writeFile(t, filepath.Join(pdir, "sched.hcl"), file("@yearly"))
	api := adminAPI{t: t, base: "http://" + freeAddr(t), token: "e2e-admin-token"}
	l := startLive(t, dir, []string{"PIPELINE_ADMIN_TOKEN=" + api.token}, nil, "serve", "--state", filepath.Join(dir, "state.db"),
		"--metrics-addr", "", "--admin-addr", strings.TrimPrefix(api.base, "http://"), pdir)
	waitFor(t, "the admin API", 30*time.Second, func() bool { return api.call("GET", "/healthz", nil) == 200 })
	type runs struct {
		State, Schedule string
		Runs            []struct{ Outcome string }
	}
	var p runs
	api.call("GET", "/api/pipelines/sched", &p)
	if p.State != "idle" || p.Schedule != "@yearly" || len(p.Runs) != 0 {
		t.Fatalf("before the reload: %+v", p)
	}
	writeFile(t, filepath.Join(pdir, "sched.hcl"), file("@every 1s"))
	var rl struct{ Reloaded []string }
	if code := api.call("POST", "/api/reload", &rl); code != 200 || len(rl.Reloaded) != 1 || rl.Reloaded[0] != "sched" {
		t.Fatalf("reload: %d %+v\n%s", code, rl, l.stderr())
	}
	waitFor(t, "a firing on the new schedule", 20*time.Second, func() bool {
		api.call("GET", "/api/pipelines/sched", &p)
		return len(p.Runs) > 0 && p.Runs[len(p.Runs)-1].Outcome == "succeeded"
	})
	if p.Schedule != "@every 1s" {
		t.Errorf("schedule after the reload: %q", p.Schedule)
	}
	if data, _ := os.ReadFile(out); strings.Count(string(data), "\n") != 2 {
		t.Errorf("out.jsonl after the firing: %q", data)
	}
	l.signal(syscall.SIGTERM)
}
