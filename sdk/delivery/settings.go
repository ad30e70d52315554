package delivery

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

// RetryAttribute declares the `retry { }` block every action sink takes;
// decode it into a *policy.RetryConfig field tagged `json:"retry"`.
func RetryAttribute() sdk.Attribute {
	return sdk.Attribute{Name: "retry",
		Description: `Retry policy: { schedule = ["0s", "5s", "5m", ...] } (the default schedule is 0s 5s 5m 30m 2h 5h 10h 10h) or { max_attempts = 8  initial = "5s"  max = "10h" } (exponential, full jitter).`,
		Nested: []sdk.Attribute{
			{Name: "schedule", Type: sdk.ListOf(sdk.Duration)},
			{Name: "max_attempts", Type: sdk.Number},
			{Name: "initial", Type: sdk.Duration},
			{Name: "max", Type: sdk.Duration},
		}}
}

// BreakerAttribute declares the `circuit_breaker { }` block; decode it into
// a *policy.BreakerConfig field tagged `json:"circuit_breaker"`. what names
// what a tripped breaker pauses: "an endpoint", "a channel", "the account".
func BreakerAttribute(what string) sdk.Attribute {
	return sdk.Attribute{Name: "circuit_breaker",
		Description: fmt.Sprintf(`Pause %s that accepted nothing for a window: { failures = 5  window = "30s"  cooldown = "30s"  probes = 3 } (open when at least failures attempts failed and none succeeded for window; after cooldown up to probes deliveries are tried, the first success closes it, and it reopens, the cooldown doubling up to max_cooldown 10m, only when all of them fail).`, what),
		Nested: []sdk.Attribute{
			{Name: "failures", Type: sdk.Number},
			{Name: "window", Type: sdk.Duration},
			{Name: "cooldown", Type: sdk.Duration},
			{Name: "max_cooldown", Type: sdk.Duration},
			{Name: "probes", Type: sdk.Number},
			{Name: "probe_timeout", Type: sdk.Duration},
		}}
}

// Policies parses the retry and circuit_breaker blocks (nil: the defaults).
// Errors name the block.
func Policies(retry *policy.RetryConfig, breaker *policy.BreakerConfig) (policy.Retry, *policy.Breaker, error) {
	r := policy.DefaultRetry()
	if retry != nil {
		var err error
		if r, err = policy.ParseRetry(*retry); err != nil {
			return r, nil, fmt.Errorf("retry: %w", err)
		}
	}
	var bc policy.BreakerConfig
	if breaker != nil {
		bc = *breaker
	}
	b, err := policy.NewBreaker(bc)
	if err != nil {
		return r, nil, fmt.Errorf("circuit_breaker: %w", err)
	}
	return r, b, nil
}

// RetentionAttribute declares the `retention { }` block every action sink
// takes; decode it into a *RetentionConfig field tagged `json:"retention"`
// and parse it with ParseRetention into Options.Retention.
func RetentionAttribute() sdk.Attribute {
	return sdk.Attribute{Name: "retention",
		Description: `How long the outbox keeps what is finished: { delivered = "7d"  attempts = "30d"  dead = "30d" } (the defaults). delivered: a delivered message's payload is dropped this long after delivery (its id stays, so nothing is sent twice); attempts: the delivery log; dead: a dead message not replayed for this long is deleted. Durations such as "36h", "7d" or "1d12h".`,
		Nested: []sdk.Attribute{
			{Name: "delivered", Type: sdk.String},
			{Name: "attempts", Type: sdk.String},
			{Name: "dead", Type: sdk.String},
		}}
}

// RetentionConfig is the retention block as decoded; a nil field takes the
// default (sdk.DefaultRetention).
type RetentionConfig struct {
	Delivered *string `json:"delivered"`
	Attempts  *string `json:"attempts"`
	Dead      *string `json:"dead"`
}

// ParseRetention parses the retention block (nil: the defaults). Errors
// name the attribute: "retention: delivered: ...".
func ParseRetention(c *RetentionConfig) (sdk.Retention, error) {
	r := sdk.DefaultRetention
	if c == nil {
		return r, nil
	}
	for _, f := range []struct {
		name string
		v    *string
		into *time.Duration
	}{{"delivered", c.Delivered, &r.Delivered}, {"attempts", c.Attempts, &r.Attempts}, {"dead", c.Dead, &r.Dead}} {
		if f.v == nil {
			continue
		}
		d, err := ParseDays(*f.v)
		if err != nil {
			return r, fmt.Errorf("retention: %s: %w", f.name, err)
		}
		if d < time.Second {
			return r, fmt.Errorf("retention: %s: %q is less than a second; use a duration such as \"7d\"", f.name, *f.v)
		}
		*f.into = d
	}
	return r, nil
}

// ParseDays parses a duration as time.ParseDuration does, also taking
// whole days first: "7d", "1d12h", "36h", "90m".
func ParseDays(s string) (time.Duration, error) {
	v := strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(v, 'd'); i > 0 {
		n, err := strconv.ParseUint(v[:i], 10, 32)
		if err != nil || n > maxDays {
			return 0, fmt.Errorf("%q is not a duration such as \"7d\" or \"36h\" (at most %d days)", s, maxDays)
		}
		days, v = time.Duration(n)*24*time.Hour, v[i+1:]
		if v == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > maxDays*24*time.Hour-days {
		return 0, fmt.Errorf("%q is not a duration such as \"7d\" or \"36h\" (at most %d days)", s, maxDays)
	}
	return days + d, nil
}

// maxDays bounds a retention (100 years), far below where a duration overflows.
const maxDays = 36500

// setRetention tells the outbox the sink's retention, if it takes one. A
// failure only costs pruning with what it had (the stored one or the
// defaults), so it is logged, not returned.
func (d *Deliverer) setRetention(ctx context.Context) {
	rs, ok := d.out.(sdk.RetentionSetter)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := rs.SetRetention(ctx, d.opts.Retention); err != nil && ctx.Err() == nil {
		d.opts.Log.Warn("outbox: set retention", "error", err)
	}
}
