package state

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
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
	leased      INTEGER NOT NULL DEFAULT 0, -- in flight in the current session
	created_at  INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL,
	last_code   INTEGER NOT NULL DEFAULT 0,
	last_error  TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (pipeline, sink, id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (pipeline, sink, status, next_at);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (pipeline, sink, order_key, status);
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
CREATE INDEX IF NOT EXISTS attempts_by_delivery ON attempts (pipeline, sink, id);`

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

// Outcome is what an attempt means for its delivery.
type Outcome int

const (
	Delivered Outcome = iota
	Retry             // due again at the given time
	Dead              // dead letter until replayed
	Release           // not attempted: due again at the given time, attempts unchanged
)

// Outbox is one sink's outbox.
type Outbox struct {
	s        *Store
	pipeline string
	sink     string
}

// Outbox returns the outbox of a pipeline's sink.
func (s *Store) Outbox(pipeline, sink string) *Outbox {
	return &Outbox{s: s, pipeline: pipeline, sink: sink}
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// ResetLeases returns deliveries left in flight by an earlier session (one
// that crashed) to the pending pool. Call it when a session starts.
func (o *Outbox) ResetLeases(ctx context.Context) error {
	_, err := o.s.db.ExecContext(ctx, `UPDATE deliveries SET leased = 0 WHERE pipeline = ? AND sink = ? AND leased = 1`, o.pipeline, o.sink)
	return o.wrap("reset leases", err)
}

func (o *Outbox) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("state: outbox %s/%s: %s: %w", o.pipeline, o.sink, op, err)
}

// Enqueue stores deliveries as pending and due now. Ids already stored are
// left alone. It returns how many were new.
func (o *Outbox) Enqueue(ctx context.Context, ds []Delivery, now time.Time) (int, error) {
	tx, err := o.s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, o.wrap("enqueue", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO deliveries
		(pipeline, sink, id, endpoint, order_key, payload, status, next_at, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING`)
	if err != nil {
		return 0, o.wrap("enqueue", err)
	}
	defer stmt.Close()
	added := 0
	for _, d := range ds {
		due := now
		if d.NotBefore.After(now) {
			due = d.NotBefore
		}
		res, err := stmt.ExecContext(ctx, o.pipeline, o.sink, d.ID, d.Endpoint, d.OrderKey, d.Payload, ms(due), ms(now), ms(now))
		if err != nil {
			return 0, o.wrap("enqueue", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			added++
		}
	}
	return added, o.wrap("enqueue", tx.Commit())
}

// Lease hands out up to max due pending deliveries, oldest first, and marks
// them in flight. A delivery waits while an earlier pending one has the same
// order key. It also returns when the next not-yet-due delivery is due (zero
// when nothing else is pending).
func (o *Outbox) Lease(ctx context.Context, now time.Time, max int, skipEndpoints []string) ([]Delivery, time.Time, error) {
	tx, err := o.s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	}
	defer tx.Rollback()
	args := []any{o.pipeline, o.sink, ms(now)}
	skip := ""
	if len(skipEndpoints) > 0 {
		skip = " AND d.endpoint NOT IN (" + strings.TrimSuffix(strings.Repeat("?,", len(skipEndpoints)), ",") + ")"
		for _, e := range skipEndpoints {
			args = append(args, e)
		}
	}
	args = append(args, max)
	rows, err := tx.QueryContext(ctx, `SELECT d.rowid, d.id, d.endpoint, d.order_key, d.payload, d.attempts FROM deliveries d
		WHERE d.pipeline = ? AND d.sink = ? AND d.status = 'pending' AND d.leased = 0 AND d.next_at <= ?`+skip+`
		AND (d.order_key = '' OR NOT EXISTS (SELECT 1 FROM deliveries e
			WHERE e.pipeline = d.pipeline AND e.sink = d.sink AND e.order_key = d.order_key
			AND e.status = 'pending' AND e.rowid < d.rowid))
		ORDER BY d.next_at, d.rowid LIMIT ?`, args...)
	if err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	}
	var out []Delivery
	var ids []int64
	for rows.Next() {
		var d Delivery
		var rowid int64
		if err := rows.Scan(&rowid, &d.ID, &d.Endpoint, &d.OrderKey, &d.Payload, &d.Attempts); err != nil {
			rows.Close()
			return nil, time.Time{}, o.wrap("lease", err)
		}
		out = append(out, d)
		ids = append(ids, rowid)
	}
	rows.Close()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `UPDATE deliveries SET leased = 1 WHERE rowid = ?`, id); err != nil {
			return nil, time.Time{}, o.wrap("lease", err)
		}
	}
	var next sql.NullInt64
	// Deliveries waiting behind an earlier one with their order key are not
	// due on their own: they follow when that one is done.
	// Nor are deliveries to the skipped endpoints: the caller asks again
	// when one of those has room.
	nextArgs := append([]any{o.pipeline, o.sink}, args[3:len(args)-1]...)
	if err := tx.QueryRowContext(ctx, `SELECT MIN(d.next_at) FROM deliveries d
		WHERE d.pipeline = ? AND d.sink = ? AND d.status = 'pending' AND d.leased = 0`+skip+`
		AND (d.order_key = '' OR NOT EXISTS (SELECT 1 FROM deliveries e
			WHERE e.pipeline = d.pipeline AND e.sink = d.sink AND e.order_key = d.order_key
			AND e.status = 'pending' AND e.rowid < d.rowid))`,
		nextArgs...).Scan(&next); err != nil {
		return nil, time.Time{}, o.wrap("lease", err)
	}
	var nextDue time.Time
	if next.Valid {
		nextDue = time.UnixMilli(next.Int64)
	}
	return out, nextDue, o.wrap("lease", tx.Commit())
}

// Record stores an attempt's outcome and appends it to the delivery log.
// A Release is not an attempt and is not logged.
func (o *Outbox) Record(ctx context.Context, id string, a Attempt, outcome Outcome, nextAt time.Time) error {
	tx, err := o.s.db.BeginTx(ctx, nil)
	if err != nil {
		return o.wrap("record", err)
	}
	defer tx.Rollback()
	now := ms(time.Now())
	var q string
	var args []any
	switch outcome {
	case Delivered:
		q, args = `UPDATE deliveries SET status = 'delivered', leased = 0, attempts = attempts + 1, last_code = ?, last_error = '', updated_at = ?`, []any{a.StatusCode, now}
	case Retry:
		q, args = `UPDATE deliveries SET leased = 0, attempts = attempts + 1, next_at = ?, last_code = ?, last_error = ?, updated_at = ?`, []any{ms(nextAt), a.StatusCode, a.Error, now}
	case Dead:
		q, args = `UPDATE deliveries SET status = 'dead', leased = 0, attempts = attempts + 1, last_code = ?, last_error = ?, updated_at = ?`, []any{a.StatusCode, a.Error, now}
	case Release:
		q, args = `UPDATE deliveries SET leased = 0, next_at = ?, updated_at = ?`, []any{ms(nextAt), now}
	default:
		return o.wrap("record", fmt.Errorf("unknown outcome %d", outcome))
	}
	res, err := tx.ExecContext(ctx, q+` WHERE pipeline = ? AND sink = ? AND id = ?`, append(args, o.pipeline, o.sink, id)...)
	if err != nil {
		return o.wrap("record", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return o.wrap("record", fmt.Errorf("no delivery %q", id))
	}
	if outcome != Release {
		if len(a.Response) > 4096 {
			a.Response = a.Response[:4096]
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO attempts (pipeline, sink, id, n, at, status_code, latency_ms, error, response)
			VALUES (?, ?, ?, (SELECT COUNT(*) + 1 FROM attempts WHERE pipeline = ? AND sink = ? AND id = ?), ?, ?, ?, ?, ?)`,
			o.pipeline, o.sink, id, o.pipeline, o.sink, id, ms(a.At), a.StatusCode, a.Latency.Milliseconds(), a.Error, a.Response)
		if err != nil {
			return o.wrap("record", err)
		}
	}
	return o.wrap("record", tx.Commit())
}

// Pending counts deliveries left to make and dead ones, and when the next
// pending one is due.
func (o *Outbox) Pending(ctx context.Context) (pending, dead int, nextDue time.Time, err error) {
	var next sql.NullInt64
	err = o.s.db.QueryRowContext(ctx, `SELECT
		COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'dead'), 0),
		MIN(CASE WHEN status = 'pending' THEN next_at END)
		FROM deliveries WHERE pipeline = ? AND sink = ?`, o.pipeline, o.sink).Scan(&pending, &dead, &next)
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
		conds, args = append(conds, "status = ?"), append(args, f.Status)
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
	Log       []Attempt `json:"log"`
}

// Deliveries lists deliveries matching f, newest change first, each with its
// attempts.
func (s *Store) Deliveries(ctx context.Context, f DeliveryFilter, limit int) ([]DeliveryRecord, error) {
	where, args, err := f.where()
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT pipeline, sink, id, endpoint, status, attempts, next_at, created_at, updated_at, last_code, last_error
		FROM deliveries WHERE `+where+` ORDER BY updated_at DESC, rowid DESC LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("state: list deliveries: %w", err)
	}
	var out []DeliveryRecord
	for rows.Next() {
		var d DeliveryRecord
		var next, created, updated int64
		if err := rows.Scan(&d.Pipeline, &d.Sink, &d.ID, &d.Endpoint, &d.Status, &d.Attempts, &next, &created, &updated, &d.LastCode, &d.LastError); err != nil {
			rows.Close()
			return nil, fmt.Errorf("state: list deliveries: %w", err)
		}
		d.NextAt, d.CreatedAt, d.UpdatedAt = time.UnixMilli(next).UTC(), time.UnixMilli(created).UTC(), time.UnixMilli(updated).UTC()
		out = append(out, d)
	}
	rows.Close()
	for i := range out {
		d := &out[i]
		arows, err := s.db.QueryContext(ctx, `SELECT n, at, status_code, latency_ms, error, response FROM attempts
			WHERE pipeline = ? AND sink = ? AND id = ? ORDER BY n`, d.Pipeline, d.Sink, d.ID)
		if err != nil {
			return nil, fmt.Errorf("state: list attempts: %w", err)
		}
		for arows.Next() {
			var a Attempt
			var at, lat int64
			if err := arows.Scan(&a.N, &at, &a.StatusCode, &lat, &a.Error, &a.Response); err != nil {
				arows.Close()
				return nil, fmt.Errorf("state: list attempts: %w", err)
			}
			a.At, a.Latency = time.UnixMilli(at).UTC(), time.Duration(lat)*time.Millisecond
			d.Log = append(d.Log, a)
		}
		arows.Close()
	}
	return out, nil
}

// Replay makes the deliveries matching f pending again, due now, with a
// fresh retry schedule. Their ids (and so webhook-ids) stay the same, and
// their log is kept. It returns how many it queued.
func (s *Store) Replay(ctx context.Context, f DeliveryFilter, now time.Time) (int64, error) {
	where, args, err := f.where()
	if err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE deliveries SET status = 'pending', attempts = 0, leased = 0, next_at = ?, updated_at = ?
		WHERE `+where+` AND status != 'pending'`, append([]any{ms(now), ms(now)}, args...)...)
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
