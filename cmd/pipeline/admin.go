package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/pipelinehq/pipeline/engine/admin"
	"github.com/pipelinehq/pipeline/engine/cluster"
	"github.com/pipelinehq/pipeline/engine/state"
)

// serveAdmin starts the admin API and web console on addr. Its token is
// PIPELINE_ADMIN_TOKEN; without one it listens only on a loopback address,
// with a random token that it logs. It returns a function that stops it.
func serveAdmin(addr string, store *state.Store, reg *registry, metrics http.Handler, log *slog.Logger) (func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--admin-addr %q: %w", addr, err)
	}
	token := adminToken()
	if token == "" {
		if !isLoopback(host) {
			return nil, fmt.Errorf("--admin-addr %s is not a loopback address: set PIPELINE_ADMIN_TOKEN, which every admin request must present, before listening on it", addr)
		}
		b := make([]byte, 16)
		rand.Read(b)
		token = hex.EncodeToString(b)
		log.Warn("PIPELINE_ADMIN_TOKEN is not set: the admin API takes this token until serve stops", "token", token)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--admin-addr: %w", err)
	}
	srv := &http.Server{
		Handler:           admin.New(adminOptions(admin.Options{Store: store, Backend: reg, Token: token, Metrics: metrics, Logger: log}, reg.g)),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", "error", err)
		}
	}()
	log.Info("admin API and console", "url", "http://"+ln.Addr().String()+"/")
	return func() { srv.Close() }, nil
}

// isLoopback reports whether host (an IP or "localhost") is only reachable
// from this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// adminOptions serves a cluster's pauses when serve is a cluster worker.
func adminOptions(o admin.Options, g *globals) admin.Options {
	if g.cluster != nil {
		o.Pauses = g.cluster
		backend := o.Backend
		o.Deliveries = g.cluster.AdminView(func() []cluster.SinkRef {
			var out []cluster.SinkRef
			for _, p := range backend.Pipelines() {
				if p.Config == nil {
					continue
				}
				for _, sk := range p.Config.Sinks {
					out = append(out, cluster.SinkRef{Pipeline: p.Name, Sink: sk.Name})
				}
			}
			return out
		})
	}
	return o
}
