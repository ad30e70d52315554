package webhook_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/pipelinehq/pipeline/sdk/webhook"
)

// A receiver verifies each delivery before acting on it.
func ExampleVerify() {
	secret, err := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		log.Fatal(err)
	}

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(secret, r.Header, body); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Printf("verified %s: %s\n", r.Header.Get(webhook.HeaderID), body)
	})
	srv := httptest.NewServer(receiver)
	defer srv.Close()

	// The sender's side: sign the body and POST it.
	send := func(id string, ts time.Time, signed, sent []byte) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", bytes.NewReader(sent))
		webhook.SetHeaders(req.Header, secret, id, ts, signed)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Println(resp.Status)
	}
	body := []byte(`{"event":"classification.completed","row_id":"row_90312"}`)
	send("row_90312", time.Now(), body, body)
	send("row_90312", time.Now(), body, []byte(`{"event":"tampered"}`))

	// Verify's errors are sentinels.
	stale := webhook.Headers(secret, "row_90312", time.Now().Add(-time.Hour), body)
	err = webhook.Verify(secret, stale, body)
	fmt.Println(errors.Is(err, webhook.ErrTimestampTooOld))

	// Output:
	// verified row_90312: {"event":"classification.completed","row_id":"row_90312"}
	// 200 OK
	// 401 Unauthorized
	// true
}

func ExampleSecret_Sign() {
	secret, _ := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	fmt.Println(secret.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`)))
	fmt.Println(secret)
	// Output:
	// v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
	// whsec_(redacted)
}

// During a rotation the sender signs with the new and the old secret; a
// receiver holding either one accepts the delivery.
func ExampleNewSigner_rotation() {
	const (
		newSecret = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ="
		oldSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	)
	signer, err := webhook.NewSigner(webhook.SchemeStandard, newSecret, oldSecret)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(signer) // secrets are never printed

	sent := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)
	h := http.Header{}
	signer.Sign(h, "msg_p5jXN8AQM9LWM0D4loKWxJek", sent, body)
	fmt.Println(h.Get(webhook.HeaderSignature))

	clock := webhook.WithClock(func() time.Time { return sent.Add(time.Second) })
	for _, held := range []string{oldSecret, newSecret} {
		fmt.Println(webhook.VerifyScheme(webhook.SchemeStandard, held, h, body, clock))
	}
	// Output:
	// webhook.Signer(standard, 2 secrets)
	// v1,Q8JSj2xw94y7Lp2920eUtB115/qTmR/zLdm1t/wdzf8= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
	// <nil>
	// <nil>
}

// The github scheme signs the body with a plain-string secret, as GitHub does.
func ExampleNewSigner_github() {
	signer, err := webhook.NewSigner(webhook.SchemeGitHub, "It's a Secret to Everybody")
	if err != nil {
		log.Fatal(err)
	}
	h := http.Header{}
	signer.Sign(h, "row_90312", time.Now(), []byte("Hello, World!"))
	fmt.Println(h.Get(webhook.HeaderHubSignature256))
	fmt.Println(h.Get(webhook.HeaderID)) // for deduplication; not signed
	// Output:
	// sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17
	// row_90312
}

// The hub-sha1 scheme is the older X-Hub-Signature header.
func ExampleNewSigner_hubSHA1() {
	signer, err := webhook.NewSigner(webhook.SchemeHubSHA1, "It's a Secret to Everybody")
	if err != nil {
		log.Fatal(err)
	}
	h := http.Header{}
	signer.Sign(h, "row_90312", time.Now(), []byte("Hello, World!"))
	fmt.Println(h.Get(webhook.HeaderHubSignature))
	// Output:
	// sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59
}

// The none scheme only sets webhook-id.
func ExampleNewSigner_none() {
	signer, err := webhook.NewSigner(webhook.SchemeNone)
	if err != nil {
		log.Fatal(err)
	}
	h := http.Header{}
	signer.Sign(h, "row_90312", time.Now(), []byte("Hello, World!"))
	fmt.Println(h)
	// Output:
	// map[Webhook-Id:[row_90312]]
}

// A GitHub-style receiver: build the Verifier once, check every delivery.
func ExampleNewVerifier_github() {
	verifier, err := webhook.NewVerifier(webhook.SchemeGitHub, "It's a Secret to Everybody")
	if err != nil {
		log.Fatal(err)
	}
	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		if err := verifier.Verify(r.Header, body); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Printf("verified: %s\n", body)
	})
	srv := httptest.NewServer(receiver)
	defer srv.Close()

	for _, body := range []string{"Hello, World!", "Hello, World?"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader([]byte(body)))
		req.Header.Set("X-Hub-Signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		reason, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(strings.TrimSpace(resp.Status + " " + string(reason)))
	}
	// Output:
	// verified: Hello, World!
	// 200 OK
	// 401 Unauthorized webhook: invalid signature
}

// VerifyScheme checks one delivery against a scheme chosen by name, as a
// receiver configured with --signature and --secret would.
func ExampleVerifyScheme() {
	body := []byte("Hello, World!")
	deliveries := []struct {
		scheme, secret string
		h              http.Header
	}{
		{"hub-sha1", "It's a Secret to Everybody", http.Header{
			"X-Hub-Signature": {"sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"},
		}},
		{"hub-sha1", "another secret", http.Header{
			"X-Hub-Signature": {"sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"},
		}},
		{"github", "It's a Secret to Everybody", http.Header{
			"X-Hub-Signature": {"sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"},
		}},
		{"none", "", http.Header{}},
	}
	for _, d := range deliveries {
		scheme, err := webhook.ParseScheme(d.scheme)
		if err != nil {
			log.Fatal(err)
		}
		err = webhook.VerifyScheme(scheme, d.secret, d.h, body)
		fmt.Printf("%s: %v\n", scheme, err)
	}
	// Output:
	// hub-sha1: <nil>
	// hub-sha1: webhook: invalid signature
	// github: webhook: missing required headers: X-Hub-Signature-256
	// none: <nil>
}
