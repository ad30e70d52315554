package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelinehq/pipeline/engine/cluster"
	"github.com/pipelinehq/pipeline/engine/cluster/natstest"
)

// A nats-server in operator mode (JWT users, as production NATS runs):
// `serve --cluster --nats-creds FILE` delivers every record; without the
// credentials, or with a file that is not there, serve exits non-zero
// saying why, before it reads anything.
func TestClusterWithNATSCredentials(t *testing.T) {
	tr := natstest.NewTrust(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	writeFile(t, conf, tr.Config())
	ns := startNATS(t, "-c", conf)
	rcv := newReceiver(t)
	glob, want := clusterInput(t, dir, 2, 100)
	file := clusterPipeline(t, dir, glob)

	for _, c := range []struct {
		name, creds, says string
	}{
		{"without --nats-creds", "", "Authorization Violation"},
		{"with a missing file", filepath.Join(dir, "none.creds"), filepath.Join(dir, "none.creds")},
	} {
		var extra []string
		if c.creds != "" {
			extra = []string{"--nats-creds", c.creds}
		}
		w := startWorkerArgs(t, ns.url(), dir, "refused", "creds", "", rcv.env(), extra, file)
		if !w.finish(time.Minute) {
			t.Fatalf("%s: serve did not exit within a minute\n%s", c.name, w.stderr())
		}
		if w.code == 0 || !strings.Contains(w.stderr(), c.says) {
			t.Errorf("%s: exit %d, want non-zero and a message with %q\n%s", c.name, w.code, c.says, w.stderr())
		}
	}
	if n := rcv.total(); n != 0 {
		t.Fatalf("%d deliveries from refused workers", n)
	}

	w := startWorkerArgs(t, ns.url(), dir, "w0", "creds", "", rcv.env(), []string{"--nats-creds", tr.CredsFile}, file)
	waitDelivered(t, rcv, want, 60*time.Second, w)
	stopWorkers(t, w)
	// The cluster's state is in the credentials' account.
	nc, err := nats.Connect(ns.url(), nats.UserCredentials(tr.CredsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.KeyValue(context.Background(), "creds_checkpoints"); err != nil {
		t.Errorf("the checkpoints bucket in the user's account: %v", err)
	}
}

// serve --cluster started before NATS waits for it (--cluster-start-wait),
// saying so, and then works; with nothing to wait for it gives up after
// the wait, saying why.
func TestClusterWorkerWaitsForNATSAtStart(t *testing.T) {
	ns := newNATS(t, freePort(t))
	dir := t.TempDir()
	rcv := newReceiver(t)
	glob, want := clusterInput(t, dir, 2, 50)
	file := clusterPipeline(t, dir, glob)
	w := startWorkerOn(t, ns.url(), dir, "early", "early", rcv.env(), file)
	w.waitUntil("the worker to say it waits for NATS", 30*time.Second, func() bool {
		return strings.Contains(w.stderr(), "waiting for NATS JetStream")
	})
	ns.start()
	waitDelivered(t, rcv, want, 60*time.Second, w)
	stopWorkers(t, w)

	gone := startWorkerArgs(t, fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)), dir, "gone", "gone", "", rcv.env(), []string{"--cluster-start-wait", "2s"}, file)
	if !gone.finish(time.Minute) {
		t.Fatalf("serve did not give up within a minute\n%s", gone.stderr())
	}
	if gone.code == 0 || !strings.Contains(gone.stderr(), "no servers available") {
		t.Errorf("with no NATS: exit %d, want non-zero saying no servers are available\n%s", gone.code, gone.stderr())
	}
}

// natsCluster is three nats-server processes of the test's own, routed
// into one JetStream cluster.
type natsCluster struct{ servers []*natsServer }

func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	ports, routes := make([]int, 3), make([]string, 3)
	for i := range ports {
		ports[i] = freePort(t)
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	}
	c := &natsCluster{}
	for i := range 3 {
		c.servers = append(c.servers, newNATS(t, ports[i], "--server_name", fmt.Sprintf("n%d", i), "--cluster_name", "e2e",
			"--cluster", routes[i], "--routes", strings.Join(routes, ",")))
	}
	// (Started, not ready: the servers still have to find each other and
	// elect their leaders; workers started at once wait for that.)
	for _, s := range c.servers {
		s.start()
	}
	return c
}

func (c *natsCluster) url() string {
	var urls []string
	for _, s := range c.servers {
		urls = append(urls, s.url())
	}
	return strings.Join(urls, ",")
}

// server returns the server of the given name (n0, n1, n2).
func (c *natsCluster) server(t *testing.T, name string) *natsServer {
	t.Helper()
	for i, s := range c.servers {
		if fmt.Sprintf("n%d", i) == name {
			return s
		}
	}
	t.Fatalf("no NATS server named %q", name)
	return nil
}

// With --cluster-replicas 3 on a cluster of three NATS servers, started
// together with the workers (which wait for its JetStream to be ready:
// before that, making a bucket times out or finds no leader), the
// cluster's buckets and streams have three replicas, and the server that
// leads the sink's outbox stream dying mid-run (SIGKILL) costs nothing:
// the workers go on through the other two, and every record is delivered.
func TestClusterOnThreeNATSServersSurvivesLosingOne(t *testing.T) {
	nc := startNATSCluster(t)
	dir := t.TempDir()
	rcv := newReceiver(t)
	rcv.setDelay(10 * time.Millisecond)
	glob, want := clusterInput(t, dir, 4, 1000)
	file := clusterPipeline(t, dir, glob)
	var ws []*worker
	for i := range 2 {
		ws = append(ws, startWorkerArgs(t, nc.url(), dir, fmt.Sprintf("w%d", i), "r3", "", rcv.env(), []string{"--cluster-replicas", "3"}, file))
	}
	deadline := time.Now().Add(60 * time.Second)
	for rcv.total() < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("no deliveries under way after 60 s\n%s", ws[0].stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := nats.Connect(nc.url())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	js, _ := jetstream.New(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var outbox string
	for name := range js.StreamNames(ctx).Name() {
		if strings.HasPrefix(name, "r3_outbox_") {
			outbox = name
		}
	}
	if outbox == "" {
		t.Fatal("no outbox stream r3_outbox_…")
	}
	for _, name := range []string{outbox, "KV_r3_checkpoints", "KV_r3_leases"} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, r)
		}
	}
	s, _ := js.Stream(ctx, outbox)
	leader := s.CachedInfo().Cluster.Leader
	before := rcv.total()
	nc.server(t, leader).kill()
	t.Logf("killed NATS server %s, the outbox stream's leader, after %d deliveries", leader, before)
	waitDelivered(t, rcv, want, 120*time.Second, ws...)
	// Acks in flight to the dead server are lost: those deliveries go out
	// again, at most what the workers held (MaxHeld each).
	dups, bound := rcv.total()-len(rcv.ids()), 2*cluster.DefaultMaxHeld
	t.Logf("%d deliveries for %d records: %d duplicates (bound %d)", rcv.total(), len(rcv.ids()), dups, bound)
	if dups > bound {
		t.Errorf("%d duplicate deliveries, more than the workers held (%d)", dups, bound)
	}
	stopWorkers(t, ws...)
}
