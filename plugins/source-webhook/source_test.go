package sourcewebhook

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/push"
	"github.com/pipelinehq/pipeline/sdk/webhook"
)

func configure(t *testing.T, cfg map[string]any) (*Source, error) {
	t.Helper()
	js, _ := json.Marshal(cfg)
	s := &Source{}
	return s, s.Configure(context.Background(), sdk.Config{Name: "hooks", JSON: js})
}

// Standard Webhooks: any secret of a rotation verifies; a timestamp
// outside the tolerance, a changed body or an unknown secret is 401; the
// webhook-id is the dedupe key and the record's webhook.id.
func TestStandardWebhooksRotationAndTolerance(t *testing.T) {
	oldKey, _ := webhook.GenerateSecret()
	newKey, _ := webhook.GenerateSecret()
	other, _ := webhook.GenerateSecret()
	s, err := configure(t, map[string]any{"listen": "127.0.0.1:0", "path": "/hook", "signature": "standard",
		"secrets": []string{newKey.Encode(), oldKey.Encode()}, "tolerance": "5m"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"type":"classification.completed","data":{"churn":0.93}}`)
	req := func(secret webhook.Secret, ts time.Time, b []byte) *push.Request {
		h := http.Header{}
		webhook.SetHeaders(h, secret, "msg_1", ts, b)
		h.Set("webhook-event-type", "classification.completed")
		return &push.Request{Header: h, Body: body, Raw: b, Received: now}
	}
	for name, r := range map[string]*push.Request{"new secret": req(newKey, now, body), "old secret": req(oldKey, now.Add(-4*time.Minute), body)} {
		acc, err := s.accept(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var rec map[string]any
		json.Unmarshal(acc.Records[0], &rec)
		meta, _ := rec["webhook"].(map[string]any)
		if acc.Key != "delivery:msg_1" || acc.DuplicateStatus != http.StatusOK || meta["id"] != "msg_1" || meta["event"] != "classification.completed" || rec["type"] != "classification.completed" {
			t.Errorf("%s: %+v %s", name, acc, acc.Records[0])
		}
	}
	for name, r := range map[string]*push.Request{
		"too old":      req(newKey, now.Add(-6*time.Minute), body),
		"unknown key":  req(other, now, body),
		"changed body": req(newKey, now, []byte(strings.Replace(string(body), "0.93", "0.99", 1))),
		"no headers":   {Header: http.Header{}, Body: body, Raw: body, Received: now},
	} {
		if name == "changed body" {
			r.Raw = body // signed over the other body
		}
		_, err := s.accept(r)
		var he *push.Error
		if !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401", name, err)
		}
	}
}

func TestConfigureErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  map[string]any
		says string
	}{
		{map[string]any{"listen": "nohost", "path": "/h", "signature": "none"}, "listen"},
		{map[string]any{"listen": "127.0.0.1:1", "path": "h", "signature": "none"}, "path"},
		{map[string]any{"listen": "127.0.0.1:1", "path": "/h", "signature": "hub-sha1"}, "needs the shared secret"},
		{map[string]any{"listen": "127.0.0.1:1", "path": "/h", "signature": "md5", "secret": "x"}, "signature"},
		{map[string]any{"listen": "127.0.0.1:1", "path": "/h", "signature": "hub-sha1", "secret": "x", "secrets": []string{"y"}}, "not both"},
		{map[string]any{"listen": "127.0.0.1:1", "path": "/h", "signature": "none", "dedupe_window": "soon"}, "dedupe_window"},
	} {
		if _, err := configure(t, c.cfg); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%v: %v, want an error saying %q", c.cfg, err, c.says)
		}
	}
}

// The delivery metadata goes in the webhook field, replacing a body field
// of that name; a body that is not one object is refused.
func TestRecord(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	rec, err := Record([]byte(`{"a":1,"webhook":"theirs"}`), "d1", "E", at)
	if err != nil || !strings.Contains(string(rec), `"webhook":{"event":"E","id":"d1","received_at":"2026-12-03T10:00:00Z"}`) || strings.Contains(string(rec), "theirs") {
		t.Errorf("%s, %v", rec, err)
	}
	if rec, err := Record([]byte(`{}`), "", "", at); err != nil || string(rec) != `{"webhook":{"received_at":"2026-12-03T10:00:00Z"}}` {
		t.Errorf("%s, %v", rec, err)
	}
	if _, err := Record([]byte(`[{"a":1}]`), "", "", at); err == nil {
		t.Error("an array body was accepted")
	}
}

func FuzzRecord(f *testing.F) {
	f.Add([]byte(`{"a":1}`), "id", "ev")
	f.Add([]byte(`{"webhook":{"x":1},"b":[1]}`), "", "")
	f.Add([]byte(`{}`), "\x00", "\"")
	f.Fuzz(func(t *testing.T, body []byte, id, event string) {
		rec, err := Record(body, id, event, time.Unix(0, 0))
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(rec, &m) != nil || m[MetadataField] == nil {
			t.Fatalf("record %q is not an object with a webhook field", rec)
		}
	})
}

// A delivery's body is JSON: application/json, a +json type or no type at
// all is read; any other type is 415 (after the sender is authenticated:
// without the required header it is 401 whatever it sent).
func TestContentType(t *testing.T) {
	s, err := configure(t, map[string]any{"listen": "127.0.0.1:0", "path": "/h", "signature": "none", "require_headers": map[string]string{"X-Token": "t"}})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"action":"ANNOTATION_CREATED"}`)
	for _, c := range []struct {
		ct, token string
		status    int
	}{
		{"application/json", "t", 0},
		{"application/json; charset=utf-8", "t", 0},
		{"application/vnd.labelbox+json", "t", 0},
		{"", "t", 0},
		{"text/plain", "t", http.StatusUnsupportedMediaType},
		{"application/x-www-form-urlencoded", "t", http.StatusUnsupportedMediaType},
		{"application/json+x", "t", http.StatusUnsupportedMediaType},
		{"application/json; =", "t", http.StatusUnsupportedMediaType},
		{"text/plain", "", http.StatusUnauthorized},
	} {
		h := http.Header{}
		if c.ct != "" {
			h.Set("Content-Type", c.ct)
		}
		if c.token != "" {
			h.Set("X-Token", c.token)
		}
		acc, err := s.accept(&push.Request{Header: h, Body: body, Raw: body, Received: time.Now()})
		var he *push.Error
		switch {
		case c.status == 0 && (err != nil || len(acc.Records) != 1):
			t.Errorf("Content-Type %q: %v, want the delivery accepted", c.ct, err)
		case c.status != 0 && (!errors.As(err, &he) || he.Status != c.status):
			t.Errorf("Content-Type %q, X-Token %q: %v, want %d", c.ct, c.token, err, c.status)
		}
	}
	if err := s.checkHeader(http.Header{}); err == nil {
		t.Error("checkHeader (before the body is read) let a delivery without X-Token in")
	}
}

// A delivery without its id_header is accepted, without dedupe (its
// record id comes from the request), rather than refused: see the README.
func TestMissingIDHeaderIsAcceptedWithoutDedupe(t *testing.T) {
	s, err := configure(t, map[string]any{"listen": "127.0.0.1:0", "path": "/h", "signature": "none", "id_header": "X-Labelbox-Id", "require_headers": map[string]string{"X-Token": "t"}})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"X-Token": {"t"}, "Content-Type": {"application/json"}}
	body := []byte(`{"a":1}`)
	acc, err := s.accept(&push.Request{Header: h, Body: body, Raw: body, Received: time.Now()})
	if err != nil || acc.Key != "" || len(acc.Records) != 1 || strings.Contains(string(acc.Records[0]), `"id"`) {
		t.Fatalf("%+v, %v; want one record, no dedupe key, no webhook.id", acc, err)
	}
	h.Set("X-Labelbox-Id", "d1")
	if acc, err := s.accept(&push.Request{Header: h, Body: body, Raw: body, Received: time.Now()}); err != nil || acc.Key != "delivery:d1" {
		t.Fatalf("with the header: %+v, %v", acc, err)
	}
}
