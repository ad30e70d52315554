// Package sdktest tests a plugin in one call, the way the engine drives it:
// over the real plugin protocol, both in process (gRPC in memory) and as a
// real process built from the plugin's package.
//
//	func TestAudit(t *testing.T) {
//		sdktest.TestSink(t, func() sdk.Sink { return &Audit{} }, ".", sdktest.SinkTest{
//			Config:  `{"path": "` + path + `"}`,
//			Records: []string{`{"row_id":"r1","text":"hej"}`},
//			Check:   func(t testing.TB, sent []sdktest.Record) { ... },
//		})
//	}
//
// TestSource and TestTransform do the same for sources and transforms.
package sdktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/hashicorp/go-plugin"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// Record is one record sent to a sink: its id and its JSON.
type Record struct {
	ID   string
	JSON string
}

// SinkTest is one sink test case.
type SinkTest struct {
	// Config is the plugin's block as a JSON object, defaults included.
	Config string
	// Records are JSON objects, one per record. A record's id is its
	// row_id, else "rec-<index>".
	Records []string
	// BatchRows is how many records go in one batch; 2 by default, so that
	// a sink sees several batches.
	BatchRows int
	// Check verifies the destination after every record was acked. It runs
	// once per mode; Setup runs before each mode, to clean the destination.
	Check func(t testing.TB, sent []Record)
	Setup func(t testing.TB)
}

// TestSink runs tc against the sink in process and, when pkg is not empty,
// against the plugin process built from the package directory pkg (its main
// must call sdk.Serve).
func TestSink(t *testing.T, newSink func() sdk.Sink, pkg string, tc SinkTest) {
	t.Helper()
	inBothModes(t, func() any { return newSink() }, pkg, func(t *testing.T, pc pluginv1.PluginClient) { driveSink(t, pc, tc) })
}

// inBothModes runs drive against the plugin served in process, then, when
// pkg is not empty, against the process built from pkg.
func inBothModes(t *testing.T, newPlugin func() any, pkg string, drive func(*testing.T, pluginv1.PluginClient)) {
	t.Helper()
	t.Run("in-process", func(t *testing.T) {
		srv, err := sdk.NewServer(newPlugin())
		if err != nil {
			t.Fatal(err)
		}
		client, _ := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{wire.PluginKey: &wire.GRPCPlugin{Impl: srv}})
		defer client.Close()
		raw, err := client.Dispense(wire.PluginKey)
		if err != nil {
			t.Fatal(err)
		}
		drive(t, raw.(*wire.Conn).Plugin)
	})
	if pkg == "" {
		return
	}
	t.Run("process", func(t *testing.T) {
		pc, stop := StartProcess(t, pkg)
		defer stop()
		drive(t, pc)
	})
}

// StartProcess builds the plugin package in dir and starts it as the engine
// would; stop kills it.
func StartProcess(t testing.TB, dir string) (pluginv1.PluginClient, func()) {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "plugin")
	build := exec.Command("go", "build", "-o", exe, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build plugin %s: %v\n%s", dir, err, out)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  wire.Handshake,
		Plugins:          plugin.PluginSet{wire.PluginKey: &wire.GRPCPlugin{}},
		Cmd:              exec.Command(exe),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  wire.DialOptions(),
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		t.Fatalf("start plugin: %v", err)
	}
	raw, err := rpc.Dispense(wire.PluginKey)
	if err != nil {
		client.Kill()
		t.Fatal(err)
	}
	return raw.(*wire.Conn).Plugin, client.Kill
}

func driveSink(t *testing.T, pc pluginv1.PluginClient, tc SinkTest) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if tc.Setup != nil {
		tc.Setup(t)
	}
	desc, err := pc.Describe(ctx, &pluginv1.DescribeRequest{ProtocolVersions: []uint32{wire.ProtocolVersion}})
	if err != nil {
		t.Fatalf("Describe: %v", err)
	}
	if desc.Kind != string(sdk.KindSink) || desc.Type == "" || desc.Version == "" {
		t.Fatalf("Describe: kind %q, type %q, version %q: a sink must say kind sink, its type and its version", desc.Kind, desc.Type, desc.Version)
	}
	if _, err := pc.Configure(ctx, &pluginv1.ConfigureRequest{Name: "test", ConfigJson: []byte(tc.Config)}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	batches, sent, err := Batches(tc.Records, tc.BatchRows)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := pc.Write(ctx)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	enc := wire.NewEncoder(nil)
	for i, rec := range batches {
		data, err := enc.Encode(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&pluginv1.WriteRequest{Seq: uint64(i + 1), Arrow: data, Rows: rec.NumRows()}); err != nil {
			t.Fatalf("send batch %d: %v", i+1, err)
		}
		rec.Release()
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var acked uint64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the sink failed after acking %d of %d batches: %v", acked, len(batches), err)
		}
		if msg.Seq <= acked {
			t.Fatalf("ack %d after ack %d: acks must increase", msg.Seq, acked)
		}
		acked = msg.Seq
	}
	if acked != uint64(len(batches)) {
		t.Fatalf("the sink acked %d of %d batches", acked, len(batches))
	}
	if tc.Check != nil {
		tc.Check(t, sent)
	}
}

// Batches decodes JSON records into record batches of at most rows records
// each (2 when rows is 0), with the id column the engine adds.
func Batches(records []string, rows int) ([]arrow.RecordBatch, []Record, error) {
	if rows <= 0 {
		rows = 2
	}
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	var out []arrow.RecordBatch
	var sent []Record
	var ids []string
	flush := func() {
		rec := dec.Flush()
		if rec == nil {
			return
		}
		out = append(out, withIDs(rec, ids))
		ids = ids[:0]
	}
	for i, r := range records {
		if err := dec.Append([]byte(r)); err != nil {
			return nil, nil, fmt.Errorf("record %d: %w", i+1, err)
		}
		var v struct {
			RowID string `json:"row_id"`
		}
		_ = json.Unmarshal([]byte(r), &v)
		id := v.RowID
		if id == "" {
			id = fmt.Sprintf("rec-%d", i)
		}
		ids = append(ids, id)
		sent = append(sent, Record{ID: id, JSON: r})
		if dec.Len() >= rows {
			flush()
		}
	}
	flush()
	return out, sent, nil
}

func withIDs(rec arrow.RecordBatch, ids []string) arrow.RecordBatch {
	defer rec.Release()
	b := array.NewStringBuilder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues(ids, nil)
	col := b.NewArray()
	defer col.Release()
	fields := append(append([]arrow.Field(nil), rec.Schema().Fields()...), arrow.Field{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String, Nullable: true})
	cols := append(append([]arrow.Array(nil), rec.Columns()...), col)
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows())
}

// SameJSON reports whether two JSON texts hold the same value.
func SameJSON(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}
