// Package parquetread reads Parquet files as Arrow record batches, for
// sources: `source "file"` reads local files with it, and a source of
// objects in a bucket can serve it ranged reads.
//
// Open takes an io.ReaderAt and the file's size, so any storage that can
// read a byte range serves it. It reads the footer (a read of the first 4
// bytes, one of the last 64 KiB, a third one only for a larger footer) and
// nothing else; Read then reads row group by row group with apache/arrow-go's
// pqarrow: every column chunk of the row group being read is fetched whole
// (one read per column chunk; resuming inside a row group fetches its chunks
// twice), decoded page by page into batches of at most Options.BatchRows
// rows, and dropped when the row group is done. Memory is thus bounded by
// one row group's column chunks plus one batch, whatever the file's size. A
// batch never spans two row groups. Batches are allocated from a Pool by
// default (see Pool: release them when done). A File may serve several
// Readers at once.
//
// # Positions
//
// A position in a file is an absolute row index: the number of rows before
// it, from 0 (nothing read) to NumRows (all read). Each Batch says where it
// starts (Row) and where the next one does (Next); a source stores Next as
// its checkpoint and, after a crash, passes it back to Read, which seeks to
// that row (to its row group, then within it) and goes on with exactly the
// rows after it: nothing is lost or read twice beyond the batches the
// engine had not yet committed. Row indexes are also the records' places
// (sdk.Origin with Unit "row"): row i of a file is the same record however
// batches are cut. A position is only meaningful for the same file: compare
// Fingerprint before resuming (see Fingerprint).
//
// # Types
//
// Batches carry the file's columns in the file's order, as pqarrow reads
// them (using the Arrow schema stored in the file, when the writer stored
// one, as sink "file" does), with these changes so that every part of the
// engine handles them (expressions, row ids, the JSON, CSV and Parquet
// writers):
//
//   - every field is nullable, and pqarrow's PARQUET:field_id metadata is
//     dropped (other field metadata, such as sdk/arrowjson's raw JSON
//     marker, is kept); list elements are named "item";
//   - dictionary columns become their value type (the values, one per row);
//   - large_string, large_binary and large_list become string, binary and
//     list (32-bit offsets; a batch holding more than 2 GiB of one column is
//     an error), string_view and binary_view become string and binary, and
//     fixed_size_list becomes list;
//   - UUID columns (Parquet's UUID type, Arrow's arrow.uuid) become strings
//     in the canonical 8-4-4-4-12 form;
//   - BYTE_ARRAY columns annotated JSON become strings marked as raw JSON
//     (field metadata pipeline.json = raw, as sdk/arrowjson marks them), so
//     expressions see the decoded value and JSON writers copy it as it is;
//     a value that is not valid JSON is an error naming its row. ENUM
//     becomes string. Other extension types become their storage type.
//
// Everything else keeps its type: structs, lists and maps (converted inside),
// booleans, all integer widths, float16/32/64, decimals, dates, times,
// timestamps with their unit and time zone (a Parquet timestamp adjusted to
// UTC reads as time zone "UTC", or the zone the stored Arrow schema names),
// INT96 timestamps (as timestamp[ns, tz=UTC]), durations, binary (including
// BYTE_ARRAY columns without an annotation, and BSON), fixed-size binary
// and null. Columns whose name starts with sdk.ReservedPrefix are refused:
// those names belong to the engine. The schema's own metadata is dropped
// (a file written by sink "file" stores its source's, which does not
// describe the file).
package parquetread

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// DefaultBatchRows is the most rows of a batch when Options.BatchRows is 0.
const DefaultBatchRows = 8192

// tailBytes is how much of the file's end Open reads at once: the footer
// of most files fits, so a ranged reader is asked once.
const tailBytes = 64 << 10

var (
	// ErrIncomplete is returned by Open for a file that may still be
	// being written: empty, or starting with Parquet's magic but not yet
	// ending with it (its footer is written last).
	ErrIncomplete = errors.New("not a complete Parquet file (no footer yet)")
	// ErrNotParquet is returned by Open for a file that does not start
	// with Parquet's magic.
	ErrNotParquet = errors.New("not a Parquet file")
)

var (
	magic          = []byte("PAR1")
	magicEncrypted = []byte("PARE")
)

// Options configures a File.
type Options struct {
	// BatchRows is the most rows of a batch; DefaultBatchRows when 0.
	BatchRows int
	// BatchBytes, when set, also caps a batch's rows at this many bytes
	// of the row group's uncompressed data (an estimate: dictionary
	// encoded columns count their encoded size).
	BatchBytes int64
	// Allocator allocates the batches' buffers. When nil, a Pool shared
	// by all Files: release each batch once done with it, and do not use
	// it after.
	Allocator memory.Allocator
}

// File is an open Parquet file: its footer, read, and the way to read its
// rows.
type File struct {
	size        int64
	opts        Options
	mem         memory.Allocator
	meta        *metadata.FileMetaData
	fingerprint string
	schema      *arrow.Schema
	starts      []int64 // the first row of each row group; starts[len] = NumRows
	nodes       []*node
	fr          *pqarrow.FileReader
}

// Open reads the footer of the Parquet file r of size bytes. A file that
// is empty or has no footer yet is ErrIncomplete; one that is not Parquet
// at all, ErrNotParquet. Encrypted files are not supported.
func Open(r io.ReaderAt, size int64, opts Options) (*File, error) {
	if opts.BatchRows <= 0 {
		opts.BatchRows = DefaultBatchRows
	}
	mem := opts.Allocator
	if mem == nil {
		mem = defaultPool
	}
	if size == 0 {
		return nil, ErrIncomplete
	}
	head := make([]byte, min(size, 4))
	if err := readFull(r, head, 0); err != nil {
		return nil, err
	}
	if !bytes.Equal(head, magic[:len(head)]) {
		return nil, ErrNotParquet
	}
	if size < 12 {
		return nil, ErrIncomplete
	}
	tail := make([]byte, min(size, tailBytes))
	if err := readFull(r, tail, size-int64(len(tail))); err != nil {
		return nil, err
	}
	end := tail[len(tail)-4:]
	if bytes.Equal(end, magicEncrypted) {
		return nil, errors.New("encrypted Parquet files are not supported")
	}
	if !bytes.Equal(end, magic) {
		return nil, ErrIncomplete
	}
	footerLen := int64(binary.LittleEndian.Uint32(tail[len(tail)-8:]))
	if footerLen+12 > size {
		return nil, fmt.Errorf("corrupt Parquet footer: it claims %d bytes of a %d-byte file", footerLen, size)
	}
	var footer []byte
	if footerLen+8 <= int64(len(tail)) {
		footer = tail[int64(len(tail))-8-footerLen : len(tail)-8]
	} else {
		footer = make([]byte, footerLen)
		if err := readFull(r, footer, size-8-footerLen); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(footer)
	meta, err := metadata.NewFileMetaData(footer, nil)
	if err != nil {
		return nil, fmt.Errorf("corrupt Parquet footer: %w", err)
	}
	if meta.IsSetEncryptionAlgorithm() {
		return nil, errors.New("encrypted Parquet files are not supported")
	}
	meta.SetSourceFileSize(size)
	props := parquet.NewReaderProperties(mem)
	pf, err := file.NewParquetReader(io.NewSectionReader(r, 0, size), file.WithReadProps(props), file.WithMetadata(meta))
	if err != nil {
		return nil, err
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: int64(opts.BatchRows)}, mem)
	if err != nil {
		return nil, fmt.Errorf("parquet schema: %w", err)
	}
	for _, f := range fr.Manifest.Fields {
		if sdk.IsReserved(f.Field.Name) {
			return nil, fmt.Errorf("column %q: names starting with %q belong to the engine; rename the column", f.Field.Name, sdk.ReservedPrefix)
		}
	}
	fields, nodes, err := planFields(fr.Manifest.Fields, meta.Schema)
	if err != nil {
		return nil, err
	}
	f := &File{
		size: size, opts: opts, mem: mem, meta: meta,
		fingerprint: hex.EncodeToString(sum[:16]),
		schema:      arrow.NewSchema(fields, nil),
		nodes:       nodes,
		fr:          fr,
	}
	f.starts = make([]int64, meta.NumRowGroups()+1)
	for i := 0; i < meta.NumRowGroups(); i++ {
		f.starts[i+1] = f.starts[i] + meta.RowGroup(i).NumRows()
	}
	if f.starts[len(f.starts)-1] != meta.NumRows {
		return nil, fmt.Errorf("corrupt Parquet footer: its row groups hold %d rows, the file says %d", f.starts[len(f.starts)-1], meta.NumRows)
	}
	return f, nil
}

// readFull reads len(p) bytes at off. io.ReaderAt may return io.EOF with
// a full read at the end of the input; a short read is an error.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("read %d of %d bytes at %d: %w (the file is shorter than its size)", n, len(p), off, io.ErrUnexpectedEOF)
	}
	return err
}

// Schema is the schema of every batch Read yields: the footer's schema,
// converted as the package documentation says.
func (f *File) Schema() *arrow.Schema { return f.schema }

// NumRows is the number of rows in the file.
func (f *File) NumRows() int64 { return f.meta.NumRows }

// NumRowGroups is the number of row groups in the file.
func (f *File) NumRowGroups() int { return f.meta.NumRowGroups() }

// Size is the file's size, as given to Open.
func (f *File) Size() int64 { return f.size }

// Fingerprint identifies the file's content: the hex of the first 16 bytes
// of the SHA-256 of its footer. The footer records every column chunk's
// offset, size and statistics and the number of rows, so a file rewritten
// with other content gets another fingerprint, while a copy of the same
// file (another mtime) keeps it.
func (f *File) Fingerprint() string { return f.fingerprint }

// Locate returns the row group that holds absolute row and the row's index
// within it. row = NumRows gives (NumRowGroups, 0).
func (f *File) Locate(row int64) (rowGroup int, inGroup int64) {
	for rg := 0; rg < f.NumRowGroups(); rg++ {
		if row < f.starts[rg+1] {
			return rg, row - f.starts[rg]
		}
	}
	return f.NumRowGroups(), 0
}

// Batch is a batch of consecutive rows of one row group.
type Batch struct {
	// Record holds the rows; the caller releases it.
	Record arrow.RecordBatch
	// RowGroup is the row group the rows are in.
	RowGroup int
	// Row is the absolute index of the first row; Next that of the row
	// after the last, the position to resume from.
	Row, Next int64
}

// Places returns the absolute row index of each row of the batch (the
// places of sdk.Origin with Unit "row").
func (b Batch) Places() []int64 {
	out := make([]int64, b.Next-b.Row)
	for i := range out {
		out[i] = b.Row + int64(i)
	}
	return out
}

// Reader yields a file's batches in order; see File.Read.
type Reader struct {
	f       *File
	ctx     context.Context
	rg      int
	inGroup int64
	rr      pqarrow.RecordReader
}

// Read returns a Reader of the rows from absolute row from (0: all) on.
// from must be between 0 and NumRows.
func (f *File) Read(ctx context.Context, from int64) (*Reader, error) {
	if from < 0 || from > f.NumRows() {
		return nil, fmt.Errorf("row %d is not in the file (it has %d rows)", from, f.NumRows())
	}
	rg, in := f.Locate(from)
	return &Reader{f: f, ctx: ctx, rg: rg, inGroup: in}, nil
}

// Next returns the next batch, or io.EOF after the last one. An error
// that concerns a row names it by its absolute index.
func (r *Reader) Next() (Batch, error) {
	f := r.f
	for {
		if err := r.ctx.Err(); err != nil {
			return Batch{}, err
		}
		if r.rg >= f.NumRowGroups() {
			return Batch{}, io.EOF
		}
		rows := f.starts[r.rg+1] - f.starts[r.rg]
		if r.inGroup >= rows {
			r.close()
			r.rg, r.inGroup = r.rg+1, 0
			continue
		}
		if len(f.nodes) == 0 {
			// Rows without columns: only their count.
			n := min(rows-r.inGroup, int64(f.opts.BatchRows))
			b := Batch{Record: array.NewRecordBatch(f.schema, nil, n), RowGroup: r.rg, Row: f.starts[r.rg] + r.inGroup}
			r.inGroup += n
			b.Next = b.Row + n
			return b, nil
		}
		if r.rr == nil {
			if err := r.open(rows); err != nil {
				return Batch{}, fmt.Errorf("row group %d: %w", r.rg, err)
			}
		}
		if !r.rr.Next() {
			err := r.rr.Err()
			r.close()
			if err != nil {
				return Batch{}, fmt.Errorf("row group %d: %w", r.rg, err)
			}
			if r.inGroup < rows {
				return Batch{}, fmt.Errorf("row group %d: it ends after %d of the %d rows its footer promises", r.rg, r.inGroup, rows)
			}
			continue
		}
		rec := r.rr.RecordBatch()
		row := f.starts[r.rg] + r.inGroup
		out, err := f.convert(rec)
		if err != nil {
			var ve *valueError
			if errors.As(err, &ve) {
				return Batch{}, fmt.Errorf("row %d: %w", row+int64(ve.row), err)
			}
			return Batch{}, err
		}
		n := out.NumRows()
		r.inGroup += n
		return Batch{Record: out, RowGroup: r.rg, Row: row, Next: row + n}, nil
	}
}

// open starts reading row group r.rg at r.inGroup.
func (r *Reader) open(rows int64) error {
	f := r.f
	batch := int64(f.opts.BatchRows)
	if f.opts.BatchBytes > 0 && rows > 0 {
		if per := f.meta.RowGroup(r.rg).TotalByteSize() / rows; per > 0 {
			batch = max(1, min(batch, f.opts.BatchBytes/per))
		}
	}
	fr := *f.fr // a copy, so that Readers of one File do not share the batch size
	fr.Props.BatchSize = batch
	rr, err := fr.GetRecordReader(r.ctx, nil, []int{r.rg})
	if err != nil {
		return err
	}
	if r.inGroup > 0 {
		if err := rr.SeekToRow(r.inGroup); err != nil {
			rr.Release()
			return fmt.Errorf("seek to row %d: %w", f.starts[r.rg]+r.inGroup, err)
		}
	}
	r.rr = rr
	return nil
}

func (r *Reader) close() {
	if r.rr != nil {
		r.rr.Release()
		r.rr = nil
	}
}

// Close releases what the Reader holds.
func (r *Reader) Close() { r.close() }

// convert turns a batch as pqarrow reads it into one of f.schema.
func (f *File) convert(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, len(f.nodes))
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for i, n := range f.nodes {
		d, err := n.convert(f.mem, rec.Column(i).Data())
		if err != nil {
			return nil, err
		}
		cols[i] = array.MakeFromData(d)
		d.Release()
	}
	return array.NewRecordBatch(f.schema, cols, rec.NumRows()), nil
}
