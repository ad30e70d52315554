package push

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// memInbox is an Inbox in memory whose Append takes a while, as an fsync does.
type memInbox struct {
	mu      sync.Mutex
	entries []sdk.InboxStored
	last    int64
	keys    map[string][]byte
	appends atomic.Int64
	delay   time.Duration
}

func (m *memInbox) Append(_ context.Context, es []sdk.InboxEntry) ([]sdk.InboxAppended, int64, error) {
	m.appends.Add(1)
	time.Sleep(m.delay)
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]sdk.InboxAppended, len(es))
	for i, e := range es {
		if e.Key != "" {
			if r, ok := m.keys[e.Key]; ok {
				out[i] = sdk.InboxAppended{Duplicate: true, Response: r}
				continue
			}
			m.keys[e.Key] = e.Response
		}
		out[i] = sdk.InboxAppended{First: m.last + 1}
		m.entries = append(m.entries, sdk.InboxStored{First: m.last + 1, Count: e.Count, Records: e.Records, Origin: e.Origin})
		m.last += int64(e.Count)
	}
	return out, m.last, nil
}
func (m *memInbox) Read(context.Context, int64, int) ([]sdk.InboxStored, error) { return nil, nil }
func (m *memInbox) Status(context.Context) (sdk.InboxStatus, error)             { return sdk.InboxStatus{}, nil }
func (m *memInbox) ReportRequests(context.Context, map[int]int64) error         { return nil }

func newTestServer(t *testing.T, in *memInbox, maxBody int64) (*Server, func()) {
	t.Helper()
	s := New(Options{Listen: "127.0.0.1:0", Path: "/r", MaxBody: maxBody, Source: "push"}, in, func(r *Request) (*Accepted, error) {
		recs, err := ParseRecords(r.Header.Get("Content-Type"), r.Body)
		if err != nil {
			return nil, err
		}
		return &Accepted{Records: recs, Key: r.Header.Get("Idempotency-Key"), KeyWindow: time.Hour}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.commits(ctx) }()
	return s, func() { cancel(); <-done }
}

func do(s *Server, body []byte, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/r", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-ndjson")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.handle(w, req)
	return w
}

// Concurrent requests share durable writes, and each is answered only
// after the write that holds its records.
func TestGroupCommit(t *testing.T) {
	in := &memInbox{keys: map[string][]byte{}, delay: 20 * time.Millisecond}
	s, stop := newTestServer(t, in, 0)
	defer stop()
	var wg sync.WaitGroup
	codes := make([]int, 32)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = do(s, []byte(`{"a":1}`+"\n"+`{"a":2}`), nil).Code
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusAccepted {
			t.Fatalf("request %d: %d", i, c)
		}
	}
	if n := in.appends.Load(); n >= 32 || in.last != 64 {
		t.Errorf("%d durable writes for 32 requests (%d records stored); want them grouped", n, in.last)
	}
}

func TestRefusals(t *testing.T) {
	in := &memInbox{keys: map[string][]byte{}}
	s, stop := newTestServer(t, in, 1000)
	defer stop()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"a":"` + strings.Repeat("x", 5000) + `"}`))
	zw.Close()
	if w := do(s, gz.Bytes(), map[string]string{"Content-Encoding": "gzip"}); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a gzip body over max_body once decompressed: %d %s", w.Code, w.Body)
	}
	if w := do(s, []byte(strings.Repeat(" ", 2000)), nil); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over max_body: %d", w.Code)
	}
	if w := do(s, []byte(`{}`), map[string]string{"Content-Encoding": "br"}); w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("brotli: %d", w.Code)
	}
	s.pending.Store(DefaultMaxPending)
	if w := do(s, []byte(`{"a":1}`), nil); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Errorf("over max_pending: %d %v", w.Code, w.Header())
	}
	s.pending.Store(0)
	s.closing.Store(true)
	if w := do(s, []byte(`{"a":1}`), nil); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("while shutting down: %d %v", w.Code, w.Header())
	}
	if in.last != 0 {
		t.Errorf("refused requests stored %d records", in.last)
	}
}

// A retry with the same Idempotency-Key is answered as the first was.
func TestIdempotencyKey(t *testing.T) {
	in := &memInbox{keys: map[string][]byte{}}
	s, stop := newTestServer(t, in, 0)
	defer stop()
	first := do(s, []byte(`{"a":1}`), map[string]string{"Idempotency-Key": "k"})
	again := do(s, []byte(`{"a":1}`), map[string]string{"Idempotency-Key": "k"})
	if first.Code != http.StatusAccepted || again.Code != http.StatusAccepted || first.Body.String() != again.Body.String() || in.last != 1 {
		t.Errorf("first %d %s, again %d %s, %d stored", first.Code, first.Body, again.Code, again.Body, in.last)
	}
	ids := RecordIDs("push", "k", [][]byte{[]byte(`{"a":1}`), []byte(`{"row_id":"r9"}`)})
	if ids[0] != sdk.IDPrefix("push", "k")+"0" || ids[1] != "r9" {
		t.Errorf("ids %v", ids)
	}
}

// With a certificate the server speaks HTTPS only, and Read stops when
// its context ends.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	in := &memInbox{keys: map[string][]byte{}}
	s := New(Options{Listen: addr, Path: "/r", CertFile: certFile, KeyFile: keyFile, Source: "push"}, in, func(r *Request) (*Accepted, error) {
		recs, err := ParseRecords(r.Header.Get("Content-Type"), r.Body)
		if err != nil {
			return nil, err
		}
		return &Accepted{Records: recs}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Read(ctx, nil, nopEmitter{}) }()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err = client.Post("https://"+addr+"/r", "application/json", strings.NewReader(`{"a":1}`)); err == nil {
			break
		}
	}
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("https: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp, err := http.Post("http://"+addr+"/r", "application/json", strings.NewReader(`{"a":1}`)); err == nil && resp.StatusCode == http.StatusAccepted {
		t.Error("plain http was accepted by a TLS listener")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Read: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Read did not return after its context ended")
	}
	if in.last != 1 {
		t.Errorf("%d records stored, want 1", in.last)
	}
}

type nopEmitter struct{}

func (nopEmitter) Emit(rec arrow.RecordBatch, _ []byte) error { rec.Release(); return nil }
func (nopEmitter) EmitAt(rec arrow.RecordBatch, _ []byte, _ sdk.Origin) error {
	rec.Release()
	return nil
}
func (nopEmitter) Skipped(int) {}

func writeSelfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}
