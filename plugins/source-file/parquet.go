package sourcefile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/parquetread"
)

// Parquet files are read with sdk/parquetread, row group by row group.
// A file's checkpoint is the number of its rows read (an absolute row
// index, which is also each record's place), with the file's size and its
// footer's fingerprint: a file whose footer is the same is the same file,
// and is resumed at that row or, when all of it was read, skipped. A file
// whose size or footer differs was rewritten under the same name (Parquet
// files are replaced, not appended to): it is read again from its first
// row as a new input, its records named "<name>@<fingerprint>" so that
// their ids differ from those of the version read before. A file without a
// footer yet (empty, or still being written) is left for the next run.

// parquetOpen opens path as Parquet. A file that is not complete yet gives
// (nil, nil, nil), after a warning when warn is set.
func (s *Source) parquetOpen(path string, warn bool) (*parquetread.File, *os.File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, nil, err
	}
	pf, err := parquetread.Open(fh, st.Size(), parquetread.Options{BatchRows: s.cfg.BatchRows, BatchBytes: batchBytes})
	switch {
	case errors.Is(err, parquetread.ErrIncomplete):
		fh.Close()
		if warn {
			sdk.Logger().Warn("not a complete Parquet file yet (no footer): leaving it for the next run", "file", path, "bytes", st.Size())
		}
		return nil, nil, nil
	case errors.Is(err, parquetread.ErrNotParquet):
		fh.Close()
		return nil, nil, fmt.Errorf("%s is not a Parquet file (it does not start with PAR1); set format to what it is, or narrow path", path)
	case err != nil:
		fh.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return pf, fh, nil
}

func (s *Source) readParquet(ctx context.Context, path string, pos *position, emit sdk.Emitter) error {
	name := s.origin(path) // the checkpoint's and the ids' name; path is for opening and messages
	pf, fh, err := s.parquetOpen(path, true)
	if err != nil || pf == nil {
		return err
	}
	defer fh.Close()
	fp := filePos{Size: pf.Size(), Footer: pf.Fingerprint()}
	if old, seen := pos.Files[name]; seen {
		switch {
		case old.Footer == "":
			return fmt.Errorf("%s: the checkpoint holds a position in it that is not a Parquet one (the source's format was changed?); run with --full-refresh or `pipeline state reset` to read it again", path)
		case old.Footer == fp.Footer && old.Size == fp.Size:
			fp.Row, fp.Replaced = old.Row, old.Replaced
			if fp.Row > pf.NumRows() {
				return fmt.Errorf("%s: the checkpoint says %d rows were read, but the file has %d; run with --full-refresh or `pipeline state reset` to read it again", path, fp.Row, pf.NumRows())
			}
		default:
			sdk.Logger().Warn("file was rewritten since an earlier run read it: reading the new version from its first row",
				"file", path, "rows_read_before", old.Row, "bytes_before", old.Size, "bytes_now", fp.Size)
			fp.Replaced = true
		}
	}
	pos.Files[name] = fp
	if fp.Row == pf.NumRows() {
		return nil // all read
	}
	origin := name
	if fp.Replaced {
		origin = name + "@" + fp.Footer[:16]
	}
	r, err := pf.Read(ctx, fp.Row)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer r.Close()
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: %w", path, err)
		}
		fp.Row = b.Next
		pos.Files[name] = fp
		if err := emit.EmitAt(b.Record, pos.encode(), sdk.Origin{Name: origin, Unit: "row", Places: b.Places()}); err != nil {
			return err
		}
	}
}

// parquetSchema is the schema of every matching file's footer, merged by
// field name (the first file's type wins where two files disagree, as the
// engine merges batches). It is exact, not a sample, unless some file had
// no footer yet.
func (s *Source) parquetSchema(ctx context.Context) (*arrow.Schema, error) {
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	var fields []arrow.Field
	incomplete := 0
	for _, path := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pf, fh, err := s.parquetOpen(path, false) // Read warns
		if err != nil {
			return nil, err
		}
		if pf == nil {
			incomplete++
			continue
		}
		fields = mergeFields(fields, pf.Schema().Fields())
		fh.Close()
	}
	schema := arrow.NewSchema(fields, nil)
	if incomplete > 0 {
		return sdk.SampledSchema(schema, fmt.Sprintf("the footers of %d of the %d files (the others have no footer yet)", len(files)-incomplete, len(files))), nil
	}
	return schema, nil
}

// mergeFields adds b's fields to a: a's in a's order, then b's new ones;
// structs in both merge field by field, and for any other difference a's
// field stays.
func mergeFields(a, b []arrow.Field) []arrow.Field {
	out := append([]arrow.Field(nil), a...)
	for _, f := range b {
		i := -1
		for j := range out {
			if out[j].Name == f.Name {
				i = j
				break
			}
		}
		if i < 0 {
			out = append(out, f)
			continue
		}
		as, aok := out[i].Type.(*arrow.StructType)
		bs, bok := f.Type.(*arrow.StructType)
		if aok && bok && !arrow.TypeEqual(as, bs, arrow.CheckMetadata()) {
			out[i].Type = arrow.StructOf(mergeFields(as.Fields(), bs.Fields())...)
		}
	}
	return out
}
