package webhook_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
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
