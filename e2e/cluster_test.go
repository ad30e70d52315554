package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelinehq/pipeline/engine/cluster"
)

// The machine's NATS server with JetStream (.ci/run starts it when down).
const machineNATS = "nats://127.0.0.1:4222"

// clusterPrefix returns a name prefix of the test's own for the buckets
// and streams of a cluster on the machine's NATS, and removes them when the
// test ends. It skips the test when NATS cannot be reached.
func clusterPrefix(t *testing.T) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:4222", 2*time.Second)
	if err != nil {
		t.Skipf("skipped: no NATS server at %s (%v); .ci/run starts one", machineNATS, err)
	}
	conn.Close()
	var b [4]byte
	rand.Read(b[:])
	prefix := "e2e_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		nc, err := nats.Connect(machineNATS)
		if err != nil {
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		names := js.StreamNames(ctx)
		var mine []string
		for n := range names.Name() {
			if strings.Contains(n, prefix) {
				mine = append(mine, n)
			}
		}
		for _, n := range mine {
			js.DeleteStream(ctx, n)
		}
	})
	return prefix
}

// worker is one `pipeline serve --cluster` process.
type worker struct {
	name string
	*liveRun
}

func startWorker(t *testing.T, dir, name, prefix string, env []string, files ...string) *worker {
	t.Helper()
	return startWorkerOn(t, machineNATS, dir, name, prefix, env, files...)
}

func startWorkerOn(t *testing.T, url, dir, name, prefix string, env []string, files ...string) *worker {
	t.Helper()
	return startWorkerMetrics(t, url, dir, name, prefix, "", env, files...)
}

func startWorkerMetrics(t *testing.T, url, dir, name, prefix, metrics string, env []string, files ...string) *worker {
	t.Helper()
	return startWorkerArgs(t, url, dir, name, prefix, metrics, env, nil, files...)
}

func startWorkerArgs(t *testing.T, url, dir, name, prefix, metrics string, env, extra []string, files ...string) *worker {
	t.Helper()
	args := append([]string{"serve", "--state", filepath.Join(dir, name+".db"), "--metrics-addr", metrics,
		"--cluster", url, "--cluster-prefix", prefix, "--lease-ttl", "3s", "--outbox-ack-wait", "5s", "--poll", "200ms"}, append(extra, files...)...)
	return &worker{name: name, liveRun: startLive(t, dir, env, nil, args...)}
}

// stopWorkers stops workers with SIGTERM, each of which must exit 0.
func stopWorkers(t *testing.T, ws ...*worker) {
	t.Helper()
	for _, w := range ws {
		if code, _ := w.signal(syscall.SIGTERM); code != 0 {
			t.Errorf("worker %s exited %d after SIGTERM\n%s", w.name, code, w.stderr())
		}
	}
}

// refusingReceiver is a receiver that answers 422 to the webhook-ids
// stored in the map it returns, while they are there.
func refusingReceiver(t *testing.T) (*receiver, *sync.Map) {
	t.Helper()
	rcv := newReceiver(t)
	refuse := &sync.Map{}
	rcv.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, ok := refuse.Load(r.Header.Get("webhook-id")); ok {
				http.Error(w, "unknown customer", http.StatusUnprocessableEntity)
				return
			}
			inner.ServeHTTP(w, r)
		})
	})
	return rcv, refuse
}

var partitionLine = regexp.MustCompile(`msg="reading partition".*partition=(\S+)`)

// partitions are the partitions a worker logged it began reading.
func (w *worker) partitions() []string {
	var out []string
	for _, line := range strings.Split(w.stderr(), "\n") {
		if m := partitionLine.FindStringSubmatch(line); m != nil {
			out = append(out, strings.Trim(m[1], `"`))
		}
	}
	return out
}

// clusterInput writes files*perFile records into files JSONL files of a
// glob; every other record matches the filter. It returns the glob and the
// matching ids by file.
func clusterInput(t *testing.T, dir string, files, perFile int) (string, map[string][]string) {
	t.Helper()
	in := filepath.Join(dir, "in")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for f := range files {
		var b strings.Builder
		name := filepath.Join(in, fmt.Sprintf("calls-%d.jsonl", f))
		for i := range perFile {
			id := fmt.Sprintf("f%d-r%d", f, i)
			conf := 0.5
			if i%2 == 0 {
				conf = 0.9
				want[name] = append(want[name], id)
			}
			fmt.Fprintf(&b, `{"row_id":%q,"classifications":{"churn_risk":{"label":"High","confidence":%v}}}`+"\n", id, conf)
		}
		writeFile(t, name, b.String())
	}
	return filepath.Join(in, "*.jsonl"), want
}

func clusterPipeline(t *testing.T, dir, glob string) string {
	t.Helper()
	return clusterPipelineWith(t, dir, glob, "")
}

// clusterPipelineWith is clusterPipeline with more attributes in the sink.
func clusterPipelineWith(t *testing.T, dir, glob, sinkAttrs string) string {
	t.Helper()
	file := filepath.Join(dir, "churn.hcl")
	writeFile(t, file, fmt.Sprintf(`
pipeline { name = "churn" }

source "file" "calls" {
  path = %q
}

filter "high_churn" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}

sink "webhook" "crm" {
  inputs = [filter.high_churn]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
  retry {
    schedule = ["0s", "100ms", "200ms", "400ms"]
  }
%s
}
`, glob, sinkAttrs))
	return file
}

// checkPartitionsSpread checks that each of n partitions was read by one
// worker, and each worker read some.
func checkPartitionsSpread(t *testing.T, ws []*worker, n int) {
	t.Helper()
	readBy := map[string]string{}
	for _, w := range ws {
		parts := w.partitions()
		if len(parts) == 0 {
			t.Errorf("worker %s read no partition\n%s", w.name, w.stderr())
		}
		for _, p := range parts {
			if other, ok := readBy[p]; ok && other != w.name {
				t.Errorf("partition %s was read by %s and %s", p, other, w.name)
			}
			readBy[p] = w.name
		}
	}
	if len(readBy) != n {
		t.Errorf("%d partitions read, want %d: %v", len(readBy), n, readBy)
	}
}

// waitDelivered waits until the receiver holds every id, failing after
// bound (a hang guard: the test asserts what arrived, not how fast).
func waitDelivered(t *testing.T, rcv *receiver, want map[string][]string, bound time.Duration, workers ...*worker) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		got := rcv.ids()
		missing := 0
		for _, ids := range want {
			for _, id := range ids {
				if !got[id] {
					missing++
				}
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, w := range workers {
				fmt.Fprintf(&logs, "--- %s\n%s\n", w.name, w.stderr())
			}
			t.Fatalf("after %s, %d matching records are still not delivered (%d received)\n%s", bound, missing, len(got), logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClusterThreeWorkersShareAGlob(t *testing.T) {
	prefix := clusterPrefix(t)
	dir := t.TempDir()
	rcv := newReceiver(t)
	glob, want := clusterInput(t, dir, 6, 200)
	file := clusterPipeline(t, dir, glob)
	var ws []*worker
	for i := range 3 {
		ws = append(ws, startWorker(t, dir, fmt.Sprintf("w%d", i), prefix, rcv.env(), file))
	}
	waitDelivered(t, rcv, want, 90*time.Second, ws...)

	checkPartitionsSpread(t, ws, 6)
	// Nothing but the matching records, each once.
	total := 0
	for _, ids := range want {
		total += len(ids)
	}
	if got := rcv.ids(); len(got) != total {
		t.Errorf("%d distinct records delivered, want %d", len(got), total)
	}
	if n := rcv.total(); n != total {
		t.Errorf("%d deliveries for %d records: with no failure, each goes out once", n, total)
	}
	stopWorkers(t, ws...)
}

func TestClusterKilledWorkerLosesNothing(t *testing.T) {
	prefix := clusterPrefix(t)
	dir := t.TempDir()
	rcv := newReceiver(t)
	rcv.setDelay(20 * time.Millisecond) // slow, as CRMs are: the run is under way when the kill comes
	const perFile = 300
	glob, want := clusterInput(t, dir, 6, perFile)
	file := clusterPipeline(t, dir, glob)
	var ws []*worker
	for i := range 3 {
		ws = append(ws, startWorker(t, dir, fmt.Sprintf("w%d", i), prefix, rcv.env(), file))
	}
	// Kill a worker once it holds partitions and deliveries are arriving.
	victim := ws[0]
	deadline := time.Now().Add(60 * time.Second)
	for len(victim.partitions()) == 0 || rcv.total() < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("no deliveries under way after 60 s\n%s", victim.stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	victim.cmd.Process.Signal(syscall.SIGKILL)
	victim.finish(time.Minute)
	held := victim.partitions()
	waitDelivered(t, rcv, want, 120*time.Second, ws...)

	// The others take its partitions over once its leases expire (a serve
	// worker holds every partition of its glob, read to the end or not, to
	// see what is appended). Every record may be delivered before that: the
	// killed worker's files are read in milliseconds, and it is the
	// deliveries that are under way when the kill comes.
	notTaken := func() []string {
		taken := map[string]bool{}
		for _, w := range ws[1:] {
			for _, p := range w.partitions() {
				taken[p] = true
			}
		}
		var out []string
		for _, p := range held {
			if !taken[p] {
				out = append(out, p)
			}
		}
		return out
	}
	waitFor(t, fmt.Sprintf("the killed worker's partitions %v to be taken over (30 s, 10× the lease TTL)", held), 30*time.Second,
		func() bool { return len(notTaken()) == 0 })
	// Duplicates are bounded by what the killed worker had in flight: its
	// partitions' matching records not yet committed, at most all of them,
	// plus the deliveries it had leased from the outbox stream.
	bound := 0
	for _, p := range held {
		bound += len(want[p])
	}
	bound += cluster.DefaultMaxHeld // the deliveries it may hold leased
	total := 0
	for _, ids := range want {
		total += len(ids)
	}
	dups := rcv.total() - len(rcv.ids())
	t.Logf("%d records, %d deliveries, %d duplicates (bound %d), killed worker held %v", total, rcv.total(), dups, bound, held)
	if dups > bound {
		t.Errorf("%d duplicate deliveries, more than the killed worker's in-flight work (%d)", dups, bound)
	}
	stopWorkers(t, ws[1:]...)
}

// natsServer is a nats-server process of the test's own (the machine's
// binary), on a port and storage of its own, so that the test may restart it.
type natsServer struct {
	t    *testing.T
	port int
	dir  string
	args []string // more of nats-server's flags
	cmd  *exec.Cmd
}

func startNATS(t *testing.T, args ...string) *natsServer {
	t.Helper()
	n := newNATS(t, freePort(t), args...)
	n.start()
	return n
}

// newNATS is a nats-server of the test's own on port, not started yet.
func newNATS(t *testing.T, port int, args ...string) *natsServer {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/nats-server"); err != nil {
		t.Skip("skipped: no /usr/sbin/nats-server on this machine (Debian's nats-server package)")
	}
	n := &natsServer{t: t, port: port, dir: t.TempDir(), args: args}
	t.Cleanup(n.stop)
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *natsServer) start() {
	n.t.Helper()
	n.cmd = exec.Command("/usr/sbin/nats-server", append([]string{"-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-js", "-sd", n.dir}, n.args...)...)
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nats-server did not listen on %d within 30 s", n.port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *natsServer) stop() { n.signal(syscall.SIGTERM) }

// kill stops the server as a machine that dies does: SIGKILL.
func (n *natsServer) kill() { n.signal(syscall.SIGKILL) }

func (n *natsServer) signal(sig syscall.Signal) {
	if n.cmd != nil && n.cmd.Process != nil {
		n.cmd.Process.Signal(sig)
		n.cmd.Wait()
		n.cmd = nil
	}
}

// NATS goes away mid-run and comes back: the workers reconnect and finish,
// and nothing is lost.
func TestClusterSurvivesANATSRestart(t *testing.T) {
	ns := startNATS(t)
	dir := t.TempDir()
	rcv := newReceiver(t)
	rcv.setDelay(10 * time.Millisecond)
	glob, want := clusterInput(t, dir, 4, 1000)
	file := clusterPipeline(t, dir, glob)
	var ws []*worker
	for i := range 2 {
		ws = append(ws, startWorkerOn(t, ns.url(), dir, fmt.Sprintf("w%d", i), "restart", rcv.env(), file))
	}
	deadline := time.Now().Add(60 * time.Second)
	for rcv.total() < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("no deliveries under way after 60 s\n%s", ws[0].stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ns.stop()
	during := rcv.total()
	time.Sleep(time.Second) // away for a second: the workers' calls fail meanwhile
	ns.start()
	restarted := time.Now()
	// Both reconnect (a hang guard, not a speed bound)...
	deadline = time.Now().Add(60 * time.Second)
	for _, w := range ws {
		for !strings.Contains(w.stderr(), "NATS reconnected") {
			if time.Now().After(deadline) {
				t.Fatalf("worker %s did not reconnect to NATS within 60 s\n%s", w.name, w.stderr())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// ...and work on: a file that arrives after the restart is claimed,
	// read and delivered too, with everything from before.
	var late strings.Builder
	for i := range 50 {
		fmt.Fprintf(&late, `{"row_id":"late-%d","classifications":{"churn_risk":{"label":"High","confidence":0.95}}}`+"\n", i)
		want["late"] = append(want["late"], fmt.Sprintf("late-%d", i))
	}
	reconnected := time.Since(restarted)
	writeFile(t, filepath.Join(filepath.Dir(glob), "late.jsonl"), late.String())
	waitDelivered(t, rcv, want, 120*time.Second, ws...)
	t.Logf("%d deliveries before the restart, %d in all for %d records; reconnected %v after the restart, all delivered %v after it",
		during, rcv.total(), len(rcv.ids()), reconnected.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	stopWorkers(t, ws...)
}

// What a cluster keeps can be seen and acted on from any machine:
// checkpoints (state show), dead letters (deliveries --status dead), and
// replay puts them back for the workers to send.
func TestClusterStateDeadLettersAndReplay(t *testing.T) {
	prefix := clusterPrefix(t)
	dir := t.TempDir()
	rcv, refuse := refusingReceiver(t)
	glob, want := clusterInput(t, dir, 2, 20)
	bad := []string{want[filepath.Join(dir, "in", "calls-0.jsonl")][1], want[filepath.Join(dir, "in", "calls-1.jsonl")][3]}
	for _, id := range bad {
		refuse.Store(id, true)
	}
	file := clusterPipeline(t, dir, glob)
	cl := []string{"--cluster", machineNATS, "--cluster-prefix", prefix}
	metrics, adminAddr := freeAddr(t), freeAddr(t)
	w := startWorkerArgs(t, machineNATS, dir, "w0", prefix, metrics, append(rcv.env(), "PIPELINE_ADMIN_TOKEN=tok"),
		[]string{"--admin-addr", adminAddr}, file)
	good := map[string][]string{}
	for f, ids := range want {
		for _, id := range ids {
			if !slices.Contains(bad, id) {
				good[f] = append(good[f], id)
			}
		}
	}
	waitDelivered(t, rcv, good, 60*time.Second, w)

	// Both refused deliveries are dead letters, with the receiver's answer.
	var dead []struct {
		ID         string `json:"id"`
		LastStatus int    `json:"last_status_code"`
		LastError  string `json:"last_error"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(dead) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s, %d dead letters, want 2\n%s", len(dead), w.stderr())
		}
		res := pipeline(t, dir, nil, append([]string{"deliveries", file, "--sink", "crm", "--status", "dead", "--json"}, cl...)...)
		if res.code != 0 {
			t.Fatalf("deliveries --status dead: exit %d\n%s", res.code, res.stderr)
		}
		if err := json.Unmarshal([]byte(res.stdout), &dead); err != nil {
			t.Fatalf("deliveries --json: %v\n%s", err, res.stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, d := range dead {
		if !slices.Contains(bad, d.ID) || d.LastStatus != http.StatusUnprocessableEntity || !strings.Contains(d.LastError, "422") {
			t.Errorf("dead letter %+v: want one of %v, answered 422", d, bad)
		}
	}
	// The metrics say the same, from the cluster's streams.
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`pipeline_outbox_deliveries{pipeline="churn",sink="crm",status="dead"} 2`, `pipeline_outbox_deliveries{pipeline="churn",sink="crm",status="pending"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(body), "pipeline_outbox"))
		}
	}
	// The checkpoints: both files read to their end. The engine commits on
	// its ticker, so the last commit may land just after the dead letters:
	// poll until it has (30 s is a hang guard, not a target).
	var res result
	for deadline := time.Now().Add(30 * time.Second); ; {
		res = pipeline(t, dir, nil, append([]string{"state", "show", file}, cl...)...)
		parts, atEnd := 0, 0
		for _, line := range strings.Split(res.stdout, "\n") {
			if strings.Contains(line, "calls-") {
				parts++
				if strings.Contains(line, " 20 ") && strings.Contains(line, `"line":20`) {
					atEnd++
				}
			}
		}
		if res.code == 0 && parts == 2 && atEnd == 2 && strings.Contains(res.stdout, "workers: 1 live") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state show --cluster after 30 s: exit %d, %d partitions, %d committed to their end (want 2 at 20 records, line 20)\n%s%s", res.code, parts, atEnd, res.stdout, res.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Fixed at the receiver, replayed from another process while the sink
	// is paused on the cluster: they wait in the outbox stream...
	for _, id := range bad {
		refuse.Delete(id)
	}
	// (paused through the worker's admin API: the cluster's flag)
	req, _ := http.NewRequest("POST", "http://"+adminAddr+"/api/pipelines/churn/sinks/crm/pause", nil)
	req.Header.Set("Authorization", "Bearer tok")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin pause: %v %v", err, resp)
	}
	time.Sleep(time.Second) // the workers read the flag every half second
	res = pipeline(t, dir, nil, append([]string{"replay", file, "--sink", "crm"}, cl...)...)
	if res.code != 0 || !strings.Contains(res.stderr, "replay: 2 dead deliveries") {
		t.Fatalf("replay --cluster: exit %d\n%s", res.code, res.stderr)
	}
	time.Sleep(time.Second)
	for _, id := range bad {
		if _, ok := rcv.body(id); ok {
			t.Errorf("%s was delivered while its sink was paused", id)
		}
	}
	// ...and go out once it is resumed.
	if res := pipeline(t, dir, nil, append([]string{"resume", file, "--sink", "crm"}, cl...)...); res.code != 0 || !strings.Contains(res.stderr, "resumed sink crm") {
		t.Fatalf("resume --cluster: exit %d\n%s", res.code, res.stderr)
	}
	waitDelivered(t, rcv, want, 60*time.Second, w)
	res = pipeline(t, dir, nil, append([]string{"deliveries", file, "--sink", "crm", "--status", "dead"}, cl...)...)
	if !strings.Contains(res.stdout, "no dead deliveries") {
		t.Errorf("after the replay: %s", res.stdout)
	}
	stopWorkers(t, w)
	// state reset --cluster forgets the checkpoints: both partitions.
	res = pipeline(t, dir, nil, append([]string{"state", "reset", file}, cl...)...)
	if res.code != 0 || !strings.Contains(res.stdout, "2 checkpoints removed") {
		t.Errorf("state reset --cluster: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res = pipeline(t, dir, nil, append([]string{"state", "show", file}, cl...)...); !strings.Contains(res.stdout, "no checkpoints") {
		t.Errorf("state show after the reset:\n%s", res.stdout)
	}
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// rate_limit_scope = "cluster": two workers together keep the rate that
// each would keep alone with "worker".
func TestClusterSharedRateLimit(t *testing.T) {
	for _, scope := range []string{"worker", "cluster"} {
		t.Run(scope, func(t *testing.T) {
			prefix := clusterPrefix(t)
			dir := t.TempDir()
			rcv := newReceiver(t)
			var mu sync.Mutex
			var arrivals []time.Time
			rcv.wrap(func(inner http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					arrivals = append(arrivals, time.Now())
					mu.Unlock()
					inner.ServeHTTP(w, r)
				})
			})
			glob, want := clusterInput(t, dir, 4, 20) // 40 matching records
			file := clusterPipelineWith(t, dir, glob, fmt.Sprintf("  rate_limit       = \"10/s\"\n  rate_limit_scope = %q", scope))
			var ws []*worker
			for i := range 2 {
				ws = append(ws, startWorker(t, dir, fmt.Sprintf("w%d", i), prefix, rcv.env(), file))
			}
			waitDelivered(t, rcv, want, 90*time.Second, ws...)
			mu.Lock()
			span := arrivals[len(arrivals)-1].Sub(arrivals[0])
			n := len(arrivals)
			mu.Unlock()
			t.Logf("%s: %d arrivals over %v", scope, n, span.Round(time.Millisecond))
			// 40 sends at 10/s for the whole cluster take 3.9 s at least;
			// each worker keeping 10/s alone would let them through in
			// about half that (a lower bound: a slow machine only makes
			// the span longer).
			if scope == "cluster" && span < 3*time.Second {
				t.Errorf("40 deliveries at a shared 10/s arrived over %v; they cannot take less than 3.9 s (3 s allowing for the first request's own delay)", span)
			}
			stopWorkers(t, ws...)
		})
	}
}

// A scheduled pipeline on a cluster: every worker's scheduler fires, one
// worker runs each firing (reading every partition to its end from the
// cluster's checkpoints), so each record goes out once.
func TestClusterScheduledPipelineRunsEachFiringOnce(t *testing.T) {
	prefix := clusterPrefix(t)
	dir := t.TempDir()
	rcv := newReceiver(t)
	glob, want := clusterInput(t, dir, 3, 20)
	file := clusterPipeline(t, dir, glob)
	// (a schedule: each firing is one complete run)
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, strings.Replace(string(body), `pipeline { name = "churn" }`, "pipeline {\n  name     = \"churn\"\n  schedule = \"@every 2s\"\n}", 1))
	var ws []*worker
	for i := range 2 {
		ws = append(ws, startWorker(t, dir, fmt.Sprintf("w%d", i), prefix, rcv.env(), file))
	}
	waitDelivered(t, rcv, want, 60*time.Second, ws...)
	// A file that arrives later is read by a later firing, once.
	var late strings.Builder
	for i := range 10 {
		fmt.Fprintf(&late, `{"row_id":"late-%d","classifications":{"churn_risk":{"label":"High","confidence":0.95}}}`+"\n", i)
		want["late"] = append(want["late"], fmt.Sprintf("late-%d", i))
	}
	writeFile(t, filepath.Join(filepath.Dir(glob), "late.jsonl"), late.String())
	waitDelivered(t, rcv, want, 60*time.Second, ws...)
	// Two more firings at least, so that a second run on either worker would show.
	deadline := time.Now().Add(60 * time.Second)
	for {
		n := 0
		for _, w := range ws {
			n += strings.Count(w.stderr(), `msg="scheduled run succeeded"`)
		}
		if n >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 4 scheduled runs after 60 s\n%s\n%s", ws[0].stderr(), ws[1].stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	total := 0
	for _, ids := range want {
		total += len(ids)
	}
	if n := rcv.total(); n != total {
		t.Errorf("%d deliveries for %d records: each firing must run on one worker, from the cluster's checkpoints", n, total)
	}
	taken := 0
	for _, w := range ws {
		taken += strings.Count(w.stderr(), `msg="scheduled run taken by another worker of the cluster"`)
	}
	if taken == 0 {
		t.Errorf("no firing was left to the other worker: both ran every one\n%s\n%s", ws[0].stderr(), ws[1].stderr())
	}
	stopWorkers(t, ws...)
}
