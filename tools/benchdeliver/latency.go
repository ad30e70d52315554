package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

const (
	// warmup records are in the file before serve starts: they give the
	// source its schema and tell when serve delivers; they are not measured.
	warmup = 100
	// perAppend records are appended, in one write, every appendEvery.
	perAppend   = 10
	appendEvery = 10 * time.Millisecond
	pollEvery   = time.Millisecond
)

// latency runs `pipeline serve --poll 1ms` while records are appended to
// its input at 1,000 records/s, and reports arrival − append per record.
func latency(o options, ts []template, root string) (bool, error) {
	dir := filepath.Join(root, "latency")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	input := filepath.Join(dir, "calls.jsonl")
	var buf []byte
	for i := 0; i < warmup; i++ {
		buf = appendRecord(buf, ts, i, "warm_"+strconv.Itoa(i+1), time.Now().UnixNano())
	}
	if err := os.WriteFile(input, buf, 0o644); err != nil {
		return false, err
	}
	rcv, err := startReceiver()
	if err != nil {
		return false, err
	}
	defer rcv.stop()
	hclPath := filepath.Join(dir, "latency.hcl")
	if err := os.WriteFile(hclPath, []byte(hcl("benchdeliver-latency", input, rcv.url+"/hook", defaultConcurrency)), 0o644); err != nil {
		return false, err
	}
	statePath := filepath.Join(dir, "state.db")
	// --metrics-addr= turns the metrics listener off: its default port is
	// fixed (127.0.0.1:9464) and may be taken on a shared machine; nothing
	// here scrapes it.
	p, err := pipelineCmd(o, dir, "serve", "serve", "--poll", pollEvery.String(), "--state", statePath, "--metrics-addr=", hclPath)
	if err != nil {
		return false, err
	}
	started := time.Now()
	if err := p.start(); err != nil {
		return false, err
	}
	failServe := func(what string) (bool, error) {
		p.signal(syscall.SIGTERM)
		p.wait(10 * time.Second)
		_, stderr := p.output()
		return false, fmt.Errorf("pipeline serve: %s\n%s", what, tail(stderr, 20))
	}
	if err := waitCount(rcv, p, warmup, o.timeout); err != nil {
		return failServe("the warm-up records: " + err.Error())
	}
	ready := time.Since(started)

	f, err := os.OpenFile(input, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return failServe(err.Error())
	}
	appends := int(o.duration / appendEvery)
	n := appends * perAppend
	late, writeErrs := 0, 0
	var slowest time.Duration
	t0 := time.Now()
	for k := 0; k < appends; k++ {
		target := t0.Add(time.Duration(k) * appendEvery)
		if d := time.Until(target); d > 0 {
			time.Sleep(d)
		} else if -d > appendEvery {
			late++
		}
		sent := time.Now().UnixNano()
		buf = buf[:0]
		for j := 0; j < perAppend; j++ {
			i := k*perAppend + j
			buf = appendRecord(buf, ts, i, "row_"+strconv.Itoa(i+1), sent)
		}
		if _, err := f.Write(buf); err != nil {
			writeErrs++
		}
		if d := time.Since(time.Unix(0, sent)); d > slowest {
			slowest = d
		}
	}
	fed := time.Since(t0)
	f.Close()
	if writeErrs > 0 {
		return failServe(fmt.Sprintf("%d appends failed", writeErrs))
	}
	waitErr := waitCount(rcv, p, warmup+n, o.timeout)
	p.signal(syscall.SIGTERM)
	timedOut, exitErr := p.wait(o.timeout)
	_, stderr := p.output()
	st, err := rcv.stats()
	if err != nil {
		return false, err
	}
	rcv.stop()
	if o.keep {
		saveStats(filepath.Join(dir, "receiver-stats.json"), st)
	}

	var ck checks
	ck.expect(waitErr == nil, "waiting for the deliveries: %v", waitErr)
	ck.expect(!timedOut, "pipeline serve did not stop within %s of SIGTERM; killed", o.timeout)
	ck.expect(timedOut || exitErr == nil, "pipeline serve: %v\n%s", exitErr, tail(stderr, 20))
	arrivalChecks(&ck, st, func(yield func(string) bool) {
		for i := 1; i <= warmup; i++ {
			if !yield("warm_" + strconv.Itoa(i)) {
				return
			}
		}
		for i := 1; i <= n; i++ {
			if !yield("row_" + strconv.Itoa(i)) {
				return
			}
		}
	})
	ck.expect(len(st.Arrivals) == warmup+n, "%d distinct ids arrived, not %d", len(st.Arrivals), warmup+n)
	ck.expect(st.NoSent == 0, "%d bodies without a sent_unix_ns", st.NoSent)
	ob, err := readOutbox(statePath)
	if err != nil {
		ck.expect(false, "reading the state file: %v", err)
	} else {
		ck.expect(ob.rows == warmup+n && ob.byStatus["delivered"] == warmup+n, "the state file has %d deliveries, %d delivered, not %d", ob.rows, ob.byStatus["delivered"], warmup+n)
		ck.expect(ob.attempts == warmup+n, "the state file logs %d attempts, not exactly %d", ob.attempts, warmup+n)
	}

	// Per fed record: append → arrival (the figure), and its two parts,
	// append → enqueue and enqueue → arrival, from the outbox's created_at
	// (ms resolution).
	created, cerr := createdAt(statePath)
	var lat, toEnqueue, fromEnqueue []time.Duration
	var lastAt int64
	for i := 1; i <= n; i++ {
		id := "row_" + strconv.Itoa(i)
		a, ok := st.Arrivals[id]
		if !ok || a.Sent == 0 {
			continue
		}
		lat = append(lat, time.Duration(a.At-a.Sent))
		lastAt = max(lastAt, a.At)
		if c, ok := created[id]; ok && cerr == nil {
			toEnqueue = append(toEnqueue, time.Duration(c*1e6-a.Sent))
			fromEnqueue = append(fromEnqueue, time.Duration(a.At-c*1e6))
		}
	}
	command := cmdline(o, "-mode", "latency", "-duration", o.duration.String())
	if len(lat) > 0 {
		feed := fmt.Sprintf("%d records/s (%d appended in one write every %s) for %s: %d records, fed in %.2f s, %d appends more than %s late, the slowest append %s",
			int(float64(perAppend)/appendEvery.Seconds()), perAppend, appendEvery, o.duration, n, fed.Seconds(), late, appendEvery, round(slowest))
		bound := fmt.Sprintf("from the append: an upper bound on the time from the source reading the record, which it does within the %s poll", pollEvery)
		kept := fmt.Sprintf("%d arrived over the %.2f s from the first append to the last arrival (%.0f/s), the last %s after the last append",
			len(lat), time.Unix(0, lastAt).Sub(t0).Seconds(), float64(len(lat))/time.Unix(0, lastAt).Sub(t0).Seconds(),
			round(time.Unix(0, lastAt).Sub(t0.Add(fed))))
		split := "enqueue times not read: " + fmt.Sprint(cerr)
		if len(toEnqueue) > 0 {
			split = fmt.Sprintf("of which append → enqueue (deliveries.created_at, ms resolution) p50 %s, p99 %s; enqueue → arrival p50 %s, p99 %s",
				round(pct(toEnqueue, 0.50)), round(pct(toEnqueue, 0.99)), round(pct(fromEnqueue, 0.50)), round(pct(fromEnqueue, 0.99)))
		}
		fmt.Printf("%-52s %8s  (%s; %s)  $ %s\n", "latency from append to arrival, p50:", round(pct(lat, 0.50)), feed, bound, command)
		fmt.Printf("%-52s %8s  (pipeline serve --poll %s, sink concurrency %d (the default); %s)  $ %s\n",
			"latency from append to arrival, p99:", round(pct(lat, 0.99)), pollEvery, defaultConcurrency, split, command)
		fmt.Printf("%-52s %8s  (min %s; %s; serve delivered its %d warm-up records %.2f s after its start)  $ %s\n",
			"latency from append to arrival, max:", round(pct(lat, 1)), round(pct(lat, 0)), kept, warmup, ready.Seconds(), command)
	}
	detail := fmt.Sprintf("%d of %d ids arrived (%d warm-up), %d twice, %d signature failures, %d POSTs; serve stopped by SIGTERM: %v; state file: %s",
		len(st.Arrivals), warmup+n, warmup, st.Duplicates, st.BadSig, st.Requests, exitStatus(timedOut, exitErr), ob)
	if len(ck) == 0 {
		fmt.Printf("%-52s %8s  (%s)  $ %s\n", "latency, checks:", "ok", detail, command)
		return true, nil
	}
	fmt.Printf("%-52s %8s  (%s)  $ %s\n", "latency, checks:", "FAILED", detail, command)
	for _, m := range ck {
		fmt.Printf("    FAILED: %s\n", m)
	}
	if o.keep {
		fmt.Printf("    (serve output in %s)\n", dir)
	}
	return false, nil
}

// pct is the p-quantile of ds (sorted here): 0 the least, 1 the largest.
func pct(ds []time.Duration, p float64) time.Duration {
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(p*float64(len(ds))))]
}

func exitStatus(timedOut bool, err error) string {
	switch {
	case timedOut:
		return "killed after the timeout"
	case err != nil:
		return err.Error()
	}
	return "exit 0"
}

// waitCount waits until the receiver has want distinct ids, failing when
// the pipeline process ends first or after timeout.
func waitCount(rcv *receiverProc, p *proc, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	got := 0
	for {
		var err error
		if got, err = rcv.count(); err != nil {
			return err
		}
		if got >= want {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("it exited with %d of %d deliveries arrived", got, want)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d deliveries arrived within %s", got, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
