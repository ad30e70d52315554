// Command benchdeliver measures webhook deliveries end to end with the real
// binary: `pipeline run` (throughput) and `pipeline serve` (latency) with
// source "file" → filter → sink "webhook", every plugin its own process,
// the SQLite outbox in a temporary state file, posting to a loopback
// receiver in another process (this command again, with -receiver) that
// verifies every Standard Webhooks signature with sdk/webhook.
//
//	go run ./tools/benchdeliver -pipeline bin/pipeline                  # everything
//	go run ./tools/benchdeliver -pipeline bin/pipeline -mode throughput -n 20000 -concurrency 16
//	go run ./tools/benchdeliver -pipeline bin/pipeline -mode latency -duration 10s
//
// Throughput: a JSONL file of n records, every one of them matching the
// filter (classifications.churn_risk.confidence > 0.8; the matching records
// of -records, cycled, each with a unique row_id, which is the webhook-id),
// delivered by `pipeline run --json --state <tmp>/state.db`. Deliveries/s is
// n over the wall time of the whole run (process start to exit, which
// includes start-up, reading, filtering and waiting for the last delivery to
// be recorded); also n over the time from the first to the last arrival, and
// the peak RSS of the run (ru_maxrss of wait4: the largest process of its
// tree, the engine or a plugin). Then it checks that every id arrived, none
// twice, every signature verified, and that the state file holds n
// delivered deliveries and exactly n logged attempts.
//
// Latency: `pipeline serve --poll 1ms` on a file to which 10 records are
// appended every 10 ms (one write each, 1,000 records/s) for -duration, each
// carrying its append time (sent_unix_ns); the receiver takes arrival −
// append per record: p50, p99 and max. That is an upper bound on the time
// from the source reading the record, which happens within the 1 ms poll.
//
// The receiver answers 200 at once and shares the machine's cores with the
// pipeline. Every figure line ends with the command that gives it alone.
// Any failed check exits non-zero.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// secret is the Standard Webhooks test secret of the specification's
// signature vector; nothing secret about it.
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// where is the filter every generated record satisfies.
const where = "classifications.churn_risk.confidence > 0.8"

// defaultConcurrency is the webhook sink's default; a run at it leaves
// concurrency out of the HCL.
const defaultConcurrency = 16

type options struct {
	pipeline    string
	mode        string
	n           int
	concurrency []int
	duration    time.Duration
	records     string
	keep        bool
	timeout     time.Duration
}

func main() {
	var recv receiverFlags
	flag.BoolVar(&recv.on, "receiver", false, "internal: run as the receiver (prints its address on stdout)")
	flag.StringVar(&recv.addr, "addr", "127.0.0.1:0", "receiver: listen address")
	flag.StringVar(&recv.secret, "secret", secret, "receiver: the Standard Webhooks secret to verify with")

	var o options
	var conc string
	flag.StringVar(&o.pipeline, "pipeline", "bin/pipeline", "the pipeline binary to measure")
	flag.StringVar(&o.mode, "mode", "all", "throughput, latency or all")
	flag.IntVar(&o.n, "n", 20000, "throughput: matching records to deliver")
	flag.StringVar(&conc, "concurrency", "16,64", "throughput: the sink's concurrency, one run per value (comma-separated)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "latency: how long to append records (10 every 10 ms)")
	flag.StringVar(&o.records, "records", "testdata/calls.jsonl", "JSONL records to take the matching ones from (cycled, each with a unique row_id)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (inputs, HCL, state, logs) and print where it is")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on a run (or a wait) after this long")
	flag.Parse()

	if recv.on {
		if err := runReceiver(recv); err != nil {
			fmt.Fprintln(os.Stderr, "benchdeliver -receiver:", err)
			os.Exit(1)
		}
		return
	}
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
	if o.mode != "all" && o.mode != "throughput" && o.mode != "latency" {
		fail(fmt.Errorf("-mode %q: want throughput, latency or all", o.mode))
	}
	if o.n < 1 {
		fail(fmt.Errorf("-n must be at least 1"))
	}
	if o.duration < 10*time.Millisecond {
		fail(fmt.Errorf("-duration must be at least 10ms"))
	}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		s := <-sigs
		fmt.Fprintf(os.Stderr, "benchdeliver: %s: stopping the processes started\n", s)
		runCleanups()
		os.Exit(130)
	}()
	err := run(o)
	runCleanups()
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchdeliver:", err)
	os.Exit(1)
}

// cleanups run (last first) at the end, also on SIGINT: they stop the
// processes this command started and remove its temporary directories.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func atCleanup(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

func runCleanups() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

func run(o options) error {
	if _, err := os.Stat(o.pipeline); err != nil {
		return fmt.Errorf("-pipeline: %w (build it with `go build -o bin/pipeline ./cmd/pipeline`)", err)
	}
	templates, err := readTemplates(o.records)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "benchdeliver-")
	if err != nil {
		return err
	}
	if o.keep {
		atCleanup(func() { fmt.Printf("kept %s\n", dir) })
	} else {
		atCleanup(func() { os.RemoveAll(dir) })
	}
	fmt.Printf("webhook deliveries end to end: %s (source \"file\" → filter → sink \"webhook\", plugins out of process, SQLite outbox) → receiver in another process verifying every Standard Webhooks signature; %d cores, %s\n",
		o.pipeline, runtime.NumCPU(), runtime.Version())
	failed := 0
	if o.mode == "all" || o.mode == "throughput" {
		for _, c := range o.concurrency {
			ok, err := throughput(o, templates, dir, c)
			if err != nil {
				return err
			}
			if !ok {
				failed++
			}
		}
	}
	if o.mode == "all" || o.mode == "latency" {
		ok, err := latency(o, templates, dir)
		if err != nil {
			return err
		}
		if !ok {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d run(s) failed their checks (see above)", failed)
	}
	return nil
}

// cmdline is the command that gives one figure alone.
func cmdline(o options, args ...string) string {
	return "go run ./tools/benchdeliver -pipeline " + o.pipeline + " " + strings.Join(args, " ")
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
