package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
)

var errBlocked = errors.New("dial 127.0.0.1:80: address is loopback; refused")

func TestClassify(t *testing.T) {
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name   string
		status int
		err    error
		want   Outcome
	}{
		{"200", 200, nil, Delivered},
		{"201", 201, nil, Delivered},
		{"204", 204, nil, Delivered},
		{"299", 299, nil, Delivered},
		{"2xx with an error in the body", 200, errors.New(`slack: "ok": false: internal_error`), RetryLater},
		{"network error", 0, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, RetryLater},
		{"timeout", 0, timeout, RetryLater},
		{"client deadline", 0, context.DeadlineExceeded, RetryLater},
		{"no response and no error", 0, nil, RetryLater},
		{"301 is not followed", 301, nil, RetryLater},
		{"302", 302, nil, RetryLater},
		{"304", 304, nil, RetryLater},
		{"307", 307, nil, RetryLater},
		{"308", 308, nil, RetryLater},
		{"400", 400, nil, Dead},
		{"401", 401, nil, Dead},
		{"403", 403, nil, Dead},
		{"404", 404, nil, Dead},
		{"405", 405, nil, Dead},
		{"408 Request Timeout", 408, nil, RetryLater},
		{"409", 409, nil, Dead},
		{"410 Gone", 410, nil, Gone},
		{"410 with an error", 410, errors.New("gone"), Gone},
		{"413", 413, nil, Dead},
		{"422", 422, nil, Dead},
		{"425 Too Early", 425, nil, RetryLater},
		{"429 Too Many Requests", 429, nil, RetryLater},
		{"451", 451, nil, Dead},
		{"499", 499, nil, Dead},
		{"500", 500, nil, RetryLater},
		{"501", 501, nil, RetryLater},
		{"502", 502, nil, RetryLater},
		{"503", 503, nil, RetryLater},
		{"504", 504, nil, RetryLater},
		{"599", 599, nil, RetryLater},
		{"1xx as a final status", 103, nil, RetryLater},
		{"nonsense status", 999, nil, RetryLater},
		{"permanent error without a response", 0, Permanent(errBlocked), Dead},
		{"permanent error wrapped again", 0, fmt.Errorf("POST https://x: %w", Permanent(errBlocked)), Dead},
		{"permanent error beats a 2xx", 200, Permanent(errors.New("bad payload")), Dead},
		{"permanent error beats a 503", 503, Permanent(errBlocked), Dead},
		{"permanent error beats a 410", 410, Permanent(errBlocked), Dead},
		{"permanent inside errors.Join", 0, errors.Join(errors.New("a"), Permanent(errBlocked)), Dead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.status, tt.err); got != tt.want {
				t.Fatalf("Classify(%d, %v) = %v, want %v", tt.status, tt.err, got, tt.want)
			}
		})
	}
}

func TestPermanent(t *testing.T) {
	if Permanent(nil) != nil {
		t.Fatal("Permanent(nil) is not nil")
	}
	p := Permanent(errBlocked)
	if p.Error() != errBlocked.Error() {
		t.Errorf("Error() = %q, want the wrapped error's %q", p.Error(), errBlocked.Error())
	}
	if !errors.Is(p, errBlocked) {
		t.Error("Permanent(err) does not unwrap to err")
	}
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errBlocked, false},
		{p, true},
		{fmt.Errorf("x: %w", p), true},
		{fmt.Errorf("x: %v", p), false}, // %v drops the chain
	}
	for _, tt := range tests {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestClassifySlack(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		ok       bool
		slackErr string
		err      error
		want     Outcome
	}{
		{"ok", 200, true, "", nil, Delivered},
		{"incoming webhook ok body", 200, true, "", nil, Delivered},
		{"channel_not_found", 200, false, "channel_not_found", nil, Dead},
		{"not_in_channel", 200, false, "not_in_channel", nil, Dead},
		{"invalid_auth", 200, false, "invalid_auth", nil, Dead},
		{"invalid_blocks", 200, false, "invalid_blocks", nil, Dead},
		{"unknown error string", 200, false, "something_new", nil, Dead},
		{"ok false without an error string", 200, false, "", nil, Dead},
		{"ratelimited", 200, false, "ratelimited", nil, RetryLater},
		{"internal_error", 200, false, "internal_error", nil, RetryLater},
		{"fatal_error", 200, false, "fatal_error", nil, RetryLater},
		{"service_unavailable", 200, false, "service_unavailable", nil, RetryLater},
		{"request_timeout", 200, false, "request_timeout", nil, RetryLater},
		{"429", 429, false, "", nil, RetryLater},
		{"webhook 400 invalid_payload", 400, false, "invalid_payload", nil, Dead},
		{"webhook 403 action_prohibited", 403, false, "action_prohibited", nil, Dead},
		{"webhook 404 channel_not_found", 404, false, "channel_not_found", nil, Dead},
		{"webhook 410 channel_is_archived", 410, false, "channel_is_archived", nil, Gone},
		{"webhook 500 rollup_error", 500, false, "rollup_error", nil, RetryLater},
		{"network error", 0, false, "", errors.New("connection reset"), RetryLater},
		{"undecodable 200 body", 200, false, "", errors.New("invalid character '<'"), RetryLater},
		{"permanent error", 0, false, "", Permanent(errBlocked), Dead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassifySlack(tt.status, tt.ok, tt.slackErr, tt.err); got != tt.want {
				t.Fatalf("ClassifySlack(%d, %v, %q, %v) = %v, want %v", tt.status, tt.ok, tt.slackErr, tt.err, got, tt.want)
			}
		})
	}
}

func TestOutcomeString(t *testing.T) {
	tests := []struct {
		o    Outcome
		want string
	}{{Delivered, "delivered"}, {RetryLater, "retry"}, {Dead, "dead"}, {Gone, "gone"}, {0, "Outcome(0)"}}
	for _, tt := range tests {
		if got := tt.o.String(); got != tt.want {
			t.Errorf("%d.String() = %q, want %q", int(tt.o), got, tt.want)
		}
	}
}
