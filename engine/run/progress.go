package run

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
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

// FormatLine renders counters as one line.
func FormatLine(s Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "read %s", count(s.Read))
	if s.Skipped > 0 {
		fmt.Fprintf(&b, " · skipped %s", count(s.Skipped))
	}
	fmt.Fprintf(&b, " · filtered out %s · delivered %s", count(s.Filtered), count(s.Delivered))
	if len(s.Sinks) > 1 {
		names := make([]string, 0, len(s.Sinks))
		for n := range s.Sinks {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s %s", n, count(s.Sinks[n]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, " · %s records/s · %s", count(int64(s.Rate)), s.Elapsed.Round(100*time.Millisecond))
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
