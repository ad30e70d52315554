package host

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	sourcefile "github.com/pipelinehq/pipeline/plugins/source-file"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// servePartitionModes serves the plugins of this file's tests, and reports
// whether mode was one of theirs: "file" is the built-in source "file",
// "old" the numbers source as a plugin built before partitions existed.
func servePartitionModes(mode string) bool {
	switch mode {
	case "file":
		sdk.Serve(&sourcefile.Source{})
	case "old":
		inner, err := sdk.NewServer(&testSource{mode: "ok"})
		if err != nil {
			panic(err)
		}
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: wire.Handshake,
			Plugins:         plugin.PluginSet{wire.PluginKey: &wire.GRPCPlugin{Impl: &oldPlugin{inner: inner}}},
			GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
				return grpc.NewServer(append(opts, wire.ServerOptions()...)...)
			},
			Logger: hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn, JSONFormat: true}),
		})
	default:
		return false
	}
	return true
}

// oldPlugin is a plugin built before partitions: it has no Partitions
// (Unimplemented) and its Read does not know the partition field, so it
// reads the whole source whatever the request says.
type oldPlugin struct {
	pluginv1.UnimplementedPluginServer
	inner pluginv1.PluginServer
}

func (o *oldPlugin) Describe(ctx context.Context, r *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	return o.inner.Describe(ctx, r)
}

func (o *oldPlugin) Configure(ctx context.Context, r *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	return o.inner.Configure(ctx, r)
}

func (o *oldPlugin) Read(r *pluginv1.ReadRequest, s pluginv1.Plugin_ReadServer) error {
	return o.inner.Read(&pluginv1.ReadRequest{Checkpoint: r.Checkpoint}, s)
}

// batch is what one ReadMsg carried.
type batch struct {
	records []string
	pos     string
	origin  string
	places  []int64
}

func collectRead(t *testing.T, read func(fn func(ReadMsg) error) error) []batch {
	t.Helper()
	var out []batch
	enc := arrowjson.NewEncoder()
	err := read(func(m ReadMsg) error {
		b := batch{pos: string(m.Position), origin: m.Origin, places: m.Places}
		if m.Rec != nil {
			for i := 0; i < int(m.Rec.NumRows()); i++ {
				b.records = append(b.records, string(enc.AppendRow(nil, m.Rec, i)))
			}
			m.Rec.Release()
		}
		out = append(out, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func startFile(t *testing.T, path string) *Plugin {
	t.Helper()
	ctx := context.Background()
	p := startAs(t, "file", Spec{Kind: sdk.KindSource, Type: "file", Name: "calls"})
	if _, err := p.Describe(ctx); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]any{"path": path, "format": "jsonl", "on_error": "fail", "batch_rows": 2})
	if err := p.Configure(ctx, cfg, nil, ConfigureOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// Against the source "file" plugin process: Partitions lists the files,
// sorted, and ReadPartition reads each as the whole Read does, with
// positions of that file alone, resuming inside it.
func TestPartitionsAndReadPartitionOfSourceFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl.gz")
	if err := os.WriteFile(a, []byte(`{"id":1}`+"\n"+`{"id":2}`+"\n"+`{"id":3}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"id":4}` + "\n" + `{"id":5}` + "\n"))
	zw.Close()
	if err := os.WriteFile(b, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startFile(t, filepath.Join(dir, "*"))

	parts, partitioned, err := p.Partitions(ctx)
	if err != nil || !partitioned || !slices.Equal(parts, []string{a, b}) {
		t.Fatalf("Partitions = %q %v %v, want %q", parts, partitioned, err, []string{a, b})
	}
	whole := collectRead(t, func(fn func(ReadMsg) error) error { return p.Read(ctx, nil, fn) })
	for _, part := range parts {
		got := collectRead(t, func(fn func(ReadMsg) error) error { return p.ReadPartition(ctx, part, nil, fn) })
		var want []batch
		for _, w := range whole {
			if w.origin == part {
				want = append(want, w)
			}
		}
		if len(got) != len(want) || len(got) == 0 {
			t.Fatalf("partition %s: %d batches, the whole read has %d", part, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if !slices.Equal(g.records, w.records) || !slices.Equal(g.places, w.places) || g.origin != w.origin {
				t.Errorf("partition %s batch %d: %+v, the whole read %+v", part, i, g, w)
			}
			var gp, wp struct {
				Files map[string]json.RawMessage `json:"files"`
			}
			json.Unmarshal([]byte(g.pos), &gp)
			json.Unmarshal([]byte(w.pos), &wp)
			if len(gp.Files) != 1 || string(gp.Files[part]) != string(wp.Files[part]) {
				t.Errorf("partition %s batch %d: position %s, the whole read's %s", part, i, g.pos, w.pos)
			}
		}
		// Resume after the partition's first batch.
		rest := collectRead(t, func(fn func(ReadMsg) error) error { return p.ReadPartition(ctx, part, []byte(got[0].pos), fn) })
		var restRecs, wantRecs []string
		for _, r := range rest {
			restRecs = append(restRecs, r.records...)
		}
		for _, g := range got[1:] {
			wantRecs = append(wantRecs, g.records...)
		}
		if !slices.Equal(restRecs, wantRecs) {
			t.Errorf("partition %s from its first position: %q, want %q", part, restRecs, wantRecs)
		}
	}

	// Partition "" is the whole source.
	all := collectRead(t, func(fn func(ReadMsg) error) error { return p.ReadPartition(ctx, "", nil, fn) })
	if fmt.Sprint(all) != fmt.Sprint(whole) {
		t.Errorf("partition \"\": %+v, want the whole read %+v", all, whole)
	}
	// A removed file is gone from the list and reads nothing.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	if parts, _, err := p.Partitions(ctx); err != nil || !slices.Equal(parts, []string{b}) {
		t.Fatalf("after removing a: %q %v", parts, err)
	}
	if gone := collectRead(t, func(fn func(ReadMsg) error) error { return p.ReadPartition(ctx, a, nil, fn) }); len(gone) != 0 {
		t.Fatalf("removed a: %+v", gone)
	}
}

// Errors of Partitions name the plugin, as the host's other errors do.
func TestPartitionsErrorNamesThePlugin(t *testing.T) {
	ctx := context.Background()
	p := startAs(t, "file", Spec{Kind: sdk.KindSource, Type: "file", Name: "calls"})
	_, _, err := p.Partitions(ctx)
	var he *Error
	if !errors.As(err, &he) || err.Error() != `source "file" "calls": partitions: plugin is not configured` {
		t.Fatalf("Partitions before Configure: %v", err)
	}
	p = startFile(t, filepath.Join(t.TempDir(), "*.jsonl"))
	if _, _, err := p.Partitions(ctx); err == nil || !strings.HasPrefix(err.Error(), `source "file" "calls": partitions: path `) || !strings.Contains(err.Error(), "matches no files") {
		t.Fatalf("Partitions of a path that matches nothing: %v", err)
	}
}

// A source that cannot split is one partition, and a read of a partition
// of it is refused before anything is read.
func TestSourceThatDoesNotSplitIsOnePartition(t *testing.T) {
	for _, mode := range []string{"ok", "old"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			p := start(t, mode)
			if err := p.Configure(ctx, []byte(`{"count":3}`), nil, ConfigureOptions{}); err != nil {
				t.Fatal(err)
			}
			// Asked first, before any Partitions: the host finds out itself.
			n := 0
			err := p.ReadPartition(ctx, "x", nil, func(m ReadMsg) error { m.Rec.Release(); n++; return nil })
			if err == nil || n != 0 || err.Error() != `source "numbers" "n": read partition "x": the source is not partitioned (it reads as one partition, named "")` {
				t.Fatalf("ReadPartition: %d batches, %v", n, err)
			}
			parts, partitioned, err := p.Partitions(ctx)
			if err != nil || partitioned || parts != nil {
				t.Fatalf("Partitions = %q %v %v, want not partitioned", parts, partitioned, err)
			}
			// The one partition, "", is the whole source.
			err = p.ReadPartition(ctx, "", nil, func(m ReadMsg) error { n += int(m.Rec.NumRows()); m.Rec.Release(); return nil })
			if err != nil || n != 6 {
				t.Fatalf("partition \"\": %d rows, %v", n, err)
			}
		})
	}
}
