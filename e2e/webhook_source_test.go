package e2e

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Labelbox signs with X-Hub-Signature: sha1=<hex HMAC of the body>, and
// sends X-Labelbox-Id and X-Labelbox-Event; Label Studio does not sign,
// and is let in by a shared header value.
func TestWebhookSourceLabelboxAndLabelStudio(t *testing.T) {
	rcv := newReceiver(t)
	dir := t.TempDir()
	lbAddr, lsAddr := freeAddr(t), freeAddr(t)
	writeFile(t, filepath.Join(dir, "hooks.hcl"), fmt.Sprintf(`
pipeline { name = "hooks" }

source "webhook" "labelbox" {
  listen       = %q
  path         = "/labelbox"
  signature    = "hub-sha1"
  secret       = "lb-secret"
  id_header    = "X-Labelbox-Id"
  event_header = "X-Labelbox-Event"
}

source "webhook" "labelstudio" {
  listen          = %q
  path            = "/ls"
  signature       = "none"
  require_headers = { "X-LS-Token" = "t0k" }
}

filter "created" {
  inputs = [source.labelstudio]
  where  = "action == 'ANNOTATION_CREATED'"
}

sink "webhook" "lb" {
  inputs = [source.labelbox]
  url    = %q
  secret = %q
}

sink "webhook" "ls" {
  inputs = [filter.created]
  url    = %q
  secret = %q
}
`, lbAddr, lsAddr, rcv.srv.URL+"/lb", rcv.secret.Encode(), rcv.srv.URL+"/ls", rcv.secret.Encode()))
	l := startLive(t, dir, nil, nil, "run", "--state", filepath.Join(dir, "state.db"), "hooks.hcl")
	waitHealthy(t, "http://"+lbAddr, l)
	waitHealthy(t, "http://"+lsAddr, l)

	sign := func(body string) string {
		m := hmac.New(sha1.New, []byte("lb-secret"))
		m.Write([]byte(body))
		return "sha1=" + hex.EncodeToString(m.Sum(nil))
	}
	lb := func(id, event, body, sig string) pushAnswer {
		return post(t, "http://"+lbAddr+"/labelbox", "application/json", []byte(body),
			map[string]string{"X-Labelbox-Id": id, "X-Labelbox-Event": event, "X-Hub-Signature": sig})
	}
	body1 := `{"row_id":"lb-1","label":{"churn":"High"},"version":2}`
	if a := lb("d1", "LABEL_CREATED", body1, sign(body1)); a.status != http.StatusAccepted {
		t.Fatalf("a signed delivery: %d %s", a.status, a.body)
	}
	// Resent (Labelbox retries): answered 200, stored once.
	if a := lb("d1", "LABEL_CREATED", body1, sign(body1)); a.status != http.StatusOK {
		t.Errorf("a resent delivery: %d %s, want 200", a.status, a.body)
	}
	bad := `{"row_id":"lb-bad","label":{"churn":"High"}}`
	for _, sig := range []string{sign(bad + " "), "", "sha1=00"} {
		if a := lb("d2", "LABEL_CREATED", bad, sig); a.status != http.StatusUnauthorized {
			t.Errorf("signature %q: %d %s, want 401", sig, a.status, a.body)
		}
	}
	ls := func(token, body string) pushAnswer {
		return post(t, "http://"+lsAddr+"/ls", "application/json", []byte(body), map[string]string{"X-LS-Token": token})
	}
	created := `{"action": "ANNOTATION_CREATED", "annotation": {"id": 7, "result": [{"value": {"choices": ["Churn"]}}]}, "task": {"id": 42, "data": {"row_id": "t42"}}, "project": {"id": 1}}`
	updated := `{"action": "ANNOTATION_UPDATED", "annotation": {"id": 8}, "task": {"id": 43}, "project": {"id": 1}}`
	for _, b := range []string{created, updated} {
		if a := ls("t0k", b); a.status != http.StatusAccepted {
			t.Fatalf("label studio: %d %s", a.status, a.body)
		}
	}
	if a := ls("wrong", created); a.status != http.StatusUnauthorized {
		t.Errorf("label studio without the shared header: %d, want 401", a.status)
	}
	// The body must be JSON, as for source "http": another type is 415 and
	// stores nothing; a +json type is read.
	if a := post(t, "http://"+lsAddr+"/ls", "text/plain", []byte(created), map[string]string{"X-LS-Token": "t0k"}); a.status != http.StatusUnsupportedMediaType || !strings.Contains(a.body, "text/plain") {
		t.Errorf("a text/plain delivery: %d %s, want 415", a.status, a.body)
	}
	if a := post(t, "http://"+lsAddr+"/ls", "application/vnd.labelstudio+json", []byte(updated), map[string]string{"X-LS-Token": "t0k"}); a.status != http.StatusAccepted {
		t.Errorf("an application/vnd.labelstudio+json delivery: %d %s, want 202", a.status, a.body)
	}

	waitFor(t, "the deliveries", 30*time.Second, func() bool { return rcv.total() >= 2 })
	// A Labelbox delivery posted last: once it has arrived, what came
	// before it has been routed too (instead of sleeping for what may come).
	last := `{"row_id":"lb-last"}`
	if a := lb("d9", "LABEL_CREATED", last, sign(last)); a.status != http.StatusAccepted {
		t.Fatalf("the last delivery: %d %s", a.status, a.body)
	}
	waitFor(t, "the last delivery", 30*time.Second, func() bool { return rcv.ids()["lb-last"] })
	if n := rcv.total() - 1; n != 2 {
		t.Errorf("the receiver got %d deliveries (%v), want 2: the Labelbox one once, the created annotation", n, sortedKeys(rcv.ids()))
	}
	var sawLB, sawLS bool
	for id := range rcv.ids() {
		body, _ := rcv.body(id)
		var rec struct {
			Action string `json:"action"`
		}
		var meta struct {
			Webhook map[string]string `json:"webhook"`
		}
		json.Unmarshal(body, &rec)
		json.Unmarshal(body, &meta)
		switch {
		case id == "lb-last":
		case id == "lb-1":
			sawLB = true
			if meta.Webhook["id"] != "d1" || meta.Webhook["event"] != "LABEL_CREATED" || meta.Webhook["received_at"] == "" || !strings.Contains(string(body), `"label":{"churn":"High"}`) {
				t.Errorf("the Labelbox record: %s", body)
			}
		case rec.Action == "ANNOTATION_CREATED":
			sawLS = true
			if !strings.Contains(string(body), `"choices":["Churn"]`) {
				t.Errorf("the Label Studio record: %s", body)
			}
		default:
			t.Errorf("unexpected delivery %s: %s", id, body)
		}
	}
	if !sawLB || !sawLS {
		t.Errorf("Labelbox delivered: %v, Label Studio created: %v", sawLB, sawLS)
	}
	if code, _ := l.signal(syscall.SIGTERM); code != 143 {
		t.Errorf("exit %d after SIGTERM, want 143\n%s", code, l.stderr())
	}
}

// pipeline validate checks push sources like any block: a bad address is an
// error at its attribute, signature = "none" without require_headers a
// warning at the signature; nothing listens.
func TestValidatePushSources(t *testing.T) {
	dir := t.TempDir()
	listen := freeAddr(t)
	writeFile(t, filepath.Join(dir, "v.hcl"), fmt.Sprintf(`source "webhook" "ls" {
  listen    = %q
  signature = "none"
}
source "http" "push" {
  listen = "nohost"
}
sink "file" "out" {
  inputs = [source.ls, source.push]
  path   = "out.jsonl"
}
`, listen))
	r := pipeline(t, dir, nil, "validate", "v.hcl")
	if r.code != 1 || !strings.Contains(r.stderr, "Warning: The source plugin \"webhook\" warns\n\n  on v.hcl:3:15") ||
		!strings.Contains(r.stderr, "on v.hcl:6:12") || !strings.Contains(r.stderr, `"nohost" is not host:port`) {
		t.Fatalf("validate: exit %d\n%s", r.code, r.stderr)
	}
	writeFile(t, filepath.Join(dir, "ok.hcl"), fmt.Sprintf(`source "webhook" "ls" {
  listen          = %q
  signature       = "none"
  require_headers = { "X-Token" = "t" }
}
sink "file" "out" {
  inputs = [source.ls]
  path   = "out.jsonl"
}
`, listen))
	if r := pipeline(t, dir, nil, "validate", "ok.hcl"); r.code != 0 || strings.Contains(r.stderr, "Warning") {
		t.Fatalf("validate ok.hcl: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := http.Get("http://" + listen + "/healthz"); err == nil {
		t.Error("validate left something listening")
	}
}
