package run

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/engine/cluster"
	"github.com/pipelinehq/pipeline/engine/plan"
)

// In a cluster (Options.Coordinator), a source is read partition by
// partition: every poll the runner lists the source's partitions, claims
// its share of those no worker holds, and reads each claimed partition from
// the checkpoint kept with its lease, with a tracker of its own whose
// commits go to that checkpoint. A partition is read until the lease is
// lost (another worker took it: stop, commit nothing more), the
// coordinator asks for it back (finish what was read, commit, release), or
// the run ends (commit, release).

func (r *Runner) addTracker(t *tracker) {
	r.trackersMu.Lock()
	r.trackers = append(r.trackers, t)
	r.trackersMu.Unlock()
}

func (r *Runner) removeTracker(t *tracker) {
	r.trackersMu.Lock()
	r.trackers = slices.DeleteFunc(r.trackers, func(x *tracker) bool { return x == t })
	r.trackersMu.Unlock()
}

// readPartitions claims and reads a source's partitions until ctx ends
// or a partition fails.
func (r *Runner) readPartitions(ctx context.Context, src *Source) error {
	co := r.opts.Coordinator
	ps, _ := src.Plugin.(plan.PartitionedSource)
	var wg sync.WaitGroup
	defer wg.Wait()
	failed := make(chan error, 1)
	for {
		parts := []string{""}
		if ps != nil {
			p, partitioned, err := ps.Partitions(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return err
			}
			if partitioned {
				parts = p
			}
		}
		claim := co.Claim
		if r.opts.Poll <= 0 {
			claim = co.ClaimAll // a complete run (a scheduled firing) reads them all
		}
		leases, err := claim(ctx, r.plan.Pipeline, src.Name, parts)
		if err != nil && ctx.Err() == nil {
			// NATS is away, or slow: the partitions held go on; claim again
			// at the next poll.
			r.opts.Logger.Warn("claiming partitions failed; trying again", "source", src.Name, "error", err)
		}
		for _, l := range leases {
			r.opts.Logger.Info("reading partition", "source", src.Name, "partition", l.Partition,
				"from_records", l.Checkpoint.Records)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := r.readLease(ctx, src, ps, l); err != nil {
					select {
					case failed <- err:
					default:
					}
				}
			}()
		}
		if r.opts.Poll <= 0 {
			// A complete run: what was claimed is read to its end, once.
			wg.Wait()
			select {
			case err := <-failed:
				return err
			default:
			}
			if err != nil && ctx.Err() == nil {
				return err
			}
			return ctx.Err()
		}
		select {
		case <-time.After(r.opts.Poll):
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readLease reads one claimed partition, again every poll, until its lease
// is lost or yielded or ctx ends.
func (r *Runner) readLease(ctx context.Context, src *Source, ps plan.PartitionedSource, l *cluster.Lease) error {
	t := &tracker{source: src.Name, sinks: len(r.plan.Sinks), lease: l}
	marks := make([][]Mark, len(r.plan.Sinks))
	for name, m := range l.Checkpoint.Marks {
		if ss := r.sinks[name]; ss != nil && len(m) > 0 {
			marks[ss.idx] = m
		}
	}
	t.resume(marks)
	t.lastPos = l.Checkpoint.Position
	r.addTracker(t)

	pctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-l.Lost():
		case <-l.Yield():
		case <-pctx.Done():
		}
		stop()
	}()
	sr := &sourceReader{r: r, src: src, t: t, schema: src.Schema, start: l.Checkpoint.Position}
	if ps != nil && l.Partition != "" {
		sr.part, sr.partition = ps, l.Partition
	}
	var err error
	for {
		if err = sr.read(pctx); err != nil || pctx.Err() != nil || r.opts.Poll <= 0 {
			break
		}
		select {
		case <-time.After(r.opts.Poll):
		case <-pctx.Done():
		}
		if pctx.Err() != nil {
			break
		}
	}
	switch {
	case closed(l.Lost()):
		// Another worker reads it now, from the last commit: what this one
		// read past it is read again there.
		r.opts.Logger.Warn("stopped reading a partition: its lease is lost", "source", src.Name, "partition", l.Partition)
		r.removeTracker(t)
		return nil
	case ctx.Err() != nil:
		return nil // the run ends: it commits and releases (releaseLeases)
	case closed(l.Yield()):
		// Hand it over clean: wait for what was read to be acked, commit,
		// then release.
		for !t.idle() && ctx.Err() == nil {
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := r.commitLease(context.WithoutCancel(ctx), t); err != nil {
			r.opts.Logger.Warn("committing a yielded partition failed", "source", src.Name, "partition", l.Partition, "error", err)
		}
		r.removeTracker(t)
		l.Release(context.WithoutCancel(ctx))
		r.opts.Logger.Info("handed a partition over", "source", src.Name, "partition", l.Partition)
		return nil
	}
	return err
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// idle reports whether every batch read so far is done.
func (t *tracker) idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.queue) == 0
}

// commitLease commits a partition's progress to its lease's checkpoint. A
// lease lost meanwhile is not an error of the run: the partition's reader
// stops, and another worker goes on from the last commit.
func (r *Runner) commitLease(ctx context.Context, t *tracker) error {
	cs, ok := t.takeCommit()
	if !ok {
		return nil
	}
	var marks map[string][]Mark
	for _, s := range r.plan.Sinks {
		ss := r.sinks[s.Name]
		if ss.idx < len(cs.marks) && len(cs.marks[ss.idx]) > 0 && r.feeds(t.source, s.Name) {
			if marks == nil {
				marks = map[string][]Mark{}
			}
			marks[s.Name] = cs.marks[ss.idx]
		}
	}
	err := t.lease.Commit(ctx, cs.position, cs.records, marks)
	if errors.Is(err, cluster.ErrLeaseLost) {
		return nil
	}
	if err != nil {
		// NATS is away: commit it again next time.
		t.mu.Lock()
		t.dirty = true
		t.records += cs.records
		t.written = nil
		t.mu.Unlock()
		r.opts.Logger.Warn("committing a partition's checkpoint failed; retrying", "source", t.source, "partition", t.lease.Partition, "error", err)
		return nil
	}
	return nil
}

// releaseLeases hands back every partition this run held, once the run's
// last commit is done, so that the next run (a restart) or another worker
// claims them at once.
func (r *Runner) releaseLeases(ctx context.Context) {
	r.trackersMu.Lock()
	trackers := slices.Clone(r.trackers)
	r.trackersMu.Unlock()
	for _, t := range trackers {
		if t.lease != nil {
			t.lease.Release(ctx)
		}
	}
}
