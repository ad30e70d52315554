// Package testrun runs the test blocks of pipeline files (`pipeline test`):
// each test's records go through the pipeline's stages in the engine's
// process, as in a run, and every sink is replaced by a capture that
// records what it would have received. Nothing is sent, no state is
// touched, and no plugin process is started for a source or a built-in
// sink (a transform plugin runs as it does in a run; a custom sink plugin
// is started only to describe its config).
package testrun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/hashicorp/hcl/v2"

	"github.com/pipelinehq/pipeline/engine/config"
	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/engine/host"
	"github.com/pipelinehq/pipeline/engine/plan"
	"github.com/pipelinehq/pipeline/engine/run"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Result is the outcome of one test block.
type Result struct {
	Name   string `json:"name"`
	File   string `json:"file"`
	Line   int    `json:"line"`
	Passed bool   `json:"passed"`
	// Error says why the test could not run to its end (an expression that
	// does not compile against its records, a record an expression fails
	// on); its expectations are then not checked.
	Error   string         `json:"error,omitempty"`
	Expects []ExpectResult `json:"expects"`
}

// ExpectResult is the outcome of one expect block, with what the sink
// received.
type ExpectResult struct {
	Sink   string `json:"sink"`
	Passed bool   `json:"passed"`
	// Count is the expected count, when the block gives one.
	Count *int `json:"count,omitempty"`
	// Where is the expression every received record must satisfy, if any.
	Where string `json:"where,omitempty"`
	// Failures says what did not hold, one line each.
	Failures []string `json:"failures,omitempty"`
	// Received are the records the sink would have received, in order.
	Received []Record `json:"received"`
}

// Record is one record a sink received: its fields as JSON, its id, and the
// sink's templates as rendered for it.
type Record struct {
	ID        string            `json:"id"`
	Fields    json.RawMessage   `json:"record"`
	Templates map[string]string `json:"templates,omitempty"`
	// Satisfies is false for a record the expectation's where is false for.
	Satisfies *bool `json:"satisfies,omitempty"`
}

// Options say how to load the pipeline.
type Options struct {
	// Load is passed to run.Load for each test (built-in plugins, host
	// options); Substitute and Loader are set by Run.
	Load run.LoadOptions
	// Verbose keeps the warnings of each test's check in Warnings.
	Verbose bool
}

// Suite is the tests of one pipeline and their results.
type Suite struct {
	Pipeline string
	// Config is the checked pipeline, for printing diagnostics.
	Config *config.Pipeline
	// Diags are the pipeline's own diagnostics: when they hold errors, no
	// test ran.
	Diags   hcl.Diagnostics
	Results []Result
	// Warnings are the checks' warnings, by test (Options.Verbose).
	Warnings map[string]hcl.Diagnostics
}

// Failed reports whether the pipeline has errors or a test failed.
func (s *Suite) Failed() bool {
	if s.Diags.HasErrors() {
		return true
	}
	for _, r := range s.Results {
		if !r.Passed {
			return true
		}
	}
	return false
}

// Run runs the test blocks of the pipeline in files. The environment is
// the real one, except that env() of an unset variable without a default
// reads as "" instead of failing: sinks are never called, so their secrets
// are not needed. A pipeline without tests is only parsed.
//
// The pipeline is first loaded with sources of unknown schema, so that its
// own errors are told apart from a test's: what fails to load only with a
// test's records (a field they give another type) fails that test.
func Run(ctx context.Context, files []string, opts Options) *Suite {
	loader := &config.Loader{UnsetEnvEmpty: true}
	if p, diags := loader.Load(files...); !diags.HasErrors() && len(p.Tests) == 0 {
		return &Suite{Pipeline: p.Name, Config: p, Diags: diags}
	}
	base, diags := load(ctx, files, loader, opts, nil, nil)
	if base == nil {
		return &Suite{Diags: diags}
	}
	base.Close()
	p := base.Config
	s := &Suite{Pipeline: p.Name, Config: p, Diags: diags, Warnings: map[string]hcl.Diagnostics{}}
	if diags.HasErrors() {
		return s
	}
	for _, t := range p.Tests {
		res, d := runOne(ctx, files, loader, t, opts)
		if opts.Verbose {
			for _, w := range d {
				if w.Severity == hcl.DiagWarning {
					s.Warnings[t.Name] = append(s.Warnings[t.Name], w)
				}
			}
		}
		s.Results = append(s.Results, *res)
	}
	return s
}

// load loads the pipeline with the stand-ins of test t (nil: sources that
// read nothing, of unknown schema), each sink replaced by its capture.
func load(ctx context.Context, files []string, loader *config.Loader, opts Options, t *config.Test, captures map[string]*capture) (*run.Loaded, hcl.Diagnostics) {
	var inputErr error
	lopts := opts.Load
	lopts.Loader = loader
	lopts.Store = nil
	lopts.Substitute = &run.Substitute{
		Source: func(s *config.Source) (plan.SourcePlugin, *arrow.Schema) {
			if t == nil {
				return emptySource{}, nil
			}
			for _, in := range t.Inputs {
				if in.Source == nil || in.Source.Name != s.Name {
					continue
				}
				src, err := newInlineSource(in)
				if err != nil {
					inputErr = err
					return emptySource{}, nil
				}
				return src, sdk.SampledSchema(src.schema, fmt.Sprintf("the records test %q gives source %q", t.Name, s.Name))
			}
			// A source the test gives nothing reads nothing: a complete,
			// empty schema would make every field it feeds unknown.
			return emptySource{}, nil
		},
		Sink: func(s *config.Sink) plan.SinkPlugin {
			c := &capture{}
			if captures != nil {
				captures[s.Name] = c
			}
			return c
		},
	}
	l, diags := run.Load(ctx, files, lopts)
	if inputErr != nil {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid test input", Detail: inputErr.Error()})
	}
	return l, diags
}

// runOne runs test t: it loads the pipeline with the test's stand-ins,
// runs it and checks what the sinks captured.
func runOne(ctx context.Context, files []string, loader *config.Loader, t *config.Test, opts Options) (*Result, hcl.Diagnostics) {
	res := &Result{Name: t.Name, File: t.DefRange.Filename, Line: t.DefRange.Start.Line, Expects: []ExpectResult{}}
	captures := map[string]*capture{}
	defer func() {
		for _, c := range captures {
			c.release()
		}
	}()
	l, diags := load(ctx, files, loader, opts, t, captures)
	if l != nil {
		defer l.Close()
	}
	if l == nil || l.Plan == nil || diags.HasErrors() {
		// The pipeline checked without the test's records (Run): these are
		// what makes it fail.
		res.Error = "with this test's records: " + firstError(diags)
		return res, diags
	}
	// The expectations' where, against what flows into each sink.
	preds := map[*config.TestExpect]*expr.Predicate{}
	for _, ex := range t.Expects {
		if ex.Where == nil {
			continue
		}
		var schema *arrow.Schema
		for n, sc := range l.Compiled.InputSchema {
			if sk, ok := n.(*config.Sink); ok && sk.Name == ex.Sink.Name {
				schema = sc
			}
		}
		if schema == nil {
			continue // unknown until the records come: compiled on them
		}
		p, err := expr.CompilePredicateFor("where", ex.Where.Src, schema)
		if err != nil {
			res.Error = config.CompactDiagnostic(config.ExprDiagnostic(l.Config.Files, "Invalid test expectation", ex.Where, err))
			return res, diags
		}
		preds[ex] = p
	}

	r, err := run.New(l.Plan, run.Options{})
	if err == nil {
		err = r.Run(ctx)
	}
	if err != nil {
		res.Error = err.Error()
		return res, diags
	}
	res.Passed = true
	for _, ex := range t.Expects {
		er := check(l.Config.Files, ex, captures[ex.Sink.Name], preds[ex])
		if !er.Passed {
			res.Passed = false
		}
		res.Expects = append(res.Expects, er)
	}
	return res, diags
}

func firstError(diags hcl.Diagnostics) string {
	for _, d := range config.SortDiagnostics(diags) {
		if d.Severity == hcl.DiagError {
			return config.CompactDiagnostic(d)
		}
	}
	return ""
}

// check compares what a sink captured with an expectation.
func check(files map[string]*hcl.File, ex *config.TestExpect, c *capture, pred *expr.Predicate) ExpectResult {
	er := ExpectResult{Sink: ex.Sink.Name, Passed: true, Received: []Record{}}
	if ex.Count >= 0 {
		n := ex.Count
		er.Count = &n
	}
	if ex.Where != nil {
		er.Where = ex.Where.Src
	}
	enc := arrowjson.NewEncoder()
	failing := 0
	whereFailed := false
	for _, rec := range c.batches() {
		var mask []bool
		if ex.Where != nil && !whereFailed {
			p := pred
			var err error
			if p == nil {
				// The sink's input schema was unknown at load (it reads a
				// transform plugin): compiled against what came.
				if p, err = expr.CompilePredicateFor("where", ex.Where.Src, rec.Schema()); err == nil {
					pred = p
				}
			}
			if err == nil {
				mask, err = p.Eval(rec)
			}
			if err != nil {
				whereFailed = true
				er.Passed = false
				er.Failures = append(er.Failures, "where: "+oneLine(config.CompactDiagnostic(config.ExprDiagnostic(files, "Invalid test expectation", ex.Where, err))))
				mask = nil
			}
		}
		ids, templates := run.ReservedColumns(rec)
		for row := 0; row < int(rec.NumRows()); row++ {
			out := Record{Fields: json.RawMessage(enc.AppendRow(nil, rec, row))}
			if ids != nil && ids.IsValid(row) {
				out.ID = ids.Value(row)
			}
			for name, col := range templates {
				if out.Templates == nil {
					out.Templates = map[string]string{}
				}
				if col.IsValid(row) {
					out.Templates[name] = col.Value(row)
				}
			}
			if mask != nil {
				ok := mask[row]
				out.Satisfies = &ok
				if !ok {
					failing++
				}
			}
			er.Received = append(er.Received, out)
		}
	}
	if ex.Count >= 0 && len(er.Received) != ex.Count {
		er.Passed = false
		er.Failures = append(er.Failures, fmt.Sprintf("count = %d, but the sink received %d %s", ex.Count, len(er.Received), plural(len(er.Received), "record")))
	}
	if failing > 0 {
		er.Passed = false
		er.Failures = append(er.Failures, fmt.Sprintf("where %q is false for %d of the %d received %s", ex.Where.Src, failing, len(er.Received), plural(len(er.Received), "record")))
	}
	return er
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// inlineSource reads a test input's records: one batch, each row placed at
// its line in the test's file (or in its file of JSON lines), so that a
// record an expression fails on is named where it is written.
type inlineSource struct {
	rec    arrow.RecordBatch
	schema *arrow.Schema
	origin string
	places []int64
}

func newInlineSource(in *config.TestInput) (*inlineSource, error) {
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	src := &inlineSource{origin: in.DefRange.Filename}
	if in.Path != "" {
		if err := src.readFile(dec, in); err != nil {
			return nil, err
		}
	}
	for i, r := range in.Records {
		if err := dec.Append(r.JSON); err != nil {
			return nil, fmt.Errorf("%s:%d: record %d: %v", r.Range.Filename, r.Range.Start.Line, i+1, err)
		}
		src.places = append(src.places, int64(r.Range.Start.Line))
	}
	src.rec = dec.Flush()
	src.schema = dec.Schema()
	if src.rec != nil {
		src.schema = src.rec.Schema()
	}
	if src.schema == nil {
		src.schema = arrow.NewSchema(nil, nil)
	}
	return src, nil
}

func (s *inlineSource) readFile(dec *arrowjson.Decoder, in *config.TestInput) error {
	f, err := os.Open(in.Path)
	if err != nil {
		return fmt.Errorf("%s:%d: test input %q: %v", in.PathRange.Filename, in.PathRange.Start.Line, in.Source.Name, err)
	}
	defer f.Close()
	s.origin = in.Path
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		err := dec.Append(sc.Bytes())
		if errors.Is(err, arrowjson.ErrEmptyLine) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s:%d: %v", in.Path, line, err)
		}
		s.places = append(s.places, int64(line))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %v", in.Path, err)
	}
	return nil
}

func (s *inlineSource) Read(ctx context.Context, _ []byte, fn func(host.ReadMsg) error) error {
	if s.rec == nil || s.rec.NumRows() == 0 {
		return nil
	}
	s.rec.Retain()
	return fn(host.ReadMsg{Rec: s.rec, Position: []byte("end"), Origin: s.origin, PlaceUnit: "line", Places: s.places})
}

// emptySource is a source the test gives no records.
type emptySource struct{}

func (emptySource) Read(context.Context, []byte, func(host.ReadMsg) error) error { return nil }

// capture is a sink that keeps what it receives and acks it at once.
type capture struct {
	mu   sync.Mutex
	recs []arrow.RecordBatch
}

func (c *capture) OpenStream(context.Context) (plan.SinkStream, error) {
	return &captureStream{c: c, acks: make(chan any, 1024)}, nil
}

func (c *capture) batches() []arrow.RecordBatch {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

func (c *capture) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.recs {
		r.Release()
	}
	c.recs = nil
}

type captureStream struct {
	c      *capture
	acks   chan any
	closed sync.Once
}

func (s *captureStream) Send(rec arrow.RecordBatch, token any) error {
	rec.Retain()
	s.c.mu.Lock()
	s.c.recs = append(s.c.recs, rec)
	s.c.mu.Unlock()
	s.acks <- token
	return nil
}

func (s *captureStream) Acks() <-chan any { return s.acks }
func (s *captureStream) Abort() error     { return nil }
func (s *captureStream) CloseSend() error {
	s.closed.Do(func() { close(s.acks) })
	return nil
}
func (s *captureStream) Wait() error { return nil }
