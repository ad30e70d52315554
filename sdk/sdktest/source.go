package sdktest

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// SourceTest is one source test case.
type SourceTest struct {
	// Config is the plugin's block as a JSON object, defaults included.
	Config string
	// Want are the records the source must emit, as JSON objects, in order.
	// They are compared by value.
	Want []string
	// Setup runs before each mode, to prepare the input.
	Setup func(t testing.TB)
}

// TestSource runs tc against the source in process and, when pkg is not
// empty, against the plugin process built from the package directory pkg.
// It reads everything, checks the records against Want, then reads again
// from the last position and checks that nothing more comes. When the
// source lists partitions (sdk.Partitioner), it then reads each partition
// on its own the same way: together they must hold exactly Want's records
// (in any order across partitions), and each must give nothing more from
// its own last position. A source that is not partitioned must refuse a
// Read of a partition.
func TestSource(t *testing.T, newSource func() sdk.Source, pkg string, tc SourceTest) {
	t.Helper()
	inBothModes(t, func() any { return newSource() }, pkg, func(t *testing.T, pc pluginv1.PluginClient) { driveSource(t, pc, tc) })
}

func driveSource(t *testing.T, pc pluginv1.PluginClient, tc SourceTest) {
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
	if desc.Kind != string(sdk.KindSource) || desc.Type == "" || desc.Version == "" {
		t.Fatalf("Describe: kind %q, type %q, version %q: a source must say kind source, its type and its version", desc.Kind, desc.Type, desc.Version)
	}
	if _, err := pc.Configure(ctx, &pluginv1.ConfigureRequest{Name: "test", ConfigJson: []byte(tc.Config)}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	got, pos := readAll(t, ctx, pc, nil)
	if len(got) != len(tc.Want) {
		t.Fatalf("the source emitted %d records, want %d:\n%q", len(got), len(tc.Want), got)
	}
	for i := range got {
		if !SameJSON(got[i], tc.Want[i]) {
			t.Errorf("record %d = %s, want %s", i+1, got[i], tc.Want[i])
		}
	}
	if len(got) > 0 && pos == nil {
		t.Fatal("no batch carried a position: a re-run could not resume")
	}
	if again, _ := readAll(t, ctx, pc, pos); len(again) != 0 {
		t.Errorf("reading again from the last position gave %d records, want none", len(again))
	}
	drivePartitions(t, ctx, pc, tc)
}

// drivePartitions reads each partition on its own and checks that together
// they hold Want's records.
func drivePartitions(t *testing.T, ctx context.Context, pc pluginv1.PluginClient, tc SourceTest) {
	t.Helper()
	resp, err := pc.Partitions(ctx, &pluginv1.PartitionsRequest{})
	if err != nil {
		t.Fatalf("Partitions: %v", err)
	}
	if !resp.Partitioned {
		if len(resp.Partitions) > 0 {
			t.Fatalf("Partitions: not partitioned, but lists %q", resp.Partitions)
		}
		stream, err := pc.Read(ctx, &pluginv1.ReadRequest{Partition: "no-such-partition"})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("a Read of a partition of a source that is not partitioned gave %v, want InvalidArgument", err)
		}
		return
	}
	if !slices.IsSorted(resp.Partitions) {
		t.Fatalf("Partitions %q are not sorted", resp.Partitions)
	}
	var got []string
	for _, part := range resp.Partitions {
		recs, pos := readPartition(t, ctx, pc, part, nil)
		got = append(got, recs...)
		if len(recs) > 0 && pos == nil {
			t.Fatalf("partition %q: no batch carried a position: a re-run could not resume", part)
		}
		if again, _ := readPartition(t, ctx, pc, part, pos); len(again) != 0 {
			t.Errorf("partition %q: reading again from its last position gave %d records, want none", part, len(again))
		}
	}
	if len(got) != len(tc.Want) {
		t.Fatalf("the partitions %q emitted %d records together, want %d:\n%q", resp.Partitions, len(got), len(tc.Want), got)
	}
	left := slices.Clone(tc.Want)
	for _, g := range got {
		i := slices.IndexFunc(left, func(w string) bool { return SameJSON(g, w) })
		if i < 0 {
			t.Errorf("the partitions emitted %s, which is not one of the wanted records (or came twice)", g)
			continue
		}
		left = slices.Delete(left, i, i+1)
	}
}

func readAll(t *testing.T, ctx context.Context, pc pluginv1.PluginClient, from []byte) ([]string, []byte) {
	t.Helper()
	return readPartition(t, ctx, pc, "", from)
}

func readPartition(t *testing.T, ctx context.Context, pc pluginv1.PluginClient, partition string, from []byte) ([]string, []byte) {
	t.Helper()
	stream, err := pc.Read(ctx, &pluginv1.ReadRequest{Checkpoint: from, Partition: partition})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	dec := wire.NewDecoder(nil)
	defer dec.Release()
	enc := arrowjson.NewEncoder()
	var out []string
	var pos []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, pos
		}
		if err != nil {
			if partition != "" {
				t.Fatalf("Read of partition %q after %d records: %v", partition, len(out), err)
			}
			t.Fatalf("Read after %d records: %v", len(out), err)
		}
		if len(msg.Position) > 0 {
			pos = msg.Position
		}
		if len(msg.Arrow) == 0 {
			continue
		}
		rec, err := dec.Decode(msg.Arrow)
		if err != nil {
			t.Fatal(err)
		}
		if rec.NumRows() != msg.Rows {
			t.Fatalf("message says %d rows, batch has %d", msg.Rows, rec.NumRows())
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			out = append(out, string(enc.AppendRow(nil, rec, i)))
		}
		rec.Release()
	}
}
