package push

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// waitingInbox is an sdk.InboxWaiter: its reads wait, and find nothing
// until ready calls have been made (another worker stores the entry, on a
// cluster).
type waitingInbox struct {
	memInbox
	mu     sync.Mutex
	calls  int
	ready  int
	waits  []time.Duration
	asked  []int64
	served bool
}

func (w *waitingInbox) ReadWait(_ context.Context, after int64, _ int, wait time.Duration) ([]sdk.InboxStored, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	w.waits = append(w.waits, wait)
	w.asked = append(w.asked, after)
	if w.calls < w.ready || w.served {
		return nil, true, nil
	}
	w.served = true
	return []sdk.InboxStored{{First: 1, Count: 2, Records: []byte(`{"a":1}` + "\n" + `{"a":2}` + "\n"), Origin: "o"}}, false, nil
}

type positionsEmitter struct {
	mu  sync.Mutex
	pos []string
}

func (e *positionsEmitter) Emit(rec arrow.RecordBatch, p []byte) error {
	return e.EmitAt(rec, p, sdk.Origin{})
}
func (e *positionsEmitter) EmitAt(rec arrow.RecordBatch, p []byte, _ sdk.Origin) error {
	rec.Release()
	e.mu.Lock()
	e.pos = append(e.pos, string(p))
	e.mu.Unlock()
	return nil
}
func (e *positionsEmitter) Skipped(int) {}

func (e *positionsEmitter) positions() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.pos...)
}

// An inbox that waits for entries is asked again at once after a read that
// waited and found nothing: what another worker stored is emitted without
// the pause an inbox that cannot wait gets between reads.
func TestEmitAsksAWaitingInboxAgainAtOnce(t *testing.T) {
	in := &waitingInbox{memInbox: memInbox{keys: map[string][]byte{}}, ready: 5}
	s := New(Options{Listen: "127.0.0.1:0", Path: "/r", Source: "push"}, in, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	em := &positionsEmitter{}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.emitStored(ctx, nil, em) }()
	for len(em.positions()) == 0 {
		if time.Since(start) > 3*time.Second {
			t.Fatal("nothing emitted after 3 s")
		}
		time.Sleep(time.Millisecond)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("the entry came after %s and 4 empty reads that waited: they must not pause", d)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := em.positions(); len(got) != 1 || got[0] != "2" {
		t.Errorf("emitted positions %q", got)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for i, w := range in.waits {
		if w != readWait {
			t.Errorf("read %d asked to wait %s, want %s", i, w, readWait)
		}
	}
	if last := in.asked[len(in.asked)-1]; last != 2 {
		t.Errorf("read after %d once 2 records were emitted", last)
	}
}

// limitedInbox says it stores at most limit bytes a request.
type limitedInbox struct {
	memInbox
	limit int64
}

func (l *limitedInbox) Status(context.Context) (sdk.InboxStatus, error) {
	return sdk.InboxStatus{MaxEntryBytes: l.limit}, nil
}

// A request whose records are more than the inbox stores for one is
// refused (413) before anything is stored; a smaller one is stored.
func TestRequestOverTheInboxEntryLimitIs413(t *testing.T) {
	in := &limitedInbox{memInbox: memInbox{keys: map[string][]byte{}}, limit: 30}
	s, stop := newTestServer(t, &in.memInbox, 0)
	defer stop()
	s.inbox = in
	st, _ := in.Status(context.Background())
	s.maxEntry.Store(st.MaxEntryBytes) // as Read does
	if w := do(s, []byte(`{"a":"0123456789"}`+"\n"+`{"a":"0123456789"}`), nil); w.Code != 413 || !strings.Contains(w.Body.String(), "at most 30 bytes") {
		t.Errorf("over the limit: %d %s", w.Code, w.Body)
	}
	if in.appends.Load() != 0 {
		t.Error("a refused request was stored")
	}
	if w := do(s, []byte(`{"a":"0123456789"}`), nil); w.Code != 202 {
		t.Errorf("under the limit: %d %s", w.Code, w.Body)
	}
}
