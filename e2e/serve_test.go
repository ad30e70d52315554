package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a process's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serve picks up records appended while it runs, retries from the outbox
// while the endpoint is down, exposes metrics, and stops on SIGTERM.
func TestServeKeepsDeliveringAndExposesMetrics(t *testing.T) {
	dir := t.TempDir()
	ep := newFlaky(t)
	ep.set(http.StatusServiceUnavailable) // down at first
	input := copyFile(t, calls(), dir)
	os.MkdirAll(filepath.Join(dir, "pipelines"), 0o755)
	writeFile(t, filepath.Join(dir, "pipelines", "churn.hcl"), outboxHCL(input))

	l := startLive(t, dir, ep.env(), nil, "serve", "--poll", "200ms", "--metrics-addr", "127.0.0.1:0", "pipelines")

	want := wantHighChurn(t)
	// (Failed attempts are logged at debug level: read them from the log.)
	waitFor(t, "failed attempts while the endpoint is down", 20*time.Second, func() bool {
		failed := pipeline(t, dir, nil, "deliveries", "--status", "failed", "--pipeline", "churn")
		return ep.total() == 0 && strings.Contains(failed.stdout, "503 Service Unavailable")
	})
	ep.set(0) // back up: the outbox drains without a new run
	waitFor(t, "every matching record", 60*time.Second, func() bool { return len(ep.ids()) == len(want) })

	// New records appended to the input are picked up by the next poll.
	f, _ := os.OpenFile(input, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintln(f, `{"row_id":"row_live_1","classifications":{"churn_risk":{"label":"High","confidence":0.97}},"metadata":{"queue":"retention"}}`)
	f.Close()
	waitFor(t, "the appended record", 20*time.Second, func() bool { return ep.ids()["row_live_1"] })

	m := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+/metrics)`).FindStringSubmatch(l.stderr())
	if m == nil {
		t.Fatalf("no metrics address logged:\n%s", l.stderr())
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, wantLine := range []string{
		`pipeline_records_read_total{pipeline="churn"} 1001`,
		fmt.Sprintf(`pipeline_outbox_deliveries{pipeline="churn",sink="crm",status="delivered"} %d`, len(want)+1),
	} {
		if !strings.Contains(string(body), wantLine) {
			t.Errorf("metrics lack %q:\n%s", wantLine, body)
		}
	}

	if code, _ := l.signal(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM\n%s", code, l.stderr())
	}
}
