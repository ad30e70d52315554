package policy

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter caps what a Retry-After header (and a rate-limit header's
// pause) can make a delivery wait: a day. A longer value is taken as this
// one, so a hostile or buggy endpoint cannot park deliveries for months.
const MaxRetryAfter = 24 * time.Hour

// ParseRetryAfter reads a Retry-After header value (RFC 9110 §10.2.3), as
// seen at now:
//
//   - delay-seconds: one or more ASCII digits ("120"); no sign, no fraction.
//   - an HTTP-date in any of the three forms net/http accepts
//     ("Sun, 06 Nov 1994 08:49:37 GMT" and the two obsolete ones); the
//     result is the time from now until then, 0 if it has passed.
//
// Surrounding whitespace is ignored. The result is at most [MaxRetryAfter].
// ok is false for an empty, negative or unparseable value, which callers
// treat as no header.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if allDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(MaxRetryAfter/time.Second) { // only ErrRange: too many digits
			return MaxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if !t.After(now) {
		return 0, true
	}
	return min(t.Sub(now), MaxRetryAfter), true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// Wait is how long to wait before the next attempt: the longer of the
// retry policy's delay ([Retry.Delay]) and the endpoint's Retry-After, the
// latter capped at [MaxRetryAfter]. A negative argument counts as 0; pass
// retryAfter 0 when there was no header. Retry-After only ever lengthens
// the wait; it never adds or saves an attempt.
func Wait(delay, retryAfter time.Duration) time.Duration {
	return max(delay, min(retryAfter, MaxRetryAfter), 0)
}
