package e2e

// Delivery under faults: flaky, random, dead and gone endpoints, the circuit
// breaker, signals while the run waits for its outbox, and what the run and
// `pipeline deliveries --summary` report about it. Everything runs the real
// binary against local receivers that verify every request's signature.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk/webhook"
)

// runBound is how long any one `pipeline run` of this file may take before
// it is killed and the test fails: a guard against hangs, not a speed target.
const runBound = 45 * time.Second

// signalHang is how long a run may take to exit after a SIGINT/SIGTERM
// before the test calls it hung: a guard against hangs, not a speed target.
// Whether a run waited for its outbox is told by what it left behind (the
// tests make that wait one that could not end by then).
const signalHang = 60 * time.Second

// ---------------------------------------------------------------------------
// Input and pipeline

// writeScored writes n JSONL records with unique row_ids (r0000, r0001, …)
// of which exactly m, spread evenly, have a score above 0.8; every seventh
// of the others scores exactly 0.8, which does not match. extra, when set,
// adds fields to a record (a JSON fragment starting with a comma). It
// returns the matching ids in source order.
func writeScored(t *testing.T, path string, n, m int, extra func(id string) string) []string {
	t.Helper()
	var b strings.Builder
	var want []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("r%04d", i)
		match := (i+1)*m/n > i*m/n
		score := 0.1 + float64(i%69)/100 // 0.10 … 0.78
		switch {
		case match:
			score = 0.81 + float64(i%19)/100 // 0.81 … 0.99
			want = append(want, id)
		case i%7 == 0:
			score = 0.8
		}
		more := ""
		if extra != nil {
			more = extra(id)
		}
		fmt.Fprintf(&b, `{"row_id":%q,"score":%s,"text":"call %d"%s}`+"\n", id, strconv.FormatFloat(score, 'f', -1, 64), i, more)
	}
	if len(want) != m {
		t.Fatalf("test data: %d records match, want %d", len(want), m)
	}
	writeFile(t, path, b.String())
	return want
}

// faultsHCL is a pipeline that sends the records scoring above 0.8 to a
// webhook sink "crm". url is the url attribute's HCL expression; sinkExtra
// goes into the sink block (retry, circuit_breaker, concurrency).
func faultsHCL(input, url, sinkExtra string) string {
	return fmt.Sprintf(`
pipeline { name = "faults" }

source "file" "in" {
  path = %q
}

filter "hot" {
  inputs = [source.in]
  where  = "score > 0.8"
}

sink "webhook" "crm" {
  inputs = [filter.hot]
  url    = %s
  secret = env("CRM_WEBHOOK_SECRET")
%s
}
`, input, url, sinkExtra)
}

const faultsEnvURL = `env("CRM_WEBHOOK_URL")`

// setupFaults writes n records (m matching) and the pipeline into a new
// directory and returns the directory and the matching ids.
func setupFaults(t *testing.T, n, m int, sinkExtra string) (dir string, want []string) {
	t.Helper()
	dir = t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	want = writeScored(t, input, n, m, nil)
	writeFile(t, filepath.Join(dir, "faults.hcl"), faultsHCL(input, faultsEnvURL, sinkExtra))
	return dir, want
}

// ---------------------------------------------------------------------------
// The endpoint

// faultEndpoint is a webhook endpoint that verifies the Standard Webhooks
// signature of every request (failing ones included) and answers as answer
// decides. It keys everything by the row_id in the body, and remembers the
// webhook-ids each row_id came with.
type faultEndpoint struct {
	*receiver
	// answer returns the status for the n-th request (from 1) carrying
	// row_id id, and whether to add `webhook-delivery: abort-message`. A
	// status of 0 or 2xx accepts (200, through the harness's receiver).
	// Called with mu held.
	answer func(id string, n int) (status int, abort bool)
	// pause slows every answer (nanoseconds).
	pause atomic.Int64

	mu       sync.Mutex
	requests map[string]int             // by row_id
	hookIDs  map[string]map[string]bool // row_id -> webhook-ids seen
	codes    map[string][]int           // row_id -> the answers, in order
	accepted map[string]int             // row_id -> 200 answers
	total    int                        // requests with a valid signature
	badSig   []string
	arrivals []arrival // every request, when it arrived
	firstOK  time.Time // when the first 200 was about to be sent
}

type arrival struct {
	at time.Time
	id string // its webhook-id
}

func newFaultEndpoint(t *testing.T, answer func(id string, n int) (int, bool)) *faultEndpoint {
	t.Helper()
	e := &faultEndpoint{receiver: newReceiver(t), answer: answer, requests: map[string]int{},
		hookIDs: map[string]map[string]bool{}, codes: map[string][]int{}, accepted: map[string]int{}}
	e.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			e.mu.Lock()
			e.arrivals = append(e.arrivals, arrival{time.Now(), r.Header.Get("webhook-id")})
			e.mu.Unlock()
			if d := time.Duration(e.pause.Load()); d > 0 {
				time.Sleep(d)
			}
			var v struct {
				RowID string `json:"row_id"`
			}
			jerr := json.Unmarshal(body, &v)
			e.mu.Lock()
			if err := webhook.Verify(e.secret, r.Header, body); err != nil || jerr != nil {
				e.badSig = append(e.badSig, fmt.Sprintf("%s: %v %v", r.Header.Get("webhook-id"), err, jerr))
				e.mu.Unlock()
				http.Error(w, "bad signature", http.StatusUnauthorized)
				return
			}
			e.total++
			e.requests[v.RowID]++
			if e.hookIDs[v.RowID] == nil {
				e.hookIDs[v.RowID] = map[string]bool{}
			}
			e.hookIDs[v.RowID][r.Header.Get("webhook-id")] = true
			status, abort := 0, false
			if e.answer != nil {
				status, abort = e.answer(v.RowID, e.requests[v.RowID])
			}
			if status == 0 || status/100 == 2 {
				status = http.StatusOK
				e.accepted[v.RowID]++
				if e.firstOK.IsZero() {
					e.firstOK = time.Now()
				}
			}
			e.codes[v.RowID] = append(e.codes[v.RowID], status)
			e.mu.Unlock()
			if status != http.StatusOK {
				if abort {
					w.Header().Set("webhook-delivery", "abort-message")
				}
				w.WriteHeader(status)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			inner.ServeHTTP(w, r)
		})
	})
	return e
}

// setAnswer replaces the answer function.
func (e *faultEndpoint) setAnswer(f func(id string, n int) (int, bool)) {
	e.mu.Lock()
	e.answer = f
	e.mu.Unlock()
}

func (e *faultEndpoint) acceptedTotal() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.accepted {
		n += c
	}
	return n
}

func (e *faultEndpoint) requestsTotal() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.total
}

// snapshot copies the per-id counters.
func (e *faultEndpoint) snapshot() (requests, accepted map[string]int, codes map[string][]int, badSig []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	requests, accepted, codes = map[string]int{}, map[string]int{}, map[string][]int{}
	for k, v := range e.requests {
		requests[k] = v
	}
	for k, v := range e.accepted {
		accepted[k] = v
	}
	for k, v := range e.codes {
		codes[k] = slices.Clone(v)
	}
	return requests, accepted, codes, slices.Clone(e.badSig)
}

// checkHookIDs fails unless every row_id came with exactly one webhook-id,
// its own.
func (e *faultEndpoint) checkHookIDs(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, seen := range e.hookIDs {
		if len(seen) != 1 || !seen[id] {
			t.Errorf("%s arrived with webhook-ids %v, want only %q", id, sortedKeys(seen), id)
		}
	}
}

// checkExactlyOnce fails unless every id in want was accepted exactly once,
// with no request for it after that, and nothing else was accepted.
func (e *faultEndpoint) checkExactlyOnce(t *testing.T, want []string) {
	t.Helper()
	_, accepted, codes, badSig := e.snapshot()
	if len(badSig) > 0 {
		t.Errorf("%d requests failed signature verification, e.g. %s", len(badSig), badSig[0])
	}
	wanted := map[string]bool{}
	for _, id := range want {
		wanted[id] = true
		if accepted[id] != 1 {
			t.Errorf("%s accepted %d times, want exactly 1 (answers %v)", id, accepted[id], codes[id])
		} else if c := codes[id]; c[len(c)-1] != http.StatusOK {
			t.Errorf("%s was sent again after it was accepted (answers %v)", id, c)
		}
	}
	for id, n := range accepted {
		if !wanted[id] {
			t.Errorf("%s accepted %d times but does not match the filter", id, n)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// Running the binary

// runFaults runs the binary to the end, killing it and failing the test if it
// takes more than runBound.
func runFaults(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("pipeline"), args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("pipeline %v did not finish within %s (killed after %s)\nstdout:\n%s\nstderr:\n%s", args, runBound, time.Since(start).Round(time.Millisecond), res.stdout, res.stderr)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("pipeline %v: %v", args, err)
	}
	return res
}

// liveRun is a `pipeline run` under way whose stderr is read line by line
// as it comes.
type liveRun struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdout  bytes.Buffer
	pw      *io.PipeWriter
	scanned chan struct{}

	mu    sync.Mutex
	lines []string

	exited chan struct{} // closed once the process ended and stderr is read
	code   int           // the exit code, once exited
}

// startLive starts the binary; onLine, when set, is called with every stderr
// line as soon as it is read.
func startLive(t *testing.T, dir string, env []string, onLine func(string), args ...string) *liveRun {
	t.Helper()
	l := &liveRun{t: t, scanned: make(chan struct{}), exited: make(chan struct{})}
	l.cmd = exec.Command(bin("pipeline"), args...)
	l.cmd.Dir = dir
	l.cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), env...)
	pr, pw := io.Pipe()
	l.pw = pw
	l.cmd.Stdout = &l.stdout
	l.cmd.Stderr = pw
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(l.scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if onLine != nil {
				onLine(line)
			}
			l.mu.Lock()
			l.lines = append(l.lines, line)
			l.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		err := l.cmd.Wait()
		pw.Close()
		<-l.scanned
		if ee, ok := err.(*exec.ExitError); ok {
			l.code = ee.ExitCode()
		} else if err != nil {
			l.code = -1
		}
		close(l.exited)
	}()
	t.Cleanup(func() {
		l.cmd.Process.Kill()
		l.finish(time.Minute)
	})
	return l
}

// finish waits up to d for the process to end; it reports whether it did.
func (l *liveRun) finish(d time.Duration) bool {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-l.exited:
		return true
	case <-t.C:
		return false
	}
}

// signal sends sig and waits for the process to exit, killing it and
// failing the test if it has not exited signalHang after the signal. It
// returns the exit code and how long the exit took after the signal (for
// the log: nothing is asserted on it).
func (l *liveRun) signal(sig syscall.Signal) (code int, took time.Duration) {
	l.t.Helper()
	start := time.Now()
	if err := l.cmd.Process.Signal(sig); err != nil {
		l.t.Fatalf("signal %s: %v\nstderr:\n%s", sig, err, l.stderr())
	}
	return l.await(start)
}

// await waits for the exit after a signal sent at start.
func (l *liveRun) await(start time.Time) (code int, took time.Duration) {
	l.t.Helper()
	if l.finish(signalHang - time.Since(start)) {
		return l.code, time.Since(start)
	}
	l.cmd.Process.Kill()
	l.finish(time.Minute)
	l.t.Fatalf("the run hung: it had not exited %s after the signal, and was killed\nstderr:\n%s\nstdout:\n%s",
		signalHang, l.stderr(), l.stdout.String())
	return l.code, time.Since(start)
}

// wait waits for a run that ends by itself, within runBound.
func (l *liveRun) wait() int {
	l.t.Helper()
	if !l.finish(runBound) {
		l.cmd.Process.Kill()
		l.finish(time.Minute)
		l.t.Fatalf("the run did not finish within %s\nstderr:\n%s", runBound, l.stderr())
	}
	return l.code
}

func (l *liveRun) stderr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n") + "\n"
}

func (l *liveRun) result() result {
	return result{stdout: l.stdout.String(), stderr: l.stderr(), code: l.code}
}

// waitLine waits until a stderr line satisfies ok and returns it.
func (l *liveRun) waitLine(what string, d time.Duration, ok func(string) bool) string {
	l.t.Helper()
	deadline := time.Now().Add(d)
	seen := 0
	for {
		l.mu.Lock()
		lines := l.lines[seen:]
		seen = len(l.lines)
		l.mu.Unlock()
		for _, line := range lines {
			if ok(line) {
				return line
			}
		}
		select {
		case <-l.scanned:
			l.mu.Lock()
			rest := len(l.lines) > seen
			l.mu.Unlock()
			if !rest {
				l.t.Fatalf("the run ended before %s\nstderr:\n%s", what, l.stderr())
			}
			continue
		default:
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out after %s waiting for %s\nstderr:\n%s", d, what, l.stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sawLine waits up to d for a stderr line satisfying ok, without failing.
func (l *liveRun) sawLine(d time.Duration, ok func(string) bool) bool {
	deadline := time.Now().Add(d)
	for {
		l.mu.Lock()
		found := slices.ContainsFunc(l.lines, ok)
		l.mu.Unlock()
		if found {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-l.exited:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitUntil polls cond every 20 ms until it holds, failing after d or when
// the run ends first.
func (l *liveRun) waitUntil(what string, d time.Duration, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		select {
		case <-l.exited:
			l.t.Fatalf("the run ended (exit %d) before %s\nstderr:\n%s", l.code, what, l.stderr())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out after %s waiting for %s\nstderr:\n%s", d, what, l.stderr())
		}
	}
}

// ---------------------------------------------------------------------------
// What the binary reports

// runSummary is `pipeline run --json`'s output.
type runSummary struct {
	Pipeline  string                  `json:"pipeline"`
	Status    string                  `json:"status"`
	Error     string                  `json:"error"`
	Read      int64                   `json:"read"`
	Filtered  int64                   `json:"filtered"`
	Delivered int64                   `json:"delivered"`
	Sinks     map[string]int64        `json:"sinks"`
	Outbox    map[string]outboxCounts `json:"outbox"`
}

type outboxCounts struct {
	Queued    int64 `json:"queued"`
	Delivered int64 `json:"delivered"`
	Dead      int64 `json:"dead"`
	Pending   int64 `json:"pending"`
	Retrying  int64 `json:"retrying"`
	// Circuits are kept as decoded JSON objects, to check the key names.
	Circuits []map[string]any `json:"circuits"`
}

func parseRun(t *testing.T, r result) runSummary {
	t.Helper()
	var s runSummary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("run --json printed no summary (%v)\nstdout: %s\nstderr: %s", err, r.stdout, r.stderr)
	}
	return s
}

// checkOutbox compares the run's outbox counters for crm.
func checkOutbox(t *testing.T, r result, s runSummary, want outboxCounts) {
	t.Helper()
	got, ok := s.Outbox["crm"]
	if !ok {
		t.Errorf("run --json has no outbox for crm:\n%s", r.stdout)
		return
	}
	type counts struct{ Queued, Delivered, Dead, Pending, Retrying int64 }
	g := counts{got.Queued, got.Delivered, got.Dead, got.Pending, got.Retrying}
	w := counts{want.Queued, want.Delivered, want.Dead, want.Pending, want.Retrying}
	if g != w {
		t.Errorf("run --json outbox crm = %+v, want %+v\nstdout:\n%s", g, w, r.stdout)
	}
}

// circuitOf returns the circuit `run --json` lists for endpoint: its state
// by name, the end of its pause and its reason. The shape is sdk.Circuit's
// JSON and nothing else: {"endpoint", "state": "open", "until" (omitted
// when zero), "reason" (omitted when empty)}.
func circuitOf(t *testing.T, s runSummary, endpoint string) (state string, until time.Time, reason string, found bool) {
	t.Helper()
	names := []string{"closed", "open", "half-open", "disabled"}
	for _, c := range s.Outbox["crm"].Circuits {
		var ep, u string
		if c["endpoint"] == nil {
			t.Errorf("circuit %v has no endpoint", c)
			continue
		}
		for k := range c {
			if !slices.Contains([]string{"endpoint", "state", "until", "reason"}, k) {
				t.Errorf("circuit %v has an unknown key %q", c, k)
			}
		}
		st, _ := c["state"].(string)
		if !slices.Contains(names, st) {
			t.Errorf("circuit %v: state is not closed, open, half-open or disabled", c)
			continue
		}
		ep, _ = c["endpoint"].(string)
		u, _ = c["until"].(string)
		reason, _ = c["reason"].(string)
		state = st
		if ep != endpoint {
			continue
		}
		until = time.Time{}
		if u != "" {
			var err error
			if until, err = time.Parse(time.RFC3339Nano, u); err != nil {
				t.Errorf("circuit %v: until: %v", c, err)
			}
		}
		return state, until, reason, true
	}
	return "", time.Time{}, "", false
}

// deliveryEntry is one element of `pipeline deliveries --json`.
type deliveryEntry struct {
	ID        string `json:"id"`
	Endpoint  string `json:"endpoint"`
	Status    string `json:"status"`
	Attempts  int    `json:"attempts"`
	LastCode  int    `json:"last_status_code"`
	LastError string `json:"last_error"`
	Log       []struct {
		N          int    `json:"n"`
		StatusCode int    `json:"status_code"`
		Error      string `json:"error"`
	} `json:"log"`
}

func (d deliveryEntry) codes() []int {
	var out []int
	for _, a := range d.Log {
		out = append(out, a.StatusCode)
	}
	return out
}

// listDeliveries runs `pipeline deliveries --json --limit 1000 [args] faults.hcl`.
func listDeliveries(t *testing.T, dir string, args ...string) map[string]deliveryEntry {
	t.Helper()
	args = append(append([]string{"deliveries", "--json", "--limit", "1000"}, args...), "faults.hcl")
	res := pipeline(t, dir, nil, args...)
	if res.code != 0 {
		t.Fatalf("pipeline %v: exit %d\n%s", args, res.code, res.stderr)
	}
	var list []deliveryEntry
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil {
		t.Fatalf("pipeline %v: %v\n%s", args, err, res.stdout)
	}
	out := map[string]deliveryEntry{}
	for _, d := range list {
		if _, dup := out[d.ID]; dup {
			t.Errorf("delivery %s listed twice", d.ID)
		}
		out[d.ID] = d
	}
	return out
}

// endpointRow is one element of `pipeline deliveries --summary --json`.
type endpointRow struct {
	Pipeline          string     `json:"pipeline"`
	Sink              string     `json:"sink"`
	Endpoint          string     `json:"endpoint"`
	Pending           int        `json:"pending"`
	Retrying          int        `json:"retrying"`
	Delivered         int        `json:"delivered"`
	Dead              int        `json:"dead"`
	OldestPending     *time.Time `json:"oldest_pending"`
	Circuit           string     `json:"circuit"`
	CircuitUntil      *time.Time `json:"circuit_until"`
	CircuitReason     string     `json:"circuit_reason"`
	CircuitReportedAt *time.Time `json:"circuit_reported_at"`
}

func summaryJSON(t *testing.T, dir string) ([]endpointRow, string) {
	t.Helper()
	res := pipeline(t, dir, nil, "deliveries", "--summary", "--json", "faults.hcl")
	if res.code != 0 {
		t.Fatalf("deliveries --summary --json: exit %d\n%s", res.code, res.stderr)
	}
	var rows []endpointRow
	if err := json.Unmarshal([]byte(res.stdout), &rows); err != nil {
		t.Fatalf("deliveries --summary --json: %v\n%s", err, res.stdout)
	}
	return rows, res.stdout
}

func rowFor(rows []endpointRow, endpoint string) (endpointRow, bool) {
	for _, r := range rows {
		if r.Endpoint == endpoint {
			return r, true
		}
	}
	return endpointRow{}, false
}

// outboxRe matches a progress line's part for sink crm.
var outboxRe = regexp.MustCompile(`crm: queued ` + num + `, delivered ` + num + `, pending ` + num + `( \(` + num + ` retrying\))?, dead ` + num)

// num is a count in a progress line, captured.
const num = `([0-9]+(?:,[0-9]+)*)`

// progressLineRe is a whole progress line of a run whose only sink is crm,
// with no circuit open.
var progressLineRe = regexp.MustCompile(`^read [0-9,]+ · filtered out [0-9,]+ · crm: queued [0-9,]+, delivered [0-9,]+, pending [0-9,]+( \([0-9,]+ retrying\))?, dead [0-9,]+ · [0-9,]+ records/s · [0-9.hmsµ]+$`)

var countRe = regexp.MustCompile(`^[0-9]{1,3}(,[0-9]{3})*$`)

// outboxProgress is what a progress line says about crm.
type outboxProgress struct {
	queued, delivered, pending, retrying, dead int
	retryingShown                              bool
}

// parseProgress reads crm's part of a progress line; ok is false for other
// lines. Malformed numbers fail the test.
func parseProgress(t *testing.T, line string) (p outboxProgress, ok bool) {
	t.Helper()
	m := outboxRe.FindStringSubmatch(line)
	if m == nil {
		return p, false
	}
	num := func(s string) int {
		if !countRe.MatchString(s) {
			t.Errorf("%q in progress line %q: not a number with thousands separators", s, line)
		}
		n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
		if err != nil {
			t.Errorf("progress line %q: %v", line, err)
		}
		return n
	}
	p.queued, p.delivered, p.pending, p.dead = num(m[1]), num(m[2]), num(m[3]), num(m[6])
	if m[4] != "" {
		p.retryingShown = true
		p.retrying = num(m[5])
	}
	return p, true
}

// isProgressLine reports whether line is a periodic progress line (not the
// final "<pipeline> done: …" one).
func isProgressLine(line string) bool { return strings.HasPrefix(line, "read ") }

// ---------------------------------------------------------------------------
// 1. An endpoint that fails the first two attempts of every delivery.

func TestFlakyEndpointDeliversEveryRecordOnItsThirdAttempt(t *testing.T) {
	dir, want := setupFaults(t, 1500, 90, `
  retry {
    max_attempts = 6
    initial      = "50ms"
    max          = "200ms"
  }`)
	ep := newFaultEndpoint(t, func(id string, n int) (int, bool) {
		if n <= 2 {
			return http.StatusServiceUnavailable, false
		}
		return 0, false
	})

	res := runFaults(t, dir, ep.env(), "run", "--json", "faults.hcl")
	if res.code != 0 {
		t.Fatalf("exit %d, want 0\nstderr:\n%s\nstdout:\n%s", res.code, res.stderr, res.stdout)
	}
	requests, accepted, codes, badSig := ep.snapshot()
	if len(badSig) > 0 {
		t.Errorf("%d requests failed signature verification, e.g. %s", len(badSig), badSig[0])
	}
	for _, id := range want {
		if accepted[id] != 1 {
			t.Errorf("%s: accepted %d times, want 1 (answers %v)", id, accepted[id], codes[id])
		}
		if requests[id] != 3 {
			t.Errorf("%s: %d requests, want exactly 3 (answers %v)", id, requests[id], codes[id])
		}
	}
	if len(requests) != len(want) {
		t.Errorf("requests for %d ids, want %d", len(requests), len(want))
	}
	ep.checkHookIDs(t)
	if !strings.Contains(res.stderr, "sink crm: 90 delivered, 0 dead, 0 pending") {
		t.Errorf("stderr lacks %q:\n%s", "sink crm: 90 delivered, 0 dead, 0 pending", res.stderr)
	}
	s := parseRun(t, res)
	if s.Status != "done" || s.Read != 1500 || s.Filtered != 1410 || s.Delivered != 90 || s.Sinks["crm"] != 90 {
		t.Errorf("run --json: status %q read %d filtered %d delivered %d sinks %v; want done 1500 1410 90 {crm:90}", s.Status, s.Read, s.Filtered, s.Delivered, s.Sinks)
	}
	checkOutbox(t, res, s, outboxCounts{Queued: 90, Delivered: 90})

	ds := listDeliveries(t, dir)
	if len(ds) != len(want) {
		t.Errorf("deliveries lists %d, want %d", len(ds), len(want))
	}
	for _, id := range want {
		d, ok := ds[id]
		switch {
		case !ok:
			t.Errorf("%s: not in the delivery log", id)
		case d.Status != "delivered" || d.Attempts != 3 || !slices.Equal(d.codes(), []int{503, 503, 200}):
			t.Errorf("%s: %s after %d attempts, log %v; want delivered after 3, log [503 503 200]", id, d.Status, d.Attempts, d.codes())
		}
	}
}

// ---------------------------------------------------------------------------
// 2. An endpoint that fails 40% of requests at random.

func TestRandomFailuresAreRetriedUntilEverythingArrivesOnce(t *testing.T) {
	dir, want := setupFaults(t, 1000, 300, `
  retry {
    max_attempts = 20
    initial      = "50ms"
    max          = "200ms"
  }`)
	rnd := rand.New(rand.NewPCG(20261202, 40))
	ep := newFaultEndpoint(t, func(id string, n int) (int, bool) {
		if rnd.Float64() < 0.4 {
			return http.StatusServiceUnavailable, false
		}
		return 0, false
	})

	res := runFaults(t, dir, ep.env(), "run", "--json", "faults.hcl")
	if res.code != 0 {
		t.Fatalf("exit %d, want 0\nstderr:\n%s\nstdout:\n%s", res.code, res.stderr, res.stdout)
	}
	ep.checkExactlyOnce(t, want)
	ep.checkHookIDs(t)
	line := fmt.Sprintf("sink crm: %d delivered, 0 dead, 0 pending", len(want))
	if !strings.Contains(res.stderr, line) {
		t.Errorf("stderr lacks %q:\n%s", line, res.stderr)
	}
	s := parseRun(t, res)
	if s.Status != "done" {
		t.Errorf("status %q, want done", s.Status)
	}
	checkOutbox(t, res, s, outboxCounts{Queued: int64(len(want)), Delivered: int64(len(want))})

	// The delivery log says what the endpoint saw, answer by answer.
	_, _, codes, _ := ep.snapshot()
	ds := listDeliveries(t, dir)
	for _, id := range want {
		if d := ds[id]; d.Status != "delivered" || !slices.Equal(d.codes(), codes[id]) {
			t.Errorf("%s: %s, log %v; the endpoint answered %v", id, d.Status, d.codes(), codes[id])
		}
	}

	rows, out := summaryJSON(t, dir)
	r, ok := rowFor(rows, ep.srv.URL)
	if !ok || len(rows) != 1 {
		t.Fatalf("deliveries --summary --json: want one row for %s:\n%s", ep.srv.URL, out)
	}
	if r.Pipeline != "faults" || r.Sink != "crm" || r.Circuit != "closed" || r.Delivered != len(want) || r.Pending != 0 || r.Retrying != 0 || r.Dead != 0 || r.OldestPending != nil {
		t.Errorf("deliveries --summary --json: %+v; want faults/crm closed, %d delivered, nothing else\n%s", r, len(want), out)
	}
	t.Logf("%d requests for %d deliveries", ep.requestsTotal(), len(want))
}

// ---------------------------------------------------------------------------
// 3. Signals while the run waits for its outbox.

// The endpoint stays down, and each delivery has 100 attempts a second
// apart: a run that waited for its outbox could not end before signalHang
// (nor could its deliveries go dead). So a run that exits with the signal's
// code, leaving every delivery pending, did not wait.
func TestSIGTERMWhileWaitingForTheOutboxExitsPromptly(t *testing.T) {
	schedule := `
  retry {
    schedule = ["0s"` + strings.Repeat(`, "1s"`, 99) + `]
  }`
	down := func(string, int) (int, bool) { return http.StatusServiceUnavailable, false }
	up := func(string, int) (int, bool) { return 0, false }

	// startWaiting starts a run against an endpoint that is down and
	// returns once every matching delivery has failed once.
	startWaiting := func(t *testing.T) (string, []string, *faultEndpoint, *liveRun) {
		dir, want := setupFaults(t, 1500, 90, schedule)
		ep := newFaultEndpoint(t, down)
		run := startLive(t, dir, ep.env(), nil, "run", "--json", "faults.hcl")
		// First from the endpoint's side, so that the state is not opened
		// by another process while the run creates it (see the report).
		run.waitUntil("requests for every delivery", 30*time.Second, func() bool {
			requests, _, _, _ := ep.snapshot()
			return len(requests) == len(want)
		})
		deadline := time.Now().Add(30 * time.Second)
		for {
			failed := listDeliveries(t, dir, "--status", "failed")
			if len(failed) == len(want) {
				break
			}
			if time.Now().After(deadline) {
				all := listDeliveries(t, dir)
				var never []string
				for _, id := range want {
					if d, ok := all[id]; !ok || len(d.Log) == 0 {
						never = append(never, fmt.Sprintf("%s (%+v)", id, all[id]))
					}
				}
				sum := pipeline(t, dir, nil, "deliveries", "--summary", "faults.hcl")
				requests, _, _, _ := ep.snapshot()
				t.Fatalf("after 30 s, %d of %d deliveries have failed once; %d listed; the endpoint got requests for %d ids; never attempted: %v\nsummary:\n%s\nrun stderr so far:\n%s",
					len(failed), len(want), len(all), len(requests), never, sum.stdout, run.stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
		return dir, want, ep, run
	}

	// again runs once more with the endpoint up: everything arrives exactly
	// once.
	again := func(t *testing.T, dir string, want []string, ep *faultEndpoint) result {
		ep.setAnswer(up)
		res := runFaults(t, dir, ep.env(), "run", "--json", "faults.hcl")
		if res.code != 0 {
			t.Fatalf("second run: exit %d, want 0\nstderr:\n%s", res.code, res.stderr)
		}
		ep.checkExactlyOnce(t, want)
		ep.checkHookIDs(t)
		line := fmt.Sprintf("sink crm: %d delivered, 0 dead, 0 pending", len(want))
		if !strings.Contains(res.stderr, line) {
			t.Errorf("second run: stderr lacks %q:\n%s", line, res.stderr)
		}
		return res
	}

	t.Run("SIGTERM", func(t *testing.T) {
		dir, want, ep, run := startWaiting(t)
		code, took := run.signal(syscall.SIGTERM)
		t.Logf("exited %s after SIGTERM", took.Round(time.Millisecond))
		res := run.result()
		if code != 143 {
			t.Errorf("exit %d after SIGTERM, want 143\nstderr:\n%s", code, res.stderr)
		}
		line := fmt.Sprintf("%d deliveries of sink crm stay queued", len(want))
		if !strings.Contains(res.stderr, line) {
			t.Errorf("stderr lacks %q:\n%s", line, res.stderr)
		}
		if !strings.Contains(res.stderr, "faults interrupted: ") {
			t.Errorf("stderr lacks %q:\n%s", "faults interrupted: ", res.stderr)
		}
		s := parseRun(t, res)
		if s.Status != "interrupted" {
			t.Errorf("status %q, want interrupted (error %q)", s.Status, s.Error)
		}
		checkOutbox(t, res, s, outboxCounts{Queued: int64(len(want)), Pending: int64(len(want)), Retrying: int64(len(want))})
		if n := ep.acceptedTotal(); n != 0 {
			t.Errorf("the endpoint accepted %d while it was down", n)
		}

		// What is left is pending, after a failed attempt.
		rows, out := summaryJSON(t, dir)
		r, ok := rowFor(rows, ep.srv.URL)
		switch {
		case !ok || len(rows) != 1:
			t.Errorf("deliveries --summary --json: want one row for %s:\n%s", ep.srv.URL, out)
		case r.Pending != len(want) || r.Retrying != len(want) || r.Delivered != 0 || r.Dead != 0:
			t.Errorf("deliveries --summary --json: %+v; want %d pending, all retrying\n%s", r, len(want), out)
		case r.OldestPending == nil || r.OldestPending.After(time.Now()):
			t.Errorf("deliveries --summary --json: oldest_pending %v, want a time in the past\n%s", r.OldestPending, out)
		}

		res2 := again(t, dir, want, ep)
		s2 := parseRun(t, res2)
		if s2.Read != 0 {
			t.Errorf("second run read %d records, want 0: the first run committed them", s2.Read)
		}
		checkOutbox(t, res2, s2, outboxCounts{Delivered: int64(len(want))})
	})

	// The second SIGINT 200 ms after the first (the run may have exited by
	// then), and as soon as the run says it got the first, so that it lands
	// while the first is being handled.
	for _, tc := range []struct {
		name string
		gap  time.Duration // 0: when the first is acknowledged
	}{{"SIGINT twice 200ms apart", 200 * time.Millisecond}, {"SIGINT again once the first is acknowledged", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, want, ep, run := startWaiting(t)
			start := time.Now()
			if err := run.cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			if tc.gap > 0 {
				time.Sleep(tc.gap)
			} else if !run.sawLine(2*time.Second, func(l string) bool { return strings.HasPrefix(l, "interrupt") }) {
				t.Logf("the run did not acknowledge the first SIGINT on stderr within 2 s; sending the second anyway")
			}
			// It may have exited already: then there is no second signal to give.
			second := run.cmd.Process.Signal(syscall.SIGINT)
			code, took := run.await(start)
			t.Logf("exited %s after the first SIGINT (second signal: %v)", took.Round(time.Millisecond), second)
			res := run.result()
			if code != 130 {
				t.Errorf("exit %d after SIGINT, want 130\nstderr:\n%s", code, res.stderr)
			}
			if !strings.Contains(res.stderr, "faults interrupted: ") || strings.Contains(res.stderr, "failed") {
				t.Errorf("stderr should say %q and not %q:\n%s", "faults interrupted: ", "failed", res.stderr)
			}
			s := parseRun(t, res)
			if s.Status != "interrupted" {
				t.Errorf("status %q, want interrupted (error %q)", s.Status, s.Error)
			}
			// Nothing was lost by the abort.
			again(t, dir, want, ep)
		})
	}
}

// ---------------------------------------------------------------------------
// 4. The progress line and the summary count what the endpoint answered.

func TestProgressAndSummaryCountTheEndpointsAnswers(t *testing.T) {
	t.Run("dead and delivered", func(t *testing.T) {
		// Two requests at a time, each answered after 50 ms: the run lasts
		// long enough for several progress lines.
		dir, want := setupFaults(t, 1500, 90, `  concurrency = 2`)
		bad := map[string]bool{}
		for _, i := range []int{0, 17, 44, 63, 89} {
			bad[want[i]] = true
		}
		ep := newFaultEndpoint(t, func(id string, n int) (int, bool) {
			if bad[id] {
				return http.StatusBadRequest, false
			}
			return 0, false
		})
		ep.pause.Store(int64(50 * time.Millisecond))

		type seen struct {
			line     string
			accepted int // by the endpoint when the line was read
		}
		var mu sync.Mutex
		var lines []seen
		run := startLive(t, dir, ep.env(), func(line string) {
			if isProgressLine(line) {
				n := ep.acceptedTotal()
				mu.Lock()
				lines = append(lines, seen{line, n})
				mu.Unlock()
			}
		}, "run", "--json", "--progress-interval", "100ms", "faults.hcl")
		code := run.wait()
		res := run.result()
		if code != 2 {
			t.Fatalf("exit %d, want 2 (deliveries went dead)\nstderr:\n%s", code, res.stderr)
		}
		accepted := ep.acceptedTotal()
		if accepted != len(want)-len(bad) {
			t.Errorf("the endpoint accepted %d, want %d", accepted, len(want)-len(bad))
		}
		sum := fmt.Sprintf("sink crm: %d delivered, %d dead, 0 pending", accepted, len(bad))
		if !strings.Contains(res.stderr, sum) {
			t.Errorf("stderr lacks %q (what the endpoint accepted):\n%s", sum, res.stderr)
		}
		done := fmt.Sprintf("faults done: read 1,500 · filtered out 1,410 · crm: queued 90, delivered %d, pending 0, dead %d · ", accepted, len(bad))
		if !strings.Contains(res.stderr, done) {
			t.Errorf("stderr lacks %q:\n%s", done, res.stderr)
		}
		if !strings.Contains(res.stderr, fmt.Sprintf("%d deliveries of sink crm are dead", len(bad))) {
			t.Errorf("stderr does not say what is dead:\n%s", res.stderr)
		}
		s := parseRun(t, res)
		checkOutbox(t, res, s, outboxCounts{Queued: 90, Delivered: int64(accepted), Dead: int64(len(bad))})

		mu.Lock()
		defer mu.Unlock()
		if len(lines) == 0 {
			t.Fatalf("no progress line in a run of at least 2 s with --progress-interval 100ms:\n%s", res.stderr)
		}
		last := -1
		for _, l := range lines {
			p, ok := parseProgress(t, l.line)
			if !ok {
				t.Errorf("progress line without crm's outbox: %q", l.line)
				continue
			}
			if p.delivered > l.accepted {
				t.Errorf("progress line %q says %d delivered when the endpoint had accepted %d", l.line, p.delivered, l.accepted)
			}
			if p.delivered > accepted {
				t.Errorf("progress line %q says %d delivered; the endpoint accepted %d in all", l.line, p.delivered, accepted)
			}
			if p.delivered < last {
				t.Errorf("progress line %q: delivered went down from %d", l.line, last)
			}
			last = p.delivered
			if p.pending != p.queued-p.delivered-p.dead {
				t.Errorf("progress line %q: pending %d, but %d queued, %d delivered and %d dead", l.line, p.pending, p.queued, p.delivered, p.dead)
			}
			if p.retryingShown && p.retrying == 0 {
				t.Errorf("progress line %q shows 0 retrying", l.line)
			}
			if !progressLineRe.MatchString(l.line) {
				t.Errorf("progress line %q is not in the documented shape (%s)", l.line, progressLineRe)
			}
		}
		t.Logf("%d progress lines; the last: %s", len(lines), lines[len(lines)-1].line)
	})

	// The circuit stays open for longer than signalHang: a run that waited
	// for its outbox after SIGTERM could not end before the test calls it
	// hung, and would send nothing meanwhile.
	t.Run("circuit open", func(t *testing.T) {
		dir, want := setupFaults(t, 1500, 90, `
  retry {
    schedule = ["0s", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]
  }
  circuit_breaker {
    failures = 3
    window   = "500ms"
    cooldown = "10m"
  }`)
		ep := newFaultEndpoint(t, func(string, int) (int, bool) { return http.StatusServiceUnavailable, false })
		run := startLive(t, dir, ep.env(), nil, "run", "--json", "--progress-interval", "100ms", "faults.hcl")
		queued := fmt.Sprintf("crm: queued %d, delivered 0", len(want))
		line := run.waitLine("a progress line with the circuit open", 30*time.Second, func(l string) bool {
			return isProgressLine(l) && strings.Contains(l, queued) && strings.Contains(l, "circuit open until")
		})
		openRe := regexp.MustCompile(`, dead 0, circuit open until ([0-9]{2}:[0-9]{2}:[0-9]{2}) \(` + regexp.QuoteMeta(ep.srv.URL) + `\)`)
		m := openRe.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("progress line %q does not match %s", line, openRe)
		}
		// At least `failures` attempts failed before the circuit opened: some
		// deliveries are retrying, and the line says how many.
		if p, ok := parseProgress(t, line); !ok || p.pending != len(want) || !p.retryingShown || p.retrying < 1 || p.retrying > len(want) {
			t.Errorf("progress line %q: want %d pending, (N retrying) with 1 <= N <= %d", line, len(want), len(want))
		}

		rows, out := summaryJSON(t, dir)
		r, ok := rowFor(rows, ep.srv.URL)
		switch {
		case !ok:
			t.Errorf("deliveries --summary --json: no row for %s:\n%s", ep.srv.URL, out)
		case r.Circuit != "open" || r.CircuitUntil == nil || !r.CircuitUntil.After(time.Now()):
			t.Errorf("deliveries --summary --json while the circuit is open: circuit %q until %v, want open until a time in the future\n%s", r.Circuit, r.CircuitUntil, out)
		case r.Pending != len(want) || r.Delivered != 0:
			t.Errorf("deliveries --summary --json: %+v, want %d pending", r, len(want))
		case r.CircuitReason == "":
			t.Errorf("deliveries --summary --json: the open circuit has no circuit_reason\n%s", out)
		}
		text := pipeline(t, dir, nil, "deliveries", "--summary", "faults.hcl")
		if !strings.Contains(text.stdout, " open until ") {
			t.Errorf("deliveries --summary while the circuit is open:\n%s", text.stdout)
		}
		requestsWhileOpen := ep.requestsTotal()

		code, took := run.signal(syscall.SIGTERM)
		t.Logf("exited %s after SIGTERM", took.Round(time.Millisecond))
		res := run.result()
		if code != 143 {
			t.Errorf("exit %d after SIGTERM, want 143\nstderr:\n%s", code, res.stderr)
		}
		if !strings.Contains(res.stderr, fmt.Sprintf("%d deliveries of sink crm stay queued", len(want))) {
			t.Errorf("stderr does not say what stays queued:\n%s", res.stderr)
		}
		s := parseRun(t, res)
		if s.Status != "interrupted" {
			t.Errorf("status %q, want interrupted", s.Status)
		}
		o := s.Outbox["crm"]
		if o.Delivered != 0 || o.Pending != int64(len(want)) || o.Queued != int64(len(want)) {
			t.Errorf("run --json outbox crm %+v, want %d queued and pending", o, len(want))
		}
		st, until, reason, found := circuitOf(t, s, ep.srv.URL)
		if found && reason == "" {
			t.Errorf("run --json: the open circuit %v has no reason", o.Circuits)
		}
		if strings.Contains(res.stderr, "circuit open for "+ep.srv.URL) && strings.Contains(res.stderr, " ()") {
			t.Errorf("stderr reports the open circuit with an empty reason \"()\":\n%s", res.stderr)
		}
		if !found || st != "open" || !until.After(time.Now()) {
			t.Errorf("run --json circuits %v: want %s open until a time in the future", o.Circuits, ep.srv.URL)
		} else if m != nil && until.Local().Format("15:04:05") != m[1] {
			t.Errorf("the progress line says open until %s, run --json until %s", m[1], until.Local().Format("15:04:05"))
		}
		if n := ep.requestsTotal(); n != requestsWhileOpen {
			t.Errorf("%d requests while the circuit was open (%d before, %d after)", n-requestsWhileOpen, requestsWhileOpen, n)
		}
	})
}

// ---------------------------------------------------------------------------
// 5. abort-message and 410 Gone end a delivery at once.

func TestAbortMessageAndGoneAreNotRetried(t *testing.T) {
	retry := `
  retry {
    schedule = ["0s", "50ms", "50ms", "50ms", "50ms"]
  }`
	t.Run("abort-message", func(t *testing.T) {
		dir, want := setupFaults(t, 1500, 90, retry)
		aborted := map[string]int{want[3]: 503, want[40]: 500, want[77]: 429}
		ep := newFaultEndpoint(t, func(id string, n int) (int, bool) {
			if code, ok := aborted[id]; ok {
				return code, true
			}
			return 0, false
		})
		res := runFaults(t, dir, ep.env(), "run", "--json", "faults.hcl")
		if res.code != 2 {
			t.Fatalf("exit %d, want 2 (deliveries went dead)\nstderr:\n%s", res.code, res.stderr)
		}
		requests, accepted, codes, _ := ep.snapshot()
		for _, id := range want {
			code, abort := aborted[id]
			switch {
			case abort && (requests[id] != 1 || accepted[id] != 0):
				t.Errorf("%s (answered %d with abort-message): %d requests, answers %v; want exactly 1", id, code, requests[id], codes[id])
			case !abort && (requests[id] != 1 || accepted[id] != 1):
				t.Errorf("%s: %d requests, answers %v; want accepted once", id, requests[id], codes[id])
			}
		}
		ds := listDeliveries(t, dir)
		for _, id := range want {
			d := ds[id]
			if code, ok := aborted[id]; ok {
				if d.Status != "dead" || d.Attempts != 1 || !slices.Equal(d.codes(), []int{code}) {
					t.Errorf("%s: %s after %d attempts, log %v; want dead after 1, log [%d]", id, d.Status, d.Attempts, d.codes(), code)
				}
			} else if d.Status != "delivered" || d.Attempts != 1 {
				t.Errorf("%s: %s after %d attempts, want delivered after 1", id, d.Status, d.Attempts)
			}
		}
		if !strings.Contains(res.stderr, "sink crm: 87 delivered, 3 dead, 0 pending") || !strings.Contains(res.stderr, "3 deliveries of sink crm are dead") {
			t.Errorf("stderr:\n%s", res.stderr)
		}
		checkOutbox(t, res, parseRun(t, res), outboxCounts{Queued: 90, Delivered: 87, Dead: 3})
	})

	t.Run("410 Gone", func(t *testing.T) {
		dir, want := setupFaults(t, 1500, 90, retry)
		ep := newFaultEndpoint(t, func(string, int) (int, bool) { return http.StatusGone, false })
		res := runFaults(t, dir, ep.env(), "run", "--json", "faults.hcl")
		if res.code != 2 {
			t.Fatalf("exit %d, want 2 (deliveries went dead)\nstderr:\n%s", res.code, res.stderr)
		}
		gone := fmt.Sprintf("sink crm: endpoint %s answered 410 Gone and was disabled for the run; its deliveries went to the dead letter", ep.srv.URL)
		if !strings.Contains(res.stderr, gone) {
			t.Errorf("stderr lacks %q:\n%s", gone, res.stderr)
		}
		if !strings.Contains(res.stderr, "sink crm: 0 delivered, 90 dead, 0 pending") || !strings.Contains(res.stderr, "90 deliveries of sink crm are dead") {
			t.Errorf("stderr:\n%s", res.stderr)
		}
		disabled := fmt.Sprintf("disabled after 410 Gone (%s)", ep.srv.URL)
		if !strings.Contains(res.stderr, "faults done: ") || !strings.Contains(res.stderr, disabled) {
			t.Errorf("the final line should say %q:\n%s", disabled, res.stderr)
		}
		s := parseRun(t, res)
		checkOutbox(t, res, s, outboxCounts{Queued: 90, Dead: 90})
		if st, _, reason, found := circuitOf(t, s, ep.srv.URL); !found || st != "disabled" || reason == "" {
			t.Errorf("run --json circuits %v: want %s disabled, with a reason\n%s", s.Outbox["crm"].Circuits, ep.srv.URL, res.stdout)
		}

		requests, _, _, _ := ep.snapshot()
		total := ep.requestsTotal()
		// The default concurrency is 16: what was in flight when the first
		// 410 came back is answered too, nothing after.
		if total > 20 {
			t.Errorf("the endpoint got %d requests for %d deliveries after answering 410 Gone; want at most 16 (+ a few)", total, len(want))
		}
		for id, n := range requests {
			if n != 1 {
				t.Errorf("%s was sent %d times after 410 Gone", id, n)
			}
		}
		ds := listDeliveries(t, dir)
		with410 := 0
		for _, id := range want {
			d := ds[id]
			if d.Status != "dead" {
				t.Errorf("%s: %s, want dead", id, d.Status)
			}
			if slices.Contains(d.codes(), 410) {
				with410++
			}
		}
		if with410 != total {
			t.Errorf("%d deliveries logged a 410; the endpoint answered %d requests", with410, total)
		}
		t.Logf("%d requests before the endpoint was disabled", total)
	})
}

// ---------------------------------------------------------------------------
// 6. pipeline deliveries --summary.

func TestDeliveriesSummary(t *testing.T) {
	dir := t.TempDir()
	// Two endpoints: the records alternate between them (a templated URL).
	a := newFaultEndpoint(t, nil)
	b := newFaultEndpoint(t, nil)
	b.secret = a.secret
	input := filepath.Join(dir, "in.jsonl")
	i := 0
	target := map[string]*faultEndpoint{}
	want := writeScored(t, input, 1500, 90, func(id string) string {
		ep := a
		if i%2 == 1 {
			ep = b
		}
		i++
		target[id] = ep
		return fmt.Sprintf(`,"target":%q`, ep.srv.URL)
	})
	writeFile(t, filepath.Join(dir, "faults.hcl"), faultsHCL(input, `"{{ target }}/hook"`, ""))
	// Of each endpoint's deliveries, every seventh is refused with a 400:
	// 3 of a's, 2 of b's.
	dead := map[*faultEndpoint]int{a: 3, b: 2}
	bad := map[string]bool{}
	total := map[*faultEndpoint]int{}
	picked := map[*faultEndpoint]int{}
	for _, id := range want {
		ep := target[id]
		total[ep]++
		if total[ep]%7 == 0 && picked[ep] < dead[ep] {
			bad[id] = true
			picked[ep]++
		}
	}
	if picked[a] != dead[a] || picked[b] != dead[b] {
		t.Fatalf("test data: %d records go to a, %d to b: too few", total[a], total[b])
	}
	answer := func(id string, n int) (int, bool) {
		if bad[id] {
			return http.StatusBadRequest, false
		}
		return 0, false
	}
	a.setAnswer(answer)
	b.setAnswer(answer)

	res := runFaults(t, dir, a.env(), "run", "--json", "faults.hcl")
	if res.code != 2 {
		t.Fatalf("exit %d, want 2 (deliveries went dead)\nstderr:\n%s", res.code, res.stderr)
	}
	if !strings.Contains(res.stderr, fmt.Sprintf("sink crm: %d delivered, 5 dead, 0 pending", len(want)-5)) {
		t.Errorf("stderr:\n%s", res.stderr)
	}
	expect := map[string][2]int{} // endpoint -> delivered, dead
	for _, ep := range []*faultEndpoint{a, b} {
		expect[ep.srv.URL] = [2]int{total[ep] - dead[ep], dead[ep]}
		if got := ep.acceptedTotal(); got != total[ep]-dead[ep] {
			t.Errorf("%s accepted %d, want %d", ep.srv.URL, got, total[ep]-dead[ep])
		}
	}

	// Text.
	text := pipeline(t, dir, nil, "deliveries", "--summary", "faults.hcl")
	if text.code != 0 {
		t.Fatalf("deliveries --summary: exit %d\n%s", text.code, text.stderr)
	}
	lines := strings.Split(strings.TrimRight(text.stdout, "\n"), "\n")
	header := strings.Fields(lines[0])
	cols := map[string]int{}
	for i, h := range header {
		if _, dup := cols[h]; !dup { // "OLDEST PENDING" comes later
			cols[h] = i
		}
	}
	for _, h := range []string{"PIPELINE", "SINK", "ENDPOINT", "PENDING", "RETRYING", "DELIVERED", "DEAD"} {
		if _, ok := cols[h]; !ok {
			t.Fatalf("deliveries --summary: header %q lacks %s:\n%s", lines[0], h, text.stdout)
		}
	}
	if !(cols["PENDING"] < cols["RETRYING"] && cols["RETRYING"] < cols["DELIVERED"] && cols["DELIVERED"] < cols["DEAD"]) {
		t.Errorf("deliveries --summary: header %q: want PENDING RETRYING DELIVERED DEAD in that order", lines[0])
	}
	found := map[string]bool{}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) <= cols["DEAD"] {
			t.Errorf("deliveries --summary: short row %q", line)
			continue
		}
		want, ok := expect[f[cols["ENDPOINT"]]]
		if !ok {
			t.Errorf("deliveries --summary: row for an unknown endpoint: %q", line)
			continue
		}
		found[f[cols["ENDPOINT"]]] = true
		got := [4]string{f[cols["PENDING"]], f[cols["RETRYING"]], f[cols["DELIVERED"]], f[cols["DEAD"]]}
		if exp := [4]string{"0", "0", strconv.Itoa(want[0]), strconv.Itoa(want[1])}; got != exp || f[cols["PIPELINE"]] != "faults" || f[cols["SINK"]] != "crm" {
			t.Errorf("deliveries --summary: row %q: pending, retrying, delivered, dead = %v, want %v", line, got, exp)
		}
		if !strings.Contains(line, "closed") {
			t.Errorf("deliveries --summary: row %q: the circuit should be closed", line)
		}
	}
	if len(found) != 2 || len(lines) != 3 {
		t.Errorf("deliveries --summary: want a header and one row per endpoint (%s, %s):\n%s", a.srv.URL, b.srv.URL, text.stdout)
	}

	// JSON: the same numbers.
	rows, out := summaryJSON(t, dir)
	if len(rows) != 2 {
		t.Errorf("deliveries --summary --json: %d rows, want 2\n%s", len(rows), out)
	}
	for ep, exp := range expect {
		r, ok := rowFor(rows, ep)
		if !ok {
			t.Errorf("deliveries --summary --json: no row for %s\n%s", ep, out)
			continue
		}
		if r.Pipeline != "faults" || r.Sink != "crm" || r.Pending != 0 || r.Retrying != 0 || r.Delivered != exp[0] || r.Dead != exp[1] ||
			r.OldestPending != nil || r.Circuit != "closed" || r.CircuitUntil != nil || r.CircuitReason != "" {
			t.Errorf("deliveries --summary --json: %+v; want faults/crm, 0 pending, %d delivered, %d dead, closed, no oldest pending", r, exp[0], exp[1])
		}
	}
	var raw []map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, r := range raw {
		for _, k := range []string{"pipeline", "sink", "endpoint", "pending", "retrying", "delivered", "dead", "circuit"} {
			if _, ok := r[k]; !ok {
				t.Errorf("deliveries --summary --json: row %v has no key %q", r, k)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// 7. An open circuit pauses the endpoint for its cooldown, then lets at most
// `probes` deliveries through, and the first success closes it.

func TestOpenCircuitPausesThenProbesAndCloses(t *testing.T) {
	dir, want := setupFaults(t, 1500, 90, `
  retry {
    schedule = ["0s", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]
  }
  circuit_breaker {
    failures = 3
    window   = "1s"
    cooldown = "2s"
    probes   = 3
  }`)
	var up atomic.Bool
	ep := newFaultEndpoint(t, func(string, int) (int, bool) {
		if up.Load() {
			return 0, false
		}
		return http.StatusServiceUnavailable, false
	})
	run := startLive(t, dir, ep.env(), nil, "run", "--json", "--progress-interval", "100ms", "faults.hcl")
	run.waitLine("a progress line with the circuit open", 30*time.Second, func(l string) bool {
		return isProgressLine(l) && strings.Contains(l, "circuit open until")
	})
	rows, out := summaryJSON(t, dir)
	r, ok := rowFor(rows, ep.srv.URL)
	if !ok || r.Circuit != "open" || r.CircuitUntil == nil {
		t.Fatalf("deliveries --summary --json right after the progress line said open:\n%s", out)
	}
	until := *r.CircuitUntil
	// The endpoint is back, and slow: a probe's answer takes 300 ms, so
	// every request that arrives before the first 200 is sent was let
	// through without knowing of any success.
	ep.pause.Store(int64(300 * time.Millisecond))
	switched := time.Now()
	up.Store(true)
	// Only when the endpoint came back during the cooldown do the probes
	// meet an endpoint that is up (a slow machine may take longer).
	inCooldown := switched.Before(until)
	if !inCooldown {
		t.Logf("the cooldown (until %s) was over before the endpoint came back (%s): the pause and the probes are not checked", until.Format(time.RFC3339Nano), switched.Format(time.RFC3339Nano))
	}

	code := run.wait()
	res := run.result()
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstderr:\n%s", code, res.stderr)
	}
	ep.checkExactlyOnce(t, want)
	if line := fmt.Sprintf("sink crm: %d delivered, 0 dead, 0 pending", len(want)); !strings.Contains(res.stderr, line) {
		t.Errorf("stderr lacks %q:\n%s", line, res.stderr)
	}
	s := parseRun(t, res)
	if len(s.Outbox["crm"].Circuits) != 0 {
		t.Errorf("run --json lists circuits %v after the circuit closed", s.Outbox["crm"].Circuits)
	}
	checkOutbox(t, res, s, outboxCounts{Queued: int64(len(want)), Delivered: int64(len(want))})
	if rows, out := summaryJSON(t, dir); len(rows) != 1 || rows[0].Circuit != "closed" {
		t.Errorf("deliveries --summary --json after the run: want the circuit closed\n%s", out)
	}

	ep.mu.Lock()
	arrivals, firstOK := slices.Clone(ep.arrivals), ep.firstOK
	ep.mu.Unlock()
	var paused, probes []arrival
	for _, a := range arrivals {
		if a.at.After(switched) && a.at.Before(until) {
			paused = append(paused, a)
		}
		if !a.at.Before(until) && a.at.Before(firstOK) {
			probes = append(probes, a)
		}
	}
	if !inCooldown {
		return
	}
	if len(paused) > 0 {
		t.Errorf("%d requests while the circuit was open (until %s), e.g. %s at %s", len(paused), until.Format(time.RFC3339Nano), paused[0].id, paused[0].at.Format(time.RFC3339Nano))
	}
	if len(probes) == 0 || len(probes) > 3 {
		t.Errorf("%d requests after the cooldown before the first success was answered, want 1 to 3 (probes = 3)", len(probes))
	}
	// Which deliveries probed, and how often they had failed by then.
	failedBefore := map[string]int{}
	most := 0
	for _, a := range arrivals {
		if a.at.Before(until) {
			failedBefore[a.id]++
			most = max(most, failedBefore[a.id])
		}
	}
	var probed []string
	for _, a := range probes {
		probed = append(probed, fmt.Sprintf("%s (%d failures)", a.id, failedBefore[a.id]))
	}
	atMost := 0
	for _, n := range failedBefore {
		if n == most {
			atMost++
		}
	}
	t.Logf("probes: %v; the most any delivery had failed: %d (%d deliveries)", probed, most, atMost)
}
