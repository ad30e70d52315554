package admin

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/state"
)

// pipelineJSON is a pipeline as GET /api/pipelines shows it.
type pipelineJSON struct {
	Name        string           `json:"name"`
	File        string           `json:"file"`
	Schedule    string           `json:"schedule"`
	State       string           `json:"state"`
	Error       string           `json:"error,omitempty"`
	Rate        float64          `json:"rate"`
	LastRun     *Run             `json:"last_run"`
	Checkpoints []checkpointJSON `json:"checkpoints"`
	Sinks       []sinkJSON       `json:"sinks"`
	// GET /api/pipelines/{name} only.
	Graph *graphJSON `json:"graph,omitempty"`
	Runs  *[]Run     `json:"runs,omitempty"`
}

type checkpointJSON struct {
	Source    string    `json:"source"`
	Records   int64     `json:"records"`
	UpdatedAt time.Time `json:"updated_at"`
	Position  string    `json:"position"`
}

type sinkJSON struct {
	Name       string        `json:"name"`
	Type       string        `json:"type"`
	Action     bool          `json:"action"`
	Paused     bool          `json:"paused"`
	PausedAt   *time.Time    `json:"paused_at,omitempty"`
	Deliveries countsJSON    `json:"deliveries"`
	Circuits   []circuitJSON `json:"circuits"`
}

type countsJSON struct {
	Pending   int `json:"pending"`
	Retrying  int `json:"retrying"`
	Delivered int `json:"delivered"`
	Dead      int `json:"dead"`
}

type circuitJSON struct {
	Endpoint string     `json:"endpoint"`
	State    string     `json:"state"`
	Until    *time.Time `json:"until,omitempty"`
	Reason   string     `json:"reason,omitempty"`
}

type graphJSON struct {
	Nodes []nodeJSON `json:"nodes"`
	Edges []edgeJSON `json:"edges"`
}

type nodeJSON struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	Name string `json:"name"`
	Type string `json:"type"`
}

type edgeJSON struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func (s *Server) listPipelines(w http.ResponseWriter, r *http.Request) error {
	ps := s.opts.Backend.Pipelines()
	out := make([]pipelineJSON, 0, len(ps))
	for _, p := range ps {
		pj, err := s.pipeline(r, p, false)
		if err != nil {
			return err
		}
		out = append(out, pj)
	}
	writeJSON(w, http.StatusOK, map[string]any{"pipelines": out})
	return nil
}

func (s *Server) getPipeline(w http.ResponseWriter, r *http.Request) error {
	p, err := s.find(r.PathValue("name"))
	if err != nil {
		return err
	}
	pj, err := s.pipeline(r, p, true)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pj)
	return nil
}

// find returns the pipeline named name, or a 404.
func (s *Server) find(name string) (Pipeline, error) {
	for _, p := range s.opts.Backend.Pipelines() {
		if p.Name == name {
			return p, nil
		}
	}
	return Pipeline{}, errorf(http.StatusNotFound, "no pipeline %q", name)
}

// pipeline puts together what serve knows of p and what the state store
// holds for it.
func (s *Server) pipeline(r *http.Request, p Pipeline, detail bool) (pipelineJSON, error) {
	ctx := r.Context()
	now := s.opts.Now()
	pj := pipelineJSON{Name: p.Name, File: p.File, Schedule: p.Schedule, State: p.State, Error: p.Error,
		Checkpoints: []checkpointJSON{}, Sinks: []sinkJSON{}}
	if rate, ok := s.rates.rate(p.Name, now, p.Read); ok {
		pj.Rate = rate
	} else if p.Runner != nil {
		pj.Rate = p.Runner.Stats.Snapshot().Rate
	}
	limit := 1
	if detail {
		limit = runsShown
	}
	runs, err := s.runs(ctx, p, limit)
	if err != nil {
		return pj, err
	}
	if len(runs) > 0 {
		pj.LastRun = &runs[0]
	}
	cps, err := s.deliveries().List(ctx, p.Name)
	if err != nil {
		return pj, err
	}
	for _, c := range cps {
		pj.Checkpoints = append(pj.Checkpoints, checkpointJSON{Source: c.Source, Records: c.Records, UpdatedAt: c.UpdatedAt.UTC(), Position: position(c.Position)})
	}
	paused, err := s.opts.Store.PausedSinks(ctx)
	if err != nil {
		return pj, err
	}
	summary, err := s.deliveries().Summary(ctx, state.DeliveryFilter{Pipeline: p.Name})
	if err != nil {
		return pj, err
	}
	action := map[string]bool{}
	if p.Runner != nil {
		for _, sk := range p.Runner.Plan().Sinks {
			// Every sink gets an outbox; action sinks use it.
			action[sk.Name] = sk.Outbox != nil && sk.Outbox.Progress().Used()
		}
	}
	if p.Config != nil {
		for _, sk := range p.Config.Sinks {
			sj := sinkJSON{Name: sk.Name, Type: sk.Type, Action: action[sk.Name], Circuits: []circuitJSON{}}
			if s.opts.Pauses != nil {
				if on, err := s.opts.Pauses.IsPaused(ctx, p.Name, sk.Name); err == nil && on {
					sj.Paused = true // (the cluster's flag keeps no time)
				}
			} else if at, ok := paused[state.SinkKey{Pipeline: p.Name, Sink: sk.Name}]; ok {
				sj.Paused, sj.PausedAt = true, utc(at)
			}
			for _, e := range summary {
				if e.Sink != sk.Name {
					continue
				}
				sj.Action = true // it has an outbox
				sj.Deliveries.Pending += e.Pending
				sj.Deliveries.Retrying += e.Retrying
				sj.Deliveries.Delivered += e.Delivered
				sj.Deliveries.Dead += e.Dead
				if e.Circuit != "" && e.Circuit != "closed" {
					sj.Circuits = append(sj.Circuits, circuitJSON{Endpoint: redactURL(e.Endpoint), State: e.Circuit, Until: e.CircuitUntil, Reason: e.CircuitReason})
				}
			}
			if sj.Paused && pj.State != "failed" {
				pj.State = "paused"
			}
			pj.Sinks = append(pj.Sinks, sj)
		}
	}
	if detail {
		pj.Runs = &runs
		pj.Graph = graph(p.Config)
	}
	return pj, nil
}

func utc(t time.Time) *time.Time {
	t = t.UTC()
	return &t
}

// position shows a checkpoint's position: as text when it is text,
// base64 otherwise.
func position(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// graph lists p's blocks and who reads whom.
func graph(p *config.Pipeline) *graphJSON {
	g := &graphJSON{Nodes: []nodeJSON{}, Edges: []edgeJSON{}}
	if p == nil {
		return g
	}
	add := func(b *config.Block, inputs []config.Input) {
		g.Nodes = append(g.Nodes, nodeJSON{ID: b.Addr(), Kind: string(b.Kind), Name: b.Name, Type: b.Type})
		for _, in := range inputs {
			g.Edges = append(g.Edges, edgeJSON{From: in.Node.Addr(), To: b.Addr()})
		}
	}
	for _, src := range p.Sources {
		add(&src.Block, nil)
	}
	for _, st := range p.Stages {
		switch n := st.(type) {
		case *config.Filter:
			add(&n.Block, n.Inputs)
		case *config.Transform:
			add(&n.Block, n.Inputs)
		}
	}
	for _, sk := range p.Sinks {
		add(&sk.Block, sk.Inputs)
	}
	return g
}

// redactURL hides what an endpoint URL may carry as a credential: the
// password of its userinfo and query values with secret-looking names.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			if run.SecretName(k) {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}
