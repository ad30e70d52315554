package wire

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/protobuf/proto"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// A message's Arrow bytes go out as they are: the encoded message is the
// rest of it, then the bytes themselves (not a copy), and it decodes to the
// message that was sent, which Marshal leaves as it was.
func TestCodecSendsArrowBytesWithoutCopying(t *testing.T) {
	c := newCodec()
	data := bytes.Repeat([]byte("arrow ipc bytes "), 8<<10) // 128 KiB
	for _, msg := range []proto.Message{
		&pluginv1.WriteRequest{Seq: 7, Arrow: data, Rows: 8192},
		&pluginv1.ReadResponse{Arrow: data, Rows: 8192, Position: []byte("pos"), Skipped: 3},
		&pluginv1.TransformRequest{Seq: 2, Arrow: data, Rows: 5},
		&pluginv1.TransformResponse{Seq: 2, Arrow: data, Rows: 5, Last: true},
	} {
		want := proto.Clone(msg)
		out, err := c.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 2 || unsafe.SliceData(out[1].ReadOnlyData()) != unsafe.SliceData(data) {
			t.Fatalf("%T: %d buffers; want the message's head, then its Arrow bytes themselves", msg, len(out))
		}
		if !proto.Equal(msg, want) {
			t.Fatalf("%T: Marshal changed the message", msg)
		}
		got := msg.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(out.Materialize(), got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("%T: decoded %v, want %v", msg, got, want)
		}
	}
	// Small Arrow bytes, and messages without them, are encoded as gRPC's
	// codec does.
	for _, msg := range []proto.Message{
		&pluginv1.WriteRequest{Seq: 1, Arrow: []byte("small"), Rows: 1},
		&pluginv1.WriteRequest{Abort: true},
		&pluginv1.ReadRequest{Checkpoint: []byte("cp")},
	} {
		out, err := c.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		std, _ := proto.Marshal(msg)
		if !bytes.Equal(out.Materialize(), std) {
			t.Fatalf("%T: %x, want %x", msg, out.Materialize(), std)
		}
	}
	if _, err := c.Marshal(struct{}{}); err == nil {
		t.Fatal("marshalled a value that is not a message")
	}
}

// Every message gets bytes of its own from the Encoder: gRPC may still be
// sending the last one.
func TestEncoderNeverReusesItsBytes(t *testing.T) {
	rec := intBatch(t, memory.DefaultAllocator, []string{"a"}, 100)
	defer rec.Release()
	enc := NewEncoder(nil)
	first, err := enc.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	kept := bytes.Clone(first)
	other := intBatch(t, memory.DefaultAllocator, []string{"a"}, 50)
	defer other.Release()
	if _, err := enc.Encode(other); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, kept) {
		t.Fatal("the next Encode overwrote the bytes of the last")
	}
}
