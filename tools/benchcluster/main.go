// Command benchcluster measures `pipeline serve --cluster` with 1, 2 and 3
// workers on this machine, with the real binary and the machine's NATS:
//
//	go run ./tools/benchcluster -pipeline bin/pipeline                     # both
//	go run ./tools/benchcluster -pipeline bin/pipeline -mode deliver -n 6000 -workers 1,2,3
//	go run ./tools/benchcluster -pipeline bin/pipeline -mode file -records .cache/bench/calls-1000000.jsonl -workers 1,2
//
// deliver: six JSONL files of n records in all, every one matching the
// filter, source "file" glob → filter → sink "webhook" (concurrency 16 per
// worker) at a receiver in this process that takes -delay (20 ms) per
// request, as a latency-bound CRM does. Deliveries/s is n over the time
// from starting the workers to the receiver holding every id. It checks
// that every id arrived.
//
// file: the records file split into six files, source "file" glob →
// filter → sink "file" (each worker its own output file); records/s is the
// input's records over the time from starting the workers to the cluster's
// checkpoints counting them all. It checks that the outputs together hold
// exactly the records the filter keeps.
//
// Each run uses buckets and streams of its own (a fresh -prefix) and
// removes them after.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelinehq/pipeline/engine/cluster"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func main() {
	bin := flag.String("pipeline", "bin/pipeline", "the pipeline binary")
	mode := flag.String("mode", "both", "deliver, file or both")
	url := flag.String("nats", "nats://127.0.0.1:4222", "NATS with JetStream")
	n := flag.Int("n", 12000, "deliver: records (all delivered)")
	delay := flag.Duration("delay", 20*time.Millisecond, "deliver: the receiver's time per request")
	records := flag.String("records", ".cache/bench/calls-1000000.jsonl", "file: the JSONL records (go run ./tools/gencalls)")
	workersFlag := flag.String("workers", "", "worker counts to run (default 1,2,3 for deliver, 1,2 for file)")
	flag.Parse()
	abs, err := filepath.Abs(*bin)
	check(err)
	*bin = abs
	counts := func(def string) []int {
		s := *workersFlag
		if s == "" {
			s = def
		}
		var out []int
		for _, f := range strings.Split(s, ",") {
			k, err := strconv.Atoi(f)
			check(err)
			out = append(out, k)
		}
		return out
	}
	fmt.Printf("benchcluster: %d cores, NATS %s\n", numCPU(), *url)
	if *mode == "deliver" || *mode == "both" {
		var base, baseSteady float64
		for _, w := range counts("1,2,3") {
			rate, steady := deliver(*bin, *url, *n, *delay, w)
			if w == 1 {
				base, baseSteady = rate, steady
			}
			ratio := ""
			if base > 0 && w > 1 {
				ratio = fmt.Sprintf(" (%.2f×, %.2f× from the first arrival)", rate/base, steady/baseSteady)
			}
			fmt.Printf("deliver: %d worker(s), %d records, receiver %v/request: %6.0f deliveries/s, %6.0f from the first arrival%s   go run ./tools/benchcluster -mode deliver -n %d -workers %d\n",
				w, *n, *delay, rate, steady, ratio, *n, w)
		}
	}
	if *mode == "file" || *mode == "both" {
		for _, w := range counts("1,2") {
			total, rate, steady := filePipeline(*bin, *url, *records, w)
			fmt.Printf("file: %d worker(s), %d records, 6 files → filter → file: %7.0f records/s, %7.0f from the first commit   go run ./tools/benchcluster -mode file -workers %d\n", w, total, rate, steady, w)
		}
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchcluster:", err)
		os.Exit(1)
	}
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	k, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return k
}

func newPrefix() string {
	var b [4]byte
	rand.Read(b[:])
	return "bench_" + hex.EncodeToString(b[:])
}

// cleanup removes the streams (buckets are streams too) of a prefix.
func cleanup(url, prefix string) {
	nc, err := nats.Connect(url)
	if err != nil {
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mine []string
	names := js.StreamNames(ctx)
	for s := range names.Name() {
		if strings.Contains(s, prefix) {
			mine = append(mine, s)
		}
	}
	for _, s := range mine {
		js.DeleteStream(ctx, s)
	}
}

type worker struct {
	cmd *exec.Cmd
	log *os.File
}

func startWorkers(bin, dir, url, prefix, file string, k int, env func(i int) []string) []*worker {
	var ws []*worker
	for i := range k {
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("w%d.log", i)))
		check(err)
		cmd := exec.Command(bin, "serve", "--state", filepath.Join(dir, fmt.Sprintf("w%d.db", i)), "--metrics-addr", "",
			"--cluster", url, "--cluster-prefix", prefix, "--lease-ttl", "3s", "--poll", "200ms", file)
		cmd.Env = append(append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1"), env(i)...)
		cmd.Stdout, cmd.Stderr = logf, logf
		check(cmd.Start())
		ws = append(ws, &worker{cmd: cmd, log: logf})
	}
	return ws
}

func stopWorkers(ws []*worker) {
	for _, w := range ws {
		w.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, w := range ws {
		w.cmd.Wait()
		w.log.Close()
	}
}

func deliver(bin, url string, n int, delay time.Duration, k int) (whole, steady float64) {
	dir, err := os.MkdirTemp("", "benchcluster-")
	check(err)
	defer os.RemoveAll(dir)
	prefix := newPrefix()
	defer cleanup(url, prefix)
	in := filepath.Join(dir, "in")
	check(os.MkdirAll(in, 0o755))
	for f := range 6 {
		var b strings.Builder
		for i := f; i < n; i += 6 {
			fmt.Fprintf(&b, `{"row_id":"r%d","classifications":{"churn_risk":{"label":"High","confidence":0.9}},"metadata":{"customer_id":"c%d"}}`+"\n", i, i%977)
		}
		check(os.WriteFile(filepath.Join(in, fmt.Sprintf("part-%d.jsonl", f)), []byte(b.String()), 0o644))
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var first time.Time
	done := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(delay)
		mu.Lock()
		if first.IsZero() {
			first = time.Now()
		}
		seen[r.Header.Get("webhook-id")] = true
		if len(seen) == n {
			select {
			case <-done:
			default:
				close(done)
			}
		}
		mu.Unlock()
	})}
	go srv.Serve(ln)
	defer srv.Close()
	file := filepath.Join(dir, "p.hcl")
	check(os.WriteFile(file, []byte(fmt.Sprintf(`
pipeline { name = "bench" }
source "file" "calls" {
  path = %q
}
filter "f" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}
sink "webhook" "crm" {
  inputs = [filter.f]
  url    = "http://%s/hook"
  secret = %q
}
`, filepath.Join(in, "*.jsonl"), ln.Addr(), secret)), 0o644))
	start := time.Now()
	ws := startWorkers(bin, dir, url, prefix, file, k, func(int) []string { return nil })
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		stopWorkers(ws)
		mu.Lock()
		check(fmt.Errorf("deliver with %d workers: %d of %d delivered after 10 minutes", k, len(seen), n))
	}
	took := time.Since(start)
	mu.Lock()
	span := time.Since(first)
	mu.Unlock()
	stopWorkers(ws)
	return float64(n) / took.Seconds(), float64(n) / span.Seconds()
}

func filePipeline(bin, url, records string, k int) (total int64, whole, steady float64) {
	dir, err := os.MkdirTemp("", "benchcluster-")
	check(err)
	defer os.RemoveAll(dir)
	prefix := newPrefix()
	defer cleanup(url, prefix)
	in := filepath.Join(dir, "in")
	check(os.MkdirAll(in, 0o755))
	// Split the records into six files, round robin by line.
	src, err := os.Open(records)
	check(err)
	var outs []*bufio.Writer
	var files []*os.File
	for f := range 6 {
		fh, err := os.Create(filepath.Join(in, fmt.Sprintf("part-%d.jsonl", f)))
		check(err)
		files = append(files, fh)
		outs = append(outs, bufio.NewWriterSize(fh, 1<<20))
	}
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		w := outs[total%6]
		w.Write(sc.Bytes())
		w.WriteByte('\n')
		total++
	}
	check(sc.Err())
	src.Close()
	for i := range outs {
		check(outs[i].Flush())
		check(files[i].Close())
	}
	file := filepath.Join(dir, "p.hcl")
	check(os.WriteFile(file, []byte(fmt.Sprintf(`
pipeline { name = "bench" }
source "file" "calls" {
  path = %q
}
filter "f" {
  inputs = [source.calls]
  where  = "classifications.churn_risk.confidence > 0.8"
}
sink "file" "out" {
  inputs = [filter.f]
  path   = env("OUT")
}
`, filepath.Join(in, "*.jsonl"))), 0o644))
	c, err := cluster.Connect(context.Background(), cluster.Options{URLs: url, Prefix: prefix, LeaseTTL: 3 * time.Second})
	check(err)
	defer c.Close()
	start := time.Now()
	ws := startWorkers(bin, dir, url, prefix, file, k, func(i int) []string {
		return []string{"OUT=" + filepath.Join(dir, fmt.Sprintf("out-%d.jsonl", i))}
	})
	deadline := time.Now().Add(30 * time.Minute)
	var first time.Time
	var firstN int64
	for {
		cps, err := c.Checkpoints(context.Background(), "bench")
		check(err)
		var n int64
		for _, cp := range cps {
			n += cp.Records
		}
		if n > 0 && first.IsZero() {
			first, firstN = time.Now(), n
		}
		if n >= total {
			break
		}
		if time.Now().After(deadline) {
			stopWorkers(ws)
			check(fmt.Errorf("file with %d workers: %d of %d records committed after 30 minutes", k, n, total))
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	steady = float64(total-firstN) / time.Since(first).Seconds()
	stopWorkers(ws)
	// The outputs hold exactly what the filter keeps.
	var lines int64
	for i := range k {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("out-%d.jsonl", i)))
		if os.IsNotExist(err) {
			continue
		}
		check(err)
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			lines++
		}
		f.Close()
	}
	want := countMatching(records)
	if lines != want {
		check(fmt.Errorf("file with %d workers: the outputs hold %d records, the filter keeps %d", k, lines, want))
	}
	return total, float64(total) / took.Seconds(), steady
}

// countMatching counts the records whose churn_risk confidence is above
// 0.8, as grep would (gencalls writes it with two decimals).
func countMatching(records string) int64 {
	out, err := exec.Command("grep", "-cE", `"churn_risk":\{[^}]*"confidence":0\.(8[1-9]|9)`, records).Output()
	check(err)
	k, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	check(err)
	return k
}
