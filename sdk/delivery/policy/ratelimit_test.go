package policy

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestRateLimitQuotas(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want []Quota
	}{
		{"none", hdr("Content-Type", "application/json"), nil},
		{
			"Zendesk account headers",
			hdr("X-Rate-Limit", "700", "X-Rate-Limit-Remaining", "699"),
			[]Quota{{Name: "ratelimit", Limit: 700, Remaining: 699}},
		},
		{
			"Zendesk list endpoint headers",
			hdr("x-rate-limit", "700", "ratelimit-limit", "700", "x-rate-limit-remaining", "699",
				"ratelimit-remaining", "699", "ratelimit-reset", "41",
				"zendesk-ratelimit-tickets-index", "total=100; remaining=99; resets=41"),
			[]Quota{
				{Name: "ratelimit", Limit: 700, Remaining: 699, Reset: 41 * time.Second, ResetKnown: true},
				{Name: "zendesk-ratelimit-tickets-index", Limit: 100, Remaining: 99, Reset: 41 * time.Second, ResetKnown: true},
			},
		},
		{
			"ratelimit-* wins over x-rate-limit-*",
			hdr("X-Rate-Limit-Remaining", "500", "RateLimit-Remaining", "5", "RateLimit-Limit", "100"),
			[]Quota{{Name: "ratelimit", Limit: 100, Remaining: 5}},
		},
		{
			"invalid ratelimit-* falls back",
			hdr("RateLimit-Remaining", "lots", "X-Rate-Limit-Remaining", "3", "X-Rate-Limit", "700"),
			[]Quota{{Name: "ratelimit", Limit: 700, Remaining: 3}},
		},
		{
			"X-RateLimit-* spelling and a policy comment",
			hdr("X-RateLimit-Limit", "100, 100;w=60", "X-RateLimit-Remaining", "7", "X-RateLimit-Reset", "12"),
			[]Quota{{Name: "ratelimit", Limit: 100, Remaining: 7, Reset: 12 * time.Second, ResetKnown: true}},
		},
		{
			"non-canonical header keys",
			http.Header{"ratelimit-remaining": {"2"}, "ratelimit-limit": {"50"}},
			[]Quota{{Name: "ratelimit", Limit: 50, Remaining: 2}},
		},
		{"limit without remaining is no quota", hdr("X-Rate-Limit", "700"), nil},
		{"negative remaining is no quota", hdr("X-Rate-Limit-Remaining", "-1"), nil},
		{
			"bad limit and reset are dropped alone",
			hdr("X-Rate-Limit-Remaining", "4", "X-Rate-Limit", "x", "RateLimit-Reset", "-3"),
			[]Quota{{Name: "ratelimit", Remaining: 4}},
		},
		{
			"a Unix time is not a reset delta",
			hdr("RateLimit-Remaining", "0", "RateLimit-Reset", "1772366400"),
			[]Quota{{Name: "ratelimit", Remaining: 0}},
		},
		{
			"endpoint quotas sorted, odd spacing and separators",
			hdr("Zendesk-RateLimit-Update-Tickets", "total=30,remaining=2 , resets=300",
				"Zendesk-RateLimit-Bogus", "total=30; nothing",
				"Zendesk-RateLimit-Alpha", " limit = 10 ; remaining = 9 ; reset = 5 "),
			[]Quota{
				{Name: "zendesk-ratelimit-alpha", Limit: 10, Remaining: 9, Reset: 5 * time.Second, ResetKnown: true},
				{Name: "zendesk-ratelimit-update-tickets", Limit: 30, Remaining: 2, Reset: 300 * time.Second, ResetKnown: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RateLimitQuotas(tt.h); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("RateLimitQuotas =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestRateLimitPause(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"no headers", hdr(), 0},
		{"plenty left", hdr("X-Rate-Limit", "700", "X-Rate-Limit-Remaining", "699"), 0},
		{"exactly 10% left is still fine", hdr("X-Rate-Limit", "700", "X-Rate-Limit-Remaining", "70", "RateLimit-Reset", "30"), 0},
		{
			"below 10%: spread the rest over the reset window",
			hdr("X-Rate-Limit", "700", "X-Rate-Limit-Remaining", "60", "RateLimit-Reset", "30"),
			500 * time.Millisecond,
		},
		{
			"below 10% without a reset: over a minute",
			hdr("X-Rate-Limit", "700", "X-Rate-Limit-Remaining", "40"),
			1500 * time.Millisecond,
		},
		{
			"one left",
			hdr("X-Rate-Limit", "700", "X-Rate-Limit-Remaining", "1", "RateLimit-Reset", "12"),
			12 * time.Second,
		},
		{
			"none left: wait for the reset",
			hdr("X-Rate-Limit", "700", "X-Rate-Limit-Remaining", "0", "RateLimit-Reset", "41"),
			41 * time.Second,
		},
		{"none left, no reset: a minute", hdr("X-Rate-Limit-Remaining", "0"), time.Minute},
		{"none left, resetting now", hdr("X-Rate-Limit-Remaining", "0", "RateLimit-Reset", "0"), 0},
		{"few left but no limit to compare with", hdr("X-Rate-Limit-Remaining", "3"), 0},
		{"remaining above limit", hdr("X-Rate-Limit", "10", "X-Rate-Limit-Remaining", "50"), 0},
		{
			"the tightest quota wins",
			hdr("X-Rate-Limit", "700", "X-Rate-Limit-Remaining", "650", "RateLimit-Reset", "40",
				"Zendesk-RateLimit-Update-Tickets", "total=30; remaining=2; resets=300"),
			150 * time.Second,
		},
		{
			"a reset a whole day away is the longest pause",
			hdr("Zendesk-RateLimit-X", "total=1000; remaining=0; resets=86400"),
			MaxRetryAfter,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RateLimitPause(tt.h); got != tt.want {
				t.Fatalf("RateLimitPause = %v, want %v", got, tt.want)
			}
		})
	}
}
