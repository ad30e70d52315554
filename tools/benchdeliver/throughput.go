package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// runSummary is the part of `pipeline run --json` checked here.
type runSummary struct {
	Status   string           `json:"status"`
	Error    string           `json:"error"`
	Read     int64            `json:"read"`
	Filtered int64            `json:"filtered"`
	Sinks    map[string]int64 `json:"sinks"`
	Outbox   map[string]struct {
		Delivered, Pending, Dead int
	} `json:"outbox"`
}

// throughput runs `pipeline run` over n matching records at concurrency c.
// It returns false when a check failed; an error means it could not measure.
func throughput(o options, ts []template, root string, c int) (bool, error) {
	dir := filepath.Join(root, "throughput-c"+strconv.Itoa(c))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	input := filepath.Join(dir, "calls.jsonl")
	size, err := writeInput(input, ts, o.n)
	if err != nil {
		return false, err
	}
	rcv, err := startReceiver()
	if err != nil {
		return false, err
	}
	defer rcv.stop()
	hclPath := filepath.Join(dir, "bench.hcl")
	if err := os.WriteFile(hclPath, []byte(hcl("benchdeliver", input, rcv.url+"/hook", c)), 0o644); err != nil {
		return false, err
	}
	statePath := filepath.Join(dir, "state.db")
	p, err := pipelineCmd(o, dir, "run", "run", "--json", "--state", statePath, hclPath)
	if err != nil {
		return false, err
	}
	t0 := time.Now()
	if err := p.start(); err != nil {
		return false, err
	}
	timedOut, waitErr := p.wait(o.timeout)
	wall := time.Since(t0)
	stdout, stderr := p.output()
	if timedOut {
		return false, fmt.Errorf("pipeline run at concurrency %d took more than %s (-timeout); killed\n%s", c, o.timeout, tail(stderr, 20))
	}
	rss := p.maxRSS()

	st, err := rcv.stats()
	if err != nil {
		return false, err
	}
	rcv.stop()
	if o.keep {
		saveStats(filepath.Join(dir, "receiver-stats.json"), st)
	}

	var ck checks
	ck.expect(waitErr == nil, "pipeline run: %v\n%s", waitErr, tail(stderr, 20))
	var sum runSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		ck.expect(false, "pipeline run --json printed no summary (%v)\n%s", err, tail(stderr, 20))
	} else {
		ck.expect(sum.Status == "done", "the run's status is %q, not done: %s", sum.Status, sum.Error)
		ck.expect(sum.Read == int64(o.n), "the source read %d records, not %d", sum.Read, o.n)
		ck.expect(sum.Filtered == 0, "the filter dropped %d records, not none", sum.Filtered)
		ck.expect(sum.Sinks["crm"] == int64(o.n), "the sink acked %d records, not %d", sum.Sinks["crm"], o.n)
	}
	arrivalChecks(&ck, st, func(yield func(string) bool) {
		for i := 1; i <= o.n; i++ {
			if !yield("row_" + strconv.Itoa(i)) {
				return
			}
		}
	})
	ck.expect(len(st.Arrivals) == o.n, "%d distinct ids arrived, not %d", len(st.Arrivals), o.n)
	ob, err := readOutbox(statePath)
	if err != nil {
		ck.expect(false, "reading the state file: %v", err)
	} else {
		ck.expect(ob.rows == o.n && ob.byStatus["delivered"] == o.n, "the state file has %d deliveries, %d delivered, not %d", ob.rows, ob.byStatus["delivered"], o.n)
		ck.expect(ob.attempts == o.n, "the state file logs %d attempts, not exactly %d", ob.attempts, o.n)
	}

	var first, last int64
	for _, a := range st.Arrivals {
		if first == 0 || a.At < first {
			first = a.At
		}
		if a.At > last {
			last = a.At
		}
	}
	span := time.Duration(last - first)
	label := fmt.Sprintf("throughput, concurrency %d", c)
	cmdArgs := []string{"-mode", "throughput", "-n", strconv.Itoa(o.n), "-concurrency", strconv.Itoa(c)}
	command := cmdline(o, cmdArgs...)
	fmt.Printf("%-52s %8.0f deliveries/s  (%d records, all matching, %.1f MB; pipeline run from process start to exit: %.2f s)  $ %s\n",
		label+", N / wall time:", float64(o.n)/wall.Seconds(), o.n, float64(size)/1e6, wall.Seconds(), command)
	if first > 0 && span > 0 {
		fmt.Printf("%-52s %8.0f deliveries/s  (%.2f s from the first to the last arrival; the first %.2f s after the start, the last %.2f s before the exit)  $ %s\n",
			label+", N / first→last arrival:", float64(len(st.Arrivals))/span.Seconds(), span.Seconds(),
			time.Unix(0, first).Sub(t0).Seconds(), t0.Add(wall).Sub(time.Unix(0, last)).Seconds(), command)
	}
	fmt.Printf("%-52s %8.0f MB  (ru_maxrss from wait4: the largest process of the run's tree, engine or plugin)  $ %s\n",
		label+", peak RSS:", float64(rss)/(1<<20), command)
	detail := fmt.Sprintf("%d of %d ids arrived, %d twice, %d signature failures, %d POSTs; state file: %s", len(st.Arrivals), o.n, st.Duplicates, st.BadSig, st.Requests, ob)
	if len(ck) == 0 {
		fmt.Printf("%-52s %8s  (%s)  $ %s\n", label+", checks:", "ok", detail, command)
		return true, nil
	}
	fmt.Printf("%-52s %8s  (%s)  $ %s\n", label+", checks:", "FAILED", detail, command)
	for _, m := range ck {
		fmt.Printf("    FAILED: %s\n", m)
	}
	if o.keep {
		fmt.Printf("    (run output in %s)\n", dir)
	}
	return false, nil
}
