package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// The inbox of a push source (source "http", source "webhook") holds the
// records it accepted until the pipeline commits past them, that is until
// every sink acked them: a push source answers a request only after its
// records are stored here, and a restarted run reads them again from the
// committed position. Records are numbered from 1 per source in the order
// stored; an entry is the records of one request. The source's position is
// the number of the last record of a batch, in decimal.
const inboxSchema = `
CREATE TABLE IF NOT EXISTS inbox (
	pipeline    TEXT NOT NULL,
	source      TEXT NOT NULL,
	first       INTEGER NOT NULL,
	count       INTEGER NOT NULL,
	records     BLOB NOT NULL,
	origin      TEXT NOT NULL,
	received_ms INTEGER NOT NULL,
	PRIMARY KEY (pipeline, source, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_heads (
	pipeline TEXT NOT NULL,
	source   TEXT NOT NULL,
	last     INTEGER NOT NULL,
	pruned   INTEGER NOT NULL,
	PRIMARY KEY (pipeline, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox_keys (
	pipeline   TEXT NOT NULL,
	source     TEXT NOT NULL,
	key        TEXT NOT NULL,
	expires_ms INTEGER NOT NULL,
	response   BLOB,
	PRIMARY KEY (pipeline, source, key)
) WITHOUT ROWID;`

// Inbox is one push source's inbox.
type Inbox struct {
	s                *Store
	pipeline, source string

	mu        sync.Mutex
	lastPrune time.Time
}

// Inbox returns the inbox of a pipeline's source.
func (s *Store) Inbox(pipeline, source string) *Inbox {
	return &Inbox{s: s, pipeline: pipeline, source: source}
}

// InboxEntry is what one request accepted.
type InboxEntry struct {
	Records []byte // JSON lines
	Count   int
	// Origin names the request, for the records' ids.
	Origin string
	// Key, when set, dedupes: an entry whose key was stored less than
	// KeyWindow ago is not stored, and gets the first one's Response.
	Key       string
	KeyWindow time.Duration
	Response  []byte
}

// InboxAppended is what Append did with an entry.
type InboxAppended struct {
	First     int64 // the number of its first record; 0 for a duplicate
	Duplicate bool
	Response  []byte // for a duplicate: what the first was answered
}

// InboxStored is a stored entry.
type InboxStored struct {
	First    int64
	Count    int
	Records  []byte
	Origin   string
	Received time.Time
}

// InboxPosition and ParseInboxPosition are the push sources' positions
// (sdk.InboxPosition).
var (
	InboxPosition      = sdk.InboxPosition
	ParseInboxPosition = sdk.ParseInboxPosition
)

// pruneEvery bounds how often Append and Status drop what is committed.
const pruneEvery = time.Second

// Append stores entries in one durable transaction and returns, for each,
// what was done, and how many stored records are not committed past.
func (in *Inbox) Append(ctx context.Context, entries []InboxEntry, now time.Time) ([]InboxAppended, int64, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]InboxAppended, len(entries))
	tx, err := in.s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, 0, in.err("append", err)
	}
	defer tx.Rollback()
	last, pruned, err := in.head(ctx, tx)
	if err != nil {
		return nil, 0, err
	}
	nowMs := now.UnixMilli()
	seen := map[string]int{} // keys of this call
	for i, e := range entries {
		if e.Key != "" {
			if j, ok := seen[e.Key]; ok {
				out[i] = InboxAppended{Duplicate: true, Response: entries[j].Response}
				continue
			}
			var resp []byte
			err := tx.QueryRowContext(ctx, `SELECT response FROM inbox_keys WHERE pipeline = ? AND source = ? AND key = ? AND expires_ms > ?`,
				in.pipeline, in.source, e.Key, nowMs).Scan(&resp)
			if err == nil {
				out[i] = InboxAppended{Duplicate: true, Response: resp}
				continue
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return nil, 0, in.err("append", err)
			}
			seen[e.Key] = i
			if _, err := tx.ExecContext(ctx, `INSERT INTO inbox_keys (pipeline, source, key, expires_ms, response) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (pipeline, source, key) DO UPDATE SET expires_ms = excluded.expires_ms, response = excluded.response`,
				in.pipeline, in.source, e.Key, nowMs+e.KeyWindow.Milliseconds(), e.Response); err != nil {
				return nil, 0, in.err("append", err)
			}
		}
		if e.Count <= 0 {
			out[i] = InboxAppended{First: last + 1}
			continue
		}
		first := last + 1
		if _, err := tx.ExecContext(ctx, `INSERT INTO inbox (pipeline, source, first, count, records, origin, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			in.pipeline, in.source, first, e.Count, e.Records, e.Origin, nowMs); err != nil {
			return nil, 0, in.err("append", err)
		}
		last += int64(e.Count)
		out[i] = InboxAppended{First: first}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO inbox_heads (pipeline, source, last, pruned) VALUES (?, ?, ?, ?)
ON CONFLICT (pipeline, source) DO UPDATE SET last = excluded.last`, in.pipeline, in.source, last, pruned); err != nil {
		return nil, 0, in.err("append", err)
	}
	committed, err := in.committed(ctx, tx)
	if err != nil {
		return nil, 0, err
	}
	if err := in.maybePrune(ctx, tx, now, committed, &pruned); err != nil {
		return nil, 0, err
	}
	if err := tx.Commit(); err != nil {
		return nil, 0, in.err("append", err)
	}
	return out, pending(last, pruned, committed), nil
}

// pending counts the records after both the committed position and what
// was pruned (a reset moves the position back to before pruned records).
func pending(last, pruned, committed int64) int64 {
	return max(0, last-max(pruned, committed))
}

func (in *Inbox) head(ctx context.Context, tx *sql.Tx) (last, pruned int64, err error) {
	err = tx.QueryRowContext(ctx, `SELECT last, pruned FROM inbox_heads WHERE pipeline = ? AND source = ?`, in.pipeline, in.source).Scan(&last, &pruned)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, in.err("read", err)
	}
	return last, pruned, nil
}

func (in *Inbox) committed(ctx context.Context, tx *sql.Tx) (int64, error) {
	var pos []byte
	err := tx.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE pipeline = ? AND source = ?`, in.pipeline, in.source).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, in.err("read", err)
	}
	return ParseInboxPosition(pos), nil
}

// maybePrune drops the entries committed past and the expired keys, at
// most every pruneEvery.
func (in *Inbox) maybePrune(ctx context.Context, tx *sql.Tx, now time.Time, committed int64, pruned *int64) error {
	if now.Sub(in.lastPrune) < pruneEvery {
		return nil
	}
	in.lastPrune = now
	if committed > *pruned {
		if _, err := tx.ExecContext(ctx, `DELETE FROM inbox WHERE pipeline = ? AND source = ? AND first + count - 1 <= ?`, in.pipeline, in.source, committed); err != nil {
			return in.err("prune", err)
		}
		*pruned = committed
		if _, err := tx.ExecContext(ctx, `UPDATE inbox_heads SET pruned = ? WHERE pipeline = ? AND source = ?`, committed, in.pipeline, in.source); err != nil {
			return in.err("prune", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM inbox_keys WHERE pipeline = ? AND source = ? AND expires_ms <= ?`, in.pipeline, in.source, now.UnixMilli()); err != nil {
		return in.err("prune", err)
	}
	return nil
}

// Read returns the stored entries with records after record number after,
// oldest first: whole entries, at least one when there is one, and no more
// once maxRecords are reached.
func (in *Inbox) Read(ctx context.Context, after int64, maxRecords int) ([]InboxStored, error) {
	rows, err := in.s.db.QueryContext(ctx, `SELECT first, count, records, origin, received_ms FROM inbox
WHERE pipeline = ? AND source = ? AND first + count - 1 > ? ORDER BY first LIMIT 1000`, in.pipeline, in.source, after)
	if err != nil {
		return nil, in.err("read", err)
	}
	defer rows.Close()
	var out []InboxStored
	n := 0
	for rows.Next() {
		var e InboxStored
		var ms int64
		if err := rows.Scan(&e.First, &e.Count, &e.Records, &e.Origin, &ms); err != nil {
			return nil, in.err("read", err)
		}
		e.Received = time.UnixMilli(ms)
		out = append(out, e)
		if n += e.Count; n >= maxRecords {
			break
		}
	}
	return out, rows.Err()
}

// InboxStatus is what an inbox holds.
type InboxStatus struct {
	// Pending counts the stored records not committed past.
	Pending int64
	// Oldest is when the oldest pending record was stored (zero: none).
	Oldest time.Time
	// Last is the number of the last record stored.
	Last int64
}

// Status says what the inbox holds, and drops what is committed past.
func (in *Inbox) Status(ctx context.Context, now time.Time) (InboxStatus, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	tx, err := in.s.db.BeginTx(ctx, nil)
	if err != nil {
		return InboxStatus{}, in.err("read", err)
	}
	defer tx.Rollback()
	last, pruned, err := in.head(ctx, tx)
	if err != nil {
		return InboxStatus{}, err
	}
	committed, err := in.committed(ctx, tx)
	if err != nil {
		return InboxStatus{}, err
	}
	st := InboxStatus{Pending: pending(last, pruned, committed), Last: last}
	if st.Pending > 0 {
		var ms int64
		err := tx.QueryRowContext(ctx, `SELECT received_ms FROM inbox WHERE pipeline = ? AND source = ? AND first + count - 1 > ? ORDER BY first LIMIT 1`,
			in.pipeline, in.source, max(committed, pruned)).Scan(&ms)
		if err == nil {
			st.Oldest = time.UnixMilli(ms)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return InboxStatus{}, in.err("read", err)
		}
	}
	if err := in.maybePrune(ctx, tx, now, committed, &pruned); err != nil {
		return InboxStatus{}, err
	}
	if err := tx.Commit(); err != nil {
		return InboxStatus{}, in.err("prune", err)
	}
	return st, nil
}

func (in *Inbox) err(what string, err error) error {
	return fmt.Errorf("state: inbox %s/%s: %s: %w", in.pipeline, in.source, what, err)
}

// InboxCount is what one push source's inbox holds, for metrics.
type InboxCount struct {
	Pipeline, Source string
	// Accepted counts every record ever stored.
	Accepted int64
	Pending  int64
	// Oldest is when the oldest pending record was stored (zero: none).
	Oldest time.Time
}

// InboxCounts lists every push source's inbox.
func (s *Store) InboxCounts(ctx context.Context) ([]InboxCount, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT h.pipeline, h.source, h.last, h.pruned, COALESCE(c.position, '')
FROM inbox_heads h LEFT JOIN checkpoints c ON c.pipeline = h.pipeline AND c.source = h.source ORDER BY h.pipeline, h.source`)
	if err != nil {
		return nil, fmt.Errorf("state: inbox counts: %w", err)
	}
	var out []InboxCount
	for rows.Next() {
		var c InboxCount
		var pruned int64
		var pos []byte
		if err := rows.Scan(&c.Pipeline, &c.Source, &c.Accepted, &pruned, &pos); err != nil {
			rows.Close()
			return nil, fmt.Errorf("state: inbox counts: %w", err)
		}
		committed := ParseInboxPosition(pos)
		c.Pending = pending(c.Accepted, pruned, committed)
		out = append(out, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: inbox counts: %w", err)
	}
	for i := range out {
		if out[i].Pending == 0 {
			continue
		}
		st, err := s.Inbox(out[i].Pipeline, out[i].Source).oldest(ctx)
		if err != nil {
			return nil, err
		}
		out[i].Oldest = st
	}
	return out, nil
}

// oldest is when the oldest record past the committed position was stored.
func (in *Inbox) oldest(ctx context.Context) (time.Time, error) {
	var ms int64
	err := in.s.db.QueryRowContext(ctx, `SELECT i.received_ms FROM inbox i
LEFT JOIN checkpoints c ON c.pipeline = i.pipeline AND c.source = i.source
WHERE i.pipeline = ? AND i.source = ? AND i.first + i.count - 1 > CAST(COALESCE(c.position, '0') AS INTEGER)
ORDER BY i.first LIMIT 1`, in.pipeline, in.source).Scan(&ms)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, in.err("read", err)
	}
	return time.UnixMilli(ms), nil
}

// PushRequestCount is how many requests a push source answered with a
// status, since this process started it.
type PushRequestCount struct {
	Pipeline, Source string
	Status           int
	N                int64
}

// pushRequests are the counts push sources reported (InboxRequests).
type pushRequests struct {
	mu     sync.Mutex
	counts map[PushRequestCount]int64 // N zero in the key
}

// AddPushRequests adds what a push source reported.
func (s *Store) AddPushRequests(pipeline, source string, byStatus map[int]int64) {
	s.push.mu.Lock()
	defer s.push.mu.Unlock()
	if s.push.counts == nil {
		s.push.counts = map[PushRequestCount]int64{}
	}
	for status, n := range byStatus {
		s.push.counts[PushRequestCount{Pipeline: pipeline, Source: source, Status: status}] += n
	}
}

// PushRequests lists the counts push sources reported to this process.
func (s *Store) PushRequests() []PushRequestCount {
	s.push.mu.Lock()
	defer s.push.mu.Unlock()
	out := make([]PushRequestCount, 0, len(s.push.counts))
	for k, n := range s.push.counts {
		k.N = n
		out = append(out, k)
	}
	return out
}
