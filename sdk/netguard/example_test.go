package netguard_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/pipelinehq/pipeline/sdk/netguard"
)

// A sink checks its URL when it is configured and sends through a client
// built on the guarded transport; a refused address is a permanent failure.
func Example() {
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer receiver.Close()

	// A real sink would build this from its options and call WithEnv.
	guard := netguard.Options{AllowPrivate: false, HTTPSOnly: false}
	if err := guard.CheckURL("http://10.0.0.7/hook"); err != nil {
		fmt.Println("configure:", errors.Is(err, netguard.ErrBlocked))
	}

	client := &http.Client{
		Transport:     guard.Transport(),
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// The receiver listens on 127.0.0.1: refused at dial time.
	_, err := client.Post(receiver.URL, "application/json", nil)
	var blocked *netguard.BlockedError
	if errors.As(err, &blocked) {
		fmt.Println("deliver:", blocked.Reason, "- permanent:", errors.Is(err, netguard.ErrBlocked))
	}
	// Output:
	// configure: true
	// deliver: loopback - permanent: true
}
