package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// consoleHCL is the pipeline the console test drives: a few records, a
// filter, and a webhook sink that gives up after two attempts.
func consoleHCL(input string) string {
	return fmt.Sprintf(`
pipeline { name = "churn" }

source "file" "calls" {
  path   = %q
  format = "jsonl"
}

filter "high" {
  inputs = [source.calls]
  where  = "score > 0.5"
}

sink "webhook" "crm" {
  inputs = [filter.high]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
  retry {
    schedule = ["0s", "100ms"]
  }
  circuit_breaker {
    failures = 1000
  }
}
`, input)
}

const consoleRecords = `{"row_id":"c1","score":0.9,"customer":"acme"}
{"row_id":"c2","score":0.2,"customer":"globex"}
{"row_id":"c3","score":0.95,"customer":"initech"}
{"row_id":"c4","score":0.7,"customer":"umbrella"}
{"row_id":"c5","score":0.1,"customer":"hooli"}
`

// apiDelivery is the part of the API's delivery that the test reads.
type apiDelivery struct {
	Key    string `json:"key"`
	ID     string `json:"id"`
	Status string `json:"status"`
}

// TestConsole drives the admin console in headless Chromium
// (e2e/ui/console.mjs) against a real `pipeline serve --admin-addr`: the
// list, the graph, the dead delivery replayed from the browser (sent again
// with the same webhook-id), and a sink paused and resumed. `make test-ui`
// installs what it needs (Chromium, e2e/ui/node_modules); without them it
// skips, unless PIPELINE_UI_TEST=require (as make test-ui sets).
func TestConsole(t *testing.T) {
	root := repoRoot()
	missing := func(what string) {
		t.Helper()
		msg := "the console test needs " + what + ": run make test-ui, which installs it"
		if os.Getenv("PIPELINE_UI_TEST") == "require" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node (>= 20)")
	}
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		missing("Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
	}
	if _, err := os.Stat(filepath.Join(root, "e2e", "ui", "node_modules", "playwright-core", "package.json")); err != nil {
		missing("e2e/ui/node_modules (npm ci --prefix e2e/ui)")
	}

	// The receiver answers 500 to the victim's first two requests (both
	// its attempts: it goes dead), 200 after; everything else is accepted.
	const victim, fails = "c3", 2
	ep := newReceiver(t)
	var mu sync.Mutex
	victimRequests := 0
	ep.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("webhook-id") == victim {
				mu.Lock()
				victimRequests++
				n := victimRequests
				mu.Unlock()
				if n <= fails {
					http.Error(w, "temporarily broken", http.StatusInternalServerError)
					return
				}
			}
			inner.ServeHTTP(w, r)
		})
	})

	dir := t.TempDir()
	input := filepath.Join(dir, "calls.jsonl")
	writeFile(t, input, consoleRecords)
	hcl := filepath.Join(dir, "churn.hcl")
	writeFile(t, hcl, consoleHCL(input))

	addr := freeAddr(t)
	const token = "console-test-token-5f1c"
	base := "http://" + addr + "/"

	l := startLive(t, dir, append([]string{"PIPELINE_ADMIN_TOKEN=" + token}, ep.env()...), nil,
		"serve", "--state", filepath.Join(dir, "state.db"), "--metrics-addr", "", "--poll", "500ms", "--admin-addr", addr, hcl)
	alive := func() {
		t.Helper()
		select {
		case <-l.exited:
			t.Fatalf("pipeline serve exited (%d):\n%s", l.code, l.stderr())
		default:
		}
	}

	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string, v any) (int, error) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return resp.StatusCode, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
		}
		return resp.StatusCode, json.Unmarshal(body, v)
	}

	waitFor(t, "the admin server's /healthz", 30*time.Second, func() bool {
		alive()
		resp, err := client.Get(base + "healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	var dead apiDelivery
	var lastErr error
	waitFor(t, "the dead delivery (via the API) and the two others delivered", 60*time.Second, func() bool {
		alive()
		var list struct {
			Deliveries []apiDelivery `json:"deliveries"`
		}
		if _, lastErr = get("api/deliveries?pipeline=churn&status=dead", &list); lastErr != nil || len(list.Deliveries) == 0 {
			return false
		}
		dead = list.Deliveries[0]
		return len(ep.ids()) >= 2
	})
	if dead.ID != victim || len(ep.ids()) != 2 || !ep.ids()["c1"] || !ep.ids()["c4"] {
		t.Fatalf("dead delivery %+v, receiver got %v; want %s dead and c1, c4 delivered (last API error: %v)", dead, ep.ids(), victim, lastErr)
	}

	shots := filepath.Join(root, ".cache", "ui")
	os.RemoveAll(shots)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ui := exec.CommandContext(ctx, node, filepath.Join(root, "e2e", "ui", "console.mjs"))
	ui.Dir = root
	ui.Env = append(os.Environ(),
		"ADMIN_URL="+base, "ADMIN_TOKEN="+token, "SCREENSHOT_DIR="+shots,
		"PIPELINE=churn", "SINK=crm", "DEAD_ID="+dead.ID, "EXPECT_CODE=500",
		"EXPECT_NODES=source.calls,filter.high,sink.crm")
	out, err := ui.CombinedOutput()
	t.Logf("node e2e/ui/console.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the browser test failed (%v); screenshots in %s\npipeline serve's log:\n%s", err, shots, l.stderr())
	}

	// The replay went out again with the same webhook-id, and was accepted.
	mu.Lock()
	n := victimRequests
	mu.Unlock()
	if _, ok := ep.body(dead.ID); !ok || n != fails+1 {
		t.Errorf("the receiver got %d requests with webhook-id %s (want %d), accepted: %v", n, dead.ID, fails+1, ok)
	}
	var d apiDelivery
	if _, err := get("api/deliveries/"+url.PathEscape(dead.Key), &d); err != nil || d.Status != "delivered" || d.ID != dead.ID {
		t.Errorf("after the replay the API says %+v (%v), want %s delivered", d, err, dead.ID)
	}
	var p struct {
		Sinks []struct {
			Name   string `json:"name"`
			Paused bool   `json:"paused"`
		} `json:"sinks"`
	}
	if _, err := get("api/pipelines/churn", &p); err != nil || len(p.Sinks) != 1 || p.Sinks[0].Name != "crm" || p.Sinks[0].Paused {
		t.Errorf("after the resume the API says %+v (%v), want sink crm not paused", p, err)
	}

	if code, _ := l.signal(syscall.SIGTERM); code != 0 {
		t.Errorf("serve exited %d after SIGTERM\n%s", code, l.stderr())
	}
}
