package run

import (
	"context"
	"fmt"
	"time"

	"github.com/pipelinehq/pipeline/engine/cluster"
)

// A source with shared state (plan.Source.Shared: a push source on a
// cluster, whose inbox every worker shares) is read on every worker at
// once, without a lease or a checkpoint: the state hands each stored entry
// to one worker, numbered in this worker's session. A commit tells the
// state the position every sink acked, instead of writing a checkpoint, and
// the state forgets what is at or before it. What this worker read and did
// not commit (it was killed, its sinks failed) goes to another worker, by
// the state's own means (a JetStream consumer's ack wait, engine/cluster).

// readShared reads a source whose state the cluster's workers share, until
// ctx ends or the source fails.
func (r *Runner) readShared(ctx context.Context, src *Source) error {
	t := &tracker{source: src.Name, sinks: len(r.plan.Sinks), shared: src.Shared}
	r.addTracker(t)
	// Positions are the session's own: the source starts from none.
	return r.readSource(ctx, src, t, nil)
}

// commitShared tells a shared source's state what is done. A failure
// (NATS is away) is retried at the next commit: the state is told the same
// position, or a later one, again.
func (r *Runner) commitShared(ctx context.Context, t *tracker) {
	cs, ok := t.takeCommit()
	if !ok || cs.position == nil {
		return
	}
	if err := t.shared.Committed(ctx, cs.position); err != nil {
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
		r.opts.Logger.Warn("telling the shared state of a source what is committed failed; retrying", "source", t.source, "error", err)
	}
}

// unsharedPush is the error of a push source on a cluster without shared
// state: one worker would keep what it accepts in its own state file.
func unsharedPush(src *Source) error {
	return fmt.Errorf("source %s is a push source: on a cluster it needs the inbox the workers share (LoadOptions.SourceState)", src.Name)
}

// inboxProgress is a shared state that counts what its push source stored
// (engine/cluster's InboxService): the store's inbox counts know nothing
// of it.
type inboxProgress interface {
	Progress() cluster.InboxProgress
}

// watchShared makes snapshots report the push sources whose inbox the
// cluster's workers share, as their state counts them.
func (s *Stats) watchShared(sources []*Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.push == nil {
		return
	}
	for _, src := range sources {
		if ip, ok := src.Shared.(inboxProgress); ok {
			if s.push.shared == nil {
				s.push.shared = map[string]inboxProgress{}
			}
			s.push.shared[src.Name] = ip
		}
	}
}

// addShared puts the shared push sources' counts in a snapshot: what this
// worker's source stored during the run, and what the cluster's inbox
// holds.
func (w *pushWatch) addShared(out map[string]PushProgress) {
	for name, ip := range w.shared {
		ps := ip.Progress()
		p := out[name]
		p.Accepted, p.Pending = ps.Accepted, ps.Pending
		p.OldestPending = 0
		if !ps.Oldest.IsZero() {
			p.OldestPending = time.Since(ps.Oldest).Seconds()
		}
		out[name] = p
	}
}
