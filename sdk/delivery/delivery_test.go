package delivery_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

func outcome(o policy.Outcome) *policy.Outcome { return &o }

func TestRetriesUntilDelivered(t *testing.T) {
	sched := []time.Duration{0, 20 * ms, 40 * ms, 60 * ms, 80 * ms}
	tests := []struct {
		name     string
		failures int
		res      delivery.Result
		wantCode int    // status code logged for the failed attempts
		wantErr  string // error logged for the failed attempts
	}{
		{"first attempt succeeds", 0, delivery.Result{}, 0, ""},
		{"503 twice", 2, delivery.Result{Status: 503, Body: []byte("busy")}, 503, "503 Service Unavailable"},
		{"network error once", 1, delivery.Result{Err: errors.New("dial tcp: connection refused")}, 0, "dial tcp: connection refused"},
		{"429 three times", 3, delivery.Result{Status: 429}, 429, "429 Too Many Requests"},
		{"408 and 425 are retried too", 1, delivery.Result{Status: 425}, 425, "425 Too Early"},
		{"a redirect is a failure", 1, delivery.Result{Status: 302}, 302, "302 Found"},
		{"200 that the transport calls a retry", 4, delivery.Result{Status: 200, Err: errors.New(`slack: "ok": false, ratelimited`), Outcome: outcome(policy.RetryLater)}, 200, `slack: "ok": false, ratelimited`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(failFirst(tc.failures, tc.res))
			d, rout := startRecording(t, f, delivery.Options{Retry: schedule(t, sched...)})
			out := rout
			enqueue(t, d, rec{id: "r1", endpoint: "https://crm.example"})
			drain(t, d)

			if got := out.Status("r1"); got != "delivered" {
				t.Fatalf("status %q, want delivered", got)
			}
			sends := f.of("r1")
			if len(sends) != tc.failures+1 {
				t.Fatalf("%d sends, want %d", len(sends), tc.failures+1)
			}
			for i, s := range sends {
				if s.attempts != i {
					t.Errorf("send %d was handed Attempts = %d, want %d", i+1, s.attempts, i)
				}
				if i == 0 {
					continue
				}
				// Attempt i+1 is due sched[i] after attempt i failed, and is
				// not sent before (how much later depends on the machine).
				if gap := s.start.Sub(sends[i-1].end); gap < sched[i] {
					t.Errorf("attempt %d started %v after attempt %d ended, want at least %v (schedule)", i+1, gap, i, sched[i])
				}
			}
			for i, res := range rout.Results("r1")[:tc.failures] {
				failed := res.Attempt.At.Add(res.Attempt.Latency)
				if res.Outcome != sdk.Retry || res.Next.Sub(failed) != sched[i+1] {
					t.Errorf("attempt %d: outcome %v, next due %v after it failed; want a retry after %v (schedule)", i+1, res.Outcome, res.Next.Sub(failed), sched[i+1])
				}
			}
			log := logOf(d, out, "r1")
			if len(log) != tc.failures+1 {
				t.Fatalf("log holds %d attempts, want %d", len(log), tc.failures+1)
			}
			for i, a := range log[:tc.failures] {
				if a.StatusCode != tc.wantCode || a.Error != tc.wantErr {
					t.Errorf("log[%d] = %d %q, want %d %q", i, a.StatusCode, a.Error, tc.wantCode, tc.wantErr)
				}
				if !slices.Equal(a.Response, tc.res.Body) {
					t.Errorf("log[%d] response %q, want %q", i, a.Response, tc.res.Body)
				}
				if a.At.IsZero() {
					t.Errorf("log[%d] has no time", i)
				}
			}
			if last := log[tc.failures]; last.StatusCode != 200 || last.Error != "" {
				t.Errorf("last attempt logged as %d %q, want 200 and no error", last.StatusCode, last.Error)
			}
			if p, dead, _ := d.Pending(context.Background()); p != 0 || dead != 0 {
				t.Errorf("pending %d, dead %d after delivery", p, dead)
			}
		})
	}
}

func TestAttemptsExhaustedIsDead(t *testing.T) {
	exp, err := policy.Exponential(4, 5*ms, 20*ms)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		retry policy.Retry
		want  int
	}{
		{"one attempt", schedule(t, 0), 1},
		{"three attempts", schedule(t, 0, 10*ms, 10*ms), 3},
		{"exponential, four attempts", exp, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(func(sdk.Delivery, int) delivery.Result { return delivery.Result{Status: 503} })
			d, out := start(t, f, delivery.Options{Retry: tc.retry})
			enqueue(t, d, rec{id: "r1", endpoint: "e"}, rec{id: "r2", endpoint: "e"})
			drain(t, d)
			if p, dead, _ := d.Pending(context.Background()); p != 0 || dead != 2 {
				t.Fatalf("pending %d, dead %d; want 0 and 2", p, dead)
			}
			for _, id := range []string{"r1", "r2"} {
				if got := out.Status(id); got != "dead" {
					t.Errorf("%s: status %q, want dead", id, got)
				}
				if n := f.calls(id); n != tc.want {
					t.Errorf("%s: %d sends, want %d", id, n, tc.want)
				}
				if log := logOf(d, out, id); len(log) != tc.want || log[len(log)-1].StatusCode != 503 {
					t.Errorf("%s: log %+v, want %d attempts ending in 503", id, log, tc.want)
				}
			}
		})
	}
}

func TestPermanentFailuresAreDeadAfterOneAttempt(t *testing.T) {
	tests := []struct {
		name    string
		res     delivery.Result
		wantErr string
	}{
		{"policy.Permanent error", delivery.Result{Err: policy.Permanent(errors.New("url: 127.0.0.1 is a loopback address"))}, "url: 127.0.0.1 is a loopback address"},
		{"wrapped Permanent", delivery.Result{Err: errors.Join(errors.New("x"), policy.Permanent(errors.New("bad payload")))}, "x\nbad payload"},
		{"Permanent wins over a retryable status", delivery.Result{Status: 503, Err: policy.Permanent(errors.New("refused"))}, "refused"},
		{"400", delivery.Result{Status: 400}, "400 Bad Request"},
		{"404", delivery.Result{Status: 404}, "404 Not Found"},
		{"422", delivery.Result{Status: 422}, "422 Unprocessable Entity"},
		{"Outcome override to dead", delivery.Result{Status: 200, Err: errors.New("channel_not_found"), Outcome: outcome(policy.Dead)}, "channel_not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(func(sdk.Delivery, int) delivery.Result { return tc.res })
			d, out := start(t, f, delivery.Options{Retry: schedule(t, 0, 10*ms, 10*ms, 10*ms, 10*ms)})
			enqueue(t, d, rec{id: "r1", endpoint: "e"})
			drain(t, d)
			if got := out.Status("r1"); got != "dead" {
				t.Fatalf("status %q, want dead", got)
			}
			if n := f.calls("r1"); n != 1 {
				t.Errorf("%d sends, want 1", n)
			}
			log := logOf(d, out, "r1")
			if len(log) != 1 || log[0].Error != tc.wantErr || log[0].StatusCode != tc.res.Status {
				t.Errorf("log %+v, want one attempt with %d %q", log, tc.res.Status, tc.wantErr)
			}
		})
	}
}

func TestGoneDisablesTheEndpoint(t *testing.T) {
	f := newFake(func(d sdk.Delivery, _ int) delivery.Result {
		if d.Endpoint == "gone" {
			return delivery.Result{Status: http.StatusGone}
		}
		return delivery.Result{Status: 200}
	})
	d, out := start(t, f, delivery.Options{Retry: schedule(t, 0, 10*ms, 10*ms)})
	enqueue(t, d, rec{id: "g0", endpoint: "gone"})
	drain(t, d)
	// Later deliveries to the endpoint are dead without a send; other
	// endpoints are not affected.
	enqueue(t, d, rec{id: "g1", endpoint: "gone"}, rec{id: "ok1", endpoint: "fine"}, rec{id: "g2", endpoint: "gone"})
	drain(t, d)

	for id, want := range map[string]string{"g0": "dead", "g1": "dead", "g2": "dead", "ok1": "delivered"} {
		if got := out.Status(id); got != want {
			t.Errorf("%s: status %q, want %q", id, got, want)
		}
	}
	var sent []string
	for _, s := range f.log() {
		sent = append(sent, s.id)
	}
	slices.Sort(sent)
	if !slices.Equal(sent, []string{"g0", "ok1"}) {
		t.Errorf("sent %v, want [g0 ok1]: nothing more to the endpoint that answered 410", sent)
	}
	if p, dead, _ := d.Pending(context.Background()); p != 0 || dead != 3 {
		t.Errorf("pending %d, dead %d; want 0 and 3", p, dead)
	}
	if log := logOf(d, out, "g0"); len(log) != 1 || log[0].StatusCode != 410 || log[0].Error != "410 Gone" {
		t.Errorf("g0 log %+v, want one 410", log)
	}
	for _, id := range []string{"g1", "g2"} {
		log := logOf(d, out, id)
		if len(log) != 1 || log[0].StatusCode != 0 || !strings.Contains(log[0].Error, "410 Gone") || log[0].At.IsZero() {
			t.Errorf("%s log %+v, want one entry saying the endpoint is disabled", id, log)
		}
	}
}

func TestConcurrencyPerEndpoint(t *testing.T) {
	for _, conc := range []int{1, 3, 16} {
		t.Run("concurrency="+strconv.Itoa(conc), func(t *testing.T) {
			f := newFake(nil)
			f.hold = 10 * ms
			d, out := start(t, f, delivery.Options{Concurrency: conc})
			// 50 deliveries, alternating between two endpoints, in two batches.
			var rs []rec
			for i := range 50 {
				ep := "a"
				if i%2 == 1 {
					ep = "b"
				}
				rs = append(rs, rec{id: ep + strconv.Itoa(i), endpoint: ep})
			}
			enqueue(t, d, rs[:20]...)
			enqueue(t, d, rs[20:]...)
			drain(t, d)

			for _, r := range rs {
				if n := f.calls(r.id); n != 1 || out.Status(r.id) != "delivered" {
					t.Errorf("%s: %d sends, status %q", r.id, n, out.Status(r.id))
				}
			}
			f.mu.Lock()
			maxA, maxB := f.maxInflight["a"], f.maxInflight["b"]
			f.mu.Unlock()
			if maxA != conc || maxB != conc {
				t.Errorf("at most %d and %d sends in flight to a and b, want %d each (never more)", maxA, maxB, conc)
			}
			// The endpoints do not share the limit.
			if got := overlap(f.log()); got <= conc {
				t.Errorf("at most %d sends in flight in all, want more than %d: each endpoint has its own limit", got, conc)
			}
		})
	}
}

// overlap is the largest number of sends in flight at once.
func overlap(sends []send) int {
	type ev struct {
		at time.Time
		d  int
	}
	var evs []ev
	for _, s := range sends {
		evs = append(evs, ev{s.start, 1}, ev{s.end, -1})
	}
	slices.SortStableFunc(evs, func(a, b ev) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d // ends before starts at the same instant
	})
	n, best := 0, 0
	for _, e := range evs {
		n += e.d
		best = max(best, n)
	}
	return best
}

func TestOrderKey(t *testing.T) {
	tests := []struct {
		name  string
		first delivery.Result // what k1-a gets on its first send
		// wantK1 is the order of sends of key k1
		wantK1 []string
		aState string
	}{
		{"the first fails and is retried", delivery.Result{Status: 503}, []string{"k1-a", "k1-a", "k1-b", "k1-c"}, "delivered"},
		{"the first goes dead", delivery.Result{Status: 400}, []string{"k1-a", "k1-b", "k1-c"}, "dead"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(func(d sdk.Delivery, n int) delivery.Result {
				if d.ID == "k1-a" && n == 1 {
					return tc.first
				}
				return delivery.Result{Status: 200}
			})
			f.hold = 5 * ms
			retry := 80 * ms
			d, out := start(t, f, delivery.Options{Concurrency: 8, Retry: schedule(t, 0, retry, retry)})
			enqueue(t, d,
				rec{id: "k1-a", endpoint: "e", key: "k1"},
				rec{id: "k1-b", endpoint: "e", key: "k1"},
				rec{id: "k2-a", endpoint: "e", key: "k2"},
				rec{id: "none", endpoint: "e"},
			)
			// Another batch later: its k1 record still comes last.
			enqueue(t, d, rec{id: "k1-c", endpoint: "e", key: "k1"})
			drain(t, d)

			var k1 []send
			for _, s := range f.log() {
				if strings.HasPrefix(s.id, "k1-") {
					k1 = append(k1, s)
				}
			}
			var order []string
			for _, s := range k1 {
				order = append(order, s.id)
			}
			if !slices.Equal(order, tc.wantK1) {
				t.Fatalf("sends of key k1: %v, want %v", order, tc.wantK1)
			}
			for i := 1; i < len(k1); i++ {
				if k1[i].start.Before(k1[i-1].end) {
					t.Errorf("%s (send %d) started before %s ended: same key, not one at a time", k1[i].id, i+1, k1[i-1].id)
				}
			}
			f.mu.Lock()
			if f.maxKey["k1"] != 1 {
				t.Errorf("%d sends of key k1 in flight at once, want 1", f.maxKey["k1"])
			}
			f.mu.Unlock()
			if out.Status("k1-a") != tc.aState || out.Status("k1-b") != "delivered" || out.Status("k1-c") != "delivered" {
				t.Errorf("statuses %s %s %s", out.Status("k1-a"), out.Status("k1-b"), out.Status("k1-c"))
			}
			// Other keys, and records without one, do not wait for k1's retry.
			if order[1] == "k1-a" {
				if gap := k1[1].start.Sub(k1[0].end); gap < retry {
					t.Errorf("k1-a retried after %v, want %v", gap, retry)
				}
				for _, id := range []string{"k2-a", "none"} {
					if s := f.of(id); len(s) != 1 || !s[0].start.Before(k1[1].start) {
						t.Errorf("%s waited for key k1's retry", id)
					}
				}
			}
		})
	}
}

// countingOutbox counts what the Deliverer asks of a MemoryOutbox.
type countingOutbox struct {
	*delivery.MemoryOutbox
	mu       sync.Mutex
	outcomes map[sdk.Outcome]int
	leases   int
}

func (c *countingOutbox) Lease(ctx context.Context, n, per int, skip []string) ([]sdk.Delivery, time.Time, error) {
	c.mu.Lock()
	c.leases++
	c.mu.Unlock()
	return c.MemoryOutbox.Lease(ctx, n, per, skip)
}

func (c *countingOutbox) Record(ctx context.Context, rs []sdk.Result, cs []sdk.Circuit) error {
	c.mu.Lock()
	for _, r := range rs {
		c.outcomes[r.Outcome]++
	}
	c.mu.Unlock()
	return c.MemoryOutbox.Record(ctx, rs, cs)
}

func (c *countingOutbox) count(o sdk.Outcome) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outcomes[o]
}

func breaker(t *testing.T, failures int, cooldown, probeTimeout string) *policy.Breaker {
	t.Helper()
	// A window of 1ns: the circuit opens at the failures-th failure in a
	// row (the window has passed by then), and one probe at a time, which
	// these tests watch closely.
	one := 1
	b, err := policy.NewBreaker(policy.BreakerConfig{Failures: &failures, Window: "1ns", Cooldown: cooldown, ProbeTimeout: probeTimeout, Probes: &one})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flakyStart answers 503 to the first n sends to the endpoint (whatever
// the delivery), then 200.
func flakyStart(n int) func(sdk.Delivery, int) delivery.Result {
	var mu sync.Mutex
	seen := 0
	return func(sdk.Delivery, int) delivery.Result {
		mu.Lock()
		defer mu.Unlock()
		seen++
		if seen <= n {
			return delivery.Result{Status: 503}
		}
		return delivery.Result{Status: 200}
	}
}

// While the circuit is open nothing is sent, and the deliveries held back
// keep their attempts untouched; stopping hands them back to the outbox.
func TestBreakerPausesWithoutUsingAttempts(t *testing.T) {
	f := newFake(flakyStart(2))
	out := &countingOutbox{MemoryOutbox: delivery.NewMemoryOutbox(), outcomes: map[sdk.Outcome]int{}}
	// The breaker reads the Deliverer's clock, which moves a microsecond
	// per reading: the failure window (1ns) passes, the hour's cooldown
	// never ends during the test, however slow the machine.
	clock := newFakeClock()
	clock.step = time.Microsecond
	d := delivery.New(f, out, delivery.Options{Concurrency: 1, Retry: schedule(t, 0, 10*ms, 10*ms, 10*ms, 10*ms, 10*ms, 10*ms, 10*ms),
		Breaker: breaker(t, 2, "1h", "1m"), Now: clock.Now, Sleep: clock.Sleep})
	t.Cleanup(d.Stop)
	enqueue(t, d, recs(5, "e", "https://crm.example")...)

	// Two failures open the circuit; then nothing during the cooldown,
	// although the two failed deliveries are due again at once (their
	// 10 ms have passed on the outbox's clock) and three more are waiting.
	deadline := time.Now().Add(10 * time.Second)
	for out.count(sdk.Retry) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the two failures were not recorded: %d sends", len(f.log()))
		}
		time.Sleep(5 * ms)
	}
	time.Sleep(100 * ms) // room for a send the open circuit should prevent
	sends := f.log()
	if len(sends) != 2 {
		t.Fatalf("%d sends while the circuit is open, want the 2 that opened it", len(sends))
	}
	d.Stop()
	if got := out.count(sdk.Release); got < 3 {
		t.Errorf("%d deliveries released when the loop stopped, want at least the 3 that were waiting", got)
	}
	total := 0
	for i := range 5 {
		id := "e-" + strconv.Itoa(i)
		if out.Status(id) != "pending" {
			t.Errorf("%s: status %q, want pending", id, out.Status(id))
		}
		total += len(out.Log[id])
	}
	if total != 2 {
		t.Errorf("%d attempts logged, want 2: a delivery turned away by the breaker was not attempted", total)
	}
	if got := out.count(sdk.Retry); got != 2 {
		t.Errorf("%d retries recorded, want 2", got)
	}
}

// recordingBreaker is a policy.Breaker that notes what the Deliverer asks
// of it and when the circuit opens, in the order the calls happened (the
// times they carry need not be in order: concurrent answers report their
// own).
type recordingBreaker struct {
	*policy.Breaker
	mu      sync.Mutex
	seq     int
	allowed []event // every Allow that said yes
	trips   []event // every Record after which the circuit was open; at is the end of the cooldown
	records []event
}

type event struct {
	seq int
	at  time.Time
}

func (b *recordingBreaker) Allow(ep string, now time.Time) (bool, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ok, at := b.Breaker.Allow(ep, now)
	if ok {
		b.seq++
		b.allowed = append(b.allowed, event{b.seq, now})
	}
	return ok, at
}

func (b *recordingBreaker) Record(ep string, success bool, now time.Time) {
	// Under b.mu, so that two concurrent reports cannot both see the
	// circuit open.
	b.mu.Lock()
	defer b.mu.Unlock()
	before := b.Breaker.Status(ep, now).State
	b.Breaker.Record(ep, success, now)
	b.seq++
	b.records = append(b.records, event{b.seq, now})
	if st := b.Breaker.Status(ep, now); before != policy.BreakerOpen && st.State == policy.BreakerOpen {
		b.trips = append(b.trips, event{b.seq, st.OpenUntil})
	}
}

// After the cooldown one probe goes through, alone; its success closes the
// circuit and everything is delivered, its failure reopens the circuit for
// twice as long. Every attempt the breaker allows is made, and no delivery
// uses an attempt it did not make.
func TestBreakerProbe(t *testing.T) {
	const cooldown = 150 * ms
	tests := []struct {
		name        string
		concurrency int
		hold        time.Duration
		failures    int // the endpoint's first answers that are 503
		wantSends   int // 0: not checked
		wantTrips   int
	}{
		{"the probe succeeds", 1, 0, 2, 7, 1},
		{"the probe fails and the circuit reopens for twice as long", 1, 0, 3, 8, 2},
		{"the probe goes alone", 4, 30 * ms, 4, 0, 1}, // all four first sends fail together: the order their answers arrive in cannot matter
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(flakyStart(tc.failures))
			f.hold = tc.hold
			out := &countingOutbox{MemoryOutbox: delivery.NewMemoryOutbox(), outcomes: map[sdk.Outcome]int{}}
			b := &recordingBreaker{Breaker: breaker(t, 2, cooldown.String(), "5s")}
			d := delivery.New(f, out, delivery.Options{Concurrency: tc.concurrency, Retry: schedule(t, 0, 10*ms, 10*ms, 10*ms, 10*ms, 10*ms, 10*ms, 10*ms),
				Breaker: b})
			t.Cleanup(d.Stop)
			enqueue(t, d, recs(5, "e", "https://crm.example")...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := d.Drain(ctx); err != nil {
				t.Fatalf("drain: %v (sent %d times)", err, len(f.log()))
			}
			d.Stop()
			sends := f.log()
			if tc.wantSends != 0 && len(sends) != tc.wantSends {
				t.Errorf("%d sends, want %d", len(sends), tc.wantSends)
			}
			if len(b.allowed) != len(sends) {
				t.Errorf("the breaker allowed %d attempts, %d were made: an allowed probe was not sent", len(b.allowed), len(sends))
			}
			if len(b.trips) != tc.wantTrips {
				t.Fatalf("the circuit opened %d times, want %d", len(b.trips), tc.wantTrips)
			}
			// Nothing is allowed during a cooldown; the first attempt after it
			// is the probe, and nothing else is allowed until it is reported.
			for k, trip := range b.trips {
				cd := cooldown << k // doubles after a failed probe
				var probe event
				for _, a := range b.allowed {
					if a.seq > trip.seq {
						probe = a
						break
					}
				}
				if probe.seq == 0 || probe.at.Before(trip.at) {
					t.Errorf("circuit opened until +%v (a %v cooldown): the next attempt was allowed %v before that", trip.at.Sub(sends[0].start), cd, trip.at.Sub(probe.at))
					continue
				}
				if open := trip.at.Sub(b.records[slices.IndexFunc(b.records, func(r event) bool { return r.seq == trip.seq })].at); open < cd-time.Millisecond {
					t.Errorf("circuit %d opened for %v, want %v", k+1, open, cd)
				}
				report := math.MaxInt
				for _, r := range b.records {
					if r.seq > probe.seq {
						report = r.seq
						break
					}
				}
				for _, a := range b.allowed {
					if a.seq > probe.seq && a.seq < report {
						t.Errorf("an attempt was allowed %v after the probe, before its result", a.at.Sub(probe.at))
					}
				}
			}
			total := 0
			for i := range 5 {
				id := "e-" + strconv.Itoa(i)
				if out.Status(id) != "delivered" {
					t.Errorf("%s: status %q", id, out.Status(id))
				}
				total += len(out.Log[id])
			}
			if total != len(sends) {
				t.Errorf("%d attempts logged for %d sends: the breaker must not use up attempts", total, len(sends))
			}
		})
	}
}

// The limiter's pacing is checked on a fake clock: what is asserted is the
// wait the Deliverer asks for before each send, not when a loaded machine
// got round to it.
func TestLimiterPaces(t *testing.T) {
	rate, err := policy.ParseRate("20/s")
	if err != nil {
		t.Fatal(err)
	}
	f := newFake(nil)
	clock := newFakeClock()
	d, out := start(t, f, delivery.Options{Concurrency: 16, Limiter: policy.NewLimiter(rate, 1), Now: clock.Now, Sleep: clock.Sleep})
	// Two endpoints: each has its own budget.
	enqueue(t, d, append(recs(10, "a", "a"), recs(10, "b", "b")...)...)
	drain(t, d)

	for _, ep := range []string{"a", "b"} {
		n := 0
		for _, s := range f.log() {
			if s.endpoint == ep {
				n++
			}
		}
		if n != 10 {
			t.Fatalf("%s: %d sends, want 10", ep, n)
		}
	}
	// 10 sends per endpoint at 20/s, all asked for at one instant: slots
	// 0, 50, ..., 450 ms for each endpoint on its own (a shared budget
	// would reach 950 ms). The first of each waits for nothing.
	var want []time.Duration
	for i := 1; i < 10; i++ {
		want = append(want, time.Duration(i)*50*ms, time.Duration(i)*50*ms)
	}
	if got := clock.slept(); !slices.Equal(got, want) {
		t.Errorf("waits before the sends %v, want %v", got, want)
	}
	for _, r := range recs(10, "a", "a") {
		if len(logOf(d, out, r.id)) != 1 {
			t.Errorf("%s: waiting for the limiter should not count as an attempt", r.id)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name  string
		after string
		sched time.Duration
		want  time.Duration
	}{
		{"Retry-After longer than the schedule wins", "1", 10 * ms, time.Second},
		{"Retry-After shorter than the schedule does not shorten it", "0", 300 * ms, 300 * ms},
		{"an HTTP date in the past", "Sun, 06 Nov 1994 08:49:37 GMT", 100 * ms, 100 * ms},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(failFirst(1, delivery.Result{Status: 429, Header: http.Header{"Retry-After": {tc.after}}}))
			d, out := startRecording(t, f, delivery.Options{Retry: schedule(t, 0, tc.sched)})
			enqueue(t, d, rec{id: "r", endpoint: "e"})
			drain(t, d)
			s := f.of("r")
			if len(s) != 2 || out.Status("r") != "delivered" {
				t.Fatalf("%d sends, status %q", len(s), out.Status("r"))
			}
			if gap := s[1].start.Sub(s[0].end); gap < tc.want {
				t.Errorf("retried after %v, want at least %v", gap, tc.want)
			}
			// Retry-After is a whole number of seconds, counted from the
			// end of the attempt that got it.
			res := out.Results("r")[0]
			if due := res.Next.Sub(res.Attempt.At.Add(res.Attempt.Latency)); res.Outcome != sdk.Retry || due != tc.want {
				t.Errorf("outcome %v, due again %v after the 429; want a retry after %v", res.Outcome, due, tc.want)
			}
		})
	}
}

func TestBatchTransport(t *testing.T) {
	f := newFake(func(d sdk.Delivery, n int) delivery.Result {
		if d.ID == "a-3" && n == 1 {
			return delivery.Result{Status: 503}
		}
		return delivery.Result{Status: 200}
	})
	f.hold = 20 * ms
	bt := &batchFake{fake: f, maxBatch: 4}
	d, out := start(t, bt, delivery.Options{Concurrency: 2, Retry: schedule(t, 0, 30*ms)})
	enqueue(t, d, append(recs(10, "a", "a"), recs(6, "b", "b")...)...)
	drain(t, d)

	bt.gmu.Lock()
	groups, singles := bt.groups, bt.singles
	bt.gmu.Unlock()
	seen := map[string]int{}
	full := 0
	for _, g := range groups {
		if len(g) < 2 || len(g) > 4 {
			t.Errorf("group %v: want 2 to 4 deliveries (MaxBatch 4; one goes through Send)", g)
		}
		if len(g) == 4 {
			full++
		}
		ep := g[0][:1]
		for _, id := range g {
			if id[:1] != ep {
				t.Errorf("group %v mixes endpoints", g)
			}
			seen[id]++
		}
	}
	for _, id := range singles {
		seen[id]++
	}
	if full == 0 {
		t.Errorf("no full group in %v: the loop should hand over MaxBatch due deliveries at once", groups)
	}
	f.mu.Lock()
	// Per endpoint at most Concurrency requests, so at most 2×4 deliveries.
	if f.maxInflight["a"] > 8 || f.maxInflight["b"] > 8 {
		t.Errorf("%d and %d deliveries in flight, want at most 2 requests of 4", f.maxInflight["a"], f.maxInflight["b"])
	}
	f.mu.Unlock()
	for _, r := range append(recs(10, "a", "a"), recs(6, "b", "b")...) {
		want := 1
		if r.id == "a-3" {
			want = 2
		}
		if seen[r.id] != want || out.Status(r.id) != "delivered" {
			t.Errorf("%s: sent %d times, status %q; want %d and delivered", r.id, seen[r.id], out.Status(r.id), want)
		}
		if log := logOf(d, out, r.id); len(log) != want {
			t.Errorf("%s: %d attempts logged, want %d: results are recorded per delivery", r.id, len(log), want)
		}
	}
	// The failed entry was retried alone, not with the group it came in.
	if !slices.Contains(singles, "a-3") {
		t.Errorf("a-3 was not retried alone: groups %v, singles %v", groups, singles)
	}
	if log := logOf(d, out, "a-3"); len(log) == 2 && (log[0].StatusCode != 503 || log[1].StatusCode != 200) {
		t.Errorf("a-3 log %+v, want 503 then 200", log)
	}
}

func TestBatchTransportMissingResult(t *testing.T) {
	f := newFake(nil)
	bt := &batchFake{fake: f, maxBatch: 3, short: true}
	d, out := start(t, bt, delivery.Options{Concurrency: 1, Retry: schedule(t, 0, 10*ms)})
	enqueue(t, d, recs(3, "a", "a")...)
	drain(t, d)
	for i, want := range []int{1, 1, 2} {
		id := "a-" + strconv.Itoa(i)
		if log := logOf(d, out, id); len(log) != want || out.Status(id) != "delivered" {
			t.Errorf("%s: %d attempts, status %q; want %d, delivered", id, len(log), out.Status(id), want)
		}
	}
	if log := logOf(d, out, "a-2"); len(log) == 2 && !strings.Contains(log[0].Error, "no result") {
		t.Errorf("a-2's first attempt logged %q, want the missing result", log[0].Error)
	}
}

func TestDrain(t *testing.T) {
	t.Run("returns at once when nothing is pending", func(t *testing.T) {
		d, _ := start(t, newFake(nil), delivery.Options{})
		// A Drain that waited for anything would return the ctx's error.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := d.Drain(ctx); err != nil {
			t.Errorf("Drain with nothing pending = %v, want nil without waiting", err)
		}
	})
	t.Run("returns when everything is delivered or dead", func(t *testing.T) {
		f := newFake(func(d sdk.Delivery, _ int) delivery.Result {
			if d.ID == "refused" {
				return delivery.Result{Status: 400}
			}
			return delivery.Result{Status: 200}
		})
		f.hold = 50 * ms
		d, out := start(t, f, delivery.Options{})
		enqueue(t, d, rec{id: "r", endpoint: "e"}, rec{id: "refused", endpoint: "e"})
		drain(t, d)
		if out.Status("r") != "delivered" || out.Status("refused") != "dead" {
			t.Errorf("Drain returned with %q and %q", out.Status("r"), out.Status("refused"))
		}
	})
	t.Run("honours ctx", func(t *testing.T) {
		f := newFake(func(sdk.Delivery, int) delivery.Result { return delivery.Result{Status: 503} })
		d, out := start(t, f, delivery.Options{Retry: schedule(t, 0, time.Hour)})
		enqueue(t, d, rec{id: "r", endpoint: "e"})
		ctx, cancel := context.WithTimeout(context.Background(), 150*ms)
		defer cancel()
		// The retry is due in an hour: only the deadline can end Drain.
		err := d.Drain(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Drain = %v, want the deadline", err)
		}
		if p, _, _ := d.Pending(context.Background()); p != 1 || out.Status("r") != "pending" {
			t.Errorf("pending %d, status %q", p, out.Status("r"))
		}
		cancelled, cancel2 := context.WithCancel(context.Background())
		cancel2()
		if err := d.Drain(cancelled); !errors.Is(err, context.Canceled) {
			t.Errorf("Drain with a cancelled ctx = %v", err)
		}
	})
}

func TestStop(t *testing.T) {
	t.Run("waits for a send in flight", func(t *testing.T) {
		f := newFake(nil)
		f.hold, f.ignoreCtx = 200*ms, true
		f.started = make(chan string, 1)
		d, out := start(t, f, delivery.Options{})
		enqueue(t, d, rec{id: "r", endpoint: "e"})
		<-f.started
		d.Stop()
		stopped := time.Now()
		s := f.of("r")
		if len(s) != 1 || s[0].end.IsZero() || s[0].end.After(stopped) {
			t.Fatalf("Stop returned before the send ended")
		}
		if out.Status("r") != "delivered" || len(out.Log["r"]) != 1 {
			t.Errorf("the attempt that finished during Stop was not recorded: %q, %d attempts", out.Status("r"), len(out.Log["r"]))
		}
	})
	t.Run("a cancelled send is released, not counted", func(t *testing.T) {
		f := newFake(nil)
		f.hold = 10 * time.Second // honours ctx
		f.started = make(chan string, 1)
		out := delivery.NewMemoryOutbox()
		d := delivery.New(f, out, delivery.Options{})
		t.Cleanup(d.Stop)
		enqueue(t, d, rec{id: "r", endpoint: "e"})
		<-f.started
		d.Stop()
		// The send holds for 10s unless its ctx ends: Stop cancelled it.
		if s := f.of("r"); len(s) != 1 || !s[0].cancelled {
			t.Errorf("Stop returned, but the send in flight was not cancelled: %+v", s)
		}
		if out.Status("r") != "pending" || len(out.Log["r"]) != 0 {
			t.Fatalf("after Stop: status %q, %d attempts logged; want pending and none", out.Status("r"), len(out.Log["r"]))
		}
		// A later Deliverer over the same outbox delivers it, as its first attempt.
		f2 := newFake(nil)
		d2 := delivery.New(f2, out, delivery.Options{})
		t.Cleanup(d2.Stop)
		drain(t, d2)
		if s := f2.of("r"); len(s) != 1 || s[0].attempts != 0 {
			t.Errorf("second deliverer: sends %+v, want one with Attempts 0", s)
		}
		if log := logOf(d2, out, "r"); len(log) != 1 || out.Status("r") != "delivered" {
			t.Errorf("log %+v, status %q", log, out.Status("r"))
		}
	})
	t.Run("deliveries waiting for a slot are delivered after a restart", func(t *testing.T) {
		f := newFake(nil)
		f.hold = 100 * ms // honours ctx
		f.started = make(chan string, 1)
		d, out := start(t, f, delivery.Options{Concurrency: 1})
		enqueue(t, d, recs(3, "r", "e")...)
		<-f.started
		d.Stop() // r-0 is cancelled; r-1 and r-2 were leased, waiting for the slot
		f.mu.Lock()
		f.started = nil
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		err := d.Drain(ctx) // starts the loop again
		for _, r := range recs(3, "r", "e") {
			if st := out.Status(r.id); st != "delivered" {
				t.Errorf("%s: %s after the restart (Drain: %v)", r.id, st, err)
			}
		}
	})
	t.Run("before Start and twice", func(t *testing.T) {
		d := delivery.New(newFake(nil), nil, delivery.Options{})
		d.Stop()
		d.Start()
		d.Stop()
		d.Stop()
	})
}

func TestEnqueue(t *testing.T) {
	t.Run("a record that cannot be prepared fails the batch and stores nothing", func(t *testing.T) {
		f := newFake(nil)
		d, out := start(t, f, delivery.Options{})
		err := d.Enqueue(context.Background(), batchOf(rec{id: "r0", endpoint: "e"}, rec{id: "bad-1", endpoint: "e"}))
		if err == nil || !strings.Contains(err.Error(), "record 2 (bad-1)") || !strings.Contains(err.Error(), "cannot build a payload") {
			t.Fatalf("Enqueue = %v, want an error naming record 2", err)
		}
		if p, dead, _ := d.Pending(context.Background()); p != 0 || dead != 0 || out.Status("r0") != "" {
			t.Errorf("the failed batch left %d pending, %d dead", p, dead)
		}
	})
	t.Run("the same record enqueued twice is delivered once", func(t *testing.T) {
		f := newFake(nil)
		d, out := start(t, f, delivery.Options{})
		enqueue(t, d, rec{id: "r0", endpoint: "e"}, rec{id: "r1", endpoint: "e"})
		drain(t, d)
		enqueue(t, d, rec{id: "r0", endpoint: "e"})
		drain(t, d)
		if n := f.calls("r0"); n != 1 || len(logOf(d, out, "r0")) != 1 {
			t.Errorf("r0 sent %d times", n)
		}
	})
	t.Run("a nil outbox keeps deliveries in memory", func(t *testing.T) {
		f := newFake(nil)
		d := delivery.New(f, nil, delivery.Options{})
		t.Cleanup(d.Stop)
		enqueue(t, d, rec{id: "r0", endpoint: "e"})
		drain(t, d)
		if f.calls("r0") != 1 {
			t.Errorf("r0 sent %d times", f.calls("r0"))
		}
	})
}

// policy.Retry.Delay(1) is the first attempt's delay, counted from when the
// delivery was queued (policy's doc: "on queueing, for Delay(1)").
func TestScheduleFirstEntryDelaysTheFirstAttempt(t *testing.T) {
	f := newFake(nil)
	d, _ := start(t, f, delivery.Options{Retry: schedule(t, 300*ms, 10*ms)})
	t0 := time.Now()
	enqueue(t, d, rec{id: "r", endpoint: "e"})
	drain(t, d)
	if s := f.of("r"); len(s) != 1 || s[0].start.Sub(t0) < 300*ms {
		t.Errorf("first attempt %v after enqueue, want 300ms", s[0].start.Sub(t0))
	}
}

// leaseCounter wraps countingOutbox to count the leases that excluded an
// endpoint and handed out nothing.
type leaseCounter struct {
	*countingOutbox
	empty int
}

func (l *leaseCounter) Lease(ctx context.Context, n, per int, skip []string) ([]sdk.Delivery, time.Time, error) {
	ds, next, err := l.countingOutbox.Lease(ctx, n, per, skip)
	if len(ds) == 0 && len(skip) > 0 {
		l.mu.Lock()
		l.empty++
		l.mu.Unlock()
	}
	return ds, next, err
}

// While the only endpoint with due deliveries is at its concurrency limit,
// asking the outbox for more is pointless: every answer is empty. Over the
// SQLite outbox each such lease scans every pending row (the endpoint is
// excluded with NOT IN), so the polling slows the whole outbox down (see
// docs/benchmarks.md, "Webhook deliveries").
func TestNoPollingWhileTheEndpointIsBusy(t *testing.T) {
	f := newFake(nil)
	f.hold = 5 * ms
	out := &leaseCounter{countingOutbox: &countingOutbox{MemoryOutbox: delivery.NewMemoryOutbox(), outcomes: map[sdk.Outcome]int{}}}
	d := delivery.New(f, out, delivery.Options{Concurrency: 2})
	t.Cleanup(d.Stop)
	enqueue(t, d, recs(200, "e", "e")...)
	drain(t, d)
	out.mu.Lock()
	leases, empty := out.leases, out.empty
	out.mu.Unlock()
	t.Logf("%d leases, %d of them empty with the busy endpoint skipped, for 200 deliveries", leases, empty)
	if empty > 20 {
		t.Errorf("%d of %d leases skipped the busy endpoint and handed out nothing", empty, leases)
	}
}

func TestCloseWaitsOrNot(t *testing.T) {
	var nilDeliverer *delivery.Deliverer
	if err := nilDeliverer.Close(context.Background(), true); err != nil {
		t.Fatalf("a sink that was never configured closes cleanly: %v", err)
	}
	for _, wait := range []bool{true, false} {
		f := newFake(nil)
		f.hold = 50 * ms
		d, _ := start(t, f, delivery.Options{Concurrency: 1})
		enqueue(t, d, recs(3, "r", "e")...)
		if err := d.Close(context.Background(), wait); err != nil {
			t.Fatal(err)
		}
		pending, _, _ := d.Pending(context.Background())
		if wait && pending != 0 {
			t.Errorf("Close(wait) returned with %d pending", pending)
		}
		if !wait && pending == 0 {
			t.Errorf("Close(no wait) delivered everything first: it should return at once")
		}
	}
}
