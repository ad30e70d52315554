// Package state keeps the engine's durable state: the committed position of
// every source of every pipeline. It is one SQLite file (.pipeline/state.db
// by default) so `pipeline state` can show and reset everything in one place.
package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver: no cgo for the default store
)

// DefaultPath is where state lives unless --state says otherwise.
const DefaultPath = ".pipeline/state.db"

// Store is an open state database.
type Store struct {
	db   *sql.DB
	path string
	prep map[string]*sql.Stmt // hotStatements
	// ckpt is the connection that checkpoints the WAL, every
	// checkpointInterval, until stop is closed.
	ckpt          *sql.DB
	stop, stopped chan struct{}
	// pruners prune outboxes in the background (retention.go).
	pruners pruners
	// push counts the requests push sources answered (inbox.go).
	push pushRequests
}

// checkpointInterval is how often the WAL is copied into the database.
const checkpointInterval = 500 * time.Millisecond

// checkpoints copies committed WAL frames into the database file without
// blocking the writer (PASSIVE), so the WAL stays small.
func (s *Store) checkpoints() {
	defer close(s.stopped)
	tick := time.NewTicker(checkpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.ckpt.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
		}
	}
}

const schema = `
CREATE TABLE IF NOT EXISTS checkpoints (
	pipeline   TEXT NOT NULL,
	source     TEXT NOT NULL,
	position   BLOB NOT NULL,
	records    INTEGER NOT NULL DEFAULT 0,
	updated_at TEXT NOT NULL,
	PRIMARY KEY (pipeline, source)
);`

// Open opens (creating if needed) the store at path.
func Open(path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("state %s: %w", path, err)
		}
	}
	// WAL keeps readers (pipeline state show) from blocking a run; a busy
	// timeout rides out a concurrent writer instead of failing; every
	// commit is fsynced (synchronous FULL). The writer does not checkpoint
	// (copying the WAL into the database, with its own fsync, would stall
	// whichever write crossed the threshold): a second connection does, in
	// the background.
	base := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
	db, err := sql.Open("sqlite", base+"&_pragma=cache_size(-32768)&_pragma=wal_autocheckpoint(0)")
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	// Two processes opening a new state file at once (a run starting while
	// `pipeline state show` looks) can find it locked while the other sets
	// up WAL and the tables, which the busy timeout does not always cover.
	for try := 0; ; try++ {
		_, err = db.Exec(schema + outboxSchema + retentionSchema + sinkProgressSchema + inboxSchema)
		if err == nil || try == 50 || !isBusy(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	if err := migrateRetention(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	ckpt, err := sql.Open("sqlite", base)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	ckpt.SetMaxOpenConns(1)
	s := &Store{db: db, path: path, prep: map[string]*sql.Stmt{}, ckpt: ckpt, stop: make(chan struct{}), stopped: make(chan struct{})}
	go s.checkpoints()
	for _, q := range hotStatements {
		st, err := db.Prepare(q)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("state %s: prepare: %w", path, err)
		}
		s.prep[q] = st
	}
	return s, nil
}

// stmt is a prepared statement of hotStatements, in tx. (Preparing inside
// a transaction would wait forever for the store's one connection.)
func (s *Store) stmt(ctx context.Context, tx *sql.Tx, q string) *sql.Stmt {
	return tx.StmtContext(ctx, s.prep[q])
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error {
	s.pruners.closeAll()
	close(s.stop)
	<-s.stopped
	s.ckpt.Exec(`PRAGMA wal_checkpoint(PASSIVE)`)
	s.ckpt.Close()
	for _, st := range s.prep {
		st.Close()
	}
	return s.db.Close()
}

// Checkpoint is a source's committed position.
type Checkpoint struct {
	Pipeline string
	Source   string
	Position []byte
	// Records counts the records committed through this source, over all runs.
	Records   int64
	UpdatedAt time.Time
}

// Get returns the committed position of a source, or nil when it has none.
func (s *Store) Get(ctx context.Context, pipeline, source string) ([]byte, error) {
	var pos []byte
	err := s.db.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE pipeline = ? AND source = ?`, pipeline, source).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: read checkpoint %s/%s: %w", pipeline, source, err)
	}
	return pos, nil
}

// Commit durably records a source's new position; records is how many
// records the position moved past.
func (s *Store) Commit(ctx context.Context, pipeline, source string, position []byte, records int64) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO checkpoints (pipeline, source, position, records, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (pipeline, source) DO UPDATE SET position = excluded.position,
	records = checkpoints.records + excluded.records, updated_at = excluded.updated_at`,
		pipeline, source, position, records, time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("state: commit checkpoint %s/%s: %w", pipeline, source, err)
	}
	return nil
}

// List returns a pipeline's checkpoints, all pipelines' when pipeline is "".
func (s *Store) List(ctx context.Context, pipeline string) ([]Checkpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pipeline, source, position, records, updated_at FROM checkpoints
WHERE ? = '' OR pipeline = ? ORDER BY pipeline, source`, pipeline, pipeline)
	if err != nil {
		return nil, fmt.Errorf("state: list checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		var c Checkpoint
		var ts string
		if err := rows.Scan(&c.Pipeline, &c.Source, &c.Position, &c.Records, &ts); err != nil {
			return nil, fmt.Errorf("state: list checkpoints: %w", err)
		}
		c.UpdatedAt, _ = time.Parse(time.RFC3339Nano, ts)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Reset forgets a pipeline's checkpoints, so its next run starts over. It
// returns how many were removed.
func (s *Store) Reset(ctx context.Context, pipeline string) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM checkpoints WHERE pipeline = ?`, pipeline)
	if err != nil {
		return 0, fmt.Errorf("state: reset %s: %w", pipeline, err)
	}
	if err := resetSinkProgress(ctx, s, pipeline); err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
