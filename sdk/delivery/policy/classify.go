package policy

import (
	"errors"
	"fmt"
	"net/http"
)

// Outcome is what one attempt means for its delivery. The zero Outcome is
// not a valid outcome.
type Outcome int

const (
	// Delivered: the endpoint accepted the delivery; it is done.
	Delivered Outcome = iota + 1
	// RetryLater: a transient failure; try again after [Retry.Delay] (and
	// [Wait] for Retry-After) if attempts are left, else dead letter. (Not
	// named Retry: that is the retry policy type.)
	RetryLater
	// Dead: a failure retrying cannot fix; dead letter at once, whatever
	// attempts are left.
	Dead
	// Gone: the endpoint answered 410 Gone; disable the endpoint. The
	// delivery is not delivered (the caller decides whether it is dead or
	// kept for a replay once the endpoint is enabled again).
	Gone
)

// String returns "delivered", "retry", "dead" or "gone".
func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case RetryLater:
		return "retry"
	case Dead:
		return "dead"
	case Gone:
		return "gone"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Classify decides what an attempt's result means. status is the HTTP status
// code of the response, or 0 when there was none; err is the attempt's error,
// or nil. The rules, first match wins:
//
//  1. err marked with [Permanent] (anywhere in its chain): Dead.
//  2. status 0 (no response: network error, timeout, refused connection,
//     cancelled request): RetryLater, also with a nil err.
//  3. 2xx with a nil err: Delivered. 2xx with an err (the response said
//     failure in its body, e.g. Slack's "ok": false): RetryLater.
//  4. 410 Gone: Gone.
//  5. 408 Request Timeout, 425 Too Early, 429 Too Many Requests:
//     RetryLater.
//  6. Any other 4xx: Dead.
//  7. 3xx (redirects are never followed, so a redirect is a failure), 5xx,
//     and anything else (1xx, codes outside 100..599): RetryLater.
//
// From rule 4 on, a non-nil err only describes the failure; the status
// decides.
func Classify(status int, err error) Outcome {
	switch {
	case IsPermanent(err):
		return Dead
	case status == 0:
		return RetryLater
	case status >= 200 && status <= 299:
		if err != nil {
			return RetryLater
		}
		return Delivered
	case status == http.StatusGone:
		return Gone
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return RetryLater
	case status >= 400 && status <= 499:
		return Dead
	}
	return RetryLater
}

// Permanent marks err as one retrying cannot fix, so that [Classify] maps it
// to Dead: a destination refused by an SSRF guard, a URL that does not parse,
// a payload the sink cannot build. The result prints and unwraps as err
// itself. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or any error it wraps, was marked with
// [Permanent].
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// slackTransient are the Slack Web API error strings that say the failure is
// on Slack's side and may pass; every other error string (channel_not_found,
// not_in_channel, is_archived, invalid_auth, token_revoked, missing_scope,
// invalid_blocks, msg_too_long, ...) describes a request or a setup that will
// fail the same way again.
var slackTransient = map[string]bool{
	"ratelimited":         true,
	"rate_limited":        true,
	"internal_error":      true,
	"fatal_error":         true,
	"service_unavailable": true,
	"request_timeout":     true,
}

// ClassifySlack is [Classify] for a Slack call (chat.postMessage or an
// incoming webhook). ok is the response's "ok" field (true for an incoming
// webhook's 200 "ok" body) and slackError its "error" string.
//
// When err is non-nil or status is not 200, it is Classify(status, err): so
// an incoming webhook's 404 channel_not_found is Dead, 410
// channel_is_archived is Gone, 429 and 5xx are RetryLater. On a 200 with ok true
// the message is Delivered. On a 200 with ok false, the error strings Slack
// documents as transient (ratelimited, rate_limited, internal_error,
// fatal_error, service_unavailable, request_timeout) are RetryLater and every
// other one, or none, is Dead.
func ClassifySlack(status int, ok bool, slackError string, err error) Outcome {
	if err != nil || status != http.StatusOK {
		return Classify(status, err)
	}
	if ok {
		return Delivered
	}
	if slackTransient[slackError] {
		return RetryLater
	}
	return Dead
}
