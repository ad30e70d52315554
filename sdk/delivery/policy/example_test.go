package policy_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

// One delivery driven by the policy, against a simulated endpoint that
// answers 503, then 429 with Retry-After: 600 (longer than the schedule's 5m,
// so it wins), then 200. Time is simulated too.
func Example() {
	retry, err := policy.ParseRetry(policy.RetryConfig{}) // no retry block: the default schedule
	if err != nil {
		panic(err)
	}
	breaker, _ := policy.NewBreaker(policy.BreakerConfig{})
	limiter := policy.NewLimiter(policy.SlackPerChannel, 1)

	type answer struct {
		status     int
		retryAfter string
	}
	answers := []answer{{503, ""}, {429, "600"}, {200, ""}}

	const endpoint = "https://hooks.example.com/in"
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	d, _ := retry.Delay(1, nil)
	now := start.Add(d)
	for n := 1; ; n++ {
		if ok, at := breaker.Allow(endpoint, now); !ok {
			now = at // requeued, attempt n not used
			n--
			continue
		}
		now = now.Add(limiter.Reserve(endpoint, now))
		a := answers[n-1]
		outcome := policy.Classify(a.status, nil)
		breaker.Record(endpoint, outcome != policy.RetryLater, now)
		fmt.Printf("attempt %d at +%v: %d → %v\n", n, now.Sub(start), a.status, outcome)
		if outcome != policy.RetryLater {
			break
		}
		d, ok := retry.Delay(n+1, nil)
		if !ok {
			fmt.Println("dead: no attempts left")
			break
		}
		ra, _ := policy.ParseRetryAfter(a.retryAfter, now)
		now = now.Add(policy.Wait(d, ra))
	}
	// Output:
	// attempt 1 at +0s: 503 → retry
	// attempt 2 at +5s: 429 → retry
	// attempt 3 at +10m5s: 200 → delivered
}

// Marking an error permanent sends the delivery to the dead letter at once.
func ExamplePermanent() {
	blocked := policy.Permanent(errors.New("169.254.169.254 is a cloud metadata address"))
	err := fmt.Errorf("POST http://metadata/: %w", blocked)
	fmt.Println(policy.Classify(0, err), err)
	fmt.Println(policy.Classify(0, errors.New("connection refused")))
	// Output:
	// dead POST http://metadata/: 169.254.169.254 is a cloud metadata address
	// retry
}

// Schedules from configuration, and the delay before each attempt.
func ExampleParseRetry() {
	sched, _ := policy.ParseRetry(policy.RetryConfig{Schedule: []string{"0s", "1m", "1h"}})
	for n := 1; n <= sched.MaxAttempts()+1; n++ {
		d, ok := sched.Delay(n, nil)
		fmt.Println(n, d, ok)
	}
	attempts := 4
	exp, _ := policy.ParseRetry(policy.RetryConfig{MaxAttempts: &attempts, Initial: "5s", Max: "8s"})
	top := func() float64 { return 0.9999999999 } // the top of the jitter range
	for n := 1; n <= exp.MaxAttempts(); n++ {
		d, _ := exp.Delay(n, top)
		fmt.Println(n, d.Round(time.Millisecond))
	}
	_, err := policy.ParseRetry(policy.RetryConfig{Schedule: []string{"1s"}, Initial: "1s"})
	fmt.Println(err)
	// Output:
	// 1 0s true
	// 2 1m0s true
	// 3 1h0m0s true
	// 4 0s false
	// 1 0s
	// 2 5s
	// 3 8s
	// 4 8s
	// retry.schedule: cannot be combined with initial; use either a schedule or max_attempts/initial/max
}
