package webhook

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// GitHub's published example (docs: "Validating webhook deliveries").
const (
	ghSecret = "It's a Secret to Everybody"
	ghBody   = "Hello, World!"
	ghSig    = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	// The same secret and body under HMAC-SHA1, computed once with
	// `printf '%s' 'Hello, World!' | openssl dgst -sha1 -hmac "It's a Secret to Everybody"`.
	sha1Sig = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"
)

// Secrets for rotation tests (whsec_ of 32 arbitrary bytes each).
const (
	rotNew = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ="
	rotOld = vecSecret
	rotAlt = "whsec_c2VjcmV0LXR3by1zZWNyZXQtdHdvLXNlY3JldC10d28="
)

func TestParseScheme(t *testing.T) {
	tests := []struct {
		in   string
		want Scheme
		err  bool
	}{
		{"standard", SchemeStandard, false},
		{"", SchemeStandard, false},
		{"  ", SchemeStandard, false},
		{"github", SchemeGitHub, false},
		{" GitHub\n", SchemeGitHub, false},
		{"hub-sha1", SchemeHubSHA1, false},
		{"HUB-SHA1", SchemeHubSHA1, false},
		{"none", SchemeNone, false},
		{"sha256", "", true},
		{"hub_sha1", "", true},
		{"standard-webhooks", "", true},
		{vecSecret, "", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			got, err := ParseScheme(tt.in)
			if tt.err {
				if !errors.Is(err, ErrUnknownScheme) {
					t.Fatalf("ParseScheme(%q) = %q, %v; want ErrUnknownScheme", tt.in, got, err)
				}
				if strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
					t.Errorf("error %q repeats the input", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseScheme(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	if got := Schemes(); !slices.Equal(got, []Scheme{"standard", "github", "hub-sha1", "none"}) {
		t.Errorf("Schemes() = %q", got)
	}
}

func TestSchemeParseSecret(t *testing.T) {
	tests := []struct {
		name    string
		scheme  Scheme
		in      string
		wantKey string
		wantErr error // nil: any error when errText is set
		errText string
	}{
		{name: "standard decodes whsec_", scheme: SchemeStandard, in: "whsec_aGVsbG8=", wantKey: "hello"},
		{name: "zero scheme is standard", scheme: "", in: "whsec_aGVsbG8=", wantKey: "hello"},
		{name: "standard rejects plain text", scheme: SchemeStandard, in: ghSecret, errText: "not valid base64"},
		{name: "github takes the raw bytes", scheme: SchemeGitHub, in: ghSecret, wantKey: ghSecret},
		{name: "github does not decode whsec_", scheme: SchemeGitHub, in: "whsec_aGVsbG8=", wantKey: "whsec_aGVsbG8="},
		{name: "github keeps whitespace", scheme: SchemeGitHub, in: " s3cret\n", wantKey: " s3cret\n"},
		{name: "github rejects empty", scheme: SchemeGitHub, in: "", errText: "empty secret"},
		{name: "hub-sha1 takes the raw bytes", scheme: SchemeHubSHA1, in: "päss", wantKey: "päss"},
		{name: "hub-sha1 rejects empty", scheme: SchemeHubSHA1, in: "", errText: "empty secret"},
		{name: "none with no secret", scheme: SchemeNone, in: ""},
		{name: "none with a secret", scheme: SchemeNone, in: "hunter2", errText: "takes no secret"},
		{name: "unknown scheme", scheme: "sha512", in: "x", wantErr: ErrUnknownScheme},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.scheme.ParseSecret(tt.in)
			if tt.wantErr != nil || tt.errText != "" {
				if err == nil {
					t.Fatalf("ParseSecret(%q) = %v, want an error", tt.in, s)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("error %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errText) {
					t.Errorf("error %q, want it to contain %q", err, tt.errText)
				}
				if tt.in != "" && strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q contains the secret", err)
				}
				if !s.IsZero() {
					t.Error("a non-zero secret came with the error")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSecret: %v", err)
			}
			if string(s.key) != tt.wantKey {
				t.Errorf("key = %q, want %q", s.key, tt.wantKey)
			}
		})
	}
}

// hmacHex computes "<alg>=<hex>" straight from crypto/hmac, independently of
// the package's code.
func hmacHex(alg string, key, body string) string {
	newHash := sha256.New
	if alg == "sha1" {
		newHash = sha1.New
	}
	m := hmac.New(newHash, []byte(key))
	m.Write([]byte(body))
	return alg + "=" + hex.EncodeToString(m.Sum(nil))
}

func TestHubVectors(t *testing.T) {
	bodies := []string{ghBody, "", "{}", `{"event":"classification.completed","row_id":"row_90312"}`, "\x00\xff binary", strings.Repeat("x", 1<<16)}
	tests := []struct {
		scheme Scheme
		header string
		alg    string
		secret string
		fixed  string // the signature of ghBody, hard-coded
	}{
		{SchemeGitHub, "X-Hub-Signature-256", "sha256", ghSecret, ghSig},
		{SchemeHubSHA1, "X-Hub-Signature", "sha1", ghSecret, sha1Sig},
		{SchemeGitHub, "X-Hub-Signature-256", "sha256", "another secret", ""},
		{SchemeHubSHA1, "X-Hub-Signature", "sha1", "another secret", ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.scheme)+"/"+tt.secret, func(t *testing.T) {
			signer, err := NewSigner(tt.scheme, tt.secret)
			if err != nil {
				t.Fatal(err)
			}
			for i, body := range bodies {
				h := http.Header{}
				signer.Sign(h, "row_90312", time.Unix(vecTS, 0), []byte(body))
				got := h.Values(tt.header)
				want := hmacHex(tt.alg, tt.secret, body)
				if i == 0 && tt.fixed != "" && want != tt.fixed {
					t.Fatalf("test helper disagrees with the fixed vector: %s vs %s", want, tt.fixed)
				}
				if len(got) != 1 || got[0] != want {
					t.Errorf("body %d: %s = %q, want [%q]", i, tt.header, got, want)
				}
				if err := VerifyScheme(tt.scheme, tt.secret, h, []byte(body)); err != nil {
					t.Errorf("body %d: VerifyScheme: %v", i, err)
				}
				if err := VerifyScheme(tt.scheme, tt.secret, h, []byte(body+"!")); !errors.Is(err, ErrInvalidSignature) {
					t.Errorf("body %d tampered: %v, want ErrInvalidSignature", i, err)
				}
			}
		})
	}
}

func TestSignerHeaders(t *testing.T) {
	ts := time.Unix(vecTS, 0)
	tests := []struct {
		name    string
		scheme  Scheme
		secrets []string
		id      string
		want    map[string]string // exactly the headers Sign sets
	}{
		{"standard", SchemeStandard, []string{vecSecret}, vecID, map[string]string{
			"Webhook-Id": vecID, "Webhook-Timestamp": "1614265330", "Webhook-Signature": vecSig,
		}},
		{"zero scheme is standard", "", []string{vecSecret}, vecID, map[string]string{
			"Webhook-Id": vecID, "Webhook-Timestamp": "1614265330", "Webhook-Signature": vecSig,
		}},
		{"github", SchemeGitHub, []string{ghSecret}, vecID, map[string]string{
			"Webhook-Id": vecID, "X-Hub-Signature-256": hmacHex("sha256", ghSecret, vecBody),
		}},
		{"github without id", SchemeGitHub, []string{ghSecret}, "", map[string]string{
			"X-Hub-Signature-256": hmacHex("sha256", ghSecret, vecBody),
		}},
		{"hub-sha1", SchemeHubSHA1, []string{ghSecret}, vecID, map[string]string{
			"Webhook-Id": vecID, "X-Hub-Signature": hmacHex("sha1", ghSecret, vecBody),
		}},
		{"none", SchemeNone, nil, vecID, map[string]string{"Webhook-Id": vecID}},
		{"none ignores empty secrets", SchemeNone, []string{""}, vecID, map[string]string{"Webhook-Id": vecID}},
		{"none without id", SchemeNone, nil, "", map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer, err := NewSigner(tt.scheme, tt.secrets...)
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			signer.Sign(h, tt.id, ts, []byte(vecBody))
			if len(h) != len(tt.want) {
				t.Errorf("Sign set %d headers, want %d: %v", len(h), len(tt.want), h)
			}
			for k, v := range tt.want {
				if got := h.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("%s = %q, want [%q]", k, got, v)
				}
			}
			// Signing again replaces, never appends, and leaves other
			// headers alone.
			h.Set("Content-Type", "application/json")
			signer.Sign(h, tt.id, ts, []byte(vecBody))
			for k := range tt.want {
				if n := len(h.Values(k)); n != 1 {
					t.Errorf("after a second Sign, %s has %d values", k, n)
				}
			}
			if h.Get("Content-Type") != "application/json" {
				t.Error("Sign dropped an unrelated header")
			}
		})
	}

	// The zero Signer is the none scheme.
	var zero Signer
	h := http.Header{}
	zero.Sign(h, "row_1", ts, []byte(vecBody))
	if len(h) != 1 || h.Get(HeaderID) != "row_1" || zero.Scheme() != SchemeNone {
		t.Errorf("zero Signer set %v, scheme %q; want only webhook-id, scheme none", h, zero.Scheme())
	}
}

func TestRotation(t *testing.T) {
	ts := time.Unix(vecTS, 0)
	body := []byte(vecBody)
	newS, oldS := mustSecret(t, rotNew), mustSecret(t, rotOld)

	sig := SignAll([]Secret{newS, oldS}, vecID, ts, body)
	want := newS.Sign(vecID, ts, body) + " " + vecSig
	if sig != want {
		t.Fatalf("SignAll = %q, want %q", sig, want)
	}
	if got := SignAll([]Secret{{}, oldS, {}}, vecID, ts, body); got != vecSig {
		t.Errorf("SignAll skipping zero secrets = %q, want %q", got, vecSig)
	}
	if got := SignAll(nil, vecID, ts, body); got != "" {
		t.Errorf("SignAll(nil) = %q, want empty", got)
	}

	signer, err := NewSigner(SchemeStandard, rotNew, rotOld)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	signer.Sign(h, vecID, ts, body)
	if got := h.Get(HeaderSignature); got != want {
		t.Fatalf("Signer with two secrets: webhook-signature = %q, want %q", got, want)
	}

	tests := []struct {
		name    string
		held    []string // the receiver's secrets
		body    string
		wantErr error
	}{
		{name: "receiver holds only the new secret", held: []string{rotNew}},
		{name: "receiver holds only the old secret", held: []string{rotOld}},
		{name: "receiver holds both", held: []string{rotOld, rotNew}},
		{name: "receiver holds another and the old", held: []string{rotAlt, rotOld}},
		{name: "receiver holds neither", held: []string{rotAlt}, wantErr: ErrInvalidSignature},
		{name: "tampered body", held: []string{rotNew}, body: vecBody + " ", wantErr: ErrInvalidSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := vecBody
			if tt.body != "" {
				b = tt.body
			}
			v, err := NewVerifier(SchemeStandard, tt.held...)
			if err != nil {
				t.Fatal(err)
			}
			err = v.Verify(h, []byte(b), WithClock(at(vecTS)))
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Verifier.Verify: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verifier.Verify: %v, want %v", err, tt.wantErr)
			}
			// The single-secret API agrees when the receiver holds one.
			if len(tt.held) == 1 {
				err := Verify(mustSecret(t, tt.held[0]), h, []byte(b), WithClock(at(vecTS)))
				if (tt.wantErr == nil) != (err == nil) {
					t.Errorf("Verify: %v, Verifier.Verify disagrees", err)
				}
			}
		})
	}

	// A receiver holding two secrets accepts a delivery signed with either.
	v, err := NewVerifier(SchemeGitHub, "old-secret", "new-secret")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"old-secret", "new-secret"} {
		signer, _ := NewSigner(SchemeGitHub, s)
		h := http.Header{}
		signer.Sign(h, "", ts, body)
		if err := v.Verify(h, body); err != nil {
			t.Errorf("github verifier with both secrets, signed with %s: %v", s, err)
		}
	}
}

func TestNewSignerAndVerifierErrors(t *testing.T) {
	tests := []struct {
		name       string
		scheme     Scheme
		secrets    []string
		signerErr  string // "" means no error
		verifyErr  string
		wantScheme error
	}{
		{name: "unknown scheme", scheme: "sha3", secrets: []string{ghSecret}, signerErr: "unknown signature scheme", verifyErr: "unknown signature scheme", wantScheme: ErrUnknownScheme},
		{name: "standard needs a secret", scheme: SchemeStandard, signerErr: "needs a secret", verifyErr: "needs a secret"},
		{name: "github needs a secret", scheme: SchemeGitHub, signerErr: "needs a secret", verifyErr: "needs a secret"},
		{name: "github empty secret", scheme: SchemeGitHub, secrets: []string{""}, signerErr: "empty secret", verifyErr: "empty secret"},
		{name: "github signs with one secret", scheme: SchemeGitHub, secrets: []string{"a-secret", "b-secret"}, signerErr: "signs with one secret, got 2"},
		{name: "hub-sha1 signs with one secret", scheme: SchemeHubSHA1, secrets: []string{"a-secret", "b-secret"}, signerErr: "signs with one secret, got 2"},
		{name: "standard bad second secret", scheme: SchemeStandard, secrets: []string{vecSecret, "whsec_not base64!"}, signerErr: "secret 2 of 2: webhook: secret is not valid base64", verifyErr: "secret 2 of 2: webhook: secret is not valid base64"},
		{name: "standard plain-text secret", scheme: SchemeStandard, secrets: []string{ghSecret}, signerErr: "not valid base64", verifyErr: "not valid base64"},
		{name: "none with a secret", scheme: SchemeNone, secrets: []string{"hunter2"}, signerErr: "takes no secret", verifyErr: "takes no secret"},
		{name: "standard rotation", scheme: SchemeStandard, secrets: []string{rotNew, rotOld}},
		{name: "none", scheme: SchemeNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, serr := NewSigner(tt.scheme, tt.secrets...)
			_, verr := NewVerifier(tt.scheme, tt.secrets...)
			for _, c := range []struct {
				what string
				err  error
				want string
			}{{"NewSigner", serr, tt.signerErr}, {"NewVerifier", verr, tt.verifyErr}} {
				if c.want == "" {
					if c.err != nil {
						t.Errorf("%s: %v, want nil", c.what, c.err)
					}
					continue
				}
				if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
					t.Errorf("%s: %v, want an error containing %q", c.what, c.err, c.want)
					continue
				}
				if tt.wantScheme != nil && !errors.Is(c.err, tt.wantScheme) {
					t.Errorf("%s: %v, want %v", c.what, c.err, tt.wantScheme)
				}
				for _, s := range tt.secrets {
					if s != "" && strings.Contains(c.err.Error(), strings.TrimPrefix(s, SecretPrefix)) {
						t.Errorf("%s: error %q contains a secret", c.what, c.err)
					}
				}
			}
		})
	}

	// Scheme.Signer and Scheme.Verifier refuse zero secrets for keyed schemes.
	if _, err := SchemeGitHub.Signer(Secret{}); err == nil {
		t.Error("SchemeGitHub.Signer(zero) succeeded")
	}
	if _, err := SchemeStandard.Verifier(mustSecret(t, vecSecret), Secret{}); err == nil || !strings.Contains(err.Error(), "secret 2 of 2 is empty") {
		t.Errorf("SchemeStandard.Verifier(s, zero): %v", err)
	}
	if _, err := SchemeNone.Verifier(NewSecret([]byte("x"))); err == nil {
		t.Error("SchemeNone.Verifier(secret) succeeded")
	}
}

func TestVerifierHub(t *testing.T) {
	body := []byte(ghBody)
	hexOnly := strings.TrimPrefix(ghSig, "sha256=")
	sha1Hex := strings.TrimPrefix(sha1Sig, "sha1=")
	gh := func(v string) http.Header { return http.Header{"X-Hub-Signature-256": {v}} }
	s1 := func(v string) http.Header { return http.Header{"X-Hub-Signature": {v}} }
	tests := []struct {
		name    string
		scheme  Scheme
		secret  string
		h       http.Header
		body    string
		opts    []Option
		wantErr error
	}{
		{name: "github valid", scheme: SchemeGitHub, h: gh(ghSig)},
		{name: "github uppercase hex", scheme: SchemeGitHub, h: gh("sha256=" + strings.ToUpper(hexOnly))},
		{name: "github uppercase algorithm", scheme: SchemeGitHub, h: gh("SHA256=" + hexOnly)},
		{name: "github surrounding space", scheme: SchemeGitHub, h: gh(" " + ghSig + " ")},
		{name: "github lowercase header key", scheme: SchemeGitHub, h: http.Header{"x-hub-signature-256": {ghSig}}},
		{name: "github ignores timestamp options", scheme: SchemeGitHub, h: gh(ghSig), opts: []Option{WithClock(at(0)), WithTolerance(time.Second)}},
		{name: "github tampered body", scheme: SchemeGitHub, h: gh(ghSig), body: "Hello, World?", wantErr: ErrInvalidSignature},
		{name: "github wrong secret", scheme: SchemeGitHub, secret: "It's a secret to everybody", h: gh(ghSig), wantErr: ErrInvalidSignature},
		{name: "github missing header", scheme: SchemeGitHub, h: http.Header{}, wantErr: ErrMissingHeaders},
		{name: "github nil header", scheme: SchemeGitHub, h: nil, wantErr: ErrMissingHeaders},
		{name: "github given only the sha1 header", scheme: SchemeGitHub, h: s1(sha1Sig), wantErr: ErrMissingHeaders},
		{name: "github empty value", scheme: SchemeGitHub, h: gh(" "), wantErr: ErrMissingHeaders},
		{name: "github without prefix", scheme: SchemeGitHub, h: gh(hexOnly), wantErr: ErrInvalidSignature},
		{name: "github with sha1 prefix", scheme: SchemeGitHub, h: gh("sha1=" + hexOnly), wantErr: ErrInvalidSignature},
		{name: "github truncated", scheme: SchemeGitHub, h: gh(ghSig[:len(ghSig)-2]), wantErr: ErrInvalidSignature},
		{name: "github not hex", scheme: SchemeGitHub, h: gh("sha256=" + strings.Repeat("z", 64)), wantErr: ErrInvalidSignature},
		{name: "github sha1 digest", scheme: SchemeGitHub, h: gh("sha256=" + sha1Hex), wantErr: ErrInvalidSignature},
		{name: "hub-sha1 valid", scheme: SchemeHubSHA1, h: s1(sha1Sig)},
		{name: "hub-sha1 uppercase hex", scheme: SchemeHubSHA1, h: s1("sha1=" + strings.ToUpper(sha1Hex))},
		{name: "hub-sha1 tampered body", scheme: SchemeHubSHA1, h: s1(sha1Sig), body: "Hello, World", wantErr: ErrInvalidSignature},
		{name: "hub-sha1 wrong secret", scheme: SchemeHubSHA1, secret: "x", h: s1(sha1Sig), wantErr: ErrInvalidSignature},
		{name: "hub-sha1 given only the sha256 header", scheme: SchemeHubSHA1, h: gh(ghSig), wantErr: ErrMissingHeaders},
		{name: "hub-sha1 with sha256 digest", scheme: SchemeHubSHA1, h: s1("sha1=" + hexOnly), wantErr: ErrInvalidSignature},
		{name: "none accepts anything", scheme: SchemeNone, h: http.Header{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := ghSecret
			if tt.secret != "" {
				secret = tt.secret
			}
			if tt.scheme == SchemeNone {
				secret = ""
			}
			b := body
			if tt.body != "" {
				b = []byte(tt.body)
			}
			err := VerifyScheme(tt.scheme, secret, tt.h, b, tt.opts...)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("VerifyScheme: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifyScheme: %v, want %v", err, tt.wantErr)
			}
			msg := err.Error()
			for _, leak := range []string{secret, hexOnly, sha1Hex} {
				if strings.Contains(msg, leak) {
					t.Errorf("error %q leaks %q", msg, leak)
				}
			}
		})
	}
}

func TestVerifierStandard(t *testing.T) {
	v, err := NewVerifier(SchemeStandard, vecSecret)
	if err != nil {
		t.Fatal(err)
	}
	h := Headers(mustSecret(t, vecSecret), vecID, time.Unix(vecTS, 0), []byte(vecBody))
	tests := []struct {
		name    string
		opts    []Option
		body    string
		wantErr error
	}{
		{name: "valid", opts: []Option{WithClock(at(vecTS))}},
		{name: "default tolerance", opts: []Option{WithClock(at(vecTS + 301))}, wantErr: ErrTimestampTooOld},
		{name: "wider tolerance", opts: []Option{WithClock(at(vecTS + 301)), WithTolerance(10 * time.Minute)}},
		{name: "too new", opts: []Option{WithClock(at(vecTS - 301))}, wantErr: ErrTimestampTooNew},
		{name: "tampered", opts: []Option{WithClock(at(vecTS))}, body: "{}", wantErr: ErrInvalidSignature},
		{name: "default clock is now", wantErr: ErrTimestampTooOld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := vecBody
			if tt.body != "" {
				b = tt.body
			}
			err := v.Verify(h, []byte(b), tt.opts...)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: %v, want %v", err, tt.wantErr)
			}
			if err2 := VerifyScheme(SchemeStandard, vecSecret, h, []byte(b), tt.opts...); (err == nil) != (err2 == nil) {
				t.Errorf("VerifyScheme: %v, Verifier.Verify: %v", err2, err)
			}
		})
	}

	// The zero Verifier fails closed.
	var zero Verifier
	if err := zero.Verify(h, []byte(vecBody), WithClock(at(vecTS))); !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("zero Verifier: %v, want ErrInvalidSignature", err)
	}
}

// No fmt verb may print a key, whether it sits in a Secret, a Signer or a
// Verifier, directly or inside a struct.
func TestRedactionAllVerbs(t *testing.T) {
	std, _ := NewSigner(SchemeStandard, rotNew, rotOld)
	gh, _ := NewSigner(SchemeGitHub, ghSecret)
	vstd, _ := NewVerifier(SchemeStandard, rotNew, rotOld)
	vgh, _ := NewVerifier(SchemeHubSHA1, ghSecret)
	ghKey, _ := SchemeGitHub.ParseSecret(ghSecret)
	values := []any{std, &std, gh, vstd, &vstd, vgh, ghKey, &ghKey, mustSecret(t, rotNew),
		struct {
			S Signer
			V Verifier
			K Secret
		}{gh, vgh, ghKey},
	}
	var leaks []string
	for _, s := range []string{rotNew, rotOld} {
		key := mustSecret(t, s).key
		leaks = append(leaks, strings.TrimPrefix(s, SecretPrefix), hex.EncodeToString(key), fmt.Sprint([]int{int(key[0]), int(key[1]), int(key[2])})[1:8])
	}
	leaks = append(leaks, ghSecret, hex.EncodeToString([]byte(ghSecret)), "Secret to")
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%b", "%c", "%U", "%T %v"} {
		for _, v := range values {
			out := fmt.Sprintf(format, v)
			for _, leak := range leaks {
				if strings.Contains(out, leak) {
					t.Errorf("Sprintf(%q, %T) = %q reveals %q", format, v, out, leak)
				}
			}
		}
	}
	for _, c := range []struct {
		got, want string
	}{
		{std.String(), "webhook.Signer(standard, 2 secrets)"},
		{fmt.Sprintf("%#v", gh), "webhook.Signer(github, 1 secret)"},
		{fmt.Sprint(Signer{}), "webhook.Signer(none, 0 secrets)"},
		{fmt.Sprintf("%v", vgh), "webhook.Verifier(hub-sha1, 1 secret)"},
		{fmt.Sprint(Verifier{}), "webhook.Verifier(unset, 0 secrets)"},
		{fmt.Sprintf("%d", ghKey), "whsec_(redacted)"},
		{fmt.Sprintf("%#v", ghKey), "webhook.Secret(whsec_(redacted))"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
