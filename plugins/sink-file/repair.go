package sinkfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/export"
)

// cutTornTail makes an appended file end at a whole record before a run
// appends to it. A run killed while writing a batch (SIGKILL, the machine
// stopping) leaves part of that batch at the end: it was not fsynced and
// not acked, so its records come again in the next run, and what was
// written of it must go, or the next record is glued to half of one. The
// whole records of the torn batch stay (they are duplicates, as
// at-least-once allows); only the part after the last whole one is cut.
//
// Where a whole record ends: after the last newline (JSON Lines, whose
// records hold no raw newline); after the last newline outside quotes
// (CSV, scanning the file once from its start, since a quoted field may
// hold newlines); after the last gzip member that decodes completely
// (compressed, decoding the file once; every batch is a member of its
// own). A gzip file damaged anywhere but a cut-short end is an error:
// cutting there would lose records that were acked.
func (s *Sink) cutTornTail(f *os.File, size int64) (int64, error) {
	var (
		end int64
		err error
	)
	switch {
	case s.cfg.Compression == export.CompressionGzip:
		end, err = gzipMembersEnd(f)
	case s.cfg.Format == export.FormatCSV:
		end, err = csvRowsEnd(f)
	default:
		end, err = lastNewlineEnd(f, size)
	}
	if err != nil {
		return 0, err
	}
	if end == size {
		return size, nil
	}
	if err := f.Truncate(end); err != nil {
		return 0, fmt.Errorf("cutting the part of a record a killed run left at the end: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	sdk.Logger().Warn("the file ended in part of a record (a run was killed while appending); cut it off, its records come again",
		"path", s.cfg.Path, "bytes_cut", size-end, "size", end)
	return end, nil
}

// lastNewlineEnd is the offset just past the last '\n' in the file's first
// size bytes (0 when there is none), reading backwards.
func lastNewlineEnd(f *os.File, size int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for off := size; off > 0; {
		n := int64(len(buf))
		if n > off {
			n = off
		}
		off -= n
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return off + int64(i) + 1, nil
		}
	}
	return 0, nil
}

// csvRowsEnd is the offset just past the last newline that ends a CSV row:
// one outside quotes ("" inside a quoted field toggles twice, so counting
// quotes is enough).
func csvRowsEnd(f *os.File) (int64, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 256<<10)
	var (
		off, end int64
		quoted   bool
	)
	for {
		chunk, err := r.ReadSlice('\n')
		quoted = quoted != (bytes.Count(chunk, []byte{'"'})%2 == 1)
		off += int64(len(chunk))
		if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' && !quoted {
			end = off
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return end, nil
		default:
			return 0, err
		}
	}
}

// gzipMembersEnd is the offset just past the last gzip member that decodes
// completely. A member cut short by the end of the file ends the scan; any
// other decoding error is returned.
func gzipMembersEnd(f *os.File) (int64, error) {
	cr := &countingReader{r: bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 256<<10)}
	var (
		zr  gzip.Reader
		end int64
	)
	for {
		err := zr.Reset(cr)
		if err == nil {
			zr.Multistream(false)
			_, err = io.Copy(io.Discard, &zr)
		}
		switch {
		case err == nil:
			end = cr.n
		case errors.Is(err, io.EOF) && cr.n == end: // no member starts here: the end of the file
			return end, nil
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return end, nil // the last member was cut short
		default:
			return 0, fmt.Errorf("the gzip member at byte %d is damaged (%v), and appending to the file would bury the damage: "+
				"move it away, or run with --full-refresh to replace it", end, err)
		}
	}
}

// countingReader counts the bytes read through it. It is an io.ByteReader,
// so the gzip reader reads no further than the member it decodes.
type countingReader struct {
	r *bufio.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}
