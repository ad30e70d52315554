package sdk

import (
	"context"
	"strconv"
	"time"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// Inbox is the engine's durable store of what a push source accepted
// (records posted to it, webhooks delivered to it), kept until every sink
// acked them. A push source answers a request only after Append returned,
// and its Read reads the inbox from the position the engine hands it, so an
// accepted record survives a crash of the engine or the plugin. Records are
// numbered from 1 in the order stored; a push source's positions are those
// numbers (InboxPosition). (On a cluster, where every worker's push source
// shares one inbox, each worker numbers the records it reads, in the order
// it reads them; the source does the same either way.)
type Inbox interface {
	// Append stores entries in one durable write; a push source gathers
	// concurrent requests into one call (group commit).
	Append(ctx context.Context, entries []InboxEntry) (results []InboxAppended, pending int64, err error)
	// Read returns stored entries with records after record number after,
	// oldest first: whole entries, up to about maxRecords records.
	Read(ctx context.Context, after int64, maxRecords int) ([]InboxStored, error)
	// Status counts the stored records the pipeline has not committed past
	// (not acked by every sink yet).
	Status(ctx context.Context) (InboxStatus, error)
	// ReportRequests tells the engine how many requests were answered
	// with each HTTP status since the last report (its metrics).
	ReportRequests(ctx context.Context, byStatus map[int]int64) error
}

// InboxWaiter is an Inbox whose reads can wait for what is stored next.
// The engine's inbox on a cluster is one (the workers share a stream, and
// another worker's requests are stored there without this one hearing of
// it); a push source type-asserts for it and, when the inbox says it waited,
// asks again at once instead of pausing.
type InboxWaiter interface {
	// ReadWait is Read that, when there is nothing to return, waits up to
	// wait for an entry. waited reports that it did wait (an empty answer
	// is then no reason to pause); an inbox that cannot wait answers at
	// once with waited false.
	ReadWait(ctx context.Context, after int64, maxRecords int, wait time.Duration) (entries []InboxStored, waited bool, err error)
}

// InboxPosition is a push source's position after record number n.
func InboxPosition(n int64) []byte { return strconv.AppendInt(nil, n, 10) }

// ParseInboxPosition is the record number a push source's position is
// after (0 for none, or for one that is not a number).
func ParseInboxPosition(pos []byte) int64 {
	n, err := strconv.ParseInt(string(pos), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// InboxEntry is the records one request brought, as JSON lines.
type InboxEntry struct {
	Records []byte
	Count   int
	// Origin names the request the records came in (their ids derive from
	// it and their index in it).
	Origin string
	// Key, when set, dedupes: an entry whose key was stored less than
	// KeyWindow ago is not stored again, and Append returns the Response
	// stored with the first one.
	Key       string
	KeyWindow time.Duration
	Response  []byte
}

// InboxAppended says what Append did with an entry.
type InboxAppended struct {
	First     int64 // the number of the entry's first record; 0 for a duplicate
	Duplicate bool
	Response  []byte
}

// InboxStored is an entry as stored.
type InboxStored struct {
	First    int64
	Count    int
	Records  []byte
	Origin   string
	Received time.Time
}

// InboxStatus is what an inbox holds.
type InboxStatus struct {
	Pending int64     // stored records not committed past
	Oldest  time.Time // when the oldest pending one was stored; zero: none
	Last    int64     // the number of the last record stored
	// MaxEntryBytes is the most bytes one entry's records may hold (0: no
	// limit): a push source refuses a request over it before storing it.
	MaxEntryBytes int64
}

// stateInbox is the Inbox the engine serves over the plugin broker.
type stateInbox struct{ c pluginv1.StateClient }

func (in *stateInbox) Append(ctx context.Context, entries []InboxEntry) ([]InboxAppended, int64, error) {
	req := &pluginv1.InboxAppendRequest{Entries: make([]*pluginv1.InboxEntry, len(entries))}
	for i, e := range entries {
		req.Entries[i] = &pluginv1.InboxEntry{Records: e.Records, Count: uint32(e.Count), Key: e.Key, KeyWindowMs: e.KeyWindow.Milliseconds(), Response: e.Response, Origin: e.Origin}
	}
	resp, err := in.c.InboxAppend(ctx, req)
	if err != nil {
		return nil, 0, err
	}
	out := make([]InboxAppended, len(resp.Results))
	for i, r := range resp.Results {
		out[i] = InboxAppended{First: r.First, Duplicate: r.Duplicate, Response: r.Response}
	}
	return out, resp.Pending, nil
}

func (in *stateInbox) Read(ctx context.Context, after int64, maxRecords int) ([]InboxStored, error) {
	out, _, err := in.ReadWait(ctx, after, maxRecords, 0)
	return out, err
}

func (in *stateInbox) ReadWait(ctx context.Context, after int64, maxRecords int, wait time.Duration) ([]InboxStored, bool, error) {
	resp, err := in.c.InboxRead(ctx, &pluginv1.InboxReadRequest{After: after, MaxRecords: uint32(maxRecords), WaitMs: uint32(wait.Milliseconds())})
	if err != nil {
		return nil, false, err
	}
	out := make([]InboxStored, len(resp.Entries))
	for i, e := range resp.Entries {
		out[i] = InboxStored{First: e.First, Count: int(e.Count), Records: e.Records, Origin: e.Origin, Received: fromUnixMs(e.ReceivedUnixMs)}
	}
	return out, resp.Waited, nil
}

func (in *stateInbox) Status(ctx context.Context) (InboxStatus, error) {
	resp, err := in.c.InboxStatus(ctx, &pluginv1.InboxStatusRequest{})
	if err != nil {
		return InboxStatus{}, err
	}
	return InboxStatus{Pending: resp.Pending, Oldest: fromUnixMs(resp.OldestPendingUnixMs), Last: resp.Last, MaxEntryBytes: resp.MaxEntryBytes}, nil
}

func (in *stateInbox) ReportRequests(ctx context.Context, byStatus map[int]int64) error {
	req := &pluginv1.InboxRequestsRequest{ByStatus: make(map[int32]int64, len(byStatus))}
	for status, n := range byStatus {
		req.ByStatus[int32(status)] = n
	}
	_, err := in.c.InboxRequests(ctx, req)
	return err
}
