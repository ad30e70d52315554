package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

// rec is one record of a test batch: its id, the endpoint its delivery goes
// to and its order key.
type rec struct{ id, endpoint, key string }

// batchOf builds a batch the way the engine hands one to a sink: the records'
// own columns (endpoint, key) plus the id column.
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
	cols := []arrow.Array{
		col(func(r rec) string { return r.endpoint }),
		col(func(r rec) string { return r.key }),
		col(func(r rec) string { return r.id }),
	}
	return sdk.NewBatch(array.NewRecordBatch(schema, cols, int64(len(recs))))
}

// send is one Send (or one entry of a SendBatch) as the fake saw it.
type send struct {
	id, endpoint string
	attempts     int  // sdk.Delivery.Attempts as handed to the transport
	n            int  // the fake's own count of sends of this id, 1-based
	status       int  // the status code answered
	cancelled    bool // the send's ctx ended while it held
	start, end   time.Time
}

// fake is a Transport that answers from a function, records every send,
// and tracks how many sends are in flight per endpoint and per order key.
type fake struct {
	// answer decides the result of the n-th send of d (n counts from 1).
	answer func(d sdk.Delivery, n int) delivery.Result
	// hold is how long each send takes; it honours ctx.
	hold time.Duration
	// ignoreCtx makes a send take hold whatever ctx says.
	ignoreCtx bool

	mu          sync.Mutex
	sends       []*send
	count       map[string]int
	inflight    map[string]int
	maxInflight map[string]int
	keyInflight map[string]int
	maxKey      map[string]int
	started     chan string // if set, receives each id as its send starts
}

func newFake(answer func(d sdk.Delivery, n int) delivery.Result) *fake {
	if answer == nil {
		answer = okAnswer
	}
	return &fake{answer: answer, count: map[string]int{}, inflight: map[string]int{}, maxInflight: map[string]int{},
		keyInflight: map[string]int{}, maxKey: map[string]int{}}
}

func okAnswer(sdk.Delivery, int) delivery.Result { return delivery.Result{Status: 200} }

// failFirst answers res to the first n sends of every delivery, then 200.
func failFirst(n int, res delivery.Result) func(sdk.Delivery, int) delivery.Result {
	return func(_ sdk.Delivery, k int) delivery.Result {
		if k <= n {
			return res
		}
		return delivery.Result{Status: 200}
	}
}

// Prepare reads the record's endpoint and key columns; a record whose id
// starts with "bad" cannot be prepared.
func (f *fake) Prepare(b sdk.Batch, i int) (sdk.Delivery, error) {
	id := b.ID(i)
	if len(id) >= 3 && id[:3] == "bad" {
		return sdk.Delivery{}, errors.New("cannot build a payload")
	}
	str := func(name string) string {
		idx := b.Record.Schema().FieldIndices(name)
		return b.Record.Column(idx[0]).(*array.String).Value(i)
	}
	return sdk.Delivery{ID: id, Endpoint: str("endpoint"), OrderKey: str("key"), Payload: []byte("payload of " + id)}, nil
}

func (f *fake) begin(d sdk.Delivery) (*send, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count[d.ID]++
	s := &send{id: d.ID, endpoint: d.Endpoint, attempts: d.Attempts, n: f.count[d.ID], start: time.Now()}
	f.sends = append(f.sends, s)
	f.inflight[d.Endpoint]++
	f.maxInflight[d.Endpoint] = max(f.maxInflight[d.Endpoint], f.inflight[d.Endpoint])
	if d.OrderKey != "" {
		f.keyInflight[d.OrderKey]++
		f.maxKey[d.OrderKey] = max(f.maxKey[d.OrderKey], f.keyInflight[d.OrderKey])
	}
	if f.started != nil {
		select {
		case f.started <- d.ID:
		default:
		}
	}
	return s, s.n
}

func (f *fake) finish(s *send, d sdk.Delivery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s.end = time.Now()
	f.inflight[d.Endpoint]--
	if d.OrderKey != "" {
		f.keyInflight[d.OrderKey]--
	}
}

func (f *fake) wait(ctx context.Context) error {
	if f.hold <= 0 {
		return nil
	}
	if f.ignoreCtx {
		time.Sleep(f.hold)
		return nil
	}
	t := time.NewTimer(f.hold)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Send implements delivery.Transport.
func (f *fake) Send(ctx context.Context, d sdk.Delivery) delivery.Result {
	s, n := f.begin(d)
	defer f.finish(s, d)
	if err := f.wait(ctx); err != nil {
		f.mu.Lock()
		s.cancelled = true
		f.mu.Unlock()
		return delivery.Result{Err: fmt.Errorf("POST %s: %w", d.Endpoint, err)}
	}
	res := f.answer(d, n)
	f.mu.Lock()
	s.status = res.Status
	f.mu.Unlock()
	return res
}

// log returns the sends so far, in the order they started.
func (f *fake) log() []send {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]send, len(f.sends))
	for i, s := range f.sends {
		out[i] = *s
	}
	return out
}

// of returns the sends of one delivery.
func (f *fake) of(id string) []send {
	var out []send
	for _, s := range f.log() {
		if s.id == id {
			out = append(out, s)
		}
	}
	return out
}

func (f *fake) calls(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[id]
}

// batchFake is a BatchTransport over fake: every SendBatch is recorded as a
// group, and each entry is answered as Send would answer it.
type batchFake struct {
	*fake
	maxBatch int
	// short makes SendBatch return one result fewer than it was given.
	short bool

	gmu     sync.Mutex
	groups  [][]string
	singles []string // ids sent alone through Send
}

func (b *batchFake) MaxBatch() int { return b.maxBatch }

func (b *batchFake) SendBatch(ctx context.Context, ds []sdk.Delivery) []delivery.Result {
	ids := make([]string, len(ds))
	sends := make([]*send, len(ds))
	ns := make([]int, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
		sends[i], ns[i] = b.begin(d)
	}
	b.gmu.Lock()
	b.groups = append(b.groups, ids)
	b.gmu.Unlock()
	err := b.wait(ctx)
	out := make([]delivery.Result, len(ds))
	for i, d := range ds {
		if err != nil {
			out[i] = delivery.Result{Err: err}
		} else {
			out[i] = b.answer(d, ns[i])
		}
		b.finish(sends[i], d)
	}
	if b.short {
		out = out[:len(out)-1]
	}
	return out
}

func (b *batchFake) Send(ctx context.Context, d sdk.Delivery) delivery.Result {
	b.gmu.Lock()
	b.singles = append(b.singles, d.ID)
	b.gmu.Unlock()
	return b.fake.Send(ctx, d)
}

// schedule is a fixed retry schedule.
func schedule(t *testing.T, ds ...time.Duration) policy.Retry {
	t.Helper()
	r, err := policy.Schedule(ds...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const ms = time.Millisecond

// start makes a Deliverer over a fresh MemoryOutbox, stopped when the test
// ends.
func start(t *testing.T, tr delivery.Transport, opts delivery.Options) (*delivery.Deliverer, *delivery.MemoryOutbox) {
	t.Helper()
	out := delivery.NewMemoryOutbox()
	d := delivery.New(tr, out, opts)
	t.Cleanup(d.Stop)
	return d, out
}

func enqueue(t *testing.T, d *delivery.Deliverer, recs ...rec) {
	t.Helper()
	if err := d.Enqueue(context.Background(), batchOf(recs...)); err != nil {
		t.Fatal(err)
	}
}

// drain waits until nothing is pending, failing the test after a while.
func drain(t *testing.T, d *delivery.Deliverer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := d.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// logOf stops d (so that no attempt is under way and nothing writes the
// outbox any more) and returns a copy of a delivery's attempt log.
func logOf(d *delivery.Deliverer, out *delivery.MemoryOutbox, id string) []sdk.Attempt {
	d.Stop()
	return append([]sdk.Attempt(nil), out.Log[id]...)
}

// recs makes n records for endpoint ep with ids prefix-0, prefix-1, ...
func recs(n int, prefix, ep string) []rec {
	out := make([]rec, n)
	for i := range out {
		out[i] = rec{id: fmt.Sprintf("%s-%d", prefix, i), endpoint: ep}
	}
	return out
}

// fakeClock is a Deliverer's clock (Options.Now and Options.Sleep) that
// moves only when the test advances it. Sleep notes how long it was asked
// to wait and returns at once, so what a test checks is what the Deliverer
// decided, however late a loaded machine runs its goroutines.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	step   time.Duration // added after each Now, so that time does pass when set
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 11, 14, 9, 22, 47, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now
	c.now = c.now.Add(c.step)
	return now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) bool {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.mu.Unlock()
	return ctx.Err() == nil
}

// slept returns the waits asked of Sleep so far, shortest first.
func (c *fakeClock) slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.sleeps)
	slices.Sort(out)
	return out
}

// startRecording is start with a MemoryOutbox (its Results are what the Deliverer recorded).
func startRecording(t *testing.T, tr delivery.Transport, opts delivery.Options) (*delivery.Deliverer, *delivery.MemoryOutbox) {
	t.Helper()
	out := delivery.NewMemoryOutbox()
	d := delivery.New(tr, out, opts)
	t.Cleanup(d.Stop)
	return d, out
}
