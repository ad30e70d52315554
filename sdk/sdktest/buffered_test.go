package sdktest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// bufSink holds batches and flushes every `every` batches, or after `age`.
type bufSink struct {
	every int
	age   time.Duration

	mu      sync.Mutex
	held    int
	since   time.Time
	flushes []int // batches covered by each flush
	closed  bool
}

func (s *bufSink) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindSink, Type: "buf", Version: "0"}
}
func (s *bufSink) Configure(context.Context, sdk.Config) error { return nil }
func (s *bufSink) Write(_ context.Context, b sdk.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == 0 {
		s.since = time.Now()
	}
	s.held++
	return nil
}
func (s *bufSink) FlushDue(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return (s.every > 0 && s.held >= s.every) || (s.age > 0 && now.Sub(s.since) >= s.age)
}
func (s *bufSink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes = append(s.flushes, s.held)
	s.held = 0
	return nil
}
func (s *bufSink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func servedClient(t *testing.T, impl any) pluginv1.PluginClient {
	t.Helper()
	srv, err := sdk.NewServer(impl)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{wire.PluginKey: &wire.GRPCPlugin{Impl: srv}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(wire.PluginKey)
	if err != nil {
		t.Fatal(err)
	}
	return raw.(*wire.Conn).Plugin
}

func TestBufferedSinkAcksOnlyFlushedBatches(t *testing.T) {
	sink := &bufSink{every: 3}
	pc := servedClient(t, sink)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	desc, err := pc.Describe(ctx, &pluginv1.DescribeRequest{ProtocolVersions: []uint32{wire.ProtocolVersion}})
	if err != nil || !desc.Buffered {
		t.Fatalf("Describe: buffered=%v err=%v; want buffered", desc.GetBuffered(), err)
	}
	if _, err := pc.Configure(ctx, &pluginv1.ConfigureRequest{Name: "t", ConfigJson: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	batches, _, err := Batches([]string{`{"a":1}`, `{"a":2}`, `{"a":3}`, `{"a":4}`, `{"a":5}`, `{"a":6}`, `{"a":7}`}, 1)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pc.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	enc := wire.NewEncoder(nil)
	send := func(i int) {
		data, err := enc.Encode(batches[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pluginv1.WriteRequest{Seq: uint64(i + 1), Arrow: data, Rows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		send(i)
	}
	msg, err := stream.Recv()
	if err != nil || msg.Seq != 3 {
		t.Fatalf("first ack: %v %v; want seq 3 after the flush of 3 batches", msg, err)
	}
	for i := 3; i < 7; i++ {
		send(i)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var acks []uint64
	for {
		msg, err := stream.Recv()
		if err != nil {
			break
		}
		acks = append(acks, msg.Seq)
	}
	if len(acks) != 2 || acks[0] != 6 || acks[1] != 7 {
		t.Fatalf("acks after the first: %v; want [6 7] (a flush at 6, the last at the end of the stream)", acks)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.flushes) != 3 || sink.flushes[2] != 1 || !sink.closed {
		t.Fatalf("flushes %v closed %v; want [3 3 1] and closed", sink.flushes, sink.closed)
	}
}

func TestBufferedSinkFlushesWhenIdle(t *testing.T) {
	sink := &bufSink{age: 300 * time.Millisecond}
	pc := servedClient(t, sink)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pc.Configure(ctx, &pluginv1.ConfigureRequest{Name: "t", ConfigJson: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	batches, _, err := Batches([]string{`{"a":1}`, `{"a":2}`}, 1)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pc.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	enc := wire.NewEncoder(nil)
	for i, rec := range batches {
		data, _ := enc.Encode(rec)
		if err := stream.Send(&pluginv1.WriteRequest{Seq: uint64(i + 1), Arrow: data, Rows: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// No more batches and the stream stays open: the age limit alone
	// must bring the ack.
	msg, err := stream.Recv()
	if err != nil || msg.Seq != 2 {
		t.Fatalf("ack: %v %v; want seq 2 from the idle flush", msg, err)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err == nil {
		t.Fatal("an ack after the end with nothing held")
	}
}
