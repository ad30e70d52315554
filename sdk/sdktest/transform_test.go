package sdktest

import (
	"context"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// lengths drops records without a text and adds text_len.
type lengths struct{}

func (lengths) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindTransform, Type: "lengths", Version: "0"}
}
func (lengths) Configure(context.Context, sdk.Config) error { return nil }
func (lengths) Transform(_ context.Context, b sdk.Batch) (sdk.Batch, error) {
	i := b.Record.Schema().FieldIndices("text")
	if len(i) == 0 {
		return b.Filter(make([]bool, b.Len())), nil
	}
	text := b.Record.Column(i[0]).(*array.String)
	lb := array.NewInt64Builder(memory.DefaultAllocator)
	defer lb.Release()
	keep := make([]bool, b.Len())
	for r := range keep {
		keep[r] = text.IsValid(r)
		lb.Append(int64(len(text.Value(r))))
	}
	col := lb.NewArray()
	defer col.Release()
	out, err := b.With("text_len", col)
	if err != nil {
		return b, err
	}
	return out.Filter(keep), nil
}

func TestTransformHarness(t *testing.T) {
	TestTransform(t, func() sdk.Transform { return lengths{} }, "", TransformTest{
		Records: []string{
			`{"row_id":"a","text":"hej"}`, `{"row_id":"b","n":1}`, // one dropped
			`{"row_id":"c","n":2}`, `{"row_id":"d","n":3}`, // all dropped
			`{"text":"hello"}`,
		},
		Want: []string{`{"row_id":"a","text":"hej","text_len":3}`, `{"text":"hello","text_len":5}`},
		Check: func(t testing.TB, out []Record) {
			if len(out) != 2 || out[0].ID != "a" || out[1].ID != "rec-4" {
				t.Errorf("ids: %v", out)
			}
		},
	})
}

// forger returns a record of its own instead of one built from its input.
type forger struct{ lengths }

func (forger) Transform(_ context.Context, b sdk.Batch) (sdk.Batch, error) {
	return sdk.Batch{Record: b.Record}, nil
}

func TestServerRefusesOutputWithoutIDs(t *testing.T) {
	pc := servedClient(t, forger{})
	ctx := context.Background()
	if _, err := pc.Configure(ctx, &pluginv1.ConfigureRequest{ConfigJson: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	batches, _, err := Batches([]string{`{"text":"hej"}`}, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := wire.NewEncoder(nil).Encode(batches[0])
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pc.Transform(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pluginv1.TransformRequest{Seq: 1, Arrow: data, Rows: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Convert(err).Message() != "batch 1: the transform returned 1 records but 0 record ids: build the result from its input batch with Batch.With and Batch.Filter" {
		t.Fatalf("got %v", err)
	}
}
