package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/hashicorp/go-plugin"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// testTransform keeps the records whose n is even and adds double = 2n.
// In mode "transform-forge" it hands back records under ids of its own.
type testTransform struct{ mode string }

func (*testTransform) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindTransform, Type: "evens", Version: "1.2.3"}
}

func (*testTransform) Configure(context.Context, sdk.Config) error { return nil }

func (tr *testTransform) Transform(_ context.Context, b sdk.Batch) (sdk.Batch, error) {
	n := b.Record.Column(0).(*array.Int64)
	if tr.mode == "transform-fail" && n.Value(0) == 3 {
		return b, errors.New("the model endpoint answered 503 for record 1")
	}
	if tr.mode == "transform-big" {
		// Above wire.SplitBytes in all, so the SDK splits the output.
		big := array.NewStringBuilder(memory.DefaultAllocator)
		defer big.Release()
		for i := 0; i < b.Len(); i++ {
			big.Append(strings.Repeat("x", wire.SplitBytes/2+1))
		}
		col := big.NewArray()
		defer col.Release()
		return b.With("big", col)
	}
	if tr.mode == "transform-forge" {
		ids := make([]string, b.Len())
		for i := range ids {
			ids[i] = fmt.Sprintf("forged-%d", i)
		}
		return sdk.NewBatch(numbers(n.Int64Values(), ids)), nil
	}
	keep := make([]bool, b.Len())
	db := array.NewInt64Builder(memory.DefaultAllocator)
	defer db.Release()
	for i := range keep {
		keep[i] = n.Value(i)%2 == 0
		db.Append(2 * n.Value(i))
	}
	double := db.NewArray()
	defer double.Release()
	out, err := b.With("double", double)
	if err != nil {
		return b, err
	}
	return out.Filter(keep), nil
}

// numbers is a batch of column n with the engine's id column.
func numbers(ns []int64, ids []string) arrow.RecordBatch {
	nb := array.NewInt64Builder(memory.DefaultAllocator)
	defer nb.Release()
	nb.AppendValues(ns, nil)
	ib := array.NewStringBuilder(memory.DefaultAllocator)
	defer ib.Release()
	ib.AppendValues(ids, nil)
	n, id := nb.NewArray(), ib.NewArray()
	defer n.Release()
	defer id.Release()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	return array.NewRecordBatch(schema, []arrow.Array{n, id}, int64(len(ns)))
}

// result is a TransformResult with its records as "id:n:double" rows.
type result struct {
	Token any
	Rows  []string
}

// runTransform sends each batch with its index as token and collects the
// results.
func runTransform(t *testing.T, ts *TransformStream, batches ...arrow.RecordBatch) ([]result, error) {
	t.Helper()
	for i, rec := range batches {
		err := ts.Send(rec, i)
		rec.Release()
		if err != nil {
			return nil, err
		}
	}
	if err := ts.CloseSend(); err != nil {
		return nil, err
	}
	var got []result
	for r := range ts.Results() {
		res := result{Token: r.Token}
		for _, rec := range r.Recs {
			ids := rec.Column(int(rec.Schema().FieldIndices(sdk.IDColumn)[0])).(*array.String)
			for i := 0; i < int(rec.NumRows()); i++ {
				row := ids.Value(i)
				for c := 0; c < int(rec.NumCols()); c++ {
					if col, ok := rec.Column(c).(*array.Int64); ok {
						row += fmt.Sprintf(":%d", col.Value(i))
					}
				}
				res.Rows = append(res.Rows, row)
			}
			rec.Release()
		}
		got = append(got, res)
	}
	return got, ts.Wait()
}

func TestTransformProcess(t *testing.T) {
	ctx := context.Background()
	p := startAs(t, "transform", Spec{Kind: sdk.KindTransform, Type: "evens", Name: "t"})
	if info, err := p.Describe(ctx); err != nil || info.Kind != sdk.KindTransform {
		t.Fatalf("describe: %+v, %v", info, err)
	}
	if err := p.Configure(ctx, []byte(`{}`), nil, ConfigureOptions{}); err != nil {
		t.Fatal(err)
	}
	ts, err := p.Transform(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := runTransform(t, ts,
		numbers([]int64{1, 2, 3, 4}, []string{"a", "b", "c", "d"}),
		numbers([]int64{1, 3}, []string{"e", "f"}), // all dropped
		numbers([]int64{6}, []string{"g"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []result{{0, []string{"b:2:4", "d:4:8"}}, {1, nil}, {2, []string{"g:6:12"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
}

func TestTransformForgedIDsAreAProtocolError(t *testing.T) {
	ctx := context.Background()
	p := startAs(t, "transform-forge", Spec{Kind: sdk.KindTransform, Type: "evens", Name: "t"})
	if err := p.Configure(ctx, []byte(`{}`), nil, ConfigureOptions{}); err != nil {
		t.Fatal(err)
	}
	ts, err := p.Transform(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = runTransform(t, ts, numbers([]int64{1, 2}, []string{"a", "b"}))
	if err == nil || !strings.HasPrefix(err.Error(), `transform "evens" "t": transform: protocol error: batch 1: output row 0 has record id "forged-0", which is not one of its input batch's ids`) {
		t.Fatalf("got %v", err)
	}
}

func TestTransformFailureNamesThePlugin(t *testing.T) {
	ctx := context.Background()
	p := startAs(t, "transform-fail", Spec{Kind: sdk.KindTransform, Type: "evens", Name: "t"})
	if err := p.Configure(ctx, []byte(`{}`), nil, ConfigureOptions{}); err != nil {
		t.Fatal(err)
	}
	ts, err := p.Transform(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := runTransform(t, ts, numbers([]int64{2}, []string{"a"}), numbers([]int64{3}, []string{"b"}))
	if err == nil || err.Error() != `transform "evens" "t": transform: the model endpoint answered 503 for record 1` {
		t.Fatalf("got %v", err)
	}
	if len(got) != 1 || got[0].Token != 0 {
		t.Fatalf("results before the failure: %v", got)
	}
}

func TestTransformLargeOutputIsSplitAndGathered(t *testing.T) {
	ctx := context.Background()
	p := startAs(t, "transform-big", Spec{Kind: sdk.KindTransform, Type: "evens", Name: "t"})
	if err := p.Configure(ctx, []byte(`{}`), nil, ConfigureOptions{}); err != nil {
		t.Fatal(err)
	}
	ts, err := p.Transform(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Send(numbers([]int64{1, 2}, []string{"a", "b"}), "only"); err != nil {
		t.Fatal(err)
	}
	if err := ts.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var results []TransformResult
	for r := range ts.Results() {
		results = append(results, r)
	}
	if err := ts.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Token != "only" || len(results[0].Recs) != 2 {
		t.Fatalf("want one result of two pieces, got %d results: %+v", len(results), results)
	}
	for i, rec := range results[0].Recs {
		big := rec.Column(rec.Schema().FieldIndices("big")[0]).(*array.String)
		if rec.NumRows() != 1 || big.ValueLen(0) != wire.SplitBytes/2+1 {
			t.Errorf("piece %d: %d rows, value of %d bytes", i, rec.NumRows(), big.ValueLen(0))
		}
		rec.Release()
	}
}

// fakeTransform answers every request the way its answer function says,
// so that tests can make a plugin that splits its output or misbehaves.
type fakeTransform struct {
	pluginv1.UnimplementedPluginServer
	answer func(req *pluginv1.TransformRequest, rec arrow.RecordBatch, send func(rec arrow.RecordBatch, seq uint64, last bool) error) error
}

func (f *fakeTransform) Transform(stream pluginv1.Plugin_TransformServer) error {
	dec, enc := wire.NewDecoder(nil), wire.NewEncoder(nil)
	defer dec.Release()
	send := func(rec arrow.RecordBatch, seq uint64, last bool) error {
		msg := &pluginv1.TransformResponse{Seq: seq, Last: last}
		if rec != nil {
			data, err := enc.Encode(rec)
			if err != nil {
				return err
			}
			msg.Arrow, msg.Rows = data, rec.NumRows()
		}
		return stream.Send(msg)
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rec, err := dec.Decode(req.Arrow)
		if err != nil {
			return err
		}
		err = f.answer(req, rec, send)
		rec.Release()
		if err != nil {
			return err
		}
	}
}

func fakePlugin(t *testing.T, srv pluginv1.PluginServer) *Plugin {
	t.Helper()
	client, _ := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{wire.PluginKey: &wire.GRPCPlugin{Impl: srv}})
	t.Cleanup(func() { client.Close() })
	raw, err := client.Dispense(wire.PluginKey)
	if err != nil {
		t.Fatal(err)
	}
	return &Plugin{spec: Spec{Kind: sdk.KindTransform, Type: "fake", Name: "f"}, rpc: raw.(*wire.Conn).Plugin}
}

func TestTransformSplitInputAndOutput(t *testing.T) {
	// Each request is answered row by row: one response per row, the
	// last one marked.
	p := fakePlugin(t, &fakeTransform{answer: func(req *pluginv1.TransformRequest, rec arrow.RecordBatch, send func(arrow.RecordBatch, uint64, bool) error) error {
		for i := int64(0); i < rec.NumRows(); i++ {
			row := rec.NewSlice(i, i+1)
			err := send(row, req.Seq, i == rec.NumRows()-1)
			row.Release()
			if err != nil {
				return err
			}
		}
		return nil
	}})
	ts, err := p.Transform(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ts.enc.SplitAt = 1 // the host cuts every batch into single rows
	got, err := runTransform(t, ts,
		numbers([]int64{1, 2, 3}, []string{"a", "b", "c"}),
		numbers([]int64{4}, []string{"d"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []result{{0, []string{"a:1", "b:2", "c:3"}}, {1, []string{"d:4"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
}

func TestTransformProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(req *pluginv1.TransformRequest, rec arrow.RecordBatch, send func(arrow.RecordBatch, uint64, bool) error) error
		want   string
	}{{
		name: "answer for another batch",
		answer: func(req *pluginv1.TransformRequest, rec arrow.RecordBatch, send func(arrow.RecordBatch, uint64, bool) error) error {
			return send(rec, req.Seq+1, true)
		},
		want: `transform "fake" "f": transform: protocol error: the plugin answered batch 2, but the next answer is due for batch 1 (answers must come in order)`,
	}, {
		name: "duplicated row",
		answer: func(req *pluginv1.TransformRequest, rec arrow.RecordBatch, send func(arrow.RecordBatch, uint64, bool) error) error {
			if err := send(rec, req.Seq, false); err != nil {
				return err
			}
			return send(rec, req.Seq, true)
		},
		want: `transform "fake" "f": transform: protocol error: batch 1: output row 0 has record id "a", which is not one of its input batch's ids`,
	}, {
		name: "ids dropped",
		answer: func(req *pluginv1.TransformRequest, rec arrow.RecordBatch, send func(arrow.RecordBatch, uint64, bool) error) error {
			noIDs := array.NewRecordBatch(arrow.NewSchema(rec.Schema().Fields()[:1], nil), rec.Columns()[:1], rec.NumRows())
			defer noIDs.Release()
			return send(noIDs, req.Seq, true)
		},
		want: `transform "fake" "f": transform: protocol error: batch 1: 1 output rows without the _pipeline_id column`,
	}, {
		name: "stream ended early",
		answer: func(*pluginv1.TransformRequest, arrow.RecordBatch, func(arrow.RecordBatch, uint64, bool) error) error {
			return nil
		},
		want: `transform "fake" "f": transform: the plugin ended its stream with 1 batches unanswered`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := fakePlugin(t, &fakeTransform{answer: tc.answer}).Transform(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			_, err = runTransform(t, ts, numbers([]int64{1}, []string{"a"}))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %s…", err, tc.want)
			}
		})
	}
}
