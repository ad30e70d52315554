package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/engine/admin"
	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/schedule"
	"github.com/pipelinehq/pipeline/engine/state"
)

// registry holds the pipelines serve runs, one entry per file: it starts
// and stops them, keeps their state and last runs for the admin API, and
// reloads the files on request.
type registry struct {
	g              *globals
	args           []string // as given to serve, expanded again on reload
	store          *state.Store
	poll, logEvery time.Duration
	ctx            context.Context // aborts everything (the second signal)
	drain          chan struct{}   // the first signal: finish and stop
	m              *serveMetrics
	log            *slog.Logger
	wg             sync.WaitGroup

	reloading sync.Mutex // one reload at a time
	mu        sync.Mutex
	entries   map[string]*entry // by file
}

// entry is one pipeline file that serve runs.
type entry struct {
	file string
	hash [32]byte // of the files it was loaded from
	cfg  *config.Pipeline
	stop chan struct{} // closed to stop it (a reload, a removed file)
	done chan struct{} // closed once it stopped

	mu     sync.Mutex
	state  string // running, idle, failed
	err    string
	runner *run.Runner
	read   int64 // records read by its finished runs
}

func newRegistry(g *globals, args []string, store *state.Store, poll, logEvery time.Duration, ctx context.Context, drain chan struct{}, m *serveMetrics, log *slog.Logger) *registry {
	return &registry{g: g, args: args, store: store, poll: poll, logEvery: logEvery, ctx: ctx, drain: drain, m: m, log: log, entries: map[string]*entry{}}
}

// hashFiles fingerprints the files a pipeline was loaded from.
func hashFiles(p *config.Pipeline) [32]byte {
	names := make([]string, 0, len(p.Files))
	for n := range p.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(p.Files[n].Bytes))
		h.Write(p.Files[n].Bytes)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// start runs a checked pipeline file until it is stopped or serve stops.
// started, when given, receives whether it could take the pipeline's run
// lock (a scheduled pipeline always can: each firing takes it).
func (r *registry) start(file string, p *config.Pipeline, started chan<- bool) *entry {
	e := &entry{file: file, hash: hashFiles(p), cfg: p, stop: make(chan struct{}), done: make(chan struct{}), state: "running"}
	if p.ScheduleSpec != nil {
		e.state = "idle"
	}
	r.mu.Lock()
	r.entries[file] = e
	r.mu.Unlock()
	// This entry's drain: serve's, or its own stop.
	drain := make(chan struct{})
	go func() {
		select {
		case <-r.drain:
		case <-e.stop:
		}
		close(drain)
	}()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(e.done)
		if p.ScheduleSpec == nil {
			ok := servePipeline(r.ctx, r.g, file, p.Name, r.store, r.poll, r.logEvery, drain, r.m, r.log, e)
			if started != nil {
				started <- ok
			}
			return
		}
		if started != nil {
			started <- true
		}
		r.log.Info("scheduled", "pipeline", p.Name, "file", file, "schedule", p.Schedule, "timezone", p.Location.String(),
			"next", schedule.Next(p.ScheduleSpec, p.Location, time.Now()).In(p.Location).Format(time.RFC3339))
		sp := &scheduledPipeline{g: r.g, file: file, p: p, store: r.store, ctx: r.ctx, drain: drain, m: r.m, log: r.log, e: e}
		sched := schedule.New(nil, r.log)
		sched.Add(sp.job())
		// The first signal (or a stop) ends the firings; a run going on
		// drains (it watches drain itself) and Run waits for it.
		schedCtx, stopScheduling := context.WithCancel(r.ctx)
		go func() {
			select {
			case <-drain:
			case <-schedCtx.Done():
			}
			stopScheduling()
		}()
		defer stopScheduling()
		if err := sched.Run(schedCtx); err != nil {
			r.log.Error("scheduler failed", "pipeline", p.Name, "error", err)
		}
	}()
	return e
}

// wait returns once every pipeline stopped.
func (r *registry) wait() { r.wg.Wait() }

// begin notes that a run of e started. (The run log is the state
// store's: run.Execute writes it.)
func (e *entry) begin(x *run.Runner) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runner, e.state, e.err = x, "running", ""
}

// end notes that the run begun last ended (or that the pipeline could not
// start: x is nil then).
func (e *entry) end(x *run.Runner, err error, interrupted bool) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if x != nil && e.runner == x {
		e.read += x.Stats.Snapshot().Read
	}
	e.runner = nil
	switch {
	case err != nil && !interrupted:
		e.state, e.err = "failed", err.Error()
	case e.cfg.ScheduleSpec != nil:
		e.state = "idle"
	}
}

// Pipelines implements admin.Backend.
func (r *registry) Pipelines() []admin.Pipeline {
	r.mu.Lock()
	entries := make([]*entry, 0, len(r.entries))
	for _, e := range r.entries {
		entries = append(entries, e)
	}
	r.mu.Unlock()
	out := make([]admin.Pipeline, 0, len(entries))
	for _, e := range entries {
		e.mu.Lock()
		p := admin.Pipeline{Name: e.cfg.Name, File: e.file, Schedule: e.cfg.Schedule, State: e.state, Error: e.err,
			Config: e.cfg, Runner: e.runner, Read: e.read}
		if e.runner != nil {
			p.Read += e.runner.Stats.Snapshot().Read
		}
		e.mu.Unlock()
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Reload implements admin.Backend: it reads the files again (the
// directories given to serve are listed again too), starts the new ones,
// restarts the changed ones once their runs drained, stops the removed
// ones, and keeps the old version of a file that has errors running.
func (r *registry) Reload(ctx context.Context) admin.ReloadReport {
	r.reloading.Lock()
	defer r.reloading.Unlock()
	// serve runs until every pipeline stopped: between stopping a changed
	// pipeline and starting its new version, none may be running.
	r.wg.Add(1)
	defer r.wg.Done()
	var rep admin.ReloadReport
	select {
	case <-r.drain:
		rep.Errors = append(rep.Errors, admin.FileErrors{Diagnostics: []admin.Diagnostic{{Severity: "error", Summary: "serve is stopping: nothing was reloaded"}}})
		return rep
	default:
	}
	files, err := pipelineFiles(r.args)
	if err != nil {
		rep.Errors = append(rep.Errors, admin.FileErrors{Diagnostics: []admin.Diagnostic{{Severity: "error", Summary: err.Error()}}})
		return rep
	}
	r.mu.Lock()
	old := make(map[string]*entry, len(r.entries))
	names := map[string]string{} // pipeline name -> file, of what keeps running
	for f, e := range r.entries {
		old[f] = e
		names[e.cfg.Name] = f
	}
	r.mu.Unlock()
	seen := map[string]bool{}
	type change struct {
		file string
		p    *config.Pipeline
		old  *entry
	}
	var changes []change
	for _, f := range files {
		seen[f] = true
		p, diags := config.Load(f)
		if diags.HasErrors() {
			rep.Errors = append(rep.Errors, admin.FileErrors{File: f, Diagnostics: diagsJSON(diags)})
			continue
		}
		e := old[f]
		if e != nil && e.hash == hashFiles(p) {
			rep.Unchanged = append(rep.Unchanged, p.Name)
			continue
		}
		if other, ok := names[p.Name]; ok && other != f {
			rep.Errors = append(rep.Errors, admin.FileErrors{File: f, Diagnostics: []admin.Diagnostic{{Severity: "error",
				Summary: fmt.Sprintf("pipeline %q is already defined in %s: each pipeline's name must be unique", p.Name, other), File: f}}})
			continue
		}
		names[p.Name] = f
		changes = append(changes, change{f, p, e})
	}
	for f, e := range old {
		if !seen[f] {
			r.stopEntry(e)
			r.mu.Lock()
			delete(r.entries, f)
			r.mu.Unlock()
			rep.Removed = append(rep.Removed, e.cfg.Name)
			r.log.Info("pipeline removed on reload", "pipeline", e.cfg.Name, "file", f)
		}
	}
	for _, c := range changes {
		if c.old != nil {
			r.stopEntry(c.old)
			rep.Reloaded = append(rep.Reloaded, c.p.Name)
			r.log.Info("pipeline reloaded", "pipeline", c.p.Name, "file", c.file)
		} else {
			rep.Added = append(rep.Added, c.p.Name)
			r.log.Info("pipeline added on reload", "pipeline", c.p.Name, "file", c.file)
		}
		ne := r.start(c.file, c.p, nil)
		if c.old != nil {
			// The rate goes on counting from the version it replaces.
			c.old.mu.Lock()
			read := c.old.read
			c.old.mu.Unlock()
			ne.mu.Lock()
			ne.read += read
			ne.mu.Unlock()
		}
	}
	return rep
}

// stopEntry stops a pipeline and waits until its run drained.
func (r *registry) stopEntry(e *entry) {
	close(e.stop)
	<-e.done
}

// diagsJSON turns HCL diagnostics into the API's form.
func diagsJSON(diags hcl.Diagnostics) []admin.Diagnostic {
	out := make([]admin.Diagnostic, 0, len(diags))
	for _, d := range config.SortDiagnostics(diags) {
		j := admin.Diagnostic{Severity: "error", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hcl.DiagWarning {
			j.Severity = "warning"
		}
		if d.Subject != nil {
			j.File, j.Line, j.Column = d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column
		}
		out = append(out, j)
	}
	return out
}

// adminToken is the admin API's token: PIPELINE_ADMIN_TOKEN, or on a
// loopback address without it a random one, logged once.
func adminToken() string { return os.Getenv("PIPELINE_ADMIN_TOKEN") }
