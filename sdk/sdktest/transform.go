package sdktest

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// TransformTest is one transform test case.
type TransformTest struct {
	// Config is the plugin's block as a JSON object, defaults included.
	Config string
	// Records are the input, JSON objects, one per record. A record's id
	// is its row_id, else "rec-<index>".
	Records []string
	// BatchRows is how many records go in one batch; 2 by default.
	BatchRows int
	// Want are the records the transform must put out, as JSON objects in
	// order, compared by value; not checked when nil (use []string{} when
	// every record must be dropped).
	Want []string
	// Check, when set, verifies the output records with their ids.
	Check func(t testing.TB, out []Record)
}

// TestTransform runs tc against the transform in process and, when pkg is
// not empty, against the plugin process built from the package directory
// pkg. Besides Want and Check it verifies the protocol: each batch is
// answered in order and completely, and every output record keeps the id
// of a record of the batch it came from.
func TestTransform(t *testing.T, newTransform func() sdk.Transform, pkg string, tc TransformTest) {
	t.Helper()
	inBothModes(t, func() any { return newTransform() }, pkg, func(t *testing.T, pc pluginv1.PluginClient) { driveTransform(t, pc, tc) })
}

func driveTransform(t *testing.T, pc pluginv1.PluginClient, tc TransformTest) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	desc, err := pc.Describe(ctx, &pluginv1.DescribeRequest{ProtocolVersions: []uint32{wire.ProtocolVersion}})
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if desc.Kind != string(sdk.KindTransform) || desc.Type == "" || desc.Version == "" {
		t.Fatalf("Describe: kind %q, type %q, version %q: a transform must say kind transform, its type and its version", desc.Kind, desc.Type, desc.Version)
	}
	if _, err := pc.Configure(ctx, &pluginv1.ConfigureRequest{Name: "test", ConfigJson: []byte(tc.Config)}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	batches, sent, err := Batches(tc.Records, tc.BatchRows)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pc.Transform(ctx)
	if err != nil {
		t.Fatalf("Transform: %v", err)
	}
	// Input ids per batch, counted: each output record uses one up.
	ids := make([]map[string]int, len(batches))
	off := 0
	for i, rec := range batches {
		ids[i] = map[string]int{}
		for _, r := range sent[off : off+int(rec.NumRows())] {
			ids[i][r.ID]++
		}
		off += int(rec.NumRows())
	}
	// Send from another goroutine: a plugin blocked on answering would
	// otherwise stop reading.
	sendErr := make(chan error, 1)
	go func() {
		enc := wire.NewEncoder(nil)
		defer func() {
			for _, rec := range batches {
				rec.Release()
			}
		}()
		for i, rec := range batches {
			data, err := enc.Encode(rec)
			if err == nil {
				err = stream.Send(&pluginv1.TransformRequest{Seq: uint64(i + 1), Arrow: data, Rows: rec.NumRows()})
			}
			if err != nil && !errors.Is(err, io.EOF) {
				sendErr <- err
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	dec := wire.NewDecoder(nil)
	defer dec.Release()
	enc := arrowjson.NewEncoder()
	var out []Record
	var done uint64 // batches answered completely
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the transform failed after answering %d of %d batches: %v", done, len(batches), err)
		}
		if msg.Seq != done+1 {
			t.Fatalf("answer for batch %d while batch %d is due: answers must come in order, each batch answered completely (last set) before the next", msg.Seq, done+1)
		}
		if len(msg.Arrow) > 0 {
			rec, err := dec.Decode(msg.Arrow)
			if err != nil {
				t.Fatalf("batch %d: %v", msg.Seq, err)
			}
			if rec.NumRows() != msg.Rows {
				t.Fatalf("batch %d: message says %d rows, batch has %d", msg.Seq, msg.Rows, rec.NumRows())
			}
			var idCol *array.String
			if i := rec.Schema().FieldIndices(sdk.IDColumn); len(i) > 0 {
				idCol, _ = rec.Column(i[0]).(*array.String)
			}
			if idCol == nil {
				t.Fatalf("batch %d: the output has no %s column: every output record must keep its id", msg.Seq, sdk.IDColumn)
			}
			for r := 0; r < int(rec.NumRows()); r++ {
				id := idCol.Value(r)
				if ids[msg.Seq-1][id] == 0 {
					t.Fatalf("batch %d: output record %s has id %q, which is not (or no longer) one of the batch's input ids", msg.Seq, enc.AppendRow(nil, rec, r), id)
				}
				ids[msg.Seq-1][id]--
				out = append(out, Record{ID: id, JSON: string(enc.AppendRow(nil, rec, r))})
			}
			rec.Release()
		}
		if msg.Last {
			done++
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("send: %v", err)
	}
	if done != uint64(len(batches)) {
		t.Fatalf("the transform answered %d of %d batches", done, len(batches))
	}
	if tc.Want != nil {
		if len(out) != len(tc.Want) {
			t.Fatalf("the transform put out %d records, want %d:\n%v", len(out), len(tc.Want), out)
		}
		for i := range out {
			if !SameJSON(out[i].JSON, tc.Want[i]) {
				t.Errorf("output record %d = %s, want %s", i+1, out[i].JSON, tc.Want[i])
			}
		}
	}
	if tc.Check != nil {
		tc.Check(t, out)
	}
}
