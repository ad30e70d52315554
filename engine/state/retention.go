package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// Retention (decision 0009): what is finished leaves the outbox after a
// while, so that the state file does not grow forever.
//   - A delivered delivery's payload is dropped after Retention.Delivered;
//     its row stays (about 100 bytes) as the dedupe key, so a re-run or a
//     --full-refresh still sends nothing twice.
//   - Delivery-log entries older than Retention.Attempts are deleted,
//     except those of pending deliveries.
//   - A dead delivery not replayed for Retention.Dead is deleted with its
//     log; until then `pipeline replay` can send it.
// Pending deliveries are never touched. Pruning deletes in small
// transactions (PruneBatch rows), so a delivery waits at most for one of
// them.

const retentionSchema = `
CREATE TABLE IF NOT EXISTS retention (
	pipeline     TEXT NOT NULL,
	sink         TEXT NOT NULL,
	delivered_ms INTEGER NOT NULL,
	attempts_ms  INTEGER NOT NULL,
	dead_ms      INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL,
	PRIMARY KEY (pipeline, sink)
);`

// migrateRetention adds what retention needs to an outbox made before it:
// deliveries.pruned_at (when the payload was dropped; 0 while it is kept)
// and the partial index of delivered rows that still hold their payload,
// so that a prune reads neither pending rows nor the pruned ones.
func migrateRetention(db *sql.DB) error {
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM pragma_table_info('deliveries') WHERE name = 'pruned_at'`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := db.Exec(`ALTER TABLE deliveries ADD COLUMN pruned_at INTEGER NOT NULL DEFAULT 0`); err != nil {
			return err
		}
	}
	_, err := db.Exec(`CREATE INDEX IF NOT EXISTS deliveries_unpruned ON deliveries (pipeline, sink, updated_at) WHERE status = 'delivered' AND pruned_at = 0`)
	return err
}

// PruneBatch is the most rows one prune transaction changes.
const PruneBatch = 1000

// Pruning is when a session's outbox is pruned in the background: First
// after the session begins (and at once when the sink sets its
// retention), then every Every.
type Pruning struct {
	First, Every time.Duration
	Batch        int              // rows per transaction; PruneBatch by default
	Now          func() time.Time // time.Now by default
	Log          *slog.Logger     // one debug line per prune that removed something
}

// DefaultPruning is what NewService starts.
var DefaultPruning = Pruning{First: 5 * time.Second, Every: 10 * time.Minute}

func (p Pruning) withDefaults() Pruning {
	if p.First <= 0 {
		p.First = DefaultPruning.First
	}
	if p.Every <= 0 {
		p.Every = DefaultPruning.Every
	}
	if p.Batch <= 0 {
		p.Batch = PruneBatch
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	return p
}

// Pruned counts what a prune removed.
type Pruned struct {
	Payloads int64 `json:"delivered_payloads"` // payloads of delivered deliveries dropped
	Attempts int64 `json:"attempts"`           // delivery-log entries deleted
	Dead     int64 `json:"dead"`               // dead deliveries deleted
}

// Add sums two counts.
func (p Pruned) Add(q Pruned) Pruned {
	return Pruned{Payloads: p.Payloads + q.Payloads, Attempts: p.Attempts + q.Attempts, Dead: p.Dead + q.Dead}
}

// SetRetention stores a sink's retention (zero fields: the defaults).
func (s *Store) SetRetention(ctx context.Context, pipeline, sink string, r sdk.Retention, now time.Time) error {
	r = r.WithDefaults()
	_, err := s.db.ExecContext(ctx, `INSERT INTO retention (pipeline, sink, delivered_ms, attempts_ms, dead_ms, updated_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (pipeline, sink) DO UPDATE SET delivered_ms = excluded.delivered_ms, attempts_ms = excluded.attempts_ms,
		dead_ms = excluded.dead_ms, updated_at = excluded.updated_at`,
		pipeline, sink, r.Delivered.Milliseconds(), r.Attempts.Milliseconds(), r.Dead.Milliseconds(), ms(now))
	if err != nil {
		return fmt.Errorf("state: set retention %s/%s: %w", pipeline, sink, err)
	}
	return nil
}

// Retention returns a sink's stored retention, or the defaults (and false)
// when its sink never set one.
func (s *Store) Retention(ctx context.Context, pipeline, sink string) (sdk.Retention, bool, error) {
	var d, a, x int64
	err := s.db.QueryRowContext(ctx, `SELECT delivered_ms, attempts_ms, dead_ms FROM retention WHERE pipeline = ? AND sink = ?`, pipeline, sink).Scan(&d, &a, &x)
	if errors.Is(err, sql.ErrNoRows) {
		return sdk.DefaultRetention, false, nil
	}
	if err != nil {
		return sdk.Retention{}, false, fmt.Errorf("state: read retention %s/%s: %w", pipeline, sink, err)
	}
	r := sdk.Retention{Delivered: time.Duration(d) * time.Millisecond, Attempts: time.Duration(a) * time.Millisecond, Dead: time.Duration(x) * time.Millisecond}
	return r.WithDefaults(), true, nil
}

// Prune removes what is past r in one sink's outbox, as of now, in
// transactions of at most batch rows (PruneBatch when batch <= 0).
func (s *Store) Prune(ctx context.Context, pipeline, sink string, r sdk.Retention, now time.Time, batch int) (Pruned, error) {
	if batch <= 0 {
		batch = PruneBatch
	}
	r = r.WithDefaults()
	var p Pruned
	var err error
	wrap := func(what string, err error) error {
		return fmt.Errorf("state: prune %s/%s: %s: %w", pipeline, sink, what, err)
	}
	if p.Payloads, err = s.batches(ctx, batch, `UPDATE deliveries SET payload = x'', pruned_at = ?4 WHERE rowid IN (
		SELECT rowid FROM deliveries WHERE pipeline = ?1 AND sink = ?2 AND status = 'delivered' AND pruned_at = 0 AND updated_at < ?3 LIMIT ?5)`,
		pipeline, sink, ms(now.Add(-r.Delivered)), ms(now)); err != nil {
		return p, wrap("delivered payloads", err)
	}
	if p.Dead, err = s.pruneDead(ctx, pipeline, sink, ms(now.Add(-r.Dead)), batch); err != nil {
		return p, wrap("dead deliveries", err)
	}
	if p.Attempts, err = s.pruneAttempts(ctx, pipeline, sink, ms(now.Add(-r.Attempts)), batch); err != nil {
		return p, wrap("attempts", err)
	}
	return p, nil
}

// batches runs q (which changes at most ?5 rows) until it changes none,
// each run its own transaction, and returns how many rows it changed.
func (s *Store) batches(ctx context.Context, batch int, q string, pipeline, sink string, cutoff, now int64) (int64, error) {
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		res, err := s.db.ExecContext(ctx, q, pipeline, sink, cutoff, now, batch)
		if err != nil {
			return total, err
		}
		n, _ := res.RowsAffected()
		s.prunedTx(n)
		total += n
		if n < int64(batch) {
			return total, nil
		}
	}
}

// pruneDead deletes dead deliveries whose last change (going dead) is
// before cutoff, with their log.
func (s *Store) pruneDead(ctx context.Context, pipeline, sink string, cutoff int64, batch int) (int64, error) {
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := s.inTx(ctx, func(tx *sql.Tx) (int64, error) {
			rows, err := tx.QueryContext(ctx, `SELECT rowid, id FROM deliveries WHERE pipeline = ? AND sink = ? AND status = 'dead' AND updated_at < ? LIMIT ?`,
				pipeline, sink, cutoff, batch)
			if err != nil {
				return 0, err
			}
			var rowids []int64
			var ids []string
			for rows.Next() {
				var rowid int64
				var id string
				if err := rows.Scan(&rowid, &id); err != nil {
					rows.Close()
					return 0, err
				}
				rowids, ids = append(rowids, rowid), append(ids, id)
			}
			rows.Close()
			if err := rows.Err(); err != nil || len(rowids) == 0 {
				return 0, err
			}
			idJSON, _ := json.Marshal(ids)
			if _, err := tx.ExecContext(ctx, `DELETE FROM attempts WHERE pipeline = ? AND sink = ? AND id IN (SELECT value FROM json_each(?))`,
				pipeline, sink, string(idJSON)); err != nil {
				return 0, err
			}
			rowJSON, _ := json.Marshal(rowids)
			res, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE rowid IN (SELECT value FROM json_each(?)) AND status = 'dead'`, string(rowJSON))
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		})
		total += n
		if err != nil || n < int64(batch) {
			return total, err
		}
	}
}

// pruneAttempts deletes the sink's log entries from before cutoff, except
// those of pending deliveries (a retry numbers its attempt after them, and
// `pipeline deliveries` shows why it is retrying). The log is walked in
// rowid order, which is the order attempts were recorded, so the walk
// stops at the first stretch of entries that are all newer than cutoff.
func (s *Store) pruneAttempts(ctx context.Context, pipeline, sink string, cutoff int64, batch int) (int64, error) {
	var total, after int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var last int64
		var old bool
		n, err := s.inTx(ctx, func(tx *sql.Tx) (int64, error) {
			rows, err := tx.QueryContext(ctx, `SELECT rowid, at FROM attempts WHERE pipeline = ? AND sink = ? AND rowid > ? ORDER BY rowid LIMIT ?`,
				pipeline, sink, after, batch)
			if err != nil {
				return 0, err
			}
			var candidates []int64
			for rows.Next() {
				var rowid, at int64
				if err := rows.Scan(&rowid, &at); err != nil {
					rows.Close()
					return 0, err
				}
				last = rowid
				if at < cutoff {
					candidates = append(candidates, rowid)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil || len(candidates) == 0 {
				return 0, err
			}
			old = true
			js, _ := json.Marshal(candidates)
			res, err := tx.ExecContext(ctx, `DELETE FROM attempts WHERE rowid IN (SELECT value FROM json_each(?1)) AND NOT EXISTS (
				SELECT 1 FROM deliveries d WHERE d.pipeline = ?2 AND d.sink = ?3 AND d.id = attempts.id AND d.status = 'pending')`,
				string(js), pipeline, sink)
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		})
		total += n
		if err != nil || !old || last == 0 {
			return total, err
		}
		after = last
	}
}

// inTx runs f in a transaction and commits it.
func (s *Store) inTx(ctx context.Context, f func(*sql.Tx) (int64, error)) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	n, err := f(tx)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	s.prunedTx(n)
	return n, nil
}

func (s *Store) prunedTx(n int64) {
	if f := s.pruners.onTx; f != nil {
		f(n)
	}
}

// SinkKey names one sink's outbox.
type SinkKey struct{ Pipeline, Sink string }

// Outboxes lists the sinks that have an outbox or a stored retention, of
// the given pipelines (all when none are given).
func (s *Store) Outboxes(ctx context.Context, pipelines ...string) ([]SinkKey, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT pipeline, sink FROM deliveries
		UNION SELECT pipeline, sink FROM retention
		UNION SELECT DISTINCT pipeline, sink FROM attempts ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("state: list outboxes: %w", err)
	}
	defer rows.Close()
	var out []SinkKey
	for rows.Next() {
		var k SinkKey
		if err := rows.Scan(&k.Pipeline, &k.Sink); err != nil {
			return nil, fmt.Errorf("state: list outboxes: %w", err)
		}
		if len(pipelines) > 0 && !slices.Contains(pipelines, k.Pipeline) {
			continue
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// pipelines lists every pipeline with checkpoints or an outbox.
func (s *Store) pipelines(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pipeline FROM checkpoints UNION SELECT pipeline FROM deliveries
		UNION SELECT pipeline FROM retention ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("state: list pipelines: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("state: list pipelines: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ErrBusy is returned by Vacuum when another process (a run, serve) holds
// the state file's write lock: vacuum refuses rather than wait.
var ErrBusy = errors.New("the state file is in use by another pipeline process (run or serve); stop it and try again")

// VacuumResult is what Vacuum did.
type VacuumResult struct {
	Pruned
	BytesBefore, BytesAfter int64
}

// Vacuum prunes every outbox of the given pipelines (all when none are
// given) with its sink's stored retention (the defaults when none is
// stored), then rebuilds the file (SQLite VACUUM) so that the space freed
// goes back to the file system. It takes the write lock first and
// returns ErrBusy at once when another process holds it.
func (s *Store) Vacuum(ctx context.Context, now time.Time, pipelines ...string) (VacuumResult, error) {
	var res VacuumResult
	res.BytesBefore = s.fileSize()
	keys, err := s.Outboxes(ctx, pipelines...)
	if err != nil {
		return res, err
	}
	// A run or serve of any pipeline of the store holds its run lock:
	// refuse (naming it) rather than stall its writes behind the rewrite,
	// which takes the whole file, whichever pipelines are pruned.
	all, err := s.pipelines(ctx)
	if err != nil {
		return res, err
	}
	for _, p := range all {
		l, err := LockPipeline(s.path, p)
		if err != nil {
			return res, err
		}
		defer l.Close()
	}
	// And any other writer (another process with the file open for
	// writing): with no busy timeout, a held write lock fails at once
	// instead of waiting. The store has one connection, so the pragma
	// holds for everything below.
	if _, err := s.db.ExecContext(ctx, `PRAGMA busy_timeout = 0`); err != nil {
		return res, fmt.Errorf("state: vacuum: %w", err)
	}
	defer s.db.ExecContext(context.WithoutCancel(ctx), `PRAGMA busy_timeout = 10000`)
	if _, err := s.inTx(ctx, func(tx *sql.Tx) (int64, error) {
		// A write, so the transaction takes the write lock now.
		_, err := tx.ExecContext(ctx, `DELETE FROM retention WHERE 0`)
		return 0, err
	}); err != nil {
		if isBusy(err) {
			return res, ErrBusy
		}
		return res, fmt.Errorf("state: vacuum: %w", err)
	}
	for _, k := range keys {
		r, _, err := s.Retention(ctx, k.Pipeline, k.Sink)
		if err != nil {
			return res, err
		}
		p, err := s.Prune(ctx, k.Pipeline, k.Sink, r, now, PruneBatch)
		res.Pruned = res.Pruned.Add(p)
		if err != nil {
			if isBusy(err) {
				return res, ErrBusy
			}
			return res, err
		}
	}
	// VACUUM rewrites the database through the WAL; the checkpoint after
	// it copies the result into the file and TRUNCATE empties the WAL, so
	// that the file sizes say what was freed.
	if _, err := s.db.ExecContext(ctx, `VACUUM`); err != nil {
		if isBusy(err) {
			return res, ErrBusy
		}
		return res, fmt.Errorf("state: vacuum: %w", err)
	}
	if err := s.truncateWAL(ctx); err != nil {
		return res, fmt.Errorf("state: vacuum: checkpoint: %w", err)
	}
	res.BytesAfter = s.fileSize()
	return res, nil
}

// truncateWAL copies the WAL into the database and empties it. A
// checkpoint that a reader held up (the store's own background
// checkpointer, `pipeline deliveries` in another process) says so rather
// than fail; it is tried again for a while.
func (s *Store) truncateWAL(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `PRAGMA busy_timeout = 10000`); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var busy, log, done int
		if err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &log, &done); err != nil {
			return err
		}
		if busy == 0 || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func isBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

// fileSize is the size of the database file and its WAL.
func (s *Store) fileSize() int64 {
	var n int64
	for _, p := range []string{s.path, s.path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// pruners are the background prunes running, one per sink's outbox: a
// session that begins replaces the one before it for the same sink.
type pruners struct {
	mu      sync.Mutex
	running map[SinkKey]*pruner
	closed  bool
	// onTx, when set (tests), is told how many rows each prune
	// transaction changed.
	onTx func(rows int64)
}

type pruner struct {
	stop, done chan struct{}
	kick       chan struct{}
}

// end stops p and waits for it (a batch under way finishes first).
func (p *pruner) end() {
	close(p.stop)
	<-p.done
}

// Prune starts pruning this session's outbox in the background, with the
// sink's stored retention read before each prune, until ctx ends, End is
// called, a later session of the same sink starts pruning, or the store
// closes.
func (o *Outbox) Prune(ctx context.Context, p Pruning) {
	p = p.withDefaults()
	key := SinkKey{o.pipeline, o.sink}
	pr := &pruner{stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1)}
	ps := &o.s.pruners
	ps.mu.Lock()
	if ps.closed {
		ps.mu.Unlock()
		return
	}
	old := ps.running[key]
	if ps.running == nil {
		ps.running = map[SinkKey]*pruner{}
	}
	ps.running[key] = pr
	o.pruner = pr
	ps.mu.Unlock()
	if old != nil {
		old.end()
	}
	go o.prunes(ctx, pr, p)
}

// SetRetention stores the sink's retention and has the session's pruner,
// if any, prune with it now.
func (o *Outbox) SetRetention(ctx context.Context, r sdk.Retention, now time.Time) error {
	if err := o.s.SetRetention(ctx, o.pipeline, o.sink, r, now); err != nil {
		return err
	}
	o.kickPrune()
	return nil
}

// kickPrune asks the session's pruner to prune now (the retention changed).
func (o *Outbox) kickPrune() {
	o.s.pruners.mu.Lock()
	pr := o.pruner
	o.s.pruners.mu.Unlock()
	if pr != nil {
		select {
		case pr.kick <- struct{}{}:
		default:
		}
	}
}

// End stops the session's background pruning and waits for it.
func (o *Outbox) End() {
	ps := &o.s.pruners
	ps.mu.Lock()
	pr := o.pruner
	key := SinkKey{o.pipeline, o.sink}
	if pr == nil || ps.running[key] != pr {
		ps.mu.Unlock()
		return
	}
	delete(ps.running, key)
	ps.mu.Unlock()
	pr.end()
}

func (o *Outbox) prunes(ctx context.Context, pr *pruner, p Pruning) {
	defer close(pr.done)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		select {
		case <-pr.stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	timer := time.NewTimer(p.First)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-pr.kick:
		}
		r, _, err := o.s.Retention(ctx, o.pipeline, o.sink)
		if err == nil {
			var n Pruned
			n, err = o.s.Prune(ctx, o.pipeline, o.sink, r, p.Now(), p.Batch)
			if n != (Pruned{}) {
				p.Log.Debug("outbox pruned", "pipeline", o.pipeline, "sink", o.sink,
					"delivered_payloads", n.Payloads, "attempts", n.Attempts, "dead", n.Dead)
			}
		}
		if err != nil && ctx.Err() == nil {
			p.Log.Warn("outbox prune failed", "pipeline", o.pipeline, "sink", o.sink, "error", err)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(p.Every)
	}
}

// closeAll stops every pruner, for Store.Close.
func (ps *pruners) closeAll() {
	ps.mu.Lock()
	ps.closed = true
	running := ps.running
	ps.running = nil
	ps.mu.Unlock()
	for _, pr := range running {
		pr.end()
	}
}
