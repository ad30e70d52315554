package run

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk"
)

// Progress prints a run's counters while it goes: a line rewritten in place
// on a terminal, a plain line every Interval otherwise.
type Progress struct {
	W        io.Writer
	TTY      bool
	Interval time.Duration // default: 200 ms on a terminal, 5 s otherwise
	Stats    *Stats

	stop chan struct{}
	done sync.WaitGroup
}

// Start begins printing; Stop ends it.
func (p *Progress) Start() {
	if p.Interval == 0 {
		p.Interval = 5 * time.Second
		if p.TTY {
			p.Interval = 200 * time.Millisecond
		}
	}
	p.stop = make(chan struct{})
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		tick := time.NewTicker(p.Interval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				line := FormatLine(p.Stats.Snapshot())
				if p.TTY {
					fmt.Fprintf(p.W, "\r\033[K%s", line)
				} else {
					fmt.Fprintln(p.W, line)
				}
			case <-p.stop:
				if p.TTY {
					fmt.Fprint(p.W, "\r\033[K")
				}
				return
			}
		}
	}()
}

// Stop stops printing and clears the live line.
func (p *Progress) Stop() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	p.done.Wait()
	p.stop = nil
}

// FormatLine renders counters as one line: what the sources read and the
// filters dropped, what sinks acked, and for each action sink what its
// outbox queued, delivered, still holds and gave up on, and whether an
// endpoint's circuit is open.
func FormatLine(s Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "read %s", count(s.Read))
	if s.Skipped > 0 {
		fmt.Fprintf(&b, " · skipped %s", count(s.Skipped))
	}
	fmt.Fprintf(&b, " · filtered out %s", count(s.Filtered))
	if s.Rejected > 0 {
		fmt.Fprintf(&b, " · rejected %s (on_error = \"skip\")", count(s.Rejected))
	}
	var names []string
	var acked int64
	for n, v := range s.Sinks {
		if _, ok := s.Outbox[n]; !ok {
			names = append(names, n)
			acked += v
		}
	}
	sort.Strings(names)
	if len(names) > 0 || len(s.Outbox) == 0 {
		fmt.Fprintf(&b, " · delivered %s", count(acked))
	}
	if len(names) > 1 {
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s %s", n, count(s.Sinks[n]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	for _, n := range slices.Sorted(maps.Keys(s.Outbox)) {
		b.WriteString(" · ")
		b.WriteString(FormatOutbox(n, s.Outbox[n]))
	}
	for _, n := range slices.Sorted(maps.Keys(s.Push)) {
		b.WriteString(" · ")
		b.WriteString(FormatPush(n, s.Push[n]))
	}
	fmt.Fprintf(&b, " · %s records/s · %s", count(int64(s.Rate)), s.Elapsed.Round(100*time.Millisecond))
	return b.String()
}

// FormatPush renders one push source's counters: "calls: accepted 1,200,
// pending 6 (oldest 3.1s), requests 202: 40, 429: 2".
func FormatPush(name string, p PushProgress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: accepted %s, pending %s", name, count(p.Accepted), count(p.Pending))
	if p.Pending > 0 {
		fmt.Fprintf(&b, " (oldest %s)", (time.Duration(p.OldestPending * float64(time.Second))).Round(100*time.Millisecond))
	}
	if len(p.Requests) > 0 {
		codes := slices.Sorted(maps.Keys(p.Requests))
		for i, c := range codes {
			codes[i] = c + ": " + count(p.Requests[c])
		}
		fmt.Fprintf(&b, ", requests %s", strings.Join(codes, ", "))
	}
	return b.String()
}

// FormatOutbox renders one action sink's outbox counters:
// "crm: queued 90, delivered 12, pending 78 (78 retrying), dead 0, circuit
// open until 18:42:10 (https://crm.example.com)".
func FormatOutbox(name string, p state.Progress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: queued %s, delivered %s, pending %s", name, count(p.Queued), count(p.Delivered), count(p.Pending))
	if p.Retrying > 0 {
		fmt.Fprintf(&b, " (%s retrying)", count(p.Retrying))
	}
	fmt.Fprintf(&b, ", dead %s", count(p.Dead))
	if p.Paused {
		b.WriteString(", paused")
	}
	var open, disabled []sdk.Circuit
	for _, c := range p.Circuits {
		switch c.State {
		case sdk.CircuitOpen, sdk.CircuitHalfOpen:
			open = append(open, c)
		case sdk.CircuitDisabled:
			disabled = append(disabled, c)
		}
	}
	if len(open) > 0 {
		c := open[0]
		if c.State == sdk.CircuitHalfOpen || !c.Until.After(time.Now()) {
			fmt.Fprintf(&b, ", circuit half-open, probing (%s)", c.Endpoint)
		} else {
			fmt.Fprintf(&b, ", circuit open until %s (%s)", c.Until.Local().Format("15:04:05"), c.Endpoint)
		}
		if len(open) > 1 {
			fmt.Fprintf(&b, " and %d more", len(open)-1)
		}
	}
	if len(disabled) > 0 {
		fmt.Fprintf(&b, ", disabled after 410 Gone (%s)", disabled[0].Endpoint)
		if len(disabled) > 1 {
			fmt.Fprintf(&b, " and %d more", len(disabled)-1)
		}
	}
	return b.String()
}

// count formats n with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var out []byte
	for i, c := range []byte(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	return string(out)
}
