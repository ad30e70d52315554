package state

import (
	"context"
	"fmt"
	"time"
)

// Per-sink progress: a source's committed position is where every sink has
// acked everything before it. A sink that is faster than another has acked
// more; sink_progress holds, per sink, how many records past the committed
// position it has acked all it was sent, so that a restarted run does not
// send it those again (the source re-reads the same records from the same
// position).
const sinkProgressSchema = `
CREATE TABLE IF NOT EXISTS sink_progress (
	pipeline TEXT NOT NULL,
	source   TEXT NOT NULL,
	sink     TEXT NOT NULL,
	ahead    INTEGER NOT NULL,
	PRIMARY KEY (pipeline, source, sink)
);`

// SinkProgress returns, per sink, how many records past the source's
// committed position that sink acked in an earlier run.
func (s *Store) SinkProgress(ctx context.Context, pipeline, source string) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sink, ahead FROM sink_progress WHERE pipeline = ? AND source = ?`, pipeline, source)
	if err != nil {
		return nil, fmt.Errorf("state: read sink progress %s/%s: %w", pipeline, source, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var sink string
		var n int64
		if err := rows.Scan(&sink, &n); err != nil {
			return nil, fmt.Errorf("state: read sink progress %s/%s: %w", pipeline, source, err)
		}
		out[sink] = n
	}
	return out, rows.Err()
}

// CommitProgress records a source's position (nil: unchanged, or none yet)
// and, in the same transaction, how far past it each sink acked: ahead
// replaces what was recorded for the source's sinks.
func (s *Store) CommitProgress(ctx context.Context, pipeline, source string, position []byte, records int64, ahead map[string]int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("state: commit checkpoint %s/%s: %w", pipeline, source, err)
	}
	defer tx.Rollback()
	if position != nil {
		if _, err := tx.ExecContext(ctx, `
INSERT INTO checkpoints (pipeline, source, position, records, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (pipeline, source) DO UPDATE SET position = excluded.position,
	records = checkpoints.records + excluded.records, updated_at = excluded.updated_at`,
			pipeline, source, position, records, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("state: commit checkpoint %s/%s: %w", pipeline, source, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM sink_progress WHERE pipeline = ? AND source = ?`, pipeline, source); err != nil {
		return fmt.Errorf("state: commit sink progress %s/%s: %w", pipeline, source, err)
	}
	for sink, n := range ahead {
		if n <= 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sink_progress (pipeline, source, sink, ahead) VALUES (?, ?, ?, ?)`, pipeline, source, sink, n); err != nil {
			return fmt.Errorf("state: commit sink progress %s/%s: %w", pipeline, source, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("state: commit checkpoint %s/%s: %w", pipeline, source, err)
	}
	return nil
}

// resetSinkProgress forgets a pipeline's per-sink progress.
func resetSinkProgress(ctx context.Context, s *Store, pipeline string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM sink_progress WHERE pipeline = ?`, pipeline); err != nil {
		return fmt.Errorf("state: reset %s: %w", pipeline, err)
	}
	return nil
}
