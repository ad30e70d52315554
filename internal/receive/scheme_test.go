package receive

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk/webhook"
)

const (
	ghSecret  = "It's a Secret to Everybody"
	newSecret = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ="
)

// Each scheme: a good delivery is printed and answered 200, a tampered one
// 401; deliveries signed with another scheme or secret are refused.
func TestHandlerSchemes(t *testing.T) {
	const prefix = "2025-11-14T09:22:47Z  "
	good := prefix + "✓ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  event=classification.completed row_id=row_90312\n"
	unverified := prefix + "? msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  event=classification.completed row_id=row_90312\n"
	rejected := func(reason string) string {
		return prefix + "✗ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  " + reason + "\n"
	}
	tampered := strings.Replace(record, "0.91", "0.99", 1)

	standard := signer(t, webhook.SchemeStandard, testSecret)
	rotating := signer(t, webhook.SchemeStandard, newSecret, testSecret)
	github := signer(t, webhook.SchemeGitHub, ghSecret)
	hubSHA1 := signer(t, webhook.SchemeHubSHA1, ghSecret)

	tests := []struct {
		name     string
		scheme   webhook.Scheme // the receiver's
		secret   string         // the receiver's, as the user types it
		sender   webhook.Signer
		d        delivery
		wantCode int
		wantOut  string
		stats    [3]int64
	}{
		{name: "standard good", scheme: webhook.SchemeStandard, secret: testSecret, sender: standard,
			d: delivery{body: record}, wantCode: 200, wantOut: good, stats: [3]int64{1, 1, 0}},
		{name: "standard tampered", scheme: webhook.SchemeStandard, secret: testSecret, sender: standard,
			d: delivery{body: tampered, signed: record}, wantCode: 401, wantOut: rejected("401 invalid signature"), stats: [3]int64{1, 0, 1}},
		{name: "zero scheme is standard", scheme: "", secret: testSecret, sender: standard,
			d: delivery{body: record}, wantCode: 200, wantOut: good, stats: [3]int64{1, 1, 0}},
		{name: "standard rotation, receiver holds the old secret", scheme: webhook.SchemeStandard, secret: testSecret, sender: rotating,
			d: delivery{body: record}, wantCode: 200, wantOut: good, stats: [3]int64{1, 1, 0}},
		{name: "standard rotation, receiver holds the new secret", scheme: webhook.SchemeStandard, secret: newSecret, sender: rotating,
			d: delivery{body: record}, wantCode: 200, wantOut: good, stats: [3]int64{1, 1, 0}},
		{name: "standard rotation tampered", scheme: webhook.SchemeStandard, secret: newSecret, sender: rotating,
			d: delivery{body: tampered, signed: record}, wantCode: 401, wantOut: rejected("401 invalid signature"), stats: [3]int64{1, 0, 1}},
		{name: "standard receiver, github delivery", scheme: webhook.SchemeStandard, secret: testSecret, sender: github,
			d: delivery{body: record}, wantCode: 401, wantOut: rejected("401 missing required headers: webhook-timestamp, webhook-signature"), stats: [3]int64{1, 0, 1}},

		{name: "github good", scheme: webhook.SchemeGitHub, secret: ghSecret, sender: github,
			d: delivery{body: record}, wantCode: 200, wantOut: good, stats: [3]int64{1, 1, 0}},
		{name: "github good, no timestamp to be stale", scheme: webhook.SchemeGitHub, secret: ghSecret, sender: github,
			d: delivery{body: record, ts: clock.Add(-24 * time.Hour)}, wantCode: 200, wantOut: good, stats: [3]int64{1, 1, 0}},
		{name: "github tampered", scheme: webhook.SchemeGitHub, secret: ghSecret, sender: github,
			d: delivery{body: tampered, signed: record}, wantCode: 401, wantOut: rejected("401 invalid signature"), stats: [3]int64{1, 0, 1}},
		{name: "github wrong secret", scheme: webhook.SchemeGitHub, secret: "It's a secret to everybody", sender: github,
			d: delivery{body: record}, wantCode: 401, wantOut: rejected("401 invalid signature"), stats: [3]int64{1, 0, 1}},
		{name: "github secret is raw, never base64-decoded", scheme: webhook.SchemeGitHub, secret: testSecret,
			sender: signer(t, webhook.SchemeGitHub, testSecret),
			d:      delivery{body: record}, wantCode: 200, wantOut: good, stats: [3]int64{1, 1, 0}},
		{name: "github receiver, standard delivery", scheme: webhook.SchemeGitHub, secret: ghSecret, sender: standard,
			d: delivery{body: record}, wantCode: 401, wantOut: rejected("401 missing required headers: X-Hub-Signature-256"), stats: [3]int64{1, 0, 1}},
		{name: "github receiver, hub-sha1 delivery", scheme: webhook.SchemeGitHub, secret: ghSecret, sender: hubSHA1,
			d: delivery{body: record}, wantCode: 401, wantOut: rejected("401 missing required headers: X-Hub-Signature-256"), stats: [3]int64{1, 0, 1}},
		{name: "github malformed header", scheme: webhook.SchemeGitHub, secret: ghSecret, sender: github,
			d: delivery{body: record, headers: func(h http.Header) {
				h.Set(webhook.HeaderHubSignature256, "sha256=abc")
			}}, wantCode: 401, wantOut: rejected("401 invalid signature: X-Hub-Signature-256 is not sha256=<64 hex digits>"), stats: [3]int64{1, 0, 1}},

		{name: "hub-sha1 good", scheme: webhook.SchemeHubSHA1, secret: ghSecret, sender: hubSHA1,
			d: delivery{body: record}, wantCode: 200, wantOut: good, stats: [3]int64{1, 1, 0}},
		{name: "hub-sha1 tampered", scheme: webhook.SchemeHubSHA1, secret: ghSecret, sender: hubSHA1,
			d: delivery{body: tampered, signed: record}, wantCode: 401, wantOut: rejected("401 invalid signature"), stats: [3]int64{1, 0, 1}},
		{name: "hub-sha1 receiver, github delivery", scheme: webhook.SchemeHubSHA1, secret: ghSecret, sender: github,
			d: delivery{body: record}, wantCode: 401, wantOut: rejected("401 missing required headers: X-Hub-Signature"), stats: [3]int64{1, 0, 1}},

		{name: "none accepts unsigned", scheme: webhook.SchemeNone, sender: signer(t, webhook.SchemeNone),
			d: delivery{body: record}, wantCode: 200, wantOut: unverified, stats: [3]int64{1, 0, 0}},
		{name: "none accepts a tampered body", scheme: webhook.SchemeNone, sender: standard,
			d: delivery{body: tampered, signed: record}, wantCode: 200, wantOut: unverified, stats: [3]int64{1, 0, 0}},
		{name: "github without a secret does not verify", scheme: webhook.SchemeGitHub, sender: signer(t, webhook.SchemeNone),
			d: delivery{body: record}, wantCode: 200, wantOut: unverified, stats: [3]int64{1, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var key webhook.Secret
			if tt.secret != "" {
				var err error
				if key, err = tt.scheme.ParseSecret(tt.secret); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			h := NewHandler(Options{Scheme: tt.scheme, Secret: key, Out: &out, Now: fixedNow})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, tt.d.request(t, tt.sender))

			if rec.Code != tt.wantCode {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tt.wantCode, rec.Body.String())
			}
			if out.String() != tt.wantOut {
				t.Errorf("Out:\n got %q\nwant %q", out.String(), tt.wantOut)
			}
			if r, v, j := h.Stats(); [3]int64{r, v, j} != tt.stats {
				t.Errorf("Stats() = %d, %d, %d, want %v", r, v, j, tt.stats)
			}
			all := out.String() + rec.Body.String()
			for _, leak := range []string{ghSecret, strings.TrimPrefix(testSecret, "whsec_"), strings.TrimPrefix(newSecret, "whsec_")} {
				if strings.Contains(all, leak) {
					t.Errorf("output %q contains a secret", all)
				}
			}
		})
	}
}

// A Scheme that is not known fails closed: nothing is accepted.
func TestHandlerUnknownScheme(t *testing.T) {
	for _, key := range []webhook.Secret{secret(t), {}} {
		var out bytes.Buffer
		h := NewHandler(Options{Scheme: "sha512", Secret: key, Out: &out, Now: fixedNow})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, delivery{body: record}.request(t, signer(t, webhook.SchemeStandard, testSecret)))
		if rec.Code != http.StatusInternalServerError {
			t.Errorf("status = %d, want 500", rec.Code)
		}
		want := "2025-11-14T09:22:47Z  ✗ msg_p5jXN8AQM9LWM0D4loKWxJek POST /hook  260 B  500 unknown signature scheme (want standard, github, hub-sha1 or none)\n"
		if out.String() != want {
			t.Errorf("Out:\n got %q\nwant %q", out.String(), want)
		}
		if r, v, j := h.Stats(); r != 1 || v != 0 || j != 1 {
			t.Errorf("Stats() = %d, %d, %d, want 1, 0, 1", r, v, j)
		}
	}
}

// Over a real connection, for every scheme, with the receiver configured the
// way the CLI will: ParseScheme on --signature, Scheme.ParseSecret on
// --secret.
func TestServeSchemes(t *testing.T) {
	tests := []struct {
		flagSignature, flagSecret string
	}{
		{"standard", testSecret},
		{"", testSecret},
		{"github", ghSecret},
		{"hub-sha1", ghSecret},
		{"none", ""},
	}
	for _, tt := range tests {
		t.Run(tt.flagSignature, func(t *testing.T) {
			scheme, err := webhook.ParseScheme(tt.flagSignature)
			if err != nil {
				t.Fatal(err)
			}
			opts := Options{Scheme: scheme, Out: &syncBuffer{}}
			if tt.flagSecret != "" {
				if opts.Secret, err = scheme.ParseSecret(tt.flagSecret); err != nil {
					t.Fatal(err)
				}
			}
			out := opts.Out.(*syncBuffer)
			srv := httptest.NewServer(NewHandler(opts))
			defer srv.Close()
			var secrets []string
			if tt.flagSecret != "" {
				secrets = []string{tt.flagSecret}
			}
			sign := signer(t, scheme, secrets...)

			for _, c := range []struct {
				sent string
				want int
			}{{record, http.StatusOK}, {strings.Replace(record, "High", "Low", 1), http.StatusUnauthorized}} {
				req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", strings.NewReader(c.sent))
				sign.Sign(req.Header, "row_90312", time.Now(), []byte(record))
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				want := c.want
				if scheme == webhook.SchemeNone {
					want = http.StatusOK
				}
				if resp.StatusCode != want {
					t.Errorf("sent %.20q…: status %d, want %d", c.sent, resp.StatusCode, want)
				}
			}
			mark := "✓"
			if scheme == webhook.SchemeNone {
				mark = "?"
			}
			if !strings.Contains(out.String(), mark+" row_90312 POST /hook  260 B  event=classification.completed row_id=row_90312\n") {
				t.Errorf("output %q lacks the verified delivery", out.String())
			}
		})
	}
}
