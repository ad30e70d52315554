// Command benchpush measures source "http" end to end with the real binary:
// `pipeline run` of source "http" → sink "webhook", every plugin its own
// process, the SQLite state in a temporary file, delivering to a verifying
// receiver in this process.
//
//	go run ./tools/benchpush -pipeline bin/pipeline                      # both
//	go run ./tools/benchpush -pipeline bin/pipeline -mode accept -requests 400
//	go run ./tools/benchpush -pipeline bin/pipeline -mode latency -duration 10s
//
// Accept: 8 clients POST NDJSON bodies of 500 records each (-requests in
// all); records/s accepted is the records that got a 202 (each answered
// only once its records were durable) over the time from the first request
// to the last answer. Into sink "file" (JSON lines), and into sink
// "webhook", whose durable outbox shares the state store (and the cores)
// with the inbox: then it also waits until every record arrived at the
// receiver and checks none is missing.
//
// Latency: one client POSTs 10 records every 10 ms (1,000 records/s) for
// -duration, each carrying its send time; the receiver takes arrival −
// send per record: p50, p99 and max, request to arrival at the webhook
// receiver (durable accept, inbox, filter-free routing, outbox, signed
// POST). Any failed check exits non-zero.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pipelinehq/pipeline/sdk/webhook"
)

// secret is the Standard Webhooks specification's test secret.
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func main() {
	bin := flag.String("pipeline", "bin/pipeline", "the pipeline binary")
	mode := flag.String("mode", "both", "accept, latency or both")
	sink := flag.String("sink", "both", "accept: into sink \"file\" (jsonl), sink \"webhook\" (delivered to the receiver), or both")
	requests := flag.Int("requests", 400, "accept: requests of 500 records")
	clients := flag.Int("clients", 8, "accept: concurrent clients")
	duration := flag.Duration("duration", 10*time.Second, "latency: how long to post at 1,000 records/s")
	flag.Parse()
	if *mode == "accept" || *mode == "both" {
		for _, k := range []string{"file", "webhook"} {
			if *sink != k && *sink != "both" {
				continue
			}
			if err := accept(*bin, *requests, *clients, k); err != nil {
				fmt.Fprintln(os.Stderr, "accept:", err)
				os.Exit(1)
			}
		}
	}
	if *mode == "latency" || *mode == "both" {
		if err := latency(*bin, *duration); err != nil {
			fmt.Fprintln(os.Stderr, "latency:", err)
			os.Exit(1)
		}
	}
}

// receiver verifies each delivery and notes when each record arrived.
type receiver struct {
	verifier webhook.Verifier
	mu       sync.Mutex
	arrived  map[string]time.Time
	sentNs   map[string]int64
	bad      atomic.Int64
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	now := time.Now()
	if err := r.verifier.Verify(req.Header, body); err != nil {
		r.bad.Add(1)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var rec struct {
		RowID  string `json:"row_id"`
		SentNs int64  `json:"sent_unix_ns"`
	}
	json.Unmarshal(body, &rec)
	r.mu.Lock()
	if _, ok := r.arrived[rec.RowID]; !ok {
		r.arrived[rec.RowID] = now
		r.sentNs[rec.RowID] = rec.SentNs
	}
	r.mu.Unlock()
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.arrived)
}

// start runs `pipeline run` on a push pipeline and waits until it serves.
func start(bin string, rcvURL string) (addr string, stop func() error, err error) {
	dir, err := os.MkdirTemp("", "benchpush-")
	if err != nil {
		return "", nil, err
	}
	sink := fmt.Sprintf(`sink "webhook" "crm" {
  inputs = [source.push]
  url    = %q
  secret = %q
  concurrency = 32
}`, rcvURL, secret)
	if rcvURL == "" {
		sink = fmt.Sprintf(`sink "file" "out" {
  inputs = [source.push]
  path   = %q
}`, filepath.Join(dir, "out.jsonl"))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr = ln.Addr().String()
	ln.Close()
	hcl := fmt.Sprintf(`
pipeline { name = "benchpush" }
source "http" "push" {
  listen      = %q
  max_pending = 10000000
}
%s
`, addr, sink)
	file := filepath.Join(dir, "push.hcl")
	if err := os.WriteFile(file, []byte(hcl), 0o644); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "run", "--state", filepath.Join(dir, "state.db"), file)
	cmd.Env = append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() error {
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		os.RemoveAll(dir)
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 130 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%v\n%s", err, stderr.String())
		}
		return nil
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, stop, nil
			}
		}
	}
	stop()
	return "", nil, fmt.Errorf("the push API did not come up:\n%s", stderr.String())
}

func newReceiver() (*receiver, *http.Server, string, error) {
	v, err := webhook.NewVerifier(webhook.SchemeStandard, secret)
	if err != nil {
		return nil, nil, "", err
	}
	r := &receiver{verifier: v, arrived: map[string]time.Time{}, sentNs: map[string]int64{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, "", err
	}
	srv := &http.Server{Handler: r}
	go srv.Serve(ln)
	return r, srv, "http://" + ln.Addr().String() + "/hook", nil
}

func postRecords(client *http.Client, url string, body []byte) (int, error) {
	for {
		resp, err := client.Post(url, "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return resp.StatusCode, nil
	}
}

func accept(bin string, requests, clients int, sink string) error {
	rcv, srv, url, err := newReceiver()
	if err != nil {
		return err
	}
	defer srv.Close()
	if sink == "file" {
		url = ""
	}
	addr, stop, err := start(bin, url)
	if err != nil {
		return err
	}
	defer stop()
	const per = 500
	text := strings.Repeat("x", 120)
	next := atomic.Int64{}
	var failed atomic.Int64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	began := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b bytes.Buffer
			for {
				k := int(next.Add(1)) - 1
				if k >= requests {
					return
				}
				b.Reset()
				for i := 0; i < per; i++ {
					fmt.Fprintf(&b, `{"row_id":"r%d-%d","classifications":{"churn_risk":{"label":"High","confidence":0.93}},"text":%q}`+"\n", k, i, text)
				}
				if status, err := postRecords(client, "http://"+addr+"/v1/records", b.Bytes()); err != nil || status != http.StatusAccepted {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d requests were not accepted", n)
	}
	total := requests * per
	fmt.Printf("%-52s %10.0f records/s  (%d records in %d requests of %d, %d clients, %.2f s)  go run ./tools/benchpush -mode accept -sink %s -requests %d\n",
		"source \"http\" → sink \""+sink+"\": records accepted", float64(total)/took.Seconds(), total, requests, per, clients, took.Seconds(), sink, requests)
	if sink == "file" {
		return nil
	}
	deadline := time.Now().Add(5 * time.Minute)
	for rcv.count() < total && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := rcv.count(); got != total || rcv.bad.Load() > 0 {
		return fmt.Errorf("the receiver got %d of %d records (%d bad signatures)", got, total, rcv.bad.Load())
	}
	fmt.Printf("%-52s %10.0f records/s  (every record arrived, signatures verified)\n", "  ... and delivered to the webhook receiver", float64(total)/time.Since(began).Seconds())
	return nil
}

func latency(bin string, duration time.Duration) error {
	rcv, srv, url, err := newReceiver()
	if err != nil {
		return err
	}
	defer srv.Close()
	addr, stop, err := start(bin, url)
	if err != nil {
		return err
	}
	defer stop()
	client := &http.Client{}
	sent := 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(duration)
	var b bytes.Buffer
	for k := 0; time.Now().Before(end); k++ {
		<-tick.C
		b.Reset()
		now := time.Now().UnixNano()
		for i := 0; i < 10; i++ {
			fmt.Fprintf(&b, `{"row_id":"l%d-%d","sent_unix_ns":%d,"classifications":{"churn_risk":{"label":"High","confidence":0.93}}}`+"\n", k, i, now)
		}
		if status, err := postRecords(client, "http://"+addr+"/v1/records", b.Bytes()); err != nil || status != http.StatusAccepted {
			return fmt.Errorf("request %d: %d %v", k, status, err)
		}
		sent += 10
	}
	deadline := time.Now().Add(time.Minute)
	for rcv.count() < sent && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.arrived) != sent {
		return fmt.Errorf("the receiver got %d of %d records", len(rcv.arrived), sent)
	}
	lat := make([]time.Duration, 0, sent)
	for id, at := range rcv.arrived {
		lat = append(lat, at.Sub(time.Unix(0, rcv.sentNs[id])))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("%-52s p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms  (%d records)  go run ./tools/benchpush -mode latency -duration %s\n",
		"source \"http\" → sink \"webhook\" at 1,000 records/s", ms(q(0.5)), ms(q(0.99)), ms(lat[len(lat)-1]), sent, duration)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
