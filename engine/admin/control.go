package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/pipelinehq/pipeline/engine/run"
)

// pause pauses (or resumes) a sink: its outbox keeps taking deliveries
// and sends none until it is resumed, also across restarts.
func (s *Server) pause(on bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.find(r.PathValue("name"))
		if err != nil {
			return err
		}
		sink := r.PathValue("sink")
		var names []string
		if p.Config != nil {
			for _, sk := range p.Config.Sinks {
				names = append(names, sk.Name)
			}
		}
		if !slices.Contains(names, sink) {
			return errorf(http.StatusNotFound, "pipeline %s has no sink %q (it has %v)", p.Name, sink, names)
		}
		if s.opts.Pauses != nil {
			err = s.opts.Pauses.SetPaused(r.Context(), p.Name, sink, on)
		} else if on {
			err = s.opts.Store.PauseSink(r.Context(), p.Name, sink, s.opts.Now())
		} else {
			err = s.opts.Store.ResumeSink(r.Context(), p.Name, sink)
		}
		if err != nil {
			return err
		}
		verb := "resumed"
		if on {
			verb = "paused"
		}
		s.opts.Logger.Info("sink "+verb+" through the admin API", "pipeline", p.Name, "sink", sink)
		writeJSON(w, http.StatusOK, map[string]any{"pipeline": p.Name, "sink": sink, "paused": on})
		return nil
	}
}

// tail streams the next records passing a node as server-sent events:
// "record" events, then "end" once n were sent or the run stopped.
func (s *Server) tail(w http.ResponseWriter, r *http.Request) error {
	p, err := s.find(r.PathValue("name"))
	if err != nil {
		return err
	}
	n := 20
	if v := r.URL.Query().Get("n"); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
			return errorf(http.StatusBadRequest, "n %q: want 1 to 1000", v)
		}
	}
	if p.Runner == nil {
		return errorf(http.StatusConflict, "pipeline %s is not running now (%s): nothing flows to tail", p.Name, p.State)
	}
	node := r.PathValue("node")
	ch, cancel, err := p.Runner.Tap(node, n)
	if errors.Is(err, run.ErrNoNode) {
		return errorf(http.StatusNotFound, "pipeline %s has no node %q (a node is source.NAME, filter.NAME, transform.NAME or sink.NAME)", p.Name, node)
	}
	if err != nil {
		return err
	}
	defer cancel()
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": tailing "+node+"\n\n")
	if flusher != nil {
		flusher.Flush()
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	sent := 0
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
		case rec, ok := <-ch:
			if !ok {
				reason := "done"
				if sent < n {
					reason = "the run stopped, or the reader fell behind"
				}
				b, _ := json.Marshal(map[string]any{"sent": sent, "reason": reason})
				fmt.Fprintf(w, "event: end\ndata: %s\n\n", b)
				if flusher != nil {
					flusher.Flush()
				}
				return nil
			}
			b, err := json.Marshal(rec)
			if err != nil {
				return nil
			}
			fmt.Fprintf(w, "event: record\ndata: %s\n\n", b)
			sent++
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) error {
	rep := s.opts.Backend.Reload(r.Context())
	for _, l := range []*[]string{&rep.Added, &rep.Reloaded, &rep.Unchanged, &rep.Removed} {
		if *l == nil {
			*l = []string{}
		}
	}
	if rep.Errors == nil {
		rep.Errors = []FileErrors{}
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
