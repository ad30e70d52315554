// Package sourcefile is the built-in `source "file"`: JSONL or CSV files,
// plain or gzipped, or Parquet files (see parquet.go), from a path or a
// glob, read incrementally.
package sourcefile

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowcsv"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Version is the plugin's version.
const Version = "0.1.0"

// Batches are cut at whichever limit comes first. Small enough to keep
// latency and memory low, large enough that per-batch costs vanish.
const (
	defaultBatchRows = 8192
	batchBytes       = 8 << 20
	// sampleLines bounds how much of each file Schema reads.
	sampleLines = 2000
	sampleFiles = 16
)

var _ sdk.Source = (*Source)(nil)
var _ sdk.SchemaSource = (*Source)(nil)
var _ sdk.Partitioner = (*Source)(nil)
var _ sdk.PartitionReader = (*Source)(nil)

// Source reads files.
type Source struct {
	cfg  config
	name string
	// baseDir is the pipeline file's directory: a relative path that
	// matches nothing in the working directory is resolved against it.
	baseDir string
}

type config struct {
	Path    string `json:"path"`
	Format  string `json:"format"`
	OnError string `json:"on_error"`
	// BatchRows caps the records per batch.
	BatchRows int `json:"batch_rows"`
}

// Info describes the plugin.
func (s *Source) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSource,
		Type:        "file",
		Version:     Version,
		Description: "Reads JSONL or CSV files (gzip detected) or Parquet files, a path or a glob; re-runs read only what was appended or added.",
		Config: []sdk.Attribute{
			{Name: "path", Type: sdk.String, Required: true, Description: "A file or a glob (e.g. data/*.jsonl), relative to the working directory, or else to the pipeline file's directory."},
			{Name: "format", Type: sdk.String, Default: "jsonl", Description: `"jsonl", "csv" or "parquet".`},
			{Name: "on_error", Type: sdk.String, Default: "fail", Description: `"fail" stops at a bad record with its file and line; "skip" logs it, counts it and goes on (JSONL and CSV).`},
			{Name: "batch_rows", Type: sdk.Number, Default: defaultBatchRows, Description: "Most records per batch (batches are also cut at 8 MiB of input)."},
		},
	}
}

// Configure checks the block.
func (s *Source) Configure(_ context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	s.name = cfg.Name
	s.baseDir = cfg.BaseDir
	switch s.cfg.Format {
	case "jsonl", "csv", "parquet":
	default:
		return fmt.Errorf(`format must be "jsonl", "csv" or "parquet", not %q`, s.cfg.Format)
	}
	switch s.cfg.OnError {
	case "fail", "skip":
	default:
		return fmt.Errorf(`on_error must be "fail" or "skip", not %q`, s.cfg.OnError)
	}
	if s.cfg.BatchRows < 1 {
		return fmt.Errorf("batch_rows must be at least 1, not %d", s.cfg.BatchRows)
	}
	if _, err := filepath.Match(s.cfg.Path, ""); err != nil {
		return fmt.Errorf("path %q is not a valid glob: %w", s.cfg.Path, err)
	}
	return nil
}

// files lists the matching files in a stable order, as paths to open. A
// relative path is resolved against the working directory, and when it
// matches no file there, against the pipeline file's directory (the paths
// are absolute then; origin gives each its name).
func (s *Source) files() ([]string, error) {
	out, err := glob(s.cfg.Path)
	if err != nil {
		return nil, err
	}
	if len(out) > 0 {
		return out, nil
	}
	if filepath.IsAbs(s.cfg.Path) {
		return nil, &noFilesError{fmt.Sprintf("path %q matches no files", s.cfg.Path)}
	}
	abs, _ := filepath.Abs(s.cfg.Path)
	looked := []string{abs}
	if s.baseDir != "" {
		if there := filepath.Join(s.baseDir, s.cfg.Path); there != abs {
			if out, err = glob(s.inBaseDir()); err != nil || len(out) > 0 {
				return out, err
			}
			looked = append(looked, there)
		}
	}
	return nil, &noFilesError{fmt.Sprintf("path %q matches no files (looked in %s)", s.cfg.Path, strings.Join(looked, " and "))}
}

// noFilesError is files' error when the path matches no file.
type noFilesError struct{ msg string }

func (e *noFilesError) Error() string { return e.msg }

// glob lists the regular files that pattern matches, sorted.
func glob(pattern string) ([]string, error) {
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", pattern, err)
	}
	var out []string
	for _, m := range matches {
		if st, err := os.Stat(m); err == nil && st.Mode().IsRegular() {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out, nil
}

// inBaseDir is the relative path as a pattern under the pipeline file's
// directory, "" when there is none. It is joined by hand, not with
// filepath.Join, which would clean it: a match is then spelled under the
// directory exactly as the same match in the working directory is (see
// origin). Glob characters in the directory's own name are escaped (not
// possible on Windows, where \ separates).
func (s *Source) inBaseDir() string {
	if s.baseDir == "" || filepath.IsAbs(s.cfg.Path) {
		return ""
	}
	dir := strings.TrimSuffix(s.baseDir, string(filepath.Separator))
	if filepath.Separator == '/' && strings.ContainsAny(dir, `*?[\`) {
		var b strings.Builder
		for _, r := range dir {
			if strings.ContainsRune(`*?[\`, r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		dir = b.String()
	}
	return dir + string(filepath.Separator) + s.cfg.Path
}

// origin names a file that files returned, for its checkpoint and its
// records' ids: the path as the glob names it relative to where it was
// resolved, so that a run from another directory that finds the files next
// to the pipeline file reads them under the same names and ids.
func (s *Source) origin(path string) string {
	if s.baseDir == "" || filepath.IsAbs(s.cfg.Path) || !filepath.IsAbs(path) {
		return path
	}
	prefix := strings.TrimSuffix(s.baseDir, string(filepath.Separator)) + string(filepath.Separator)
	if rest, ok := strings.CutPrefix(path, prefix); ok {
		return rest
	}
	if rel, err := filepath.Rel(s.baseDir, path); err == nil {
		return rel // the pattern climbs out of the directory (../data/*.jsonl)
	}
	return path
}

// position is the checkpoint: how far each file has been read.
type position struct {
	Files map[string]filePos `json:"files"`
}

type filePos struct {
	Offset int64 `json:"offset"` // bytes consumed (uncompressed, for gzip)
	Line   int64 `json:"line"`   // lines consumed

	// Parquet (see parquet.go): the rows read, and what identifies the
	// file: its size and its footer's fingerprint. Replaced says the file
	// was rewritten after an earlier version of it was read.
	Row      int64  `json:"row,omitempty"`
	Size     int64  `json:"size,omitempty"`
	Footer   string `json:"footer,omitempty"`
	Replaced bool   `json:"replaced,omitempty"`
}

// MarshalJSON writes only the fields of the file's format.
func (p filePos) MarshalJSON() ([]byte, error) {
	if p.Footer != "" {
		return json.Marshal(struct {
			Row      int64  `json:"row"`
			Size     int64  `json:"size"`
			Footer   string `json:"footer"`
			Replaced bool   `json:"replaced,omitempty"`
		}{p.Row, p.Size, p.Footer, p.Replaced})
	}
	return json.Marshal(struct {
		Offset int64 `json:"offset"`
		Line   int64 `json:"line"`
	}{p.Offset, p.Line})
}

// Schema samples the first lines of the files. The schema is marked as a
// sample (sdk.SampledSchema): a field that first appears later in a file, or
// in a file past the sampled ones, or in a file that is still empty, is not
// in it, and the engine then warns about expressions that read it instead
// of failing. Parquet files' schema is their footers', exactly (see
// parquetSchema).
func (s *Source) Schema(ctx context.Context) (*arrow.Schema, error) {
	if s.cfg.Format == "parquet" {
		return s.parquetSchema(ctx)
	}
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	if len(files) > sampleFiles {
		files = files[:sampleFiles]
	}
	if s.cfg.Format == "csv" {
		r, closeFn, err := open(files[0])
		if err != nil {
			return nil, err
		}
		defer closeFn()
		cr, err := arrowcsv.NewReader(r, arrowcsv.ReaderOptions{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", files[0], err)
		}
		sample := fmt.Sprintf("the header and the first %d lines of %s", sampleLines, files[0])
		rec, err := cr.Next(sampleLines)
		if errors.Is(err, io.EOF) {
			return sdk.SampledSchema(cr.Schema(), sample), nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", files[0], err)
		}
		defer rec.Release()
		return sdk.SampledSchema(rec.Schema(), sample), nil
	}
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, closeFn, err := open(f)
		if err != nil {
			return nil, err
		}
		br := bufio.NewReaderSize(r, 1<<20)
		for n := 0; n < sampleLines; n++ {
			line, err := readLine(br)
			if len(line) > 0 {
				_ = dec.Append(line) // bad lines are reported when reading
			}
			if err != nil {
				break
			}
		}
		closeFn()
		if rec := dec.Flush(); rec != nil {
			rec.Release()
		}
	}
	return sdk.SampledSchema(dec.Schema(), fmt.Sprintf("the first %d lines of each of up to %d files", sampleLines, sampleFiles)), nil
}

// Read reads every file from where the checkpoint left it.
func (s *Source) Read(ctx context.Context, from []byte, emit sdk.Emitter) error {
	pos, err := decodePosition(from)
	if err != nil {
		return err
	}
	files, err := s.files()
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.readFile(ctx, f, &pos, emit); err != nil {
			return err
		}
	}
	return nil
}

// readFile reads one file from where pos has it, in the source's format.
func (s *Source) readFile(ctx context.Context, path string, pos *position, emit sdk.Emitter) error {
	switch s.cfg.Format {
	case "csv":
		return s.readCSV(ctx, path, pos, emit)
	case "parquet":
		return s.readParquet(ctx, path, pos, emit)
	default:
		return s.readJSONL(ctx, path, pos, emit)
	}
}

// Partitions are the files the path matches now, one partition each, named
// as positions and record origins name them (see origin), sorted. A path
// that matches no file is the same error as for Read.
func (s *Source) Partitions(context.Context) ([]string, error) {
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = s.origin(f)
	}
	sort.Strings(names)
	return names, nil
}

// ReadPartition reads one file, the one the path matches now under the
// name partition, from where from has it, exactly as Read reads it (the
// same batches, origins and places); its positions hold that file alone, in
// Read's encoding. from may also be a whole-source checkpoint: only the
// file's own entry is taken from it. A file that is no longer there reads
// nothing.
func (s *Source) ReadPartition(ctx context.Context, partition string, from []byte, emit sdk.Emitter) error {
	all, err := decodePosition(from)
	if err != nil {
		return err
	}
	files, err := s.files()
	var none *noFilesError
	if err != nil && !errors.As(err, &none) {
		return err
	}
	path := ""
	for _, f := range files {
		if s.origin(f) == partition {
			path = f
			break
		}
	}
	if path == "" {
		sdk.Logger().Warn("the partition's file is no longer there (removed or renamed); nothing to read", "partition", partition, "path", s.cfg.Path)
		return nil
	}
	pos := position{Files: map[string]filePos{}}
	if fp, ok := all.Files[partition]; ok {
		pos.Files[partition] = fp
	}
	err = s.readFile(ctx, path, &pos, emit)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed between the listing and opening it.
		sdk.Logger().Warn("the partition's file is no longer there (removed or renamed); nothing to read", "partition", partition, "file", path)
		return nil
	}
	return err
}

// decodePosition reads a checkpoint; nil or empty is the beginning.
func decodePosition(from []byte) (position, error) {
	pos := position{Files: map[string]filePos{}}
	if len(from) > 0 {
		if err := json.Unmarshal(from, &pos); err != nil {
			return pos, fmt.Errorf("checkpoint is not one this plugin wrote (%v); reset it with `pipeline state reset`", err)
		}
		if pos.Files == nil {
			pos.Files = map[string]filePos{}
		}
	}
	return pos, nil
}

func (p *position) encode() []byte {
	b, _ := json.Marshal(p)
	return b
}

// open opens a file, decompressing it when it starts with gzip's magic. A
// Parquet file (its magic at both ends) is an error that says to set the
// format.
func open(path string) (io.Reader, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(f, 1<<20)
	magic, _ := br.Peek(4)
	if string(magic) == "PAR1" {
		var end [4]byte
		if st, err := f.Stat(); err == nil && st.Size() >= 8 {
			if _, err := f.ReadAt(end[:], st.Size()-4); err == nil && string(end[:]) == "PAR1" {
				f.Close()
				return nil, nil, fmt.Errorf(`%s is a Parquet file: set format = "parquet"`, path)
			}
		}
	}
	if bytes.Equal(magic[:min(2, len(magic))], []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		return zr, func() { zr.Close(); f.Close() }, nil
	}
	return br, func() { f.Close() }, nil
}

// skip discards n bytes, failing when the file is now shorter than what was
// already read (it was truncated or replaced).
func skip(r io.Reader, n int64, path string) error {
	if n == 0 {
		return nil
	}
	got, err := io.CopyN(io.Discard, r, n)
	if got < n {
		return fmt.Errorf("%s is shorter (%d bytes) than what an earlier run read (%d bytes): it was truncated or replaced; run with --full-refresh or `pipeline state reset` to read it again", path, got, n)
	}
	return err
}

// readLine returns the next line including its newline; at the end of the
// file it returns the unterminated rest (maybe empty) and io.EOF.
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

func (s *Source) readJSONL(ctx context.Context, path string, pos *position, emit sdk.Emitter) error {
	name := s.origin(path) // the checkpoint's and the ids' name; path is for opening and messages
	r, closeFn, err := open(path)
	if err != nil {
		return err
	}
	defer closeFn()
	fp := pos.Files[name]
	if err := skip(r, fp.Offset, path); err != nil {
		return err
	}
	br := bufio.NewReaderSize(r, 1<<20)
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	pending := 0      // input bytes in the decoder
	var lines []int64 // the line of each record in the decoder
	flush := func() error {
		rec := dec.Flush()
		pending = 0
		if rec == nil {
			return nil
		}
		pos.Files[name] = fp
		origin := sdk.Origin{Name: name, Unit: "line", Places: lines}
		lines = nil
		return emit.EmitAt(rec, pos.encode(), origin)
	}
	for {
		line, rerr := readLine(br)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("%s: %w", path, rerr)
		}
		if len(line) > 0 {
			complete := line[len(line)-1] == '\n'
			err := dec.Append(line)
			if !complete && err != nil && !errors.Is(err, arrowjson.ErrEmptyLine) {
				// The last line has no newline and does not parse: a writer
				// may be halfway through it. Leave it for the next run.
				sdk.Logger().Warn("last line is incomplete; leaving it for the next run", "file", path, "line", fp.Line+1)
				break
			}
			fp.Line++
			fp.Offset += int64(len(line))
			switch {
			case err == nil:
				pending += len(line)
				lines = append(lines, fp.Line)
			case errors.Is(err, arrowjson.ErrEmptyLine):
			case s.cfg.OnError == "skip":
				sdk.Logger().Warn("skipping bad record", "file", path, "line", fp.Line, "error", err.Error())
				emit.Skipped(1)
			default:
				return fmt.Errorf("%s:%d: %v (set on_error = \"skip\" to skip bad records)", path, fp.Line, err)
			}
			if dec.Len() >= s.cfg.BatchRows || pending >= batchBytes {
				if err := flush(); err != nil {
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
	if err := flush(); err != nil {
		return err
	}
	pos.Files[name] = fp
	return nil
}

func (s *Source) readCSV(ctx context.Context, path string, pos *position, emit sdk.Emitter) error {
	name := s.origin(path) // the checkpoint's and the ids' name; path is for opening and messages
	r, closeFn, err := open(path)
	if err != nil {
		return err
	}
	defer closeFn()
	fp := pos.Files[name]
	br := bufio.NewReaderSize(r, 1<<20)
	// The header is read on every run; resuming skips to the offset after it.
	header, err := readLine(br)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(header) == 0 {
		return nil // empty file
	}
	body := io.Reader(br)
	if fp.Offset > 0 {
		if err := skip(br, fp.Offset-int64(len(header)), path); err != nil {
			return err
		}
	} else {
		fp.Offset, fp.Line = int64(len(header)), 1
	}
	base, baseLine := fp.Offset, fp.Line
	// The lines consumed are counted by newline, not taken from the start
	// line of the last record: a quoted field may span lines.
	nl := &newlines{r: io.MultiReader(bytes.NewReader(header), body)}
	headerLines := int64(bytes.Count(header, []byte("\n")))
	cr, err := arrowcsv.NewReader(nl, arrowcsv.ReaderOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for {
		rec, err := cr.Next(s.cfg.BatchRows)
		var rerr *arrowcsv.RecordError
		switch {
		case errors.Is(err, io.EOF):
			pos.Files[name] = fp
			return nil
		case errors.As(err, &rerr):
			line := baseLine + int64(rerr.Line) - 1
			if s.cfg.OnError != "skip" {
				return fmt.Errorf("%s:%d: %v (set on_error = \"skip\" to skip bad records)", path, line, rerr.Err)
			}
			sdk.Logger().Warn("skipping bad record", "file", path, "line", line, "error", rerr.Err.Error())
			emit.Skipped(1)
			continue
		case err != nil:
			return fmt.Errorf("%s: %w", path, err)
		}
		fp.Offset = base + cr.Offset() - int64(len(header))
		fp.Line = baseLine + nl.before(cr.Offset()) - headerLines
		pos.Files[name] = fp
		lines := append([]int64(nil), cr.Lines()...)
		for i := range lines {
			lines[i] += baseLine - 1
		}
		if err := emit.EmitAt(rec, pos.encode(), sdk.Origin{Name: name, Unit: "line", Places: lines}); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// newlines counts the newlines of what is read through it, so that the
// lines before an offset the CSV reader reports are known (the reader
// reads ahead of the records it returns).
type newlines struct {
	r       io.Reader
	off     int64   // bytes read
	pending []int64 // offsets just past each newline not yet counted
	counted int64
}

func (n *newlines) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	for i := 0; i < k; {
		j := bytes.IndexByte(p[i:k], '\n')
		if j < 0 {
			break
		}
		i += j + 1
		n.pending = append(n.pending, n.off+int64(i))
	}
	n.off += int64(k)
	return k, err
}

// before is the number of newlines before offset; offsets must not
// decrease from call to call.
func (n *newlines) before(offset int64) int64 {
	k := 0
	for k < len(n.pending) && n.pending[k] <= offset {
		k++
	}
	n.counted += int64(k)
	n.pending = append(n.pending[:0], n.pending[k:]...)
	return n.counted
}
