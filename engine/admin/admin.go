// Package admin is the admin HTTP API and web console of `pipeline serve`:
// the pipelines and their health, the delivery log with replay, pausing a
// sink, reloading the files, a live tail of any node, and /metrics and
// /healthz, all on one listener. Every /api request needs the bearer
// token; the console's static files do not (it asks for the token).
//
// The API is documented in openapi.json (served at /api/openapi.json); a
// test checks the handlers' answers against it.
package admin

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/engine/state"
)

// Backend is what serve tells the API about the pipelines it runs.
type Backend interface {
	// Pipelines lists the pipelines serve runs, sorted by name.
	Pipelines() []Pipeline
	// Reload reads the pipeline files again and applies what changed; a
	// file with errors is reported and its old version keeps running.
	Reload(ctx context.Context) ReloadReport
}

// Pipeline is one pipeline as serve runs it.
type Pipeline struct {
	Name     string
	File     string
	Schedule string
	// State is "running", "idle" (a scheduled pipeline between firings)
	// or "failed" (its last run failed; serve restarts it). The API says
	// "paused" when one of its sinks is paused.
	State string
	Error string
	// Config is the version of the file that runs.
	Config *config.Pipeline
	// Runner is the run going on, nil between runs. (The runs themselves
	// are in the state store's run log.)
	Runner *run.Runner
	// Read counts the records read by every run serve made of it, for
	// the rate.
	Read int64
}

// Run is one run of a pipeline.
type Run struct {
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	Outcome   string     `json:"outcome"` // running, succeeded, failed, interrupted
	Error     string     `json:"error,omitempty"`
	Counts    Counts     `json:"counts"`
}

// Counts are a run's counters.
type Counts struct {
	Read      int64 `json:"read"`
	Filtered  int64 `json:"filtered"`
	Skipped   int64 `json:"skipped"`
	Rejected  int64 `json:"rejected"`
	Delivered int64 `json:"delivered"`
}

// runsShown is how many runs GET /api/pipelines/{name} lists.
const runsShown = 20

// runs reads a pipeline's last runs from the run log; the one going on
// gets its live counters.
func (s *Server) runs(ctx context.Context, p Pipeline, limit int) ([]Run, error) {
	recs, err := s.opts.Store.Runs(ctx, p.Name, limit)
	if err != nil {
		return nil, err
	}
	out := make([]Run, 0, len(recs))
	for i, r := range recs {
		run := Run{StartedAt: r.StartedAt, Outcome: r.Outcome, Error: r.Error, Counts: Counts{Read: r.Counts.Read,
			Filtered: r.Counts.Filtered, Skipped: r.Counts.Skipped, Rejected: r.Counts.Rejected, Delivered: r.Counts.Delivered}}
		if !r.EndedAt.IsZero() {
			run.EndedAt = &r.EndedAt
		}
		if i == 0 && r.Outcome == "running" && p.Runner != nil {
			snap := p.Runner.Stats.Snapshot()
			run.Counts = Counts{Read: snap.Read, Filtered: snap.Filtered, Skipped: snap.Skipped, Rejected: snap.Rejected, Delivered: snap.Delivered}
		}
		out = append(out, run)
	}
	return out, nil
}

// ReloadReport says what a reload did.
type ReloadReport struct {
	Added     []string     `json:"added"`
	Reloaded  []string     `json:"reloaded"`
	Unchanged []string     `json:"unchanged"`
	Removed   []string     `json:"removed"`
	Errors    []FileErrors `json:"errors"`
}

// FileErrors are the diagnostics of a file that did not load.
type FileErrors struct {
	File        string       `json:"file"`
	Diagnostics []Diagnostic `json:"diagnostics"`
}

// Diagnostic is one HCL diagnostic, as JSON.
type Diagnostic struct {
	Severity string `json:"severity"` // error, warning
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Column   int    `json:"column,omitempty"`
}

// Options configure the server.
type Options struct {
	Store   *state.Store
	Backend Backend
	// Token is what every /api request must present as a bearer token.
	// Empty: the API answers 401 to every request (serve refuses to
	// listen on a non-loopback address without one).
	Token string
	// Metrics serves /metrics (nil: 404).
	Metrics http.Handler
	Logger  *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Pauses, when set, keeps sinks' pauses instead of Store (`pipeline
	// serve --cluster`: the cluster's paused flags, which every worker reads).
	Pauses Pauses
	// Deliveries, when set, answers for checkpoints and deliveries instead
	// of Store (`pipeline serve --cluster`: the cluster's buckets and
	// streams). A Replay it cannot do says errors.ErrUnsupported (409).
	Deliveries Deliveries
}

// Deliveries is where the API reads checkpoints and deliveries, and
// replays: the state store (*state.Store), or the cluster's.
type Deliveries interface {
	List(ctx context.Context, pipeline string) ([]state.Checkpoint, error)
	Summary(ctx context.Context, f state.DeliveryFilter) ([]state.EndpointSummary, error)
	DeliveryPage(ctx context.Context, f state.DeliveryFilter, cursor string, limit int) (state.DeliveryPage, error)
	Delivery(ctx context.Context, pipeline, sink, id string) (state.DeliveryRecord, error)
	DeliveriesByID(ctx context.Context, id string) ([]state.DeliveryRecord, error)
	Replay(ctx context.Context, f state.DeliveryFilter, now time.Time) (int64, error)
}

// deliveries is Options.Deliveries, else the store.
func (s *Server) deliveries() Deliveries {
	if s.opts.Deliveries != nil {
		return s.opts.Deliveries
	}
	return s.opts.Store
}

// Pauses keeps whether a sink is paused.
type Pauses interface {
	SetPaused(ctx context.Context, pipeline, sink string, paused bool) error
	IsPaused(ctx context.Context, pipeline, sink string) (bool, error)
}

// Server is the admin API and console.
type Server struct {
	opts Options
	mux  *http.ServeMux

	rates rates
}

//go:embed openapi.json
var openAPI []byte

// New returns the server; its ServeHTTP serves everything.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, mux: http.NewServeMux()}
	s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// route is one API endpoint.
type route struct {
	pattern string // method and path, as http.ServeMux takes it
	handle  func(http.ResponseWriter, *http.Request) error
}

func (s *Server) api() []route {
	return []route{
		{"GET /api/openapi.json", s.openapi},
		{"GET /api/pipelines", s.listPipelines},
		{"GET /api/pipelines/{name}", s.getPipeline},
		{"POST /api/pipelines/{name}/sinks/{sink}/pause", s.pause(true)},
		{"POST /api/pipelines/{name}/sinks/{sink}/resume", s.pause(false)},
		{"GET /api/pipelines/{name}/nodes/{node}/tail", s.tail},
		{"GET /api/deliveries", s.listDeliveries},
		{"GET /api/deliveries/{key}", s.getDelivery},
		{"POST /api/deliveries/{key}/replay", s.replayOne},
		{"POST /api/deliveries/replay", s.replayMany},
		{"POST /api/reload", s.reload},
	}
}

func (s *Server) routes() {
	for _, rt := range s.api() {
		s.mux.Handle(rt.pattern, s.authed(rt.handle))
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	if s.opts.Metrics != nil {
		s.mux.Handle("GET /metrics", s.opts.Metrics)
	}
	// Anything else under /api is an unknown endpoint (or method), not
	// the console.
	paths := http.NewServeMux()
	for _, rt := range s.api() {
		_, path, _ := strings.Cut(rt.pattern, " ")
		if _, pattern := paths.Handler(&http.Request{URL: &url.URL{Path: path}}); pattern == path {
			continue // registered for another method already
		}
		paths.Handle(path, http.NotFoundHandler())
	}
	s.mux.Handle("/api/", s.authed(func(w http.ResponseWriter, r *http.Request) error {
		if _, pattern := paths.Handler(r); pattern != "" {
			return errorf(http.StatusMethodNotAllowed, "%s %s: method not allowed (see /api/openapi.json)", r.Method, r.URL.Path)
		}
		return errorf(http.StatusNotFound, "no endpoint %s %s (see /api/openapi.json)", r.Method, r.URL.Path)
	}))
	s.mux.Handle("/", console())
}

// httpError is an error with the status code to answer it with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// authed checks the bearer token, then runs h and answers its error.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pipeline"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong token: send Authorization: Bearer $PIPELINE_ADMIN_TOKEN"})
			return
		}
		if err := h(w, r); err != nil {
			var he *httpError
			if !errors.As(err, &he) {
				s.opts.Logger.Error("admin API", "method", r.Method, "path", r.URL.Path, "error", err)
				he = &httpError{code: http.StatusInternalServerError, msg: err.Error()}
			}
			writeJSON(w, he.code, map[string]string{"error": he.msg})
		}
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.opts.Token)) == 1
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPI)
	return err
}

// rates keeps, per pipeline, a recent sample of its read counter, so that
// the records/s shown is over the last few seconds, not the run's life.
type rates struct {
	mu      sync.Mutex
	samples map[string][]sample
}

type sample struct {
	at   time.Time
	read int64
}

// rate adds a sample and returns records/s since the oldest one kept
// (samples older than 10 s are dropped, the newest of them kept); false
// when the samples span too little time to tell.
func (r *rates) rate(name string, now time.Time, read int64) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.samples == nil {
		r.samples = map[string][]sample{}
	}
	ss := append(r.samples[name], sample{now, read})
	for len(ss) > 2 && now.Sub(ss[1].at) >= 10*time.Second {
		ss = ss[1:]
	}
	r.samples[name] = ss
	first := ss[0]
	dt := now.Sub(first.at).Seconds()
	if dt < 0.5 || read < first.read {
		return 0, false
	}
	return float64(read-first.read) / dt, true
}
