// Package host starts plugin processes, talks to them over the plugin
// protocol, and stops them. It reports a plugin's failures by the plugin's
// name, with its exit status and its last log lines.
package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// Spec says which plugin to start and how.
type Spec struct {
	Kind sdk.Kind
	Type string
	// Name is the block's name label; empty when the plugin is only asked
	// to describe itself.
	Name string
	// Command is the executable and its arguments.
	Command []string
	// SHA256, when set, pins the executable's checksum (hex).
	SHA256 string
}

// Label names the plugin as the user wrote it: sink "webhook" "crm".
func (s Spec) Label() string {
	if s.Name == "" {
		return fmt.Sprintf("%s %q", s.Kind, s.Type)
	}
	return fmt.Sprintf("%s %q %q", s.Kind, s.Type, s.Name)
}

// Options tune how plugins are started.
type Options struct {
	// Logger receives the plugin's log lines, tagged with its label.
	Logger *slog.Logger
	// StartTimeout bounds the handshake; 30 s by default.
	StartTimeout time.Duration
}

// Plugin is a running plugin process.
type Plugin struct {
	spec   Spec
	client *plugin.Client
	rpc    pluginv1.PluginClient
	broker *plugin.GRPCBroker
	runner *procRunner
	logs   *logTail
	// buffered is what Describe said: the sink acks only on flushes.
	buffered bool
	// configWarnings are what Configure answered (sdk.Config.Warn).
	configWarnings []string

	// partMu guards partitioned: what Partitions answered, once asked
	// (0 not yet, 1 partitioned, 2 not).
	partMu      sync.Mutex
	partitioned int
}

// Buffered reports whether the plugin said (in Describe) that it is a
// buffered sink, which acks batches only when it flushes them.
func (p *Plugin) Buffered() bool { return p.buffered }

// Start starts the plugin process and completes the handshake.
func Start(ctx context.Context, spec Spec, opts Options) (*Plugin, error) {
	if len(spec.Command) == 0 {
		return nil, fmt.Errorf("%s: no command to start", spec.Label())
	}
	path, err := exec.LookPath(spec.Command[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.Label(), err)
	}
	if spec.SHA256 != "" {
		if err := checkSum(path, spec.SHA256); err != nil {
			return nil, fmt.Errorf("%s: refusing to start %s: %w", spec.Label(), path, err)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	p := &Plugin{spec: spec, logs: newLogTail(opts.Logger.With("plugin", spec.Label()), 20)}
	argv := append([]string{path}, spec.Command[1:]...)
	p.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  wire.Handshake,
		Plugins:          plugin.PluginSet{wire.PluginKey: &wire.GRPCPlugin{}},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
			r, err := newProcRunner(argv, spec.Env)
			p.runner = r
			return r, err
		},
		Stderr:          p.logs,
		Logger:          hclog.NewNullLogger(),
		StartTimeout:    opts.StartTimeout,
		GRPCDialOptions: wire.DialOptions(),
	})
	rpcClient, err := p.client.Client()
	if err != nil {
		p.client.Kill()
		return nil, p.errOp("start", err)
	}
	raw, err := rpcClient.Dispense(wire.PluginKey)
	if err != nil {
		p.client.Kill()
		return nil, p.errOp("start", err)
	}
	conn := raw.(*wire.Conn)
	p.rpc, p.broker = conn.Plugin, conn.Broker
	return p, nil
}

func checkSum(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	got := hex.EncodeToString(h.Sum(nil))
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("sha256 mismatch: the file's checksum is %s, the pipeline pins %s", got, want)
	}
	return nil
}

// Spec returns what the plugin was started from.
func (p *Plugin) Spec() Spec { return p.spec }

// Stop asks the plugin to exit and kills it if it does not.
func (p *Plugin) Stop() { p.client.Kill() }

// Exited reports whether the process has ended.
func (p *Plugin) Exited() bool { return p.client.Exited() }

// Err wraps an error from talking to the plugin with the plugin's label and,
// when the process has died, its exit status and last log lines.
func (p *Plugin) Err(err error) error { return p.errOp("", err) }

// errOp is Err with the operation that failed ("read", "describe") put in
// front of the plugin's own message.
func (p *Plugin) errOp(op string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	// An answer from the plugin means it is alive; anything else (the
	// connection broke, the stream ended) may mean it died.
	answered := false
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
		if st.Code() == codes.Canceled {
			return &Error{Plugin: p.spec.Label(), Msg: "cancelled", Canceled: true}
		}
		answered = st.Code() != codes.Unavailable && st.Code() != codes.Internal
	}
	if op != "" {
		msg = op + ": " + msg
	}
	e := &Error{Plugin: p.spec.Label(), Msg: msg}
	if p.runner != nil {
		// The stream usually breaks before the process is reaped.
		wait := 2 * time.Second
		if answered {
			wait = 0
		}
		select {
		case <-p.runner.done:
		case <-time.After(wait):
		}
		if st, done := p.runner.exitStatus(); done {
			e.Exit = st
			e.Logs = p.logs.lines()
		}
	}
	return e
}

// Error is a failure of one plugin.
type Error struct {
	Plugin   string
	Msg      string
	Exit     string   // how the process ended, if it did
	Logs     []string // its last log lines, if it ended
	Canceled bool
}

// Is makes a cancelled call match context.Canceled.
func (e *Error) Is(target error) bool { return e.Canceled && target == context.Canceled }

func (e *Error) Error() string {
	var b strings.Builder
	if e.Exit != "" {
		fmt.Fprintf(&b, "plugin %s exited unexpectedly (%s): %s", e.Plugin, e.Exit, e.Msg)
		if len(e.Logs) > 0 {
			b.WriteString("\nlast log lines:")
			for _, l := range e.Logs {
				b.WriteString("\n  " + l)
			}
		}
		return b.String()
	}
	return fmt.Sprintf("%s: %s", e.Plugin, e.Msg)
}

// Describe asks the plugin what it is.
func (p *Plugin) Describe(ctx context.Context) (sdk.Info, error) {
	resp, err := p.rpc.Describe(ctx, &pluginv1.DescribeRequest{ProtocolVersions: []uint32{wire.ProtocolVersion}})
	if err != nil {
		return sdk.Info{}, p.errOp("describe", err)
	}
	info, err := InfoFromProto(resp)
	if err != nil {
		return info, p.Err(err)
	}
	p.buffered = resp.Buffered
	if info.Kind != p.spec.Kind || info.Type != p.spec.Type {
		return info, p.Err(fmt.Errorf("the plugin says it is %s %q, not %s %q", info.Kind, info.Type, p.spec.Kind, p.spec.Type))
	}
	return info, nil
}

// InfoFromProto converts a Describe answer, checking the protocol version.
func InfoFromProto(resp *pluginv1.DescribeResponse) (sdk.Info, error) {
	info := sdk.Info{Kind: sdk.Kind(resp.Kind), Type: resp.Type, Version: resp.Version, Description: resp.Description, Push: resp.Push}
	attrs, err := attributesFromProto(resp.Config)
	if err != nil {
		return info, err
	}
	info.Config = attrs
	for _, v := range resp.ProtocolVersions {
		if v == wire.ProtocolVersion {
			return info, nil
		}
	}
	return info, fmt.Errorf("describe: plugin speaks protocol versions %v, this engine speaks %d", resp.ProtocolVersions, wire.ProtocolVersion)
}

// ConfigureOptions are what the engine gives a plugin besides its block.
type ConfigureOptions struct {
	// State, when set, is served to the plugin (its outbox and cursors).
	State pluginv1.StateServer
	// NoWait lets a sink end its stream with deliveries still pending.
	NoWait bool
	// FullRefresh tells a sink this run exports everything again.
	FullRefresh bool
	// BaseDir is the absolute directory of the block's pipeline file.
	BaseDir string
}

func attributesFromProto(list []*pluginv1.Attribute) ([]sdk.Attribute, error) {
	var out []sdk.Attribute
	for _, a := range list {
		attr := sdk.Attribute{Name: a.Name, Type: sdk.Type(a.Type), Required: a.Required, Description: a.Description, Template: a.Template, Expression: a.Expression}
		if a.DefaultJson != "" {
			if err := json.Unmarshal([]byte(a.DefaultJson), &attr.Default); err != nil {
				return nil, fmt.Errorf("describe: attribute %s has a bad default: %v", a.Name, err)
			}
		}
		nested, err := attributesFromProto(a.Nested)
		if err != nil {
			return nil, err
		}
		attr.Nested = nested
		out = append(out, attr)
	}
	return out, nil
}

// Configure hands the plugin its decoded block.
func (p *Plugin) Configure(ctx context.Context, config []byte, templates []string, opts ConfigureOptions) error {
	sort.Strings(templates)
	req := &pluginv1.ConfigureRequest{Name: p.spec.Name, ConfigJson: config, Templates: templates, NoWait: opts.NoWait, FullRefresh: opts.FullRefresh, BaseDir: opts.BaseDir}
	if opts.State != nil && p.broker != nil {
		req.StateBrokerId = wire.ServeState(p.broker, opts.State)
	}
	resp, err := p.rpc.Configure(ctx, req)
	if err != nil {
		return p.Err(err)
	}
	p.configWarnings = resp.Warnings
	return nil
}

// ConfigWarnings are what the plugin warned about its block when it was
// configured.
func (p *Plugin) ConfigWarnings() []string { return p.configWarnings }

// Schema asks a source for its schema; nil without error when it cannot
// tell before reading.
func (p *Plugin) Schema(ctx context.Context) (*arrow.Schema, error) {
	resp, err := p.rpc.Schema(ctx, &pluginv1.SchemaRequest{})
	if status.Code(err) == codes.Unimplemented {
		return nil, nil
	}
	if err != nil {
		return nil, p.errOp("schema", err)
	}
	schema, err := wire.DecodeSchema(resp.ArrowSchema)
	if err != nil {
		return nil, p.Err(fmt.Errorf("schema: %w", err))
	}
	return schema, nil
}

// ReadMsg is one message of a source's stream.
type ReadMsg struct {
	// Rec is the batch; nil for a message that only reports skips. The
	// callback owns it and releases it.
	Rec arrow.RecordBatch
	// Position is where a later run can resume after this batch; empty when
	// the batch is the first part of a larger batch that was split.
	Position []byte
	Skipped  int64
	// Origin, PlaceUnit and Places say where each row is in the source's
	// input (sdk.Origin); Origin is empty when the source does not say.
	Origin    string
	PlaceUnit string
	Places    []int64
	// IDs are the records' ids when the source assigned them.
	IDs []string
}

// Partitions asks a configured source which partitions it splits into now
// (sorted, each a stable name; sdk.Partitioner). partitioned is false for
// a source that cannot split: it is one partition, named "", read with
// Read. A plugin built before partitions existed answers Unimplemented,
// which is partitioned = false too.
func (p *Plugin) Partitions(ctx context.Context) (parts []string, partitioned bool, err error) {
	resp, err := p.rpc.Partitions(ctx, &pluginv1.PartitionsRequest{})
	if status.Code(err) == codes.Unimplemented {
		p.notePartitioned(false)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, p.errOp("partitions", err)
	}
	p.notePartitioned(resp.Partitioned)
	if !resp.Partitioned {
		return nil, false, nil
	}
	if !slices.IsSorted(resp.Partitions) {
		return nil, false, p.Err(fmt.Errorf("partitions: the plugin's partitions are not sorted: %q", resp.Partitions))
	}
	return resp.Partitions, true, nil
}

func (p *Plugin) notePartitioned(yes bool) {
	p.partMu.Lock()
	defer p.partMu.Unlock()
	p.partitioned = 2
	if yes {
		p.partitioned = 1
	}
}

// Read streams a source's batches from the checkpoint to fn. It returns when
// the source is drained, fn fails, or ctx ends.
func (p *Plugin) Read(ctx context.Context, checkpoint []byte, fn func(ReadMsg) error) error {
	return p.read(ctx, &pluginv1.ReadRequest{Checkpoint: checkpoint}, fn)
}

// ReadPartition is Read of one partition (a name Partitions gave), from
// a position that this partition's read emitted (nil: its beginning); the
// positions it hands fn cover that partition alone. Partition "" is the
// whole source, as Read. A source that is not partitioned is refused
// before anything is read: a plugin built before partitions would not
// understand the request and would read everything.
func (p *Plugin) ReadPartition(ctx context.Context, partition string, from []byte, fn func(ReadMsg) error) error {
	if partition != "" {
		p.partMu.Lock()
		known := p.partitioned
		p.partMu.Unlock()
		if known == 0 {
			if _, _, err := p.Partitions(ctx); err != nil {
				return err
			}
			p.partMu.Lock()
			known = p.partitioned
			p.partMu.Unlock()
		}
		if known != 1 {
			return &Error{Plugin: p.spec.Label(), Msg: fmt.Sprintf("read partition %q: the source is not partitioned (it reads as one partition, named \"\")", partition)}
		}
	}
	return p.read(ctx, &pluginv1.ReadRequest{Checkpoint: from, Partition: partition}, fn)
}

func (p *Plugin) read(ctx context.Context, req *pluginv1.ReadRequest, fn func(ReadMsg) error) error {
	stream, err := p.rpc.Read(ctx, req)
	if err != nil {
		return p.errOp("read", err)
	}
	dec := wire.NewDecoder(nil)
	defer dec.Release()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return p.Err(err)
		}
		m := ReadMsg{Position: msg.Position, Skipped: msg.Skipped, Origin: msg.Origin, PlaceUnit: msg.PlaceUnit, Places: msg.Places, IDs: msg.Ids}
		if len(msg.Arrow) > 0 {
			if m.Rec, err = dec.Decode(msg.Arrow); err != nil {
				return p.Err(fmt.Errorf("read: %w", err))
			}
		}
		if err := fn(m); err != nil {
			return err
		}
	}
}

// WriteStream is an open stream of batches to a sink.
type WriteStream struct {
	p      *Plugin
	stream pluginv1.Plugin_WriteClient
	enc    *wire.Encoder
	seq    uint64

	mu      sync.Mutex
	pending []pendingAck // in seq order
	acks    chan any
	done    chan struct{}
	err     error
}

type pendingAck struct {
	seq   uint64
	token any
}

// Write opens the sink's stream. Acks arrive on Acks() as the tokens given
// to Send, in order.
func (p *Plugin) Write(ctx context.Context) (*WriteStream, error) {
	stream, err := p.rpc.Write(ctx)
	if err != nil {
		return nil, p.errOp("write", err)
	}
	w := &WriteStream{p: p, stream: stream, enc: wire.NewEncoder(nil), acks: make(chan any, 1024), done: make(chan struct{})}
	go w.recvAcks()
	return w, nil
}

// Send sends rec (split when large); token comes back on Acks() once the
// sink has acked all of it. Send does not release rec.
func (w *WriteStream) Send(rec arrow.RecordBatch, token any) error {
	return w.enc.Split(rec, func(data []byte, rows int64, last bool) error {
		w.seq++
		pa := pendingAck{seq: w.seq}
		if last {
			pa.token = token
		}
		w.mu.Lock()
		w.pending = append(w.pending, pa)
		w.mu.Unlock()
		if err := w.stream.Send(&pluginv1.WriteRequest{Seq: w.seq, Arrow: data, Rows: rows}); err != nil {
			if errors.Is(err, io.EOF) {
				// The real reason arrives on the receiving side.
				<-w.done
				return w.err
			}
			return w.p.Err(err)
		}
		return nil
	})
}

// Acks delivers the tokens of acked batches, in order. It is closed when the
// stream ends; Wait then tells why.
func (w *WriteStream) Acks() <-chan any { return w.acks }

// CloseSend says no more batches follow; the sink flushes and ends the stream.
func (w *WriteStream) CloseSend() error { return w.stream.CloseSend() }

// Abort tells the sink that the run ends without completing: a buffered
// sink drops what it holds instead of flushing it. CloseSend follows.
func (w *WriteStream) Abort() error {
	if err := w.stream.Send(&pluginv1.WriteRequest{Abort: true}); err != nil && !errors.Is(err, io.EOF) {
		return w.p.Err(err)
	}
	return nil
}

// Wait blocks until the stream has ended and returns its error.
func (w *WriteStream) Wait() error {
	<-w.done
	return w.err
}

func (w *WriteStream) recvAcks() {
	defer close(w.done)
	defer close(w.acks)
	for {
		msg, err := w.stream.Recv()
		if errors.Is(err, io.EOF) {
			w.mu.Lock()
			left := len(w.pending)
			w.mu.Unlock()
			if left > 0 {
				w.err = w.p.Err(fmt.Errorf("the sink ended its stream with %d batches unacked", left))
			}
			return
		}
		if err != nil {
			w.err = w.p.Err(err)
			return
		}
		w.mu.Lock()
		n := 0
		for n < len(w.pending) && w.pending[n].seq <= msg.Seq {
			n++
		}
		done := w.pending[:n]
		w.pending = w.pending[n:]
		w.mu.Unlock()
		for _, pa := range done {
			if pa.token != nil {
				w.acks <- pa.token
			}
		}
	}
}
