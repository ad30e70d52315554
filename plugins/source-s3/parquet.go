package sources3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/parquetread"
	"github.com/pipelinehq/pipeline/sdk/s3client"
)

// Parquet objects are read with sdk/parquetread over ranged GETs, row group
// by row group: the footer, then each column chunk of the row group being
// read. Every GET is pinned to the ETag, so the rows all come from one
// version. The cursor is the absolute index of the next row, which is also
// each record's place (Unit "row").

// rangeReader reads byte ranges of one version of an object.
type rangeReader struct {
	s    *Source
	ctx  context.Context
	key  string
	etag string
}

func (r *rangeReader) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var last error
	for attempt := 0; attempt <= bodyRetries; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			case <-r.ctx.Done():
				return 0, r.ctx.Err()
			}
		}
		out, err := r.s.client.GetObject(r.ctx, &s3.GetObjectInput{
			Bucket:  aws.String(r.s.cfg.Bucket),
			Key:     aws.String(r.key),
			IfMatch: aws.String(`"` + r.etag + `"`),
			Range:   aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1)),
		})
		if err != nil {
			var nk *types.NoSuchKey
			var ae smithy.APIError
			switch {
			case errors.As(err, &nk):
				return 0, errGone
			case errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed":
				return 0, errChanged
			case errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange":
				return 0, io.EOF
			}
			return 0, r.s.fail(r.key, fmt.Sprintf("get bytes %d-%d", off, off+int64(len(p))-1), err)
		}
		n, err := io.ReadFull(out.Body, p)
		out.Body.Close()
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, io.ErrUnexpectedEOF) && aws.ToInt64(out.ContentLength) == int64(n):
			return n, io.EOF // the range ran past the end
		case r.ctx.Err() != nil:
			return 0, r.ctx.Err()
		}
		last = err
		sdk.Logger().Warn("object read broke off; asking for the range again", "object", r.s.url(r.key), "byte", off, "error", err.Error())
	}
	return 0, r.s.fail(r.key, fmt.Sprintf("read bytes %d-%d", off, off+int64(len(p))-1), last)
}

// head returns an object's current ETag and size.
func (s *Source) head(ctx context.Context, key string) (string, int64, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		var nf *types.NotFound
		var ae smithy.APIError
		if errors.As(err, &nf) || (errors.As(err, &ae) && ae.ErrorCode() == "NotFound") {
			return "", 0, errGone
		}
		return "", 0, s.fail(key, "head object", err)
	}
	return strings.Trim(aws.ToString(out.ETag), `"`), aws.ToInt64(out.ContentLength), nil
}

// openParquet opens o's footer. When o was rewritten since it was listed,
// the current version is opened instead; its ETag is returned.
func (s *Source) openParquet(ctx context.Context, o object) (*parquetread.File, string, error) {
	etag, size := o.ETag, o.Size
	for attempt := 0; ; attempt++ {
		pf, err := parquetread.Open(&rangeReader{s: s, ctx: ctx, key: o.Key, etag: etag}, size, parquetread.Options{BatchRows: s.cfg.BatchRows, BatchBytes: batchBytes})
		switch {
		case errors.Is(err, errChanged) && attempt == 0:
			if etag, size, err = s.head(ctx, o.Key); err != nil {
				return nil, "", err
			}
			continue
		case errors.Is(err, errChanged):
			return nil, "", fmt.Errorf("%s is being rewritten as it is read; the next run reads it: %w", s.url(o.Key), err)
		case errors.Is(err, parquetread.ErrIncomplete), errors.Is(err, parquetread.ErrNotParquet):
			return nil, "", fmt.Errorf("%s is not a Parquet file (%v); set format to what it is, or narrow prefix", s.url(o.Key), err)
		case errors.Is(err, errGone):
			return nil, "", err
		case err != nil:
			return nil, "", fmt.Errorf("%s: %w", s.url(o.Key), err)
		}
		return pf, etag, nil
	}
}

func (s *Source) readParquet(ctx context.Context, o object, from *cursor, t *tracker, emit sdk.Emitter) error {
	pf, etag, err := s.openParquet(ctx, o)
	if err != nil {
		if s.cfg.OnError == "skip" && badObject(ctx, err) {
			sdk.Logger().Warn("skipping an object that cannot be read as Parquet", "object", s.url(o.Key), "error", err.Error())
			t.finish(o.Key, o.ETag)
			return nil
		}
		return err
	}
	row := int64(0)
	if from != nil && from.ETag == etag {
		row = from.Row
		if row > pf.NumRows() {
			return fmt.Errorf("%s: the checkpoint says %d rows were read, but the object has %d; reset it with `pipeline state reset`", s.url(o.Key), row, pf.NumRows())
		}
	}
	r, err := pf.Read(ctx, row)
	if err != nil {
		return fmt.Errorf("%s: %w", s.url(o.Key), err)
	}
	defer r.Close()
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			t.finish(o.Key, etag)
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, errChanged) {
				return fmt.Errorf("%s was rewritten while it was read (it had ETag %s); the next run reads it again", s.url(o.Key), etag)
			}
			return fmt.Errorf("%s: %w", s.url(o.Key), err)
		}
		if b.Next == pf.NumRows() {
			t.finish(o.Key, etag) // the last batch marks the object finished
		} else {
			t.at(cursor{Key: o.Key, ETag: etag, Row: b.Next})
		}
		if err := emit.EmitAt(b.Record, t.encode(), sdk.Origin{Name: o.Key, Unit: "row", Places: b.Places()}); err != nil {
			return err
		}
	}
}

// badObject reports whether err from openParquet is about the object's
// content (not Parquet, a corrupt footer), not about reaching it.
func badObject(ctx context.Context, err error) bool {
	var se *s3client.Error
	return ctx.Err() == nil && !errors.As(err, &se) && !errors.Is(err, errGone) && !errors.Is(err, errChanged)
}

// parquetSchema is the first object's schema, from its footer.
func (s *Source) parquetSchema(ctx context.Context, o object) (*arrow.Schema, error) {
	pf, _, err := s.openParquet(ctx, o)
	if err != nil {
		return nil, err
	}
	return pf.Schema(), nil
}
