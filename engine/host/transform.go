package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// TransformResult is what a transform made of one batch given to Send.
type TransformResult struct {
	// Token is the one given to Send.
	Token any
	// Recs hold the output rows, in order; none when every row was dropped.
	// Every row carries the id of an input row of this batch. The receiver
	// owns them and releases them.
	Recs []arrow.RecordBatch
}

// TransformStream is an open stream of batches through a transform.
type TransformStream struct {
	p      *Plugin
	stream pluginv1.Plugin_TransformClient
	cancel context.CancelFunc
	enc    *wire.Encoder
	seq    uint64

	mu      sync.Mutex
	pending []pendingPiece // in seq order
	results chan TransformResult
	done    chan struct{}
	err     error
}

// pendingPiece is one request not fully answered yet.
type pendingPiece struct {
	seq uint64
	// ids are the record ids of the piece's rows (nil when the input
	// carries none): each output row uses up one.
	ids *idCheck
	// token is set on the last piece of a batch given to Send.
	token any
	last  bool
}

// Transform opens the transform's stream. Results arrive on Results() in
// the order of Send.
func (p *Plugin) Transform(ctx context.Context) (*TransformStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := p.rpc.Transform(ctx)
	if err != nil {
		cancel()
		return nil, p.errOp("transform", err)
	}
	t := &TransformStream{p: p, stream: stream, cancel: cancel, enc: wire.NewEncoder(nil), results: make(chan TransformResult, 1024), done: make(chan struct{})}
	go t.recv(ctx)
	return t, nil
}

// Send sends rec (split when large); its result comes on Results() with
// token once the transform has answered all of it. Send does not release rec.
// When rec has the id column (sdk.IDColumn, which the engine adds to every
// batch), every output row must carry one of its ids; a row that does not
// fails the stream with a protocol error naming the plugin.
func (t *TransformStream) Send(rec arrow.RecordBatch, token any) error {
	var ids *array.String
	if i := rec.Schema().FieldIndices(sdk.IDColumn); len(i) > 0 {
		col, ok := rec.Column(i[0]).(*array.String)
		if !ok {
			return fmt.Errorf("%s: transform input: column %s is %s, not a string", t.p.spec.Label(), sdk.IDColumn, rec.Column(i[0]).DataType())
		}
		ids = col
	}
	var off int
	return t.enc.Split(rec, func(data []byte, rows int64, last bool) error {
		t.seq++
		pp := pendingPiece{seq: t.seq, last: last}
		if last {
			pp.token = token
		}
		if ids != nil {
			// A slice of the column, which is kept (not rec's other
			// columns) until the piece is answered.
			pp.ids = &idCheck{ids: array.NewSlice(ids, int64(off), int64(off)+rows).(*array.String)}
		}
		off += int(rows)
		t.mu.Lock()
		if t.err != nil {
			err := t.err
			t.mu.Unlock()
			pp.ids.release()
			return err
		}
		t.pending = append(t.pending, pp)
		t.mu.Unlock()
		if err := t.stream.Send(&pluginv1.TransformRequest{Seq: t.seq, Arrow: data, Rows: rows}); err != nil {
			if errors.Is(err, io.EOF) {
				// The real reason arrives on the receiving side.
				<-t.done
				return t.Wait()
			}
			if err := t.failed(); err != nil {
				return err
			}
			return t.p.Err(err)
		}
		return nil
	})
}

// Results delivers one result per batch given to Send, in order. It is
// closed when the stream ends; Wait then tells why.
func (t *TransformStream) Results() <-chan TransformResult { return t.results }

// CloseSend says no more batches follow; the transform answers what it has
// and ends the stream.
func (t *TransformStream) CloseSend() error { return t.stream.CloseSend() }

// Wait blocks until the stream has ended and returns its error.
func (t *TransformStream) Wait() error {
	<-t.done
	return t.failed()
}

func (t *TransformStream) failed() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

func (t *TransformStream) fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
	// Stop the plugin working on what nobody will use.
	t.cancel()
}

func (t *TransformStream) recv(ctx context.Context) {
	defer close(t.done)
	defer close(t.results)
	defer t.cancel()
	defer func() {
		t.mu.Lock()
		for _, pp := range t.pending {
			pp.ids.release()
		}
		t.mu.Unlock()
	}()
	dec := wire.NewDecoder(nil)
	defer dec.Release()
	var recs []arrow.RecordBatch // output of the current batch so far
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	for {
		msg, err := t.stream.Recv()
		if errors.Is(err, io.EOF) {
			t.mu.Lock()
			left := len(t.pending)
			t.mu.Unlock()
			if left > 0 {
				t.fail(t.p.Err(fmt.Errorf("transform: the plugin ended its stream with %d batches unanswered", left)))
			}
			return
		}
		if err != nil {
			t.fail(t.p.errOp("transform", err))
			return
		}
		t.mu.Lock()
		var head pendingPiece
		ok := len(t.pending) > 0
		if ok {
			head = t.pending[0]
		}
		t.mu.Unlock()
		if !ok || msg.Seq != head.seq {
			want := "no batch is pending"
			if ok {
				want = fmt.Sprintf("the next answer is due for batch %d", head.seq)
			}
			t.fail(t.protocolErr("the plugin answered batch %d, but %s (answers must come in order)", msg.Seq, want))
			return
		}
		if len(msg.Arrow) > 0 {
			rec, err := dec.Decode(msg.Arrow)
			if err != nil {
				t.fail(t.protocolErr("batch %d: %v", msg.Seq, err))
				return
			}
			recs = append(recs, rec)
			if rec.NumRows() != msg.Rows {
				t.fail(t.protocolErr("batch %d: the message says %d rows, its batch has %d", msg.Seq, msg.Rows, rec.NumRows()))
				return
			}
			if err := head.ids.check(rec); err != nil {
				t.fail(t.protocolErr("batch %d: %v", msg.Seq, err))
				return
			}
		}
		if !msg.Last {
			continue
		}
		t.mu.Lock()
		t.pending = t.pending[1:]
		t.mu.Unlock()
		head.ids.release()
		if !head.last {
			continue // more pieces of the same batch follow
		}
		select {
		case t.results <- TransformResult{Token: head.token, Recs: recs}:
			recs = nil
		case <-ctx.Done():
			t.fail(&Error{Plugin: t.p.spec.Label(), Msg: "cancelled", Canceled: true})
			return
		}
	}
}

// protocolErr is a breach of the protocol that the host noticed. The plugin
// is alive and answering, so unlike Plugin.Err it does not wait for an exit.
func (t *TransformStream) protocolErr(format string, args ...any) error {
	return &Error{Plugin: t.p.spec.Label(), Msg: "transform: protocol error: " + fmt.Sprintf(format, args...)}
}

// idCheck holds the record ids of one piece sent to the transform, and
// uses up one for each output row: a row whose id is not among them (or
// more often than there) is a protocol error. Output rows usually keep
// their input's order, so ids are matched in order first, and counted in a
// map only once a row comes out of order.
type idCheck struct {
	ids     *array.String
	next    int            // ids before next are used up, or in skipped
	skipped []int          // ids before next that no output row used yet
	left    map[string]int // once a row came out of order: the ids not used up
}

func (c *idCheck) release() {
	if c != nil && c.ids != nil {
		c.ids.Release()
		c.ids = nil
	}
}

// check uses up the id of every row of rec. c is nil when the input
// carried no ids.
func (c *idCheck) check(rec arrow.RecordBatch) error {
	if c == nil {
		return nil
	}
	i := rec.Schema().FieldIndices(sdk.IDColumn)
	if len(i) == 0 {
		return fmt.Errorf("%d output rows without the %s column: a transform must keep every row's record id", rec.NumRows(), sdk.IDColumn)
	}
	col, ok := rec.Column(i[0]).(*array.String)
	if !ok {
		return fmt.Errorf("column %s is %s, not a string", sdk.IDColumn, rec.Column(i[0]).DataType())
	}
	for r := 0; r < col.Len(); r++ {
		id := col.Value(r)
		if col.IsNull(r) || !c.use(id) {
			return fmt.Errorf("output row %d has record id %q, which is not one of its input batch's ids: a transform may drop rows but not add, duplicate or move them", r, id)
		}
	}
	return nil
}

// use uses up id, reporting whether it was there to use.
func (c *idCheck) use(id string) bool {
	if c.left == nil {
		n := c.ids.Len()
		for j := c.next; j < n; j++ {
			if c.ids.Value(j) == id {
				for k := c.next; k < j; k++ {
					c.skipped = append(c.skipped, k)
				}
				c.next = j + 1
				return true
			}
		}
		// Out of order: count what is left.
		c.left = make(map[string]int, len(c.skipped)+n-c.next)
		for _, k := range c.skipped {
			c.left[strings.Clone(c.ids.Value(k))]++
		}
		for j := c.next; j < n; j++ {
			c.left[strings.Clone(c.ids.Value(j))]++
		}
		c.skipped, c.next = nil, n
	}
	if c.left[id] == 0 {
		return false
	}
	c.left[id]--
	return true
}
