package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks header names. HTTP header names are case-insensitive;
// these are the spellings the specification uses.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultTolerance is how far a delivery's timestamp may be from the
// receiver's clock, in either direction, unless [WithTolerance] says
// otherwise.
const DefaultTolerance = 5 * time.Minute

// signatureVersion is the only signature version this package produces and
// checks. Entries of other versions (such as the asymmetric "v1a") in a
// webhook-signature header are ignored.
const signatureVersion = "v1"

// Errors returned by [Verify]. They are sentinels: test with errors.Is, as
// the returned error may wrap one with detail. No error ever contains the
// secret or an expected signature.
var (
	// ErrMissingHeaders: webhook-id, webhook-timestamp or webhook-signature
	// is absent or empty.
	ErrMissingHeaders = errors.New("webhook: missing required headers")
	// ErrInvalidTimestamp: webhook-timestamp is not a Unix time in seconds.
	ErrInvalidTimestamp = errors.New("webhook: invalid timestamp")
	// ErrTimestampTooOld: the timestamp is older than the tolerance allows.
	ErrTimestampTooOld = errors.New("webhook: timestamp too old")
	// ErrTimestampTooNew: the timestamp is further in the future than the
	// tolerance allows.
	ErrTimestampTooNew = errors.New("webhook: timestamp too new")
	// ErrInvalidSignature: no v1 signature in the header matches the body.
	ErrInvalidSignature = errors.New("webhook: invalid signature")
)

// Sign returns the Standard Webhooks signature of a delivery,
// "v1,<base64 HMAC-SHA256 of id.timestamp.body>", where timestamp is ts in
// Unix seconds.
func (s Secret) Sign(id string, ts time.Time, body []byte) string {
	sum := s.mac(id, strconv.FormatInt(ts.Unix(), 10), body)
	return signatureVersion + "," + base64.StdEncoding.EncodeToString(sum)
}

func (s Secret) mac(id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SignAll returns the webhook-signature value for a delivery signed with
// each of secrets: their "v1,<base64>" entries in order, separated by single
// spaces. This is how a sender rotates its secret: it signs with the new and
// the old one for a while, and a receiver holding either verifies (see
// [Verify]). Zero secrets are skipped; with none left the result is "".
func SignAll(secrets []Secret, id string, ts time.Time, body []byte) string {
	var b strings.Builder
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s.Sign(id, ts, body))
	}
	return b.String()
}

// Headers returns new headers carrying webhook-id, webhook-timestamp and
// webhook-signature for a delivery of body.
func Headers(secret Secret, id string, ts time.Time, body []byte) http.Header {
	h := make(http.Header, 3)
	SetHeaders(h, secret, id, ts, body)
	return h
}

// SetHeaders sets webhook-id, webhook-timestamp and webhook-signature on h
// for a delivery of body, replacing any values they had.
func SetHeaders(h http.Header, secret Secret, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, secret.Sign(id, ts, body))
}

// Option changes how [Verify] checks a delivery. Options concern the
// Standard Webhooks timestamp; the github and hub-sha1 schemes carry no
// timestamp and ignore them.
type Option func(*config)

type config struct {
	tolerance time.Duration
	now       func() time.Time
}

// WithTolerance sets how far the delivery's timestamp may be from now, in
// either direction. A tolerance of zero or less keeps [DefaultTolerance]:
// the timestamp check cannot be switched off by accident.
func WithTolerance(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.tolerance = d
		}
	}
}

// WithClock sets the clock the timestamp is compared against (time.Now by
// default). A nil clock keeps the default.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.now = now
		}
	}
}

// Verify checks a Standard Webhooks delivery: that h carries webhook-id,
// webhook-timestamp and webhook-signature, that the timestamp is within the
// tolerance of now, and that at least one of the space-separated "v1,…"
// entries of webhook-signature is the HMAC of id.timestamp.body under
// secret. Signatures are compared in constant time.
//
// It returns nil or an error that wraps one of ErrMissingHeaders,
// ErrInvalidTimestamp, ErrTimestampTooOld, ErrTimestampTooNew or
// ErrInvalidSignature. The timestamp is checked before the signature.
//
// A sender that rotates signs with several secrets at once ([SignAll]); any
// one matching entry is enough, so a receiver holding only the old or only
// the new secret accepts the delivery.
func Verify(secret Secret, h http.Header, body []byte, opts ...Option) error {
	return verifyStandard([]Secret{secret}, h, body, opts)
}

// verifyStandard is [Verify] for a receiver that holds several secrets (its
// own rotation): the delivery passes if any entry matches any secret.
func verifyStandard(secrets []Secret, h http.Header, body []byte, opts []Option) error {
	c := config{tolerance: DefaultTolerance, now: time.Now}
	for _, o := range opts {
		o(&c)
	}

	id := header(h, HeaderID)
	tsText := header(h, HeaderTimestamp)
	sigs := header(h, HeaderSignature)
	var missing []string
	for _, f := range []struct{ name, v string }{
		{HeaderID, id}, {HeaderTimestamp, tsText}, {HeaderSignature, sigs},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingHeaders, strings.Join(missing, ", "))
	}

	sec, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not Unix seconds", ErrInvalidTimestamp, truncate(tsText, 32))
	}
	now := c.now().Unix()
	tol := int64(c.tolerance / time.Second)
	if tol < 1 {
		tol = 1
	}
	// Compare in seconds, and so that no subtraction involves sec: it comes
	// from the sender and may be anything, including near math.MinInt64.
	switch {
	case sec < now-tol:
		return fmt.Errorf("%w: sent %s ago, tolerance %s", ErrTimestampTooOld, age(now, sec), c.tolerance)
	case sec > now+tol:
		return fmt.Errorf("%w: sent %s in the future, tolerance %s", ErrTimestampTooNew, age(sec, now), c.tolerance)
	}

	var wants [][]byte
	for _, secret := range secrets {
		if !secret.IsZero() {
			wants = append(wants, secret.mac(id, tsText, body))
		}
	}
	if len(wants) == 0 {
		// Nothing can match an empty key; say so without implying that the
		// sender is at fault.
		return fmt.Errorf("%w: no secret configured", ErrInvalidSignature)
	}
	found := false
	for _, entry := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != signatureVersion {
			continue
		}
		found = true
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		for _, want := range wants {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	if !found {
		return fmt.Errorf("%w: no %s signature in %s", ErrInvalidSignature, signatureVersion, HeaderSignature)
	}
	return ErrInvalidSignature
}

// header returns the first value of name in h. It also finds keys that were
// put into the map without canonicalisation (http.Header{"webhook-id": …}),
// which h.Get alone would miss.
func header(h http.Header, name string) string {
	if v := strings.TrimSpace(h.Get(name)); v != "" {
		return v
	}
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, name) {
			if v := strings.TrimSpace(vs[0]); v != "" {
				return v
			}
		}
	}
	return ""
}

// age formats later-earlier (Unix seconds, later > earlier) as a duration,
// saturating instead of overflowing for absurd timestamps.
func age(later, earlier int64) string {
	d := later - earlier
	if d < 0 || d > int64(1<<62)/int64(time.Second) {
		return "very far"
	}
	return (time.Duration(d) * time.Second).String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
