// Package natstest starts a NATS server with JetStream inside a test
// process, for the Go tests of what runs on a cluster.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is an embedded NATS server with JetStream, storing in a
// temporary directory of the test.
type Server struct {
	*server.Server
	opts *server.Options
}

// Start starts a server on a free loopback port; it is shut down when
// the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	s := start(t, opts)
	opts.Port = s.Addr().(*net.TCPAddr).Port // Restart comes back on it
	return s
}

func start(t testing.TB, opts *server.Options) *Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server did not start within 10 s")
	}
	s := &Server{Server: ns, opts: opts}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// URL is the server's client URL.
func (s *Server) URL() string { return s.ClientURL() }

// Restart stops the server and starts it again on the same port and
// storage, as a NATS restart in production would.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Shutdown()
	s.WaitForShutdown()
	ns := start(t, s.opts)
	s.Server = ns.Server
}
