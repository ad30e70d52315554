package state

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// InboxService serves a source's State: its inbox (push sources keep what
// they accept there). The outbox calls are not served.
type InboxService struct {
	pluginv1.UnimplementedStateServer
	inbox *Inbox
	now   func() time.Time
}

// InboxRequests implements pluginv1.StateServer.
func (s *InboxService) InboxRequests(_ context.Context, req *pluginv1.InboxRequestsRequest) (*pluginv1.InboxRequestsResponse, error) {
	by := make(map[int]int64, len(req.ByStatus))
	for status, n := range req.ByStatus {
		by[int(status)] = n
	}
	s.inbox.s.AddPushRequests(s.inbox.pipeline, s.inbox.source, by)
	return &pluginv1.InboxRequestsResponse{}, nil
}

// NewInboxService serves the inbox of a pipeline's source.
func NewInboxService(s *Store, pipeline, source string) *InboxService {
	return &InboxService{inbox: s.Inbox(pipeline, source), now: time.Now}
}

// Inbox is the inbox the service serves.
func (s *InboxService) Inbox() *Inbox { return s.inbox }

// InboxAppend implements pluginv1.StateServer.
func (s *InboxService) InboxAppend(ctx context.Context, req *pluginv1.InboxAppendRequest) (*pluginv1.InboxAppendResponse, error) {
	entries := make([]InboxEntry, len(req.Entries))
	for i, e := range req.Entries {
		if e.Count > 0 && len(e.Records) == 0 {
			return nil, status.Error(codes.InvalidArgument, "an inbox entry with records needs their bytes")
		}
		entries[i] = InboxEntry{Records: e.Records, Count: int(e.Count), Key: e.Key, KeyWindow: time.Duration(e.KeyWindowMs) * time.Millisecond, Response: e.Response, Origin: e.Origin}
	}
	res, pending, err := s.inbox.Append(ctx, entries, s.now())
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &pluginv1.InboxAppendResponse{Pending: pending, Results: make([]*pluginv1.InboxAppendResult, len(res))}
	for i, r := range res {
		resp.Results[i] = &pluginv1.InboxAppendResult{First: r.First, Duplicate: r.Duplicate, Response: r.Response}
	}
	return resp, nil
}

// InboxRead implements pluginv1.StateServer.
func (s *InboxService) InboxRead(ctx context.Context, req *pluginv1.InboxReadRequest) (*pluginv1.InboxReadResponse, error) {
	max := int(req.MaxRecords)
	if max <= 0 {
		max = 10000
	}
	es, err := s.inbox.Read(ctx, req.After, max)
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &pluginv1.InboxReadResponse{Entries: make([]*pluginv1.InboxStored, len(es))}
	for i, e := range es {
		resp.Entries[i] = &pluginv1.InboxStored{First: e.First, Count: uint32(e.Count), Records: e.Records, Origin: e.Origin, ReceivedUnixMs: e.Received.UnixMilli()}
	}
	return resp, nil
}

// InboxStatus implements pluginv1.StateServer.
func (s *InboxService) InboxStatus(ctx context.Context, _ *pluginv1.InboxStatusRequest) (*pluginv1.InboxStatusResponse, error) {
	st, err := s.inbox.Status(ctx, s.now())
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &pluginv1.InboxStatusResponse{Pending: st.Pending, Last: st.Last}
	if !st.Oldest.IsZero() {
		resp.OldestPendingUnixMs = st.Oldest.UnixMilli()
	}
	return resp, nil
}
