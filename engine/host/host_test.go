package host

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

// The test binary doubles as the plugin (go-plugin's helper-process
// pattern): with PIPELINE_HOST_TEST_PLUGIN set it serves a source, or a
// transform for the modes starting with "transform".
func TestMain(m *testing.M) {
	if mode := os.Getenv("PIPELINE_HOST_TEST_PLUGIN"); servePartitionModes(mode) {
		os.Exit(0)
	} else if strings.HasPrefix(mode, "transform") {
		sdk.Serve(&testTransform{mode: mode})
		os.Exit(0)
	} else if mode != "" {
		sdk.Serve(&testSource{mode: mode})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type testSource struct{ mode string }

func (s *testSource) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindSource, Type: "numbers", Version: "9.9.9", Config: []sdk.Attribute{
		{Name: "count", Type: sdk.Number, Default: 3},
	}}
}

func (s *testSource) Configure(_ context.Context, cfg sdk.Config) error {
	if strings.Contains(string(cfg.JSON), "bad") {
		return errors.New("count must be a number")
	}
	return nil
}

func (s *testSource) Read(_ context.Context, from []byte, emit sdk.Emitter) error {
	for i := int64(len(from)); i < 3; i++ {
		if s.mode == "crash" && i == 1 {
			sdk.Logger().Error("about to fall over", "batch", i)
			os.Exit(7)
		}
		b := array.NewInt64Builder(memory.DefaultAllocator)
		b.AppendValues([]int64{i, i * 10}, nil)
		col := b.NewArray()
		rec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true}}, nil), []arrow.Array{col}, 2)
		col.Release()
		if err := emit.Emit(rec, append(from, 'x')); err != nil {
			return err
		}
		from = append(from, 'x')
	}
	return nil
}

func start(t *testing.T, mode string) *Plugin {
	t.Helper()
	return startAs(t, mode, Spec{Kind: sdk.KindSource, Type: "numbers", Name: "n"})
}

func startAs(t *testing.T, mode string, spec Spec) *Plugin {
	t.Helper()
	t.Setenv("PIPELINE_HOST_TEST_PLUGIN", mode)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec.Command = []string{exe}
	p, err := Start(context.Background(), spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func TestDescribeConfigureRead(t *testing.T) {
	ctx := context.Background()
	p := start(t, "ok")
	info, err := p.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != "9.9.9" || len(info.Config) != 1 || info.Config[0].Default != float64(3) {
		t.Fatalf("info %+v", info)
	}
	if err := p.Configure(ctx, []byte(`{"count":"bad"}`), nil, ConfigureOptions{}); err == nil || err.Error() != `source "numbers" "n": count must be a number` {
		t.Fatalf("configure error %v", err)
	}
	if err := p.Configure(ctx, []byte(`{"count":3}`), nil, ConfigureOptions{}); err != nil {
		t.Fatal(err)
	}
	var got []int64
	var positions []string
	err = p.Read(ctx, []byte("x"), func(m ReadMsg) error {
		defer m.Rec.Release()
		col := m.Rec.Column(0).(*array.Int64)
		got = append(got, col.Int64Values()...)
		positions = append(positions, string(m.Position))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0] != 1 || got[3] != 20 || strings.Join(positions, ",") != "xx,xxx" {
		t.Fatalf("read from checkpoint x: values %v positions %v", got, positions)
	}
}

func TestCrashIsReportedWithExitStatusAndLogs(t *testing.T) {
	ctx := context.Background()
	p := start(t, "crash")
	if err := p.Configure(ctx, []byte(`{}`), nil, ConfigureOptions{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := p.Read(ctx, nil, func(m ReadMsg) error { m.Rec.Release(); n++; return nil })
	var he *Error
	if !errors.As(err, &he) {
		t.Fatalf("got %v", err)
	}
	// The batch before the crash may or may not have left the process.
	if n > 1 || he.Exit != "exit status 7" || !strings.Contains(strings.Join(he.Logs, "\n"), "about to fall over") {
		t.Fatalf("batches %d, error %+v", n, he)
	}
	if !strings.Contains(err.Error(), `plugin source "numbers" "n" exited unexpectedly (exit status 7)`) {
		t.Fatalf("message: %v", err)
	}
}

func TestChecksumMismatchRefuses(t *testing.T) {
	exe, _ := os.Executable()
	_, err := Start(context.Background(), Spec{Kind: sdk.KindSource, Type: "numbers", Command: []string{exe}, SHA256: strings.Repeat("0", 64)}, Options{})
	if err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("got %v", err)
	}
}
