package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelinehq/pipeline/engine/cluster/natstest"
	"github.com/pipelinehq/pipeline/engine/state"
)

const testTTL = 900 * time.Millisecond

func connect(t *testing.T, url, prefix, worker string) *Cluster {
	t.Helper()
	c, err := Connect(context.Background(), Options{URLs: url, Prefix: prefix, Worker: worker, LeaseTTL: testTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func coordinator(t *testing.T, c *Cluster) *Coordinator {
	t.Helper()
	co, err := c.Coordinator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { co.Close(context.Background()) })
	return co
}

// claimUntil calls Claim on every coordinator until the partitions are all
// held, and returns who holds what.
func claimUntil(t *testing.T, cos []*Coordinator, parts []string) map[*Coordinator][]*Lease {
	t.Helper()
	held := map[*Coordinator][]*Lease{}
	n := 0
	deadline := time.Now().Add(30 * time.Second) // a hang guard, not a speed bound
	for n < len(parts) {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s, %d of %d partitions are held", n, len(parts))
		}
		for _, co := range cos {
			got, err := co.Claim(context.Background(), "p", "files", parts)
			if err != nil {
				t.Fatal(err)
			}
			held[co] = append(held[co], got...)
			n += len(got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return held
}

func TestPartitionsAreSharedOutAmongWorkers(t *testing.T) {
	srv := natstest.Start(t)
	parts := []string{"a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.jsonl", "f.jsonl"}
	var cos []*Coordinator
	for i := range 3 {
		cos = append(cos, coordinator(t, connect(t, srv.URL(), "share", fmt.Sprintf("w%d", i))))
	}
	held := claimUntil(t, cos, parts)
	seen := map[string]bool{}
	for co, ls := range held {
		if len(ls) != 2 {
			t.Errorf("worker %s holds %d partitions, want 2 (6 over 3 workers)", co.c.Worker(), len(ls))
		}
		for _, l := range ls {
			if seen[l.Partition] {
				t.Errorf("partition %s is held twice", l.Partition)
			}
			seen[l.Partition] = true
		}
	}
	if len(seen) != 6 {
		t.Errorf("%d partitions held, want 6", len(seen))
	}
	// Nothing more is handed out while they are held.
	for _, co := range cos {
		if got, _ := co.Claim(context.Background(), "p", "files", parts); len(got) != 0 {
			t.Errorf("worker %s got %d more", co.c.Worker(), len(got))
		}
	}
}

func TestKilledWorkersPartitionsAreTakenOverFromItsLastCommit(t *testing.T) {
	srv := natstest.Start(t)
	parts := []string{"a", "b"}
	ca := connect(t, srv.URL(), "takeover", "a")
	a, err := ca.Coordinator(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	held := claimUntil(t, []*Coordinator{a}, parts)
	for i, l := range held[a] {
		if err := l.Commit(context.Background(), []byte(fmt.Sprintf("pos-%s", l.Partition)), int64(10+i), map[string][]state.Mark{"hook": {{FP: 7, Rows: 3}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Killed: it stops renewing and releases nothing.
	a.cancel()
	<-a.done
	ca.Close()

	b := coordinator(t, connect(t, srv.URL(), "takeover", "b"))
	start := time.Now()
	got := claimUntil(t, []*Coordinator{b}, parts)[b]
	if waited := time.Since(start); waited < testTTL/2 {
		t.Errorf("took over after %v: before the lease (TTL %v) could have expired", waited, testTTL)
	}
	for _, l := range got {
		if want := "pos-" + l.Partition; string(l.Checkpoint.Position) != want {
			t.Errorf("partition %s resumes at %q, want %q", l.Partition, l.Checkpoint.Position, want)
		}
		if m := l.Checkpoint.Marks["hook"]; len(m) != 1 || m[0].Rows != 3 {
			t.Errorf("partition %s: sink marks %v, want the killed worker's", l.Partition, l.Checkpoint.Marks)
		}
		if l.Checkpoint.Worker != "b" {
			t.Errorf("partition %s: checkpoint claimed by %q", l.Partition, l.Checkpoint.Worker)
		}
	}
}

// Two workers forced onto one partition (the first one's lease expired
// while it was still reading) never move its position backwards.
func TestCheckpointRaceNeverMovesBackwards(t *testing.T) {
	srv := natstest.Start(t)
	ca := connect(t, srv.URL(), "race", "a")
	cb := connect(t, srv.URL(), "race", "b")
	a, b := coordinator(t, ca), coordinator(t, cb)
	la := claimUntil(t, []*Coordinator{a}, []string{"f"})[a][0]
	ctx := context.Background()
	if err := la.Commit(ctx, []byte("0010"), 10, nil); err != nil {
		t.Fatal(err)
	}
	// The lease expires under a (simulated: deleted), b takes it.
	if err := ca.leases.Delete(ctx, la.key); err != nil {
		t.Fatal(err)
	}
	lb := claimUntil(t, []*Coordinator{b}, []string{"f"})[b][0]
	if string(lb.Checkpoint.Position) != "0010" {
		t.Fatalf("b resumes at %q, want 0010", lb.Checkpoint.Position)
	}
	if lb.Token() <= la.Token() {
		t.Fatalf("the later lease's token %d is not above the earlier's %d", lb.Token(), la.Token())
	}
	// a, still reading, commits further; b commits its first batch (its
	// position is behind a's): a must be refused, b must land.
	if err := la.Commit(ctx, []byte("0020"), 10, nil); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the earlier holder's commit: %v, want ErrLeaseLost", err)
	}
	select {
	case <-la.Lost():
	default:
		t.Error("the refused lease is not marked lost")
	}
	if err := lb.Commit(ctx, []byte("0015"), 5, nil); err != nil {
		t.Fatal(err)
	}
	cp, _, err := cb.getCheckpoint(ctx, "p", "files", "f")
	if err != nil {
		t.Fatal(err)
	}
	if string(cp.Position) != "0015" || cp.Records != 15 || cp.Token != lb.Token() {
		t.Errorf("checkpoint %q, %d records, token %d; want 0015, 15, %d", cp.Position, cp.Records, cp.Token, lb.Token())
	}
}

// Commits racing on one lease (the engine commits in order, but the
// compare-and-set must not lose any) add up exactly.
func TestConcurrentCommitsOnOneLeaseAddUp(t *testing.T) {
	srv := natstest.Start(t)
	c := connect(t, srv.URL(), "cas", "a")
	co := coordinator(t, c)
	l := claimUntil(t, []*Coordinator{co}, []string{"f"})[co][0]
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 10 {
				if err := l.Commit(context.Background(), []byte(fmt.Sprintf("%d-%d", i, j)), 1, nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cp, _, err := c.getCheckpoint(context.Background(), "p", "files", "f")
	if err != nil {
		t.Fatal(err)
	}
	if cp.Records != 80 {
		t.Errorf("%d records committed, want 80", cp.Records)
	}
}

func TestExtraLeasesYieldWhenWorkersJoin(t *testing.T) {
	srv := natstest.Start(t)
	parts := []string{"a", "b", "c", "d", "e", "f"}
	a := coordinator(t, connect(t, srv.URL(), "yield", "a"))
	held := claimUntil(t, []*Coordinator{a}, parts)[a]
	if len(held) != 6 {
		t.Fatalf("a alone holds %d, want 6", len(held))
	}
	coordinator(t, connect(t, srv.URL(), "yield", "b"))
	if _, err := a.Claim(context.Background(), "p", "files", parts); err != nil {
		t.Fatal(err)
	}
	yielded := 0
	for _, l := range held {
		select {
		case <-l.Yield():
			yielded++
			if err := l.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
		default:
		}
	}
	if yielded != 3 {
		t.Errorf("%d leases asked to yield, want 3 (6 over 2 workers)", yielded)
	}
	if names, _ := a.c.Workers(context.Background()); len(names) != 2 {
		t.Errorf("workers %v, want 2", names)
	}
}

func TestLeasesSurviveANATSRestart(t *testing.T) {
	srv := natstest.Start(t)
	c := connect(t, srv.URL(), "restart", "a")
	co := coordinator(t, c)
	l := claimUntil(t, []*Coordinator{co}, []string{"f"})[co][0]
	ctx := context.Background()
	if err := l.Commit(ctx, []byte("1"), 1, nil); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := l.Commit(ctx, []byte("2"), 1, nil)
		if err == nil {
			break
		}
		if errors.Is(err, ErrLeaseLost) || time.Now().After(deadline) {
			t.Fatalf("commit after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cp, _, err := c.getCheckpoint(ctx, "p", "files", "f")
	if err != nil {
		t.Fatal(err)
	}
	if string(cp.Position) != "2" || cp.Records != 2 {
		t.Errorf("after the restart: %q, %d records; want 2, 2", cp.Position, cp.Records)
	}
}

func TestTokenKeepsNamesApart(t *testing.T) {
	for _, pair := range [][2]string{{"a.b", "a_b"}, {"a/b", "a=2Fb"}, {"", "="}, {"x y", "x_y"}} {
		if Token(pair[0]) == Token(pair[1]) {
			t.Errorf("%q and %q share the token %q", pair[0], pair[1], Token(pair[0]))
		}
	}
	if got := Token("calls/2026-12-01.jsonl"); got != "calls=2F2026-12-01=2Ejsonl" {
		t.Errorf("Token: %q", got)
	}
}

// --nats-tls with --nats-ca: the servers' certificate is checked against
// the CA given; without it (the system's roots) the connection is refused.
func TestConnectOverTLS(t *testing.T) {
	srv, ca := natstest.StartTLS(t)
	url := strings.Replace(srv.URL(), "nats://", "tls://", 1)
	c, err := Connect(context.Background(), Options{URLs: url, Prefix: "tls", TLS: true, CAFile: ca})
	if err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	defer c.Close()
	co := coordinator(t, c)
	if l := claimUntil(t, []*Coordinator{co}, []string{"f"})[co]; len(l) != 1 {
		t.Fatalf("over TLS: %d leases", len(l))
	}
	if _, err := Connect(context.Background(), Options{URLs: url, Prefix: "tls", TLS: true}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: %v, want a certificate error", err)
	}
}

// --nats-creds against a server in operator mode: with the user's
// credentials the cluster's buckets are made in its account and leases
// work; without them, or with a missing file, Connect fails and says why.
func TestConnectWithCredentials(t *testing.T) {
	srv, tr := natstest.StartWithTrust(t)
	c, err := Connect(context.Background(), Options{URLs: srv.URL(), Prefix: "creds", CredsFile: tr.CredsFile})
	if err != nil {
		t.Fatalf("with the credentials: %v", err)
	}
	defer c.Close()
	co := coordinator(t, c)
	if l := claimUntil(t, []*Coordinator{co}, []string{"f"})[co]; len(l) != 1 {
		t.Fatalf("with credentials: %d leases", len(l))
	}
	_, err = Connect(context.Background(), Options{URLs: srv.URL(), Prefix: "creds"})
	t.Logf("without credentials: %v", err)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("without credentials: %v, want an authorization error", err)
	}
	missing := filepath.Join(t.TempDir(), "none.creds")
	_, err = Connect(context.Background(), Options{URLs: srv.URL(), Prefix: "creds", CredsFile: missing})
	t.Logf("with a missing file: %v", err)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("with a missing credentials file: %v, want an error naming it", err)
	}
}

// What a NATS cluster that is starting answers is worth waiting for at
// start; a refused login or a missing file is not.
func TestTransientStartErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("cluster: KV bucket x: %w", context.DeadlineExceeded), true},
		{nats.ErrTimeout, true},
		{nats.ErrNoResponders, true},
		{jetstream.ErrNoStreamResponse, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{nats.ErrAuthorization, false},
		{errors.New("open /x.creds: no such file or directory"), false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}, false},
		// A NATS cluster whose meta leader does not count every server yet
		// (TestClusterOnThreeNATSServersSurvivesLosingOne's workers, started
		// with three new servers, failed on this in 1 of 3 full runs).
		{fmt.Errorf("cluster: KV bucket r3_checkpoints: %w", &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}), true},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A "no suitable peers" error that outlasted the start wait says what the
// replicas need; other errors are left as they are.
func TestExplainPlacement(t *testing.T) {
	noPeers := fmt.Errorf("cluster: KV bucket r3_checkpoints: %w", &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"})
	got := explainPlacement(noPeers, 3)
	if !strings.Contains(got.Error(), "no suitable peers") || !strings.Contains(got.Error(), "3 replicas need 3 JetStream servers") {
		t.Errorf("explainPlacement: %v", got)
	}
	var api *jetstream.APIError
	if !errors.As(got, &api) || api.ErrorCode != 10005 {
		t.Errorf("explainPlacement lost the API error: %v", got)
	}
	if other := errors.New("boom"); explainPlacement(other, 3) != other {
		t.Errorf("explainPlacement changed an unrelated error")
	}
}
