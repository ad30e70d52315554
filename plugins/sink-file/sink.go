// Package sinkfile is the built-in `sink "file"`: writes records to one file
// as JSON Lines, CSV, a JSON array or Parquet.
//
// Two ways of writing, chosen by the format:
//
//   - Appending (jsonl, csv): each batch is appended and fsynced before it
//     is acked, run after run. With compression = "gzip" each batch is one
//     gzip member (a file of several members is one valid gzip stream).
//     What a killed run left of a batch after the last whole record is cut
//     off before the next run appends (cutTornTail).
//   - Replacing (json, parquet, and every format on a full refresh): the
//     run's records go to a temporary file next to path, which replaces
//     path when the run ends (fsync, rename). A reader never sees half a
//     file, and the batches are acked only once the new file is in place.
//     A run that does not complete (it failed elsewhere or was
//     interrupted) tells the sink so before its stream ends; the SDK then
//     does not flush and Close removes the temporary file, leaving path as
//     it was. When the Write stream's context ends (an aborted run; the SDK
//     then calls neither Flush nor Close) the temporary file is removed at
//     once. An incremental run's file holds the records that arrived since
//     the last run; --full-refresh writes all.
//
// CSV takes its columns from the first batch (or the existing file's
// header) unless the block lists them in columns; see csvError for what a
// field that appears later does.
//
// With group_by, records are gathered until the end of the run and written
// as one row per group (see sdk/export).
package sinkfile

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/klauspost/compress/gzip"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowcsv"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/export"
)

// Version is the plugin's version.
const Version = "0.2.0"

var (
	_ sdk.BufferedSink = (*Sink)(nil)
	_ sdk.SinkCloser   = (*Sink)(nil)
)

// Sink writes to a file.
type Sink struct {
	cfg struct {
		Path               string   `json:"path"`
		Format             string   `json:"format"`
		Compression        string   `json:"compression"`
		ParquetCompression string   `json:"parquet_compression"`
		GroupBy            string   `json:"group_by"`
		OrderBy            string   `json:"order_by"`
		Columns            []string `json:"columns"`
	}
	opts    export.Options
	replace bool // write a temporary file and rename it over path

	grouper *export.Grouper
	held    int // batches written since the last Flush

	// Appending.
	f             *os.File
	buf           bytes.Buffer
	enc           *arrowjson.Encoder
	header        []string // CSV columns in the file
	pendingHeader []string // CSV columns being written with the first batch

	// Replacing. mu guards tmp and w against abortTemp, which runs when
	// the stream's context ends (the run failed or was cancelled) while
	// Write or Flush may be running.
	mu        sync.Mutex
	tmp       *os.File
	w         export.Writer
	stopAbort func() bool // stops the context.AfterFunc that calls abortTemp
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "file",
		Version:     Version,
		Description: "Writes records to a file: JSON Lines or CSV appended run after run, or a JSON array or Parquet file replaced by each run.",
		Config: []sdk.Attribute{
			{Name: "path", Type: sdk.String, Required: true, Description: "The file; its directory is created."},
			{Name: "format", Type: sdk.String, Description: `"jsonl", "csv", "json" or "parquet"; by default taken from the extension (.jsonl, .csv, .json, .parquet, optionally followed by .gz), else jsonl.`},
			{Name: "compression", Type: sdk.String, Description: `"none" or "gzip" (csv, jsonl, json); by default gzip when path ends in .gz.`},
			{Name: "parquet_compression", Type: sdk.String, Default: export.DefaultParquetCompression, Description: `Parquet page compression: "zstd", "snappy", "gzip" or "none".`},
			{Name: "group_by", Type: sdk.String, Expression: true, Description: "An expression (e.g. metadata.conversation_id): one row per value, holding message_count and the group's records in messages, written when the run ends."},
			{Name: "order_by", Type: sdk.String, Expression: true, Description: "An expression ordering the messages of a group (needs group_by), e.g. timestamp."},
			{Name: "columns", Type: sdk.ListOf(sdk.String), Description: `CSV only: the columns to write, in order, e.g. ["row_id", "classifications.churn_risk.label"] (dotted paths for nested fields; a struct's own name holds it as JSON). Fields not listed are dropped; absent values are empty. By default the columns are those of the first batch, and a field that appears later fails the run.`},
		},
	}
}

// Configure checks the block. The file is opened on the first Write.
func (s *Sink) Configure(_ context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	c := &s.cfg
	if strings.TrimSpace(c.Path) == "" {
		return errors.New("path must not be empty")
	}
	base := strings.ToLower(filepath.Base(c.Path))
	gz := strings.HasSuffix(base, ".gz")
	base = strings.TrimSuffix(base, ".gz")
	if c.Format == "" {
		c.Format = export.FormatJSONL
		for _, f := range []string{export.FormatCSV, export.FormatJSON, export.FormatParquet} {
			if filepath.Ext(base) == "."+f {
				c.Format = f
			}
		}
	}
	if c.Compression == "" {
		c.Compression = export.CompressionNone
		if gz {
			c.Compression = export.CompressionGzip
		}
	}
	if c.OrderBy != "" && c.GroupBy == "" {
		return errors.New("order_by orders the messages of a group: it needs group_by")
	}
	if c.Columns != nil && c.Format != export.FormatCSV {
		return fmt.Errorf("columns applies to csv; %s writes every field", c.Format)
	}
	s.opts = export.Options{
		Columns:            c.Columns,
		Format:             c.Format,
		Compression:        c.Compression,
		ParquetCompression: c.ParquetCompression,
		GroupBy:            cfg.HasTemplate("group_by"),
		OrderBy:            cfg.HasTemplate("order_by"),
		GroupField:         export.GroupField(c.GroupBy),
		FullRefresh:        cfg.FullRefresh,
	}
	// Let sdk/export check the format options as it will use them.
	if _, err := export.New(export.DirStore(os.TempDir()), s.opts); err != nil {
		return err
	}
	switch c.Format {
	case export.FormatJSONL, export.FormatCSV:
		s.replace = cfg.FullRefresh
	default:
		s.replace = true
	}
	if s.opts.GroupBy {
		s.grouper = export.NewGrouper(s.opts.GroupField, s.opts.OrderBy)
	}
	return nil
}

// Write appends the batch, or adds it to the new file or to the groups.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	s.held++
	if s.grouper != nil {
		s.grouper.Add(b)
		return nil
	}
	if err := s.write(ctx, b); err != nil {
		return fmt.Errorf("%s: %w", s.cfg.Path, err)
	}
	return nil
}

func (s *Sink) write(ctx context.Context, b sdk.Batch) error {
	if s.replace {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.w == nil {
			if err := s.openTemp(ctx); err != nil {
				return err
			}
		}
		return s.csvError(s.w.Write(b.Record))
	}
	return s.appendBatch(b)
}

// FlushDue: an appended batch is made durable at once; a replaced file and
// groups wait for the end of the run.
func (s *Sink) FlushDue(time.Time) bool { return !s.replace && s.grouper == nil }

// Flush makes everything written durable: fsyncs the appended file, or
// writes the groups, finishes the new file and renames it over path. A
// replacing Flush whose ctx has ended (the run failed or was cancelled)
// removes the new file and leaves path as it was.
func (s *Sink) Flush(ctx context.Context) error {
	if err := s.flush(ctx); err != nil {
		return fmt.Errorf("%s: %w", s.cfg.Path, err)
	}
	return nil
}

func (s *Sink) flush(ctx context.Context) error {
	if s.grouper != nil && s.grouper.Len() > 0 {
		recs, err := s.grouper.Records(memory.DefaultAllocator)
		if err != nil {
			return err
		}
		for i, rec := range recs {
			if err == nil {
				err = s.write(ctx, sdk.NewBatch(rec))
			}
			recs[i].Release()
		}
		if err != nil {
			return err
		}
	}
	s.held = 0
	if s.replace {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.w == nil {
			if err := s.openTemp(ctx); err != nil { // an empty run still writes its (empty) file
				return err
			}
		}
		return s.commitTemp(ctx)
	}
	if s.f == nil {
		return nil
	}
	return s.f.Sync()
}

// openTemp starts the file that replaces path at the end of the run. The
// file is removed as soon as ctx (the Write stream's) ends: the SDK calls no
// Close after a failed or cancelled run. s.mu is held.
func (s *Sink) openTemp(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(s.cfg.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// A plugin process that was killed left its file behind; runs of one
	// pipeline never overlap, so any such file is stale.
	pattern := "." + filepath.Base(s.cfg.Path) + ".tmp-*"
	if stale, _ := filepath.Glob(filepath.Join(dir, pattern)); len(stale) > 0 {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return err
	}
	w, err := export.NewWriter(tmp, s.opts)
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	s.tmp, s.w = tmp, w
	s.stopAbort = context.AfterFunc(ctx, s.abortTemp)
	return nil
}

// abortTemp removes the new file of a run that ended without success.
func (s *Sink) abortTemp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropTemp()
}

// dropTemp removes the new file, if any. s.mu is held.
func (s *Sink) dropTemp() {
	if s.stopAbort != nil {
		s.stopAbort()
		s.stopAbort = nil
	}
	if s.tmp != nil {
		s.tmp.Close()
		os.Remove(s.tmp.Name())
		s.tmp, s.w = nil, nil
	}
}

// commitTemp finishes the new file and renames it over path, unless ctx
// has ended. s.mu is held, so abortTemp cannot run in between.
func (s *Sink) commitTemp(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		s.dropTemp()
		return err
	}
	s.stopAbort()
	s.stopAbort = nil
	tmp := s.tmp
	s.tmp = nil
	err := s.w.Close()
	s.w = nil
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err() // the run may have failed while the file was finished
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.cfg.Path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return syncDir(filepath.Dir(s.cfg.Path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// appendBatch appends one batch to path: JSON lines, or CSV rows under the
// file's header, in a gzip member of its own when compressed.
func (s *Sink) appendBatch(b sdk.Batch) error {
	if s.f == nil {
		if err := s.openAppend(); err != nil {
			return err
		}
	}
	s.buf.Reset()
	var out io.Writer = &s.buf
	var zw *gzip.Writer
	if s.cfg.Compression == export.CompressionGzip {
		zw = gzip.NewWriter(&s.buf)
		out = zw
	}
	if s.cfg.Format == export.FormatCSV {
		var w *arrowcsv.Writer
		switch {
		case s.header == nil && s.cfg.Columns != nil:
			w = arrowcsv.NewWriterWithColumns(out, s.cfg.Columns)
			s.pendingHeader = s.cfg.Columns
		case s.header == nil:
			w = arrowcsv.NewWriter(out)
			s.pendingHeader = arrowcsv.Columns(b.Record.Schema())
		default:
			w = arrowcsv.NewAppendWriter(out, s.header)
		}
		if s.cfg.Columns != nil {
			w.DropUnlisted()
		}
		if err := w.Write(b.Record); err != nil {
			return s.csvError(err)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	} else {
		var line []byte
		for i := 0; i < b.Len(); i++ {
			line = s.enc.AppendRow(line[:0], b.Record, i)
			line = append(line, '\n')
			if _, err := out.Write(line); err != nil {
				return err
			}
		}
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	if _, err := s.f.Write(s.buf.Bytes()); err != nil {
		return err
	}
	if s.pendingHeader != nil { // the header is in the file now
		s.header, s.pendingHeader = s.pendingHeader, nil
	}
	return nil
}

// csvError turns an arrowcsv.ColumnsError (a field the file's header
// lacks) into what the user can do about it.
func (s *Sink) csvError(err error) error {
	var ce *arrowcsv.ColumnsError
	if !errors.As(err, &ce) {
		return err
	}
	what := "field"
	if len(ce.New) > 1 {
		what = "fields"
	}
	all := append(append([]string(nil), ce.Header...), ce.New...)
	return fmt.Errorf("new %s %s not among the CSV file's columns (%s), which its header fixes. "+
		"To keep appending to this file without the new %s, set columns = [%s] in the sink block; "+
		"to write them too, write a new file (another path, or --full-refresh to replace this one) with columns = [%s]",
		what, quoted(ce.New), strings.Join(ce.Header, ", "), what, quoted(ce.Header), quoted(all))
}

func quoted(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

func (s *Sink) openAppend() error {
	if err := os.MkdirAll(filepath.Dir(s.cfg.Path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(s.cfg.Path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.f = f
	s.enc = arrowjson.NewEncoder()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size > 0 {
		if size, err = s.cutTornTail(f, size); err != nil {
			return err
		}
	}
	if s.cfg.Format != export.FormatCSV {
		return nil
	}
	if size > 0 {
		header, err := readHeader(s.cfg.Path, s.cfg.Compression == export.CompressionGzip)
		if err != nil {
			return err
		}
		if s.cfg.Columns != nil && !slices.Equal(header, s.cfg.Columns) {
			return fmt.Errorf("the file's columns (%s) are not those of columns = [%s], and rows appended under its header would be misread: "+
				"write to another path, run with --full-refresh to replace the file, or set columns = [%s]",
				strings.Join(header, ", "), quoted(s.cfg.Columns), quoted(header))
		}
		s.header = header
	}
	return nil
}

// readHeader returns the columns of an existing CSV file, so that appending
// keeps them.
func readHeader(path string, gz bool) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("read the header of %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	header, err := csv.NewReader(r).Read()
	if err != nil {
		return nil, fmt.Errorf("read the header of %s: %w", path, err)
	}
	return header, nil
}

// Close closes the file; a new file not put in place (a failed run) is
// removed.
func (s *Sink) Close(context.Context) error {
	var err error
	s.mu.Lock()
	s.dropTemp()
	s.mu.Unlock()
	if s.f != nil {
		err = s.f.Close()
		s.f = nil
	}
	return err
}
