package state

import (
	"context"

	"fmt"
	"time"
)

// The run log: one row per run of a pipeline (`pipeline run`, each run of
// `pipeline serve` and each scheduled firing), so that the admin API shows
// a pipeline's last runs also after serve restarts.

const runsSchema = `
CREATE TABLE IF NOT EXISTS runs (
	id         INTEGER PRIMARY KEY,
	pipeline   TEXT NOT NULL,
	started_at INTEGER NOT NULL,           -- unix ms
	ended_at   INTEGER NOT NULL DEFAULT 0, -- 0 while running
	outcome    TEXT NOT NULL,              -- running | succeeded | failed | interrupted
	error      TEXT NOT NULL DEFAULT '',
	read       INTEGER NOT NULL DEFAULT 0,
	filtered   INTEGER NOT NULL DEFAULT 0,
	skipped    INTEGER NOT NULL DEFAULT 0,
	rejected   INTEGER NOT NULL DEFAULT 0,
	delivered  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, id);`

// keptRuns is how many runs of a pipeline the log keeps.
const keptRuns = 100

// RunCounts are a run's counters.
type RunCounts struct {
	Read, Filtered, Skipped, Rejected, Delivered int64
}

// RunRecord is one run of the log.
type RunRecord struct {
	ID        int64
	Pipeline  string
	StartedAt time.Time
	EndedAt   time.Time // zero while running
	Outcome   string
	Error     string
	Counts    RunCounts
}

// BeginRun logs that a run of pipeline started and returns its id. A run
// of the pipeline still logged as running was cut short (the process
// died: a pipeline runs once at a time), so it is marked interrupted.
func (s *Store) BeginRun(ctx context.Context, pipeline string, at time.Time) (int64, error) {
	ctx = context.WithoutCancel(ctx)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("state: log run: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE runs SET outcome = 'interrupted', error = 'the process running it stopped before the run ended'
		WHERE pipeline = ? AND ended_at = 0`, pipeline); err != nil {
		return 0, fmt.Errorf("state: log run: %w", err)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO runs (pipeline, started_at, outcome) VALUES (?, ?, 'running')`, pipeline, ms(at))
	if err != nil {
		return 0, fmt.Errorf("state: log run: %w", err)
	}
	id, _ := res.LastInsertId()
	if _, err := tx.ExecContext(ctx, `DELETE FROM runs WHERE pipeline = ? AND id <= ?`, pipeline, id-keptRuns); err != nil {
		return 0, fmt.Errorf("state: log run: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("state: log run: %w", err)
	}
	return id, nil
}

// EndRun logs how the run id ended.
func (s *Store) EndRun(ctx context.Context, id int64, at time.Time, outcome, errText string, c RunCounts) error {
	_, err := s.db.ExecContext(context.WithoutCancel(ctx), `UPDATE runs SET ended_at = ?, outcome = ?, error = ?,
		read = ?, filtered = ?, skipped = ?, rejected = ?, delivered = ? WHERE id = ?`,
		max(ms(at), 1), outcome, errText, c.Read, c.Filtered, c.Skipped, c.Rejected, c.Delivered, id)
	if err != nil {
		return fmt.Errorf("state: log run: %w", err)
	}
	return nil
}

// Runs returns the last limit runs of pipeline, newest first.
func (s *Store) Runs(ctx context.Context, pipeline string, limit int) ([]RunRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, pipeline, started_at, ended_at, outcome, error, read, filtered, skipped, rejected, delivered
		FROM runs WHERE pipeline = ? ORDER BY id DESC LIMIT ?`, pipeline, limit)
	if err != nil {
		return nil, fmt.Errorf("state: list runs: %w", err)
	}
	defer rows.Close()
	var out []RunRecord
	for rows.Next() {
		var r RunRecord
		var started, ended int64
		if err := rows.Scan(&r.ID, &r.Pipeline, &started, &ended, &r.Outcome, &r.Error,
			&r.Counts.Read, &r.Counts.Filtered, &r.Counts.Skipped, &r.Counts.Rejected, &r.Counts.Delivered); err != nil {
			return nil, fmt.Errorf("state: list runs: %w", err)
		}
		r.StartedAt = time.UnixMilli(started).UTC()
		if ended > 0 {
			r.EndedAt = time.UnixMilli(ended).UTC()
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
