// Package policy is the decision logic of action-sink delivery (webhook,
// Slack, Zendesk): when to retry, when to give up, how long to wait, how fast
// to send, and when to stop sending to an endpoint for a while. It does no
// I/O and keeps nothing on disk; every function that depends on time takes
// the current time as an argument, so callers and tests control the clock.
//
// # Attempts and retries
//
// A delivery makes attempts numbered 1, 2, 3, ... counted since it was
// queued (or last replayed). A [Retry] policy gives the delay before each
// attempt and the number of attempts in all, the first included:
// [Retry.Delay](n) is how long attempt n waits, counted from the failure of
// attempt n-1, or for attempt 1 from when the delivery was queued; it
// reports false once n > [Retry.MaxAttempts], and the delivery is then
// dead. So after attempt n fails with [RetryLater], the caller asks for
// Delay(n+1); on queueing, for Delay(1).
//
// Two forms, parsed by [ParseRetry] from the sink's retry block:
//
//   - Fixed schedule, retry { schedule = ["0s", "5s", "5m", ...] }: attempt n
//     waits schedule[n-1] exactly (no jitter); len(schedule) attempts in
//     all. The first entry is the first attempt's delay, so "0s" sends at
//     once. Without a retry block the schedule is 0s 5s 5m 30m 2h 5h 10h
//     10h ([DefaultSchedule]): 8 attempts over 27h35m5s.
//   - Exponential, retry { max_attempts = 8  initial = "5s"  max = "10h" }:
//     max_attempts attempts in all. Attempt 1 is immediate, like the
//     default schedule's "0s". Attempt n ≥ 2 is retry k = n-1 and waits a
//     uniformly random time in [0, min(max, initial·2^(k-1))] (full
//     jitter): up to 5s before attempt 2, 10s before attempt 3, 20s before
//     attempt 4, ... never more than max. Fields left out default to 8,
//     "5s" and "10h".
//
// Setting schedule together with any exponential field is an error, as are
// unparseable or negative durations, an empty schedule, max_attempts < 1,
// initial = 0 and max < initial; errors name the field ("retry.initial:
// ...", "retry.schedule[2]: ...").
//
// # Outcomes
//
// [Classify](status, err) turns an attempt's result into an [Outcome]:
//
//   - [Dead] for an error marked with [Permanent] (e.g. an address refused
//     by the SSRF guard), whatever the status.
//   - [RetryLater] when there was no response (status 0: network error,
//     timeout, connection refused).
//   - [Delivered] for 2xx; but 2xx with an error (a body that says failure,
//     such as Slack's "ok": false) is RetryLater.
//   - [Gone] for 410: the caller disables the endpoint.
//   - RetryLater for 408, 425, 429, every 3xx (redirects are never followed,
//     so a redirect is a failure), every 5xx, and any other code.
//   - Dead for every other 4xx: dead letter at once, remaining attempts
//     unused.
//
// [ClassifySlack] refines this for Slack's 200-with-"ok": false answers:
// ratelimited, rate_limited, internal_error, fatal_error,
// service_unavailable and request_timeout are RetryLater, any other error
// string is Dead.
//
// # Retry-After
//
// [ParseRetryAfter] reads delay-seconds ("120") or an HTTP-date; a date in
// the past means 0. Empty, negative, fractional or garbage values are
// ignored (ok false). The next attempt then waits [Wait](delay, retryAfter) =
// max(policy delay, Retry-After): Retry-After can lengthen a wait but never
// shorten one, and never adds or saves an attempt. Retry-After is capped at
// [MaxRetryAfter] (24h), in both functions.
//
// # Rate limits
//
// [ParseRate] reads rate_limit = "50/s", "600/m", "10/h" or "2.5/s". A
// [Limiter] enforces a rate per key (endpoint URL, Slack channel or
// incoming-webhook URL, Zendesk account), each key independently: requests
// to a key are spaced Per/Count apart, with bursts of up to burst requests
// after idling (burst 1 by default: strict pacing). [Limiter.Reserve] books
// the next slot and returns how long to wait for it; [Limiter.Allow] takes
// a slot only if it is free now; [Limiter.Pause] holds a key back until a
// given time (a 429's Retry-After for a whole Slack channel, or
// [RateLimitPause] for a Zendesk account). [SlackPerChannel] is Slack's
// default pacing, one message per second per channel.
//
// # Circuit breaker
//
// A [Breaker] keeps a circuit per endpoint and pauses only an endpoint that
// accepts nothing; one that accepts a steady share of requests (even only
// the retries) is never stopped, so the retry schedule keeps its meaning.
// Closed, everything is allowed; the failures since the last success are
// counted, and the circuit opens once at least 5 of them (failures) have
// happened and nothing has succeeded for 30s (window) since the first. That
// is checked on every [Breaker.Record], [Breaker.Allow] and
// [Breaker.Status], so a circuit can be found open after its last failure.
// While open, Allow turns deliveries away with the time to come back, for a
// cooldown of 30s; they are not attempted and keep their attempt count.
// After the cooldown up to 3 deliveries at a time (probes) are let through;
// the others are told to ask again a second later. Any success closes the
// circuit (and resets the cooldown); it reopens, for twice the previous
// cooldown, at most 10 minutes (max_cooldown), only once 3 probes have
// failed with no success in between. A probe not reported within the probe
// timeout (1 minute) is presumed lost and another one is let through in its
// place. The caller sends as probes the deliveries that have already failed
// most (the highest attempt count first). Results are fed back with Record:
// RetryLater outcomes are failures; Delivered, and Dead or Gone answered by
// the endpoint, are successes (the endpoint is up).
//
// # Rate-limit headers (Zendesk)
//
// [RateLimitPause] slows a sink down before the API answers 429. It reads
// the account quota (ratelimit-limit / x-rate-limit, ratelimit-remaining /
// x-rate-limit-remaining, ratelimit-reset) and Zendesk's endpoint quotas
// (zendesk-ratelimit-*: "total=100; remaining=99; resets=41"). For each
// quota, with W the time to its reset (1 minute when not given): nothing
// left pauses W; fewer than 10% of the limit left pauses W/remaining, which
// spreads the rest evenly over the window; otherwise no pause. The longest
// pause wins, capped at 24h.
//
// # Putting it together
//
// For a due delivery to endpoint key, attempt n:
//
//  1. ok, at := breaker.Allow(key, now); if !ok, requeue at `at`, attempts
//     unchanged. (When the circuit is half-open, offer the deliveries with
//     the most failed attempts first.)
//  2. wait := limiter.Reserve(key, now); sleep wait.
//  3. Send; outcome := Classify(status, err); breaker.Record(key, outcome
//     is not RetryLater, now) unless the request never left.
//  4. Delivered: done. Dead: dead letter. Gone: disable the endpoint.
//     RetryLater: d, ok := retry.Delay(n+1, nil); if !ok, dead letter;
//     else requeue after Wait(d, retryAfter).
//
// Limiter and Breaker are safe for concurrent use; Retry is an immutable
// value.
package policy
