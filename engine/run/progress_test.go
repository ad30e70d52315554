package run

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProgressPlainLinesAndLiveLine(t *testing.T) {
	for _, tty := range []bool{false, true} {
		stats := &Stats{Started: time.Now()}
		stats.Read.Add(12345)
		stats.Filtered.Add(12000)
		stats.addSink("crm", 300)
		stats.addSink("file", 45)
		var out syncBuf
		p := &Progress{W: &out, TTY: tty, Interval: 5 * time.Millisecond, Stats: stats}
		p.Start()
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(out.String(), "read 12,345") < 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		p.Stop()
		got := out.String()
		if !strings.Contains(got, "read 12,345 · filtered out 12,000 · delivered 345 (crm 300, file 45)") {
			t.Fatalf("tty=%v: %q", tty, got)
		}
		if tty != strings.Contains(got, "\r\033[K") {
			t.Errorf("tty=%v: live-line escapes present = %v", tty, !tty)
		}
		if !tty && !strings.HasSuffix(got, "\n") {
			t.Errorf("plain lines must end in newlines: %q", got)
		}
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
