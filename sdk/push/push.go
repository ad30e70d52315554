// Package push is the machinery of a push source: an HTTP server whose
// requests become records, stored durably in the engine's inbox
// (sdk.Inbox) before the request is answered, and read from there into the
// pipeline. `source "http"` and `source "webhook"` are built on it; a
// custom push source supplies only its Handler, and says in its Info that
// it is a push source (sdk.Info.Push), so that on a cluster the engine runs
// it on every worker with one inbox they share.
//
// What it guarantees, for every Handler:
//   - 202 only after the request's records are durable in the engine's
//     state store (on a cluster: acknowledged by JetStream); concurrent
//     requests share one durable write (group commit). A record that got a
//     202 is read into the pipeline again after any crash, until every sink
//     acked it.
//   - A request with a dedupe key (Idempotency-Key, a webhook's delivery
//     id) seen within its window stores nothing and is answered as the
//     first was (or with the Handler's status for duplicates).
//   - 413 over MaxBody, 429 with Retry-After while MaxPending or more
//     accepted records are not acked by every sink, 503 with Retry-After
//     while shutting down; nothing is stored for any of them.
//   - Shutting down keeps listening: once Read's context ends, requests get
//     503 (and /healthz 503) until the process exits, so clients are told
//     to retry instead of being refused a connection while the engine
//     drains and commits; requests accepted before that are answered as
//     usual.
package push

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// Defaults of Options.
const (
	DefaultMaxBody    = 10 << 20
	DefaultMaxPending = 100_000
)

// Options configure a push server.
type Options struct {
	// Listen is the address to listen on ("127.0.0.1:8080").
	Listen string
	// Path is where records are posted ("/v1/records").
	Path string
	// CertFile and KeyFile, when set, serve HTTPS.
	CertFile, KeyFile string
	// MaxBody bounds a request's body, after decompression (default 10 MiB).
	MaxBody int64
	// MaxPending bounds the accepted records not yet acked by every sink
	// (default 100,000). It is checked when a request arrives: while
	// MaxPending or more are pending (counting those of requests being
	// stored), requests get 429. A request that arrives below it is stored
	// whole, however many records it holds, so the count passes MaxPending
	// by less than one request, and no request is refused for its size
	// alone (MaxBody bounds that).
	MaxPending int64
	// Source is the block's name: record ids derive from it.
	Source string
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	// CheckHeader, when set, sees a request's headers before its body is
	// read: an *Error it returns (401 for a missing token, 415 for a
	// content type) refuses the request without reading or decompressing
	// anything.
	CheckHeader func(http.Header) error
}

// Request is a request as the Handler sees it: its headers and its exact
// body bytes (decompressed when it was gzip-encoded; signatures are
// verified over what was sent, see Raw).
type Request struct {
	Header http.Header
	// Body is the body, decompressed.
	Body []byte
	// Raw is the body exactly as it arrived (compressed or not).
	Raw []byte
	// Received is when the request arrived.
	Received time.Time
}

// Accepted is what a Handler makes of a request it accepts.
type Accepted struct {
	// Records are the request's records, one compact JSON object each
	// (no newlines).
	Records [][]byte
	// Key, when set, dedupes: a request with the same key within
	// KeyWindow stores nothing again.
	Key       string
	KeyWindow time.Duration
	// DuplicateStatus is the status a duplicate is answered with; 0
	// answers it as the first request was (202 and the same body).
	DuplicateStatus int
}

// Error is a request refused: its status and a message for the client.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Errorf is an Error with a formatted message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Handler turns a request into records, or refuses it with an *Error.
type Handler func(r *Request) (*Accepted, error)

// Server is a push source's HTTP server and its reader of the inbox.
type Server struct {
	opts    Options
	inbox   sdk.Inbox
	handler Handler

	appends chan *appendReq
	notify  chan struct{}
	pending atomic.Int64
	// maxEntry is the most bytes the inbox stores for one request (0: no
	// limit), as its Status last said.
	maxEntry atomic.Int64
	// reserved counts the records of requests admitted but not stored
	// yet, so that concurrent requests see each other (admit).
	reserved atomic.Int64
	admitMu  sync.Mutex
	Counters Counters

	mu       sync.Mutex
	closing  bool          // answering 503: Read is not running
	inflight int           // requests let in, not answered yet
	idle     chan struct{} // closed when inflight drops to 0 while closing
	srv      *http.Server  // listening since the first Read, until Close
	serveErr chan error
	stop     context.CancelFunc // ends the commits
	stopped  chan struct{}      // closed by Close
	// reported counts, by status, the requests reported to the engine
	// (refreshPending, then Read once it ends: one at a time).
	reported map[int]int64
}

// Counters count what the server did, for progress and metrics.
type Counters struct {
	Accepted  atomic.Int64 // records stored
	Requests  sync.Map     // status code (int) -> *atomic.Int64
	Duplicate atomic.Int64 // requests answered from a stored key
}

func (c *Counters) count(status int) {
	v, _ := c.Requests.LoadOrStore(status, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// New returns a server storing into inbox what handler accepts.
func New(opts Options, inbox sdk.Inbox, handler Handler) *Server {
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{opts: opts, inbox: inbox, handler: handler, appends: make(chan *appendReq, 1024), notify: make(chan struct{}, 1),
		closing: true, stopped: make(chan struct{}), reported: map[int]int64{}}
}

// appendReq is one request's entry waiting for the group commit.
type appendReq struct {
	entry sdk.InboxEntry
	done  chan appendRes
}

type appendRes struct {
	res sdk.InboxAppended
	err error
}

// maxGroup bounds the entries of one durable write.
const maxGroup = 512

// commits stores what requests accepted, gathering all that wait into one
// durable write, until ctx ends.
func (s *Server) commits(ctx context.Context) {
	var group []*appendReq
	for {
		group = group[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-s.appends:
			group = append(group, r)
		}
	gather:
		for len(group) < maxGroup {
			select {
			case r := <-s.appends:
				group = append(group, r)
			default:
				break gather
			}
		}
		entries := make([]sdk.InboxEntry, len(group))
		for i, r := range group {
			entries[i] = r.entry
		}
		// The write completes even when the run is stopping: its requests
		// wait for their answer.
		res, pending, err := s.inbox.Append(context.WithoutCancel(ctx), entries)
		if err == nil && len(res) != len(group) {
			err = fmt.Errorf("the inbox answered %d results for %d entries", len(res), len(group))
		}
		if err == nil {
			s.pending.Store(pending)
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
		// Stored (or refused): pending counts them now, or nothing does.
		for _, r := range group {
			s.reserved.Add(-int64(r.entry.Count))
		}
		for i, r := range group {
			if err != nil {
				r.done <- appendRes{err: err}
				continue
			}
			r.done <- appendRes{res: res[i]}
		}
	}
}

// listen starts the HTTP server, and the commits that store what it
// accepts, unless they run already: they outlive a Read, answering 503
// until the next Read or Close (the process's exit, in a plugin), so that
// a client is told to retry while the engine drains rather than refused a
// connection.
func (s *Server) listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	select {
	case <-s.stopped:
		return fmt.Errorf("the push server on %s is closed", s.opts.Listen)
	default:
	}
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %v", s.opts.Listen, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if s.isClosing() {
			w.Header().Set("Retry-After", strconv.Itoa(retryClosing))
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc(s.opts.Path, s.handle)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.serveErr = make(chan error, 1)
	go func(srv *http.Server, errc chan<- error) {
		var err error
		if s.opts.CertFile != "" {
			err = srv.ServeTLS(ln, s.opts.CertFile, s.opts.KeyFile)
		} else {
			err = srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}(s.srv, s.serveErr)
	// The commits run as long as the server: a request let in just before
	// Read ended is still stored and answered.
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.commits(ctx)
	return nil
}

// retryClosing is the Retry-After of a 503 while shutting down, in seconds.
const retryClosing = 5

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// accepting lets requests in again (Read started).
func (s *Server) accepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = false
	s.srv.SetKeepAlivesEnabled(true)
}

// stopAccepting answers 503 to every request from now on; the channel is
// closed once the requests let in before are answered.
func (s *Server) stopAccepting() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	if s.srv != nil {
		// Clients reconnect (to another instance, or to this one once it
		// restarted) rather than keep an idle connection to a server that
		// refuses.
		s.srv.SetKeepAlivesEnabled(false)
	}
	idle := make(chan struct{})
	if s.inflight == 0 {
		close(idle)
	} else {
		s.idle = idle
	}
	return idle
}

// enter lets a request in unless the server is shutting down.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.inflight++
	return true
}

func (s *Server) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if s.inflight == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// Close stops listening and storing. A plugin need not call it: the
// listener stays open, answering 503, until the process exits after the
// engine has committed.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopped:
		return nil
	default:
	}
	close(s.stopped)
	s.closing = true
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	s.stop()
	return err
}

// response is the body of a 202.
type response struct {
	Accepted int      `json:"accepted"`
	IDs      []string `json:"ids"`
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	status := s.handleStatus(w, r)
	s.Counters.count(status)
}

func (s *Server) fail(w http.ResponseWriter, status int, msg string, retryAfter int) int {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
	return status
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) int {
	if !s.enter() {
		return s.fail(w, http.StatusServiceUnavailable, "the pipeline is shutting down; retry", retryClosing)
	}
	defer s.leave()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return s.fail(w, http.StatusMethodNotAllowed, "POST records to "+s.opts.Path, 0)
	}
	// What the headers alone refuse (a token, a content type) costs no
	// read of the body.
	if s.opts.CheckHeader != nil {
		if err := s.opts.CheckHeader(r.Header); err != nil {
			return s.refuse(w, err)
		}
	}
	if r.ContentLength > s.opts.MaxBody {
		return s.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over the limit of %d bytes (max_body)", s.opts.MaxBody), 0)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody+1))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return s.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over the limit of %d bytes (max_body)", s.opts.MaxBody), 0)
		}
		return s.fail(w, http.StatusBadRequest, "reading the body: "+err.Error(), 0)
	}
	body := raw
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return s.fail(w, http.StatusBadRequest, "the body is not valid gzip: "+err.Error(), 0)
		}
		body, err = io.ReadAll(io.LimitReader(zr, s.opts.MaxBody+1))
		if err != nil {
			return s.fail(w, http.StatusBadRequest, "the body is not valid gzip: "+err.Error(), 0)
		}
		if int64(len(body)) > s.opts.MaxBody {
			return s.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the decompressed body is over the limit of %d bytes (max_body)", s.opts.MaxBody), 0)
		}
	default:
		return s.fail(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not supported: send the body as is or gzip-encoded", enc), 0)
	}
	req := &Request{Header: r.Header, Body: body, Raw: raw, Received: s.opts.Now()}
	acc, err := s.handler(req)
	if err != nil {
		return s.refuse(w, err)
	}
	n := len(acc.Records)
	if max := s.maxEntry.Load(); max > 0 {
		size := int64(n) // their newlines
		for _, rec := range acc.Records {
			size += int64(len(rec))
		}
		if size > max {
			return s.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request's records are %d bytes; the engine's inbox stores at most %d bytes a request here: send fewer records a request", size, max), 0)
		}
	}
	if n > 0 {
		if waiting, ok := s.admit(n); !ok {
			return s.fail(w, http.StatusTooManyRequests, fmt.Sprintf("%d accepted records are waiting for the sinks (max_pending %d); retry later", waiting, s.opts.MaxPending), 1)
		}
	}
	origin := acc.Key
	if origin == "" {
		var b [16]byte
		rand.Read(b[:])
		origin = hex.EncodeToString(b[:])
	}
	resp := response{Accepted: n, IDs: RecordIDs(s.opts.Source, origin, acc.Records)}
	body202, _ := json.Marshal(resp)
	var lines []byte
	for _, rec := range acc.Records {
		lines = append(append(lines, rec...), '\n')
	}

	ar := &appendReq{entry: sdk.InboxEntry{Records: lines, Count: n, Origin: origin, Key: acc.Key, KeyWindow: acc.KeyWindow, Response: body202}, done: make(chan appendRes, 1)}
	select {
	case s.appends <- ar:
	case <-r.Context().Done():
		s.reserved.Add(-int64(n))
		return s.fail(w, http.StatusServiceUnavailable, "the request was cancelled before its records were stored", 1)
	case <-s.stopped:
		s.reserved.Add(-int64(n))
		return s.fail(w, http.StatusServiceUnavailable, "the pipeline is shutting down; retry", retryClosing)
	}
	var res appendRes
	select {
	case res = <-ar.done:
	case <-s.stopped:
		return s.fail(w, http.StatusServiceUnavailable, "the pipeline stopped before the records were known to be stored; retry (a retry with the same dedupe key stores nothing twice)", retryClosing)
	}
	if res.err != nil {
		return s.fail(w, http.StatusServiceUnavailable, "storing the records failed; nothing was stored, retry: "+res.err.Error(), 1)
	}
	w.Header().Set("Content-Type", "application/json")
	if res.res.Duplicate {
		s.Counters.Duplicate.Add(1)
		status := http.StatusAccepted
		if acc.DuplicateStatus != 0 {
			status = acc.DuplicateStatus
		}
		w.WriteHeader(status)
		w.Write(res.res.Response)
		return status
	}
	s.Counters.Accepted.Add(int64(n))
	w.WriteHeader(http.StatusAccepted)
	w.Write(body202)
	return http.StatusAccepted
}

// refuse answers a Handler's or CheckHeader's refusal.
func (s *Server) refuse(w http.ResponseWriter, err error) int {
	var he *Error
	if errors.As(err, &he) {
		return s.fail(w, he.Status, he.Msg, 0)
	}
	return s.fail(w, http.StatusInternalServerError, err.Error(), 0)
}

// admit lets a request of n records in while fewer than MaxPending records
// are pending or being stored, and reserves its n; else it reports how many
// are waiting. A request is never refused for its size alone: one larger
// than MaxPending is admitted once the inbox is below the limit.
func (s *Server) admit(n int) (waiting int64, ok bool) {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	waiting = s.pending.Load() + s.reserved.Load()
	if waiting >= s.opts.MaxPending {
		return waiting, false
	}
	s.reserved.Add(int64(n))
	return waiting, true
}

// RecordIDs are the ids the sinks see for records that came in a request
// named origin: a record's string row_id where it has a non-empty one, else
// a hash of the source and origin, then the record's index in the request.
func RecordIDs(source, origin string, records [][]byte) []string {
	prefix := sdk.IDPrefix(source, origin)
	ids := make([]string, len(records))
	for i, rec := range records {
		if id := rowID(rec); id != "" {
			ids[i] = id
			continue
		}
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids
}

// rowID is the record's top-level string row_id, or "".
func rowID(rec []byte) string {
	if !bytes.Contains(rec, []byte(`"row_id"`)) {
		return ""
	}
	var v struct {
		RowID any `json:"row_id"`
	}
	if json.Unmarshal(rec, &v) != nil {
		return ""
	}
	s, _ := v.RowID.(string)
	return s
}

// Read serves requests and emits what is stored, from the position from,
// until ctx ends. It returns an error when it cannot listen.
//
// When ctx ends, the server answers 503 with Retry-After (and /healthz
// 503) but keeps listening: the engine is draining what was read and
// committing it, and a client told to retry does better than one refused
// a connection. Read returns once the requests let in before are
// answered; the listener closes with the process (or Close), after the
// engine committed. A later Read accepts again on the same listener.
func (s *Server) Read(ctx context.Context, from []byte, emit sdk.Emitter) error {
	if s.inbox == nil {
		return fmt.Errorf("a push source needs the engine's state store to keep what it accepts; run it with pipeline run or pipeline serve")
	}
	if st, err := s.inbox.Status(ctx); err == nil {
		s.pending.Store(st.Pending)
		s.maxEntry.Store(st.MaxEntryBytes)
	}
	if err := s.listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.accepting()
	refreshed := make(chan struct{})
	go func() { defer close(refreshed); s.refreshPending(ctx) }()
	emitted := make(chan error, 1)
	go func() { emitted <- s.emitStored(ctx, from, emit) }()
	var err error
	select {
	case err = <-emitted:
		cancel()
	case err = <-s.serveErr:
		if err == nil {
			err = fmt.Errorf("the push server on %s stopped", s.opts.Listen)
		}
		cancel()
		<-emitted
	}
	idle := s.stopAccepting()
	// Requests let in before are answered (their records stored, their
	// answers sent) before their statuses are counted for the last time.
	select {
	case <-idle:
	case <-time.After(drainRequests):
	}
	<-refreshed
	s.report(context.WithoutCancel(ctx))
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// drainRequests bounds how long Read waits, once its context ended, for
// the requests it let in (a client slow to send its body).
const drainRequests = 10 * time.Second

// refreshPending follows the pipeline's commits (what every sink acked is
// no longer pending), and reports the requests answered since the last
// report to the engine, for its metrics, until ctx ends.
func (s *Server) refreshPending(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if st, err := s.inbox.Status(ctx); err == nil {
				s.pending.Store(st.Pending)
				s.maxEntry.Store(st.MaxEntryBytes)
			}
			s.report(ctx)
		}
	}
}

// report tells the engine the requests answered since the last report.
func (s *Server) report(ctx context.Context) {
	reported := s.reported
	delta := map[int]int64{}
	s.Counters.Requests.Range(func(k, v any) bool {
		status, n := k.(int), v.(*atomic.Int64).Load()
		if d := n - reported[status]; d > 0 {
			delta[status] = d
		}
		return true
	})
	if len(delta) == 0 {
		return
	}
	if err := s.inbox.ReportRequests(ctx, delta); err == nil {
		for status, d := range delta {
			reported[status] += d
		}
	}
}

// Pending is the accepted records not yet acked by every sink, as last seen.
func (s *Server) Pending() int64 { return s.pending.Load() }

// batchRecords bounds the records of one emitted batch.
const batchRecords = 4096

// readWait is how long one read of an inbox that can wait (sdk.InboxWaiter)
// waits for an entry.
const readWait = time.Second

// emitStored emits the inbox's records after from, then what is stored
// next, as it is stored.
func (s *Server) emitStored(ctx context.Context, from []byte, emit sdk.Emitter) error {
	after := sdk.ParseInboxPosition(from)
	dec := newDecoder()
	defer dec.release()
	waiter, _ := s.inbox.(sdk.InboxWaiter)
	for {
		var entries []sdk.InboxStored
		var waited bool
		var err error
		if waiter != nil {
			entries, waited, err = waiter.ReadWait(ctx, after, batchRecords, readWait)
		} else {
			entries, err = s.inbox.Read(ctx, after, batchRecords)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read the inbox: %v", err)
		}
		if len(entries) == 0 {
			if waited {
				// The inbox waited for what is stored next (another
				// worker's requests, on a cluster): ask again now.
				if ctx.Err() != nil {
					return nil
				}
				continue
			}
			select {
			case <-ctx.Done():
				return nil
			case <-s.notify:
			case <-time.After(time.Second):
			}
			continue
		}
		rec, origin, last, err := dec.decode(s.opts.Source, entries, after)
		if err != nil {
			return err
		}
		if rec == nil {
			after = last
			continue
		}
		if err := emit.EmitAt(rec, sdk.InboxPosition(last), origin); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		after = last
	}
}
