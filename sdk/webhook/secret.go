// Package webhook signs and verifies webhook deliveries.
//
// Four signature schemes are supported, chosen by name ([ParseScheme]):
//
//   - "standard" (the default): Standard Webhooks v1, described below.
//     Secrets are written "whsec_<base64 of the key>".
//   - "github": X-Hub-Signature-256: "sha256=<hex HMAC-SHA256 of the body>",
//     as GitHub sends. The secret is a plain string; its bytes are the key.
//   - "hub-sha1": X-Hub-Signature: "sha1=<hex HMAC-SHA1 of the body>", the
//     older convention many labeling platforms use. Plain-string secret.
//   - "none": no signature.
//
// A Standard Webhooks (https://www.standardwebhooks.com) delivery carries
// three headers,
//
//	webhook-id:        a unique message id, stable across retries
//	webhook-timestamp: the send time in Unix seconds
//	webhook-signature: "v1,<base64 HMAC-SHA256 of id.timestamp.body>"
//
// and a receiver recomputes the HMAC with the shared secret and rejects
// deliveries whose timestamp is too far from its own clock (replay defence;
// [DefaultTolerance], or [WithTolerance]). During a rotation the sender signs
// with several secrets and webhook-signature holds one space-separated entry
// per secret; a receiver holding any one of them accepts the delivery.
//
// The github and hub-sha1 schemes sign the body only: they have no timestamp
// and so no replay defence. Every scheme's [Signer] also sets webhook-id, so
// receivers can deduplicate retries whatever the scheme.
//
// Senders build a [Signer] with [NewSigner]; receivers check with
// [NewVerifier] or [VerifyScheme]. The Standard-Webhooks-only functions
// [SetHeaders], [SignAll] and [Verify] remain for callers that need no
// choice of scheme. Signatures are always compared in constant time.
//
// A [Secret], [Signer] or [Verifier] never prints its key: fmt shows a
// redacted placeholder whatever the verb, and no error contains a secret or
// an expected signature.
package webhook

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// SecretPrefix is the conventional prefix of an encoded Standard Webhooks
// secret.
const SecretPrefix = "whsec_"

// Secret is a signing key. The zero Secret is empty: [Secret.IsZero] reports
// it, and [ParseSecret] never returns it.
//
// A Secret does not print its key: its String and GoString methods return a
// redacted placeholder, so it is safe to pass to fmt and loggers. Use
// [Secret.Encode] to get the "whsec_…" form on purpose.
type Secret struct {
	key []byte
}

// ParseSecret parses a Standard Webhooks secret: "whsec_" followed by the
// base64 of the key. The prefix is optional, so the bare base64 form is
// accepted too (as the reference libraries do). Both padded and unpadded
// standard base64 are accepted; surrounding whitespace is ignored. An empty
// key is an error.
//
// Errors never contain the secret or any part of it.
func ParseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, SecretPrefix)
	if s == "" {
		return Secret{}, errors.New("webhook: empty secret")
	}
	key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		// err would quote the offending byte offset only, but keep the
		// message fixed so nothing of the input can leak through it.
		return Secret{}, errors.New("webhook: secret is not valid base64 (expected whsec_<base64>)")
	}
	if len(key) == 0 {
		return Secret{}, errors.New("webhook: empty secret")
	}
	return Secret{key: key}, nil
}

// NewSecret returns a Secret holding a copy of key.
func NewSecret(key []byte) Secret {
	return Secret{key: append([]byte(nil), key...)}
}

// GenerateSecret returns a new random 32-byte secret.
func GenerateSecret() (Secret, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return Secret{}, err
	}
	return Secret{key: key}, nil
}

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// Encode returns the secret in its "whsec_<base64>" form. It is the only
// method that reveals the key.
func (s Secret) Encode() string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(s.key)
}

// String returns a redacted placeholder, never the key.
func (s Secret) String() string {
	if s.IsZero() {
		return "whsec_(empty)"
	}
	return "whsec_(redacted)"
}

// GoString returns a redacted placeholder, never the key, so %#v is safe too.
func (s Secret) GoString() string { return "webhook.Secret(" + s.String() + ")" }

// Format writes the redacted placeholder for every verb, so that no verb
// (%x and %d included) prints the key bytes.
func (s Secret) Format(f fmt.State, verb rune) { redactedFormat(f, verb, s.String(), s.GoString()) }

// redactedFormat implements fmt.Formatter for types holding secrets: %#v
// gives goString, every other verb str.
func redactedFormat(f fmt.State, verb rune, str, goString string) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, goString)
		return
	}
	_, _ = io.WriteString(f, str)
}
