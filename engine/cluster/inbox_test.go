package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelinehq/pipeline/engine/cluster/natstest"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// The inbox of a push source on an embedded JetStream server: each test
// starts its own server and uses its own prefix; each service stands for
// one worker.

const (
	ibTestPipeline = "push in"
	ibTestSource   = "api/v1" // not a token: the names must still work
)

var ibBg = context.Background()

func ibService(t testing.TB, c *Cluster, opts InboxOptions) *InboxService {
	t.Helper()
	s, err := c.InboxService(ibBg, ibTestPipeline, ibTestSource, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ibEntry is an entry of n records named name-0 … name-(n-1).
func ibEntry(name string, n int) *pluginv1.InboxEntry {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"row_id":"%s-%d"}`+"\n", name, i)
	}
	return &pluginv1.InboxEntry{Records: []byte(b.String()), Count: uint32(n), Origin: "origin of " + name, Response: []byte(`{"accepted":` + fmt.Sprint(n) + `,"name":"` + name + `"}`)}
}

func ibKeyed(name string, n int, key string, window time.Duration) *pluginv1.InboxEntry {
	e := ibEntry(name, n)
	e.Key, e.KeyWindowMs = key, window.Milliseconds()
	return e
}

func ibAppend(t testing.TB, s *InboxService, es ...*pluginv1.InboxEntry) *pluginv1.InboxAppendResponse {
	t.Helper()
	resp, err := s.InboxAppend(ibBg, &pluginv1.InboxAppendRequest{Entries: es})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != len(es) {
		t.Fatalf("%d results for %d entries", len(resp.Results), len(es))
	}
	return resp
}

func ibRead(t testing.TB, s *InboxService, after int64, max int, wait time.Duration) *pluginv1.InboxReadResponse {
	t.Helper()
	resp, err := s.InboxRead(ibBg, &pluginv1.InboxReadRequest{After: after, MaxRecords: uint32(max), WaitMs: uint32(wait.Milliseconds())})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func ibStatus(t testing.TB, s *InboxService) *pluginv1.InboxStatusResponse {
	t.Helper()
	st, err := s.InboxStatus(ibBg, &pluginv1.InboxStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ibReader reads one service's entries the way the push source does: each
// read after the last number it got.
type ibReader struct {
	s    *InboxService
	last int64
	ids  []string // the records' row_ids, in the order read
}

func (r *ibReader) read(t testing.TB, max int, wait time.Duration) []*pluginv1.InboxStored {
	t.Helper()
	resp := ibRead(t, r.s, r.last, max, wait)
	for _, e := range resp.Entries {
		if e.First != r.last+1 {
			t.Fatalf("entry numbered from %d after %d: numbers must follow on", e.First, r.last)
		}
		r.last = e.First + int64(e.Count) - 1
		lines := strings.Split(strings.TrimSuffix(string(e.Records), "\n"), "\n")
		if len(lines) != int(e.Count) {
			t.Fatalf("entry of %d records holds %d lines", e.Count, len(lines))
		}
		for _, l := range lines {
			var v struct {
				RowID string `json:"row_id"`
			}
			json.Unmarshal([]byte(l), &v)
			r.ids = append(r.ids, v.RowID)
		}
	}
	return resp.Entries
}

func (r *ibReader) commit(t testing.TB) {
	t.Helper()
	if err := r.s.Committed(ibBg, sdk.InboxPosition(r.last)); err != nil {
		t.Fatal(err)
	}
}

// readUntil reads until the reader has n records, failing after timeout.
func (r *ibReader) readUntil(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(r.ids) < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %d records after %s, want %d", len(r.ids), timeout, n)
		}
		r.read(t, 100, 100*time.Millisecond)
	}
}

func ibNames(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

// Stored entries are read with their records numbered from 1, count as
// pending until committed, and are gone once committed.
func TestInboxAppendReadCommit(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	s := ibService(t, obConnect(t, srv, prefix, "w1"), InboxOptions{})
	resp := ibAppend(t, s, ibEntry("a", 2), ibEntry("b", 1), ibEntry("c", 3))
	for i, r := range resp.Results {
		if r.Duplicate || r.First <= 0 {
			t.Errorf("entry %d: %+v, want stored", i, r)
		}
	}
	if resp.Pending != 6 {
		t.Errorf("pending after the append: %d, want 6", resp.Pending)
	}
	info, err := s.stream.Info(ibBg)
	if err != nil {
		t.Fatal(err)
	}
	// Kept on disk, each entry until it is acked.
	if cfg := info.Config; cfg.Retention != jetstream.WorkQueuePolicy || cfg.Storage != jetstream.FileStorage || cfg.Name != s.n.stream {
		t.Errorf("stream %s: retention %v, storage %v", cfg.Name, cfg.Retention, cfg.Storage)
	}
	if st := ibStatus(t, s); st.Pending != 6 || st.OldestPendingUnixMs == 0 || st.Last != 0 {
		t.Errorf("status before reading: %+v, want 6 pending with a time, last 0", st)
	}
	r := &ibReader{s: s}
	es := r.read(t, 3, 0) // whole entries, stopping once 3 records are reached
	if len(es) != 2 || es[0].First != 1 || es[1].First != 3 || es[0].Origin != "origin of a" || es[0].ReceivedUnixMs == 0 {
		t.Fatalf("first read: %+v", es)
	}
	r.read(t, 100, 0)
	if want := append(append(ibNames("a", 2), ibNames("b", 1)...), ibNames("c", 3)...); !slices.Equal(r.ids, want) {
		t.Fatalf("read %q, want %q", r.ids, want)
	}
	if st := ibStatus(t, s); st.Pending != 6 || st.Last != 6 {
		t.Errorf("status after reading: %+v, want 6 pending (read, not committed), last 6", st)
	}
	// A read that starts over from an earlier position gets what was
	// handed out past it again, with the same numbers.
	if again := ibRead(t, s, 2, 100, 0); len(again.Entries) != 2 || again.Entries[0].First != 3 || again.Entries[1].First != 4 {
		t.Errorf("reading after 2 again: %+v", again.Entries)
	}
	// Committing 3 lets a and b go (all their records are at or before
	// it), not c.
	if err := s.Committed(ibBg, sdk.InboxPosition(3)); err != nil {
		t.Fatal(err)
	}
	if st := ibStatus(t, s); st.Pending != 3 {
		t.Errorf("pending after committing 3: %d, want 3", st.Pending)
	}
	r.commit(t)
	if st := ibStatus(t, s); st.Pending != 0 || st.OldestPendingUnixMs != 0 {
		t.Errorf("status after committing all: %+v", st)
	}
	// Gone: another worker finds nothing, even after the ack wait.
	s.Close()
	s2 := ibService(t, obConnect(t, srv, prefix, "w2"), InboxOptions{AckWait: 200 * time.Millisecond})
	time.Sleep(400 * time.Millisecond)
	if got := ibRead(t, s2, 0, 100, 200*time.Millisecond); len(got.Entries) != 0 || !got.Waited {
		t.Errorf("after the commit another worker read %+v", got)
	}
	if _, err := s.InboxRead(ibBg, &pluginv1.InboxReadRequest{}); err == nil {
		t.Error("a closed service still reads")
	}
}

// A read with nothing there waits for what is stored next, by any worker,
// and says it waited when nothing came.
func TestInboxReadWaitsForTheNextEntry(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	s1 := ibService(t, obConnect(t, srv, prefix, "w1"), InboxOptions{})
	s2 := ibService(t, obConnect(t, srv, prefix, "w2"), InboxOptions{})
	start := time.Now()
	got := ibRead(t, s1, 0, 100, 300*time.Millisecond)
	if len(got.Entries) != 0 || !got.Waited || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("an empty inbox: %+v after %s, want nothing, waited, after about 300ms", got, time.Since(start))
	}
	if got := ibRead(t, s1, 0, 100, 0); got.Waited {
		t.Error("a read asked not to wait says it waited")
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		ibAppend(t, s2, ibEntry("x", 1))
	}()
	start = time.Now()
	got = ibRead(t, s1, 0, 100, 4*time.Second)
	if len(got.Entries) != 1 || got.Waited {
		t.Fatalf("read %+v", got)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the entry another worker stored came after %s: a waiting read takes it when it is stored", d)
	}
}

// A dedupe key is honoured across workers: the first request with it
// stores its entry, every later one (on any worker, concurrent or not) is
// answered with the first's response and stores nothing.
func TestInboxDuplicatesAcrossWorkers(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	s1 := ibService(t, obConnect(t, srv, prefix, "w1"), InboxOptions{})
	s2 := ibService(t, obConnect(t, srv, prefix, "w2"), InboxOptions{})
	const day = 24 * time.Hour

	first := ibAppend(t, s1, ibKeyed("k1", 2, "idempotency:K1", day))
	if first.Results[0].Duplicate {
		t.Fatal("the first request with a key is a duplicate")
	}
	again := ibAppend(t, s2, ibKeyed("k1-retry", 2, "idempotency:K1", day), ibEntry("plain", 1))
	if r := again.Results[0]; !r.Duplicate || string(r.Response) != `{"accepted":2,"name":"k1"}` {
		t.Errorf("a retry on the other worker: %+v, want a duplicate with the first response", r)
	}
	if again.Results[1].Duplicate {
		t.Error("an entry without a key is a duplicate")
	}
	// The same key twice in one call: the second gets the first's response.
	both := ibAppend(t, s1, ibKeyed("k2", 1, "idempotency:K2", day), ibKeyed("k2-again", 1, "idempotency:K2", day))
	if both.Results[0].Duplicate || !both.Results[1].Duplicate || string(both.Results[1].Response) != `{"accepted":1,"name":"k2"}` {
		t.Errorf("one call, one key twice: %+v", both.Results)
	}
	// Many requests with one key at once, on both workers: one is stored.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stored []string
	responses := map[string]int{}
	for i := range 20 {
		s := []*InboxService{s1, s2}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("k3-%d", i)
			resp, err := s.InboxAppend(ibBg, &pluginv1.InboxAppendRequest{Entries: []*pluginv1.InboxEntry{ibKeyed(name, 1, "webhook:K3", day)}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			r := resp.Results[0]
			if !r.Duplicate {
				stored = append(stored, name)
				responses[`{"accepted":1,"name":"`+name+`"}`]++
			} else {
				responses[string(r.Response)]++
			}
		}()
	}
	wg.Wait()
	if len(stored) != 1 || len(responses) != 1 {
		t.Fatalf("20 concurrent requests with one key: stored %q, responses %v; want one stored, all answered alike", stored, responses)
	}
	// A key past its window is a new request.
	ibAppend(t, s1, ibKeyed("k4", 1, "idempotency:K4", time.Millisecond))
	time.Sleep(20 * time.Millisecond)
	if r := ibAppend(t, s2, ibKeyed("k4-later", 1, "idempotency:K4", time.Millisecond)); r.Results[0].Duplicate {
		t.Error("a key past its window is still a duplicate")
	}
	// What the inbox holds: k1, plain, k2, the one of k3, k4, k4-later.
	r := &ibReader{s: s1}
	r.readUntil(t, 2+1+1+1+1+1, 5*time.Second)
	slices.Sort(r.ids)
	want := []string{"k1-0", "k1-1", "k2-0", "k4-0", "k4-later-0", "plain-0", stored[0] + "-0"}
	slices.Sort(want)
	if !slices.Equal(r.ids, want) {
		t.Errorf("the inbox holds %q, want %q", r.ids, want)
	}
	if got := ibRead(t, s2, 0, 100, 200*time.Millisecond); len(got.Entries) != 0 {
		t.Errorf("more entries: %+v", got.Entries)
	}
}

// A worker that died between storing a request's key and its PubAck left
// the key pending: the retry is answered with the first response and its
// records are stored, once (the stream drops a second copy under the
// key's Nats-Msg-Id if the first did get there).
func TestInboxPendingKeyIsStoredOnce(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	c := obConnect(t, srv, prefix, "w1")
	s := ibService(t, c, InboxOptions{})
	expires := time.Now().Add(time.Hour).UnixMilli()
	pending := func(key, response string) {
		t.Helper()
		data, _ := json.Marshal(keyRecord{Response: []byte(response), Expires: expires})
		if _, err := s.keys.Create(ibBg, s.n.key+"."+dedupeKey(key), data); err != nil {
			t.Fatal(err)
		}
	}
	// Died before publishing.
	pending("idempotency:A", `{"first":"a"}`)
	r1 := ibAppend(t, s, ibKeyed("a", 2, "idempotency:A", time.Hour))
	if r := r1.Results[0]; !r.Duplicate || string(r.Response) != `{"first":"a"}` {
		t.Errorf("retry of a pending key: %+v", r)
	}
	// Died after publishing.
	pending("idempotency:B", `{"first":"b"}`)
	m := nats.NewMsg(s.n.entrySubject(1))
	m.Header.Set(hdrMsgID, (&appendJob{e: &pluginv1.InboxEntry{Key: "idempotency:B"}, rec: keyRecord{Expires: expires}}).msgID())
	m.Data = []byte(`{"row_id":"b-first-0"}` + "\n")
	if _, err := c.JetStream().PublishMsg(ibBg, m); err != nil {
		t.Fatal(err)
	}
	ibAppend(t, s, ibKeyed("b", 1, "idempotency:B", time.Hour))
	// Both are marked stored now: later retries store nothing.
	ibAppend(t, s, ibKeyed("a-late", 2, "idempotency:A", time.Hour), ibKeyed("b-late", 1, "idempotency:B", time.Hour))
	r := &ibReader{s: s}
	r.readUntil(t, 3, 5*time.Second)
	if got := ibRead(t, s, r.last, 100, 200*time.Millisecond); len(got.Entries) != 0 {
		t.Errorf("more entries: %+v", got.Entries)
	}
	slices.Sort(r.ids)
	if want := []string{"a-0", "a-1", "b-first-0"}; !slices.Equal(r.ids, want) {
		t.Errorf("the inbox holds %q, want %q", r.ids, want)
	}
}

// Two workers reading one inbox get disjoint entries, and together all.
func TestInboxTwoWorkersReadDisjointEntries(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	s1 := ibService(t, obConnect(t, srv, prefix, "w1"), InboxOptions{})
	s2 := ibService(t, obConnect(t, srv, prefix, "w2"), InboxOptions{})
	const n = 300
	var want []string
	go func() {
		for i := range n / 10 {
			var es []*pluginv1.InboxEntry
			for j := range 10 {
				es = append(es, ibEntry(fmt.Sprintf("e%d", i*10+j), 1))
			}
			ibAppend(t, []*InboxService{s1, s2}[i%2], es...)
		}
	}()
	for i := range n {
		want = append(want, fmt.Sprintf("e%d-0", i))
	}
	readers := []*ibReader{{s: s1}, {s: s2}}
	deadline := time.Now().Add(20 * time.Second)
	for len(readers[0].ids)+len(readers[1].ids) < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %d+%d of %d", len(readers[0].ids), len(readers[1].ids), n)
		}
		var wg sync.WaitGroup
		for _, r := range readers {
			wg.Add(1)
			go func() { defer wg.Done(); r.read(t, 7, 50*time.Millisecond); r.commit(t) }()
		}
		wg.Wait()
	}
	for i, r := range readers {
		if len(r.ids) == 0 {
			t.Errorf("worker %d read nothing", i+1)
		}
	}
	all := append(slices.Clone(readers[0].ids), readers[1].ids...)
	slices.Sort(all)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Fatalf("together they read %d records (%d distinct wanted): an entry went to both, or to none", len(all), len(want))
	}
	if st := ibStatus(t, s1); st.Pending != 0 {
		t.Errorf("pending after both committed: %d", st.Pending)
	}
}

// What a worker read and did not commit goes to another: at once when it
// closes its service (it stopped), after AckWait when it dies; while it
// lives it keeps its entries, renewed, however long the commit takes.
func TestInboxUncommittedEntriesGoToAnotherWorker(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	ackWait := time.Second
	opts := InboxOptions{AckWait: ackWait}
	c1 := obConnect(t, srv, prefix, "w1")
	s1 := ibService(t, c1, opts)
	s2 := ibService(t, obConnect(t, srv, prefix, "w2"), opts)
	ibAppend(t, s1, ibEntry("a", 2), ibEntry("b", 1))
	r1 := &ibReader{s: s1}
	r1.readUntil(t, 3, 5*time.Second)
	// Held by a live worker: renewed, so not handed to worker 2 even
	// after twice AckWait.
	renewed := time.Now().Add(2*ackWait + ackWait/2)
	for time.Now().Before(renewed) {
		if got := ibRead(t, s2, 0, 100, 50*time.Millisecond); len(got.Entries) != 0 {
			t.Fatalf("worker 2 got %+v that worker 1 holds and renews", got.Entries)
		}
	}
	// Worker 1 dies: its connection closes with both entries read and
	// not committed. Worker 2 gets them after AckWait.
	c1.Close()
	died := time.Now()
	r2 := &ibReader{s: s2}
	r2.readUntil(t, 3, 10*time.Second)
	if d := time.Since(died); d < ackWait/4 {
		t.Errorf("worker 2 got worker 1's entries %s after it died: before they could expire", d)
	}
	slices.Sort(r2.ids)
	if want := []string{"a-0", "a-1", "b-0"}; !slices.Equal(r2.ids, want) {
		t.Errorf("worker 2 read %q, want %q", r2.ids, want)
	}
	r2.commit(t)
	// A worker that stops (closes its service) hands back at once.
	s3 := ibService(t, obConnect(t, srv, prefix, "w3"), opts)
	ibAppend(t, s3, ibEntry("c", 1))
	r3 := &ibReader{s: s3}
	r3.readUntil(t, 1, 5*time.Second)
	s3.Close()
	closed := time.Now()
	r2.readUntil(t, 4, 5*time.Second)
	if d := time.Since(closed); d > ackWait/2 {
		t.Errorf("worker 3's entry came %s after it closed: a closed service hands back at once", d)
	}
	r2.commit(t)
	if st := ibStatus(t, s2); st.Pending != 0 {
		t.Errorf("pending %d", st.Pending)
	}
}

// A worker holds at most MaxHeld entries read and not committed; the rest
// stays for the others.
func TestInboxMaxHeldLeavesTheRestToOthers(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	s1 := ibService(t, obConnect(t, srv, prefix, "w1"), InboxOptions{MaxHeld: 2})
	s2 := ibService(t, obConnect(t, srv, prefix, "w2"), InboxOptions{})
	ibAppend(t, s1, ibEntry("a", 1), ibEntry("b", 1), ibEntry("c", 1), ibEntry("d", 1))
	r1 := &ibReader{s: s1}
	r1.readUntil(t, 2, 5*time.Second)
	start := time.Now()
	if got := ibRead(t, s1, r1.last, 100, 200*time.Millisecond); len(got.Entries) != 0 || !got.Waited || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("worker 1 holding its MaxHeld read %+v", got)
	}
	r2 := &ibReader{s: s2}
	r2.readUntil(t, 2, 5*time.Second)
	r1.commit(t)
	r2.commit(t)
	all := append(slices.Clone(r1.ids), r2.ids...)
	slices.Sort(all)
	if want := []string{"a-0", "b-0", "c-0", "d-0"}; !slices.Equal(all, want) {
		t.Errorf("read %q, want %q", all, want)
	}
}

// NATS restarts with entries stored, some read and held: the held ones are
// committed after it, the others read, and nothing is lost or read twice.
func TestInboxSurvivesNATSRestart(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	s := ibService(t, obConnect(t, srv, prefix, "w1"), InboxOptions{AckWait: 20 * time.Second})
	var es []*pluginv1.InboxEntry
	for i := range 10 {
		es = append(es, ibEntry(fmt.Sprintf("e%d", i), 1))
	}
	ibAppend(t, s, append(es, ibKeyed("k", 1, "idempotency:K", time.Hour))...)
	r := &ibReader{s: s}
	r.read(t, 4, 0)
	if len(r.ids) != 4 {
		t.Fatalf("read %q", r.ids)
	}
	srv.Restart(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := s.InboxStatus(ibBg, &pluginv1.InboxStatusRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NATS did not come back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.commit(t)
	// The key survived: a retry stores nothing.
	if a := ibAppend(t, s, ibKeyed("k-retry", 1, "idempotency:K", time.Hour), ibEntry("e10", 1)); !a.Results[0].Duplicate {
		t.Error("the dedupe key was forgotten over the restart")
	}
	r.readUntil(t, 12, 10*time.Second)
	r.commit(t)
	if got := ibRead(t, s, r.last, 100, 200*time.Millisecond); len(got.Entries) != 0 {
		t.Errorf("more entries: %+v", got.Entries)
	}
	want := []string{"k-0"}
	for i := range 11 {
		want = append(want, fmt.Sprintf("e%d-0", i))
	}
	slices.Sort(want)
	slices.Sort(r.ids)
	if !slices.Equal(r.ids, want) {
		t.Errorf("read %q, want %q", r.ids, want)
	}
	if st := ibStatus(t, s); st.Pending != 0 {
		t.Errorf("pending %d", st.Pending)
	}
}

// Requests reported by the source are counted and handed on.
func TestInboxRequestsAreCounted(t *testing.T) {
	srv := natstest.Start(t)
	var mu sync.Mutex
	got := map[int]int64{}
	s := ibService(t, obConnect(t, srv, obTestPrefix(), "w1"), InboxOptions{OnRequests: func(by map[int]int64) {
		mu.Lock()
		defer mu.Unlock()
		for code, n := range by {
			got[code] += n
		}
	}})
	for range 2 {
		if _, err := s.InboxRequests(ibBg, &pluginv1.InboxRequestsRequest{ByStatus: map[int32]int64{202: 3, 429: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	ibAppend(t, s, ibEntry("a", 2))
	p := s.Progress()
	if p.Requests[202] != 6 || p.Requests[429] != 2 || p.Accepted != 2 || p.Pending != 2 {
		t.Errorf("progress %+v", p)
	}
	mu.Lock()
	defer mu.Unlock()
	if got[202] != 6 || got[429] != 2 {
		t.Errorf("handed on %v", got)
	}
}

func TestInboxNames(t *testing.T) {
	c := &Cluster{opts: Options{Prefix: "p"}}
	n := c.inboxNames("churn alerts", "api/v1")
	if n.stream != "p_inbox_churn=20alerts~api=2Fv1" || n.entrySubject(3) != "p.inbox.churn=20alerts.api=2Fv1.3" || n.keys != "p_inbox_keys" {
		t.Errorf("names %+v", n)
	}
	// The inbox's stream never takes an outbox's subjects.
	if o := c.outboxNames("churn alerts", "api/v1"); strings.HasPrefix(o.subject, n.subject) || strings.HasPrefix(n.subject, o.subject) {
		t.Errorf("inbox subject %q and outbox subject %q overlap", n.subject, o.subject)
	}
}

// An entry must fit one NATS message: the inbox says how much that is, and
// refuses a larger one without storing anything.
func TestInboxEntriesFitOneMessage(t *testing.T) {
	srv := natstest.Start(t)
	s := ibService(t, obConnect(t, srv, obTestPrefix(), "w1"), InboxOptions{})
	limit := ibStatus(t, s).MaxEntryBytes
	if want := s.c.nc.MaxPayload() - entryHeaderRoom; limit != want || limit <= 0 {
		t.Fatalf("max_entry_bytes %d, want %d (the server's max_payload less room for headers)", limit, want)
	}
	big := &pluginv1.InboxEntry{Records: []byte(`{"x":"` + strings.Repeat("a", int(limit)) + `"}` + "\n"), Count: 1}
	if _, err := s.InboxAppend(ibBg, &pluginv1.InboxAppendRequest{Entries: []*pluginv1.InboxEntry{big}}); err == nil || !strings.Contains(err.Error(), "max_payload") {
		t.Fatalf("an entry over the limit: %v", err)
	}
	fits := &pluginv1.InboxEntry{Records: []byte(`{"x":"` + strings.Repeat("a", int(limit)-10) + `"}` + "\n"), Count: 1}
	ibAppend(t, s, fits)
	if st := ibStatus(t, s); st.Pending != 1 {
		t.Errorf("pending %d, want the one that fits", st.Pending)
	}
}

// A request that finds its key pending while the first request is still
// storing it waits for that one, and stores nothing of its own: the inbox
// holds the first's records, which the response it gets stands for.
func TestInboxRequestWaitsForAPendingKey(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	c := obConnect(t, srv, prefix, "w1")
	s := ibService(t, c, InboxOptions{})
	expires := time.Now().Add(time.Hour).UnixMilli()
	kvKey := s.n.key + "." + dedupeKey("idempotency:C")
	first := keyRecord{Response: []byte(`{"first":"c"}`), Expires: expires, Storing: time.Now().UnixMilli()}
	data, _ := json.Marshal(first)
	rev, err := s.keys.Create(ibBg, kvKey, data)
	if err != nil {
		t.Fatal(err)
	}
	// The first request (of another worker) gets its PubAck 150 ms later.
	stored := make(chan struct{})
	go func() {
		defer close(stored)
		time.Sleep(150 * time.Millisecond)
		m := nats.NewMsg(s.n.entrySubject(1))
		m.Header.Set(hdrMsgID, (&appendJob{e: &pluginv1.InboxEntry{Key: "idempotency:C"}, rec: first}).msgID())
		m.Data = []byte(`{"row_id":"c-first-0"}` + "\n")
		if _, err := c.JetStream().PublishMsg(ibBg, m); err != nil {
			t.Error(err)
			return
		}
		done := first
		done.Stored, done.Storing = true, 0
		data, _ := json.Marshal(done)
		if _, err := s.keys.Update(ibBg, kvKey, data, rev); err != nil {
			t.Error(err)
		}
	}()
	r := ibAppend(t, s, ibKeyed("c-retry", 3, "idempotency:C", time.Hour))
	select {
	case <-stored:
	default:
		t.Error("the retry was answered before the first request was stored")
	}
	if res := r.Results[0]; !res.Duplicate || string(res.Response) != `{"first":"c"}` {
		t.Errorf("retry of a key being stored: %+v, want a duplicate with the first response", res)
	}
	// A key its request gave up on (its publish failed) is not waited for:
	// the retry stores its own records.
	j := &appendJob{e: ibKeyed("d", 1, "idempotency:D", time.Hour), store: true, kvKey: s.n.key + "." + dedupeKey("idempotency:D")}
	if err := s.claimKey(ibBg, j, time.Now()); err != nil {
		t.Fatal(err)
	}
	s.giveUpKeys([]*appendJob{j})
	kve, err := s.keys.Get(ibBg, j.kvKey)
	if err != nil {
		t.Fatal(err)
	}
	var given keyRecord
	if err := json.Unmarshal(kve.Value(), &given); err != nil || given.Stored || given.Storing != 0 || string(given.Response) != string(j.e.Response) {
		t.Errorf("a given-up key holds %s (%v), want it pending, not storing, with the first response", kve.Value(), err)
	}
	if res := ibAppend(t, s, ibKeyed("d-retry", 2, "idempotency:D", time.Hour)).Results[0]; !res.Duplicate || string(res.Response) != string(j.e.Response) {
		t.Errorf("retry of a given-up key: %+v", res)
	}
	rd := &ibReader{s: s}
	rd.readUntil(t, 3, 5*time.Second)
	if got := ibRead(t, s, rd.last, 100, 200*time.Millisecond); len(got.Entries) != 0 {
		t.Errorf("more entries: %+v", got.Entries)
	}
	slices.Sort(rd.ids)
	if want := []string{"c-first-0", "d-retry-0", "d-retry-1"}; !slices.Equal(rd.ids, want) {
		t.Errorf("the inbox holds %q, want %q", rd.ids, want)
	}
}
