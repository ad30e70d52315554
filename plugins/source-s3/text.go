package sources3

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowcsv"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// stream is an open JSONL or CSV object, decompressed, positioned where
// reading starts.
type stream struct {
	r      io.Reader
	etag   string // of the version read
	gzip   bool
	closer func()
	// For CSV: the header's bytes when the stream starts past it (the
	// reader is given header + stream), and the header's length in the
	// object.
	header    []byte
	headerLen int64
}

// openText opens o for reading from c (nil: the start). An object that is
// not gzipped resumes with a ranged GET at the cursor's offset; a gzipped one
// is read again from the start and the offset skipped. When the object was
// rewritten since the cursor was written, it is read from the start, and
// the returned cursor is nil.
func (s *Source) openText(ctx context.Context, o object, c *cursor) (*stream, *cursor, error) {
	if c != nil {
		st, err := s.resumeText(ctx, o, c)
		if !errors.Is(err, errChanged) {
			return st, c, err
		}
		sdk.Logger().Info("object was rewritten since the checkpoint; reading it from the start", "object", s.url(o.Key))
	}
	b, err := s.open(ctx, o.Key, "", 0, 0)
	if err != nil {
		return nil, nil, err
	}
	r, gz, closeFn, err := s.decompress(o.Key, b)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return &stream{r: r, etag: b.etag, gzip: gz, closer: closeFn}, nil, nil
}

func (s *Source) resumeText(ctx context.Context, o object, c *cursor) (*stream, error) {
	csv := s.cfg.Format == formatCSV
	if !c.Gzip {
		st := &stream{etag: c.ETag}
		if csv {
			h, err := s.open(ctx, o.Key, c.ETag, 0, c.Header)
			if err != nil {
				return nil, err
			}
			st.header, st.headerLen = make([]byte, c.Header), c.Header
			_, err = io.ReadFull(h, st.header)
			h.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: read the CSV header: %w", s.url(o.Key), err)
			}
		}
		b, err := s.open(ctx, o.Key, c.ETag, c.Offset, 0)
		if err != nil {
			return nil, err
		}
		st.r = bufio.NewReaderSize(b, 1<<20)
		st.closer = func() { b.Close() }
		return st, nil
	}
	b, err := s.open(ctx, o.Key, c.ETag, 0, 0)
	if err != nil {
		return nil, err
	}
	r, _, closeFn, err := s.decompress(o.Key, b)
	if err != nil {
		b.Close()
		return nil, err
	}
	st := &stream{r: r, etag: c.ETag, gzip: true, closer: closeFn}
	skip := c.Offset
	if csv {
		st.header, st.headerLen = make([]byte, c.Header), c.Header
		if _, err := io.ReadFull(r, st.header); err != nil {
			closeFn()
			return nil, fmt.Errorf("%s: read the CSV header: %w", s.url(o.Key), err)
		}
		skip -= st.headerLen
	}
	if got, err := io.CopyN(io.Discard, r, skip); err != nil {
		closeFn()
		if got < skip && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return nil, fmt.Errorf("%s holds %d bytes uncompressed, fewer than the %d an earlier run read with the same ETag; reset the checkpoint with `pipeline state reset`", s.url(o.Key), got+c.Offset-skip, c.Offset)
		}
		return nil, fmt.Errorf("%s: %w", s.url(o.Key), err)
	}
	return st, nil
}

// decompress buffers b and gunzips it when it starts with gzip's magic.
func (s *Source) decompress(key string, b *body) (io.Reader, bool, func(), error) {
	br := bufio.NewReaderSize(b, 1<<20)
	magic, _ := br.Peek(2)
	if bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, false, nil, fmt.Errorf("%s: %w", s.url(key), err)
		}
		return bufio.NewReaderSize(zr, 1<<20), true, func() { zr.Close(); b.Close() }, nil
	}
	return br, false, func() { b.Close() }, nil
}

// readText reads a JSONL or CSV object from c (nil: the start).
func (s *Source) readText(ctx context.Context, o object, c *cursor, t *tracker, emit sdk.Emitter) error {
	st, c, err := s.openText(ctx, o, c)
	if err != nil {
		return err
	}
	defer st.closer()
	if s.cfg.Format == formatCSV {
		return s.readCSV(ctx, o, st, c, t, emit)
	}
	return s.readJSONL(ctx, o, st, c, t, emit)
}

// readLine returns the next line including its newline; at the end of the
// input it returns the unterminated rest (maybe empty) and io.EOF.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == nil || !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	buf := append([]byte(nil), line...)
	for errors.Is(err, bufio.ErrBufferFull) {
		line, err = br.ReadSlice('\n')
		buf = append(buf, line...)
	}
	return buf, err
}

func (s *Source) readJSONL(ctx context.Context, o object, st *stream, from *cursor, t *tracker, emit sdk.Emitter) error {
	cur := cursor{Key: o.Key, ETag: st.etag, Gzip: st.gzip}
	if from != nil {
		cur.Offset, cur.Line = from.Offset, from.Line
	}
	br, ok := st.r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(st.r, 1<<20)
	}
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	pending := 0      // input bytes in the decoder
	var lines []int64 // the line of each record in the decoder
	// flush emits what the decoder holds; final says it is the object's
	// last batch, whose position marks the object finished.
	flush := func(final bool) error {
		rec := dec.Flush()
		pending = 0
		if final {
			t.finish(o.Key, st.etag)
		} else {
			t.at(cur)
		}
		if rec == nil {
			return nil
		}
		origin := sdk.Origin{Name: o.Key, Unit: "line", Places: lines}
		lines = nil
		return emit.EmitAt(rec, t.encode(), origin)
	}
	for {
		line, rerr := readLine(br)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("%s: %w", s.url(o.Key), rerr)
		}
		if len(line) > 0 {
			err := dec.Append(line)
			cur.Line++
			cur.Offset += int64(len(line))
			switch {
			case err == nil:
				pending += len(line)
				lines = append(lines, cur.Line)
			case errors.Is(err, arrowjson.ErrEmptyLine):
			case s.cfg.OnError == "skip":
				sdk.Logger().Warn("skipping bad record", "object", s.url(o.Key), "line", cur.Line, "error", err.Error())
				emit.Skipped(1)
			default:
				return fmt.Errorf("%s:%d: %v (set on_error = \"skip\" to skip bad records)", s.url(o.Key), cur.Line, err)
			}
			if dec.Len() >= s.cfg.BatchRows || pending >= batchBytes {
				// The object's last batch marks it finished.
				_, perr := br.Peek(1)
				if err := flush(errors.Is(perr, io.EOF)); err != nil {
					return err
				}
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		if rerr != nil {
			break
		}
	}
	return flush(true)
}

// lineCounter counts the newlines of what it reads, to tell how many lines
// precede an offset the CSV reader reports (a quoted field may span lines,
// so the reader's record lines do not say).
type lineCounter struct {
	r     io.Reader
	off   int64   // bytes read
	nl    []int64 // offsets just past each newline not yet counted
	lines int64   // newlines counted
}

func (l *lineCounter) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for i, rest := 0, p[:n]; ; {
		j := bytes.IndexByte(rest[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
		l.nl = append(l.nl, l.off+int64(i))
	}
	l.off += int64(n)
	return n, err
}

// linesBefore is the number of newlines before offset, which must not be
// less than in an earlier call.
func (l *lineCounter) linesBefore(offset int64) int64 {
	k := 0
	for k < len(l.nl) && l.nl[k] <= offset {
		k++
	}
	l.lines += int64(k)
	l.nl = append(l.nl[:0], l.nl[k:]...)
	return l.lines
}

func (s *Source) readCSV(ctx context.Context, o object, st *stream, from *cursor, t *tracker, emit sdk.Emitter) error {
	cur := cursor{Key: o.Key, ETag: st.etag, Gzip: st.gzip}
	// The reader reads in: the object from the start, or the header and the
	// object from the cursor on. delta and lineDelta turn offsets and
	// lines in into the object's.
	in := st.r
	var delta, lineDelta int64
	if from != nil {
		in = io.MultiReader(bytes.NewReader(st.header), st.r)
		delta = from.Offset - st.headerLen
		lineDelta = from.Line - int64(bytes.Count(st.header, []byte("\n")))
	}
	lc := &lineCounter{r: in}
	cr, err := arrowcsv.NewReader(lc, arrowcsv.ReaderOptions{})
	if err != nil {
		if from == nil && lc.off == 0 {
			t.finish(o.Key, st.etag) // an empty object
			return nil
		}
		return fmt.Errorf("%s: %w", s.url(o.Key), err)
	}
	cur.Header = cr.Offset()
	if from != nil {
		cur.Header = st.headerLen
	}
	// A batch is emitted once the next is read (or the end), so the last
	// one's position can mark the object finished.
	var held arrow.RecordBatch
	var heldLines []int64
	var heldAt cursor
	defer func() {
		if held != nil {
			held.Release()
		}
	}()
	send := func() error {
		rec, places := held, heldLines
		held, heldLines = nil, nil
		return emit.EmitAt(rec, t.encode(), sdk.Origin{Name: o.Key, Unit: "line", Places: places})
	}
	for {
		rec, err := cr.Next(s.cfg.BatchRows)
		var rerr *arrowcsv.RecordError
		switch {
		case errors.Is(err, io.EOF):
			t.finish(o.Key, st.etag)
			if held != nil {
				return send()
			}
			return nil
		case errors.As(err, &rerr):
			line := int64(rerr.Line) + lineDelta
			if s.cfg.OnError != "skip" {
				return fmt.Errorf("%s:%d: %v (set on_error = \"skip\" to skip bad records)", s.url(o.Key), line, rerr.Err)
			}
			sdk.Logger().Warn("skipping bad record", "object", s.url(o.Key), "line", line, "error", rerr.Err.Error())
			emit.Skipped(1)
			continue
		case err != nil:
			return fmt.Errorf("%s: %w", s.url(o.Key), err)
		}
		if held != nil {
			t.at(heldAt)
			if err := send(); err != nil {
				rec.Release()
				return err
			}
			if err := ctx.Err(); err != nil {
				rec.Release()
				return err
			}
		}
		places := append([]int64(nil), cr.Lines()...)
		for i := range places {
			places[i] += lineDelta
		}
		cur.Offset = cr.Offset() + delta
		cur.Line = lc.linesBefore(cr.Offset()) + lineDelta
		held, heldLines, heldAt = rec, places, cur
	}
}

// sampleText reads the first lines of o for Schema.
func (s *Source) sampleText(ctx context.Context, o object) (*arrow.Schema, error) {
	b, err := s.open(ctx, o.Key, "", 0, 0)
	if err != nil {
		return nil, err
	}
	r, _, closeFn, err := s.decompress(o.Key, b)
	if err != nil {
		b.Close()
		return nil, err
	}
	defer closeFn()
	if s.cfg.Format == formatCSV {
		cr, err := arrowcsv.NewReader(r, arrowcsv.ReaderOptions{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.url(o.Key), err)
		}
		rec, err := cr.Next(sampleLines)
		if errors.Is(err, io.EOF) {
			return cr.Schema(), nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.url(o.Key), err)
		}
		defer rec.Release()
		return rec.Schema(), nil
	}
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	br := r.(*bufio.Reader)
	for n := 0; n < sampleLines; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		line, err := readLine(br)
		if len(line) > 0 {
			_ = dec.Append(line) // bad lines are reported when reading
		}
		if err != nil {
			break
		}
	}
	if rec := dec.Flush(); rec != nil {
		rec.Release()
	}
	return dec.Schema(), nil
}
