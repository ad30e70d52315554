// Package sinkfile is the built-in `sink "file"`: writes records to one file
// as JSON Lines, CSV, a JSON array or Parquet.
//
// Two ways of writing, chosen by the format:
//
//   - Appending (jsonl, csv): each batch is appended and fsynced before it
//     is acked, run after run. With compression = "gzip" each batch is one
//     gzip member (a file of several members is one valid gzip stream).
//   - Replacing (json, parquet, and every format on a full refresh): the
//     run's records go to a temporary file next to path, which replaces
//     path when the run ends (fsync, rename). A reader never sees half a
//     file, a failed run leaves the old file, and the batches are acked only
//     once the new file is in place. An incremental run's file holds the
//     records that arrived since the last run; --full-refresh writes all.
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
	"strings"
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
		Path               string `json:"path"`
		Format             string `json:"format"`
		Compression        string `json:"compression"`
		ParquetCompression string `json:"parquet_compression"`
		GroupBy            string `json:"group_by"`
		OrderBy            string `json:"order_by"`
	}
	opts    export.Options
	replace bool // write a temporary file and rename it over path

	grouper *export.Grouper
	held    int // batches written since the last Flush

	// Appending.
	f      *os.File
	buf    bytes.Buffer
	enc    *arrowjson.Encoder
	header []string // CSV columns, once known

	// Replacing.
	tmp *os.File
	w   export.Writer
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
	s.opts = export.Options{
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
func (s *Sink) Write(_ context.Context, b sdk.Batch) error {
	s.held++
	if s.grouper != nil {
		s.grouper.Add(b)
		return nil
	}
	if err := s.write(b); err != nil {
		return fmt.Errorf("%s: %w", s.cfg.Path, err)
	}
	return nil
}

func (s *Sink) write(b sdk.Batch) error {
	if s.replace {
		if s.w == nil {
			if err := s.openTemp(); err != nil {
				return err
			}
		}
		return s.w.Write(b.Record)
	}
	return s.appendBatch(b)
}

// FlushDue: an appended batch is made durable at once; a replaced file and
// groups wait for the end of the run.
func (s *Sink) FlushDue(time.Time) bool { return !s.replace && s.grouper == nil }

// Flush makes everything written durable: fsyncs the appended file, or
// writes the groups, finishes the new file and renames it over path.
func (s *Sink) Flush(_ context.Context) error {
	if err := s.flush(); err != nil {
		return fmt.Errorf("%s: %w", s.cfg.Path, err)
	}
	return nil
}

func (s *Sink) flush() error {
	if s.grouper != nil && s.grouper.Len() > 0 {
		recs, err := s.grouper.Records(memory.DefaultAllocator)
		if err != nil {
			return err
		}
		for i, rec := range recs {
			if err == nil {
				err = s.write(sdk.NewBatch(rec))
			}
			recs[i].Release()
		}
		if err != nil {
			return err
		}
	}
	s.held = 0
	if s.replace {
		if s.w == nil {
			if err := s.openTemp(); err != nil { // an empty run still writes its (empty) file
				return err
			}
		}
		return s.commitTemp()
	}
	if s.f == nil {
		return nil
	}
	return s.f.Sync()
}

// openTemp starts the file that replaces path at the end of the run.
func (s *Sink) openTemp() error {
	dir := filepath.Dir(s.cfg.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// A run that failed left its file behind; runs of one pipeline never
	// overlap, so any such file is stale.
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
	return nil
}

func (s *Sink) commitTemp() error {
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
		if s.header == nil {
			w = arrowcsv.NewWriter(out)
			s.header = arrowcsv.Columns(b.Record.Schema())
		} else {
			w = arrowcsv.NewAppendWriter(out, s.header)
		}
		if err := w.Write(b.Record); err != nil {
			return err
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
	_, err := s.f.Write(s.buf.Bytes())
	return err
}

func (s *Sink) openAppend() error {
	if err := os.MkdirAll(filepath.Dir(s.cfg.Path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(s.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.f = f
	s.enc = arrowjson.NewEncoder()
	if s.cfg.Format != export.FormatCSV {
		return nil
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() > 0 {
		header, err := readHeader(s.cfg.Path, s.cfg.Compression == export.CompressionGzip)
		if err != nil {
			return err
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
	if s.tmp != nil {
		s.tmp.Close()
		os.Remove(s.tmp.Name())
		s.tmp, s.w = nil, nil
	}
	if s.f != nil {
		err = s.f.Close()
		s.f = nil
	}
	return err
}
