package sourcehttp

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// inbox is an sdk.Inbox in memory.
type inbox struct {
	mu     sync.Mutex
	stored int64
}

func (in *inbox) Append(_ context.Context, es []sdk.InboxEntry) ([]sdk.InboxAppended, int64, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]sdk.InboxAppended, len(es))
	for i, e := range es {
		out[i] = sdk.InboxAppended{First: in.stored + 1}
		in.stored += int64(e.Count)
	}
	return out, in.stored, nil
}
func (in *inbox) Read(context.Context, int64, int) ([]sdk.InboxStored, error) { return nil, nil }
func (in *inbox) Status(context.Context) (sdk.InboxStatus, error)             { return sdk.InboxStatus{}, nil }
func (in *inbox) ReportRequests(context.Context, map[int]int64) error         { return nil }

type nopEmitter struct{}

func (nopEmitter) Emit(rec arrow.RecordBatch, _ []byte) error { rec.Release(); return nil }
func (nopEmitter) EmitAt(rec arrow.RecordBatch, _ []byte, _ sdk.Origin) error {
	rec.Release()
	return nil
}
func (nopEmitter) Skipped(int) {}

// serve configures the source with token "t" and runs it on a free port.
func serve(t *testing.T, in *inbox) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Source{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "push", JSON: []byte(`{"listen":"` + addr + `","path":"/v1/records","token":"t"}`), Inbox: in}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Read(ctx, nil, nopEmitter{}) }()
	t.Cleanup(func() { cancel(); <-done; s.server.Close() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return "http://" + addr + "/v1/records"
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the source never answered /healthz")
		}
	}
}

// The token is checked before the body is read or decompressed: without
// it, a request is 401 whatever its body, encoding or type; with it, the
// same requests get the body's own refusals.
func TestTokenBeforeTheBody(t *testing.T) {
	in := &inbox{}
	url := serve(t, in)
	for _, c := range []struct {
		name            string
		ct, enc         string
		body            []byte
		status, noToken int
	}{
		{"not gzip", "application/json", "gzip", []byte("plain text, not gzip"), 400, 401},
		{"over max_body", "application/json", "", bytes.Repeat([]byte(" "), 11<<20), 413, 401},
		{"csv", "text/csv", "", []byte("a,b\n1,2\n"), 415, 401},
		{"brotli", "application/json", "br", []byte(`{}`), 415, 401},
		{"a record", "application/json", "", []byte(`{"a":1}`), 202, 401},
	} {
		for _, token := range []string{"", "Bearer wrong", "Bearer t"} {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(c.body))
			req.Header.Set("Content-Type", c.ct)
			if c.enc != "" {
				req.Header.Set("Content-Encoding", c.enc)
			}
			if token != "" {
				req.Header.Set("Authorization", token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := c.noToken
			if token == "Bearer t" {
				want = c.status
			}
			if resp.StatusCode != want || (want == 401 && !strings.Contains(string(b), "token")) {
				t.Errorf("%s, Authorization %q: %d %s, want %d", c.name, token, resp.StatusCode, b, want)
			}
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stored != 1 {
		t.Errorf("%d records stored, want 1", in.stored)
	}
}
