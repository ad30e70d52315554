package host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
)

// logTail receives the plugin's stderr one line per Write (as go-plugin
// delivers it), re-logs each line with the plugin's name, and keeps the last
// few for the report when the plugin dies.
type logTail struct {
	log *slog.Logger
	max int

	mu   sync.Mutex
	tail []string
}

func newLogTail(log *slog.Logger, max int) *logTail { return &logTail{log: log, max: max} }

func (t *logTail) Write(line []byte) (int, error) {
	if len(bytes.TrimSpace(line)) == 0 {
		return len(line), nil
	}
	level, msg, attrs := parseLine(line)
	text := msg
	if len(attrs) > 0 {
		text += " " + formatAttrs(attrs)
	}
	t.mu.Lock()
	t.tail = append(t.tail, text)
	if len(t.tail) > t.max {
		t.tail = t.tail[len(t.tail)-t.max:]
	}
	t.mu.Unlock()
	args := make([]any, 0, 2*len(attrs))
	for k, v := range attrs {
		args = append(args, k, v)
	}
	t.log.Log(context.Background(), level, msg, args...)
	return len(line), nil
}

func (t *logTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.tail...)
}

// parseLine reads one hclog JSON line; anything else (a panic's stack
// trace, a plain print) is kept as it is, at warning level.
func parseLine(line []byte) (slog.Level, string, map[string]any) {
	var m map[string]any
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &m) != nil {
		return slog.LevelWarn, strings.TrimRight(string(line), "\r\n"), nil
	}
	level := slog.LevelInfo
	switch strings.ToLower(fmt.Sprint(m["@level"])) {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg := fmt.Sprint(m["@message"])
	for k := range m {
		if strings.HasPrefix(k, "@") {
			delete(m, k)
		}
	}
	return level, msg, m
}

func formatAttrs(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	return strings.Join(parts, " ")
}
