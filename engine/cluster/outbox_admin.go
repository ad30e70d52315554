package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What the CLI and the admin API do with an outbox of the cluster, without
// an OutboxService: pause and resume a sink, list and replay its dead
// letters, read its delivery log.

// SetPaused pauses a pipeline's sink (or resumes it): while it is paused
// its outbox still stores what the sink enqueues, but no worker leases
// anything of it. Every worker's service sees it within half a second
// (at once in this process).
func (c *Cluster) SetPaused(ctx context.Context, pipeline, sink string, paused bool) error {
	if pipeline == "" || sink == "" {
		return errors.New("cluster: pause: a pipeline and a sink name are needed")
	}
	n := c.outboxNames(pipeline, sink)
	kv, err := c.bucket(ctx, n.pausedBucket, "pipeline: paused sinks", 0)
	if err != nil {
		return fmt.Errorf("cluster: pause %s/%s: %w", pipeline, sink, err)
	}
	defer pauseGen.Add(1)
	if paused {
		_, err = kv.Put(ctx, n.key, []byte(time.Now().UTC().Format(time.RFC3339)))
	} else if err = kv.Delete(ctx, n.key); errors.Is(err, jetstream.ErrKeyNotFound) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("cluster: pause %s/%s: %w", pipeline, sink, err)
	}
	return nil
}

// IsPaused reads whether a pipeline's sink is paused.
func (c *Cluster) IsPaused(ctx context.Context, pipeline, sink string) (bool, error) {
	n := c.outboxNames(pipeline, sink)
	kv, err := c.js.KeyValue(ctx, n.pausedBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return false, nil
	}
	if err == nil {
		_, err = kv.Get(ctx, n.key)
		if err == nil {
			return true, nil
		}
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil
		}
	}
	return false, fmt.Errorf("cluster: paused %s/%s: %w", pipeline, sink, err)
}

// DeadLetter is a delivery in a sink's dead-letter stream: it failed for
// good and waits there until it is replayed or its retention ends.
type DeadLetter struct {
	ID         string    `json:"id"`
	Endpoint   string    `json:"endpoint,omitempty"`
	OrderKey   string    `json:"order_key,omitempty"`
	Payload    []byte    `json:"payload"`
	Attempts   int       `json:"attempts"`
	LastError  string    `json:"last_error,omitempty"`
	LastStatus int       `json:"last_status_code,omitempty"`
	DeadAt     time.Time `json:"dead_at"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	Worker     string    `json:"worker,omitempty"` // the worker that recorded its death
	// Seq is its sequence in the dead-letter stream.
	Seq uint64 `json:"-"`
}

func parseDeadLetter(m *jetstream.RawStreamMsg) DeadLetter {
	h := m.Header
	ms := func(k string) time.Time {
		v, _ := strconv.ParseInt(h.Get(k), 10, 64)
		if v <= 0 {
			return time.Time{}
		}
		return time.UnixMilli(v).UTC()
	}
	d := DeadLetter{ID: hdrUnescape(h.Get(hdrID)), Endpoint: hdrUnescape(h.Get(hdrEndpoint)), OrderKey: hdrUnescape(h.Get(hdrOrderKey)),
		Payload: m.Data, LastError: hdrUnescape(h.Get(hdrError)), DeadAt: ms(hdrDeadAt), EnqueuedAt: ms(hdrEnqueuedAt),
		Worker: hdrUnescape(h.Get(hdrWorker)), Seq: m.Sequence}
	d.Attempts, _ = strconv.Atoi(h.Get(hdrAttempts))
	d.LastStatus, _ = strconv.Atoi(h.Get(hdrStatus))
	return d
}

// DeadLetters lists a sink's dead letters, the most recent first, at most
// max of them (all when max is not positive). A sink with no outbox has
// none.
func (c *Cluster) DeadLetters(ctx context.Context, pipeline, sink string, max int) ([]DeadLetter, error) {
	n := c.outboxNames(pipeline, sink)
	st, err := c.js.Stream(ctx, n.dead)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: dead letters of %s/%s: %w", pipeline, sink, err)
	}
	var out []DeadLetter
	err = eachMsg(ctx, st, n.deadSubject+".*", 1, 0, func(m *jetstream.RawStreamMsg) {
		out = append(out, parseDeadLetter(m))
		if max > 0 && len(out) > max {
			out = out[1:]
		}
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: dead letters of %s/%s: %w", pipeline, sink, err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// eachMsg calls f with every message of a stream on subject from sequence
// from on, up to last (0: the stream's last when it starts), or until
// enough (when given) says so.
func eachMsg(ctx context.Context, st jetstream.Stream, subject string, from, last uint64, f func(*jetstream.RawStreamMsg), enough ...func() bool) error {
	if last == 0 {
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		last = info.State.LastSeq
	}
	for seq := max(from, 1); seq <= last; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if m.Sequence > last {
			return nil
		}
		f(m)
		if len(enough) > 0 && enough[0]() {
			return nil
		}
		seq = m.Sequence + 1
	}
	return nil
}

// Replay puts dead letters back into their sink's outbox: due now, with
// their attempts starting again from 0, under their own ids (their
// webhook-ids stay the same). ids selects them (none: every dead letter of
// the sink); an id with no dead letter is skipped. A replayed delivery is
// a new message whose Nats-Msg-Id names the dead letter, not the delivery,
// so that the dedupe window of the original id does not drop it (and a
// replay done twice within the window is stored once). A delivery with an
// order key goes after those of its key that are pending. It returns how
// many it put back.
func (c *Cluster) Replay(ctx context.Context, pipeline, sink string, ids []string) (int, error) {
	n := c.outboxNames(pipeline, sink)
	wrap := func(err error) error { return fmt.Errorf("cluster: replay %s/%s: %w", pipeline, sink, err) }
	dead, err := c.js.Stream(ctx, n.dead)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, wrap(err)
	}
	outbox, err := c.js.Stream(ctx, n.stream)
	if err != nil {
		return 0, wrap(fmt.Errorf("the outbox stream %s: %w", n.stream, err))
	}
	lanes := lanesOf(outbox.CachedInfo().Config.Description)
	if lanes <= 0 {
		return 0, wrap(fmt.Errorf("the outbox stream %s does not say its lanes", n.stream))
	}
	var letters []DeadLetter
	if len(ids) == 0 {
		err = eachMsg(ctx, dead, n.deadSubject+".*", 1, 0, func(m *jetstream.RawStreamMsg) { letters = append(letters, parseDeadLetter(m)) })
		if err != nil {
			return 0, wrap(err)
		}
	} else {
		seen := map[string]bool{}
		for _, id := range ids {
			if seen[id] {
				continue
			}
			seen[id] = true
			m, err := dead.GetLastMsgForSubject(ctx, n.deadLetterSubject(id))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return 0, wrap(err)
			}
			if d := parseDeadLetter(m); d.ID == id { // (a hashed id token could in theory be shared)
				letters = append(letters, d)
			}
		}
	}
	replayed := 0
	const chunk = 256
	for len(letters) > 0 {
		part := letters[:min(len(letters), chunk)]
		letters = letters[len(part):]
		msgs := make([]*nats.Msg, len(part))
		for i, d := range part {
			subject := n.unorderedSubject()
			if d.OrderKey != "" {
				subject = n.laneSubject(lane(d.OrderKey, lanes))
			}
			m := nats.NewMsg(subject)
			m.Header.Set(hdrMsgID, "replay:"+strconv.FormatUint(d.Seq, 10)+":"+hdrEscape(d.ID))
			m.Header.Set(hdrID, hdrEscape(d.ID))
			if d.Endpoint != "" {
				m.Header.Set(hdrEndpoint, hdrEscape(d.Endpoint))
			}
			if d.OrderKey != "" {
				m.Header.Set(hdrOrderKey, hdrEscape(d.OrderKey))
			}
			m.Data = d.Payload
			msgs[i] = m
		}
		acks, err := c.publishAll(ctx, msgs, n.stream)
		// Each dead letter replayed leaves the dead-letter stream, after
		// its PubAck: a crash in between replays it again, deduplicated.
		for i := range acks {
			if derr := dead.DeleteMsg(ctx, part[i].Seq); derr != nil && !errors.Is(derr, jetstream.ErrMsgNotFound) {
				return replayed, wrap(derr)
			}
			replayed++
		}
		if err != nil {
			return replayed, wrap(err)
		}
	}
	return replayed, nil
}

// DeliveryLog returns the last attempts of a sink's delivery log, at most
// last of them (all when last is not positive), oldest first.
func (c *Cluster) DeliveryLog(ctx context.Context, pipeline, sink string, last int) ([]LogEntry, error) {
	n := c.outboxNames(pipeline, sink)
	wrap := func(err error) error { return fmt.Errorf("cluster: delivery log of %s/%s: %w", pipeline, sink, err) }
	st, err := c.js.Stream(ctx, n.log)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	from := info.State.FirstSeq
	if last > 0 && info.State.LastSeq >= uint64(last) {
		from = max(from, info.State.LastSeq-uint64(last)+1)
	}
	var out []LogEntry
	var bad error
	err = eachMsg(ctx, st, n.logSubject+".*", from, info.State.LastSeq, func(m *jetstream.RawStreamMsg) {
		var e LogEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			bad = fmt.Errorf("entry %d: %w", m.Sequence, err)
			return
		}
		out = append(out, e)
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return out, wrap(err)
	}
	return out, nil
}
