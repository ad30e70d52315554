package state

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Queries of the delivery log for the admin API of `pipeline serve`: pages
// of deliveries, newest change first, with keyset pagination; one delivery;
// every sink's delivery of one id (a webhook-id).

// adminSchema indexes a sink's deliveries by last change, so that a page
// of them, newest first, reads an index in order rather than sorting the
// sink's deliveries; a page of several sinks merges a page of each
// (listRecords). The dead letter has its own partial index, in
// outboxSchema (deliveries_dead_changed), so that its pages stay fast
// however few dead deliveries there are among the delivered; pending ones
// have deliveries_pending.
//
// deliveries_by_change is partial on a condition that holds for every row
// (created_at is a unix time) and that only the page queries state
// (byChange): without statistics, SQLite would otherwise pick it, for its
// (pipeline, sink) prefix, over the partial indexes of the outbox's own
// queries (Pending, Begin, the prunes) and read every delivery of the sink.
// It is on the hot path: each result recorded moves a delivery in it
// (measured: within the noise of tools/benchdeliver).
const adminSchema = `
CREATE INDEX IF NOT EXISTS deliveries_by_change ON deliveries (pipeline, sink, updated_at) WHERE created_at >= 0;`

// byChange is the FROM clause of a page query that walks
// deliveries_by_change, with the condition that lets it.
const byChange = `deliveries INDEXED BY deliveries_by_change WHERE created_at >= 0 AND `

// ErrNotFound is returned (wrapped) by Delivery when there is no such
// delivery.
var ErrNotFound = errors.New("not found")

// ErrBadCursor is returned (wrapped) by DeliveryPage for a cursor it did
// not make.
var ErrBadCursor = errors.New("bad cursor")

// DefaultPageLimit and MaxPageLimit bound the deliveries of one page.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 1000
)

// DeliveryPage is one page of deliveries, newest change first. Next is the
// cursor of the following page, "" on the last one.
type DeliveryPage struct {
	Deliveries []DeliveryRecord `json:"deliveries"`
	Next       string           `json:"next"`
}

// recordColumns are the columns scanRecords reads, rowid first.
const recordColumns = `rowid, pipeline, sink, id, endpoint, status, attempts, next_at, created_at, updated_at, last_code, last_error, pruned_at`

// scanRecords reads rows of recordColumns, and closes them. It also returns
// each record's rowid and updated_at (unix ms), for cursors.
func scanRecords(rows *sql.Rows) ([]DeliveryRecord, []pageKey, error) {
	defer rows.Close()
	var out []DeliveryRecord
	var keys []pageKey
	for rows.Next() {
		var d DeliveryRecord
		var k pageKey
		var next, created, pruned int64
		if err := rows.Scan(&k.rowid, &d.Pipeline, &d.Sink, &d.ID, &d.Endpoint, &d.Status, &d.Attempts, &next, &created, &k.updated,
			&d.LastCode, &d.LastError, &pruned); err != nil {
			return nil, nil, err
		}
		if pruned > 0 {
			t := time.UnixMilli(pruned).UTC()
			d.Pruned = &t
		}
		d.NextAt, d.CreatedAt, d.UpdatedAt = time.UnixMilli(next).UTC(), time.UnixMilli(created).UTC(), time.UnixMilli(k.updated).UTC()
		out = append(out, d)
		keys = append(keys, k)
	}
	return out, keys, rows.Err()
}

// logChunk is how many deliveries' attempts one query reads.
const logChunk = 500

// withLog reads the attempts of every delivery in ds, in one query per
// logChunk deliveries, into their Log.
func (s *Store) withLog(ctx context.Context, ds []DeliveryRecord) error {
	for start := 0; start < len(ds); start += logChunk {
		chunk := ds[start:min(len(ds), start+logChunk)]
		byKey := make(map[string]int, len(chunk))
		var values strings.Builder
		args := make([]any, 0, 3*len(chunk))
		for i, d := range chunk {
			if i > 0 {
				values.WriteString(", ")
			}
			values.WriteString("(?, ?, ?)")
			args = append(args, d.Pipeline, d.Sink, d.ID)
			byKey[d.Pipeline+"\x00"+d.Sink+"\x00"+d.ID] = i
		}
		rows, err := s.db.QueryContext(ctx, `SELECT pipeline, sink, id, n, at, status_code, latency_ms, error, response FROM attempts
			WHERE (pipeline, sink, id) IN (VALUES `+values.String()+`) ORDER BY pipeline, sink, id, n`, args...)
		if err != nil {
			return fmt.Errorf("state: list attempts: %w", err)
		}
		for rows.Next() {
			var p, sk, id string
			var a Attempt
			var at, lat int64
			if err := rows.Scan(&p, &sk, &id, &a.N, &at, &a.StatusCode, &lat, &a.Error, &a.Response); err != nil {
				rows.Close()
				return fmt.Errorf("state: list attempts: %w", err)
			}
			a.At, a.Latency = time.UnixMilli(at).UTC(), time.Duration(lat)*time.Millisecond
			if i, ok := byKey[p+"\x00"+sk+"\x00"+id]; ok {
				chunk[i].Log = append(chunk[i].Log, a)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("state: list attempts: %w", err)
		}
	}
	return nil
}

// pageKey is where a page ends in the order of DeliveryPage.
type pageKey struct{ updated, rowid int64 }

// The cursor is the last row's (updated_at, rowid), in base64url: opaque
// to the client. (VACUUM may renumber rowids; a cursor made before one may
// then skip or repeat deliveries, never fail.)
const cursorVersion = "1"

func (k pageKey) cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorVersion + "." + strconv.FormatInt(k.updated, 10) + "." + strconv.FormatInt(k.rowid, 10)))
}

func parseCursor(c string) (pageKey, error) {
	bad := fmt.Errorf("state: cursor %q: %w", c, ErrBadCursor)
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return pageKey{}, bad
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 3 || parts[0] != cursorVersion {
		return pageKey{}, bad
	}
	var k pageKey
	if k.updated, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
		return pageKey{}, bad
	}
	if k.rowid, err = strconv.ParseInt(parts[2], 10, 64); err != nil || k.rowid <= 0 {
		return pageKey{}, bad
	}
	return k, nil
}

// DeliveryPage returns up to limit deliveries matching f (DefaultPageLimit
// when limit <= 0, at most MaxPageLimit), newest change first (updated_at,
// then rowid, descending), each with its attempts, from the one after
// cursor ("" for the first page). A delivery that changes while a client
// pages moves to the front: it is not seen again on a later page.
func (s *Store) DeliveryPage(ctx context.Context, f DeliveryFilter, cursor string, limit int) (DeliveryPage, error) {
	if limit <= 0 {
		limit = DefaultPageLimit
	}
	limit = min(limit, MaxPageLimit)
	var after *pageKey
	if cursor != "" {
		k, err := parseCursor(cursor)
		if err != nil {
			return DeliveryPage{}, err
		}
		after = &k
	}
	out, keys, err := s.listRecords(ctx, f, after, limit+1)
	if err != nil {
		return DeliveryPage{}, err
	}
	var page DeliveryPage
	if len(out) > limit {
		out = out[:limit]
		page.Next = keys[limit-1].cursor()
	}
	if err := s.withLog(ctx, out); err != nil {
		return DeliveryPage{}, err
	}
	page.Deliveries = out
	if page.Deliveries == nil {
		page.Deliveries = []DeliveryRecord{}
	}
	return page, nil
}

// listRecords reads up to limit deliveries matching f, newest change first,
// after a page's last one (nil: from the newest), without their attempts.
// Each sink that f may select gives its first limit, in one index walk
// (pageStatement), and they are merged: a walk per sink rather than a sort
// of every delivery.
func (s *Store) listRecords(ctx context.Context, f DeliveryFilter, after *pageKey, limit int) ([]DeliveryRecord, []pageKey, error) {
	sinks := []SinkKey{{f.Pipeline, f.Sink}}
	if f.Pipeline == "" || f.Sink == "" {
		all, err := s.outboxSinks(ctx)
		if err != nil {
			return nil, nil, err
		}
		sinks = slices.DeleteFunc(all, func(k SinkKey) bool {
			return (f.Pipeline != "" && k.Pipeline != f.Pipeline) || (f.Sink != "" && k.Sink != f.Sink)
		})
	}
	type row struct {
		d DeliveryRecord
		k pageKey
	}
	var all []row
	for _, k := range sinks {
		q, args, err := pageStatement(f, k, after, limit)
		if err != nil {
			return nil, nil, err
		}
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, nil, fmt.Errorf("state: list deliveries: %w", err)
		}
		out, keys, err := scanRecords(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("state: list deliveries: %w", err)
		}
		if len(sinks) == 1 {
			return out, keys, nil
		}
		for i := range out {
			all = append(all, row{out[i], keys[i]})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i].k, all[j].k
		return a.updated > b.updated || (a.updated == b.updated && a.rowid > b.rowid)
	})
	all = all[:min(len(all), limit)]
	out := make([]DeliveryRecord, len(all))
	keys := make([]pageKey, len(all))
	for i, r := range all {
		out[i], keys[i] = r.d, r.k
	}
	return out, keys, nil
}

// pageStatement is the query of up to limit deliveries of sink k matching
// f, newest change first, after a page's last one (nil: from the newest).
// A page of everything or of the delivered walks deliveries_by_change;
// the dead and the pending have their own partial indexes, which SQLite
// picks (they hold fewer rows when there are few of them).
func pageStatement(f DeliveryFilter, k SinkKey, after *pageKey, limit int) (string, []any, error) {
	where, args, err := f.where()
	if err != nil {
		return "", nil, err
	}
	where += " AND pipeline = ? AND sink = ?"
	args = append(args, k.Pipeline, k.Sink)
	if after != nil {
		// The range on updated_at is what the index walks; the rest picks
		// the rows of the same millisecond that come after.
		where += " AND updated_at <= ? AND (updated_at < ? OR rowid < ?)"
		args = append(args, after.updated, after.updated, after.rowid)
	}
	from := "deliveries WHERE "
	if f.Status == "" || f.Status == StatusDelivered {
		from = byChange
	}
	return `SELECT ` + recordColumns + ` FROM ` + from + where + ` ORDER BY updated_at DESC, rowid DESC LIMIT ?`, append(args, limit), nil
}

// Delivery returns one delivery with its attempts; the error wraps
// ErrNotFound when the sink's outbox has no delivery with that id.
func (s *Store) Delivery(ctx context.Context, pipeline, sink, id string) (DeliveryRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+recordColumns+` FROM deliveries WHERE pipeline = ? AND sink = ? AND id = ?`, pipeline, sink, id)
	if err != nil {
		return DeliveryRecord{}, fmt.Errorf("state: delivery %s/%s/%s: %w", pipeline, sink, id, err)
	}
	out, _, err := scanRecords(rows)
	if err != nil {
		return DeliveryRecord{}, fmt.Errorf("state: delivery %s/%s/%s: %w", pipeline, sink, id, err)
	}
	if len(out) == 0 {
		return DeliveryRecord{}, fmt.Errorf("state: delivery %s/%s/%s: %w", pipeline, sink, id, ErrNotFound)
	}
	if err := s.withLog(ctx, out); err != nil {
		return DeliveryRecord{}, err
	}
	return out[0], nil
}

// DeliveriesByID returns the delivery with that id of every sink that has
// one (a record that went to several sinks has one each; its id is the
// webhook-id), by pipeline and sink, each with its attempts. None is not
// an error.
func (s *Store) DeliveriesByID(ctx context.Context, id string) ([]DeliveryRecord, error) {
	// No index is on id alone (it would cost every enqueue): the sinks are
	// found by skipping through the primary key, then each is one lookup.
	sinks, err := s.outboxSinks(ctx)
	if err != nil {
		return nil, err
	}
	out := []DeliveryRecord{}
	for _, k := range sinks {
		d, err := s.Delivery(ctx, k.Pipeline, k.Sink, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// outboxSinks lists the sinks that hold deliveries, in order, with one
// seek of the primary key per sink (a loose index scan) rather than a read
// of every row.
func (s *Store) outboxSinks(ctx context.Context) ([]SinkKey, error) {
	var out []SinkKey
	var k SinkKey
	err := s.db.QueryRowContext(ctx, `SELECT pipeline, sink FROM deliveries ORDER BY pipeline, sink LIMIT 1`).Scan(&k.Pipeline, &k.Sink)
	for err == nil {
		out = append(out, k)
		var next string
		err = s.db.QueryRowContext(ctx, `SELECT sink FROM deliveries WHERE pipeline = ? AND sink > ? ORDER BY sink LIMIT 1`, k.Pipeline, k.Sink).Scan(&next)
		if err == nil {
			k.Sink = next
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			break
		}
		err = s.db.QueryRowContext(ctx, `SELECT pipeline, sink FROM deliveries WHERE pipeline > ? ORDER BY pipeline, sink LIMIT 1`, k.Pipeline).Scan(&k.Pipeline, &k.Sink)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("state: list outboxes: %w", err)
	}
	return out, nil
}

// asciiLower lowers ASCII letters only, as SQLite's lower() does, so that
// a search term and the text it is looked for in fold alike.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}
