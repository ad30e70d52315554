package state

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// Service serves one plugin's State: its outbox, over the plugin protocol.
type Service struct {
	pluginv1.UnimplementedStateServer
	outbox *Outbox
	now    func() time.Time
}

// NewService serves the outbox of a pipeline's sink. Deliveries left in
// flight by an earlier session are made available again.
func NewService(ctx context.Context, s *Store, pipeline, sink string) (*Service, error) {
	o := s.Outbox(pipeline, sink)
	if err := o.ResetLeases(ctx); err != nil {
		return nil, err
	}
	return &Service{outbox: o, now: time.Now}, nil
}

func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codes.Internal, err.Error())
}

// Enqueue implements pluginv1.StateServer.
func (s *Service) Enqueue(ctx context.Context, req *pluginv1.EnqueueRequest) (*pluginv1.EnqueueResponse, error) {
	ds := make([]Delivery, len(req.Deliveries))
	for i, d := range req.Deliveries {
		if d.Id == "" {
			return nil, status.Error(codes.InvalidArgument, "a delivery needs an id")
		}
		ds[i] = Delivery{ID: d.Id, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload}
		if d.NotBeforeUnixMs > 0 {
			ds[i].NotBefore = time.UnixMilli(d.NotBeforeUnixMs)
		}
	}
	n, err := s.outbox.Enqueue(ctx, ds, s.now())
	if err != nil {
		return nil, grpcErr(err)
	}
	return &pluginv1.EnqueueResponse{Added: uint32(n)}, nil
}

// Lease implements pluginv1.StateServer.
func (s *Service) Lease(ctx context.Context, req *pluginv1.LeaseRequest) (*pluginv1.LeaseResponse, error) {
	max := int(req.Max)
	if max <= 0 {
		max = 1
	}
	ds, next, err := s.outbox.Lease(ctx, s.now(), max, req.SkipEndpoints)
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &pluginv1.LeaseResponse{}
	if !next.IsZero() {
		resp.NextDueUnixMs = next.UnixMilli()
	}
	for _, d := range ds {
		resp.Deliveries = append(resp.Deliveries, &pluginv1.Delivery{Id: d.ID, Endpoint: d.Endpoint, OrderKey: d.OrderKey, Payload: d.Payload, Attempts: uint32(d.Attempts)})
	}
	return resp, nil
}

// Record implements pluginv1.StateServer.
func (s *Service) Record(ctx context.Context, req *pluginv1.RecordRequest) (*pluginv1.RecordResponse, error) {
	var a Attempt
	if req.Attempt != nil {
		a = Attempt{At: time.UnixMilli(req.Attempt.AtUnixMs), StatusCode: int(req.Attempt.StatusCode),
			Latency: time.Duration(req.Attempt.LatencyMs) * time.Millisecond, Error: req.Attempt.Error, Response: req.Attempt.Response}
	}
	outcome := map[pluginv1.RecordRequest_Outcome]Outcome{
		pluginv1.RecordRequest_DELIVERED: Delivered, pluginv1.RecordRequest_RETRY: Retry,
		pluginv1.RecordRequest_DEAD: Dead, pluginv1.RecordRequest_RELEASE: Release,
	}[req.Outcome]
	if err := s.outbox.Record(ctx, req.Id, a, outcome, time.UnixMilli(req.NextAtUnixMs)); err != nil {
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
	resp := &pluginv1.PendingResponse{Pending: uint64(pending), Dead: uint64(dead)}
	if !next.IsZero() {
		resp.NextDueUnixMs = next.UnixMilli()
	}
	return resp, nil
}
