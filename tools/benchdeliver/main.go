// Command benchdeliver measures webhook deliveries: the real webhook sink
// (plugins/sink-webhook) over the real SQLite outbox (engine/state, in a
// temporary directory), posting signed requests to a loopback receiver that
// verifies every Standard Webhooks signature (sdk/webhook) and notes when
// each delivery arrives.
//
//	go run ./tools/benchdeliver                      # everything
//	go run ./tools/benchdeliver -mode throughput -n 20000 -concurrency 16
//	go run ./tools/benchdeliver -mode latency -rate 1000 -duration 10s
//
// Throughput: n records written in batches, as fast as the sink takes them;
// deliveries per second from the first Write to the last arrival. Latency: a
// steady feed (batches of -batch-latency records every -every) for
// -duration; for each record, the time from the Write of its batch to its
// arrival, p50 and p99. The receiver answers 200 at once. Everything runs in
// this one process, so the receiver shares the CPU with the sink.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/state"
	sinkwebhook "github.com/pipelinehq/pipeline/plugins/sink-webhook"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/webhook"
)

// secret is the Standard Webhooks test secret of the signature
// vector; nothing secret about it.
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

type options struct {
	mode         string
	n            int
	concurrency  []int
	batch        int
	rate         int
	every        time.Duration
	duration     time.Duration
	latencyBatch int
	latencyConc  int
	records      string
	cpuprofile   string
	timeout      time.Duration
}

func main() {
	var o options
	var conc string
	flag.StringVar(&o.mode, "mode", "all", "throughput, latency or all")
	flag.IntVar(&o.n, "n", 20000, "throughput: records to deliver")
	flag.StringVar(&conc, "concurrency", "16,64", "throughput: the sink's concurrency, one run per value (comma-separated)")
	flag.IntVar(&o.batch, "batch", 1000, "throughput: records per Write")
	flag.IntVar(&o.latencyBatch, "batch-latency", 10, "latency: records per Write")
	flag.DurationVar(&o.every, "every", 10*time.Millisecond, "latency: time between Writes")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "latency: how long to feed")
	flag.IntVar(&o.latencyConc, "latency-concurrency", 16, "latency: the sink's concurrency")
	flag.StringVar(&o.records, "records", "testdata/calls.jsonl", "JSONL records to send (cycled, each with a fresh id)")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the runs to this file")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on a run after this long")
	flag.Parse()
	for _, c := range strings.Split(conc, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		v, err := strconv.Atoi(c)
		if err != nil || v < 1 {
			fail(fmt.Errorf("-concurrency: %q is not a positive number", c))
		}
		o.concurrency = append(o.concurrency, v)
	}
	o.rate = int(float64(o.latencyBatch) / o.every.Seconds())
	if err := run(o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchdeliver:", err)
	os.Exit(1)
}

func run(o options) error {
	lines, err := readLines(o.records)
	if err != nil {
		return err
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("webhook sink over the SQLite outbox → loopback receiver verifying Standard Webhooks signatures; %d cores, %s\n",
		runtime.NumCPU(), runtime.Version())
	if o.mode == "all" || o.mode == "throughput" {
		for _, c := range o.concurrency {
			if err := throughput(o, lines, c); err != nil {
				return err
			}
		}
	}
	if o.mode == "all" || o.mode == "latency" {
		if err := latency(o, lines); err != nil {
			return err
		}
	}
	if o.mode != "all" && o.mode != "throughput" && o.mode != "latency" {
		return fmt.Errorf("-mode %q: want throughput, latency or all", o.mode)
	}
	return nil
}

func readLines(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w (run from the repository root, or pass -records)", err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if len(strings.TrimSpace(sc.Text())) > 0 {
			out = append(out, append([]byte(nil), sc.Bytes()...))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no records", path)
	}
	return out, nil
}

// batches decodes n records (cycling through lines) into batches of size
// records, each record with the id prefix-<i>, as the engine hands them to
// a sink.
func batches(lines [][]byte, n, size int, prefix string) ([]sdk.Batch, [][]string, error) {
	var out []sdk.Batch
	var ids [][]string
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for start := 0; start < n; start += size {
		end := min(start+size, n)
		var bids []string
		for i := start; i < end; i++ {
			if err := dec.Append(lines[i%len(lines)]); err != nil {
				return nil, nil, err
			}
			bids = append(bids, prefix+"-"+strconv.Itoa(i))
		}
		rec := dec.Flush()
		b := array.NewStringBuilder(memory.DefaultAllocator)
		b.AppendValues(bids, nil)
		idCol := b.NewArray()
		b.Release()
		fields := append(slices.Clone(rec.Schema().Fields()), arrow.Field{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String, Nullable: true})
		cols := append(slices.Clone(rec.Columns()), idCol)
		out = append(out, sdk.NewBatch(array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows())))
		ids = append(ids, bids)
	}
	return out, ids, nil
}

// receiver verifies each request's signature and notes the first arrival
// of every webhook-id.
type receiver struct {
	v webhook.Verifier

	mu      sync.Mutex
	want    int
	arrived map[string]time.Time
	dups    int
	bad     error
	done    chan struct{}
}

func newReceiver(want int) (*receiver, error) {
	v, err := webhook.NewVerifier(webhook.SchemeStandard, secret)
	if err != nil {
		return nil, err
	}
	return &receiver{v: v, want: want, arrived: make(map[string]time.Time, want), done: make(chan struct{})}, nil
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(req.Body)
	if err == nil {
		err = r.v.Verify(req.Header, body)
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if r.bad == nil {
			r.bad = fmt.Errorf("delivery %s: %w", id, err)
			close(r.done)
		}
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if _, ok := r.arrived[id]; ok {
		r.dups++
		return
	}
	r.arrived[id] = at
	if len(r.arrived) == r.want && r.bad == nil {
		close(r.done)
	}
}

// last is the latest arrival.
func (r *receiver) last() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var t time.Time
	for _, at := range r.arrived {
		if at.After(t) {
			t = at
		}
	}
	return t
}

func (r *receiver) wait(timeout time.Duration) error {
	select {
	case <-r.done:
	case <-time.After(timeout):
		r.mu.Lock()
		defer r.mu.Unlock()
		return fmt.Errorf("only %d of %d deliveries arrived within %s", len(r.arrived), r.want, timeout)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bad
}

// setup starts a receiver for want deliveries and a webhook sink at
// concurrency c over a fresh SQLite outbox. stop closes everything.
func setup(want, c int) (*receiver, *sinkwebhook.Sink, *leaseStats, func(), error) {
	rcv, err := newReceiver(want)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, nil, err
	}
	srv := &http.Server{Handler: rcv, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	dir, err := os.MkdirTemp("", "benchdeliver-")
	if err != nil {
		srv.Close()
		return nil, nil, nil, nil, err
	}
	store, err := state.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		srv.Close()
		os.RemoveAll(dir)
		return nil, nil, nil, nil, err
	}
	stop := func() {
		srv.Close()
		store.Close()
		os.RemoveAll(dir)
	}
	ctx := context.Background()
	out := store.Outbox("bench", "crm")
	if err := out.ResetLeases(ctx); err != nil {
		stop()
		return nil, nil, nil, nil, err
	}
	cfg, _ := json.Marshal(map[string]any{
		"url": "http://" + ln.Addr().String() + "/hook", "secret": secret, "signature": "standard",
		"timeout": "10s", "concurrency": c, "allow_private_networks": true, "https_only": false,
	})
	s := &sinkwebhook.Sink{}
	stats := &leaseStats{}
	if err := s.Configure(ctx, sdk.Config{Name: "crm", JSON: cfg, Outbox: outbox{out.SDK(), stats}}); err != nil {
		stop()
		return nil, nil, nil, nil, fmt.Errorf("configure the webhook sink: %w", err)
	}
	return rcv, s, stats, stop, nil
}

// cpu returns the process's user+system CPU time so far.
func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func throughput(o options, lines [][]byte, c int) error {
	bs, _, err := batches(lines, o.n, o.batch, "t"+strconv.Itoa(c))
	if err != nil {
		return err
	}
	rcv, s, stats, stop, err := setup(o.n, c)
	if err != nil {
		return err
	}
	defer stop()
	ctx := context.Background()
	runtime.GC()
	cpu0 := cpu()
	t0 := time.Now()
	for _, b := range bs {
		if err := s.Write(ctx, b); err != nil {
			return err
		}
	}
	written := time.Since(t0)
	if err := rcv.wait(o.timeout); err != nil {
		return err
	}
	elapsed := rcv.last().Sub(t0)
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := s.Close(dctx); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	drained := time.Since(t0)
	used := cpu() - cpu0
	leases, empty, took := stats.get()
	cmd := fmt.Sprintf("go run ./tools/benchdeliver -mode throughput -n %d -batch %d -concurrency %d", o.n, o.batch, c)
	fmt.Printf("%-58s %8.0f deliveries/s  (%d in %.2f s from the first Write to the last arrival; all written to the outbox in %.2f s, all recorded in %.2f s; CPU %.2f s = %.0f%% of %d cores; %d outbox leases, %d of them empty, %.1f s in all; %d duplicate arrivals)  $ %s\n",
		fmt.Sprintf("throughput, concurrency %d:", c), float64(o.n)/elapsed.Seconds(), o.n, elapsed.Seconds(), written.Seconds(), drained.Seconds(),
		used.Seconds(), 100*used.Seconds()/drained.Seconds()/float64(runtime.NumCPU()), runtime.NumCPU(), leases, empty, took.Seconds(), rcv.dups, cmd)
	return nil
}

func latency(o options, lines [][]byte) error {
	count := int(o.duration / o.every)
	n := count * o.latencyBatch
	bs, ids, err := batches(lines, n, o.latencyBatch, "l")
	if err != nil {
		return err
	}
	rcv, s, _, stop, err := setup(n, o.latencyConc)
	if err != nil {
		return err
	}
	defer stop()
	ctx := context.Background()
	enqueued := make([]time.Time, len(bs))
	writes := make([]time.Duration, len(bs))
	late := 0
	runtime.GC()
	t0 := time.Now()
	for i, b := range bs {
		target := t0.Add(time.Duration(i) * o.every)
		if d := time.Until(target); d > 0 {
			time.Sleep(d)
		} else if d < -o.every {
			late++
		}
		enqueued[i] = time.Now()
		if err := s.Write(ctx, b); err != nil {
			return err
		}
		writes[i] = time.Since(enqueued[i])
	}
	fed := time.Since(t0)
	if err := rcv.wait(o.timeout); err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := s.Close(dctx); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	var lat []time.Duration
	rcv.mu.Lock()
	for i, bids := range ids {
		for _, id := range bids {
			lat = append(lat, rcv.arrived[id].Sub(enqueued[i]))
		}
	}
	rcv.mu.Unlock()
	slices.Sort(lat)
	slices.Sort(writes)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	cmd := fmt.Sprintf("go run ./tools/benchdeliver -mode latency -batch-latency %d -every %s -duration %s -latency-concurrency %d",
		o.latencyBatch, o.every, o.duration, o.latencyConc)
	feed := fmt.Sprintf("%d records/s (batches of %d every %s) for %s at concurrency %d; fed %d in %.2f s, %d Writes more than %s late",
		o.rate, o.latencyBatch, o.every, o.duration, o.latencyConc, n, fed.Seconds(), late, o.every)
	fmt.Printf("%-58s %8s  (%s; the Write itself: p50 %s)  $ %s\n", "latency from Write to arrival, p50:", round(pct(0.50)), feed, round(writes[len(writes)/2]), cmd)
	fmt.Printf("%-58s %8s  (max %s; the Write itself: p99 %s)  $ %s\n", "latency from Write to arrival, p99:", round(pct(0.99)), round(lat[len(lat)-1]),
		round(writes[min(len(writes)-1, len(writes)*99/100)]), cmd)
	return nil
}

func round(d time.Duration) string {
	switch {
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// outbox is the engine's outbox (state.Outbox.SDK: what the engine's
// plugin service serves, without the gRPC hop). It counts the Lease calls,
// and those that handed out nothing.
type outbox struct {
	sdk.Outbox
	stats *leaseStats
}

type leaseStats struct {
	mu           sync.Mutex
	calls, empty int
	took         time.Duration
}

func (l *leaseStats) get() (calls, empty int, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls, l.empty, l.took
}

func (a outbox) Lease(ctx context.Context, n int, skip []string) ([]sdk.Delivery, time.Time, error) {
	t0 := time.Now()
	ds, next, err := a.Outbox.Lease(ctx, n, skip)
	a.stats.mu.Lock()
	a.stats.calls++
	if len(ds) == 0 {
		a.stats.empty++
	}
	a.stats.took += time.Since(t0)
	a.stats.mu.Unlock()
	return ds, next, err
}
