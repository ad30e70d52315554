package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelinehq/pipeline/engine/state"
)

// AdminView answers what the admin API asks of the state store (a
// pipeline's checkpoints and delivery counts, GET /api/deliveries, a
// delivery with its attempts, replay) from the cluster's buckets and
// streams, for `pipeline serve --cluster --admin-addr`: every worker's API
// shows, and replays, the whole cluster's deliveries.
//
// A sink's deliveries are what its streams hold: pending ones are the
// messages of its outbox stream (with their attempts from the delivery
// log), dead ones its dead letters, delivered ones those whose last entry
// in the delivery log says delivered (kept as long as the log keeps them:
// the sink's attempts retention). Each request reads at most AdminScan
// messages of each stream: the oldest pending, the newest log entries and
// dead letters. The pending and dead counts of a pipeline are the
// streams' own, exact; delivered counts the log's delivered entries.
type AdminView struct {
	c     *Cluster
	sinks func() []SinkRef
}

// SinkRef names one sink of a pipeline.
type SinkRef struct{ Pipeline, Sink string }

// AdminScan bounds the messages an AdminView reads of each stream per
// request.
const AdminScan = 5000

// AdminView returns the view of the sinks sinks lists (the pipelines this
// worker runs; a sink without an outbox stream has no deliveries).
func (c *Cluster) AdminView(sinks func() []SinkRef) *AdminView {
	return &AdminView{c: c, sinks: sinks}
}

// ErrDeadOnly is what Replay says of deliveries that are not dead
// letters: a cluster keeps no payload of what was delivered, and what is
// pending is sent already.
var ErrDeadOnly error = deadOnly{}

type deadOnly struct{}

func (deadOnly) Error() string {
	return "on a cluster only dead letters can be replayed (status dead): what was delivered is not kept, and what is pending is sent already"
}

// Is makes it errors.ErrUnsupported.
func (deadOnly) Is(target error) bool { return target == errors.ErrUnsupported }

// List implements the admin API's checkpoints: the cluster's, one per
// partition (the source named "source[partition]" where the source has
// partitions).
func (v *AdminView) List(ctx context.Context, pipeline string) ([]state.Checkpoint, error) {
	cps, err := v.c.Checkpoints(ctx, pipeline)
	if err != nil {
		return nil, err
	}
	out := make([]state.Checkpoint, 0, len(cps))
	for _, cp := range cps {
		src := cp.Source
		if cp.Partition != "" {
			src += "[" + cp.Partition + "]"
		}
		out = append(out, state.Checkpoint{Pipeline: cp.Pipeline, Source: src, Position: cp.Position, Records: cp.Records, UpdatedAt: cp.UpdatedAt})
	}
	return out, nil
}

// Summary counts each sink's deliveries (one row per sink, endpoint
// empty): pending and dead as its streams hold them, retrying among the
// pending read, delivered the delivery log's delivered entries. f's
// Pipeline and Sink select the sinks.
func (v *AdminView) Summary(ctx context.Context, f state.DeliveryFilter) ([]state.EndpointSummary, error) {
	var out []state.EndpointSummary
	for _, ref := range v.refs(f) {
		pending, dead, ok, err := v.c.OutboxCounts(ctx, ref.Pipeline, ref.Sink)
		if err != nil {
			return nil, fmt.Errorf("cluster: deliveries of %s/%s: %w", ref.Pipeline, ref.Sink, err)
		}
		if !ok {
			continue
		}
		e := state.EndpointSummary{Pipeline: ref.Pipeline, Sink: ref.Sink, Pending: int(pending), Dead: int(dead), Circuit: "closed"}
		n := v.c.outboxNames(ref.Pipeline, ref.Sink)
		if st, err := v.c.js.Stream(ctx, n.log); err == nil {
			subject := n.logSubject + ".delivered"
			if info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject)); err == nil {
				e.Delivered = int(info.State.Subjects[subject])
			}
		}
		recs, err := v.load(ctx, ref, state.DeliveryFilter{Status: state.StatusFailed})
		if err != nil {
			return nil, err
		}
		e.Retrying = len(recs)
		for _, r := range recs {
			if e.OldestPending == nil || r.CreatedAt.Before(*e.OldestPending) {
				at := r.CreatedAt
				e.OldestPending = &at
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// DeliveryPage lists the deliveries matching f, newest change first, limit
// a page; cursor continues a listing (an offset into it, so a page may
// repeat or skip one that changed meanwhile).
func (v *AdminView) DeliveryPage(ctx context.Context, f state.DeliveryFilter, cursor string, limit int) (state.DeliveryPage, error) {
	if limit <= 0 {
		limit = state.DefaultPageLimit
	}
	limit = min(limit, state.MaxPageLimit)
	offset := 0
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		n, perr := strconv.Atoi(strings.TrimPrefix(string(b), "o"))
		if err != nil || perr != nil || !strings.HasPrefix(string(b), "o") || n < 0 {
			return state.DeliveryPage{}, state.ErrBadCursor
		}
		offset = n
	}
	var all []state.DeliveryRecord
	for _, ref := range v.refs(f) {
		recs, err := v.load(ctx, ref, f)
		if err != nil {
			return state.DeliveryPage{}, err
		}
		all = append(all, recs...)
	}
	slices.SortFunc(all, func(a, b state.DeliveryRecord) int {
		if c := b.UpdatedAt.Compare(a.UpdatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Pipeline+"\x00"+a.Sink+"\x00"+a.ID, b.Pipeline+"\x00"+b.Sink+"\x00"+b.ID)
	})
	page := state.DeliveryPage{Deliveries: []state.DeliveryRecord{}}
	if offset < len(all) {
		page.Deliveries = all[offset:min(len(all), offset+limit)]
	}
	if offset+limit < len(all) {
		page.Next = base64.RawURLEncoding.EncodeToString([]byte("o" + strconv.Itoa(offset+limit)))
	}
	return page, nil
}

// Delivery returns one sink's delivery with its attempts.
func (v *AdminView) Delivery(ctx context.Context, pipeline, sink, id string) (state.DeliveryRecord, error) {
	recs, err := v.load(ctx, SinkRef{pipeline, sink}, state.DeliveryFilter{ID: id})
	if err != nil {
		return state.DeliveryRecord{}, err
	}
	if len(recs) == 0 {
		return state.DeliveryRecord{}, fmt.Errorf("cluster: delivery %s/%s/%s: %w", pipeline, sink, id, state.ErrNotFound)
	}
	return recs[0], nil
}

// DeliveriesByID returns the delivery with that id of every sink that has
// one.
func (v *AdminView) DeliveriesByID(ctx context.Context, id string) ([]state.DeliveryRecord, error) {
	out := []state.DeliveryRecord{}
	for _, ref := range v.refs(state.DeliveryFilter{}) {
		recs, err := v.load(ctx, ref, state.DeliveryFilter{ID: id})
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// Replay puts the dead letters matching f back into their outboxes (as
// `pipeline replay --cluster` does); it refuses other statuses with
// ErrDeadOnly.
func (v *AdminView) Replay(ctx context.Context, f state.DeliveryFilter, _ time.Time) (int64, error) {
	switch f.Status {
	case "", state.StatusDead:
	default:
		return 0, ErrDeadOnly
	}
	if f.ID != "" && f.Status == "" {
		// One delivery (POST /api/deliveries/{key}/replay): refused
		// unless it is a dead letter.
		for _, ref := range v.refs(f) {
			recs, err := v.load(ctx, ref, f)
			if err != nil {
				return 0, err
			}
			for _, r := range recs {
				if r.Status != state.StatusDead {
					return 0, ErrDeadOnly
				}
			}
		}
	}
	f.Status = state.StatusDead
	var total int64
	for _, ref := range v.refs(f) {
		recs, err := v.load(ctx, ref, f)
		if err != nil {
			return total, err
		}
		if len(recs) == 0 {
			continue
		}
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
		}
		n, err := v.c.Replay(ctx, ref.Pipeline, ref.Sink, ids)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// refs are the sinks f selects.
func (v *AdminView) refs(f state.DeliveryFilter) []SinkRef {
	var out []SinkRef
	for _, r := range v.sinks() {
		if (f.Pipeline == "" || r.Pipeline == f.Pipeline) && (f.Sink == "" || r.Sink == f.Sink) {
			out = append(out, r)
		}
	}
	return out
}

// viewRecord is a delivery as read, with what the filter's search looks at.
type viewRecord struct {
	state.DeliveryRecord
	payload []byte
}

// load reads one sink's deliveries matching f (its Pipeline and Sink are
// not looked at), each with its attempts from the delivery log.
func (v *AdminView) load(ctx context.Context, ref SinkRef, f state.DeliveryFilter) ([]state.DeliveryRecord, error) {
	n := v.c.outboxNames(ref.Pipeline, ref.Sink)
	wrap := func(err error) error {
		return fmt.Errorf("cluster: deliveries of %s/%s: %w", ref.Pipeline, ref.Sink, err)
	}
	// The delivery log, newest AdminScan entries, by id.
	logs := map[string][]LogEntry{}
	var bad error
	if err := v.scan(ctx, n.log, true, func(m *jetstream.RawStreamMsg) {
		var e LogEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			bad = err
			return
		}
		if f.ID == "" || e.ID == f.ID {
			logs[e.ID] = append(logs[e.ID], e)
		}
	}); err != nil {
		return nil, wrap(err)
	}
	if bad != nil {
		return nil, wrap(fmt.Errorf("a delivery log entry is not valid: %w", bad))
	}
	recs := map[string]*viewRecord{}
	base := func(id string) state.DeliveryRecord {
		return state.DeliveryRecord{Pipeline: ref.Pipeline, Sink: ref.Sink, ID: id}
	}
	// Delivered: the last entry of the id says so.
	for id, es := range logs {
		last := es[len(es)-1]
		if last.Outcome != "delivered" {
			continue
		}
		d := base(id)
		d.Status, d.Endpoint, d.Attempts, d.LastCode = state.StatusDelivered, last.Endpoint, last.Attempts, last.StatusCode
		d.CreatedAt, d.UpdatedAt = es[0].At, last.At
		recs[id] = &viewRecord{DeliveryRecord: d}
	}
	// Dead letters.
	if err := v.scan(ctx, n.dead, true, func(m *jetstream.RawStreamMsg) {
		dl := parseDeadLetter(m)
		if f.ID != "" && dl.ID != f.ID {
			return
		}
		d := base(dl.ID)
		d.Status, d.Endpoint, d.Attempts, d.LastCode, d.LastError = state.StatusDead, dl.Endpoint, dl.Attempts, dl.LastStatus, dl.LastError
		d.CreatedAt, d.UpdatedAt = dl.EnqueuedAt, dl.DeadAt
		recs[dl.ID] = &viewRecord{DeliveryRecord: d, payload: dl.Payload}
	}); err != nil {
		return nil, wrap(err)
	}
	// Pending: the outbox stream's messages, oldest first.
	if err := v.scan(ctx, n.stream, false, func(m *jetstream.RawStreamMsg) {
		h := m.Header
		id := h.Get(hdrID)
		if f.ID != "" && id != f.ID {
			return
		}
		d := base(id)
		d.Status, d.Endpoint = state.StatusPending, hdrUnescape(h.Get(hdrEndpoint))
		d.CreatedAt = m.Time.UTC()
		d.UpdatedAt, d.NextAt = d.CreatedAt, d.CreatedAt
		if nb, _ := strconv.ParseInt(h.Get(hdrNotBefore), 10, 64); nb > 0 {
			d.NextAt = time.UnixMilli(nb).UTC()
		}
		// Its attempts since it was stored (a replayed one's earlier
		// attempts ended in its dead letter).
		for _, e := range logs[id] {
			if e.At.Before(d.CreatedAt) {
				continue
			}
			d.Attempts, d.LastCode, d.LastError, d.UpdatedAt = e.Attempts, e.StatusCode, e.Error, e.At
			if e.Outcome == "retry" && !e.NextAt.IsZero() {
				d.NextAt = e.NextAt
			}
		}
		recs[id] = &viewRecord{DeliveryRecord: d, payload: m.Data}
	}); err != nil {
		return nil, wrap(err)
	}
	q := strings.ToLower(f.Q)
	var out []state.DeliveryRecord
	for id, r := range recs {
		d := r.DeliveryRecord
		switch f.Status {
		case "":
		case state.StatusFailed:
			if d.Status != state.StatusPending || d.LastError == "" {
				continue
			}
		default:
			if d.Status != f.Status {
				continue
			}
		}
		if !f.Since.IsZero() && d.UpdatedAt.Before(f.Since) {
			continue
		}
		if q != "" && !strings.Contains(strings.ToLower(id), q) && !strings.Contains(strings.ToLower(d.Endpoint), q) &&
			!strings.Contains(strings.ToLower(d.LastError), q) && !strings.Contains(strings.ToLower(string(r.payload)), q) {
			continue
		}
		d.Log = []state.Attempt{}
		for _, e := range logs[id] {
			d.Log = append(d.Log, state.Attempt{N: e.Attempts, At: e.At, StatusCode: e.StatusCode,
				Latency: time.Duration(e.LatencyMs) * time.Millisecond, Error: e.Error, Response: []byte(e.Response)})
		}
		out = append(out, d)
	}
	return out, nil
}

// scan calls f with at most AdminScan messages of a stream: the newest
// when newest is set, else the oldest. A stream that does not exist has
// none.
func (v *AdminView) scan(ctx context.Context, stream string, newest bool, f func(*jetstream.RawStreamMsg)) error {
	st, err := v.c.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	s := info.State
	if s.Msgs == 0 {
		return nil
	}
	if info.Config.Retention == jetstream.WorkQueuePolicy {
		// (The outbox: a work queue takes no consumer without acks, so its
		// messages are read one by one, the oldest first.)
		seen := 0
		return eachMsg(ctx, st, ">", s.FirstSeq, s.LastSeq, func(m *jetstream.RawStreamMsg) {
			if seen < AdminScan {
				seen++
				f(m)
			}
		}, func() bool { return seen >= AdminScan })
	}
	// (The server removes the consumer a few seconds after the scan.)
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: 5 * time.Second}
	if newest && s.Msgs > AdminScan {
		// The newest AdminScan: from the sequence that leaves that many
		// after it (exact for a stream without gaps, as the delivery log
		// is; at most that many for one with gaps).
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, s.LastSeq-AdminScan+1
	}
	cons, err := v.c.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return err
	}
	for seen, idle := 0, 0; seen < AdminScan; {
		// What is there now, without waiting for more; once, if nothing
		// came yet, wait a little (a consumer just made).
		var batch jetstream.MessageBatch
		if idle == 0 {
			batch, err = cons.FetchNoWait(min(500, AdminScan-seen))
		} else {
			batch, err = cons.Fetch(min(500, AdminScan-seen), jetstream.FetchMaxWait(time.Second))
		}
		if err != nil {
			return err
		}
		got := 0
		done := false
		for m := range batch.Messages() {
			got++
			seen++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			f(&jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: md.Sequence.Stream, Header: m.Headers(), Data: m.Data(), Time: md.Timestamp})
			if md.Sequence.Stream >= s.LastSeq || md.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if got == 0 {
			idle++
		}
		if done || idle > 1 {
			return nil
		}
	}
	return nil
}
