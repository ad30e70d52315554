package export

import (
	"bufio"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/klauspost/compress/gzip"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowcsv"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Writer encodes record batches in one format onto an io.Writer.
type Writer interface {
	// Write writes rec's records; reserved columns are skipped.
	Write(rec arrow.RecordBatch) error
	// Close finishes the format (json ']', parquet footer, gzip trailer)
	// without closing the underlying io.Writer.
	Close() error
	// Bytes is the number of bytes written to the underlying writer so
	// far. For parquet it also counts the compressed pages of the row group
	// being buffered, which reach the writer only when the row group is
	// complete, so that byte rolling is not a whole row group late.
	Bytes() int64
}

// schemaAcceptor is implemented by Writers that cannot take every schema
// once they have started: the Exporter starts a new object when accepts
// reports false.
type schemaAcceptor interface {
	accepts(s *arrow.Schema) bool
}

// NewWriter returns a Writer of opts.Format (and opts.Compression) on w.
// Only the format options of opts are used.
func NewWriter(w io.Writer, opts Options) (Writer, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	return newWriter(w, &opts)
}

func newWriter(w io.Writer, opts *Options) (Writer, error) {
	cw := &countingWriter{w: w}
	if opts.Format == FormatParquet {
		return newParquetWriter(cw, opts)
	}
	var gz *gzip.Writer
	var out io.Writer = cw
	if opts.Compression == CompressionGzip {
		gz = gzip.NewWriter(cw)
		out = gz
	}
	base := streamBase{count: cw, gz: gz, flushGzip: opts.RollBytes > 0}
	switch opts.Format {
	case FormatCSV:
		if opts.Columns != nil {
			w := arrowcsv.NewWriterWithColumns(out, opts.Columns).DropUnlisted()
			return &csvWriter{streamBase: base, w: w, header: opts.Columns, fixed: true}, nil
		}
		return &csvWriter{streamBase: base, w: arrowcsv.NewWriter(out)}, nil
	case FormatJSONL, FormatJSON:
		return &jsonWriter{streamBase: base, bw: bufio.NewWriterSize(out, 64<<10), enc: arrowjson.NewEncoder(), array: opts.Format == FormatJSON}, nil
	}
	return nil, fmt.Errorf("format: unknown format %q", opts.Format)
}

// countingWriter counts the bytes that reach w. It has no Close method, so
// that nothing closes the underlying writer through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type streamBase struct {
	count  *countingWriter
	gz     *gzip.Writer
	closed bool
	// flushGzip flushes the compressor after each Write so that Bytes is
	// current for byte rolling (a few bytes per batch).
	flushGzip bool
}

// flush pushes a Write's output through the compressor when byte rolling
// needs it.
func (s *streamBase) flush() error {
	if s.gz != nil && s.flushGzip {
		if err := s.gz.Flush(); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
	}
	return nil
}

func (s *streamBase) Bytes() int64 { return s.count.n }

func (s *streamBase) closeGzip() error {
	if s.gz != nil {
		if err := s.gz.Close(); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
	}
	return nil
}

type csvWriter struct {
	streamBase
	w      *arrowcsv.Writer
	header []string // nil until the first batch
	fixed  bool     // the header is Options.Columns: every batch fits
}

func (w *csvWriter) accepts(s *arrow.Schema) bool {
	if w.header == nil || w.fixed {
		return true
	}
	have := make(map[string]int, len(w.header))
	for _, c := range w.header {
		have[c]++
	}
	for _, c := range arrowcsv.Columns(s) {
		if have[c] == 0 {
			return false
		}
		have[c]--
	}
	return true
}

func (w *csvWriter) Write(rec arrow.RecordBatch) error {
	if w.closed {
		return fmt.Errorf("csv: write after close")
	}
	if w.header == nil {
		w.header = arrowcsv.Columns(rec.Schema())
		if w.header == nil {
			w.header = []string{}
		}
	}
	if err := w.w.Write(rec); err != nil {
		return fmt.Errorf("csv: %w", err)
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("csv: %w", err)
	}
	return w.flush()
}

func (w *csvWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("csv: %w", err)
	}
	return w.closeGzip()
}

// jsonWriter writes JSON Lines, or one JSON array with a record per line.
type jsonWriter struct {
	streamBase
	bw    *bufio.Writer
	enc   *arrowjson.Encoder
	array bool
	rows  int64
	buf   []byte
}

func (w *jsonWriter) Write(rec arrow.RecordBatch) error {
	if w.closed {
		return fmt.Errorf("json: write after close")
	}
	n := int(rec.NumRows())
	for i := 0; i < n; i++ {
		w.buf = w.buf[:0]
		if w.array {
			if w.rows == 0 {
				w.buf = append(w.buf, "[\n"...)
			} else {
				w.buf = append(w.buf, ",\n"...)
			}
		}
		w.buf = w.enc.AppendRow(w.buf, rec, i)
		if !w.array {
			w.buf = append(w.buf, '\n')
		}
		if _, err := w.bw.Write(w.buf); err != nil {
			return fmt.Errorf("json: %w", err)
		}
		w.rows++
	}
	w.enc = arrowjson.NewEncoder() // do not keep the batch alive
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return w.flush()
}

func (w *jsonWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if w.array {
		tail := "\n]\n"
		if w.rows == 0 {
			tail = "[]\n"
		}
		if _, err := w.bw.WriteString(tail); err != nil {
			return fmt.Errorf("json: %w", err)
		}
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return w.closeGzip()
}

// maxRowGroupBytes bounds a buffered parquet row group's compressed size
// whatever RowGroupRows says, so that wide records do not hold hundreds of
// megabytes in memory.
const maxRowGroupBytes = 128 << 20

type parquetWriter struct {
	count  *countingWriter
	opts   *Options
	fw     *pqarrow.FileWriter
	fields []arrow.Field // the file's schema (reserved columns dropped)
	schema *arrow.Schema
	conf   *conformer
	closed bool
}

func parquetCodec(name string) compress.Compression {
	switch name {
	case "snappy":
		return compress.Codecs.Snappy
	case "gzip":
		return compress.Codecs.Gzip
	case "none":
		return compress.Codecs.Uncompressed
	}
	return compress.Codecs.Zstd
}

func newParquetWriter(cw *countingWriter, opts *Options) (*parquetWriter, error) {
	return &parquetWriter{count: cw, opts: opts, conf: newConformer(nil)}, nil
}

// accepts reports whether s's records can go into the file as they are or
// conformed (fewer fields, nulls, ints into float64 columns). A field the
// file lacks or a conflicting type needs a new file.
func (w *parquetWriter) accepts(s *arrow.Schema) bool {
	return w.fw == nil || coversFields(w.fields, dataFields(s))
}

// parquetFields returns fields as a parquet file can hold them: a struct
// without fields (from an empty JSON object) cannot be a parquet group, so
// it becomes a raw JSON column ("{}").
func parquetFields(fields []arrow.Field) []arrow.Field {
	out := make([]arrow.Field, len(fields))
	for i, f := range fields {
		out[i] = parquetField(f)
	}
	return out
}

func parquetField(f arrow.Field) arrow.Field {
	switch t := f.Type.(type) {
	case *arrow.StructType:
		if t.NumFields() == 0 {
			return rawField(f.Name)
		}
		f.Type = arrow.StructOf(parquetFields(t.Fields())...)
	case *arrow.ListType:
		elem := parquetField(t.ElemField())
		f.Type = arrow.ListOfField(elem)
	}
	return f
}

func (w *parquetWriter) start(s *arrow.Schema, first arrow.RecordBatch) error {
	w.fields = parquetFields(dataFields(s))
	md := s.Metadata()
	schema := arrow.NewSchema(w.fields, &md)
	w.schema = schema
	props := []parquet.WriterProperty{
		parquet.WithCompression(parquetCodec(w.opts.ParquetCompression)),
		parquet.WithMaxRowGroupLength(w.opts.RowGroupRows),
		parquet.WithCreatedBy("pipeline"),
	}
	for _, path := range uniqueStrings(first) {
		props = append(props, parquet.WithDictionaryFor(path, false))
	}
	if w.opts.RollBytes > 0 {
		// Buffered pages are what Bytes can see of a row group, and a
		// column's dictionary is not seen until the row group ends: keep
		// both small enough for byte rolling to act in time (a dictionary
		// that outgrows the limit falls back to plain encoding).
		page := min(max(w.opts.RollBytes/16, 4<<10), parquet.DefaultDataPageSize)
		props = append(props, parquet.WithDataPageSize(page), parquet.WithDictionaryPageSizeLimit(page))
	}
	fw, err := pqarrow.NewFileWriter(schema, w.count, parquet.NewWriterProperties(props...), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return fmt.Errorf("parquet: schema %s: %w", schema, err)
	}
	w.fw = fw
	return nil
}

func (w *parquetWriter) Write(rec arrow.RecordBatch) error {
	if w.closed {
		return fmt.Errorf("parquet: write after close")
	}
	if rec.NumRows() == 0 && w.fw != nil {
		return nil
	}
	if w.fw == nil {
		if err := w.start(rec.Schema(), rec); err != nil {
			return err
		}
	}
	fields := dataFields(rec.Schema())
	var out arrow.RecordBatch
	if len(fields) == len(w.fields) && arrow.NewSchema(fields, nil).Equal(arrow.NewSchema(w.fields, nil)) {
		out = projectRecord(rec, w.schema)
	} else {
		if !coversFields(w.fields, fields) {
			return fmt.Errorf("parquet: %s: a Parquet file has one schema, fixed by its first batch. "+
				"Give the field one type upstream (a transform's set, or the source), or write jsonl, which takes any records", misfit(w.fields, fields, ""))
		}
		conformed := w.conf.conformRecord(rec, w.fields)
		out = projectRecord(conformed, w.schema)
		conformed.Release()
	}
	defer out.Release()
	if out.NumRows() == 0 {
		return nil
	}
	if err := w.fw.WriteBuffered(out); err != nil {
		return fmt.Errorf("parquet: %w", err)
	}
	if w.fw.RowGroupTotalCompressedBytes() >= maxRowGroupBytes {
		if err := w.fw.NewBufferedRowGroupChecked(); err != nil {
			return fmt.Errorf("parquet: %w", err)
		}
	}
	return nil
}

// projectRecord returns rec's columns named by schema's fields, as a
// record of that schema.
func projectRecord(rec arrow.RecordBatch, schema *arrow.Schema) arrow.RecordBatch {
	src := rec.Schema()
	cols := make([]arrow.Array, schema.NumFields())
	for i, f := range schema.Fields() {
		cols[i] = rec.Column(src.FieldIndices(f.Name)[0])
	}
	return array.NewRecordBatch(schema, cols, rec.NumRows())
}

func (w *parquetWriter) Bytes() int64 {
	n := w.count.n
	if w.fw != nil && !w.closed {
		n += max(w.fw.RowGroupTotalCompressedBytes(), w.fw.RowGroupTotalBytesWritten())
	}
	return n
}

func (w *parquetWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if w.fw == nil {
		// No batch came: write a valid file with no columns.
		if err := w.start(arrow.NewSchema(nil, nil), nil); err != nil {
			return err
		}
	}
	if err := w.fw.Close(); err != nil {
		return fmt.Errorf("parquet: %w", err)
	}
	return nil
}

// uniqueStrings returns the Parquet column paths of the string columns
// (top level or in structs) whose values in rec's first rows are mostly
// distinct: ids, times, free text. Dictionary encoding them costs a hash
// lookup per value (40% of the sink's CPU on the benchmark records) only
// to fall back to plain encoding once the dictionary outgrows its page;
// they are written plain from the start. Low-cardinality columns (labels,
// channels, queues) keep their dictionaries.
func uniqueStrings(rec arrow.RecordBatch) []string {
	if rec == nil || rec.NumRows() < 64 {
		return nil
	}
	n := min(int(rec.NumRows()), 4096)
	var paths []string
	seen := make(map[string]struct{}, n)
	var walk func(arr arrow.Array, path string)
	walk = func(arr arrow.Array, path string) {
		switch a := arr.(type) {
		case *array.Struct:
			st := a.DataType().(*arrow.StructType)
			for i, f := range st.Fields() {
				walk(a.Field(i), path+"."+f.Name)
			}
		case *array.String:
			clear(seen)
			values := 0
			for i := 0; i < n; i++ {
				if a.IsValid(i) {
					values++
					seen[a.Value(i)] = struct{}{}
				}
			}
			if values > 0 && len(seen) > values/2 {
				paths = append(paths, path)
			}
		}
	}
	sch := rec.Schema()
	for i, f := range sch.Fields() {
		if sdk.IsReserved(f.Name) {
			continue
		}
		walk(rec.Column(i), f.Name)
	}
	return paths
}
