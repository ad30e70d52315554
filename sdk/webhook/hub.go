package webhook

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"strings"
)

// hubScheme is the X-Hub-Signature family: one header whose value is
// "<alg>=<lowercase hex HMAC of the raw body>". GitHub's current header
// uses sha256; the older one, still common, sha1.
type hubScheme struct {
	header string
	alg    string
	hash   func() hash.Hash
	size   int // digest length in bytes
}

var (
	hubSHA256 = hubScheme{header: HeaderHubSignature256, alg: "sha256", hash: sha256.New, size: sha256.Size}
	hubSHA1   = hubScheme{header: HeaderHubSignature, alg: "sha1", hash: sha1.New, size: sha1.Size}
)

func (hs hubScheme) mac(secret Secret, body []byte) []byte {
	m := hmac.New(hs.hash, secret.key)
	m.Write(body)
	return m.Sum(nil)
}

// sign returns the header value, "<alg>=<lowercase hex>".
func (hs hubScheme) sign(secret Secret, body []byte) string {
	return hs.alg + "=" + hex.EncodeToString(hs.mac(secret, body))
}

// verify checks the scheme's header against every secret. The algorithm
// prefix is matched case-insensitively and the hex may be in either case,
// but the digest must have the algorithm's full length.
func (hs hubScheme) verify(secrets []Secret, h http.Header, body []byte) error {
	value := header(h, hs.header)
	if value == "" {
		return fmt.Errorf("%w: %s", ErrMissingHeaders, hs.header)
	}
	alg, hexSig, ok := strings.Cut(value, "=")
	var got []byte
	if ok && strings.EqualFold(alg, hs.alg) {
		got, _ = hex.DecodeString(hexSig)
	}
	if len(got) != hs.size {
		// The header is the sender's, not a secret, but it is not echoed:
		// the reason is enough.
		return fmt.Errorf("%w: %s is not %s=<%d hex digits>", ErrInvalidSignature, hs.header, hs.alg, 2*hs.size)
	}
	checked := false
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		checked = true
		if hmac.Equal(got, hs.mac(s, body)) {
			return nil
		}
	}
	if !checked {
		return fmt.Errorf("%w: no secret configured", ErrInvalidSignature)
	}
	return ErrInvalidSignature
}
