package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// Serve runs p, a Source, a Sink or a Transform, as a plugin process. It is the whole of
// a plugin's main function and does not return while the engine is connected.
func Serve(p any) {
	srv, err := NewServer(p)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: wire.Handshake,
		Plugins:         plugin.PluginSet{wire.PluginKey: &wire.GRPCPlugin{Impl: srv}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, wire.ServerOptions()...)...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn, JSONFormat: true}),
	})
}

// Logger returns a logger for plugin code. Its lines reach the engine, which
// shows them with the plugin's name.
func Logger() *slog.Logger { return logger }

var logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{
	Level: slog.LevelDebug,
	// go-plugin reads hclog's JSON keys from the plugin's stderr.
	ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) > 0 {
			return a
		}
		switch a.Key {
		case slog.TimeKey:
			a.Key = "@timestamp"
		case slog.LevelKey:
			a.Key = "@level"
			a.Value = slog.StringValue(strings.ToLower(a.Value.String()))
		case slog.MessageKey:
			a.Key = "@message"
		}
		return a
	},
}))

// NewServer adapts a Source, Sink or Transform to the protocol's gRPC
// service. Serve and sdk/sdktest use it; plugin code does not need it.
func NewServer(p any) (pluginv1.PluginServer, error) {
	switch p.(type) {
	case Source, Sink, Transform:
		if _, ok := p.(Partitioner); ok {
			if _, ok := p.(PartitionReader); !ok {
				return nil, fmt.Errorf("sdk: %T is a sdk.Partitioner but not a sdk.PartitionReader: a source that lists partitions must read them", p)
			}
		}
		return &server{impl: p}, nil
	}
	return nil, fmt.Errorf("sdk: %T is neither a sdk.Source, a sdk.Sink nor a sdk.Transform", p)
}

type server struct {
	pluginv1.UnimplementedPluginServer
	impl   any
	broker *plugin.GRPCBroker

	mu         sync.Mutex
	configured bool
}

// SetBroker implements wire.BrokerUser.
func (s *server) SetBroker(b *plugin.GRPCBroker) { s.broker = b }

func (s *server) info() Info {
	switch p := s.impl.(type) {
	case Source:
		return p.Info()
	case Sink:
		return p.Info()
	case Transform:
		return p.Info()
	}
	return Info{}
}

func (s *server) Describe(ctx context.Context, _ *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	resp, err := DescribeProto(s.info())
	if err != nil {
		return nil, err
	}
	_, resp.Buffered = s.impl.(BufferedSink)
	return resp, nil
}

// DescribeProto converts Info to its protocol message.
func DescribeProto(info Info) (*pluginv1.DescribeResponse, error) {
	resp := &pluginv1.DescribeResponse{
		Kind:             string(info.Kind),
		Type:             info.Type,
		Version:          info.Version,
		Description:      info.Description,
		ProtocolVersions: []uint32{wire.ProtocolVersion},
		Push:             info.Push,
	}
	attrs, err := attributesProto(info.Config)
	if err != nil {
		return nil, err
	}
	resp.Config = attrs
	return resp, nil
}

func attributesProto(list []Attribute) ([]*pluginv1.Attribute, error) {
	var out []*pluginv1.Attribute
	for _, a := range list {
		attr := &pluginv1.Attribute{
			Name:        a.Name,
			Type:        string(a.Type),
			Required:    a.Required,
			Description: a.Description,
			Template:    a.Template,
			Expression:  a.Expression,
		}
		if a.Default != nil {
			def, err := json.Marshal(a.Default)
			if err != nil {
				return nil, status.Errorf(codes.Internal, "attribute %s: default: %v", a.Name, err)
			}
			attr.DefaultJson = string(def)
		}
		nested, err := attributesProto(a.Nested)
		if err != nil {
			return nil, err
		}
		attr.Nested = nested
		out = append(out, attr)
	}
	return out, nil
}

func (s *server) Configure(ctx context.Context, req *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	var warnings []string
	cfg := Config{Name: req.Name, JSON: req.ConfigJson, Templates: req.Templates, NoWait: req.NoWait, FullRefresh: req.FullRefresh, BaseDir: req.BaseDir, warnings: &warnings}
	if req.StateBrokerId != 0 {
		if s.broker == nil {
			return nil, status.Error(codes.FailedPrecondition, "the engine offers a state service but the plugin has no broker")
		}
		o, in, err := dialState(s.broker, req.StateBrokerId)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "connect to the engine's state service: %v", err)
		}
		if _, ok := s.impl.(Source); ok {
			cfg.Inbox = in
		} else {
			cfg.Outbox = o
		}
	}
	var err error
	switch p := s.impl.(type) {
	case Source:
		err = p.Configure(ctx, cfg)
	case Sink:
		err = p.Configure(ctx, cfg)
	case Transform:
		err = p.Configure(ctx, cfg)
	}
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	s.configured = true
	s.mu.Unlock()
	return &pluginv1.ConfigureResponse{Warnings: warnings}, nil
}

func (s *server) ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.configured {
		return status.Error(codes.FailedPrecondition, "plugin is not configured")
	}
	return nil
}

func (s *server) Schema(ctx context.Context, _ *pluginv1.SchemaRequest) (*pluginv1.SchemaResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	src, ok := s.impl.(SchemaSource)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "plugin cannot report its schema up front")
	}
	schema, err := src.Schema(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	data, err := wire.EncodeSchema(schema)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pluginv1.SchemaResponse{ArrowSchema: data}, nil
}

// Partitions answers a Partitioner's partitions, sorted and without
// duplicates, and partitioned = false for any other source.
func (s *server) Partitions(ctx context.Context, _ *pluginv1.PartitionsRequest) (*pluginv1.PartitionsResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if _, ok := s.impl.(Source); !ok {
		return nil, status.Error(codes.Unimplemented, "plugin is not a source")
	}
	pt, ok := s.impl.(Partitioner)
	if !ok {
		return &pluginv1.PartitionsResponse{}, nil
	}
	parts, err := pt.Partitions(ctx)
	if errors.Is(err, ErrNotPartitioned) {
		return &pluginv1.PartitionsResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
	}
	parts = slices.Clone(parts)
	slices.Sort(parts)
	parts = slices.Compact(parts)
	if len(parts) > 0 && parts[0] == "" {
		return nil, status.Error(codes.Unknown, "a partition has an empty name (the name of the one partition of a source that is not partitioned)")
	}
	return &pluginv1.PartitionsResponse{Partitions: parts, Partitioned: true}, nil
}

// Read reads the whole source (partition ""), or one partition of a
// PartitionReader.
func (s *server) Read(req *pluginv1.ReadRequest, stream pluginv1.Plugin_ReadServer) error {
	if err := s.ready(); err != nil {
		return err
	}
	src, ok := s.impl.(Source)
	if !ok {
		return status.Error(codes.Unimplemented, "plugin is not a source")
	}
	read := src.Read
	if req.Partition != "" {
		pr, ok := s.impl.(PartitionReader)
		if pt, isPt := s.impl.(Partitioner); ok && isPt {
			// Configured as one partition (ErrNotPartitioned): the same refusal.
			if _, err := pt.Partitions(stream.Context()); errors.Is(err, ErrNotPartitioned) {
				ok = false
			}
		}
		if !ok {
			return status.Errorf(codes.InvalidArgument, "source %q cannot read partition %q: it is not partitioned (it reads as one partition, named \"\")", src.Info().Type, req.Partition)
		}
		read = func(ctx context.Context, from []byte, emit Emitter) error {
			return pr.ReadPartition(ctx, req.Partition, from, emit)
		}
	}
	em := &emitter{stream: stream, enc: wire.NewEncoder(nil)}
	var from []byte
	if len(req.Checkpoint) > 0 {
		from = req.Checkpoint
	}
	if err := read(stream.Context(), from, em); err != nil {
		return toStatus(err)
	}
	if em.skipped > 0 {
		// Report skips that came after the last batch.
		return stream.Send(&pluginv1.ReadResponse{Skipped: em.skipped})
	}
	return nil
}

type emitter struct {
	stream  pluginv1.Plugin_ReadServer
	enc     *wire.Encoder
	skipped int64
}

func (e *emitter) Emit(rec arrow.RecordBatch, position []byte) error {
	return e.EmitAt(rec, position, Origin{})
}

func (e *emitter) EmitAt(rec arrow.RecordBatch, position []byte, origin Origin) error {
	defer rec.Release()
	if err := e.stream.Context().Err(); err != nil {
		return err
	}
	if origin.Name != "" && int64(len(origin.Places)) != rec.NumRows() {
		return fmt.Errorf("emit: origin %q has %d places for %d rows", origin.Name, len(origin.Places), rec.NumRows())
	}
	if origin.IDs != nil && int64(len(origin.IDs)) != rec.NumRows() {
		return fmt.Errorf("emit: origin %q has %d ids for %d rows", origin.Name, len(origin.IDs), rec.NumRows())
	}
	var off int64
	return e.enc.Split(rec, func(data []byte, rows int64, last bool) error {
		msg := &pluginv1.ReadResponse{Arrow: data, Rows: rows, Skipped: e.skipped}
		if origin.Name != "" {
			msg.Origin, msg.PlaceUnit = origin.Name, origin.Unit
			msg.Places = origin.Places[off : off+rows]
		}
		if origin.IDs != nil {
			msg.Ids = origin.IDs[off : off+rows]
		}
		off += rows
		if last {
			// Only the end of the whole batch is a position to resume from.
			msg.Position = position
		}
		e.skipped = 0
		return e.stream.Send(msg)
	})
}

func (e *emitter) Skipped(n int) { e.skipped += int64(n) }

func (s *server) Write(stream pluginv1.Plugin_WriteServer) error {
	if err := s.ready(); err != nil {
		return err
	}
	sink, ok := s.impl.(Sink)
	if !ok {
		return status.Error(codes.Unimplemented, "plugin is not a sink")
	}
	ctx := stream.Context()
	dec := wire.NewDecoder(nil)
	defer dec.Release()
	write := func(msg *pluginv1.WriteRequest) error {
		rec, err := dec.Decode(msg.Arrow)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "batch %d: %v", msg.Seq, err)
		}
		err = sink.Write(ctx, NewBatch(rec))
		rec.Release()
		if err != nil {
			return toStatus(err)
		}
		return nil
	}
	aborted := false
	if bs, ok := sink.(BufferedSink); ok {
		var err error
		if aborted, err = writeBuffered(ctx, stream, bs, write); err != nil {
			return err
		}
	} else {
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if msg.Abort {
				aborted = true
				continue
			}
			if err := write(msg); err != nil {
				return err
			}
			if err := stream.Send(&pluginv1.WriteResponse{Seq: msg.Seq}); err != nil {
				return err
			}
		}
	}
	if a, ok := sink.(SinkAborter); ok && aborted {
		if err := a.Abort(ctx); err != nil {
			return toStatus(err)
		}
		return nil
	}
	if c, ok := sink.(SinkCloser); ok {
		if err := c.Close(ctx); err != nil {
			return toStatus(err)
		}
	}
	return nil
}

// writeBuffered feeds a BufferedSink and acks only what a Flush covered:
// after a Write when FlushDue says so, on a timer while the stream is idle,
// when MaxHeldBatches are held, and at the end of the stream unless the
// host said the run is aborted (then it reports aborted and flushes nothing).
func writeBuffered(ctx context.Context, stream pluginv1.Plugin_WriteServer, sink BufferedSink, write func(*pluginv1.WriteRequest) error) (aborted bool, _ error) {
	type recv struct {
		msg *pluginv1.WriteRequest
		err error
	}
	msgs := make(chan recv)
	go func() {
		for {
			msg, err := stream.Recv()
			select {
			case msgs <- recv{msg, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var held int
	var last uint64
	flush := func() error {
		if held == 0 {
			return nil
		}
		if err := sink.Flush(ctx); err != nil {
			return toStatus(err)
		}
		held = 0
		return stream.Send(&pluginv1.WriteResponse{Seq: last})
	}
	tick := time.NewTicker(FlushCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, toStatus(ctx.Err())
		case now := <-tick.C:
			if held > 0 && sink.FlushDue(now) && !aborted {
				if err := flush(); err != nil {
					return false, err
				}
			}
		case r := <-msgs:
			if errors.Is(r.err, io.EOF) {
				if aborted {
					return true, nil // what is held stays unacked
				}
				return false, flush()
			}
			if r.err != nil {
				return false, r.err
			}
			if r.msg.Abort {
				aborted = true
				continue
			}
			if err := write(r.msg); err != nil {
				return false, err
			}
			held++
			last = r.msg.Seq
			if held >= MaxHeldBatches || sink.FlushDue(time.Now()) {
				if err := flush(); err != nil {
					return false, err
				}
			}
		}
	}
}

// Transform answers each request in turn: the transform's output, split by
// the wire encoder when large, every piece with the request's seq and the
// final one marked last (alone, without rows, when nothing is left).
func (s *server) Transform(stream pluginv1.Plugin_TransformServer) error {
	if err := s.ready(); err != nil {
		return err
	}
	tr, ok := s.impl.(Transform)
	if !ok {
		return status.Error(codes.Unimplemented, "plugin is not a transform")
	}
	ctx := stream.Context()
	dec := wire.NewDecoder(nil)
	defer dec.Release()
	enc := wire.NewEncoder(nil)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.transformOne(ctx, stream, tr, dec, enc, msg); err != nil {
			return err
		}
	}
}

func (s *server) transformOne(ctx context.Context, stream pluginv1.Plugin_TransformServer, tr Transform, dec *wire.Decoder, enc *wire.Encoder, msg *pluginv1.TransformRequest) error {
	rec, err := dec.Decode(msg.Arrow)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "batch %d: %v", msg.Seq, err)
	}
	defer rec.Release()
	in := NewBatch(rec)
	res, err := tr.Transform(ctx, in)
	if err != nil {
		return toStatus(err)
	}
	if res.Record != nil && res.Record != in.Record {
		defer res.Record.Release()
	}
	out, err := transformOutput(in, res)
	if err != nil {
		return status.Errorf(codes.Unknown, "batch %d: %v", msg.Seq, err)
	}
	defer out.Release()
	if out.NumRows() == 0 {
		return stream.Send(&pluginv1.TransformResponse{Seq: msg.Seq, Last: true})
	}
	return enc.Split(out, func(data []byte, rows int64, last bool) error {
		return stream.Send(&pluginv1.TransformResponse{Seq: msg.Seq, Arrow: data, Rows: rows, Last: last})
	})
}

func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, ErrRetryable):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}
