package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipelinehq/pipeline/engine/state"
)

// ErrLeaseLost is returned by a Lease's Commit once another worker holds
// the partition: nothing was written.
var ErrLeaseLost = errors.New("cluster: the partition's lease is lost (another worker holds it now)")

// Checkpoint is a partition's committed progress, as kept in the
// checkpoints bucket.
type Checkpoint struct {
	Pipeline  string                  `json:"pipeline"`
	Source    string                  `json:"source"`
	Partition string                  `json:"partition"`
	Position  []byte                  `json:"position,omitempty"`
	Records   int64                   `json:"records"`
	Marks     map[string][]state.Mark `json:"marks,omitempty"`
	// Token fences writers: the lease (its revision in the leases bucket)
	// of the worker that wrote last. A lease taken later has a greater
	// one, and its holder writes it here before reading from Position, so
	// an earlier holder's Commit finds another token and writes nothing.
	Token     uint64    `json:"token"`
	Worker    string    `json:"worker,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

type leaseValue struct {
	Worker string    `json:"worker"`
	At     time.Time `json:"at"`
}

// maxSettle bounds how long a new worker waits before it claims.
const maxSettle = 2 * time.Second

func key(pipeline, source, partition string) string {
	return Token(pipeline) + "." + Token(source) + "." + Token(partition)
}

// Coordinator is one worker's part in sharing partitions: it keeps the
// worker's presence and its leases renewed until Close.
type Coordinator struct {
	c      *Cluster
	cancel context.CancelFunc
	done   chan struct{}
	ready  chan struct{} // closed once the worker has been visible for settle

	mu   sync.Mutex
	held map[string]*Lease // by key
}

// Coordinator registers this worker and starts renewing its presence and
// leases every LeaseTTL/3. A worker claims nothing for its first renewal
// interval (at most maxSettle), so that workers started together see each
// other before they share out partitions.
func (c *Cluster) Coordinator(ctx context.Context) (*Coordinator, error) {
	if err := c.retryStart(ctx, time.Now().Add(c.opts.StartWait), "registering this worker", c.present); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	co := &Coordinator{c: c, cancel: cancel, done: make(chan struct{}), ready: make(chan struct{}), held: map[string]*Lease{}}
	go co.loop(ctx)
	return co, nil
}

func (c *Cluster) present(ctx context.Context) error {
	v, _ := json.Marshal(leaseValue{Worker: c.opts.Worker, At: time.Now().UTC()})
	if _, err := c.workers.Put(ctx, Token(c.opts.Worker), v); err != nil {
		return fmt.Errorf("cluster: registering worker %s: %w", c.opts.Worker, err)
	}
	return nil
}

// Workers lists the live workers: those that renewed their presence within
// LeaseTTL.
func (c *Cluster) Workers(ctx context.Context) ([]string, error) {
	keys, err := c.workers.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range keys.Keys() {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

func (co *Coordinator) loop(ctx context.Context) {
	defer close(co.done)
	every := co.c.opts.LeaseTTL / 3
	settle := time.NewTimer(min(every, maxSettle))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-settle.C:
			close(co.ready)
		case <-tick.C:
			if err := co.c.present(ctx); err != nil && ctx.Err() == nil {
				co.c.log.Warn("renewing this worker's presence failed; retrying", "error", err)
			}
			co.renew(ctx)
		}
	}
}

// renew renews every lease held; one that another worker took, or that
// could not be renewed for LeaseTTL (it may have expired and been taken),
// is lost.
func (co *Coordinator) renew(ctx context.Context) {
	co.mu.Lock()
	leases := make([]*Lease, 0, len(co.held))
	for _, l := range co.held {
		leases = append(leases, l)
	}
	co.mu.Unlock()
	for _, l := range leases {
		err := l.renew(ctx)
		switch {
		case err == nil:
		case errors.Is(err, ErrLeaseLost) || time.Since(l.renewed()) >= co.c.opts.LeaseTTL:
			co.c.log.Warn("lost the lease of a partition", "pipeline", l.Pipeline, "source", l.Source, "partition", l.Partition, "error", err)
			co.drop(l)
		default:
			if ctx.Err() == nil {
				co.c.log.Warn("renewing a lease failed; retrying", "pipeline", l.Pipeline, "source", l.Source, "partition", l.Partition, "error", err)
			}
		}
	}
}

func (co *Coordinator) drop(l *Lease) {
	co.mu.Lock()
	if co.held[l.key] == l {
		delete(co.held, l.key)
	}
	co.mu.Unlock()
	l.lose()
}

// Close stops renewing and releases every lease still held, so that other
// workers take the partitions over at once instead of after LeaseTTL; the
// worker's presence is removed too. The caller has committed what it could.
func (co *Coordinator) Close(ctx context.Context) {
	co.cancel()
	<-co.done
	co.mu.Lock()
	leases := make([]*Lease, 0, len(co.held))
	for _, l := range co.held {
		leases = append(leases, l)
	}
	co.mu.Unlock()
	for _, l := range leases {
		l.Release(ctx)
	}
	co.c.workers.Delete(ctx, Token(co.c.opts.Worker))
}

// Claim takes leases on the partitions of a source that no worker holds,
// up to this worker's share (the partitions divided by the live workers,
// rounded up), and returns the new ones, each with the checkpoint it
// resumes from. Leases beyond the share (more workers came) are asked to
// yield. Claim returns nothing until the worker has been present for one
// renewal interval.
func (co *Coordinator) Claim(ctx context.Context, pipeline, source string, partitions []string) ([]*Lease, error) {
	return co.claim(ctx, pipeline, source, partitions, false)
}

// ClaimAll takes the leases of every partition of a source that no worker
// holds, at once: for a complete run of the source by one worker (a
// scheduled pipeline's firing), which shares nothing out.
func (co *Coordinator) ClaimAll(ctx context.Context, pipeline, source string, partitions []string) ([]*Lease, error) {
	return co.claim(ctx, pipeline, source, partitions, true)
}

func (co *Coordinator) claim(ctx context.Context, pipeline, source string, partitions []string, all bool) ([]*Lease, error) {
	share := len(partitions)
	if !all {
		select {
		case <-co.ready:
		default:
			return nil, nil
		}
		workers, err := co.c.Workers(ctx)
		if err != nil {
			return nil, fmt.Errorf("cluster: listing workers: %w", err)
		}
		w := max(len(workers), 1)
		share = (len(partitions) + w - 1) / w
	}
	co.mu.Lock()
	var mine []*Lease
	for _, l := range co.held {
		if l.Pipeline == pipeline && l.Source == source {
			mine = append(mine, l)
		}
	}
	co.mu.Unlock()
	if len(mine) > share {
		// Yield the extra ones, last partitions first, so that each
		// worker's share is stable.
		slices.SortFunc(mine, func(a, b *Lease) int { return -compareStr(a.Partition, b.Partition) })
		for _, l := range mine[:len(mine)-share] {
			l.askYield()
		}
	}
	held := len(mine)
	// Start at a place that depends on the worker, so that workers claiming
	// at once try different partitions first.
	h := fnv.New32a()
	h.Write([]byte(co.c.opts.Worker))
	start := 0
	if len(partitions) > 0 {
		start = int(h.Sum32() % uint32(len(partitions)))
	}
	var got []*Lease
	for i := range partitions {
		if held >= share {
			break
		}
		p := partitions[(start+i)%len(partitions)]
		k := key(pipeline, source, p)
		co.mu.Lock()
		_, have := co.held[k]
		co.mu.Unlock()
		if have {
			continue
		}
		l, err := co.acquire(ctx, pipeline, source, p)
		if err != nil {
			return got, err
		}
		if l == nil {
			continue // another worker holds it
		}
		got = append(got, l)
		held++
	}
	return got, nil
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// acquire takes the lease of one partition if no worker holds it (nil if
// one does), then claims its checkpoint with the lease's token.
func (co *Coordinator) acquire(ctx context.Context, pipeline, source, partition string) (*Lease, error) {
	c := co.c
	k := key(pipeline, source, partition)
	v, _ := json.Marshal(leaseValue{Worker: c.opts.Worker, At: time.Now().UTC()})
	rev, err := c.leases.Create(ctx, k, v)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: taking the lease of %s/%s partition %q: %w", pipeline, source, partition, err)
	}
	l := &Lease{Pipeline: pipeline, Source: source, Partition: partition, c: c, key: k, token: rev, rev: rev,
		lost: make(chan struct{}), yield: make(chan struct{})}
	l.lastRenew = time.Now()
	cp, err := l.claim(ctx)
	if err != nil {
		l.Release(ctx)
		if errors.Is(err, ErrLeaseLost) {
			return nil, nil
		}
		return nil, err
	}
	l.Checkpoint = cp
	co.mu.Lock()
	co.held[k] = l
	co.mu.Unlock()
	l.co = co
	return l, nil
}

// Lease is this worker's hold on one partition.
type Lease struct {
	Pipeline, Source, Partition string
	// Checkpoint is where reading resumes: the partition's progress when
	// the lease was taken.
	Checkpoint Checkpoint

	c     *Cluster
	co    *Coordinator
	key   string
	token uint64

	mu        sync.Mutex
	rev       uint64 // of the lease entry
	lastRenew time.Time
	lost      chan struct{}
	yield     chan struct{}
	lostOnce  sync.Once
	yieldOnce sync.Once
}

// Lost is closed when the lease is lost: stop reading the partition; its
// Commits fail.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Yield is closed when the coordinator asks for the partition back (more
// workers share the source now): stop reading, commit, then Release.
func (l *Lease) Yield() <-chan struct{} { return l.yield }

// Token is the lease's fencing token.
func (l *Lease) Token() uint64 { return l.token }

func (l *Lease) lose()     { l.lostOnce.Do(func() { close(l.lost) }) }
func (l *Lease) askYield() { l.yieldOnce.Do(func() { close(l.yield) }) }

func (l *Lease) renewed() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastRenew
}

func (l *Lease) renew(ctx context.Context) error {
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	v, _ := json.Marshal(leaseValue{Worker: l.c.opts.Worker, At: time.Now().UTC()})
	next, err := l.c.leases.Update(ctx, l.key, v, rev)
	if err != nil {
		if isWrongRevision(err) || errors.Is(err, jetstream.ErrKeyNotFound) {
			return ErrLeaseLost
		}
		return err
	}
	l.mu.Lock()
	l.rev, l.lastRenew = next, time.Now()
	l.mu.Unlock()
	return nil
}

// isWrongRevision reports a compare-and-set that found another revision.
func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// claim writes the lease's token into the partition's checkpoint (keeping
// its progress) and returns it: from then on only this lease commits it.
func (l *Lease) claim(ctx context.Context) (Checkpoint, error) {
	for {
		cp, rev, err := l.c.getCheckpoint(ctx, l.Pipeline, l.Source, l.Partition)
		if err != nil {
			return Checkpoint{}, err
		}
		if cp.Token > l.token {
			return Checkpoint{}, ErrLeaseLost
		}
		cp.Pipeline, cp.Source, cp.Partition = l.Pipeline, l.Source, l.Partition
		cp.Token, cp.Worker, cp.UpdatedAt = l.token, l.c.opts.Worker, time.Now().UTC()
		err = l.c.putCheckpoint(ctx, l.key, cp, rev)
		if err == nil {
			return cp, nil
		}
		if !isWrongRevision(err) && !errors.Is(err, jetstream.ErrKeyExists) {
			return Checkpoint{}, err
		}
		// An earlier holder committed meanwhile: read again.
	}
}

// Commit records the partition's new position (nil: none yet) and the
// batches past it each sink acked, as state.Store.CommitProgress does for
// one machine: records adds to the count, marks replaces the sinks'
// progress. It writes only while the checkpoint carries this lease's
// token, with compare-and-set on the entry's revision, so a position never
// goes back to an earlier holder's; ErrLeaseLost once another holds it.
func (l *Lease) Commit(ctx context.Context, position []byte, records int64, marks map[string][]state.Mark) error {
	for {
		cp, rev, err := l.c.getCheckpoint(ctx, l.Pipeline, l.Source, l.Partition)
		if err != nil {
			return err
		}
		if cp.Token != l.token {
			if l.co != nil {
				l.co.drop(l)
			}
			return ErrLeaseLost
		}
		if position != nil {
			cp.Position = position
			cp.Records += records
		}
		cp.Marks = marks
		cp.Worker, cp.UpdatedAt = l.c.opts.Worker, time.Now().UTC()
		err = l.c.putCheckpoint(ctx, l.key, cp, rev)
		if err == nil {
			return nil
		}
		if !isWrongRevision(err) {
			return err
		}
	}
}

// Release hands the partition back: its lease is deleted (if this worker
// still holds it), so another worker may take it at once.
func (l *Lease) Release(ctx context.Context) error {
	if l.co != nil {
		l.co.mu.Lock()
		if l.co.held[l.key] == l {
			delete(l.co.held, l.key)
		}
		l.co.mu.Unlock()
	}
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	l.lose()
	err := l.c.leases.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if err != nil && (isWrongRevision(err) || errors.Is(err, jetstream.ErrKeyNotFound)) {
		return nil // not ours any more
	}
	return err
}

// getCheckpoint reads a partition's checkpoint and its entry's revision
// (0 when there is none yet).
func (c *Cluster) getCheckpoint(ctx context.Context, pipeline, source, partition string) (Checkpoint, uint64, error) {
	e, err := c.checkpoints.Get(ctx, key(pipeline, source, partition))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Checkpoint{Pipeline: pipeline, Source: source, Partition: partition}, 0, nil
	}
	if err != nil {
		return Checkpoint{}, 0, fmt.Errorf("cluster: reading the checkpoint of %s/%s partition %q: %w", pipeline, source, partition, err)
	}
	var cp Checkpoint
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return Checkpoint{}, 0, fmt.Errorf("cluster: the checkpoint of %s/%s partition %q is not valid: %w", pipeline, source, partition, err)
	}
	return cp, e.Revision(), nil
}

func (c *Cluster) putCheckpoint(ctx context.Context, k string, cp Checkpoint, rev uint64) error {
	v, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = c.checkpoints.Create(ctx, k, v)
	} else {
		_, err = c.checkpoints.Update(ctx, k, v, rev)
	}
	return err
}

// Checkpoints lists the checkpoints of a pipeline (every pipeline's when
// pipeline is ""), for `pipeline state show --cluster`.
func (c *Cluster) Checkpoints(ctx context.Context, pipeline string) ([]Checkpoint, error) {
	keys, err := c.checkpoints.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: listing checkpoints: %w", err)
	}
	var out []Checkpoint
	for k := range keys.Keys() {
		e, err := c.checkpoints.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: reading checkpoint %s: %w", k, err)
		}
		var cp Checkpoint
		if err := json.Unmarshal(e.Value(), &cp); err != nil {
			return nil, fmt.Errorf("cluster: checkpoint %s is not valid: %w", k, err)
		}
		if pipeline == "" || cp.Pipeline == pipeline {
			out = append(out, cp)
		}
	}
	slices.SortFunc(out, func(a, b Checkpoint) int {
		if a.Pipeline != b.Pipeline {
			return compareStr(a.Pipeline, b.Pipeline)
		}
		if a.Source != b.Source {
			return compareStr(a.Source, b.Source)
		}
		return compareStr(a.Partition, b.Partition)
	})
	return out, nil
}

// ResetCheckpoints forgets a pipeline's checkpoints, so that its
// partitions are read from the start again; it returns how many. Workers
// holding its partitions find their leases' tokens gone at their next
// Commit and stop reading them.
func (c *Cluster) ResetCheckpoints(ctx context.Context, pipeline string) (int, error) {
	cps, err := c.Checkpoints(ctx, pipeline)
	if err != nil {
		return 0, err
	}
	for _, cp := range cps {
		if err := c.checkpoints.Purge(ctx, key(cp.Pipeline, cp.Source, cp.Partition)); err != nil {
			return 0, fmt.Errorf("cluster: resetting %s/%s partition %q: %w", cp.Pipeline, cp.Source, cp.Partition, err)
		}
	}
	return len(cps), nil
}

// firingsTTL is how long a firing of a scheduled pipeline stays taken:
// longer than workers' clocks ever differ, and than a missed firing is
// caught up.
const firingsTTL = 48 * time.Hour

// TakeFiring says whether this worker runs the firing of a scheduled
// pipeline due at at: the first worker to ask takes it, the others are
// told no. Every worker's scheduler fires; one runs.
func (c *Cluster) TakeFiring(ctx context.Context, pipeline string, at time.Time) (bool, error) {
	c.firingsMu.Lock()
	if c.firings == nil {
		b, err := c.bucket(ctx, c.opts.Prefix+"_firings", "pipeline: which worker runs each firing of a scheduled pipeline", firingsTTL)
		if err != nil {
			c.firingsMu.Unlock()
			return false, err
		}
		c.firings = b
	}
	kv := c.firings
	c.firingsMu.Unlock()
	v, _ := json.Marshal(leaseValue{Worker: c.opts.Worker, At: time.Now().UTC()})
	_, err := kv.Create(ctx, Token(pipeline)+"."+strconv.FormatInt(at.Unix(), 10), v)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cluster: taking the firing of %s at %s: %w", pipeline, at.Format(time.RFC3339), err)
	}
	return true, nil
}
