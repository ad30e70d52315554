// Package sinkfile is the built-in `sink "file"`: appends records to a JSONL
// or CSV file. Every acked batch is on disk (written and fsynced).
package sinkfile

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowcsv"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Version is the plugin's version.
const Version = "0.1.0"

var (
	_ sdk.Sink       = (*Sink)(nil)
	_ sdk.SinkCloser = (*Sink)(nil)
)

// Sink appends to a file.
type Sink struct {
	cfg struct {
		Path   string `json:"path"`
		Format string `json:"format"`
	}
	f   *os.File
	buf []byte
	enc *arrowjson.Encoder
	csv *arrowcsv.Writer
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "file",
		Version:     Version,
		Description: "Appends records to a JSONL or CSV file; each acked batch is fsynced.",
		Config: []sdk.Attribute{
			{Name: "path", Type: sdk.String, Required: true, Description: "The file to append to; its directory is created."},
			{Name: "format", Type: sdk.String, Description: `"jsonl" or "csv"; by default taken from the file's extension, else jsonl.`},
		},
	}
}

// Configure checks the block. The file is opened on the first Write.
func (s *Sink) Configure(_ context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	if s.cfg.Format == "" {
		s.cfg.Format = "jsonl"
		if strings.EqualFold(filepath.Ext(s.cfg.Path), ".csv") {
			s.cfg.Format = "csv"
		}
	}
	switch s.cfg.Format {
	case "jsonl", "csv":
	default:
		return fmt.Errorf(`format must be "jsonl" or "csv", not %q`, s.cfg.Format)
	}
	if s.cfg.Path == "" {
		return errors.New("path must not be empty")
	}
	return nil
}

func (s *Sink) open() error {
	if err := os.MkdirAll(filepath.Dir(s.cfg.Path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(s.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.f = f
	if s.cfg.Format == "jsonl" {
		s.enc = arrowjson.NewEncoder()
		return nil
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() > 0 {
		header, err := readHeader(s.cfg.Path)
		if err != nil {
			return err
		}
		s.csv = arrowcsv.NewAppendWriter(f, header)
	} else {
		s.csv = arrowcsv.NewWriter(f)
	}
	return nil
}

// readHeader returns the columns of an existing CSV file, so that appending
// keeps them.
func readHeader(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	header, err := csv.NewReader(f).Read()
	if err != nil {
		return nil, fmt.Errorf("read the header of %s: %w", path, err)
	}
	return header, nil
}

// Write appends the batch and fsyncs before acking.
func (s *Sink) Write(_ context.Context, b sdk.Batch) error {
	if s.f == nil {
		if err := s.open(); err != nil {
			return fmt.Errorf("open %s: %w", s.cfg.Path, err)
		}
	}
	if s.cfg.Format == "csv" {
		if err := s.csv.Write(b.Record); err != nil {
			return fmt.Errorf("%s: %w", s.cfg.Path, err)
		}
		if err := s.csv.Flush(); err != nil {
			return fmt.Errorf("%s: %w", s.cfg.Path, err)
		}
	} else {
		s.buf = s.buf[:0]
		for i := 0; i < b.Len(); i++ {
			s.buf = s.enc.AppendRow(s.buf, b.Record, i)
			s.buf = append(s.buf, '\n')
		}
		if _, err := s.f.Write(s.buf); err != nil {
			return fmt.Errorf("%s: %w", s.cfg.Path, err)
		}
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("%s: %w", s.cfg.Path, err)
	}
	return nil
}

// Close closes the file.
func (s *Sink) Close(context.Context) error {
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}
