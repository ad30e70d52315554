package policy

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultRateWindow is the window assumed for a quota whose response gives
// no reset time: a minute, the window of Zendesk's account-wide limit.
const DefaultRateWindow = time.Minute

// Quota is one rate-limit budget an API reports in its response headers.
type Quota struct {
	// Name is where it came from: "ratelimit" for the account-wide
	// headers, or the lowercased name of an endpoint header such as
	// "zendesk-ratelimit-tickets-index".
	Name string
	// Limit is the requests allowed per window; 0 when not reported.
	Limit int
	// Remaining is the requests left in the current window.
	Remaining int
	// Reset is the time until the window resets, when ResetKnown.
	Reset      time.Duration
	ResetKnown bool
}

// RateLimitQuotas reads the rate-limit headers of a response (header names
// are matched case-insensitively; for each, the first value counts):
//
//   - The account-wide quota: remaining from ratelimit-remaining, else
//     x-rate-limit-remaining, else x-ratelimit-remaining; limit from
//     ratelimit-limit, else x-rate-limit, else x-rate-limit-limit, else
//     x-ratelimit-limit; reset from ratelimit-reset, else
//     x-rate-limit-reset, else x-ratelimit-reset. Zendesk sends
//     "x-rate-limit: 700", "x-rate-limit-remaining: 699" and, on some
//     endpoints, "ratelimit-limit", "ratelimit-remaining" and
//     "ratelimit-reset: 41" for the same quota. Values are non-negative
//     integers; anything after the first "," or ";" (a policy comment) is
//     ignored.
//   - Zendesk's endpoint quotas: every header named zendesk-ratelimit-*,
//     whose value lists "total=100; remaining=99; resets=41" (also
//     limit= and reset=, separated by ";" or ",").
//
// A reset is delta-seconds; a value over a day is not taken as one (it is
// most likely a Unix time) and counts as unknown. A quota is returned only
// when its remaining count is present and valid; an invalid limit or reset
// is dropped on its own. Endpoint quotas come after the account quota,
// sorted by name.
func RateLimitQuotas(h http.Header) []Quota {
	low := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			low[strings.ToLower(k)] = v[0]
		}
	}
	first := func(names ...string) (int, bool) {
		for _, n := range names {
			if v, ok := low[n]; ok {
				if n, ok := headerInt(v); ok {
					return n, true
				}
			}
		}
		return 0, false
	}
	var quotas []Quota
	if rem, ok := first("ratelimit-remaining", "x-rate-limit-remaining", "x-ratelimit-remaining"); ok {
		q := Quota{Name: "ratelimit", Remaining: rem}
		q.Limit, _ = first("ratelimit-limit", "x-rate-limit", "x-rate-limit-limit", "x-ratelimit-limit")
		if reset, ok := first("ratelimit-reset", "x-rate-limit-reset", "x-ratelimit-reset"); ok {
			q.Reset, q.ResetKnown = resetDelta(reset)
		}
		quotas = append(quotas, q)
	}
	var endpoint []Quota
	for name, v := range low {
		if !strings.HasPrefix(name, "zendesk-ratelimit-") {
			continue
		}
		if q, ok := parseZendeskQuota(name, v); ok {
			endpoint = append(endpoint, q)
		}
	}
	sort.Slice(endpoint, func(i, j int) bool { return endpoint[i].Name < endpoint[j].Name })
	return append(quotas, endpoint...)
}

// parseZendeskQuota reads "total=100; remaining=99; resets=41".
func parseZendeskQuota(name, v string) (Quota, bool) {
	q := Quota{Name: name}
	var haveRemaining bool
	for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ',' }) {
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		n, ok := headerInt(val)
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "total", "limit":
			q.Limit = n
		case "remaining":
			q.Remaining, haveRemaining = n, true
		case "resets", "reset":
			q.Reset, q.ResetKnown = resetDelta(n)
		}
	}
	return q, haveRemaining
}

// headerInt reads a non-negative integer, ignoring surrounding space and
// anything from the first "," or ";" on.
func headerInt(v string) (int, bool) {
	if i := strings.IndexAny(v, ",;"); i >= 0 {
		v = v[:i]
	}
	v = strings.TrimSpace(v)
	if !allDigits(v) {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false
	}
	return n, true
}

func resetDelta(secs int) (time.Duration, bool) {
	if secs > int(MaxRetryAfter/time.Second) {
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}

// Pause is how long to hold back the next request so as not to exhaust q
// before it resets. With W the time until the reset (Reset, or
// [DefaultRateWindow] when unknown):
//
//   - Remaining 0: W (wait for the reset).
//   - Limit known and Remaining below 10% of it (10·Remaining < Limit):
//     W/Remaining, so the requests left are spread evenly over the rest of
//     the window and the last lands at the reset.
//   - Otherwise: 0.
//
// The result is at most [MaxRetryAfter].
func (q Quota) Pause() time.Duration {
	w := DefaultRateWindow
	if q.ResetKnown {
		w = q.Reset
	}
	var d time.Duration
	switch {
	case q.Remaining <= 0:
		d = w
	case q.Limit > 0 && 10*q.Remaining < q.Limit:
		d = w / time.Duration(q.Remaining)
	}
	return min(d, MaxRetryAfter)
}

// RateLimitPause is how long to wait before the next request to the API
// that sent these response headers: the longest [Quota.Pause] of
// [RateLimitQuotas], 0 without rate-limit headers. Apply it to every request
// sharing the quota (the Zendesk account), for example with
// [Limiter.Pause](account, now.Add(pause)). It complements Retry-After:
// this slows down before a 429, Retry-After governs after one.
func RateLimitPause(h http.Header) time.Duration {
	var d time.Duration
	for _, q := range RateLimitQuotas(h) {
		d = max(d, q.Pause())
	}
	return d
}
