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
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
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

	"github.com/pipelinehq/pipeline/internal/testminio"
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
	// gate, when set, holds every Append until it is closed; entered
	// gets a value as each Append starts.
	gate    chan struct{}
	entered chan struct{}
}

func (m *memInbox) Append(_ context.Context, es []sdk.InboxEntry) ([]sdk.InboxAppended, int64, error) {
	m.appends.Add(1)
	if m.entered != nil {
		m.entered <- struct{}{}
	}
	if m.gate != nil {
		<-m.gate
	}
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

func newTestServer(t testing.TB, in *memInbox, maxBody int64) (*Server, func()) {
	t.Helper()
	s := New(Options{Listen: "127.0.0.1:0", Path: "/r", MaxBody: maxBody, Source: "push"}, in, func(r *Request) (*Accepted, error) {
		recs, err := ParseRecords(r.Header.Get("Content-Type"), r.Body)
		if err != nil {
			return nil, err
		}
		return &Accepted{Records: recs, Key: r.Header.Get("Idempotency-Key"), KeyWindow: time.Hour}, nil
	})
	s.closing = false // as a Read does
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
	s.stopAccepting()
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
	addr := freeAddr(t)
	in := &memInbox{keys: map[string][]byte{}}
	s := New(Options{Listen: addr, Path: "/r", CertFile: certFile, KeyFile: keyFile, Source: "push"}, in, func(r *Request) (*Accepted, error) {
		recs, err := ParseRecords(r.Header.Get("Content-Type"), r.Body)
		if err != nil {
			return nil, err
		}
		return &Accepted{Records: recs}, nil
	})
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Read(ctx, nil, nopEmitter{}) }()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	var resp *http.Response
	var err error
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

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testminio.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// startRead runs s.Read until the returned cancel is called, and waits
// until the server answers its health check; it returns the base URL and
// the channel Read's result comes on.
func startRead(t *testing.T, s *Server) (base string, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Read(ctx, nil, nopEmitter{}) }()
	t.Cleanup(func() { cancel(); s.Close() })
	base = "http://" + s.opts.Listen
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, cancel, errc
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never answered /healthz")
		}
	}
}

// Once Read's context ends the server keeps listening, answering 503 with
// Retry-After (and /healthz 503), while a request let in before is stored
// and answered 202; Read returns once it is, and the listener stays open
// until Close.
func TestShutdownAnswers503AndKeepsListening(t *testing.T) {
	in := &memInbox{keys: map[string][]byte{}, gate: make(chan struct{}), entered: make(chan struct{}, 8)}
	s := New(Options{Listen: freeAddr(t), Path: "/r", Source: "push"}, in, func(r *Request) (*Accepted, error) {
		recs, err := ParseRecords(r.Header.Get("Content-Type"), r.Body)
		if err != nil {
			return nil, err
		}
		return &Accepted{Records: recs}, nil
	})
	base, stop, done := startRead(t, s)
	first := make(chan int, 1)
	go func() {
		resp, err := http.Post(base+"/r", "application/json", strings.NewReader(`{"a":1}`))
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-in.entered // the first request is being stored
	stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("/healthz once Read's context ended: %v; want 503 from a listener still open", err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz still answers %d", resp.StatusCode)
		}
		time.Sleep(5 * time.Millisecond)
	}
	refused := func(when string) {
		t.Helper()
		resp, err := http.Post(base+"/r", "application/json", strings.NewReader(`{"a":2}`))
		if err != nil {
			t.Fatalf("%s: %v; want a 503", when, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: %d (Retry-After %q), want 503 with Retry-After", when, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	refused("while a request let in before is stored")
	select {
	case err := <-done:
		t.Fatalf("Read returned (%v) before the request it let in was answered", err)
	default:
	}
	close(in.gate)
	if code := <-first; code != http.StatusAccepted {
		t.Errorf("the request let in before the end: %d, want 202", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Read: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Read did not return once the requests it let in were answered")
	}
	refused("after Read returned")
	if in.last != 1 {
		t.Errorf("%d records stored, want the first request's 1", in.last)
	}
	s.Close()
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the server still answers after Close")
	}
}

// max_pending is checked when a request arrives: it is refused while
// max_pending or more records are pending (those being stored included),
// and a request larger than max_pending is admitted once the inbox is
// below the limit instead of being refused forever.
func TestMaxPending(t *testing.T) {
	records := func(n int) []byte {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, `{"i":%d}`+"\n", i)
		}
		return []byte(b.String())
	}
	in := &memInbox{keys: map[string][]byte{}}
	s, stop := newTestServer(t, in, 0)
	defer stop()
	s.opts.MaxPending = 10
	for _, c := range []struct {
		name    string
		pending int64 // before the request
		n       int
		want    int
	}{
		{"larger than max_pending, into an empty inbox", 0, 25, http.StatusAccepted},
		{"any request once over the limit", 25, 1, http.StatusTooManyRequests},
		{"below the limit: stored whole", 9, 5, http.StatusAccepted},
		{"at the limit", 10, 1, http.StatusTooManyRequests},
	} {
		s.pending.Store(c.pending)
		if w := do(s, records(c.n), nil); w.Code != c.want || (w.Code == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "") {
			t.Errorf("%s: %d %s (Retry-After %q), want %d", c.name, w.Code, w.Body, w.Header().Get("Retry-After"), c.want)
		}
	}
	if in.last != 30 {
		t.Errorf("%d records stored, want 30", in.last)
	}

}

// Requests being stored count against max_pending: while two requests of
// 8 records wait for their durable write, a third is refused.
func TestMaxPendingCountsRequestsBeingStored(t *testing.T) {
	records := func(n int) []byte { return bytes.Repeat([]byte(`{"a":1}`+"\n"), n) }
	in := &memInbox{keys: map[string][]byte{}, gate: make(chan struct{}), entered: make(chan struct{}, 8)}
	s, stop := newTestServer(t, in, 0)
	defer stop()
	s.opts.MaxPending = 10
	codes := make(chan int, 2)
	go func() { codes <- do(s, records(8), nil).Code }()
	<-in.entered // the first is in its durable write
	go func() { codes <- do(s, records(8), nil).Code }()
	for deadline := time.Now().Add(10 * time.Second); len(s.appends) < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second request never waited for the next durable write")
		}
	}
	third := make(chan int, 1)
	go func() { third <- do(s, records(1), nil).Code }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		select {
		case c := <-third:
			if c != http.StatusTooManyRequests {
				t.Errorf("with 16 records being stored (max_pending 10): %d, want 429", c)
			}
		default:
			if len(s.appends) < 2 {
				if time.Now().After(deadline) {
					t.Fatal("the third request was not answered")
				}
				continue
			}
			t.Error("with 16 records being stored (max_pending 10), a third request was let in")
		}
		break
	}
	close(in.gate)
	for i := 0; i < 2; i++ {
		if c := <-codes; c != http.StatusAccepted {
			t.Errorf("a request admitted below the limit: %d", c)
		}
	}
}

// CheckHeader refuses on the headers alone: a wrong token is 401 before
// the body is read or decompressed, whatever the body.
func TestCheckHeaderBeforeTheBody(t *testing.T) {
	in := &memInbox{keys: map[string][]byte{}}
	s, stop := newTestServer(t, in, 100)
	defer stop()
	s.opts.CheckHeader = func(h http.Header) error {
		if h.Get("Authorization") != "Bearer t" {
			return Errorf(http.StatusUnauthorized, "missing or wrong token")
		}
		return nil
	}
	for name, c := range map[string]struct {
		body   []byte
		header map[string]string
	}{
		"not gzip":       {[]byte("not gzip at all"), map[string]string{"Content-Encoding": "gzip"}},
		"over max_body":  {bytes.Repeat([]byte(" "), 500), nil},
		"unknown coding": {[]byte(`{}`), map[string]string{"Content-Encoding": "br"}},
	} {
		if w := do(s, c.body, c.header); w.Code != http.StatusUnauthorized {
			t.Errorf("%s, without the token: %d %s, want 401", name, w.Code, w.Body)
		}
	}
	if w := do(s, []byte(`{"a":1}`), map[string]string{"Authorization": "Bearer t"}); w.Code != http.StatusAccepted {
		t.Errorf("with the token: %d %s", w.Code, w.Body)
	}
}

// FuzzGzipBody: a gzip-encoded body is answered as its plain text would
// be (202 with its records, or the same 400/415), 413 exactly when it
// decompresses to more than max_body; bytes that are not gzip are a 400,
// never a panic or a 5xx.
func FuzzGzipBody(f *testing.F) {
	for _, s := range []string{`{"a":1}`, "{\"a\":1}\n{\"b\":[1,{}]}\n", `[{"a":1},{"a":2}]`, "{\"a\": }", "", strings.Repeat(`{"x":"yyyyyyyy"}`+"\n", 300)} {
		f.Add([]byte(s), true, "application/x-ndjson")
		f.Add([]byte(s), false, "application/json")
	}
	f.Add([]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"), false, "application/json") // a gzip header, then nothing
	const maxBody = 4096
	in := &memInbox{keys: map[string][]byte{}}
	s, stop := newTestServer(f, in, maxBody)
	defer stop()
	f.Fuzz(func(t *testing.T, data []byte, compress bool, ct string) {
		body := data
		if compress {
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			zw.Write(data)
			zw.Close()
			body = gz.Bytes()
		}
		if len(body) > maxBody {
			return // refused before decompression: TestRefusals
		}
		w := do(s, body, map[string]string{"Content-Encoding": "gzip", "Content-Type": ct})
		if w.Code >= 500 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		if !compress {
			if w.Code != http.StatusAccepted && w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge && w.Code != http.StatusUnsupportedMediaType {
				t.Fatalf("not gzip: %d %s", w.Code, w.Body)
			}
			return
		}
		if len(data) > maxBody {
			if w.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("%d bytes decompressed (max_body %d): %d %s, want 413", len(data), maxBody, w.Code, w.Body)
			}
			return
		}
		recs, err := ParseRecords(ct, data)
		if err != nil {
			var he *Error
			errors.As(err, &he)
			var answer struct {
				Error string `json:"error"`
			}
			json.Unmarshal(w.Body.Bytes(), &answer)
			if w.Code != he.Status || answer.Error != he.Msg {
				t.Fatalf("gzip'd: %d %s; plain: %v", w.Code, w.Body, err)
			}
			return
		}
		var got response
		if w.Code != http.StatusAccepted || json.Unmarshal(w.Body.Bytes(), &got) != nil || got.Accepted != len(recs) {
			t.Fatalf("gzip'd: %d %s; plain: %d records", w.Code, w.Body, len(recs))
		}
	})
}
