package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/engine/cluster/natstest"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// The outbox on an embedded JetStream server: each test starts its own
// server and uses its own prefix.

const (
	obTestPipeline = "churn alerts"
	obTestSink     = "crm/hook" // not a token: the names must still work
)

var obPrefixN atomic.Int64

func obTestPrefix() string { return fmt.Sprintf("t%d", obPrefixN.Add(1)) }

// connect is one worker's connection to the cluster.
func obConnect(t testing.TB, srv *natstest.Server, prefix, worker string) *Cluster {
	t.Helper()
	c, err := Connect(context.Background(), Options{URLs: srv.URL(), Prefix: prefix, Worker: worker})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func obService(t testing.TB, c *Cluster, opts OutboxOptions) *OutboxService {
	t.Helper()
	s, err := c.OutboxService(context.Background(), obTestPipeline, obTestSink, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// one starts a server and one worker's service on it.
func obOne(t testing.TB, opts OutboxOptions) (*natstest.Server, *Cluster, *OutboxService) {
	t.Helper()
	srv := natstest.Start(t)
	c := obConnect(t, srv, obTestPrefix(), "w1")
	return srv, c, obService(t, c, opts)
}

var obBg = context.Background()

func obDel(id, endpoint, key string) *pluginv1.Delivery {
	return &pluginv1.Delivery{Id: id, Endpoint: endpoint, OrderKey: key, Payload: []byte("payload of " + id)}
}

func obEnqueue(t testing.TB, s *OutboxService, ds ...*pluginv1.Delivery) *pluginv1.EnqueueResponse {
	t.Helper()
	resp, err := s.Enqueue(obBg, &pluginv1.EnqueueRequest{Deliveries: ds})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func obLease(t testing.TB, s *OutboxService, max int) []*pluginv1.Delivery {
	t.Helper()
	resp, err := s.Lease(obBg, &pluginv1.LeaseRequest{Max: uint32(max)})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Deliveries
}

func obRecord(t testing.TB, s *OutboxService, rs ...*pluginv1.Result) {
	t.Helper()
	if _, err := s.Record(obBg, &pluginv1.RecordRequest{Results: rs}); err != nil {
		t.Fatal(err)
	}
}

func obDelivered(id string) *pluginv1.Result {
	return &pluginv1.Result{Id: id, Outcome: pluginv1.Outcome_DELIVERED,
		Attempt: &pluginv1.Attempt{AtUnixMs: time.Now().UnixMilli(), StatusCode: 200, LatencyMs: 12, Response: []byte("ok")}}
}

func obFailed(id string, next time.Time) *pluginv1.Result {
	return &pluginv1.Result{Id: id, Outcome: pluginv1.Outcome_RETRY, NextAtUnixMs: next.UnixMilli(),
		Attempt: &pluginv1.Attempt{AtUnixMs: time.Now().UnixMilli(), StatusCode: 503, LatencyMs: 30, Error: "503 Service Unavailable"}}
}

func obIds(ds []*pluginv1.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Id
	}
	slices.Sort(out)
	return out
}

func obPending(t testing.TB, s *OutboxService) *pluginv1.PendingResponse {
	t.Helper()
	resp, err := s.Pending(obBg, &pluginv1.PendingRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// leaseUntil leases (max at a time) until want deliveries came or the
// timeout passed.
func obLeaseUntil(t testing.TB, s *OutboxService, max, want int, timeout time.Duration) []*pluginv1.Delivery {
	t.Helper()
	var got []*pluginv1.Delivery
	deadline := time.Now().Add(timeout)
	for len(got) < want && time.Now().Before(deadline) {
		ds := obLease(t, s, max)
		got = append(got, ds...)
		if len(ds) == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return got
}

func TestOutboxEnqueueLeaseDeliver(t *testing.T) {
	_, c, s := obOne(t, OutboxOptions{})
	resp := obEnqueue(t, s, obDel("a", "https://x.example", ""), obDel("b", "https://y.example", ""), obDel("c\nline two", "https://x.example", "käy 1"))
	if resp.Added != 3 || len(resp.Leased) != 0 {
		t.Fatalf("enqueue: %v", resp)
	}
	if p := obPending(t, s); p.Pending != 3 || p.Dead != 0 {
		t.Fatalf("pending %v", p)
	}
	got := obLease(t, s, 10)
	if !slices.Equal(obIds(got), []string{"a", "b", "c\nline two"}) {
		t.Fatalf("leased %q", obIds(got))
	}
	for _, d := range got {
		if string(d.Payload) != "payload of "+d.Id || d.Attempts != 0 {
			t.Errorf("%q: payload %q, attempts %d", d.Id, d.Payload, d.Attempts)
		}
		if d.Id == "c\nline two" && (d.OrderKey != "käy 1" || d.Endpoint != "https://x.example") {
			t.Errorf("headers did not come back as they were: %+v", d)
		}
	}
	if again := obLease(t, s, 10); len(again) != 0 {
		t.Fatalf("leased twice: %q", obIds(again))
	}
	var rs []*pluginv1.Result
	for _, d := range got {
		rs = append(rs, obDelivered(d.Id))
	}
	obRecord(t, s, rs...)
	if p := obPending(t, s); p.Pending != 0 || p.Dead != 0 {
		t.Fatalf("pending after delivering everything: %v", p)
	}
	if again := obLease(t, s, 10); len(again) != 0 {
		t.Fatalf("a delivered delivery came back: %q", obIds(again))
	}
	log, err := c.DeliveryLog(obBg, obTestPipeline, obTestSink, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 3 {
		t.Fatalf("log: %+v", log)
	}
	for _, e := range log {
		if e.Outcome != "delivered" || e.Attempts != 1 || e.StatusCode != 200 || e.Response != "ok" || e.LatencyMs != 12 || e.Worker != "w1" {
			t.Errorf("log entry %+v", e)
		}
	}
	p := s.Progress()
	if p.Queued != 3 || p.Delivered != 3 || p.Pending != 0 {
		t.Errorf("progress %+v", p)
	}
}

func TestOutboxEnqueueDeduplicates(t *testing.T) {
	_, _, s := obOne(t, OutboxOptions{})
	if r := obEnqueue(t, s, obDel("a", "", ""), obDel("b", "", "k"), obDel("a", "", "")); r.Added != 2 {
		t.Fatalf("first enqueue added %d, want 2 (a twice in one request)", r.Added)
	}
	if r := obEnqueue(t, s, obDel("a", "", ""), obDel("b", "", "k")); r.Added != 0 {
		t.Fatalf("enqueue again added %d", r.Added)
	}
	got := obLeaseUntil(t, s, 10, 2, 5*time.Second)
	if !slices.Equal(obIds(got), []string{"a", "b"}) {
		t.Fatalf("leased %q", obIds(got))
	}
	obRecord(t, s, obDelivered("a"), obDelivered("b"))
	// Delivered, and within the dedupe window: a re-run sends nothing.
	if r := obEnqueue(t, s, obDel("a", "", ""), obDel("b", "", "k"), obDel("c", "", "")); r.Added != 1 {
		t.Fatalf("enqueue after delivery added %d, want 1 (c)", r.Added)
	}
	if p := obPending(t, s); p.Pending != 1 {
		t.Fatalf("pending %d", p.Pending)
	}
}

func TestOutboxFailedComesBackAfterItsDelayWithAttempts(t *testing.T) {
	srv, c, s := obOne(t, OutboxOptions{AckWait: 10 * time.Second})
	obEnqueue(t, s, obDel("a", "ep", ""), obDel("k1", "ep", "key"))
	if got := obLease(t, s, 10); len(got) != 2 {
		t.Fatalf("leased %q", obIds(got))
	}
	delay := 700 * time.Millisecond
	next := time.Now().Add(delay)
	obRecord(t, s, obFailed("a", next), obFailed("k1", next))
	resp, err := s.Lease(obBg, &pluginv1.LeaseRequest{Max: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Deliveries) != 0 {
		t.Fatalf("a failed delivery came back before its delay: %q", obIds(resp.Deliveries))
	}
	if d := time.UnixMilli(resp.NextDueUnixMs); d.Sub(next).Abs() > 50*time.Millisecond {
		t.Errorf("next due %v, want about %v", d, next)
	}
	// Another worker gets them when due, with the attempts the first one
	// stored.
	s2 := obService(t, obConnect(t, srv, c.Prefix(), "w2"), OutboxOptions{AckWait: 10 * time.Second})
	got := obLeaseUntil(t, s2, 10, 2, 10*time.Second)
	if time.Now().Before(next) {
		t.Fatalf("came back before it was due")
	}
	if len(got) != 2 {
		t.Fatalf("after the delay: %q", obIds(got))
	}
	for _, d := range got {
		if d.Attempts != 1 {
			t.Errorf("%s: attempts %d, want 1", d.Id, d.Attempts)
		}
	}
	next = time.Now().Add(200 * time.Millisecond)
	obRecord(t, s2, obFailed("a", next), obFailed("k1", next))
	got = obLeaseUntil(t, s, 10, 2, 10*time.Second)
	if len(got) != 2 || got[0].Attempts != 2 || got[1].Attempts != 2 {
		t.Fatalf("second retry: %+v", got)
	}
	// A release changes no attempts.
	obRecord(t, s, &pluginv1.Result{Id: "a", Outcome: pluginv1.Outcome_RELEASE, NextAtUnixMs: time.Now().UnixMilli()},
		&pluginv1.Result{Id: "k1", Outcome: pluginv1.Outcome_RELEASE, NextAtUnixMs: time.Now().UnixMilli()})
	got = obLeaseUntil(t, s, 10, 2, 10*time.Second)
	if len(got) != 2 || got[0].Attempts != 2 || got[1].Attempts != 2 {
		t.Fatalf("after a release: %+v", got)
	}
	obRecord(t, s, obDelivered("a"), obDelivered("k1"))
	if p := obPending(t, s); p.Pending != 0 {
		t.Fatalf("pending %d", p.Pending)
	}
}

func TestOutboxNotBeforeAndPause(t *testing.T) {
	_, c, s := obOne(t, OutboxOptions{})
	nb := time.Now().Add(600 * time.Millisecond)
	d := obDel("later", "", "")
	d.NotBeforeUnixMs = nb.UnixMilli()
	obEnqueue(t, s, d)
	resp, err := s.Lease(obBg, &pluginv1.LeaseRequest{Max: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Deliveries) != 0 || time.UnixMilli(resp.NextDueUnixMs).Sub(nb).Abs() > 50*time.Millisecond {
		t.Fatalf("not due yet: %q, next %d (want %d)", obIds(resp.Deliveries), resp.NextDueUnixMs, nb.UnixMilli())
	}
	if got := obLeaseUntil(t, s, 10, 1, 5*time.Second); len(got) != 1 || time.Now().Before(nb) {
		t.Fatalf("when due: %q", obIds(got))
	}
	obRecord(t, s, obDelivered("later"))

	if err := c.SetPaused(obBg, obTestPipeline, obTestSink, true); err != nil {
		t.Fatal(err)
	}
	if r := obEnqueue(t, s, obDel("p1", "", ""), obDel("p2", "", "k")); r.Added != 2 {
		t.Fatalf("a paused sink's outbox still stores: added %d", r.Added)
	}
	resp, err = s.Lease(obBg, &pluginv1.LeaseRequest{Max: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Deliveries) != 0 || resp.NextDueUnixMs == 0 {
		t.Fatalf("paused: leased %q, next %d", obIds(resp.Deliveries), resp.NextDueUnixMs)
	}
	if p := obPending(t, s); !p.Paused || p.Pending != 2 {
		t.Fatalf("pending while paused: %v", p)
	}
	if r, err := s.Paused(obBg, &pluginv1.PausedRequest{}); err != nil || !r.Paused {
		t.Fatalf("Paused: %v %v", r, err)
	}
	if ok, err := c.IsPaused(obBg, obTestPipeline, obTestSink); err != nil || !ok {
		t.Fatalf("IsPaused: %v %v", ok, err)
	}
	if err := c.SetPaused(obBg, obTestPipeline, obTestSink, false); err != nil {
		t.Fatal(err)
	}
	if got := obLeaseUntil(t, s, 10, 2, 5*time.Second); len(got) != 2 {
		t.Fatalf("resumed: %q", obIds(got))
	}
}

func TestOutboxDeadLetterAndReplay(t *testing.T) {
	_, c, s := obOne(t, OutboxOptions{})
	obEnqueue(t, s, obDel("d1", "https://x.example", "key"), obDel("ok", "https://x.example", ""))
	got := obLeaseUntil(t, s, 10, 2, 5*time.Second)
	if len(got) != 2 {
		t.Fatalf("leased %q", obIds(got))
	}
	// One failure first, so that it dies with 2 attempts.
	obRecord(t, s, obFailed("d1", time.Now()), obDelivered("ok"))
	got = obLeaseUntil(t, s, 10, 1, 5*time.Second)
	if len(got) != 1 || got[0].Attempts != 1 {
		t.Fatalf("retry: %+v", got)
	}
	obRecord(t, s, &pluginv1.Result{Id: "d1", Outcome: pluginv1.Outcome_DEAD,
		Attempt: &pluginv1.Attempt{AtUnixMs: time.Now().UnixMilli(), StatusCode: 422, Error: "422 Unprocessable Entity\nbad field"}})
	if p := obPending(t, s); p.Pending != 0 || p.Dead != 1 {
		t.Fatalf("pending %v", p)
	}
	letters, err := c.DeadLetters(obBg, obTestPipeline, obTestSink, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(letters) != 1 {
		t.Fatalf("dead letters: %+v", letters)
	}
	dl := letters[0]
	if dl.ID != "d1" || dl.Endpoint != "https://x.example" || dl.OrderKey != "key" || string(dl.Payload) != "payload of d1" ||
		dl.Attempts != 2 || dl.LastError != "422 Unprocessable Entity\nbad field" || dl.LastStatus != 422 || dl.DeadAt.IsZero() || dl.EnqueuedAt.IsZero() {
		t.Fatalf("dead letter %+v", dl)
	}
	if n, err := c.Replay(obBg, obTestPipeline, obTestSink, []string{"nope"}); err != nil || n != 0 {
		t.Fatalf("replay of an unknown id: %d, %v", n, err)
	}
	// Within the dedupe window of d1: the replay must not be dropped.
	n, err := c.Replay(obBg, obTestPipeline, obTestSink, []string{"d1"})
	if err != nil || n != 1 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	if letters, _ := c.DeadLetters(obBg, obTestPipeline, obTestSink, 10); len(letters) != 0 {
		t.Fatalf("a replayed dead letter stays: %+v", letters)
	}
	if p := obPending(t, s); p.Pending != 1 || p.Dead != 0 {
		t.Fatalf("pending after replay %v", p)
	}
	got = obLeaseUntil(t, s, 10, 1, 5*time.Second)
	if len(got) != 1 || got[0].Id != "d1" || got[0].Attempts != 0 || got[0].OrderKey != "key" || string(got[0].Payload) != "payload of d1" {
		t.Fatalf("replayed: %+v", got)
	}
	obRecord(t, s, obDelivered("d1"))
	if p := obPending(t, s); p.Pending != 0 || p.Dead != 0 {
		t.Fatalf("pending %v", p)
	}
	// Replay with no ids replays every dead letter.
	obEnqueue(t, s, obDel("x1", "", ""), obDel("x2", "", ""))
	for _, d := range obLeaseUntil(t, s, 10, 2, 5*time.Second) {
		obRecord(t, s, &pluginv1.Result{Id: d.Id, Outcome: pluginv1.Outcome_DEAD, Attempt: &pluginv1.Attempt{AtUnixMs: time.Now().UnixMilli(), Error: "gone"}})
	}
	if letters, _ := c.DeadLetters(obBg, obTestPipeline, obTestSink, 1); len(letters) != 1 {
		t.Fatalf("max 1: %+v", letters)
	}
	if n, err := c.Replay(obBg, obTestPipeline, obTestSink, nil); err != nil || n != 2 {
		t.Fatalf("replay all: %d, %v", n, err)
	}
	if got := obLeaseUntil(t, s, 10, 2, 5*time.Second); !slices.Equal(obIds(got), []string{"x1", "x2"}) {
		t.Fatalf("replayed: %q", obIds(got))
	}
}

func TestOutboxDeliveryLogHoldsEveryAttempt(t *testing.T) {
	_, c, s := obOne(t, OutboxOptions{})
	obEnqueue(t, s, obDel("a", "ep", ""), obDel("b", "ep", "k"))
	obLeaseUntil(t, s, 10, 2, 5*time.Second)
	obRecord(t, s, obFailed("a", time.Now()), &pluginv1.Result{Id: "b", Outcome: pluginv1.Outcome_RELEASE, NextAtUnixMs: time.Now().UnixMilli()})
	obLeaseUntil(t, s, 10, 2, 5*time.Second)
	obRecord(t, s, obFailed("a", time.Now()), &pluginv1.Result{Id: "b", Outcome: pluginv1.Outcome_DEAD,
		Attempt: &pluginv1.Attempt{AtUnixMs: time.Now().UnixMilli(), StatusCode: 400, Error: "400 Bad Request"}})
	obLeaseUntil(t, s, 10, 1, 5*time.Second)
	obRecord(t, s, obDelivered("a"))
	log, err := c.DeliveryLog(obBg, obTestPipeline, obTestSink, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log {
		got = append(got, fmt.Sprintf("%s %s %d %d %s", e.ID, e.Outcome, e.Attempts, e.StatusCode, e.Error))
		if e.At.IsZero() {
			t.Errorf("no time: %+v", e)
		}
		if e.Outcome == "retry" && e.NextAt.IsZero() {
			t.Errorf("a retry without its next time: %+v", e)
		}
	}
	want := []string{
		"a retry 1 503 503 Service Unavailable",
		"a retry 2 503 503 Service Unavailable",
		"b dead 1 400 400 Bad Request",
		"a delivered 3 200 ",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if last, _ := c.DeliveryLog(obBg, obTestPipeline, obTestSink, 1); len(last) != 1 || last[0].Outcome != "delivered" {
		t.Fatalf("last 1: %+v", last)
	}
}

func TestOutboxMaxPerEndpointAndSkip(t *testing.T) {
	_, _, s := obOne(t, OutboxOptions{SkipDelay: 300 * time.Millisecond})
	var ds []*pluginv1.Delivery
	for i := range 6 {
		ds = append(ds, obDel(fmt.Sprintf("a%d", i), "A", ""))
	}
	ds = append(ds, obDel("b0", "B", ""), obDel("b1", "B", ""))
	obEnqueue(t, s, ds...)
	resp, err := s.Lease(obBg, &pluginv1.LeaseRequest{Max: 10, MaxPerEndpoint: 2, SkipEndpoints: []string{"B"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(obIds(resp.Deliveries), []string{"a0", "a1"}) {
		t.Fatalf("max 2 per endpoint, B skipped: %q", obIds(resp.Deliveries))
	}
	seen := map[string]int{}
	for _, d := range resp.Deliveries {
		seen[d.Id]++
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 8 && time.Now().Before(deadline) {
		resp, err := s.Lease(obBg, &pluginv1.LeaseRequest{Max: 3, MaxPerEndpoint: 2})
		if err != nil {
			t.Fatal(err)
		}
		per := map[string]int{}
		for _, d := range resp.Deliveries {
			seen[d.Id]++
			per[d.Endpoint]++
			if per[d.Endpoint] > 2 || len(resp.Deliveries) > 3 {
				t.Fatalf("over the limits: %q", obIds(resp.Deliveries))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(seen) != 8 {
		t.Fatalf("handed out %v: some were lost", seen)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s handed out %d times", id, n)
		}
	}
}

// TestOutboxTwoWorkersShareTheWork: two services on one outbox (two
// workers, two connections) never hold one delivery at once and together
// deliver each exactly once.
func TestOutboxTwoWorkersShareTheWork(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	s1 := obService(t, obConnect(t, srv, prefix, "w1"), OutboxOptions{})
	s2 := obService(t, obConnect(t, srv, prefix, "w2"), OutboxOptions{})
	const n = 400
	var ds []*pluginv1.Delivery
	for i := range n {
		ds = append(ds, obDel(fmt.Sprintf("d%03d", i), fmt.Sprintf("ep%d", i%5), ""))
	}
	obEnqueue(t, s1, ds[:n/2]...)
	obEnqueue(t, s2, ds[n/2:]...)
	var mu sync.Mutex
	holder := map[string]string{}
	count := map[string]int{}
	per := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	work := func(name string, s *OutboxService) {
		defer wg.Done()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			done := len(count) == n
			mu.Unlock()
			if done {
				return
			}
			resp, err := s.Lease(obBg, &pluginv1.LeaseRequest{Max: 7})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			for _, d := range resp.Deliveries {
				if h, ok := holder[d.Id]; ok {
					mu.Unlock()
					errs <- fmt.Errorf("%s leased %s, which %s holds", name, d.Id, h)
					return
				}
				holder[d.Id] = name
			}
			mu.Unlock()
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			var rs []*pluginv1.Result
			mu.Lock()
			for _, d := range resp.Deliveries {
				delete(holder, d.Id)
				count[d.Id]++
				per[name]++
				rs = append(rs, obDelivered(d.Id))
			}
			mu.Unlock()
			if len(rs) > 0 {
				if _, err := s.Record(obBg, &pluginv1.RecordRequest{Results: rs}); err != nil {
					errs <- err
					return
				}
			} else {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	wg.Add(2)
	go work("w1", s1)
	go work("w2", s2)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(count) != n {
		t.Fatalf("delivered %d of %d", len(count), n)
	}
	for id, k := range count {
		if k != 1 {
			t.Errorf("%s delivered %d times", id, k)
		}
	}
	if per["w1"] == 0 || per["w2"] == 0 {
		t.Errorf("one worker did everything: %v", per)
	}
	if p := obPending(t, s1); p.Pending != 0 {
		t.Errorf("pending %d", p.Pending)
	}
}

// keysInLanes returns n order keys that fall in n distinct lanes.
func obKeysInLanes(n, lanes int) []string {
	var out []string
	used := map[int]bool{}
	for i := 0; len(out) < n; i++ {
		k := fmt.Sprintf("customer-%d", i)
		if l := lane(k, lanes); !used[l] {
			used[l] = true
			out = append(out, k)
		}
	}
	return out
}

func TestOutboxOrderKeyOneAtATimeInOrder(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	opts := OutboxOptions{Lanes: 8, AckWait: 10 * time.Second}
	s1 := obService(t, obConnect(t, srv, prefix, "w1"), opts)
	s2 := obService(t, obConnect(t, srv, prefix, "w2"), opts)
	keys := obKeysInLanes(2, opts.Lanes)
	a, b := keys[0], keys[1]
	obEnqueue(t, s1, obDel("a0", "ep", a), obDel("a1", "ep", a), obDel("b0", "ep", b), obDel("b1", "ep", b),
		obDel("u0", "ep", ""), obDel("u1", "ep", ""), obDel("u2", "ep", ""))

	// Worker 1 takes one key's head; worker 2 gets the other key's head
	// and the unordered ones (all at once: they are not serialised), but
	// nothing more of the first key.
	first := obLease(t, s1, 1)
	if len(first) != 1 || first[0].OrderKey == "" || !strings.HasSuffix(first[0].Id, "0") {
		t.Fatalf("worker 1: %+v", first)
	}
	held, other := "a", "b"
	if first[0].Id == "b0" {
		held, other = "b", "a"
	}
	got := obLeaseUntil(t, s2, 10, 4, 5*time.Second)
	if !slices.Equal(obIds(got), []string{other + "0", "u0", "u1", "u2"}) {
		t.Fatalf("worker 2 (worker 1 holds %s0): %q", held, obIds(got))
	}
	if more := obLease(t, s1, 10); len(more) != 0 {
		t.Fatalf("worker 1 got %q while both keys' heads are out", obIds(more))
	}
	// A retry keeps its key blocked until its delay is over and it is
	// delivered; the other key goes on meanwhile.
	obRecord(t, s1, obFailed(held+"0", time.Now().Add(500*time.Millisecond)))
	obRecord(t, s2, obDelivered(other+"0"), obDelivered("u0"), obDelivered("u1"), obDelivered("u2"))
	next := obLeaseUntil(t, s1, 10, 1, 5*time.Second)
	if len(next) != 1 || next[0].Id != other+"1" {
		t.Fatalf("after %s0 was delivered: %q", other, obIds(next))
	}
	retried := obLeaseUntil(t, s2, 10, 1, 5*time.Second)
	if len(retried) != 1 || retried[0].Id != held+"0" || retried[0].Attempts != 1 {
		t.Fatalf("the retry of %s0: %+v", held, retried)
	}
	if more := obLease(t, s1, 10); len(more) != 0 {
		t.Fatalf("%q leased while %s0 is being retried", obIds(more), held)
	}
	obRecord(t, s2, obDelivered(held+"0"))
	obRecord(t, s1, obDelivered(other+"1"))
	last := obLeaseUntil(t, s1, 10, 1, 5*time.Second)
	if len(last) != 1 || last[0].Id != held+"1" {
		t.Fatalf("last: %q", obIds(last))
	}
	obRecord(t, s1, obDelivered(held+"1"))
	if p := obPending(t, s1); p.Pending != 0 {
		t.Fatalf("pending %d", p.Pending)
	}
}

// TestOutboxOrderKeysUnderConcurrency: two workers leasing concurrently
// deliver every key's deliveries one at a time and in enqueue order, while
// other keys and the unordered ones proceed.
func TestOutboxOrderKeysUnderConcurrency(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	opts := OutboxOptions{Lanes: 4}
	s1 := obService(t, obConnect(t, srv, prefix, "w1"), opts)
	s2 := obService(t, obConnect(t, srv, prefix, "w2"), opts)
	const keys, perKey, unordered = 10, 8, 60
	var ds []*pluginv1.Delivery
	for i := range perKey {
		for k := range keys {
			ds = append(ds, obDel(fmt.Sprintf("k%d-%d", k, i), fmt.Sprintf("ep%d", k%3), fmt.Sprintf("key %d", k)))
		}
		for u := range unordered / perKey {
			ds = append(ds, obDel(fmt.Sprintf("u%d-%d", i, u), "ep0", ""))
		}
	}
	obEnqueue(t, s1, ds...)
	total := len(ds)
	var mu sync.Mutex
	heldKey := map[string]string{} // order key → the delivery holding it
	nextOf := map[string]int{}     // order key → index of the next delivery due
	count := map[string]int{}
	maxUnordered := 0
	unorderedHeld := 0
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	work := func(name string, s *OutboxService) {
		defer wg.Done()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			done := len(count) == total
			mu.Unlock()
			if done {
				return
			}
			resp, err := s.Lease(obBg, &pluginv1.LeaseRequest{Max: 20})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			for _, d := range resp.Deliveries {
				if d.OrderKey == "" {
					unorderedHeld++
					continue
				}
				if h, ok := heldKey[d.OrderKey]; ok {
					mu.Unlock()
					errs <- fmt.Errorf("%s leased %s while %s of the same key is out", name, d.Id, h)
					return
				}
				var k, i int
				fmt.Sscanf(d.Id, "k%d-%d", &k, &i)
				if i != nextOf[d.OrderKey] {
					mu.Unlock()
					errs <- fmt.Errorf("%s leased %s, want %d of its key next", name, d.Id, nextOf[d.OrderKey])
					return
				}
				heldKey[d.OrderKey] = d.Id
			}
			maxUnordered = max(maxUnordered, unorderedHeld)
			mu.Unlock()
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			var rs []*pluginv1.Result
			mu.Lock()
			for _, d := range resp.Deliveries {
				count[d.Id]++
				if d.OrderKey == "" {
					unorderedHeld--
				} else {
					delete(heldKey, d.OrderKey)
					nextOf[d.OrderKey]++
				}
				rs = append(rs, obDelivered(d.Id))
			}
			mu.Unlock()
			if len(rs) > 0 {
				if _, err := s.Record(obBg, &pluginv1.RecordRequest{Results: rs}); err != nil {
					errs <- err
					return
				}
			} else {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	wg.Add(2)
	go work("w1", s1)
	go work("w2", s2)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(count) != total {
		t.Fatalf("delivered %d of %d", len(count), total)
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	if maxUnordered < 2 {
		t.Errorf("unordered deliveries were never out two at a time (most: %d)", maxUnordered)
	}
}

// TestOutboxLeasesOfAWorkerThatStopsGoToAnother: deliveries held by a
// worker whose connection closed (it died), or whose service was closed,
// are delivered by another worker once AckWait is over; while a live
// worker holds one, it renews it past AckWait.
func TestOutboxLeasesOfAWorkerThatStopsGoToAnother(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	ackWait := time.Second
	opts := OutboxOptions{AckWait: ackWait, Lanes: 4}
	c1 := obConnect(t, srv, prefix, "w1")
	s1 := obService(t, c1, opts)
	s2 := obService(t, obConnect(t, srv, prefix, "w2"), opts)
	keys := obKeysInLanes(2, opts.Lanes)
	obEnqueue(t, s1, obDel("u0", "ep", ""), obDel("u1", "ep", ""), obDel("k0", "ep", keys[0]), obDel("k1", "ep", keys[0]), obDel("j0", "ep", keys[1]))
	got := obLease(t, s1, 10)
	if !slices.Equal(obIds(got), []string{"j0", "k0", "u0", "u1"}) {
		t.Fatalf("worker 1 leased %q", obIds(got))
	}
	// Held by a live worker: renewed, so not handed to worker 2 even
	// after twice AckWait.
	renewed := time.Now().Add(2*ackWait + ackWait/2)
	for time.Now().Before(renewed) {
		if ds := obLease(t, s2, 10); len(ds) != 0 {
			t.Fatalf("worker 2 got %q that worker 1 holds and renews", obIds(ds))
		}
		time.Sleep(50 * time.Millisecond)
	}
	obRecord(t, s1, obDelivered("u1"))
	// Worker 1 dies: its connection closes with u0, k0 and j0 leased.
	c1.Close()
	// (Its last renewal was at most 3/4 of AckWait ago: nothing expired yet.)
	if ds := obLease(t, s2, 10); len(ds) != 0 {
		t.Fatalf("worker 2 got %q at once, before worker 1's leases could expire", obIds(ds))
	}
	got = obLeaseUntil(t, s2, 10, 3, 10*time.Second)
	if !slices.Equal(obIds(got), []string{"j0", "k0", "u0"}) {
		t.Fatalf("worker 2 after worker 1 died: %q", obIds(got))
	}
	for _, d := range got {
		if d.Attempts != 0 {
			t.Errorf("%s: attempts %d", d.Id, d.Attempts)
		}
	}
	obRecord(t, s2, obDelivered("u0"), obDelivered("j0"), obDelivered("k0"))
	// A worker that closes its service while holding a delivery: the
	// other gets it after AckWait.
	s3 := obService(t, obConnect(t, srv, prefix, "w3"), opts)
	if ds := obLeaseUntil(t, s3, 10, 1, 5*time.Second); len(ds) != 1 || ds[0].Id != "k1" {
		t.Fatalf("worker 3: %q", obIds(ds))
	}
	s3.Close()
	if _, err := s3.Lease(obBg, &pluginv1.LeaseRequest{Max: 1}); err == nil {
		t.Error("a closed service still leases")
	}
	if ds := obLeaseUntil(t, s2, 10, 1, 10*time.Second); len(ds) != 1 || ds[0].Id != "k1" {
		t.Fatalf("worker 2 after worker 3 closed: %q", obIds(ds))
	}
	obRecord(t, s2, obDelivered("k1"))
	if p := obPending(t, s2); p.Pending != 0 {
		t.Fatalf("pending %d", p.Pending)
	}
}

// TestOutboxSurvivesNATSRestart: NATS restarts while deliveries are
// pending and leased; enqueue, lease and record work again and nothing is
// lost or delivered twice.
func TestOutboxSurvivesNATSRestart(t *testing.T) {
	srv, _, s := obOne(t, OutboxOptions{AckWait: 20 * time.Second, Lanes: 4})
	var ds []*pluginv1.Delivery
	for i := range 10 {
		key := ""
		if i%3 == 0 {
			key = fmt.Sprintf("key %d", i%2)
		}
		ds = append(ds, obDel(fmt.Sprintf("d%d", i), "ep", key))
	}
	obEnqueue(t, s, ds...)
	held := obLease(t, s, 4)
	if len(held) != 4 {
		t.Fatalf("leased %q", obIds(held))
	}
	srv.Restart(t)
	// Back once JetStream answers again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := s.Pending(obBg, &pluginv1.PendingRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NATS did not come back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	done := map[string]int{}
	var rs []*pluginv1.Result
	for _, d := range held {
		rs = append(rs, obDelivered(d.Id))
		done[d.Id]++
	}
	obRecord(t, s, rs...)
	var more []*pluginv1.Delivery
	for i := 10; i < 15; i++ {
		more = append(more, obDel(fmt.Sprintf("d%d", i), "ep", ""))
	}
	if r := obEnqueue(t, s, append(more, ds[0])...); r.Added != 5 {
		t.Fatalf("enqueue after the restart added %d, want 5", r.Added)
	}
	deadline = time.Now().Add(20 * time.Second)
	for len(done) < 15 && time.Now().Before(deadline) {
		got := obLease(t, s, 10)
		rs = nil
		for _, d := range got {
			done[d.Id]++
			rs = append(rs, obDelivered(d.Id))
		}
		if len(rs) > 0 {
			obRecord(t, s, rs...)
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if len(done) != 15 {
		t.Fatalf("delivered %v", done)
	}
	for id, n := range done {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	if p := obPending(t, s); p.Pending != 0 {
		t.Fatalf("pending %d", p.Pending)
	}
}

func TestOutboxRetentionIsTheStreamsMaxAge(t *testing.T) {
	srv, c, s := obOne(t, OutboxOptions{})
	n := c.outboxNames(obTestPipeline, obTestSink)
	maxAge := func(name string) time.Duration {
		st, err := c.JetStream().Stream(obBg, name)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.MaxAge
	}
	if maxAge(n.dead) != 30*24*time.Hour || maxAge(n.log) != 30*24*time.Hour {
		t.Fatalf("defaults: dead %v, log %v", maxAge(n.dead), maxAge(n.log))
	}
	if _, err := s.SetRetention(obBg, &pluginv1.SetRetentionRequest{AttemptsMs: 2 * 3600e3, DeadMs: 3600e3}); err != nil {
		t.Fatal(err)
	}
	if maxAge(n.dead) != time.Hour || maxAge(n.log) != 2*time.Hour {
		t.Fatalf("set: dead %v, log %v", maxAge(n.dead), maxAge(n.log))
	}
	// Another worker's service keeps what was set.
	obService(t, obConnect(t, srv, c.Prefix(), "w2"), OutboxOptions{})
	if maxAge(n.dead) != time.Hour || maxAge(n.log) != 2*time.Hour {
		t.Fatalf("after another service started: dead %v, log %v", maxAge(n.dead), maxAge(n.log))
	}
	if _, err := s.SetRetention(obBg, &pluginv1.SetRetentionRequest{DeadMs: -1}); err == nil {
		t.Error("a negative retention was accepted")
	}
	// Another lane count for the same outbox is refused.
	if _, err := c.OutboxService(obBg, obTestPipeline, obTestSink, OutboxOptions{Lanes: 7}); err == nil {
		t.Error("a second lane count was accepted")
	}
}

func TestOutboxNames(t *testing.T) {
	c := &Cluster{opts: Options{Prefix: "pipeline"}}
	a, b := c.outboxNames("a_b", "c"), c.outboxNames("a", "b_c")
	if a.stream == b.stream || a.key == b.key || a.subject == b.subject {
		t.Fatalf("two sinks share names: %+v %+v", a, b)
	}
	if got := c.outboxNames("churn", "crm").stream; got != "pipeline_outbox_churn~crm" {
		t.Errorf("stream %q", got)
	}
	long := c.outboxNames(strings.Repeat("p", 300), "s")
	if len(long.stream) > maxStreamName || long.stream == c.outboxNames(strings.Repeat("p", 301), "s").stream {
		t.Errorf("long names: %q", long.stream)
	}
	for _, v := range []string{"", "plain", "two words", "line\nbreak", "100%", "käy", " edge "} {
		if e := hdrEscape(v); hdrUnescape(e) != v || strings.ContainsAny(e, " \n") {
			t.Errorf("%q escaped %q", v, e)
		}
	}
	if idToken(strings.Repeat("x", 500)) == idToken(strings.Repeat("x", 501)) || len(idToken(strings.Repeat("x", 500))) > 128 {
		t.Error("long ids")
	}
}

// TestOutboxKeptDeliveriesAreRenewed: what a lease fetched over its
// max_per_endpoint is kept (renewed) for this worker's next lease, not
// lost and not handed to another worker meanwhile.
func TestOutboxKeptDeliveriesAreRenewed(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	opts := OutboxOptions{AckWait: time.Second}
	s1 := obService(t, obConnect(t, srv, prefix, "w1"), opts)
	s2 := obService(t, obConnect(t, srv, prefix, "w2"), opts)
	obEnqueue(t, s1, obDel("a0", "A", ""), obDel("a1", "A", ""), obDel("a2", "A", ""), obDel("a3", "A", ""))
	resp, err := s1.Lease(obBg, &pluginv1.LeaseRequest{Max: 10, MaxPerEndpoint: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Deliveries) != 1 {
		t.Fatalf("max 1 per endpoint: %q", obIds(resp.Deliveries))
	}
	until := time.Now().Add(2*opts.AckWait + opts.AckWait/2)
	for time.Now().Before(until) {
		if ds := obLease(t, s2, 10); len(ds) != 0 {
			t.Fatalf("worker 2 got %q, kept by worker 1", obIds(ds))
		}
		time.Sleep(50 * time.Millisecond)
	}
	rest := obLease(t, s1, 10)
	if len(rest) != 3 {
		t.Fatalf("the kept ones: %q", obIds(rest))
	}
	for _, d := range append(rest, resp.Deliveries...) {
		obRecord(t, s1, obDelivered(d.Id))
	}
	if p := obPending(t, s1); p.Pending != 0 {
		t.Fatalf("pending %d", p.Pending)
	}
}

// A worker holds at most MaxHeld deliveries, whatever a Lease asks for:
// the rest stays for the other workers.
func TestOutboxMaxHeldLeavesTheRestToOthers(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	s1 := obService(t, obConnect(t, srv, prefix, "w1"), OutboxOptions{MaxHeld: 10})
	s2 := obService(t, obConnect(t, srv, prefix, "w2"), OutboxOptions{MaxHeld: 100})
	var ds []*pluginv1.Delivery
	for i := range 30 {
		ds = append(ds, obDel(fmt.Sprintf("d%02d", i), "ep", ""))
	}
	obEnqueue(t, s1, ds...)
	first := obLease(t, s1, 1000)
	if len(first) != 10 {
		t.Fatalf("w1 leased %d, want its MaxHeld 10", len(first))
	}
	if more := obLease(t, s1, 1000); len(more) != 0 {
		t.Fatalf("w1 leased %d more while holding its MaxHeld", len(more))
	}
	rest := obLeaseUntil(t, s2, 1000, 20, 10*time.Second)
	seen := map[string]bool{}
	for _, d := range append(first, rest...) {
		if seen[d.Id] {
			t.Errorf("%s leased twice", d.Id)
		}
		seen[d.Id] = true
	}
	if len(seen) != 30 {
		t.Errorf("%d distinct deliveries leased, want 30", len(seen))
	}
	// Recording frees room.
	obRecord(t, s1, obDelivered(first[0].Id))
	obEnqueue(t, s2, obDel("late", "ep", ""))
	if got := obLeaseUntil(t, s1, 1000, 1, 10*time.Second); len(got) != 1 || got[0].Id != "late" {
		t.Errorf("after recording one, w1 leased %v, want [late]", obIds(got))
	}
}
