package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The test vector published with the Standard Webhooks specification.
const (
	vecSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecTS     = 1614265330
	vecBody   = `{"test": 2432232314}`
	vecSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t *testing.T, s string) Secret {
	t.Helper()
	sec, err := ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret(%q): %v", s, err)
	}
	return sec
}

func at(sec int64) func() time.Time { return func() time.Time { return time.Unix(sec, 0) } }

func TestSignVector(t *testing.T) {
	tests := []struct {
		name   string
		secret string
	}{
		{"prefixed", vecSecret},
		{"bare base64", strings.TrimPrefix(vecSecret, SecretPrefix)},
		{"surrounding whitespace", "  " + vecSecret + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustSecret(t, tt.secret).Sign(vecID, time.Unix(vecTS, 0), []byte(vecBody))
			if got != vecSig {
				t.Fatalf("Sign = %q, want %q", got, vecSig)
			}
		})
	}
}

func TestParseSecret(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantKey []byte
		wantErr bool
	}{
		{"prefixed padded", "whsec_aGVsbG8=", []byte("hello"), false},
		{"prefixed unpadded", "whsec_aGVsbG8", []byte("hello"), false},
		{"bare padded", "aGVsbG8=", []byte("hello"), false},
		{"empty", "", nil, true},
		{"prefix only", "whsec_", nil, true},
		{"padding only", "whsec_==", nil, true},
		{"not base64", "whsec_not base64!", nil, true},
		{"url alphabet", "whsec_-_-_", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSecret(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseSecret(%q) = %v, want error", tt.in, s)
				}
				if !s.IsZero() {
					t.Errorf("ParseSecret(%q) returned a non-zero secret with its error", tt.in)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSecret(%q): %v", tt.in, err)
			}
			if string(s.key) != string(tt.wantKey) {
				t.Errorf("key = %q, want %q", s.key, tt.wantKey)
			}
		})
	}
}

func TestSecretRoundTripAndGenerate(t *testing.T) {
	s, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.key) != 32 {
		t.Fatalf("generated key has %d bytes, want 32", len(s.key))
	}
	enc := s.Encode()
	if !strings.HasPrefix(enc, SecretPrefix) {
		t.Fatalf("Encode() = %q, want prefix %q", enc, SecretPrefix)
	}
	back := mustSecret(t, enc)
	if string(back.key) != string(s.key) {
		t.Fatal("ParseSecret(Encode()) does not give the same key")
	}
	if got := mustSecret(t, vecSecret).Encode(); got != vecSecret {
		t.Errorf("Encode() = %q, want %q", got, vecSecret)
	}
	other, _ := GenerateSecret()
	if string(other.key) == string(s.key) {
		t.Error("two generated secrets are equal")
	}
	key := []byte("k")
	ns := NewSecret(key)
	key[0] = 'x'
	if string(ns.key) != "k" {
		t.Error("NewSecret does not copy its key")
	}
}

// The key must not come out through fmt, whatever the verb.
func TestSecretRedacted(t *testing.T) {
	s := mustSecret(t, vecSecret)
	bare := strings.TrimPrefix(vecSecret, SecretPrefix)
	holder := struct{ S Secret }{s}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		for _, arg := range []any{s, &s, holder} {
			out := fmt.Sprintf(format, arg)
			if strings.Contains(out, bare) || strings.Contains(out, fmt.Sprintf("%x", s.key)) {
				t.Errorf("Sprintf(%q, %T) = %q reveals the key", format, arg, out)
			}
		}
	}
}

func TestHeaders(t *testing.T) {
	s := mustSecret(t, vecSecret)
	h := Headers(s, vecID, time.Unix(vecTS, 0), []byte(vecBody))
	want := map[string]string{
		"Webhook-Id":        vecID,
		"Webhook-Timestamp": "1614265330",
		"Webhook-Signature": vecSig,
	}
	if len(h) != len(want) {
		t.Errorf("Headers has %d keys, want %d: %v", len(h), len(want), h)
	}
	for k, v := range want {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %q, want [%q]", k, got, v)
		}
	}

	// SetHeaders replaces earlier values and leaves other headers alone.
	h2 := http.Header{}
	h2.Set("Content-Type", "application/json")
	h2.Add(HeaderSignature, "v1,stale")
	SetHeaders(h2, s, vecID, time.Unix(vecTS, 0), []byte(vecBody))
	if got := h2.Values(HeaderSignature); len(got) != 1 || got[0] != vecSig {
		t.Errorf("after SetHeaders, signature = %q, want [%q]", got, vecSig)
	}
	if h2.Get("Content-Type") != "application/json" {
		t.Error("SetHeaders dropped an unrelated header")
	}
}

func TestVerify(t *testing.T) {
	secret := mustSecret(t, vecSecret)
	otherSecret := mustSecret(t, "whsec_"+"c2VjcmV0LXR3by1zZWNyZXQtdHdvLXNlY3JldC10d28=")
	good := func() http.Header { return Headers(secret, vecID, time.Unix(vecTS, 0), []byte(vecBody)) }
	with := func(mod func(h http.Header)) http.Header { h := good(); mod(h); return h }
	goodSig := vecSig
	wrongSig := otherSecret.Sign(vecID, time.Unix(vecTS, 0), []byte(vecBody))

	tests := []struct {
		name    string
		secret  *Secret // nil: the vector's secret
		h       http.Header
		body    string
		opts    []Option
		wantErr error
	}{
		{name: "valid", h: good()},
		{name: "valid at the old edge", h: good(), opts: []Option{WithClock(at(vecTS + 300))}},
		{name: "valid at the new edge", h: good(), opts: []Option{WithClock(at(vecTS - 300))}},
		{name: "lowercase header keys", h: http.Header{
			"webhook-id": {vecID}, "webhook-timestamp": {"1614265330"}, "webhook-signature": {vecSig},
		}},
		{name: "several signatures, last matches", h: with(func(h http.Header) {
			h.Set(HeaderSignature, wrongSig+" v1a,c29tZS1lZDI1NTE5 v2,abc "+goodSig)
		})},
		{name: "several signatures, first matches", h: with(func(h http.Header) {
			h.Set(HeaderSignature, goodSig+"  "+wrongSig)
		})},
		{name: "tampered body", h: good(), body: `{"test": 2432232315}`, wantErr: ErrInvalidSignature},
		{name: "different id", h: with(func(h http.Header) { h.Set(HeaderID, "msg_other") }), wantErr: ErrInvalidSignature},
		{name: "wrong secret", secret: &otherSecret, h: good(), wantErr: ErrInvalidSignature},
		{name: "zero secret", secret: &Secret{}, h: good(), wantErr: ErrInvalidSignature},
		{name: "only other versions", h: with(func(h http.Header) {
			h.Set(HeaderSignature, "v1a,"+strings.TrimPrefix(goodSig, "v1,"))
		}), wantErr: ErrInvalidSignature},
		{name: "signature not base64", h: with(func(h http.Header) { h.Set(HeaderSignature, "v1,@@@") }), wantErr: ErrInvalidSignature},
		{name: "signature without version", h: with(func(h http.Header) {
			h.Set(HeaderSignature, strings.TrimPrefix(goodSig, "v1,"))
		}), wantErr: ErrInvalidSignature},
		{name: "truncated signature", h: with(func(h http.Header) { h.Set(HeaderSignature, goodSig[:len(goodSig)-4]) }), wantErr: ErrInvalidSignature},
		{name: "missing id", h: with(func(h http.Header) { h.Del(HeaderID) }), wantErr: ErrMissingHeaders},
		{name: "missing timestamp", h: with(func(h http.Header) { h.Del(HeaderTimestamp) }), wantErr: ErrMissingHeaders},
		{name: "empty signature", h: with(func(h http.Header) { h.Set(HeaderSignature, " ") }), wantErr: ErrMissingHeaders},
		{name: "no headers", h: http.Header{}, wantErr: ErrMissingHeaders},
		{name: "nil headers", h: nil, wantErr: ErrMissingHeaders},
		{name: "timestamp not a number", h: with(func(h http.Header) { h.Set(HeaderTimestamp, "2021-02-25T15:02:10Z") }), wantErr: ErrInvalidTimestamp},
		{name: "timestamp in milliseconds", h: with(func(h http.Header) { h.Set(HeaderTimestamp, "1614265330000") }), wantErr: ErrTimestampTooNew},
		{name: "too old", h: good(), opts: []Option{WithClock(at(vecTS + 301))}, wantErr: ErrTimestampTooOld},
		{name: "too new", h: good(), opts: []Option{WithClock(at(vecTS - 301))}, wantErr: ErrTimestampTooNew},
		{name: "hugely negative timestamp", h: with(func(h http.Header) { h.Set(HeaderTimestamp, "-9223372036854775808") }), wantErr: ErrTimestampTooOld},
		{name: "hugely positive timestamp", h: with(func(h http.Header) { h.Set(HeaderTimestamp, "9223372036854775807") }), wantErr: ErrTimestampTooNew},
		{name: "wider tolerance accepts", h: good(), opts: []Option{WithClock(at(vecTS + 3600)), WithTolerance(2 * time.Hour)}},
		{name: "narrower tolerance rejects", h: good(), opts: []Option{WithClock(at(vecTS + 31)), WithTolerance(30 * time.Second)}, wantErr: ErrTimestampTooOld},
		{name: "zero tolerance keeps default", h: good(), opts: []Option{WithClock(at(vecTS + 301)), WithTolerance(0)}, wantErr: ErrTimestampTooOld},
		// The timestamp is checked before the signature.
		{name: "stale and tampered", h: good(), body: "x", opts: []Option{WithClock(at(vecTS + 1000))}, wantErr: ErrTimestampTooOld},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sec := secret
			if tt.secret != nil {
				sec = *tt.secret
			}
			body := vecBody
			if tt.body != "" {
				body = tt.body
			}
			opts := append([]Option{WithClock(at(vecTS))}, tt.opts...)
			err := Verify(sec, tt.h, []byte(body), opts...)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: %v, want %v", err, tt.wantErr)
			}
			// Neither the secret nor the signature the receiver expected
			// may appear in an error.
			msg := err.Error()
			for _, leak := range []string{
				strings.TrimPrefix(vecSecret, SecretPrefix),
				strings.TrimPrefix(goodSig, "v1,"),
			} {
				if strings.Contains(msg, leak) && !strings.Contains(tt.h.Get(HeaderSignature), leak) {
					t.Errorf("error %q leaks %q", msg, leak)
				}
			}
		})
	}
}

func TestVerifyDefaultsToNow(t *testing.T) {
	s := mustSecret(t, vecSecret)
	body := []byte(`{"event":"classification.completed"}`)
	if err := Verify(s, Headers(s, "msg_1", time.Now(), body), body); err != nil {
		t.Fatalf("fresh delivery: %v", err)
	}
	err := Verify(s, Headers(s, "msg_1", time.Now().Add(-DefaultTolerance-time.Minute), body), body)
	if !errors.Is(err, ErrTimestampTooOld) {
		t.Fatalf("six-minute-old delivery: %v, want ErrTimestampTooOld", err)
	}
	err = Verify(s, Headers(s, "msg_1", time.Now().Add(DefaultTolerance+time.Minute), body), body)
	if !errors.Is(err, ErrTimestampTooNew) {
		t.Fatalf("delivery six minutes ahead: %v, want ErrTimestampTooNew", err)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	s, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	bodies := []string{"", "{}", `{"text":"Jag vill säga upp mitt abonnemang"}`, strings.Repeat("x", 1<<16), "\x00\xff binary"}
	now := time.Date(2025, 11, 14, 9, 22, 47, 0, time.UTC)
	for i, b := range bodies {
		id := fmt.Sprintf("row_%d", i)
		h := Headers(s, id, now, []byte(b))
		if err := Verify(s, h, []byte(b), WithClock(func() time.Time { return now })); err != nil {
			t.Errorf("body %d: %v", i, err)
		}
		if err := Verify(s, h, []byte(b+" "), WithClock(func() time.Time { return now })); !errors.Is(err, ErrInvalidSignature) {
			t.Errorf("body %d with a byte appended: %v, want ErrInvalidSignature", i, err)
		}
	}
}
