package delivery

import (
	"fmt"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

// RetryAttribute declares the `retry { }` block every action sink takes;
// decode it into a *policy.RetryConfig field tagged `json:"retry"`.
func RetryAttribute() sdk.Attribute {
	return sdk.Attribute{Name: "retry",
		Description: `Retry policy: { schedule = ["0s", "5s", "5m", ...] } (the default schedule is 0s 5s 5m 30m 2h 5h 10h 10h) or { max_attempts = 8  initial = "5s"  max = "10h" } (exponential, full jitter).`,
		Nested: []sdk.Attribute{
			{Name: "schedule", Type: sdk.ListOf(sdk.String)},
			{Name: "max_attempts", Type: sdk.Number},
			{Name: "initial", Type: sdk.String},
			{Name: "max", Type: sdk.String},
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
			{Name: "window", Type: sdk.String},
			{Name: "cooldown", Type: sdk.String},
			{Name: "max_cooldown", Type: sdk.String},
			{Name: "probes", Type: sdk.Number},
			{Name: "probe_timeout", Type: sdk.String},
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
