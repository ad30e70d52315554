package sdktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// plainSource reads "whole:1", "whole:2" and knows nothing of partitions.
type plainSource struct{}

func (plainSource) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindSource, Type: "plain", Version: "0"}
}
func (plainSource) Configure(context.Context, sdk.Config) error { return nil }
func (plainSource) Read(_ context.Context, from []byte, emit sdk.Emitter) error {
	if len(from) > 0 {
		return nil
	}
	return emit.Emit(textRecord("whole:1", "whole:2"), []byte("end"))
}

// partSource has partitions "b", "a", "b" (listed unsorted, with a
// duplicate); partition p holds the records p:1, p:2, p:3, one per batch,
// and a position is the number of records read.
type partSource struct {
	plainSource
	list []string

	mu    sync.Mutex
	calls []string // partition@from of each ReadPartition
}

func (s *partSource) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindSource, Type: "parts", Version: "0"}
}

func (s *partSource) Partitions(context.Context) ([]string, error) {
	if s.list != nil {
		return s.list, nil
	}
	return []string{"b", "a", "b"}, nil
}

func (s *partSource) ReadPartition(ctx context.Context, partition string, from []byte, emit sdk.Emitter) error {
	s.mu.Lock()
	s.calls = append(s.calls, partition+"@"+string(from))
	s.mu.Unlock()
	if partition == "gone" {
		return nil
	}
	n := 0
	if len(from) > 0 {
		fmt.Sscan(string(from), &n)
	}
	for i := n + 1; i <= 3; i++ {
		if err := emit.EmitAt(textRecord(fmt.Sprintf("%s:%d", partition, i)), []byte(fmt.Sprint(i)),
			sdk.Origin{Name: partition, Unit: "line", Places: []int64{int64(i)}}); err != nil {
			return err
		}
	}
	emit.Skipped(2) // after the last batch: reported on a message of its own
	return nil
}

func textRecord(values ...string) arrow.RecordBatch {
	b := array.NewStringBuilder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues(values, nil)
	col := b.NewArray()
	defer col.Release()
	return array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.BinaryTypes.String, Nullable: true}}, nil), []arrow.Array{col}, int64(len(values)))
}

func configured(t *testing.T, impl any) (pluginv1.PluginClient, context.Context) {
	t.Helper()
	pc := servedClient(t, impl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if _, err := pc.Configure(ctx, &pluginv1.ConfigureRequest{Name: "t", ConfigJson: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	return pc, ctx
}

// readMsg is what one ReadResponse carried.
type readMsg struct {
	values  []string
	pos     string
	origin  string
	places  []int64
	skipped int64
}

func readStream(ctx context.Context, pc pluginv1.PluginClient, req *pluginv1.ReadRequest) ([]readMsg, error) {
	stream, err := pc.Read(ctx, req)
	if err != nil {
		return nil, err
	}
	dec := wire.NewDecoder(nil)
	defer dec.Release()
	var out []readMsg
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		m := readMsg{pos: string(msg.Position), origin: msg.Origin, places: msg.Places, skipped: msg.Skipped}
		if len(msg.Arrow) > 0 {
			rec, err := dec.Decode(msg.Arrow)
			if err != nil {
				return out, err
			}
			col := rec.Column(0).(*array.String)
			for i := 0; i < col.Len(); i++ {
				m.values = append(m.values, col.Value(i))
			}
			rec.Release()
		}
		out = append(out, m)
	}
}

// Over the real gRPC server: Partitions are sorted and unique, a Read of a
// partition reaches ReadPartition with the partition and the checkpoint,
// and its batches, origins, positions and trailing skips come back as a
// whole Read's do; partition "" is the whole Read.
func TestPartitionsAndReadPartitionOverGRPC(t *testing.T) {
	src := &partSource{}
	pc, ctx := configured(t, src)
	resp, err := pc.Partitions(ctx, &pluginv1.PartitionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Partitioned || strings.Join(resp.Partitions, ",") != "a,b" {
		t.Fatalf("Partitions = %v %q, want partitioned a,b", resp.Partitioned, resp.Partitions)
	}

	msgs, err := readStream(ctx, pc, &pluginv1.ReadRequest{Partition: "b", Checkpoint: []byte("1")})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("got %d messages, want 2 batches and a skips report: %+v", len(msgs), msgs)
	}
	for i, want := range []string{"b:2", "b:3"} {
		m := msgs[i]
		if strings.Join(m.values, ",") != want || m.pos != fmt.Sprint(i+2) || m.origin != "b" || len(m.places) != 1 || m.places[0] != int64(i+2) {
			t.Errorf("message %d = %+v, want %s at position %d, origin b line %d", i, m, want, i+2, i+2)
		}
	}
	if last := msgs[2]; last.values != nil || last.skipped != 2 || last.pos != "" {
		t.Errorf("the last message = %+v, want only the 2 skips", last)
	}

	// Partition "" is the whole source, read with Read.
	msgs, err = readStream(ctx, pc, &pluginv1.ReadRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || strings.Join(msgs[0].values, ",") != "whole:1,whole:2" || msgs[0].pos != "end" {
		t.Fatalf("whole read: %+v", msgs)
	}
	// A partition that is gone reads nothing, without error.
	if msgs, err = readStream(ctx, pc, &pluginv1.ReadRequest{Partition: "gone"}); err != nil || len(msgs) != 0 {
		t.Fatalf("gone partition: %+v, %v", msgs, err)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if got := strings.Join(src.calls, " "); got != "b@1 gone@" {
		t.Errorf("ReadPartition calls %q, want %q (an empty checkpoint arrives as nil)", got, "b@1 gone@")
	}
}

// A source without a Partitioner is one partition: Partitions says so, and
// a Read of a partition is refused as InvalidArgument naming the plugin.
func TestSourceWithoutPartitionerIsOnePartition(t *testing.T) {
	pc, ctx := configured(t, plainSource{})
	resp, err := pc.Partitions(ctx, &pluginv1.PartitionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Partitioned || len(resp.Partitions) != 0 {
		t.Fatalf("Partitions = %v %q, want not partitioned", resp.Partitioned, resp.Partitions)
	}
	_, err = readStream(ctx, pc, &pluginv1.ReadRequest{Partition: "a.jsonl"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `source "plain" cannot read partition "a.jsonl"`) {
		t.Fatalf("Read of a partition: %v, want InvalidArgument naming the plugin", err)
	}
	// The whole Read is as it always was.
	msgs, err := readStream(ctx, pc, &pluginv1.ReadRequest{})
	if err != nil || len(msgs) != 1 || msgs[0].pos != "end" {
		t.Fatalf("whole read: %+v, %v", msgs, err)
	}
}

func TestPartitionsNeedsConfigureAndASource(t *testing.T) {
	ctx := context.Background()
	pc := servedClient(t, &partSource{})
	if _, err := pc.Partitions(ctx, &pluginv1.PartitionsRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Partitions before Configure: %v, want FailedPrecondition", err)
	}
	sink, ctx := configured(t, &bufSink{})
	if _, err := sink.Partitions(ctx, &pluginv1.PartitionsRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("Partitions of a sink: %v, want Unimplemented", err)
	}
}

func TestEmptyPartitionNameIsRefused(t *testing.T) {
	pc, ctx := configured(t, &partSource{list: []string{"a", ""}})
	if _, err := pc.Partitions(ctx, &pluginv1.PartitionsRequest{}); err == nil || !strings.Contains(err.Error(), "empty name") {
		t.Fatalf("got %v", err)
	}
}

// lister lists partitions but cannot read them.
type lister struct{ plainSource }

func (lister) Partitions(context.Context) ([]string, error) { return []string{"a"}, nil }

func TestPartitionerMustReadPartitions(t *testing.T) {
	if _, err := sdk.NewServer(lister{}); err == nil || !strings.Contains(err.Error(), "not a sdk.PartitionReader") {
		t.Fatalf("got %v", err)
	}
}

// The harness reads each partition of a partitioned source too.
func TestSourceHarnessReadsPartitions(t *testing.T) {
	TestSource(t, func() sdk.Source { return &mirrorSource{} }, "", SourceTest{
		Config: `{}`,
		Want:   []string{`{"v":"a:1"}`, `{"v":"b:1"}`},
	})
}

// mirrorSource reads partitions a and b of one record each, whole or by
// partition.
type mirrorSource struct{ plainSource }

func (mirrorSource) Partitions(context.Context) ([]string, error) { return []string{"a", "b"}, nil }

func (s mirrorSource) Read(ctx context.Context, from []byte, emit sdk.Emitter) error {
	if len(from) > 0 {
		return nil
	}
	for _, p := range []string{"a", "b"} {
		if err := s.ReadPartition(ctx, p, nil, emit); err != nil {
			return err
		}
	}
	return nil
}

func (mirrorSource) ReadPartition(_ context.Context, p string, from []byte, emit sdk.Emitter) error {
	if len(from) > 0 {
		return nil
	}
	return emit.Emit(textRecord(p+":1"), []byte(p))
}
