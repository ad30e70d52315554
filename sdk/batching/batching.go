// Package batching is the `batch { rows bytes interval }` block of sinks
// that gather records into loads (sdk.BufferedSink): its declaration, its
// parsing with clear errors, and the rule that says a load is due.
package batching

import (
	"fmt"
	"math"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/pipelinehq/pipeline/sdk"
)

// Limits say when held records make a load: whichever is reached first.
type Limits struct {
	Rows     int64         // records; 0: no limit
	Bytes    int64         // bytes held (sdk.RecordBytes); 0: no limit
	Interval time.Duration // since the first held record; 0: no limit
}

// Config is the block as the sink's configuration decodes it.
type Config struct {
	Rows     *float64 `json:"rows"`
	Bytes    *string  `json:"bytes"`
	Interval *string  `json:"interval"`
}

// Attribute declares the block, its defaults shown in descriptions.
func Attribute(def Limits, description string) sdk.Attribute {
	rows := "no limit"
	if def.Rows > 0 {
		rows = fmt.Sprint(def.Rows)
	}
	return sdk.Attribute{Name: "batch", Description: description, Nested: []sdk.Attribute{
		{Name: "rows", Type: sdk.Number, Description: "Load after this many records (default: " + rows + ")."},
		{Name: "bytes", Type: sdk.String, Description: fmt.Sprintf(`Load after this much data is held, e.g. "64MiB" (default: %s).`, describeBytes(def.Bytes))},
		{Name: "interval", Type: sdk.String, Description: fmt.Sprintf(`Load this long after the first held record, e.g. "30s" (default: %s).`, describeInterval(def.Interval))},
	}}
}

func describeBytes(n int64) string {
	if n <= 0 {
		return "no limit"
	}
	return humanize.IBytes(uint64(n))
}

func describeInterval(d time.Duration) string {
	if d <= 0 {
		return "no limit"
	}
	return d.String()
}

// Limits returns the limits c sets, def for what it leaves out (all of def
// when c is nil).
func (c *Config) Limits(def Limits) (Limits, error) {
	l := def
	if c == nil {
		return l, nil
	}
	if c.Rows != nil {
		n := *c.Rows
		if n < 1 || n != math.Trunc(n) || n > math.MaxInt64/2 {
			return l, fmt.Errorf("batch: rows must be a whole number of records, at least 1, not %v", n)
		}
		l.Rows = int64(n)
	}
	if c.Bytes != nil {
		n, err := humanize.ParseBytes(*c.Bytes)
		if err != nil || n == 0 || n > math.MaxInt64/2 {
			return l, fmt.Errorf(`batch: bytes %q is not a size such as "64MiB"`, *c.Bytes)
		}
		l.Bytes = int64(n)
	}
	if c.Interval != nil {
		d, err := time.ParseDuration(*c.Interval)
		if err != nil || d <= 0 {
			return l, fmt.Errorf(`batch: interval %q is not a duration such as "30s" or "5m"`, *c.Interval)
		}
		l.Interval = d
	}
	return l, nil
}

// Due reports whether rows records of bytes bytes, the first held since
// first, make a load at now.
func (l Limits) Due(rows, bytes int64, first, now time.Time) bool {
	if rows == 0 {
		return false
	}
	return (l.Rows > 0 && rows >= l.Rows) || (l.Bytes > 0 && bytes >= l.Bytes) || (l.Interval > 0 && now.Sub(first) >= l.Interval)
}
