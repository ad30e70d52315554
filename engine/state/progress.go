package state

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"
)

// Per-sink progress: a source's committed position is where every sink has
// acked everything before it. A sink faster than another has acked more;
// sink_marks holds, per sink, the batches past the committed position it
// acked (a fingerprint and a record count each), so that a restarted run,
// which re-reads the same batches from the same position, does not send
// them to it again. The run compares each re-read batch with the marks and
// stops skipping for a sink at the first that differs (the input changed).
const sinkProgressSchema = `
CREATE TABLE IF NOT EXISTS sink_marks (
	pipeline TEXT NOT NULL,
	source   TEXT NOT NULL,
	sink     TEXT NOT NULL,
	records  INTEGER NOT NULL,
	marks    BLOB NOT NULL,
	PRIMARY KEY (pipeline, source, sink)
);`

// Mark is one batch a sink acked past its source's committed position.
type Mark struct {
	FP   uint64 // the batch's fingerprint (engine/run)
	Rows int64
}

// MarkRecords sums the records of marks.
func MarkRecords(marks []Mark) int64 {
	var n int64
	for _, m := range marks {
		n += m.Rows
	}
	return n
}

func encodeMarks(marks []Mark) []byte {
	b := make([]byte, 0, 16*len(marks))
	for _, m := range marks {
		b = binary.LittleEndian.AppendUint64(b, m.FP)
		b = binary.LittleEndian.AppendUint64(b, uint64(m.Rows))
	}
	return b
}

func decodeMarks(b []byte) []Mark {
	out := make([]Mark, 0, len(b)/16)
	for len(b) >= 16 {
		out = append(out, Mark{FP: binary.LittleEndian.Uint64(b), Rows: int64(binary.LittleEndian.Uint64(b[8:]))})
		b = b[16:]
	}
	return out
}

// SinkProgress returns, per sink, the batches past the source's committed
// position that the sink acked in an earlier run.
func (s *Store) SinkProgress(ctx context.Context, pipeline, source string) (map[string][]Mark, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sink, marks FROM sink_marks WHERE pipeline = ? AND source = ?`, pipeline, source)
	if err != nil {
		return nil, fmt.Errorf("state: read sink progress %s/%s: %w", pipeline, source, err)
	}
	defer rows.Close()
	out := map[string][]Mark{}
	for rows.Next() {
		var sink string
		var b []byte
		if err := rows.Scan(&sink, &b); err != nil {
			return nil, fmt.Errorf("state: read sink progress %s/%s: %w", pipeline, source, err)
		}
		out[sink] = decodeMarks(b)
	}
	return out, rows.Err()
}

// SinksAhead returns, per sink, how many records past the source's
// committed position it acked (for `pipeline state show`).
func (s *Store) SinksAhead(ctx context.Context, pipeline, source string) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sink, records FROM sink_marks WHERE pipeline = ? AND source = ?`, pipeline, source)
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

// CommitProgress records a source's position (nil: none yet) and, in the
// same transaction, the batches past it each sink acked: marks replaces
// what was recorded for the source's sinks.
func (s *Store) CommitProgress(ctx context.Context, pipeline, source string, position []byte, records int64, marks map[string][]Mark) error {
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
	if _, err := tx.ExecContext(ctx, `DELETE FROM sink_marks WHERE pipeline = ? AND source = ?`, pipeline, source); err != nil {
		return fmt.Errorf("state: commit sink progress %s/%s: %w", pipeline, source, err)
	}
	for sink, m := range marks {
		if len(m) == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sink_marks (pipeline, source, sink, records, marks) VALUES (?, ?, ?, ?, ?)`,
			pipeline, source, sink, MarkRecords(m), encodeMarks(m)); err != nil {
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
	if _, err := s.db.ExecContext(ctx, `DELETE FROM sink_marks WHERE pipeline = ?`, pipeline); err != nil {
		return fmt.Errorf("state: reset %s: %w", pipeline, err)
	}
	return nil
}
