package wire

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// codec is gRPC's proto codec, except that a message's Arrow bytes (the
// field named "arrow": a batch of megabytes) go out as they are instead of
// being copied into the encoded message: Marshal encodes the rest of the
// message, appends the field's tag and length, and hands gRPC the batch's
// bytes as a second buffer. gRPC may still read them after SendMsg
// returns, so the bytes must never be reused: the Encoder gives every
// message its own. Marshal clears the field while it encodes the rest and
// sets it back, so a message must not be marshalled by two goroutines at
// once (each Send builds its own). Receiving is gRPC's own.
type codec struct{ std encoding.CodecV2 }

// aliasBytes is the size from which the Arrow bytes are sent as they are;
// below it, copying them costs less than a second buffer.
const aliasBytes = 32 << 10

func newCodec() codec { return codec{std: encoding.GetCodecV2("proto")} }

func (codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	var m proto.Message
	switch x := v.(type) {
	case proto.Message:
		m = x
	case protoadapt.MessageV1:
		m = protoadapt.MessageV2Of(x)
	default:
		return nil, fmt.Errorf("wire: cannot marshal %T: not a protocol buffer message", v)
	}
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("arrow")
	if fd == nil || fd.Kind() != protoreflect.BytesKind || fd.IsList() {
		return c.std.Marshal(v)
	}
	data := r.Get(fd).Bytes()
	if len(data) < aliasBytes {
		return c.std.Marshal(v)
	}
	r.Clear(fd)
	head, err := proto.Marshal(m)
	r.Set(fd, protoreflect.ValueOfBytes(data))
	if err != nil {
		return nil, err
	}
	head = protowire.AppendTag(head, fd.Number(), protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(data)))
	return mem.BufferSlice{mem.SliceBuffer(head), mem.SliceBuffer(data)}, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.std.Unmarshal(data, v) }
