// Package wire holds what both ends of the plugin protocol must agree on: the
// go-plugin handshake, the message size limits, and the framing of Arrow
// record batches into protocol messages. Plugin authors never need it; the
// sdk and the engine's plugin host both use it.
package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// ProtocolVersion is the go-plugin protocol version both sides must speak.
// Bump it on any incompatible change to sdk/proto.
const ProtocolVersion = 1

// PluginKey is the name under which the one gRPC service is dispensed.
const PluginKey = "plugin"

// Handshake keeps the plugin binary from being run by hand by mistake and
// rejects plugins built for another protocol version.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "PIPELINE_PLUGIN",
	MagicCookieValue: "b3a1d2e4-pipeline-plugin-v1",
}

// MaxMessageBytes is the gRPC message size limit both sides set. Batches are
// split well below it (SplitBytes), so no single message comes near.
const MaxMessageBytes = 256 << 20

// SplitBytes is the encoded size above which a batch is split in halves by
// rows before it is sent.
const SplitBytes = 32 << 20

// Encoder frames record batches as Arrow IPC stream bytes, one protocol
// message per batch. The schema is sent with the first batch and again, after
// an end-of-stream marker, whenever it changes.
type Encoder struct {
	out    bytes.Buffer
	w      *ipc.Writer
	schema *arrow.Schema
	mem    memory.Allocator
	// SplitAt is the size above which Split cuts a batch; SplitBytes by default.
	SplitAt int
}

// NewEncoder returns an Encoder; mem may be nil.
func NewEncoder(mem memory.Allocator) *Encoder {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	return &Encoder{mem: mem, SplitAt: SplitBytes}
}

// Encode returns the bytes that carry rec. Each call returns a slice of its
// own, never reused: gRPC sends it as it is (codec) and may read it after
// SendMsg returned.
func (e *Encoder) Encode(rec arrow.RecordBatch) ([]byte, error) {
	e.out = bytes.Buffer{}
	e.out.Grow(estimateBytes(rec) + 64<<10)
	if e.w == nil || !e.schema.Equal(rec.Schema()) {
		if e.w != nil {
			// Closing writes the end-of-stream marker; a new IPC stream
			// with the new schema follows in the same message.
			if err := e.w.Close(); err != nil {
				return nil, fmt.Errorf("end arrow stream: %w", err)
			}
		}
		e.schema = rec.Schema()
		e.w = ipc.NewWriter(&e.out, ipc.WithSchema(e.schema), ipc.WithAllocator(e.mem))
	}
	if err := e.w.Write(rec); err != nil {
		return nil, fmt.Errorf("encode arrow batch: %w", err)
	}
	return e.out.Bytes(), nil
}

// Split calls send with rec, or with consecutive slices of it when its
// encoding exceeds SplitBytes. last is true for the final piece.
func (e *Encoder) Split(rec arrow.RecordBatch, send func(data []byte, rows int64, last bool) error) error {
	return e.split(rec, true, send)
}

func (e *Encoder) split(rec arrow.RecordBatch, last bool, send func([]byte, int64, bool) error) error {
	if rec.NumRows() > 1 && estimateBytes(rec) > e.SplitAt {
		half := rec.NumRows() / 2
		a := rec.NewSlice(0, half)
		defer a.Release()
		b := rec.NewSlice(half, rec.NumRows())
		defer b.Release()
		if err := e.split(a, false, send); err != nil {
			return err
		}
		return e.split(b, last, send)
	}
	data, err := e.Encode(rec)
	if err != nil {
		return err
	}
	return send(data, rec.NumRows(), last)
}

// estimateBytes sums the buffer sizes of the batch's columns, an upper
// bound of its IPC body for unsliced data.
func estimateBytes(rec arrow.RecordBatch) int {
	n := 0
	for _, col := range rec.Columns() {
		n += dataBytes(col.Data())
	}
	return n
}

func dataBytes(d arrow.ArrayData) int {
	n := 0
	for _, b := range d.Buffers() {
		if b != nil {
			n += b.Len()
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}

// Decoder turns the bytes produced by an Encoder back into record batches.
// The batches it returns share the memory of the bytes given to Decode
// (IPC bodies are not copied), so those bytes must not be changed or reused
// while a batch lives; gRPC hands each received message its own slice.
type Decoder struct {
	src sliceReader
	r   *ipc.Reader
	mem memory.Allocator
}

// NewDecoder returns a Decoder; mem may be nil.
func NewDecoder(mem memory.Allocator) *Decoder {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	return &Decoder{mem: mem}
}

// Decode returns the batch carried by one message. The caller releases it.
func (d *Decoder) Decode(data []byte) (arrow.RecordBatch, error) {
	d.src.data = data
	for {
		if d.r == nil {
			d.src.Retain() // the reader releases it
			r, err := ipc.NewReaderFromMessageReader(&d.src, ipc.WithAllocator(d.mem))
			if err != nil {
				return nil, fmt.Errorf("decode arrow schema: %w", err)
			}
			d.r = r
		}
		if d.r.Next() {
			rec := d.r.RecordBatch()
			rec.Retain()
			if len(d.src.data) != 0 {
				rec.Release()
				return nil, errors.New("decode arrow batch: trailing bytes after the batch")
			}
			return rec, nil
		}
		if err := d.r.Err(); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("decode arrow batch: %w", err)
		}
		// End of one IPC stream: a new schema must follow in this message.
		d.r.Release()
		d.r = nil
		if len(d.src.data) == 0 {
			return nil, errors.New("decode arrow batch: message holds no record batch")
		}
	}
}

// sliceReader is an ipc.MessageReader over bytes in memory: each message's
// metadata and body are slices of data, not copies (ipc.NewReader would
// read them into fresh, zeroed buffers). A body that is not 8-byte aligned
// in memory, which the Encoder's output never is, is copied, since Arrow's
// typed views of buffers need the alignment.
type sliceReader struct {
	data []byte
	msg  *ipc.Message
}

// The reader is owned by its Decoder; reference counts are not needed.
func (r *sliceReader) Retain()  {}
func (r *sliceReader) Release() {}

func (r *sliceReader) Message() (msg *ipc.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			msg, err = nil, fmt.Errorf("arrow/ipc: invalid message metadata: %v", p)
		}
	}()
	if r.msg != nil {
		r.msg.Release()
		r.msg = nil
	}
	b := r.data
	if len(b) < 4 {
		if len(b) == 0 {
			return nil, io.EOF
		}
		return nil, io.ErrUnexpectedEOF
	}
	n, off := binary.LittleEndian.Uint32(b), 4
	if n == 0xFFFFFFFF { // continuation token, then the length
		if len(b) < 8 {
			return nil, io.ErrUnexpectedEOF
		}
		n, off = binary.LittleEndian.Uint32(b[4:]), 8
	}
	if n == 0 { // end of stream
		r.data = b[off:]
		return nil, io.EOF
	}
	if n < 4 || uint64(n) > uint64(len(b)-off) {
		return nil, fmt.Errorf("arrow/ipc: invalid message metadata length %d", n)
	}
	meta := memory.NewBufferBytes(b[off : off+int(n)])
	rest := b[off+int(n):]
	head := ipc.NewMessage(meta, memory.NewBufferBytes(nil))
	bodyLen := head.BodyLen()
	head.Release()
	if bodyLen < 0 || bodyLen > int64(len(rest)) {
		return nil, fmt.Errorf("arrow/ipc: invalid message body length %d", bodyLen)
	}
	body := rest[:bodyLen]
	if len(body) > 0 && uintptr(unsafe.Pointer(&body[0]))%8 != 0 {
		body = bytes.Clone(body)
	}
	r.data = rest[bodyLen:]
	r.msg = ipc.NewMessage(meta, memory.NewBufferBytes(body))
	return r.msg, nil
}

// Release frees the decoder's reader.
func (d *Decoder) Release() {
	if d.r != nil {
		d.r.Release()
		d.r = nil
	}
}

// EncodeSchema returns an IPC stream holding only schema.
func EncodeSchema(schema *arrow.Schema) ([]byte, error) {
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodeSchema reads the schema written by EncodeSchema.
func DecodeSchema(data []byte) (*arrow.Schema, error) {
	r, err := ipc.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decode arrow schema: %w", err)
	}
	defer r.Release()
	return r.Schema(), nil
}

// GRPCPlugin is the go-plugin glue for the one service of the protocol. The
// plugin side sets Server; the host side leaves it nil and dispenses a
// pluginv1.PluginClient.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl pluginv1.PluginServer
}

// GRPCServer registers the plugin's service.
func (p *GRPCPlugin) GRPCServer(b *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("wire: GRPCPlugin has no Impl")
	}
	if u, ok := p.Impl.(BrokerUser); ok {
		u.SetBroker(b)
	}
	pluginv1.RegisterPluginServer(s, p.Impl)
	return nil
}

// Conn is what the host gets for a plugin: the service's client, and the
// broker over which it serves the plugin the State service.
type Conn struct {
	Plugin pluginv1.PluginClient
	Broker *plugin.GRPCBroker
}

// BrokerUser is implemented by a plugin-side Impl that needs the broker to
// reach the host's State service.
type BrokerUser interface{ SetBroker(*plugin.GRPCBroker) }

// GRPCClient returns the host's client for the service.
func (p *GRPCPlugin) GRPCClient(_ context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Conn{Plugin: pluginv1.NewPluginClient(c), Broker: b}, nil
}

// ServeState serves the State service to the plugin over the broker and
// returns the id to pass in ConfigureRequest.state_broker_id.
func ServeState(b *plugin.GRPCBroker, srv pluginv1.StateServer) uint32 {
	id := b.NextId()
	go b.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append(opts, ServerOptions()...)...)
		pluginv1.RegisterStateServer(s, srv)
		return s
	})
	return id
}

// Batches are megabytes each: large flow-control windows and socket buffers
// let one cross in a few writes instead of hundreds of 32 KiB ones.
const (
	windowBytes = 16 << 20
	bufferBytes = 1 << 20
)

// ServerOptions raise the message size limits and windows on the plugin's
// gRPC server.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(newCodec()),
		grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.InitialWindowSize(windowBytes), grpc.InitialConnWindowSize(windowBytes),
		grpc.WriteBufferSize(bufferBytes), grpc.ReadBufferSize(bufferBytes),
	}
}

// DialOptions raise the message size limits and windows on the host's gRPC
// client.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(newCodec()), grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		grpc.WithInitialWindowSize(windowBytes), grpc.WithInitialConnWindowSize(windowBytes),
		grpc.WithWriteBufferSize(bufferBytes), grpc.WithReadBufferSize(bufferBytes),
	}
}
