package batching

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestLimits(t *testing.T) {
	def := Limits{Rows: 100, Bytes: 64 << 20, Interval: 30 * time.Second}
	var nilCfg *Config
	if l, err := nilCfg.Limits(def); err != nil || l != def {
		t.Fatalf("no block: %v %v", l, err)
	}
	var c Config
	if err := json.Unmarshal([]byte(`{"rows":5,"bytes":"1KiB","interval":"2s"}`), &c); err != nil {
		t.Fatal(err)
	}
	l, err := c.Limits(def)
	if err != nil || l != (Limits{Rows: 5, Bytes: 1024, Interval: 2 * time.Second}) {
		t.Fatalf("got %+v %v", l, err)
	}
	for _, bad := range []string{`{"rows":0}`, `{"rows":1.5}`, `{"bytes":"lots"}`, `{"interval":"soon"}`, `{"interval":"-1s"}`} {
		var c Config
		json.Unmarshal([]byte(bad), &c)
		if _, err := c.Limits(def); err == nil || !strings.HasPrefix(err.Error(), "batch: ") {
			t.Errorf("%s: got %v, want a batch: error", bad, err)
		}
	}
}

func TestDue(t *testing.T) {
	l := Limits{Rows: 10, Bytes: 100, Interval: time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		rows, bytes int64
		after       time.Duration
		want        bool
	}{
		{0, 0, time.Hour, false}, // nothing held
		{9, 99, 59 * time.Second, false},
		{10, 0, 0, true},
		{1, 100, 0, true},
		{1, 1, time.Minute, true},
	}
	for _, c := range cases {
		if got := l.Due(c.rows, c.bytes, t0, t0.Add(c.after)); got != c.want {
			t.Errorf("Due(%d rows, %d bytes, after %s) = %v", c.rows, c.bytes, c.after, got)
		}
	}
	if (Limits{}).Due(1e9, 1e12, t0, t0.Add(24*time.Hour)) {
		t.Error("no limits: never due")
	}
}
