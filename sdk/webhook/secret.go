// Package webhook signs and verifies webhook deliveries.
//
// It implements the Standard Webhooks scheme (https://www.standardwebhooks.com):
// a delivery carries three headers,
//
//	webhook-id:        a unique message id, stable across retries
//	webhook-timestamp: the send time in Unix seconds
//	webhook-signature: "v1,<base64 HMAC-SHA256 of id.timestamp.body>"
//
// and a receiver recomputes the HMAC with the shared secret and rejects
// deliveries whose timestamp is too far from its own clock (replay defence).
//
// The pipeline's webhook sink signs with [SetHeaders]; receivers, including
// `pipeline receive`, check with [Verify].
//
// Only the Standard Webhooks scheme exists today. [Secret] holds raw key
// bytes and the [Option]s are not specific to it, so other conventions
// (GitHub's X-Hub-Signature-256, the older X-Hub-Signature sha1) can be added
// beside it as their own Sign/Verify functions without changing this API.
package webhook

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
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
