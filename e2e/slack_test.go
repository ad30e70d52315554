package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The built-in Slack sink, from HCL through the real binary: one message per
// matching record, text rendered per record, to an incoming webhook.
func TestSlackIncomingWebhookFromHCL(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var texts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/services/T000/B000/secretpart" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "invalid_payload", http.StatusBadRequest)
			return
		}
		var body struct {
			Text string `json:"text"`
		}
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &body); err != nil {
			http.Error(w, "invalid_payload", http.StatusBadRequest)
			return
		}
		mu.Lock()
		texts = append(texts, body.Text)
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	writeFile(t, filepath.Join(dir, "slack.hcl"), fmt.Sprintf(`
source "file" "calls" {
  path = %q
}
filter "urgent" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.label == 'High' && classifications.churn_risk.confidence > 0.95"
}
sink "slack" "retention" {
  inputs      = [filter.urgent]
  webhook_url = "%s/services/T000/B000/secretpart"
  text        = "Churn risk {{ classifications.churn_risk.confidence }} for {{ metadata.customer_id }}"
  rate_limit  = "1000/s"
}
`, calls(), srv.URL))
	res := pipeline(t, dir, nil, "run", "--json", "slack.hcl")
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	want := map[string]bool{}
	for _, r := range readRecords(t, calls()) {
		cls, _ := r.value["classifications"].(map[string]any)
		churn, _ := cls["churn_risk"].(map[string]any)
		if conf, _ := churn["confidence"].(float64); churn["label"] == "High" && conf > 0.95 {
			want[fmt.Sprintf("Churn risk %v for %s", conf, r.value["metadata"].(map[string]any)["customer_id"])] = true
		}
	}
	if len(want) == 0 || len(texts) != len(want) {
		t.Fatalf("%d messages, want %d", len(texts), len(want))
	}
	for _, txt := range texts {
		if !want[txt] {
			t.Errorf("unexpected message %q", txt)
		}
	}
	if strings.Contains(res.stderr, "secretpart") {
		t.Errorf("the webhook URL's secret part leaked to stderr:\n%s", res.stderr)
	}
}
