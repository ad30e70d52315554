package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// The outbox: deliveries of action sinks, stored before the batch holding
// their record is acked and retried from here until delivered or dead, also
// across crashes and restarts. Every attempt is appended to the delivery log.

const outboxSchema = `
CREATE TABLE IF NOT EXISTS deliveries (
	pipeline    TEXT NOT NULL,
	sink        TEXT NOT NULL,
	id          TEXT NOT NULL,
	endpoint    TEXT NOT NULL DEFAULT '',
	order_key   TEXT NOT NULL DEFAULT '',
	payload     BLOB NOT NULL,
	status      TEXT NOT NULL,              -- pending | delivered | dead
	attempts    INTEGER NOT NULL DEFAULT 0, -- since enqueue or the last replay
	next_at     INTEGER NOT NULL,           -- unix ms
	leased      INTEGER NOT NULL DEFAULT 0, -- handed out to the current session (reset when a session begins)
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	last_code   INTEGER NOT NULL DEFAULT 0,
	last_error  TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (pipeline, sink, id)
);
-- Partial indexes: a delivered row leaves them and the log keeps growing
-- without making the hot path slower.
-- deliveries_ready holds what a lease may hand out: a leased row leaves it,
-- so leases never scan past what is in flight.
DROP INDEX IF EXISTS deliveries_due;
DROP INDEX IF EXISTS deliveries_order;
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries (pipeline, sink, next_at) WHERE status = 'pending' AND leased = 0;
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (pipeline, sink) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_pending_key ON deliveries (pipeline, sink, order_key) WHERE status = 'pending' AND order_key != '';
-- Dead deliveries by sink and last change (admin.go): a page of the dead
-- letter, a replay, a prune of dead ones and Pending's count read only
-- those. (It replaces deliveries_dead, on (pipeline, sink) alone.)
DROP INDEX IF EXISTS deliveries_dead;
CREATE INDEX IF NOT EXISTS deliveries_dead_changed ON deliveries (pipeline, sink, updated_at) WHERE status = 'dead';
CREATE TABLE IF NOT EXISTS attempts (
	pipeline    TEXT NOT NULL,
	sink        TEXT NOT NULL,
	id          TEXT NOT NULL,
	n           INTEGER NOT NULL,           -- 1, 2, ... over the delivery's life
	at          INTEGER NOT NULL,
	status_code INTEGER NOT NULL,
	latency_ms  INTEGER NOT NULL,
	error       TEXT NOT NULL,
	response    BLOB
);
CREATE INDEX IF NOT EXISTS attempts_by_delivery ON attempts (pipeline, sink, id);
CREATE TABLE IF NOT EXISTS circuits (
	pipeline    TEXT NOT NULL,
	sink        TEXT NOT NULL,
	endpoint    TEXT NOT NULL,
	state       TEXT NOT NULL,              -- open | half-open | disabled (closed ones are deleted)
	until       INTEGER NOT NULL,           -- unix ms, 0 when not open
	reason      TEXT NOT NULL,
	updated_at  INTEGER NOT NULL,
	PRIMARY KEY (pipeline, sink, endpoint)
);` + pauseSchema + adminSchema + runsSchema

// Delivery statuses.
const (
	StatusPending   = "pending"
	StatusDelivered = "delivered"
	StatusDead      = "dead"
	// StatusFailed is not stored: it selects pending deliveries whose last
	// attempt failed (they are waiting to be retried).
	StatusFailed = "failed"
)

// Delivery is one message of an action sink.
type Delivery struct {
	ID       string
	Endpoint string
	OrderKey string
	Payload  []byte
	Attempts int
	// NotBefore, on Enqueue, is when the first attempt is due (zero: now).
	NotBefore time.Time
	// Lease, on Enqueue, leases it to the session at once if it is new.
	Lease bool
}

// Attempt is one try at a delivery, as the delivery log keeps it.
type Attempt struct {
	N          int
	At         time.Time
	StatusCode int
	Latency    time.Duration
	Error      string
	Response   []byte
}

// Outbox is one session's view of a sink's outbox. A lease needs no
// durability: a session that ends (or crashes) leaves its leased deliveries
// pending, and Begin of the next session hands them out again. So leasing
// at enqueue costs nothing (the row is written leased), and a lease's own
// write is one statement in a transaction that reads nothing back.
type Outbox struct {
	s        *Store
	pipeline string
	sink     string

	leaseMu sync.Mutex
	mu      sync.Mutex
	leased  map[string]string // endpoint by id: handed out and not yet recorded
	live    Progress
	// byEndpoint counts pending deliveries per endpoint (from Begin on), so
	// that a lease that skips every endpoint with work is answered without
	// reading the store.
	byEndpoint map[string]int
	circuits   map[string]sdk.Circuit // endpoints whose circuit is not closed

	stopWaiting atomic.Bool
	pause       pauseCache // whether the sink is paused (pause.go)
	pruner      *pruner    // the background prune of this session (retention.go); guarded by s.pruners.mu
}

// Progress is what a sink's outbox did in this session and holds now, for
// the progress line and the run's summary.
type Progress struct {
	Queued    int64 `json:"queued"`    // deliveries this session added
	Delivered int64 `json:"delivered"` // delivered in this session
	Dead      int64 `json:"dead"`      // went to the dead letter in this session
	Pending   int64 `json:"pending"`   // in the outbox now, waiting or in flight
	Retrying  int64 `json:"retrying"`  // of those, the ones whose last attempt failed
	// Circuits are the endpoints whose circuit is open, half-open or
	// disabled (410 Gone), as the sink last reported them.
	Circuits []sdk.Circuit `json:"circuits,omitempty"`
	// Paused: the sink is paused (`pipeline pause`); its pending
	// deliveries wait in the outbox until `pipeline resume`. As last read
	// by the session (a lease, an enqueue or a Pending), so up to a
	// second or two old.
	Paused bool `json:"paused,omitempty"`
}

// Used reports whether the session's outbox holds or handled anything: the
// sink is an action sink with work.
func (p Progress) Used() bool {
	return p.Queued > 0 || p.Delivered > 0 || p.Dead > 0 || p.Pending > 0 || len(p.Circuits) > 0
}

// Outbox returns a new session on the outbox of a pipeline's sink.
func (s *Store) Outbox(pipeline, sink string) *Outbox {
	return &Outbox{s: s, pipeline: pipeline, sink: sink, leased: map[string]string{}, circuits: map[string]sdk.Circuit{}}
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func (o *Outbox) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("state: outbox %s/%s: %s: %w", o.pipeline, o.sink, op, err)
}

// Begin starts the session: it hands back what an earlier session leased
// and did not finish (it ended or crashed), counts what the outbox holds,
// for Progress, and forgets the circuits an earlier session reported
// (breakers live in the sink's process and start closed).
func (o *Outbox) Begin(ctx context.Context) error {
	if _, err := o.s.db.ExecContext(ctx, `UPDATE deliveries SET leased = 0 WHERE pipeline = ? AND sink = ? AND leased = 1`, o.pipeline, o.sink); err != nil {
		return o.wrap("begin", err)
	}
	var pending, retrying int64
	byEndpoint := map[string]int{}
	rows, err := o.s.db.QueryContext(ctx, `SELECT endpoint, COUNT(*), COALESCE(SUM(attempts > 0), 0) FROM deliveries
		WHERE pipeline = ? AND sink = ? AND status = 'pending' GROUP BY endpoint`, o.pipeline, o.sink)
	if err != nil {
		return o.wrap("begin", err)
	}
	for rows.Next() {
		var ep string
		var n, r int64
		if err := rows.Scan(&ep, &n, &r); err != nil {
			rows.Close()
			return o.wrap("begin", err)
		}
		byEndpoint[ep] = int(n)
		pending += n
		retrying += r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return o.wrap("begin", err)
	}
	if _, err := o.s.db.ExecContext(ctx, `DELETE FROM circuits WHERE pipeline = ? AND sink = ?`, o.pipeline, o.sink); err != nil {
		return o.wrap("begin", err)
	}
	o.mu.Lock()
	o.live.Pending, o.live.Retrying, o.byEndpoint = pending, retrying, byEndpoint
	o.mu.Unlock()
	return nil
}

// Enqueue stores deliveries as pending and due now, in one transaction.
// Ids already stored are left alone. The new ones marked Lease (due now,
// without an order key) are stored leased to this session; leased holds
// their indexes in ds. It returns how many were new.
func (o *Outbox) Enqueue(ctx context.Context, ds []Delivery, now time.Time) (added int, leased []int, err error) {
	// A write that has begun finishes (and the driver then spends no
	// goroutine per statement watching for a cancellation).
	ctx = context.WithoutCancel(ctx)
	// A paused sink's deliveries are stored, not leased. (Read before the
	// transaction: the store has one connection. When the flag cannot be
	// read, nothing is leased either: they wait for a Lease.)
	paused, perr := o.Paused(ctx)
	paused = paused || perr != nil
	tx, err := o.s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, nil, o.wrap("enqueue", err)
	}
	defer tx.Rollback()
	stmt := o.s.stmt(ctx, tx, qEnqueue)
	defer stmt.Close()
	var newIdx []int
	for i, d := range ds {
		due := now
		if d.NotBefore.After(now) {
			due = d.NotBefore
		}
		lease := d.Lease && !paused && d.OrderKey == "" && !due.After(now)
		res, err := stmt.ExecContext(ctx, o.pipeline, o.sink, d.ID, d.Endpoint, d.OrderKey, d.Payload, ms(due), lease, ms(now), ms(now))
		if err != nil {
			return 0, nil, o.wrap("enqueue", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue
		}
		added++
		newIdx = append(newIdx, i)
		if lease {
			leased = append(leased, i)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, nil, o.wrap("enqueue", err)
	}
	o.mu.Lock()
	o.live.Queued += int64(added)
	o.live.Pending += int64(added)
	if o.byEndpoint == nil {
		o.byEndpoint = map[string]int{}
	}
	for _, i := range newIdx {
		o.byEndpoint[ds[i].Endpoint]++
	}
	for _, i := range leased {
		o.leased[ds[i].ID] = ds[i].Endpoint
	}
	o.mu.Unlock()
	return added, leased, nil
}

// The statements of the hot path, prepared once when the store opens.
const (
	qEnqueue = `INSERT INTO deliveries
		(pipeline, sink, id, endpoint, order_key, payload, status, next_at, leased, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT DO NOTHING`
	// A result for a delivery that is no longer pending (replayed or reset
	// meanwhile) changes nothing.
	byKey      = ` WHERE pipeline = ? AND sink = ? AND id = ? AND status = 'pending'`
	qDelivered = `UPDATE deliveries SET status = 'delivered', leased = 0, attempts = attempts + 1, last_code = ?, last_error = ?, updated_at = ?` + byKey
	qRetry     = `UPDATE deliveries SET leased = 0, attempts = attempts + 1, next_at = ?, last_code = ?, last_error = ?, updated_at = ?` + byKey
	qDead      = `UPDATE deliveries SET status = 'dead', leased = 0, attempts = attempts + 1, last_code = ?, last_error = ?, updated_at = ?` + byKey
	qRelease   = `UPDATE deliveries SET leased = 0, next_at = ?, updated_at = ?` + byKey
	qAttempt   = `INSERT INTO attempts (pipeline, sink, id, n, at, status_code, latency_ms, error, response)
		VALUES (?, ?, ?, (SELECT COALESCE(MAX(n), 0) + 1 FROM attempts WHERE pipeline = ? AND sink = ? AND id = ?), ?, ?, ?, ?, ?)`
	qLease = `SELECT d.rowid, d.id, d.endpoint, d.order_key, d.payload, d.attempts FROM deliveries d
		WHERE d.pipeline = ? AND d.sink = ? AND d.status = 'pending' AND d.leased = 0 AND d.next_at <= ?
		AND d.endpoint NOT IN (SELECT value FROM json_each(?))
		AND ` + orderFree + `
		ORDER BY d.next_at, d.rowid LIMIT ?`
	qLeased  = `UPDATE deliveries SET leased = 1 WHERE rowid IN (SELECT value FROM json_each(?))`
	qNextDue = `SELECT MIN(d.next_at) FROM deliveries d
		WHERE d.pipeline = ? AND d.sink = ? AND d.status = 'pending' AND d.leased = 0 AND d.next_at > ?
		AND d.endpoint NOT IN (SELECT value FROM json_each(?))
		AND ` + orderFree
)

var hotStatements = []string{qEnqueue, qDelivered, qRetry, qDead, qRelease, qAttempt, qLease, qLeased, qNextDue}

// orderFree holds for a delivery that no earlier pending delivery with its
// order key is waiting for.
const orderFree = `(d.order_key = '' OR NOT EXISTS (SELECT 1 FROM deliveries e
	WHERE e.pipeline = d.pipeline AND e.sink = d.sink AND e.order_key = d.order_key AND e.order_key != ''
	AND e.status = 'pending' AND e.rowid < d.rowid))`

// Lease hands out up to max due pending deliveries, oldest first, at most
// perEndpoint of one endpoint (0: no limit), and holds them for this
// session until Record. A delivery waits while an earlier pending one has
// the same order key. It also returns when the next not-yet-due delivery is
// due (zero when nothing else is pending). While the sink is paused it
// hands out nothing and says the next is due in pausedRetry, so that the
// caller asks again and sees a resume soon.
func (o *Outbox) Lease(ctx context.Context, now time.Time, max, perEndpoint int, skipEndpoints []string) ([]Delivery, time.Time, error) {
	o.leaseMu.Lock()
	defer o.leaseMu.Unlock()
	if paused, err := o.Paused(ctx); err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	} else if paused {
		return nil, now.Add(pausedRetry), nil
	}
	// Every endpoint with work is skipped: nothing to hand out, and nothing
	// due that the caller wants to hear about.
	o.mu.Lock()
	idle := o.byEndpoint != nil && len(skipEndpoints) > 0
	if idle {
		for ep, n := range o.byEndpoint {
			if n > 0 && !slices.Contains(skipEndpoints, ep) {
				idle = false
				break
			}
		}
	}
	o.mu.Unlock()
	if idle {
		return nil, time.Time{}, nil
	}
	skipJSON, _ := json.Marshal(skipEndpoints)
	if skipEndpoints == nil {
		skipJSON = []byte("[]")
	}
	tx, err := o.s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	}
	defer tx.Rollback()
	q := o.s.stmt(ctx, tx, qLease)
	defer q.Close()
	rows, err := q.QueryContext(ctx, o.pipeline, o.sink, ms(now), string(skipJSON), max)
	if err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	}
	var out []Delivery
	var rowids []int64
	per := map[string]int{}
	for rows.Next() {
		var d Delivery
		var rowid int64
		if err := rows.Scan(&rowid, &d.ID, &d.Endpoint, &d.OrderKey, &d.Payload, &d.Attempts); err != nil {
			rows.Close()
			return nil, time.Time{}, o.wrap("lease", err)
		}
		if perEndpoint > 0 && per[d.Endpoint] >= perEndpoint {
			continue
		}
		per[d.Endpoint]++
		out = append(out, d)
		rowids = append(rowids, rowid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	}
	if len(rowids) > 0 {
		ids, _ := json.Marshal(rowids)
		mark := o.s.stmt(ctx, tx, qLeased)
		defer mark.Close()
		if _, err := mark.ExecContext(ctx, string(ids)); err != nil {
			return nil, time.Time{}, o.wrap("lease", err)
		}
	}
	// The next one due later. Leased deliveries are not counted; neither
	// are deliveries waiting behind an earlier one with their order key
	// (they follow when it is done) nor those of skipped endpoints (the
	// caller asks again when one of those has room).
	var next sql.NullInt64
	nq := o.s.stmt(ctx, tx, qNextDue)
	defer nq.Close()
	if err := nq.QueryRowContext(ctx, o.pipeline, o.sink, ms(now), string(skipJSON)).Scan(&next); err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	}
	o.mu.Lock()
	for _, d := range out {
		o.leased[d.ID] = d.Endpoint
	}
	o.mu.Unlock()
	var nextDue time.Time
	if next.Valid {
		nextDue = time.UnixMilli(next.Int64)
	}
	return out, nextDue, nil
}

// Record stores the results of leased deliveries in one transaction (one
// fsync for all of them) and appends every attempt to the delivery log. A
// Release is not an attempt and is not logged. The deliveries are no
// longer leased afterwards, whether or not it succeeds.
func (o *Outbox) Record(ctx context.Context, results []sdk.Result, now time.Time) error {
	if len(results) == 0 {
		return nil
	}
	ctx = context.WithoutCancel(ctx) // as in Enqueue
	defer func() {
		o.mu.Lock()
		for _, r := range results {
			delete(o.leased, r.ID)
		}
		o.mu.Unlock()
	}()
	tx, err := o.s.db.BeginTx(ctx, nil)
	if err != nil {
		return o.wrap("record", err)
	}
	defer tx.Rollback()
	var stmts [5]*sql.Stmt
	for i, q := range []string{sdk.Delivered: qDelivered, sdk.Retry: qRetry, sdk.Dead: qDead, sdk.Release: qRelease, 4: qAttempt} {
		stmts[i] = o.s.stmt(ctx, tx, q)
		defer stmts[i].Close()
	}
	var missing []string
	var delivered, dead, retrying int64
	done := map[string]int{} // finished deliveries by endpoint
	o.mu.Lock()
	eps := make([]string, len(results))
	for i, r := range results {
		eps[i] = o.leased[r.ID]
	}
	o.mu.Unlock()
	for i, r := range results {
		a := r.Attempt
		key := []any{o.pipeline, o.sink, r.ID}
		var res sql.Result
		switch r.Outcome {
		case sdk.Delivered, sdk.Dead:
			lastErr := a.Error
			if r.Outcome == sdk.Delivered {
				lastErr = ""
			}
			res, err = stmts[r.Outcome].ExecContext(ctx, append([]any{a.StatusCode, lastErr, ms(now)}, key...)...)
		case sdk.Retry:
			res, err = stmts[sdk.Retry].ExecContext(ctx, append([]any{ms(r.Next), a.StatusCode, a.Error, ms(now)}, key...)...)
		case sdk.Release:
			res, err = stmts[sdk.Release].ExecContext(ctx, append([]any{ms(r.Next), ms(now)}, key...)...)
		default:
			return o.wrap("record", fmt.Errorf("delivery %q: unknown outcome %d", r.ID, r.Outcome))
		}
		if err != nil {
			return o.wrap("record", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			missing = append(missing, r.ID)
			continue
		}
		if r.Outcome == sdk.Release {
			continue
		}
		resp := a.Response
		if len(resp) > 4096 {
			resp = resp[:4096]
		}
		if _, err := stmts[4].ExecContext(ctx, o.pipeline, o.sink, r.ID, o.pipeline, o.sink, r.ID,
			ms(a.At), a.StatusCode, a.Latency.Milliseconds(), a.Error, resp); err != nil {
			return o.wrap("record", err)
		}
		if r.Outcome != sdk.Retry {
			done[eps[i]]++
		}
		switch {
		case r.Outcome == sdk.Delivered:
			delivered++
		case r.Outcome == sdk.Dead:
			dead++
		case r.Prior == 0: // a first failure: now retrying
			retrying++
		}
		if r.Outcome != sdk.Retry && r.Prior > 0 {
			retrying--
		}
	}
	if err := tx.Commit(); err != nil {
		return o.wrap("record", err)
	}
	o.mu.Lock()
	o.live.Delivered += delivered
	o.live.Dead += dead
	o.live.Pending -= delivered + dead
	o.live.Retrying += retrying
	for ep, n := range done {
		if _, ok := o.byEndpoint[ep]; ok {
			o.byEndpoint[ep] = max(0, o.byEndpoint[ep]-n)
		}
	}
	o.mu.Unlock()
	if len(missing) > 0 {
		return o.wrap("record", fmt.Errorf("no deliveries %q (the outbox was reset?)", missing))
	}
	return nil
}

// SetCircuits stores the endpoints whose circuit changed, for Progress and
// `pipeline deliveries --summary`; closed ones are forgotten.
func (o *Outbox) SetCircuits(ctx context.Context, cs []sdk.Circuit, now time.Time) error {
	if len(cs) == 0 {
		return nil
	}
	tx, err := o.s.db.BeginTx(ctx, nil)
	if err != nil {
		return o.wrap("circuits", err)
	}
	defer tx.Rollback()
	for _, c := range cs {
		if c.State == sdk.CircuitClosed {
			_, err = tx.ExecContext(ctx, `DELETE FROM circuits WHERE pipeline = ? AND sink = ? AND endpoint = ?`, o.pipeline, o.sink, c.Endpoint)
		} else {
			var until int64
			if !c.Until.IsZero() {
				until = ms(c.Until)
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO circuits (pipeline, sink, endpoint, state, until, reason, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (pipeline, sink, endpoint) DO UPDATE SET state = excluded.state, until = excluded.until, reason = excluded.reason, updated_at = excluded.updated_at`,
				o.pipeline, o.sink, c.Endpoint, c.State.String(), until, c.Reason, ms(now))
		}
		if err != nil {
			return o.wrap("circuits", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return o.wrap("circuits", err)
	}
	o.mu.Lock()
	for _, c := range cs {
		if c.State == sdk.CircuitClosed {
			delete(o.circuits, c.Endpoint)
		} else {
			o.circuits[c.Endpoint] = c
		}
	}
	o.mu.Unlock()
	return nil
}

// Progress returns the session's counters and the circuits not closed.
func (o *Outbox) Progress() Progress {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.live
	p.Paused = o.pause.last.Load()
	p.Circuits = make([]sdk.Circuit, 0, len(o.circuits))
	for _, c := range o.circuits {
		p.Circuits = append(p.Circuits, c)
	}
	sort.Slice(p.Circuits, func(i, j int) bool { return p.Circuits[i].Endpoint < p.Circuits[j].Endpoint })
	return p
}

// StopWaiting tells the sink, through Pending, that the run was
// interrupted: it should stop waiting for its pending deliveries and end
// its stream, leaving them queued.
func (o *Outbox) StopWaiting() { o.stopWaiting.Store(true) }

// Pending counts deliveries left to make and dead ones, and when the next
// pending one is due.
func (o *Outbox) Pending(ctx context.Context) (pending, dead int, nextDue time.Time, err error) {
	var next sql.NullInt64
	err = o.s.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'pending'),
		(SELECT COUNT(*) FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'dead'),
		(SELECT MIN(next_at) FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'pending')`,
		o.pipeline, o.sink).Scan(&pending, &dead, &next)
	if next.Valid {
		nextDue = time.UnixMilli(next.Int64)
	}
	return pending, dead, nextDue, o.wrap("pending", err)
}

// DeliveryFilter selects deliveries for `pipeline deliveries` and `replay`.
type DeliveryFilter struct {
	Pipeline string    // "" for all
	Sink     string    // "" for all
	Status   string    // "" for all; pending, delivered, failed or dead
	Since    time.Time // last change at or after; zero for all
	ID       string    // "" for all
	// Q, when set, keeps the deliveries whose id, endpoint, last error or
	// payload contains it, ignoring the case of ASCII letters (SQLite's
	// lower(); other letters match as written). Every row is read: it is
	// not an indexed search.
	Q string
}

func (f DeliveryFilter) where() (string, []any, error) {
	conds := []string{"1 = 1"}
	var args []any
	if f.Pipeline != "" {
		conds, args = append(conds, "pipeline = ?"), append(args, f.Pipeline)
	}
	if f.Sink != "" {
		conds, args = append(conds, "sink = ?"), append(args, f.Sink)
	}
	switch f.Status {
	case "":
	case StatusPending, StatusDelivered, StatusDead:
		// Written out, not bound: the partial indexes (deliveries_dead_changed,
		// deliveries_pending) then match whatever the plan.
		conds = append(conds, "status = '"+f.Status+"'")
	case StatusFailed:
		conds = append(conds, "status = 'pending' AND last_error != ''")
	default:
		return "", nil, fmt.Errorf("status %q: want pending, delivered, failed or dead", f.Status)
	}
	if !f.Since.IsZero() {
		conds, args = append(conds, "updated_at >= ?"), append(args, ms(f.Since))
	}
	if f.ID != "" {
		conds, args = append(conds, "id = ?"), append(args, f.ID)
	}
	if f.Q != "" {
		// instr over lower(): the payload is binary (NUL bytes would end a
		// LIKE), and nothing in q needs escaping.
		q := asciiLower(f.Q)
		conds = append(conds, `(instr(lower(id), ?) > 0 OR instr(lower(endpoint), ?) > 0 OR instr(lower(last_error), ?) > 0
			OR instr(lower(CAST(payload AS TEXT)), ?) > 0)`)
		args = append(args, q, q, q, q)
	}
	return strings.Join(conds, " AND "), args, nil
}

// DeliveryRecord is a delivery with its log, for listing.
type DeliveryRecord struct {
	Pipeline  string    `json:"pipeline"`
	Sink      string    `json:"sink"`
	ID        string    `json:"id"`
	Endpoint  string    `json:"endpoint"`
	Status    string    `json:"status"`
	Attempts  int       `json:"attempts"`
	NextAt    time.Time `json:"next_at"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	LastCode  int       `json:"last_status_code"`
	LastError string    `json:"last_error,omitempty"`
	// Pruned is when retention dropped the payload of this delivered
	// delivery (nil while it is kept); it can no longer be replayed.
	Pruned *time.Time `json:"payload_pruned_at,omitempty"`
	Log    []Attempt  `json:"log"`
}

// Deliveries lists deliveries matching f, newest change first, each with its
// attempts.
func (s *Store) Deliveries(ctx context.Context, f DeliveryFilter, limit int) ([]DeliveryRecord, error) {
	out, _, err := s.listRecords(ctx, f, nil, limit)
	if err != nil {
		return nil, err
	}
	if err := s.withLog(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Replay makes the deliveries matching f pending again, due now, with a
// fresh retry schedule. Their ids (and so webhook-ids) stay the same, and
// their log is kept. Delivered ones whose payload retention dropped are
// left alone: there is nothing left to send. It returns how many it queued.
func (s *Store) Replay(ctx context.Context, f DeliveryFilter, now time.Time) (int64, error) {
	where, args, err := f.where()
	if err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?, updated_at = ?
		WHERE `+where+` AND status != 'pending' AND pruned_at = 0`, append([]any{ms(now), ms(now)}, args...)...)
	if err != nil {
		return 0, fmt.Errorf("state: replay: %w", err)
	}
	return res.RowsAffected()
}

// Counts are a sink's deliveries by status.
type Counts struct {
	Delivered int `json:"delivered"`
	Pending   int `json:"pending"`
	Dead      int `json:"dead"`
}

// DeliveryCounts counts a pipeline's deliveries changed since a time, by sink.
func (s *Store) DeliveryCounts(ctx context.Context, pipeline string, since time.Time) (map[string]Counts, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sink, status, COUNT(*) FROM deliveries
		WHERE pipeline = ? AND (updated_at >= ? OR status = 'pending') GROUP BY sink, status`, pipeline, ms(since))
	if err != nil {
		return nil, fmt.Errorf("state: count deliveries: %w", err)
	}
	defer rows.Close()
	out := map[string]Counts{}
	for rows.Next() {
		var sink, st string
		var n int
		if err := rows.Scan(&sink, &st, &n); err != nil {
			return nil, fmt.Errorf("state: count deliveries: %w", err)
		}
		c := out[sink]
		switch st {
		case StatusDelivered:
			c.Delivered = n
		case StatusPending:
			c.Pending = n
		case StatusDead:
			c.Dead = n
		}
		out[sink] = c
	}
	return out, rows.Err()
}

// OutboxCount is how many deliveries of a sink have a status.
type OutboxCount struct {
	Pipeline, Sink, Status string
	N                      int
}

// OutboxCounts counts every sink's deliveries by status, for metrics.
func (s *Store) OutboxCounts(ctx context.Context) ([]OutboxCount, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pipeline, sink, status, COUNT(*) FROM deliveries GROUP BY pipeline, sink, status`)
	if err != nil {
		return nil, fmt.Errorf("state: count outboxes: %w", err)
	}
	defer rows.Close()
	var out []OutboxCount
	for rows.Next() {
		var c OutboxCount
		if err := rows.Scan(&c.Pipeline, &c.Sink, &c.Status, &c.N); err != nil {
			return nil, fmt.Errorf("state: count outboxes: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// EndpointSummary is one endpoint of a sink: its deliveries by status, the
// oldest pending one, and its circuit as the sink last reported it.
type EndpointSummary struct {
	Pipeline  string `json:"pipeline"`
	Sink      string `json:"sink"`
	Endpoint  string `json:"endpoint"`
	Pending   int    `json:"pending"`
	Retrying  int    `json:"retrying"` // pending after a failed attempt
	Delivered int    `json:"delivered"`
	Dead      int    `json:"dead"`
	// OldestPending is when the oldest pending delivery was queued.
	OldestPending *time.Time `json:"oldest_pending,omitempty"`
	// Circuit is "closed", "open", "half-open" or "disabled".
	Circuit      string     `json:"circuit"`
	CircuitUntil *time.Time `json:"circuit_until,omitempty"`
	// CircuitReason says why it opened; CircuitSeen when it was reported.
	CircuitReason string     `json:"circuit_reason,omitempty"`
	CircuitSeen   *time.Time `json:"circuit_reported_at,omitempty"`
}

// Summary counts deliveries per pipeline, sink and endpoint (f's Status and
// ID are not used), with the circuits the sinks reported.
func (s *Store) Summary(ctx context.Context, f DeliveryFilter) ([]EndpointSummary, error) {
	f.Status, f.ID = "", ""
	where, args, err := f.where()
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT pipeline, sink, endpoint,
		COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'pending' AND last_error != ''), 0),
		COALESCE(SUM(status = 'delivered'), 0), COALESCE(SUM(status = 'dead'), 0),
		MIN(CASE WHEN status = 'pending' THEN created_at END)
		FROM deliveries WHERE `+where+` GROUP BY pipeline, sink, endpoint ORDER BY pipeline, sink, endpoint`, args...)
	if err != nil {
		return nil, fmt.Errorf("state: summarize deliveries: %w", err)
	}
	var out []EndpointSummary
	for rows.Next() {
		var e EndpointSummary
		var oldest sql.NullInt64
		if err := rows.Scan(&e.Pipeline, &e.Sink, &e.Endpoint, &e.Pending, &e.Retrying, &e.Delivered, &e.Dead, &oldest); err != nil {
			rows.Close()
			return nil, fmt.Errorf("state: summarize deliveries: %w", err)
		}
		if oldest.Valid {
			t := time.UnixMilli(oldest.Int64).UTC()
			e.OldestPending = &t
		}
		e.Circuit = "closed"
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: summarize deliveries: %w", err)
	}
	for i := range out {
		e := &out[i]
		var state, reason string
		var until, seen int64
		err := s.db.QueryRowContext(ctx, `SELECT state, until, reason, updated_at FROM circuits WHERE pipeline = ? AND sink = ? AND endpoint = ?`,
			e.Pipeline, e.Sink, e.Endpoint).Scan(&state, &until, &reason, &seen)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("state: summarize deliveries: %w", err)
		}
		e.Circuit, e.CircuitReason = state, reason
		if until > 0 {
			t := time.UnixMilli(until).UTC()
			e.CircuitUntil = &t
		}
		t := time.UnixMilli(seen).UTC()
		e.CircuitSeen = &t
	}
	return out, nil
}

// CircuitRecord is an endpoint whose circuit a sink last reported as not
// closed.
type CircuitRecord struct {
	Pipeline, Sink, Endpoint, State string
	Until                           time.Time // zero when not open
}

// Circuits lists the circuits the sinks reported as open, half-open or
// disabled, for metrics.
func (s *Store) Circuits(ctx context.Context) ([]CircuitRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pipeline, sink, endpoint, state, until FROM circuits ORDER BY pipeline, sink, endpoint`)
	if err != nil {
		return nil, fmt.Errorf("state: list circuits: %w", err)
	}
	defer rows.Close()
	var out []CircuitRecord
	for rows.Next() {
		var c CircuitRecord
		var until int64
		if err := rows.Scan(&c.Pipeline, &c.Sink, &c.Endpoint, &c.State, &until); err != nil {
			return nil, fmt.Errorf("state: list circuits: %w", err)
		}
		if until > 0 {
			c.Until = time.UnixMilli(until).UTC()
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
