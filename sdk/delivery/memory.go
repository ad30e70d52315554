package delivery

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

// MemoryOutbox is an sdk.Outbox that keeps deliveries in memory: nothing
// survives the process. It stands in for the engine's outbox where there is
// no engine (unit tests, sdktest in process).
type MemoryOutbox struct {
	mu   sync.Mutex
	rows []*memRow
	ids  map[string]*memRow
	// Log holds every attempt recorded, by delivery id.
	Log map[string][]sdk.Attempt
	// Circuits holds every circuit change reported, in order.
	Circuits    []sdk.Circuit
	results     map[string][]sdk.Result
	stopWaiting bool
	retention   *sdk.Retention
}

var _ sdk.RetentionSetter = (*MemoryOutbox)(nil)

// Results returns every result recorded for one delivery, in order: what a
// test reads to see the due time a retry was given.
func (m *MemoryOutbox) Results(id string) []sdk.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]sdk.Result(nil), m.results[id]...)
}

// SetRetention implements sdk.RetentionSetter: it only notes r (nothing
// here outlives the process anyway).
func (m *MemoryOutbox) SetRetention(_ context.Context, r sdk.Retention) error {
	m.mu.Lock()
	m.retention = &r
	m.mu.Unlock()
	return nil
}

// Retention returns what SetRetention was last told, and whether it was
// called at all.
func (m *MemoryOutbox) Retention() (sdk.Retention, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.retention == nil {
		return sdk.Retention{}, false
	}
	return *m.retention, true
}

type memRow struct {
	d      sdk.Delivery
	status string
	next   time.Time
	leased bool
}

// NewMemoryOutbox returns an empty MemoryOutbox.
func NewMemoryOutbox() *MemoryOutbox {
	return &MemoryOutbox{ids: map[string]*memRow{}, Log: map[string][]sdk.Attempt{}}
}

// Enqueue implements sdk.Outbox.
func (m *MemoryOutbox) Enqueue(_ context.Context, ds []sdk.Delivery) ([]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var leased []int
	for i, d := range ds {
		if _, ok := m.ids[d.ID]; ok {
			continue
		}
		now := time.Now()
		r := &memRow{d: d, status: "pending", next: now}
		r.d.Lease = false
		if d.NotBefore.After(r.next) {
			r.next = d.NotBefore
		}
		if d.Lease && d.OrderKey == "" && !r.next.After(now) {
			r.leased = true
			leased = append(leased, i)
		}
		m.rows = append(m.rows, r)
		m.ids[d.ID] = r
	}
	return leased, nil
}

// Lease implements sdk.Outbox, with the engine's ordering rules.
func (m *MemoryOutbox) Lease(_ context.Context, max, perEndpoint int, skip []string) ([]sdk.Delivery, time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	var out []sdk.Delivery
	var next time.Time
	waiting := map[string]bool{} // order keys with an earlier pending delivery
	per := map[string]int{}
	for _, r := range m.rows {
		if r.status != "pending" {
			continue
		}
		blocked := r.d.OrderKey != "" && waiting[r.d.OrderKey]
		if r.d.OrderKey != "" {
			waiting[r.d.OrderKey] = true
		}
		if blocked || r.leased {
			continue
		}
		if slices.Contains(skip, r.d.Endpoint) {
			continue // the caller asks again when the endpoint has room
		}
		if r.next.After(now) {
			if next.IsZero() || r.next.Before(next) {
				next = r.next
			}
			continue
		}
		if len(out) >= max || (perEndpoint > 0 && per[r.d.Endpoint] >= perEndpoint) {
			continue
		}
		per[r.d.Endpoint]++
		r.leased = true
		out = append(out, r.d)
	}
	return out, next, nil
}

// Record implements sdk.Outbox.
func (m *MemoryOutbox) Record(_ context.Context, rs []sdk.Result, cs []sdk.Circuit) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range cs {
		m.Circuits = append(m.Circuits, c)
	}
	for _, res := range rs {
		r, ok := m.ids[res.ID]
		if !ok {
			continue
		}
		if m.results == nil {
			m.results = map[string][]sdk.Result{}
		}
		m.results[res.ID] = append(m.results[res.ID], res)
		r.leased = false
		switch res.Outcome {
		case sdk.Delivered:
			r.status = "delivered"
		case sdk.Dead:
			r.status = "dead"
		case sdk.Retry:
			r.next = res.Next
		case sdk.Release:
			r.next = res.Next
			continue
		}
		r.d.Attempts++
		m.Log[res.ID] = append(m.Log[res.ID], res.Attempt)
	}
	return nil
}

// Pending implements sdk.Outbox.
func (m *MemoryOutbox) Pending(context.Context) (sdk.OutboxStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := sdk.OutboxStatus{StopWaiting: m.stopWaiting}
	for _, r := range m.rows {
		switch r.status {
		case "pending":
			st.Pending++
		case "dead":
			st.Dead++
		}
	}
	return st, nil
}

// StopWaiting makes Pending ask the sink to stop waiting, as the engine
// does when a run is interrupted.
func (m *MemoryOutbox) StopWaiting() {
	m.mu.Lock()
	m.stopWaiting = true
	m.mu.Unlock()
}

// Status returns a delivery's status: pending, delivered or dead ("" when unknown).
func (m *MemoryOutbox) Status(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.ids[id]; ok {
		return r.status
	}
	return ""
}
