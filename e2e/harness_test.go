// Package e2e runs the real pipeline binary, with its real plugin processes,
// against real HTTP servers.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk/webhook"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pipeline-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for name, pkg := range map[string]string{
		"pipeline":         "./cmd/pipeline",
		"sink-crashy":      "./e2e/plugins/sink-crashy",
		"sink-audit":       "./examples/sink-audit",
		"transform-redact": "./examples/transform-redact",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func bin(name string) string { return filepath.Join(binDir, name) }

// result is what one pipeline command did.
type result struct {
	stdout, stderr string
	code           int
}

// pipeline runs the binary in dir with extra environment.
func pipeline(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin("pipeline"), args...)
	cmd.Dir = dir
	// The test endpoints are on loopback, which the SSRF guard refuses
	// unless told otherwise.
	cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("pipeline %v: %v", args, err)
	}
	return res
}

// summary parses `pipeline run --json` output.
type summary struct {
	Status    string           `json:"status"`
	Error     string           `json:"error"`
	Read      int64            `json:"read"`
	Skipped   int64            `json:"skipped"`
	Filtered  int64            `json:"filtered"`
	Rejected  int64            `json:"rejected"`
	Delivered int64            `json:"delivered"`
	Sinks     map[string]int64 `json:"sinks"`
}

func parseSummary(t *testing.T, r result) summary {
	t.Helper()
	var s summary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("run --json printed no summary (%v)\nstdout: %s\nstderr: %s", err, r.stdout, r.stderr)
	}
	return s
}

// receiver is a webhook endpoint that verifies every delivery.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret webhook.Secret
	// delay slows every answer (nanoseconds; set with setDelay).
	delay atomic.Int64
	// handler answers requests: the verifying one, or a wrapper around it
	// (wrap); swapped atomically because the server is already running.
	handler atomic.Pointer[http.Handler]

	mu       sync.Mutex
	bodies   map[string][]byte // by webhook-id, the last body received
	attempts map[string]int
	failures []string
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	secret, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, secret: secret, bodies: map[string][]byte{}, attempts: map[string]int{}}
	var verify http.Handler = http.HandlerFunc(r.serve)
	r.handler.Store(&verify)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		(*r.handler.Load()).ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if d := time.Duration(r.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := webhook.Verify(r.secret, req.Header, body); err != nil {
		r.failures = append(r.failures, err.Error())
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	id := req.Header.Get("webhook-id")
	r.bodies[id] = body
	r.attempts[id]++
}

func (r *receiver) setDelay(d time.Duration) { r.delay.Store(int64(d)) }

// wrap replaces the receiver's handler by f(the current one).
func (r *receiver) wrap(f func(inner http.Handler) http.Handler) {
	h := f(*r.handler.Load())
	r.handler.Store(&h)
}

// body returns the last body received for a webhook-id.
func (r *receiver) body(id string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.bodies[id]
	return b, ok
}

func (r *receiver) env() []string {
	return []string{"CRM_WEBHOOK_URL=" + r.srv.URL + "/crm", "CRM_WEBHOOK_SECRET=" + r.secret.Encode()}
}

func (r *receiver) ids() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for id := range r.bodies {
		out[id] = true
	}
	return out
}

func (r *receiver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.attempts {
		n += c
	}
	return n
}

func (r *receiver) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies = map[string][]byte{}
	r.attempts = map[string]int{}
}

// record is one input line, decoded, with its raw text.
type record struct {
	raw   string
	value map[string]any
}

func readRecords(t *testing.T, path string) []record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, record{raw: line, value: v})
	}
	return out
}

// highChurn is the churn pipeline's filter, written independently in Go.
func highChurn(v map[string]any) bool {
	cls, _ := v["classifications"].(map[string]any)
	churn, _ := cls["churn_risk"].(map[string]any)
	label, _ := churn["label"].(string)
	conf, ok := churn["confidence"].(float64)
	return label == "High" && ok && conf > 0.8
}

func rowID(v map[string]any) string { s, _ := v["row_id"].(string); return s }

// copyFile copies src into dir and returns the new path.
func copyFile(t *testing.T, src, dir string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// jsonEqual compares two JSON texts by value.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
