package state

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// Service serves one plugin's State: its outbox, over the plugin protocol.
type Service struct {
	pluginv1.UnimplementedStateServer
	outbox *Outbox
	now    func() time.Time
}

// NewService starts a session on the outbox of a pipeline's sink and serves
// it. Deliveries an earlier session left in flight are pending again (leases
// live in the session). The session prunes the outbox in the background
// (DefaultPruning, with the retention the sink sets) until ctx ends, Close
// is called, a later session of the sink begins, or the store closes.
func NewService(ctx context.Context, s *Store, pipeline, sink string) (*Service, error) {
	return NewServicePruning(ctx, s, pipeline, sink, DefaultPruning)
}

// NewServicePruning is NewService with its own Pruning (tests).
func NewServicePruning(ctx context.Context, s *Store, pipeline, sink string, p Pruning) (*Service, error) {
	o := s.Outbox(pipeline, sink)
	if err := o.Begin(ctx); err != nil {
		return nil, err
	}
	o.Prune(ctx, p)
	now := p.Now
	if now == nil {
		now = time.Now
	}
	return &Service{outbox: o, now: now}, nil
}

// Close ends the session's background pruning. (Deliveries need nothing:
// a session's leases are handed back when the next one begins.)
func (s *Service) Close() error {
	s.outbox.End()
	return nil
}

// Outbox is the session the service serves: its Progress and StopWaiting.
func (s *Service) Outbox() *Outbox { return s.outbox }

func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codes.Internal, err.Error())
}

func fromUnixMs(v int64) time.Time {
	if v <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

// Enqueue implements pluginv1.StateServer.
func (s *Service) Enqueue(ctx context.Context, req *pluginv1.EnqueueRequest) (*pluginv1.EnqueueResponse, error) {
	ds := make([]Delivery, len(req.Deliveries))
	for i, d := range req.Deliveries {
		if d.Id == "" {
			return nil, status.Error(codes.InvalidArgument, "a delivery needs an id")
		}
		ds[i] = Delivery{ID: d.Id, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, NotBefore: fromUnixMs(d.NotBeforeUnixMs), Lease: d.Lease}
	}
	n, leased, err := s.outbox.Enqueue(ctx, ds, s.now())
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &pluginv1.EnqueueResponse{Added: uint32(n), Leased: make([]uint32, len(leased))}
	for i, k := range leased {
		resp.Leased[i] = uint32(k)
	}
	return resp, nil
}

// Lease implements pluginv1.StateServer.
func (s *Service) Lease(ctx context.Context, req *pluginv1.LeaseRequest) (*pluginv1.LeaseResponse, error) {
	max := int(req.Max)
	if max <= 0 {
		max = 1
	}
	ds, next, err := s.outbox.Lease(ctx, s.now(), max, int(req.MaxPerEndpoint), req.SkipEndpoints)
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &pluginv1.LeaseResponse{Deliveries: make([]*pluginv1.Delivery, len(ds))}
	if !next.IsZero() {
		resp.NextDueUnixMs = next.UnixMilli()
	}
	for i, d := range ds {
		resp.Deliveries[i] = &pluginv1.Delivery{Id: d.ID, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, Attempts: uint32(d.Attempts)}
	}
	return resp, nil
}

// Record implements pluginv1.StateServer.
func (s *Service) Record(ctx context.Context, req *pluginv1.RecordRequest) (*pluginv1.RecordResponse, error) {
	rs := make([]sdk.Result, len(req.Results))
	for i, r := range req.Results {
		if r.Outcome < pluginv1.Outcome_DELIVERED || r.Outcome > pluginv1.Outcome_RELEASE {
			return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("delivery %q: unknown outcome %d", r.Id, r.Outcome))
		}
		rs[i] = sdk.Result{ID: r.Id, Outcome: sdk.Outcome(r.Outcome), Next: fromUnixMs(r.NextAtUnixMs), Prior: int(r.PriorAttempts)}
		if a := r.Attempt; a != nil {
			rs[i].Attempt = sdk.Attempt{At: time.UnixMilli(a.AtUnixMs), StatusCode: int(a.StatusCode),
				Latency: time.Duration(a.LatencyMs) * time.Millisecond, Error: a.Error, Response: a.Response}
		}
	}
	now := s.now()
	if err := s.outbox.Record(ctx, rs, now); err != nil {
		return nil, grpcErr(err)
	}
	cs := make([]sdk.Circuit, len(req.Circuits))
	for i, c := range req.Circuits {
		cs[i] = sdk.Circuit{Endpoint: c.Endpoint, State: sdk.CircuitState(c.State), Until: fromUnixMs(c.UntilUnixMs), Reason: c.Reason}
	}
	if err := s.outbox.SetCircuits(ctx, cs, now); err != nil {
		return nil, grpcErr(err)
	}
	return &pluginv1.RecordResponse{}, nil
}

// Pending implements pluginv1.StateServer.
func (s *Service) Pending(ctx context.Context, _ *pluginv1.PendingRequest) (*pluginv1.PendingResponse, error) {
	pending, dead, next, err := s.outbox.Pending(ctx)
	if err != nil {
		return nil, grpcErr(err)
	}
	paused, err := s.outbox.Paused(ctx)
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &pluginv1.PendingResponse{Pending: uint64(pending), Dead: uint64(dead), StopWaiting: s.outbox.stopWaiting.Load(), Paused: paused}
	if !next.IsZero() {
		resp.NextDueUnixMs = next.UnixMilli()
	}
	return resp, nil
}

// Paused implements pluginv1.StateServer: whether the sink is paused (the
// session's cached flag, at most pauseTTL old).
func (s *Service) Paused(ctx context.Context, _ *pluginv1.PausedRequest) (*pluginv1.PausedResponse, error) {
	paused, err := s.outbox.Paused(ctx)
	if err != nil {
		return nil, grpcErr(err)
	}
	return &pluginv1.PausedResponse{Paused: paused}, nil
}

// SetRetention implements pluginv1.StateServer: the sink's retention is
// stored for its outbox, and the session prunes with it at once.
func (s *Service) SetRetention(ctx context.Context, req *pluginv1.SetRetentionRequest) (*pluginv1.SetRetentionResponse, error) {
	if req.DeliveredMs < 0 || req.AttemptsMs < 0 || req.DeadMs < 0 {
		return nil, status.Error(codes.InvalidArgument, "retention: durations must not be negative")
	}
	r := sdk.Retention{Delivered: time.Duration(req.DeliveredMs) * time.Millisecond,
		Attempts: time.Duration(req.AttemptsMs) * time.Millisecond, Dead: time.Duration(req.DeadMs) * time.Millisecond}
	if err := s.outbox.SetRetention(ctx, r, s.now()); err != nil {
		return nil, grpcErr(err)
	}
	return &pluginv1.SetRetentionResponse{}, nil
}
