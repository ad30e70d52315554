package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Pausing a sink (`pipeline pause`, the admin API of `pipeline serve`):
// while a sink is paused its outbox still stores what the sink enqueues
// (the batches are acked as usual, nothing is lost), but Lease hands out
// nothing and Enqueue leases nothing, so no delivery goes out until the
// sink is resumed. The pause is a row of paused_sinks, so it holds across
// restarts and is seen by every process on the state file: an outbox
// session reads it at most pauseTTL late, at once when the pause or resume
// went through a Store of the same process.

const pauseSchema = `
CREATE TABLE IF NOT EXISTS paused_sinks (
	pipeline   TEXT NOT NULL,
	sink       TEXT NOT NULL,
	paused_at  INTEGER NOT NULL,            -- unix ms
	PRIMARY KEY (pipeline, sink)
);`

// pauseTTL is how long an outbox session trusts the paused flag it read:
// a pause set by another process (the CLI) is seen this late at most.
const pauseTTL = 500 * time.Millisecond

// pausedRetry is how far ahead Lease says the next delivery is due while
// its sink is paused, so that the sink's loop asks again (it waits at most
// a second between leases anyway).
const pausedRetry = time.Second

// pauseGen counts the pauses and resumes made in this process, through any
// Store: a session whose cached flag is of an older generation reads it
// again. (Counting for all stores of the process keeps Store unchanged and
// only costs a store that was not concerned one more read.)
var pauseGen atomic.Uint64

// pauseCache is an outbox session's view of whether its sink is paused.
type pauseCache struct {
	mu     sync.Mutex
	read   time.Time // when it was read (zero: never)
	gen    uint64    // pauseGen when it was read
	paused bool
	// last is the last value read, for Progress (which reads no store).
	last atomic.Bool
}

// PauseSink pauses a pipeline's sink: its deliveries stay in its outbox,
// pending, until ResumeSink. Pausing a paused sink changes nothing (it
// keeps the time it was first paused).
func (s *Store) PauseSink(ctx context.Context, pipeline, sink string, now time.Time) error {
	if pipeline == "" || sink == "" {
		return errors.New("state: pause: a pipeline and a sink name are needed")
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO paused_sinks (pipeline, sink, paused_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		pipeline, sink, ms(now))
	pauseGen.Add(1)
	if err != nil {
		return fmt.Errorf("state: pause %s/%s: %w", pipeline, sink, err)
	}
	return nil
}

// ResumeSink resumes a paused sink: what is pending in its outbox goes out
// again. Resuming a sink that is not paused changes nothing.
func (s *Store) ResumeSink(ctx context.Context, pipeline, sink string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM paused_sinks WHERE pipeline = ? AND sink = ?`, pipeline, sink)
	pauseGen.Add(1)
	if err != nil {
		return fmt.Errorf("state: resume %s/%s: %w", pipeline, sink, err)
	}
	return nil
}

// PausedSinks returns every paused sink with when it was paused.
func (s *Store) PausedSinks(ctx context.Context) (map[SinkKey]time.Time, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT pipeline, sink, paused_at FROM paused_sinks`)
	if err != nil {
		return nil, fmt.Errorf("state: list paused sinks: %w", err)
	}
	defer rows.Close()
	out := map[SinkKey]time.Time{}
	for rows.Next() {
		var k SinkKey
		var at int64
		if err := rows.Scan(&k.Pipeline, &k.Sink, &at); err != nil {
			return nil, fmt.Errorf("state: list paused sinks: %w", err)
		}
		out[k] = time.UnixMilli(at).UTC()
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list paused sinks: %w", err)
	}
	return out, nil
}

// Paused reports whether the session's sink is paused, as read at most
// pauseTTL ago (or since the last pause or resume of this process). It must
// not be called inside a transaction of the store: the store has one
// connection.
func (o *Outbox) Paused(ctx context.Context) (bool, error) {
	c := &o.pause
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := pauseGen.Load()
	if !c.read.IsZero() && c.gen == gen && time.Since(c.read) < pauseTTL {
		return c.paused, nil
	}
	var paused bool
	err := o.s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM paused_sinks WHERE pipeline = ? AND sink = ?)`,
		o.pipeline, o.sink).Scan(&paused)
	if err != nil {
		return false, o.wrap("paused", err)
	}
	// gen was loaded before the read: a pause that came in meanwhile makes
	// the next call read again.
	c.read, c.gen, c.paused = time.Now(), gen, paused
	c.last.Store(paused)
	return paused, nil
}
