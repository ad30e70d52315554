package cluster

// The inbox of a push source (source "http", source "webhook") as a
// JetStream stream (`pipeline serve --cluster`): the plugin protocol's
// State service (InboxAppend, InboxRead, InboxStatus, InboxRequests)
// served from one stream per pipeline and source that every worker's push
// source stores into and reads from. So a push source listens on every
// worker, a request is answered 202 once JetStream has stored its records
// (PubAck), and whichever worker reads an entry delivers it.
//
// Layout (for a cluster of prefix P, a pipeline p, a source s; T is Token):
//
//	stream   P_inbox_T(p)~T(s)   subjects P.inbox.T(p).T(s).<records>
//	consumer "read" on it        (durable, shared by every worker)
//	KV       P_inbox_keys        key T(p).T(s).<sha256 of the dedupe key>
//
//   - An entry (one request's records, as JSON lines) is one message. Its
//     subject ends with its record count, so that the stream's per-subject
//     counts give the records the cluster holds (InboxStatus, the sources'
//     max_pending) without reading any message. The stream has WorkQueue
//     retention: an entry leaves it when it is acked, which is once the
//     pipeline committed past it.
//   - Every worker reads through one durable pull consumer, so each entry
//     is with one worker at a time. That worker numbers the records it was
//     handed itself, in the order handed, from 1 in the service's session:
//     positions are the session's and only grow, and the runner (engine/run
//     shared.go) tells Committed the position every sink acked instead of
//     writing a checkpoint; every entry whose records are all at or before
//     it is acked then (confirmed by the server). Until then the worker
//     renews the entry (InProgress, every AckWait/2). A worker that dies
//     renews nothing: AckWait after its last renewal the consumer hands its
//     entries to another worker, which delivers them (duplicates at most,
//     never losses). A worker that stops cleanly hands back at once what it
//     read and did not commit (Close).
//   - Dedupe keys (Idempotency-Key, a webhook's delivery id) are entries of
//     the KV bucket P_inbox_keys, keyed by a hash of the key, holding the
//     response the first request got and when its window ends. A request
//     creates its key (create-if-absent: of several workers with the same
//     key at once, one wins) as "pending" before it publishes its entry
//     with Nats-Msg-Id = the key's hash and the end of its window, and
//     marks it "stored" after the PubAck. A later request with the key is
//     answered with the stored response. One that finds it pending waits
//     while the first may still be storing it (its append's time); if it is
//     pending still (the first's publish failed, or its worker died between
//     the key and the PubAck), it publishes its own entry under the same
//     Nats-Msg-Id, which the stream drops if the first got there within its
//     duplicates window (InboxOptions.DedupeWindow), and is answered with
//     the first's response too. So concurrent requests with one key store
//     the first's records, and a key never stands
//     for records that were not stored: a crash between the two writes
//     costs a duplicate at most, never a 202 for nothing. The bucket keeps a
//     key at least its window (its TTL is grown to the longest window
//     asked); a key past its own window is taken over by the next request.
//     Why not the stream's Nats-Msg-Id alone: its window is one per stream
//     and kept in the server's memory (windows here are days), and a
//     duplicate's PubAck does not carry the first response.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// InboxOptions tune an InboxService.
type InboxOptions struct {
	// AckWait is how long an entry a worker read stays its own without a
	// renewal (default DefaultAckWait). A worker that dies holding entries
	// has them delivered by another worker this long after it stopped
	// renewing them.
	AckWait time.Duration
	// DedupeWindow is the inbox stream's Nats-Msg-Id window (default
	// DefaultDedupeWindow): a request that finds its key pending stores
	// nothing twice if the first got stored less than this long before.
	DedupeWindow time.Duration
	// MaxHeld bounds the entries this worker holds read and not committed
	// (default DefaultInboxMaxHeld): the rest stays in the stream for the
	// other workers, and a worker that dies holds back at most this many
	// for AckWait.
	MaxHeld int
	// OnRequests, when set, is given what the push source reports of the
	// requests it answered (InboxRequests), for this worker's metrics.
	OnRequests func(byStatus map[int]int64)
	// OnAccepted, when set, is given the records each InboxAppend stored
	// (duplicates not counted), for this worker's metrics.
	OnAccepted func(records int64)
}

// DefaultInboxMaxHeld is InboxOptions.MaxHeld's default.
const DefaultInboxMaxHeld = 8192

const (
	// inboxConsumer is the durable consumer every worker reads through.
	inboxConsumer = "read"
	// inboxKeysTTL is the dedupe bucket's TTL when it is made (the
	// webhook source's default window); a longer window grows it.
	inboxKeysTTL = 72 * time.Hour
	// inboxFetchRound is the most one fetch asks for.
	inboxFetchRound = 256
	// maxReadWait bounds how long InboxRead waits for an entry.
	maxReadWait = 5 * time.Second
	// maxAckTries is how many commits try to ack an entry before it is
	// given up on (it may be delivered again: a duplicate, never a loss).
	maxAckTries = 3
	// hdrOrigin names the request an entry's records came in.
	hdrOrigin = "Pipeline-Origin"
	// appendTimeout bounds an InboxAppend: its requests wait for it, and
	// while NATS is away they are better told 503 (retry) soon than kept.
	appendTimeout = 10 * time.Second
	// entryHeaderRoom is what an entry's message keeps for its headers
	// (its Nats-Msg-Id and origin) within the server's max_payload.
	entryHeaderRoom = 4096
)

// maxEntryBytes is the most an entry's records may hold: the server's
// max_payload less room for the headers (0 while it is not known).
func (s *InboxService) maxEntryBytes() int64 {
	if mp := s.c.nc.MaxPayload(); mp > entryHeaderRoom {
		return mp - entryHeaderRoom
	}
	return 0
}

// inboxNames are the names of one push source's inbox in JetStream.
type inboxNames struct {
	stream  string // P_inbox_T(p)~T(s)
	subject string // P.inbox.T(p).T(s): an entry's subject adds its record count
	keys    string // the dedupe bucket
	key     string // T(p).T(s): the inbox's keys in it start with it
}

func (c *Cluster) inboxNames(pipeline, source string) inboxNames {
	p, s := Token(pipeline), Token(source)
	pre := c.opts.Prefix
	return inboxNames{
		stream:  streamName(pre + "_inbox_" + p + "~" + s),
		subject: pre + ".inbox." + p + "." + s,
		keys:    pre + "_inbox_keys",
		key:     p + "." + s,
	}
}

// entrySubject is the subject of an entry of count records.
func (n inboxNames) entrySubject(count int) string { return n.subject + "." + strconv.Itoa(count) }

// dedupeKey is a dedupe key's hash: its entry in the bucket, and its
// entry's Nats-Msg-Id.
func dedupeKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:16])
}

// keyRecord is a dedupe key's entry in the bucket.
type keyRecord struct {
	// Response is what the first request with the key was answered.
	Response []byte `json:"response,omitempty"`
	// Expires ends the key's window (unix ms).
	Expires int64 `json:"expires"`
	// Stored: the first request's entry is in the stream (its PubAck came).
	Stored bool `json:"stored"`
	// Storing is when the request that holds the key pending began (unix
	// ms), 0 once no request is storing it (its publish failed). A request
	// that finds the key pending waits for it while that request may still
	// be at it (Storing + appendTimeout), so that concurrent requests with
	// one key store the first's records, not their own.
	Storing int64 `json:"storing,omitempty"`
}

// InboxService serves one push source's inbox from JetStream, for one
// worker: a pluginv1.StateServer (the outbox methods are not served), and
// the source's shared state for the runner (Committed). Several workers
// each run one for the same pipeline and source and share the entries.
type InboxService struct {
	pluginv1.UnimplementedStateServer

	c        *Cluster
	pipeline string
	source   string
	opts     InboxOptions
	n        inboxNames
	log      *slog.Logger

	stream   jetstream.Stream
	consumer jetstream.Consumer
	keys     jetstream.KeyValue

	keysMu  sync.Mutex
	keysTTL time.Duration // the bucket's, as last seen

	readMu sync.Mutex // one InboxRead at a time: records are numbered in the order handed out

	mu       sync.Mutex
	next     int64       // the number the next record handed out gets
	ready    []*inboxMsg // fetched and not handed out yet, oldest first
	out      []*inboxMsg // handed out and not acked, by number
	closed   bool
	requests map[int]int64
	accepted int64 // records this service stored
	pending  int64 // records the stream holds, as last seen, plus what was stored since
	oldest   time.Time

	freed     chan struct{} // a commit made room (MaxHeld)
	lastWarn  atomic.Int64  // unix ns of the last warning about reading
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

var _ pluginv1.StateServer = (*InboxService)(nil)

// inboxMsg is an entry fetched from the inbox stream, held by this worker.
type inboxMsg struct {
	holding
	seq      uint64 // in the stream
	count    int
	records  []byte
	origin   string
	received time.Time
	first    int64 // the number of its first record; 0 until handed out
	ackTries int
}

func (m *inboxMsg) last() int64 { return m.first + int64(m.count) - 1 }

// InboxService starts serving the inbox of a pipeline's push source,
// creating its stream, consumer and dedupe bucket where they do not exist.
// Call Close when the source's session ends.
func (c *Cluster) InboxService(ctx context.Context, pipeline, source string, opts InboxOptions) (*InboxService, error) {
	if pipeline == "" || source == "" {
		return nil, errors.New("cluster: inbox: a pipeline and a source name are needed")
	}
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultAckWait
	}
	if opts.DedupeWindow <= 0 {
		opts.DedupeWindow = DefaultDedupeWindow
	}
	if opts.MaxHeld <= 0 {
		opts.MaxHeld = DefaultInboxMaxHeld
	}
	s := &InboxService{c: c, pipeline: pipeline, source: source, opts: opts, n: c.inboxNames(pipeline, source),
		log: c.log.With("pipeline", pipeline, "source", source), next: 1, requests: map[int]int64{},
		freed: make(chan struct{}, 1)}
	if err := s.setup(ctx); err != nil {
		return nil, fmt.Errorf("cluster: inbox %s/%s: %w", pipeline, source, err)
	}
	if p, _, err := s.counts(ctx); err == nil {
		s.pending = p
	}
	kctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go s.keepAlive(kctx)
	return s, nil
}

func (s *InboxService) setup(ctx context.Context) error {
	js, n := s.c.js, s.n
	var err error
	s.stream, _, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name: n.stream, Description: fmt.Sprintf("pipeline: inbox of %s/%s", s.pipeline, s.source),
		Subjects:  []string{n.subject + ".*"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: s.c.opts.Replicas,
		Duplicates: s.opts.DedupeWindow,
	})
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.stream, err)
	}
	if cfg := s.stream.CachedInfo().Config; cfg.Duplicates != s.opts.DedupeWindow {
		cfg.Duplicates = s.opts.DedupeWindow
		if s.stream, err = js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: duplicates window: %w", n.stream, err)
		}
	}
	s.consumer, err = ensureConsumer(ctx, s.stream, jetstream.ConsumerConfig{
		Durable: inboxConsumer, Description: "pipeline: the entries every worker's push source reads",
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: s.opts.AckWait, MaxDeliver: -1, MaxAckPending: -1, Replicas: s.c.opts.Replicas,
	})
	if err != nil {
		return fmt.Errorf("consumer %s of %s: %w", inboxConsumer, n.stream, err)
	}
	s.keys, err = js.KeyValue(ctx, n.keys)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		s.keys, err = js.CreateKeyValue(ctx, s.keysConfig(inboxKeysTTL))
		if errors.Is(err, jetstream.ErrBucketExists) { // another worker was first
			s.keys, err = js.KeyValue(ctx, n.keys)
		}
	}
	if err != nil {
		return fmt.Errorf("KV bucket %s: %w", n.keys, err)
	}
	st, err := s.keys.Status(ctx)
	if err != nil {
		return fmt.Errorf("KV bucket %s: %w", n.keys, err)
	}
	s.keysTTL = st.TTL()
	return nil
}

func (s *InboxService) keysConfig(ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: s.n.keys, Description: "pipeline: dedupe keys of push sources, with the first response",
		History: 1, TTL: ttl, Storage: jetstream.FileStorage, Replicas: s.c.opts.Replicas}
}

// growKeys makes the dedupe bucket keep keys at least window.
func (s *InboxService) growKeys(ctx context.Context, window time.Duration) error {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if s.keysTTL == 0 || s.keysTTL >= window {
		return nil
	}
	st, err := s.keys.Status(ctx)
	if err != nil {
		return err
	}
	if ttl := st.TTL(); ttl == 0 || ttl >= window {
		s.keysTTL = ttl
		return nil
	}
	if _, err := s.c.js.UpdateKeyValue(ctx, s.keysConfig(window)); err != nil {
		return err
	}
	s.keysTTL = window
	return nil
}

// msgID is the Nats-Msg-Id of a keyed entry: the key's hash and the end of
// the window of the request that holds it (the first's, for a duplicate
// stored again), so that a request taking a key over after its window is
// not dropped as a copy of the one before.
func (j *appendJob) msgID() string {
	return "key:" + dedupeKey(j.e.Key) + ":" + strconv.FormatInt(j.rec.Expires, 10)
}

// appendJob is one entry of an InboxAppend under way.
type appendJob struct {
	e      *pluginv1.InboxEntry
	kvKey  string // its dedupe key's entry, "" without a key
	rec    keyRecord
	rev    uint64 // of its key's entry, once claimed or found pending
	dup    bool   // answered with the first response
	store  bool   // published
	ack    *jetstream.PubAck
	failed error
}

// InboxAppend implements pluginv1.StateServer: it stores each entry as a
// message of the inbox stream and returns once JetStream acknowledged all
// of them (or fails, and then the source answers every request of the call
// 503: some of them may be stored all the same, a duplicate when the
// client retries, never a loss). An entry whose key another request (of
// any worker) stored within its window is not stored, and gets that
// request's response. first is the entry's sequence in the stream: records
// are numbered when they are read. pending counts the records the cluster's
// inbox holds, as last counted plus what was stored since.
func (s *InboxService) InboxAppend(ctx context.Context, req *pluginv1.InboxAppendRequest) (*pluginv1.InboxAppendResponse, error) {
	if s.isClosed() {
		return nil, errInboxClosed
	}
	for _, e := range req.Entries {
		if e.Count > 0 && len(e.Records) == 0 {
			return nil, status.Error(codes.InvalidArgument, "an inbox entry with records needs their bytes")
		}
		if limit := s.maxEntryBytes(); limit > 0 && int64(len(e.Records)) > limit {
			// (A push source refuses such a request itself, 413, once
			// InboxStatus told it the limit.)
			return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("an inbox entry of %d bytes is over the %d bytes one NATS message may hold here (the server's max_payload)", len(e.Records), limit))
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
	defer cancel()
	now := time.Now()
	results := make([]*pluginv1.InboxAppendResult, len(req.Entries))
	jobs := make([]*appendJob, len(req.Entries))
	firstOf := map[string]int{} // keys of this call
	var keyed []*appendJob
	var window time.Duration
	for i, e := range req.Entries {
		if e.Key != "" {
			if j, ok := firstOf[e.Key]; ok {
				results[i] = &pluginv1.InboxAppendResult{Duplicate: true, Response: req.Entries[j].Response}
				continue
			}
			firstOf[e.Key] = i
		}
		j := &appendJob{e: e, store: e.Count > 0}
		if e.Key != "" {
			j.kvKey = s.n.key + "." + dedupeKey(e.Key)
			keyed = append(keyed, j)
			window = max(window, time.Duration(e.KeyWindowMs)*time.Millisecond)
		}
		jobs[i] = j
	}
	// 1. Claim the keys.
	if window > 0 {
		if err := s.growKeys(ctx, window); err != nil {
			s.log.Warn("inbox: growing the dedupe bucket's TTL failed; keys may be forgotten before their window ends", "window", window.String(), "error", err.Error())
		}
	}
	parallel(len(keyed), func(i int) { keyed[i].failed = s.claimKey(ctx, keyed[i], now) })
	var errs []error
	for _, j := range keyed {
		if j.failed != nil {
			errs = append(errs, j.failed)
		}
	}
	if len(errs) > 0 {
		return nil, s.grpcErr("append", errors.Join(errs...))
	}
	// 2. Publish what is to be stored, and wait for the PubAcks.
	var storing []*appendJob
	var msgs []*nats.Msg
	for _, j := range jobs {
		if j == nil || !j.store {
			continue
		}
		m := nats.NewMsg(s.n.entrySubject(int(j.e.Count)))
		if j.kvKey != "" {
			m.Header.Set(hdrMsgID, j.msgID())
		}
		if j.e.Origin != "" {
			m.Header.Set(hdrOrigin, hdrEscape(j.e.Origin))
		}
		m.Data = j.e.Records
		msgs = append(msgs, m)
		storing = append(storing, j)
	}
	if len(msgs) > 0 {
		acks, err := s.c.publishAll(ctx, msgs, s.n.stream)
		if err != nil {
			s.giveUpKeys(storing[len(acks):])
			return nil, s.grpcErr("append", fmt.Errorf("storing %d entries (%d acknowledged): %w", len(msgs), len(acks), err))
		}
		for i, a := range acks {
			storing[i].ack = a
		}
	}
	// 3. Mark the keys stored: a later request with one is answered
	// without storing anything. (One not marked is found pending, and
	// stored again under the same Nats-Msg-Id: dropped within the
	// stream's duplicates window.)
	var marking []*appendJob
	for _, j := range keyed {
		if !j.rec.Stored && j.ack != nil {
			marking = append(marking, j)
		}
	}
	parallel(len(marking), func(i int) {
		j := marking[i]
		rec := j.rec
		rec.Stored, rec.Storing = true, 0
		data, _ := json.Marshal(rec)
		if _, err := s.keys.Update(ctx, j.kvKey, data, j.rev); err != nil && !isWrongRevision(err) {
			s.log.Warn("inbox: marking a dedupe key stored failed", "error", err.Error())
		}
	})
	var stored int64
	for i, j := range jobs {
		if j == nil {
			continue
		}
		switch {
		case j.dup:
			results[i] = &pluginv1.InboxAppendResult{Duplicate: true, Response: j.rec.Response}
		default:
			results[i] = &pluginv1.InboxAppendResult{}
			if j.ack != nil {
				results[i].First = int64(j.ack.Sequence)
			}
		}
		if j.ack != nil && !j.ack.Duplicate {
			stored += int64(j.e.Count)
		}
	}
	s.mu.Lock()
	s.accepted += stored
	s.pending += stored
	pending := s.pending
	s.mu.Unlock()
	if stored > 0 && s.opts.OnAccepted != nil {
		s.opts.OnAccepted(stored)
	}
	return &pluginv1.InboxAppendResponse{Results: results, Pending: pending}, nil
}

// giveUpKeys marks the pending keys of entries whose publish failed as no
// longer being stored, so that a retry (of this request or another with
// the key) does not wait for them: it stores its own entry under the same
// Nats-Msg-Id, dropped if this one did get there. Best effort: a key left
// as it was is waited for until its request's time is up.
func (s *InboxService) giveUpKeys(failed []*appendJob) {
	var mine []*appendJob
	for _, j := range failed {
		if j.kvKey != "" && !j.dup {
			mine = append(mine, j)
		}
	}
	if len(mine) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	parallel(len(mine), func(i int) {
		j := mine[i]
		rec := j.rec
		rec.Storing = 0
		data, _ := json.Marshal(rec)
		if _, err := s.keys.Update(ctx, j.kvKey, data, j.rev); err != nil && !isWrongRevision(err) {
			s.log.Debug("inbox: giving up a pending dedupe key failed", "error", err.Error())
		}
	})
}

// claimKey settles an entry's dedupe key: it creates it (pending) when no
// request holds it within its window, and the entry is stored; when one
// does, the entry is a duplicate answered with that one's response, and
// stored all the same (under the same Nats-Msg-Id) while the key is
// pending.
func (s *InboxService) claimKey(ctx context.Context, j *appendJob, now time.Time) error {
	mine := keyRecord{Response: j.e.Response, Expires: now.Add(time.Duration(j.e.KeyWindowMs) * time.Millisecond).UnixMilli(), Stored: !j.store}
	if j.store {
		mine.Storing = now.UnixMilli()
	}
	data, _ := json.Marshal(mine)
	waited := false
	for range 8 {
		rev, err := s.keys.Create(ctx, j.kvKey, data)
		if err == nil {
			j.rec, j.rev = mine, rev
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("dedupe key: %w", err)
		}
		kve, err := s.keys.Get(ctx, j.kvKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // gone meanwhile: create it
		}
		if err != nil {
			return fmt.Errorf("dedupe key: %w", err)
		}
		var have keyRecord
		if json.Unmarshal(kve.Value(), &have) != nil || have.Expires <= now.UnixMilli() {
			// Past its window: this request takes the key over.
			rev, err := s.keys.Update(ctx, j.kvKey, data, kve.Revision())
			if err == nil {
				j.rec, j.rev = mine, rev
				return nil
			}
			if isWrongRevision(err) {
				continue
			}
			return fmt.Errorf("dedupe key: %w", err)
		}
		if j.store && !have.Stored && have.Storing != 0 && !waited {
			// Pending, and its request may still be storing it: wait for
			// that, then look again.
			waited = true
			if err := s.awaitStored(ctx, j.kvKey, kve.Revision(), have.Storing, now); err != nil {
				return err
			}
			continue
		}
		j.dup, j.rec, j.rev = true, have, kve.Revision()
		// Still pending: its request failed, or its worker died before
		// the PubAck, or is slower than this one waits. Storing this one
		// too (the stream drops it if the first got there) makes sure the
		// response stands for records that are stored.
		j.store = j.store && !have.Stored
		return nil
	}
	return errors.New("dedupe key: changed by other requests too often; retry")
}

// awaitStored waits while the dedupe key holds the pending entry of
// revision rev, which a request began storing at storing (unix ms): until
// the key changes (stored, given up, gone) or that request's own time is
// up (appendTimeout, and a second for clocks of different machines), at
// most half of this request's.
func (s *InboxService) awaitStored(ctx context.Context, key string, rev uint64, storing int64, now time.Time) error {
	deadline := time.UnixMilli(storing).Add(appendTimeout + time.Second)
	if limit := now.Add(appendTimeout / 2); deadline.After(limit) {
		deadline = limit
	}
	for d := 2 * time.Millisecond; time.Now().Before(deadline); d = min(2*d, 50*time.Millisecond) {
		sleep(ctx, d)
		if ctx.Err() != nil {
			return fmt.Errorf("dedupe key: %w", ctx.Err())
		}
		kve, err := s.keys.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dedupe key: %w", err)
		}
		if kve.Revision() != rev {
			return nil
		}
	}
	return nil
}

// InboxRead implements pluginv1.StateServer: entries handed out before
// whose records come after `after` (a Read that started again from an
// earlier position), else entries fetched from the shared consumer, which
// this worker then holds (renewed) until Committed acks them. It hands out
// whole entries, at least one when it has one, and stops once max_records
// are reached; their records are numbered from where this service's
// numbers stand. With nothing to hand out it waits up to wait_ms for an
// entry (at most maxReadWait), and says so. While NATS is away it answers
// with nothing (the source's Read goes on; requests get 503 meanwhile).
func (s *InboxService) InboxRead(ctx context.Context, req *pluginv1.InboxReadRequest) (*pluginv1.InboxReadResponse, error) {
	if s.isClosed() {
		return nil, errInboxClosed
	}
	maxRecords := int(req.MaxRecords)
	if maxRecords <= 0 {
		maxRecords = 10000
	}
	wait := min(time.Duration(req.WaitMs)*time.Millisecond, maxReadWait)
	s.readMu.Lock()
	defer s.readMu.Unlock()

	s.mu.Lock()
	var again []*inboxMsg
	n := 0
	for _, m := range s.out {
		if m.last() > req.After {
			again = append(again, m)
			if n += m.count; n >= maxRecords {
				break
			}
		}
	}
	room := s.opts.MaxHeld - len(s.ready) - len(s.out)
	haveReady := len(s.ready) > 0
	s.mu.Unlock()
	if len(again) > 0 {
		return inboxReadResponse(again, false), nil
	}

	waited := false
	var got []*inboxMsg
	switch {
	case room > 0:
		var err error
		w := wait
		if haveReady {
			w = 0
		}
		got, err = s.fetch(min(room, inboxFetchRound), w)
		waited = w > 0
		if err != nil {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil, s.grpcErr("read", err)
			}
			s.warnRead(err)
			if len(got) == 0 && !haveReady && wait > 0 {
				sleep(ctx, wait)
				waited = true
			}
		}
	case !haveReady && wait > 0:
		// Holding all it may: wait for a commit to make room.
		select {
		case <-s.freed:
		case <-ctx.Done():
		case <-time.After(wait):
		}
		waited = true
	}

	s.mu.Lock()
	if s.closed {
		// Closed while fetching: back at once, as Close does.
		s.mu.Unlock()
		s.handBack(got)
		return nil, errInboxClosed
	}
	s.ready = append(s.ready, got...)
	var hand []*inboxMsg
	if ctx.Err() == nil { // else the source is not there to take them: they stay ready
		n = 0
		for len(s.ready) > 0 && n < maxRecords {
			m := s.ready[0]
			s.ready = s.ready[1:]
			m.first = s.next
			s.next += int64(m.count)
			n += m.count
			hand = append(hand, m)
		}
		s.out = append(s.out, hand...)
	}
	s.mu.Unlock()
	return inboxReadResponse(hand, waited && len(hand) == 0), nil
}

func inboxReadResponse(ms []*inboxMsg, waited bool) *pluginv1.InboxReadResponse {
	resp := &pluginv1.InboxReadResponse{Entries: make([]*pluginv1.InboxStored, len(ms)), Waited: waited}
	for i, m := range ms {
		resp.Entries[i] = &pluginv1.InboxStored{First: m.first, Count: uint32(m.count), Records: m.records, Origin: m.origin, ReceivedUnixMs: m.received.UnixMilli()}
	}
	return resp
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// warnRead logs a failure to read from the consumer, at most every 10 s.
func (s *InboxService) warnRead(err error) {
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(10*time.Second) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("inbox: reading from the shared consumer failed; trying again", "error", err.Error())
}

// fetch pulls up to n entries from the shared consumer: without waiting
// when wait is 0, else waiting at most wait for the first. (A pull for n
// that waits ends only once n came or it expired: so it waits for one,
// then takes what else is there without waiting.)
func (s *InboxService) fetch(n int, wait time.Duration) ([]*inboxMsg, error) {
	if wait <= 0 {
		return s.pull(n, 0)
	}
	first, err := s.pull(1, wait)
	if err != nil || len(first) == 0 || n == 1 {
		return first, err
	}
	more, err := s.pull(n-1, 0)
	return append(first, more...), err
}

func (s *InboxService) pull(n int, wait time.Duration) ([]*inboxMsg, error) {
	var b jetstream.MessageBatch
	var err error
	if wait <= 0 {
		b, err = s.consumer.FetchNoWait(n)
	} else {
		b, err = s.consumer.Fetch(n, jetstream.FetchMaxWait(wait))
	}
	if err != nil {
		return nil, fmt.Errorf("fetching entries: %w", err)
	}
	var out []*inboxMsg
	for m := range b.Messages() {
		e, err := s.parse(m)
		if err != nil {
			// Not an entry of ours: it would come back forever.
			s.log.Error("inbox: dropping a malformed message", "error", err.Error())
			_ = m.Term()
			continue
		}
		out = append(out, e)
	}
	if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return out, fmt.Errorf("fetching entries: %w", err)
	}
	return out, nil
}

func (s *InboxService) parse(m jetstream.Msg) (*inboxMsg, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, err
	}
	subj := m.Subject()
	if !strings.HasPrefix(subj, s.n.subject+".") {
		return nil, fmt.Errorf("message %d of %s: subject %q is not an inbox entry's", md.Sequence.Stream, md.Stream, subj)
	}
	count, err := strconv.Atoi(subj[len(s.n.subject)+1:])
	if err != nil || count <= 0 {
		return nil, fmt.Errorf("message %d of %s: subject %q does not end with a record count", md.Sequence.Stream, md.Stream, subj)
	}
	e := &inboxMsg{holding: holding{msg: m}, seq: md.Sequence.Stream, count: count, records: m.Data(), received: md.Timestamp}
	if h := m.Headers(); h != nil {
		e.origin = hdrUnescape(h.Get(hdrOrigin))
	}
	e.touched.Store(time.Now().UnixNano())
	return e, nil
}

// Committed implements plan.SharedState: every record up to position (a
// number this service handed out) is acked by every sink, so the entries
// whose records all are go: each is acked, and the server's confirmation
// awaited. An entry whose ack is not confirmed stays held (renewed) and is
// acked again at the next call; after maxAckTries it is let go (the
// consumer may hand it out again: a duplicate, never a loss).
func (s *InboxService) Committed(ctx context.Context, position []byte) error {
	n := sdk.ParseInboxPosition(position)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errInboxClosed
	}
	var acks []*inboxMsg
	for _, m := range s.out {
		if m.last() > n {
			break // handed out in order of their numbers
		}
		acks = append(acks, m)
	}
	s.mu.Unlock()
	if len(acks) == 0 {
		return nil
	}
	ctx, cancel := opContext(ctx)
	defer cancel()
	errs := make([]error, len(acks))
	parallel(len(acks), func(i int) {
		actx, cancel := context.WithTimeout(ctx, ackTimeout)
		defer cancel()
		errs[i] = acks[i].msg.DoubleAck(actx)
	})
	gone := map[*inboxMsg]bool{}
	var failed []error
	var records int64
	for i, m := range acks {
		m.mu.Lock()
		if errs[i] == nil {
			m.done = true
			gone[m] = true
			records += int64(m.count)
		} else if m.ackTries++; m.ackTries >= maxAckTries {
			m.done = true
			gone[m] = true
			s.log.Warn("inbox: an entry's ack was not confirmed; it may be delivered again", "entry", m.seq, "error", errs[i].Error())
		} else {
			failed = append(failed, fmt.Errorf("acking entry %d: %w", m.seq, errs[i]))
		}
		m.mu.Unlock()
	}
	s.mu.Lock()
	kept := s.out[:0]
	for _, m := range s.out {
		if !gone[m] {
			kept = append(kept, m)
		}
	}
	clear(s.out[len(kept):])
	s.out = kept
	s.pending = max(0, s.pending-records)
	s.mu.Unlock()
	select {
	case s.freed <- struct{}{}:
	default:
	}
	if len(failed) > 0 {
		return s.grpcErr("commit", errors.Join(failed...))
	}
	return nil
}

// counts reads how many records the stream holds (the whole cluster's:
// not read yet, or read and not committed by any worker) and when the
// oldest of them was stored.
func (s *InboxService) counts(ctx context.Context) (int64, time.Time, error) {
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(s.n.subject+".*"))
	if err != nil {
		return 0, time.Time{}, err
	}
	var records int64
	for subj, msgs := range info.State.Subjects {
		if n, err := strconv.ParseInt(subj[strings.LastIndexByte(subj, '.')+1:], 10, 64); err == nil {
			records += n * int64(msgs)
		}
	}
	var oldest time.Time
	if info.State.Msgs > 0 {
		oldest = info.State.FirstTime
	}
	return records, oldest, nil
}

// InboxStatus implements pluginv1.StateServer: pending counts the records
// the cluster's inbox holds (every worker's, read or not, not committed),
// oldest_pending_unix_ms is when the oldest of them was stored, last the
// number of the last record this service handed out, max_entry_bytes what
// one message may hold.
func (s *InboxService) InboxStatus(ctx context.Context, _ *pluginv1.InboxStatusRequest) (*pluginv1.InboxStatusResponse, error) {
	if s.isClosed() {
		return nil, errInboxClosed
	}
	records, oldest, err := s.counts(ctx)
	if err != nil {
		return nil, s.grpcErr("status", err)
	}
	s.mu.Lock()
	s.pending, s.oldest = records, oldest
	last := s.next - 1
	s.mu.Unlock()
	resp := &pluginv1.InboxStatusResponse{Pending: records, Last: last, MaxEntryBytes: s.maxEntryBytes()}
	if !oldest.IsZero() {
		resp.OldestPendingUnixMs = oldest.UnixMilli()
	}
	return resp, nil
}

// InboxRequests implements pluginv1.StateServer: the counts are kept for
// this worker (Requests) and handed to InboxOptions.OnRequests.
func (s *InboxService) InboxRequests(_ context.Context, req *pluginv1.InboxRequestsRequest) (*pluginv1.InboxRequestsResponse, error) {
	by := make(map[int]int64, len(req.ByStatus))
	s.mu.Lock()
	for code, n := range req.ByStatus {
		by[int(code)] = n
		s.requests[int(code)] += n
	}
	s.mu.Unlock()
	if s.opts.OnRequests != nil {
		s.opts.OnRequests(by)
	}
	return &pluginv1.InboxRequestsResponse{}, nil
}

// InboxProgress is what a push source's inbox did through one worker's
// service, and what the cluster's inbox holds.
type InboxProgress struct {
	// Accepted counts the records this worker's source stored.
	Accepted int64
	// Pending counts the records the cluster's inbox holds, as last seen;
	// Oldest is when the oldest of them was stored (zero: none, or unknown).
	Pending int64
	Oldest  time.Time
	// Held counts the entries this worker read and has not committed.
	Held int
	// Requests counts the requests this worker's source answered, by status.
	Requests map[int]int64
}

// Progress reports what the service did and saw (it reads no store).
func (s *InboxService) Progress() InboxProgress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := InboxProgress{Accepted: s.accepted, Pending: s.pending, Oldest: s.oldest, Held: len(s.out) + len(s.ready), Requests: map[int]int64{}}
	for code, n := range s.requests {
		p.Requests[code] = n
	}
	return p
}

// keepAlive renews the entries this service holds (handed out or fetched)
// once they are half of AckWait old, until ctx ends.
func (s *InboxService) keepAlive(ctx context.Context) {
	defer close(s.done)
	keepRenewing(ctx, s.opts.AckWait, func() []*holding {
		s.mu.Lock()
		defer s.mu.Unlock()
		hs := make([]*holding, 0, len(s.ready)+len(s.out))
		for _, list := range [][]*inboxMsg{s.ready, s.out} {
			for _, m := range list {
				hs = append(hs, &m.holding)
			}
		}
		return hs
	}, func(h *holding, err error) {
		s.log.Warn("inbox: renewing an entry failed", "error", err.Error())
	})
}

// Close ends the service: it stops renewing what it holds and hands it
// back at once (naks), so that another worker reads at once what this one
// read and did not commit. Later calls fail with Unavailable.
func (s *InboxService) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		s.mu.Lock()
		s.closed = true
		back := append(s.ready, s.out...)
		s.ready, s.out = nil, nil
		s.mu.Unlock()
		s.handBack(back)
	})
	return nil
}

// handBack naks entries this service will not commit, so that the consumer
// hands them out again at once (not confirmed: one whose nak is lost comes
// back after AckWait).
func (s *InboxService) handBack(ms []*inboxMsg) {
	for _, m := range ms {
		m.mu.Lock()
		if !m.done {
			m.done = true
			if err := m.msg.Nak(); err != nil {
				s.log.Warn("inbox: handing an entry back failed; it comes back after the ack wait", "entry", m.seq, "error", err.Error())
			}
		}
		m.mu.Unlock()
	}
}

var errInboxClosed = status.Error(codes.Unavailable, "cluster: the inbox service is closed")

func (s *InboxService) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *InboxService) grpcErr(op string, err error) error {
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	return status.Error(codes.Unavailable, fmt.Sprintf("cluster: inbox %s/%s: %s: %v", s.pipeline, s.source, op, err))
}
