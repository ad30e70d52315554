package state_test

// The delivery machinery (sdk/delivery) over the real SQLite outbox: the
// same core behaviours as its unit tests over MemoryOutbox, checked in the
// store and its delivery log.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

const ms = time.Millisecond

// outbox is sdk.Outbox over a state.Outbox, as the engine's plugin service
// serves it.

type rec struct{ id, endpoint, key string }

func batchOf(recs ...rec) sdk.Batch {
	col := func(get func(rec) string) arrow.Array {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		defer b.Release()
		for _, r := range recs {
			b.Append(get(r))
		}
		return b.NewArray()
	}
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "endpoint", Type: arrow.BinaryTypes.String},
		{Name: "key", Type: arrow.BinaryTypes.String},
		{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
	}, nil)
	return sdk.NewBatch(array.NewRecordBatch(schema, []arrow.Array{
		col(func(r rec) string { return r.endpoint }),
		col(func(r rec) string { return r.key }),
		col(func(r rec) string { return r.id }),
	}, int64(len(recs))))
}

type sent struct {
	id, endpoint, key string
	attempts          int
	start, end        time.Time
}

// transport answers from a function and records every send, with the most
// sends in flight at once per endpoint and per order key.
type transport struct {
	answer func(d sdk.Delivery, n int) delivery.Result
	hold   time.Duration

	mu          sync.Mutex
	sends       []*sent
	count       map[string]int
	inflight    map[string]int
	maxInflight map[string]int
	started     chan struct{}
}

func newTransport(answer func(d sdk.Delivery, n int) delivery.Result) *transport {
	if answer == nil {
		answer = func(sdk.Delivery, int) delivery.Result { return delivery.Result{Status: 200} }
	}
	return &transport{answer: answer, count: map[string]int{}, inflight: map[string]int{}, maxInflight: map[string]int{}}
}

func (t *transport) Prepare(b sdk.Batch, i int) (sdk.Delivery, error) {
	str := func(name string) string {
		return b.Record.Column(b.Record.Schema().FieldIndices(name)[0]).(*array.String).Value(i)
	}
	return sdk.Delivery{ID: b.ID(i), Endpoint: str("endpoint"), OrderKey: str("key"), Payload: []byte("payload of " + b.ID(i))}, nil
}

func (t *transport) Send(ctx context.Context, d sdk.Delivery) delivery.Result {
	t.mu.Lock()
	t.count[d.ID]++
	n := t.count[d.ID]
	s := &sent{id: d.ID, endpoint: d.Endpoint, key: d.OrderKey, attempts: d.Attempts, start: time.Now()}
	t.sends = append(t.sends, s)
	for _, k := range []string{"ep:" + d.Endpoint, "key:" + d.OrderKey} {
		t.inflight[k]++
		t.maxInflight[k] = max(t.maxInflight[k], t.inflight[k])
	}
	if t.started != nil {
		select {
		case t.started <- struct{}{}:
		default:
		}
	}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		s.end = time.Now()
		t.inflight["ep:"+d.Endpoint]--
		t.inflight["key:"+d.OrderKey]--
		t.mu.Unlock()
	}()
	if t.hold > 0 {
		timer := time.NewTimer(t.hold)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return delivery.Result{Err: ctx.Err()}
		}
	}
	return t.answer(d, n)
}

func (t *transport) log() []sent {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]sent, len(t.sends))
	for i, s := range t.sends {
		out[i] = *s
	}
	return out
}

func (t *transport) of(id string) []sent {
	var out []sent
	for _, s := range t.log() {
		if s.id == id {
			out = append(out, s)
		}
	}
	return out
}

func openStore(t *testing.T) *state.Store {
	t.Helper()
	s, err := state.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sched(t *testing.T, ds ...time.Duration) policy.Retry {
	t.Helper()
	r, err := policy.Schedule(ds...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func run(t *testing.T, s *state.Store, tr delivery.Transport, opts delivery.Options) *delivery.Deliverer {
	t.Helper()
	d := delivery.New(tr, s.Outbox("churn", "crm").SDK(), opts)
	t.Cleanup(d.Stop)
	return d
}

func enqueue(t *testing.T, d *delivery.Deliverer, recs ...rec) {
	t.Helper()
	if err := d.Enqueue(context.Background(), batchOf(recs...)); err != nil {
		t.Fatal(err)
	}
}

func drain(t *testing.T, d *delivery.Deliverer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// stored returns the delivery as the store lists it, with its log.
func stored(t *testing.T, s *state.Store, id string) state.DeliveryRecord {
	t.Helper()
	list, err := s.Deliveries(context.Background(), state.DeliveryFilter{Pipeline: "churn", Sink: "crm", ID: id}, 1)
	if err != nil || len(list) != 1 {
		t.Fatalf("delivery %s: %v, %d found", id, err, len(list))
	}
	return list[0]
}

func codes(r state.DeliveryRecord) []int {
	var out []int
	for _, a := range r.Log {
		out = append(out, a.StatusCode)
	}
	return out
}

// dueOutbox is the state's sdk.Outbox that notes, for every retry the
// Deliverer records, the result and the next_at the store then holds.
type dueOutbox struct {
	sdk.Outbox
	s *state.Store

	mu      sync.Mutex
	retries []sdk.Result
	stored  []time.Time // next_at after each retry was recorded
	err     error
}

func (o *dueOutbox) Record(ctx context.Context, rs []sdk.Result, cs []sdk.Circuit) error {
	if err := o.Outbox.Record(ctx, rs, cs); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range rs {
		if r.Outcome != sdk.Retry {
			continue
		}
		list, err := o.s.Deliveries(ctx, state.DeliveryFilter{Pipeline: "churn", Sink: "crm", ID: r.ID}, 1)
		if err != nil || len(list) != 1 {
			o.err = errors.Join(o.err, fmt.Errorf("delivery %s after a retry was recorded: %v, %d found", r.ID, err, len(list)))
			continue
		}
		o.retries = append(o.retries, r)
		o.stored = append(o.stored, list[0].NextAt)
	}
	return nil
}

func TestDelivererOverTheStateOutbox(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(d sdk.Delivery, n int) delivery.Result
		retry      []time.Duration
		wantStatus string
		wantCodes  []int
		wantErr    string // the last logged error
	}{
		{"retried until delivered", func(_ sdk.Delivery, n int) delivery.Result {
			if n <= 2 {
				return delivery.Result{Status: 503, Body: []byte("busy")}
			}
			return delivery.Result{Status: 200, Body: []byte("thanks")}
		}, []time.Duration{0, 20 * ms, 40 * ms, 40 * ms}, "delivered", []int{503, 503, 200}, ""},
		{"attempts exhausted", func(sdk.Delivery, int) delivery.Result { return delivery.Result{Status: 500} },
			[]time.Duration{0, 10 * ms, 10 * ms}, "dead", []int{500, 500, 500}, "500 Internal Server Error"},
		{"permanent error", func(sdk.Delivery, int) delivery.Result {
			return delivery.Result{Err: policy.Permanent(errors.New("url: 10.0.0.1 is a private address"))}
		}, []time.Duration{0, 10 * ms, 10 * ms}, "dead", []int{0}, "url: 10.0.0.1 is a private address"},
		{"400 goes to the dead letter at once", func(sdk.Delivery, int) delivery.Result { return delivery.Result{Status: 400} },
			[]time.Duration{0, 10 * ms, 10 * ms}, "dead", []int{400}, "400 Bad Request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			tr := newTransport(tc.answer)
			out := &dueOutbox{Outbox: s.Outbox("churn", "crm").SDK(), s: s}
			d := delivery.New(tr, out, delivery.Options{Retry: sched(t, tc.retry...)})
			t.Cleanup(d.Stop)
			enqueue(t, d, rec{id: "r1", endpoint: "https://crm.example"})
			drain(t, d)

			r := stored(t, s, "r1")
			if r.Status != tc.wantStatus || r.Attempts != len(tc.wantCodes) || !slices.Equal(codes(r), tc.wantCodes) {
				t.Fatalf("stored %s after %d attempts, log %v; want %s, %v", r.Status, r.Attempts, codes(r), tc.wantStatus, tc.wantCodes)
			}
			if last := r.Log[len(r.Log)-1]; last.Error != tc.wantErr || r.LastError != tc.wantErr {
				t.Errorf("last error %q (delivery %q), want %q", last.Error, r.LastError, tc.wantErr)
			}
			for i, a := range r.Log {
				if a.N != i+1 || a.At.IsZero() {
					t.Errorf("log[%d]: n %d at %v", i, a.N, a.At)
				}
			}
			sends := tr.of("r1")
			if len(sends) != len(tc.wantCodes) {
				t.Fatalf("%d sends, want %d", len(sends), len(tc.wantCodes))
			}
			for i := 1; i < len(sends); i++ {
				if sends[i].attempts != i {
					t.Errorf("send %d handed Attempts %d", i+1, sends[i].attempts)
				}
				// Not leased before it was due (next_at is stored in
				// milliseconds: allow 1 ms); how much later depends on the
				// machine.
				if gap := sends[i].start.Sub(sends[i-1].end); gap < tc.retry[i]-ms {
					t.Errorf("attempt %d came %v after attempt %d, want at least %v", i+1, gap, i, tc.retry[i])
				}
			}
			// Each attempt that another followed was recorded as a retry
			// due the schedule's wait after it failed, and the store kept
			// that due time (to the millisecond), which is what the next
			// lease goes by.
			d.Stop()
			out.mu.Lock()
			retries, storedAt, err := out.retries, out.stored, out.err
			out.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if len(retries) != len(tc.wantCodes)-1 {
				t.Fatalf("%d retries recorded, want %d", len(retries), len(tc.wantCodes)-1)
			}
			for i, r := range retries {
				failed := r.Attempt.At.Add(r.Attempt.Latency)
				if due := r.Next.Sub(failed); due != tc.retry[i+1] {
					t.Errorf("attempt %d: retry due %v after it failed, want %v (schedule)", i+1, due, tc.retry[i+1])
				}
				if want := time.UnixMilli(r.Next.UnixMilli()); !storedAt[i].Equal(want) {
					t.Errorf("attempt %d: next_at stored as %v, want %v", i+1, storedAt[i], want)
				}
			}
			dead := 0
			if tc.wantStatus == "dead" {
				dead = 1
			}
			if p, dd, err := d.Pending(context.Background()); p != 0 || dd != dead || err != nil {
				t.Errorf("pending %d, dead %d, %v", p, dd, err)
			}
		})
	}
}

func TestDelivererOverTheStateOutboxGone(t *testing.T) {
	s := openStore(t)
	tr := newTransport(func(d sdk.Delivery, _ int) delivery.Result {
		if d.Endpoint == "gone" {
			return delivery.Result{Status: http.StatusGone}
		}
		return delivery.Result{Status: 200}
	})
	d := run(t, s, tr, delivery.Options{Retry: sched(t, 0, 10*ms)})
	enqueue(t, d, rec{id: "g0", endpoint: "gone"})
	drain(t, d)
	enqueue(t, d, rec{id: "g1", endpoint: "gone"}, rec{id: "ok", endpoint: "fine"})
	drain(t, d)
	if n := len(tr.log()); n != 2 {
		t.Errorf("%d sends, want 2 (g0 and ok)", n)
	}
	if r := stored(t, s, "g1"); r.Status != "dead" || len(r.Log) != 1 || !strings.Contains(r.Log[0].Error, "410 Gone") {
		t.Errorf("g1: %s, log %+v", r.Status, r.Log)
	}
	if r := stored(t, s, "ok"); r.Status != "delivered" {
		t.Errorf("ok: %s", r.Status)
	}
}

func TestDelivererOverTheStateOutboxConcurrencyAndOrder(t *testing.T) {
	s := openStore(t)
	tr := newTransport(func(d sdk.Delivery, n int) delivery.Result {
		if d.ID == "k-0" && n == 1 {
			return delivery.Result{Status: 503}
		}
		return delivery.Result{Status: 200}
	})
	tr.hold = 10 * ms
	d := run(t, s, tr, delivery.Options{Concurrency: 3, Retry: sched(t, 0, 50*ms)})
	var rs []rec
	for i := range 50 {
		ep := []string{"a", "b"}[i%2]
		rs = append(rs, rec{id: ep + "-" + strconv.Itoa(i), endpoint: ep})
	}
	// Five records with one order key, among the others on endpoint a.
	for i := range 5 {
		rs = append(rs, rec{id: "k-" + strconv.Itoa(i), endpoint: "a", key: "cust-7"})
	}
	enqueue(t, d, rs[:30]...)
	enqueue(t, d, rs[30:]...)
	drain(t, d)

	for _, r := range rs {
		if st := stored(t, s, r.id).Status; st != "delivered" {
			t.Errorf("%s: %s", r.id, st)
		}
	}
	tr.mu.Lock()
	maxA, maxB, maxKey := tr.maxInflight["ep:a"], tr.maxInflight["ep:b"], tr.maxInflight["key:cust-7"]
	tr.mu.Unlock()
	if maxA > 3 || maxB > 3 || maxA < 2 || maxB < 2 {
		t.Errorf("at most %d and %d sends in flight to a and b, want up to 3 each", maxA, maxB)
	}
	if maxKey != 1 {
		t.Errorf("%d sends of one order key in flight at once, want 1", maxKey)
	}
	var order []string
	var keyed []sent
	for _, x := range tr.log() {
		if x.key == "cust-7" {
			order = append(order, x.id)
			keyed = append(keyed, x)
		}
	}
	if want := []string{"k-0", "k-0", "k-1", "k-2", "k-3", "k-4"}; !slices.Equal(order, want) {
		t.Errorf("order key sends %v, want %v", order, want)
	}
	for i := 1; i < len(keyed); i++ {
		if keyed[i].start.Before(keyed[i-1].end) {
			t.Errorf("%s started before %s ended", keyed[i].id, keyed[i-1].id)
		}
	}
}

// A session that stops (or dies) with a send in flight leaves the delivery
// pending with no attempt used; the next session delivers it.
func TestDelivererOverTheStateOutboxNextSession(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := state.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTransport(nil)
	tr.hold = 10 * time.Second
	tr.started = make(chan struct{}, 1)
	d := delivery.New(tr, s.Outbox("churn", "crm").SDK(), delivery.Options{})
	enqueue(t, d, rec{id: "stopped", endpoint: "e"})
	<-tr.started
	d.Stop() // cancels the send: released, not an attempt
	if r := stored(t, s, "stopped"); r.Status != "pending" || r.Attempts != 0 || len(r.Log) != 0 {
		t.Fatalf("after Stop: %s, %d attempts, log %+v", r.Status, r.Attempts, r.Log)
	}
	// A crash: leased, never recorded.
	if _, _, err := s.Outbox("churn", "crm").Enqueue(context.Background(), []state.Delivery{{ID: "crashed", Endpoint: "e", Payload: []byte("x")}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got, _, err := s.Outbox("churn", "crm").Lease(context.Background(), time.Now(), 10, 0, nil); err != nil || len(got) != 2 {
		t.Fatalf("lease: %d, %v", len(got), err)
	}
	s.Close()

	s2, err := state.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	// The engine's session start (state.NewService) resets leases.
	if _, err := state.NewService(context.Background(), s2, "churn", "crm"); err != nil {
		t.Fatal(err)
	}
	tr2 := newTransport(nil)
	d2 := run(t, s2, tr2, delivery.Options{})
	drain(t, d2)
	for _, id := range []string{"stopped", "crashed"} {
		if r := stored(t, s2, id); r.Status != "delivered" || r.Attempts != 1 || len(r.Log) != 1 {
			t.Errorf("%s: %s, %d attempts, log %+v", id, r.Status, r.Attempts, r.Log)
		}
		if x := tr2.of(id); len(x) != 1 || x[0].attempts != 0 {
			t.Errorf("%s: sends %+v", id, x)
		}
	}
}
