package policy

import (
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		v    string
		want time.Duration
		ok   bool
	}{
		{"seconds", "120", 2 * time.Minute, true},
		{"zero", "0", 0, true},
		{"leading zeros", "007", 7 * time.Second, true},
		{"surrounding space", "  5 ", 5 * time.Second, true},
		{"exactly the cap", "86400", MaxRetryAfter, true},
		{"over the cap", "86401", MaxRetryAfter, true},
		{"more digits than int64 holds", "99999999999999999999999", MaxRetryAfter, true},
		{"IMF-fixdate", "Sun, 01 Mar 2026 12:01:30 GMT", 90 * time.Second, true},
		{"RFC 850 date", "Sunday, 01-Mar-26 12:00:10 GMT", 10 * time.Second, true},
		{"ANSI C date", "Sun Mar  1 12:00:05 2026", 5 * time.Second, true},
		{"date now", "Sun, 01 Mar 2026 12:00:00 GMT", 0, true},
		{"date in the past", "Sun, 01 Mar 2026 11:00:00 GMT", 0, true},
		{"date beyond the cap", "Tue, 03 Mar 2026 12:00:00 GMT", MaxRetryAfter, true},
		{"empty", "", 0, false},
		{"blank", "   ", 0, false},
		{"negative", "-5", 0, false},
		{"plus sign", "+5", 0, false},
		{"fraction", "1.5", 0, false},
		{"unit", "5s", 0, false},
		{"garbage", "soon", 0, false},
		{"date without zone", "2026-03-01T12:01:00", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.v, now)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.v, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestWait(t *testing.T) {
	tests := []struct {
		name              string
		delay, retryAfter time.Duration
		want              time.Duration
	}{
		{"no header", 5 * time.Second, 0, 5 * time.Second},
		{"header longer than the policy", 5 * time.Second, time.Minute, time.Minute},
		{"header shorter than the policy", 5 * time.Minute, time.Second, 5 * time.Minute},
		{"header capped", 0, 48 * time.Hour, MaxRetryAfter},
		{"policy delay is not capped", 30 * time.Hour, time.Hour, 30 * time.Hour},
		{"negative header", time.Second, -time.Hour, time.Second},
		{"negative delay", -time.Second, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Wait(tt.delay, tt.retryAfter); got != tt.want {
				t.Fatalf("Wait(%v, %v) = %v, want %v", tt.delay, tt.retryAfter, got, tt.want)
			}
		})
	}
}
