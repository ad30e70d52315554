package netguard

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// unsetEnv removes key for the rest of the test; t.Setenv restores it.
func unsetEnv(t *testing.T, key string) {
	t.Helper()
	t.Setenv(key, "")
	if err := os.Unsetenv(key); err != nil {
		t.Fatal(err)
	}
}

// TestControl calls the dial hook directly, as net.Dialer would with the
// address of each socket, so no connection is made to any of these.
func TestControl(t *testing.T) {
	tests := []struct {
		network, address string
		reason           string // "" = allowed; else prefix of Reason
	}{
		{"tcp4", "8.8.8.8:443", ""},
		{"tcp6", "[2001:4860::8888]:443", ""},
		{"tcp4", "127.0.0.1:80", "loopback"},
		{"tcp6", "[::1]:80", "loopback"},
		{"tcp6", "[::ffff:127.0.0.1]:80", "loopback"},
		{"tcp4", "10.1.2.3:8080", "private network (RFC 1918)"},
		{"tcp4", "169.254.169.254:80", "cloud metadata endpoint"},
		{"tcp6", "[fe80::1%eth0]:80", "link-local"},
		{"tcp6", "[fd00:ec2::254]:80", "cloud metadata endpoint"},
		{"udp4", "192.168.0.1:53", "private network (RFC 1918)"},
		// Anything the hook cannot read is refused: fail closed.
		{"unix", "/run/docker.sock", "cannot check"},
		{"tcp", "not-an-ip:80", "cannot check"},
	}
	for _, tt := range tests {
		t.Run(tt.address, func(t *testing.T) {
			d := Options{}.Dialer(time.Second)
			if d.Control == nil {
				t.Fatal("Dialer has no Control hook")
			}
			err := d.Control(tt.network, tt.address, nil)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Control(%s, %s) = %v, want nil", tt.network, tt.address, err)
				}
				return
			}
			var be *BlockedError
			if !errors.As(err, &be) || !errors.Is(err, ErrBlocked) {
				t.Fatalf("Control(%s, %s) = %v, want a *BlockedError", tt.network, tt.address, err)
			}
			if !strings.HasPrefix(be.Reason, tt.reason) {
				t.Errorf("Reason = %q, want prefix %q", be.Reason, tt.reason)
			}
		})
	}
	if d := (Options{AllowPrivate: true}).Dialer(time.Second); d.Control != nil || d.ControlContext != nil {
		t.Error("with AllowPrivate the dialer should have no hook")
	}
	if d := (Options{}).Dialer(3 * time.Second); d.Timeout != 3*time.Second {
		t.Errorf("Dialer timeout = %v, want 3s", d.Timeout)
	}
}

// countingServer is an httptest server on 127.0.0.1 that counts requests.
func countingServer(t *testing.T, tls bool, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, "ok")
	})
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(handler)
	} else {
		srv = httptest.NewServer(handler)
	}
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestTransportLoopback(t *testing.T) {
	srv, hits := countingServer(t, false, nil)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	localhostURL := "http://" + net.JoinHostPort("localhost", strconv.Itoa(port)) + "/hook"

	tests := []struct {
		name    string
		opts    Options
		url     string
		blocked bool
	}{
		{"literal loopback refused by default", Options{}, srv.URL + "/hook", true},
		{"localhost resolves to loopback and is refused at dial time", Options{}, localhostURL, true},
		{"literal loopback allowed with AllowPrivate", Options{AllowPrivate: true}, srv.URL + "/hook", false},
		{"localhost allowed with AllowPrivate", Options{AllowPrivate: true}, localhostURL, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hits.Load()
			client := &http.Client{Transport: tt.opts.Transport(), Timeout: 5 * time.Second}
			resp, err := client.Post(tt.url, "application/json", strings.NewReader(`{"a":1}`))
			if !tt.blocked {
				if err != nil {
					t.Fatalf("POST: %v", err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK || string(body) != "ok" {
					t.Fatalf("got %d %q, want 200 \"ok\"", resp.StatusCode, body)
				}
				if got := hits.Load() - before; got != 1 {
					t.Errorf("server saw %d requests, want 1", got)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatalf("POST succeeded with status %d, want refusal", resp.StatusCode)
			}
			if !errors.Is(err, ErrBlocked) {
				t.Fatalf("errors.Is(%v, ErrBlocked) = false", err)
			}
			// The refusal comes through net/http's own wrapping.
			var ue *url.Error
			var oe *net.OpError
			var be *BlockedError
			if !errors.As(err, &ue) || !errors.As(err, &oe) || !errors.As(err, &be) {
				t.Fatalf("error chain %v: want *url.Error > *net.OpError > *BlockedError", err)
			}
			if be.Reason != "loopback" {
				t.Errorf("Reason = %q, want loopback", be.Reason)
			}
			if !be.Addr.IsLoopback() {
				t.Errorf("Addr = %v, want a loopback address", be.Addr)
			}
			if !strings.Contains(err.Error(), "allow_private_networks = true") {
				t.Errorf("error %q does not say how to opt in", err)
			}
			if got := hits.Load() - before; got != 0 {
				t.Errorf("server saw %d requests, want 0", got)
			}
		})
	}
}

func TestDialerLocalhost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	for _, addr := range []string{"localhost:" + port, "127.0.0.1:" + port, "[::ffff:127.0.0.1]:" + port} {
		t.Run(addr, func(t *testing.T) {
			c, err := Options{}.Dialer(2*time.Second).DialContext(context.Background(), "tcp", addr)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded, want refusal")
			}
			if !errors.Is(err, ErrBlocked) {
				t.Fatalf("errors.Is(%v, ErrBlocked) = false", err)
			}
		})
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("listener accepted %d connections, want 0", n)
	}
	c, err := Options{AllowPrivate: true}.Dialer(2*time.Second).DialContext(context.Background(), "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("with AllowPrivate: %v", err)
	}
	c.Close()
}

// fakeDNS answers every A query with addrs and every other query with no
// records. It listens on 127.0.0.1 and is reached only through the resolver
// it returns, so no real DNS is involved.
func fakeDNS(t *testing.T, addrs ...netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:n], addrs); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	server := pc.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp4", server)
		},
	}
}

// dnsAnswer builds the response to one DNS query (RFC 1035 wire format).
func dnsAnswer(q []byte, addrs []netip.Addr) []byte {
	if len(q) < 12 {
		return nil
	}
	i := 12
	for i < len(q) && q[i] != 0 {
		i += int(q[i]) + 1
	}
	end := i + 1 + 4 // root label, QTYPE, QCLASS
	if end > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	var answers [][4]byte
	if qtype == 1 { // A
		for _, a := range addrs {
			answers = append(answers, a.As4())
		}
	}
	resp := make([]byte, 12, 512)
	copy(resp, q[:2])                                          // ID
	binary.BigEndian.PutUint16(resp[2:], 0x8580)               // response, authoritative, RD, RA
	binary.BigEndian.PutUint16(resp[4:], 1)                    // QDCOUNT
	binary.BigEndian.PutUint16(resp[6:], uint16(len(answers))) // ANCOUNT
	resp = append(resp, q[12:end]...)
	for _, a := range answers {
		resp = append(resp, 0xc0, 12)                 // name: pointer to the question
		resp = binary.BigEndian.AppendUint16(resp, 1) // TYPE A
		resp = binary.BigEndian.AppendUint16(resp, 1) // CLASS IN
		resp = binary.BigEndian.AppendUint32(resp, 0) // TTL
		resp = binary.BigEndian.AppendUint16(resp, 4) // RDLENGTH
		resp = append(resp, a[:]...)
	}
	return resp
}

// recordControl wraps d's Control hook to record every address it is asked
// about, with decide (when non-nil) overriding the real policy.
func recordControl(d *net.Dialer, decide func(address string, policy error) error) *[]string {
	var (
		mu   sync.Mutex
		seen []string
	)
	check := d.Control
	d.Control = func(network, address string, c syscall.RawConn) error {
		mu.Lock()
		seen = append(seen, address)
		mu.Unlock()
		err := check(network, address, c)
		if decide != nil {
			return decide(address, err)
		}
		return err
	}
	return &seen
}

// A name whose records all point inside the network passes CheckURL (names
// are not resolved there) and is refused at dial time, each record checked.
func TestDialChecksEveryResolvedAddress(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	const name = "rebind.netguard.test"

	o := Options{}
	if err := o.CheckURL("https://" + name + ":" + port + "/hook"); err != nil {
		t.Fatalf("CheckURL: %v", err)
	}

	d := o.Dialer(2 * time.Second)
	d.Resolver = fakeDNS(t, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	seen := recordControl(d, nil)
	c, err := d.DialContext(context.Background(), "tcp4", name+":"+port)
	if err == nil {
		c.Close()
		t.Fatal("dial succeeded, want refusal")
	}
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("errors.Is(%v, ErrBlocked) = false", err)
	}
	want := []string{"127.0.0.1:" + port, "127.0.0.2:" + port}
	if strings.Join(*seen, ",") != strings.Join(want, ",") {
		t.Errorf("Control saw %v, want %v", *seen, want)
	}

	// The same through an HTTP client whose transport uses this resolver.
	tr := o.Transport()
	d2 := o.Dialer(2 * time.Second)
	d2.Resolver = d.Resolver
	tr.DialContext = d2.DialContext
	_, err = (&http.Client{Transport: tr}).Get("http://" + name + ":" + port + "/")
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("GET: %v, want ErrBlocked", err)
	}
}

// When one record is refused, the dialer goes on to the next; the refused
// address is never connected to. Here a stand-in policy allows only
// 127.0.0.2, so the test needs no address outside loopback.
func TestDialSkipsRefusedRecord(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	d := Options{}.Dialer(2 * time.Second)
	d.Resolver = fakeDNS(t, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	seen := recordControl(d, func(address string, policy error) error {
		if strings.HasPrefix(address, "127.0.0.2:") {
			return nil
		}
		return policy
	})
	c, err := d.DialContext(context.Background(), "tcp4", "multi.netguard.test:"+port)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != "127.0.0.2:"+port {
		t.Errorf("connected to %s, want 127.0.0.2:%s", got, port)
	}
	want := []string{"127.0.0.1:" + port, "127.0.0.2:" + port}
	if strings.Join(*seen, ",") != strings.Join(want, ",") {
		t.Errorf("Control saw %v, want %v", *seen, want)
	}
}

func TestTransportHTTPSOnly(t *testing.T) {
	plain, plainHits := countingServer(t, false, nil)
	redirect, _ := countingServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/elsewhere", http.StatusFound)
	})
	secure, secureHits := countingServer(t, true, nil)
	tlsConfig := secure.Client().Transport.(*http.Transport).TLSClientConfig

	tests := []struct {
		name    string
		url     string
		wantErr bool
	}{
		{"https reached", secure.URL + "/hook", false},
		{"http refused before dialling", plain.URL + "/hook", true},
		{"redirect to http refused", redirect.URL + "/hook", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := Options{HTTPSOnly: true, AllowPrivate: true}.Transport()
			tr.TLSClientConfig = tlsConfig.Clone()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second} // follows redirects
			p0, s0 := plainHits.Load(), secureHits.Load()
			resp, err := client.Get(tt.url)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("GET: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || secureHits.Load()-s0 != 1 {
					t.Fatalf("status %d, secure server hits %d", resp.StatusCode, secureHits.Load()-s0)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET succeeded with %d, want refusal", resp.StatusCode)
			}
			if !errors.Is(err, ErrInvalidURL) || errors.Is(err, ErrBlocked) {
				t.Fatalf("err = %v, want ErrInvalidURL only", err)
			}
			if n := plainHits.Load() - p0; n != 0 {
				t.Errorf("plain-http server saw %d requests, want 0", n)
			}
		})
	}
}

func TestTransportIgnoresEnvProxy(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://proxy.invalid:3128")
	t.Setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
	tr := Options{}.Transport()
	for _, target := range []string{"http://example.com/", "https://example.com/"} {
		req, err := http.NewRequest(http.MethodPost, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		u, err := tr.Proxy(req)
		if err != nil || u != nil {
			t.Errorf("Proxy(%s) = %v, %v; want no proxy", target, u, err)
		}
	}
	if tr.TLSHandshakeTimeout <= 0 || tr.DialContext == nil || tr.MaxResponseHeaderBytes <= 0 {
		t.Errorf("transport lacks timeouts or limits: %+v", tr)
	}
}
