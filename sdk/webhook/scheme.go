package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Scheme names a signature scheme. The zero Scheme ("") means
// [SchemeStandard] wherever a Scheme is accepted.
type Scheme string

// The signature schemes.
const (
	// SchemeStandard is Standard Webhooks v1: webhook-id, webhook-timestamp
	// and webhook-signature; "whsec_<base64>" secrets; several secrets at
	// once for rotation. The default.
	SchemeStandard Scheme = "standard"
	// SchemeGitHub is GitHub's X-Hub-Signature-256: "sha256=<hex HMAC-SHA256
	// of the body>", keyed with the bytes of a plain-string secret.
	SchemeGitHub Scheme = "github"
	// SchemeHubSHA1 is the older X-Hub-Signature: "sha1=<hex HMAC-SHA1 of the
	// body>", keyed with the bytes of a plain-string secret.
	SchemeHubSHA1 Scheme = "hub-sha1"
	// SchemeNone signs nothing and verifies nothing.
	SchemeNone Scheme = "none"
)

// Header names of the github and hub-sha1 schemes, in canonical form.
const (
	HeaderHubSignature256 = "X-Hub-Signature-256"
	HeaderHubSignature    = "X-Hub-Signature"
)

// ErrUnknownScheme is returned (wrapped) for a scheme name that is not one of
// [Schemes].
var ErrUnknownScheme = errors.New("webhook: unknown signature scheme")

// Schemes returns the known schemes, the default first.
func Schemes() []Scheme {
	return []Scheme{SchemeStandard, SchemeGitHub, SchemeHubSHA1, SchemeNone}
}

// ParseScheme returns the scheme named s: "standard", "github", "hub-sha1"
// or "none", in any case and with surrounding whitespace ignored. The empty
// string is the default, [SchemeStandard]. Any other name is an error
// wrapping [ErrUnknownScheme]; the error does not repeat the name, in case a
// secret was passed where the scheme was meant.
func ParseScheme(s string) (Scheme, error) {
	name := Scheme(strings.ToLower(strings.TrimSpace(s)))
	if name == "" {
		return SchemeStandard, nil
	}
	for _, known := range Schemes() {
		if name == known {
			return known, nil
		}
	}
	return "", fmt.Errorf("%w (want standard, github, hub-sha1 or none)", ErrUnknownScheme)
}

// ParseSecret reads a secret as users of the scheme write it:
//
//   - standard: "whsec_<base64>", as the package-level [ParseSecret];
//   - github, hub-sha1: a plain string whose bytes, exactly as given (no
//     trimming, no decoding), are the HMAC key; empty is an error;
//   - none: no secret. The empty string gives the zero Secret; anything else
//     is an error, as a secret with "none" is almost certainly a mistake.
//
// Errors never contain the secret or any part of it.
func (s Scheme) ParseSecret(text string) (Secret, error) {
	sc, err := ParseScheme(string(s))
	if err != nil {
		return Secret{}, err
	}
	switch sc {
	case SchemeStandard:
		return ParseSecret(text)
	case SchemeNone:
		if strings.TrimSpace(text) != "" {
			return Secret{}, errors.New("webhook: signature scheme none takes no secret")
		}
		return Secret{}, nil
	default:
		if text == "" {
			return Secret{}, errors.New("webhook: empty secret")
		}
		return NewSecret([]byte(text)), nil
	}
}

// keyed reports whether the (canonical) scheme needs a secret.
func (s Scheme) keyed() bool { return s != SchemeNone }

// checkSecrets validates the secrets handed to a Signer or Verifier of the
// canonical scheme sc; role is "signer" or "verifier" for messages.
func checkSecrets(sc Scheme, secrets []Secret, role string) error {
	if !sc.keyed() {
		for _, s := range secrets {
			if !s.IsZero() {
				return errors.New("webhook: signature scheme none takes no secret")
			}
		}
		return nil
	}
	if len(secrets) == 0 {
		return fmt.Errorf("webhook: signature scheme %s needs a secret", sc)
	}
	for i, s := range secrets {
		if s.IsZero() {
			if len(secrets) == 1 {
				return errors.New("webhook: empty secret")
			}
			return fmt.Errorf("webhook: secret %d of %d is empty", i+1, len(secrets))
		}
	}
	if role == "signer" && sc != SchemeStandard && len(secrets) > 1 {
		return fmt.Errorf("webhook: signature scheme %s signs with one secret, got %d (rotating needs the standard scheme)", sc, len(secrets))
	}
	return nil
}

// parseAll parses secrets for the canonical scheme sc, numbering errors when
// there are several.
func parseAll(sc Scheme, texts []string) ([]Secret, error) {
	out := make([]Secret, 0, len(texts))
	for i, text := range texts {
		s, err := sc.ParseSecret(text)
		if err != nil {
			if len(texts) > 1 {
				return nil, fmt.Errorf("secret %d of %d: %w", i+1, len(texts), err)
			}
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// A Signer sets a scheme's signature headers on outgoing deliveries. Build
// one with [NewSigner] or [Scheme.Signer]; it is immutable and safe for
// concurrent use. The zero Signer behaves as the none scheme.
//
// A Signer does not print its secrets: fmt shows only the scheme and how many
// secrets it holds.
type Signer struct {
	scheme  Scheme // canonical; "" only in the zero Signer
	secrets []Secret
}

// NewSigner returns a Signer for scheme with secrets written as users of the
// scheme write them (see [Scheme.ParseSecret]):
//
//   - standard: one or more "whsec_…" secrets. With several (a rotation,
//     the new one first by convention) every delivery carries one
//     webhook-signature entry per secret, in the order given.
//   - github, hub-sha1: exactly one plain-string secret. These headers hold
//     a single signature, so they cannot carry a rotation.
//   - none: no secrets (empty strings are ignored).
//
// Errors never contain a secret.
func NewSigner(scheme Scheme, secrets ...string) (Signer, error) {
	sc, err := ParseScheme(string(scheme))
	if err != nil {
		return Signer{}, err
	}
	parsed, err := parseAll(sc, secrets)
	if err != nil {
		return Signer{}, err
	}
	return sc.Signer(parsed...)
}

// Signer returns a Signer for the scheme with already-parsed secrets. The
// rules on how many secrets each scheme takes are those of [NewSigner]; a
// zero Secret is an error for the keyed schemes.
func (s Scheme) Signer(secrets ...Secret) (Signer, error) {
	sc, err := ParseScheme(string(s))
	if err != nil {
		return Signer{}, err
	}
	if err := checkSecrets(sc, secrets, "signer"); err != nil {
		return Signer{}, err
	}
	if !sc.keyed() {
		return Signer{scheme: sc}, nil
	}
	return Signer{scheme: sc, secrets: append([]Secret(nil), secrets...)}, nil
}

// Scheme returns the signer's scheme; [SchemeNone] for the zero Signer.
func (s Signer) Scheme() Scheme {
	if s.scheme == "" {
		return SchemeNone
	}
	return s.scheme
}

// Sign sets the scheme's headers on h for a delivery of body, replacing any
// values they had and leaving other headers alone:
//
//   - standard: webhook-id, webhook-timestamp (ts in Unix seconds) and
//     webhook-signature, with one "v1,…" entry per secret (see [SignAll]);
//   - github: webhook-id and X-Hub-Signature-256;
//   - hub-sha1: webhook-id and X-Hub-Signature;
//   - none (and the zero Signer): webhook-id only.
//
// For every scheme but standard, ts is unused (those schemes have no
// timestamp) and webhook-id is set only when id is not empty; it is not
// signed there and serves receivers for deduplication only.
//
// body must be exactly the bytes sent.
func (s Signer) Sign(h http.Header, id string, ts time.Time, body []byte) {
	switch s.scheme {
	case SchemeStandard:
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
		h.Set(HeaderSignature, SignAll(s.secrets, id, ts, body))
		return
	case SchemeGitHub:
		h.Set(hubSHA256.header, hubSHA256.sign(s.secrets[0], body))
	case SchemeHubSHA1:
		h.Set(hubSHA1.header, hubSHA1.sign(s.secrets[0], body))
	}
	if id != "" {
		h.Set(HeaderID, id)
	}
}

// String describes the signer without revealing its secrets, e.g.
// "webhook.Signer(standard, 2 secrets)".
func (s Signer) String() string { return describe("Signer", s.Scheme(), len(s.secrets)) }

// GoString is String, so %#v is safe too.
func (s Signer) GoString() string { return s.String() }

// Format writes String for every verb, so that no verb prints the secrets.
func (s Signer) Format(f fmt.State, verb rune) { redactedFormat(f, verb, s.String(), s.GoString()) }

// A Verifier checks incoming deliveries against a scheme. Build one with
// [NewVerifier] or [Scheme.Verifier]; it is immutable and safe for concurrent
// use. The zero Verifier rejects every delivery with [ErrInvalidSignature]
// (it fails closed).
//
// A Verifier does not print its secrets: fmt shows only the scheme and how
// many secrets it holds.
type Verifier struct {
	scheme  Scheme // canonical; "" only in the zero Verifier
	secrets []Secret
}

// NewVerifier returns a Verifier for scheme with secrets written as users of
// the scheme write them (see [Scheme.ParseSecret]). Keyed schemes take one or
// more secrets and accept a delivery signed with any of them, so a receiver
// can rotate too: hold the new and the old secret until every sender has
// moved. The none scheme takes no secrets (empty strings are ignored) and
// accepts everything.
//
// Errors never contain a secret.
func NewVerifier(scheme Scheme, secrets ...string) (Verifier, error) {
	sc, err := ParseScheme(string(scheme))
	if err != nil {
		return Verifier{}, err
	}
	parsed, err := parseAll(sc, secrets)
	if err != nil {
		return Verifier{}, err
	}
	return sc.Verifier(parsed...)
}

// Verifier returns a Verifier for the scheme with already-parsed secrets, as
// [NewVerifier] does; a zero Secret is an error for the keyed schemes.
func (s Scheme) Verifier(secrets ...Secret) (Verifier, error) {
	sc, err := ParseScheme(string(s))
	if err != nil {
		return Verifier{}, err
	}
	if err := checkSecrets(sc, secrets, "verifier"); err != nil {
		return Verifier{}, err
	}
	if !sc.keyed() {
		return Verifier{scheme: sc}, nil
	}
	return Verifier{scheme: sc, secrets: append([]Secret(nil), secrets...)}, nil
}

// Scheme returns the verifier's scheme; "" for the zero Verifier.
func (v Verifier) Scheme() Scheme { return v.scheme }

// Verify checks a delivery of body with headers h:
//
//   - standard: as [Verify], with opts setting the timestamp tolerance
//     (default [DefaultTolerance]) and clock;
//   - github: X-Hub-Signature-256 must be "sha256=<hex>" (either case of
//     hex) and equal the HMAC-SHA256 of body under one of the secrets;
//   - hub-sha1: likewise X-Hub-Signature with "sha1=<hex>" and HMAC-SHA1;
//   - none: always nil.
//
// The github and hub-sha1 schemes have no timestamp and ignore opts. An
// error wraps [ErrMissingHeaders] when the scheme's signature header is
// absent, [ErrInvalidSignature] when it does not match, or (standard only)
// one of the timestamp errors. Comparisons are in constant time.
func (v Verifier) Verify(h http.Header, body []byte, opts ...Option) error {
	switch v.scheme {
	case SchemeStandard:
		return verifyStandard(v.secrets, h, body, opts)
	case SchemeGitHub:
		return hubSHA256.verify(v.secrets, h, body)
	case SchemeHubSHA1:
		return hubSHA1.verify(v.secrets, h, body)
	case SchemeNone:
		return nil
	}
	return fmt.Errorf("%w: no secret configured", ErrInvalidSignature)
}

// String describes the verifier without revealing its secrets, e.g.
// "webhook.Verifier(github, 1 secret)".
func (v Verifier) String() string { return describe("Verifier", v.scheme, len(v.secrets)) }

// GoString is String, so %#v is safe too.
func (v Verifier) GoString() string { return v.String() }

// Format writes String for every verb, so that no verb prints the secrets.
func (v Verifier) Format(f fmt.State, verb rune) { redactedFormat(f, verb, v.String(), v.GoString()) }

// VerifyScheme checks one delivery against scheme with one secret written as
// users of the scheme write it ("whsec_…" for standard, a plain string for
// github and hub-sha1, "" for none). It is [NewVerifier] followed by
// [Verifier.Verify]; a receiver that checks many deliveries can build the
// Verifier once instead. A bad scheme or secret is reported as such (not as
// ErrInvalidSignature), without the secret.
func VerifyScheme(scheme Scheme, secret string, h http.Header, body []byte, opts ...Option) error {
	v, err := NewVerifier(scheme, secret)
	if err != nil {
		return err
	}
	return v.Verify(h, body, opts...)
}

func describe(kind string, scheme Scheme, n int) string {
	if scheme == "" {
		scheme = "unset"
	}
	plural := "s"
	if n == 1 {
		plural = ""
	}
	return fmt.Sprintf("webhook.%s(%s, %d secret%s)", kind, scheme, n, plural)
}
