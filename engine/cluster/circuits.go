package cluster

import (
	"context"
	"encoding/json"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// Circuit breakers on a cluster: each worker's sink keeps its own breakers
// and reports every change with Record (as on one machine). The outbox
// service also writes them to the <prefix>_circuits KV bucket, one entry
// per pipeline, sink and endpoint, and every worker's Lease holds back the
// deliveries to an endpoint whose circuit another worker opened, until the
// end of its cooldown. So an endpoint that is down is left alone by the
// whole cluster, not by each worker only after failures of its own; the
// probes after the cooldown come from any worker, and the first success
// closes it everywhere.

type sharedCircuit struct {
	Endpoint string    `json:"endpoint"`
	State    int       `json:"state"` // an sdk.CircuitState (which marshals as text only)
	Until    time.Time `json:"until,omitzero"`
	Reason   string    `json:"reason,omitempty"`
	Worker   string    `json:"worker,omitempty"`
}

// circuitsTTL is how long a Lease trusts the shared circuits it read;
// maxCircuitWait the longest a delivery held back by one waits before it
// is looked at again.
const (
	circuitsTTL    = 500 * time.Millisecond
	maxCircuitWait = 5 * time.Second
)

func (s *OutboxService) circuitKey(endpoint string) string {
	return s.n.key + "." + Token(endpoint)
}

// shareCircuits writes the circuits this worker's sink reported: open and
// disabled ones are put, closed ones removed. A failure is logged: the
// worker's own breakers go on regardless.
func (s *OutboxService) shareCircuits(ctx context.Context, cs []sdk.Circuit) {
	if len(cs) == 0 {
		return
	}
	for _, c := range cs {
		k := s.circuitKey(c.Endpoint)
		if c.State == sdk.CircuitClosed {
			s.circuitsKV.Delete(ctx, k)
			continue
		}
		v, _ := json.Marshal(sharedCircuit{Endpoint: c.Endpoint, State: int(c.State), Until: c.Until, Reason: c.Reason, Worker: s.c.opts.Worker})
		if _, err := s.circuitsKV.Put(ctx, k, v); err != nil {
			s.log.Warn("sharing a circuit breaker failed", "endpoint", c.Endpoint, "error", err)
		}
	}
}

// openCircuits returns, by endpoint, until when the cluster's circuits
// hold this sink's deliveries back: open ones until their cooldown ends,
// disabled ones (410 Gone) for SkipDelay at a time. Read at most every
// circuitsTTL.
func (s *OutboxService) openCircuits(ctx context.Context, now time.Time) map[string]time.Time {
	s.mu.Lock()
	if now.Sub(s.circuitsRead) < circuitsTTL {
		out := s.openUntil
		s.mu.Unlock()
		return out
	}
	s.mu.Unlock()
	out := map[string]time.Time{}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	if keys, err := s.circuitsKV.ListKeysFiltered(cctx, s.n.key+".>"); err == nil {
		for k := range keys.Keys() {
			e, err := s.circuitsKV.Get(cctx, k)
			if err != nil {
				continue
			}
			var c sharedCircuit
			if json.Unmarshal(e.Value(), &c) != nil {
				continue
			}
			switch {
			case sdk.CircuitState(c.State) == sdk.CircuitOpen && c.Until.After(now):
				out[c.Endpoint] = c.Until
			case sdk.CircuitState(c.State) == sdk.CircuitDisabled:
				out[c.Endpoint] = now.Add(s.opts.SkipDelay)
			}
		}
	}
	s.mu.Lock()
	s.openUntil, s.circuitsRead = out, now
	s.mu.Unlock()
	return out
}
