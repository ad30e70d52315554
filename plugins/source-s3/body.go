package sources3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/pipelinehq/pipeline/sdk"
)

// errGone is an object that was deleted after the listing.
var errGone = errors.New("object no longer exists")

// errChanged is an object rewritten since the ETag it was pinned to.
var errChanged = errors.New("object changed")

// bodyRetries is how often a body that breaks off mid-stream is opened
// again (from where it broke off, pinned to its ETag).
const bodyRetries = 3

// body streams an object's bytes from an offset. A read that fails
// mid-stream (a reset connection) opens the object again with a ranged GET
// from the byte it stopped at, pinned to the ETag, so one broken connection
// does not end the run. Nothing is buffered beyond the HTTP client's own.
type body struct {
	s    *Source
	key  string
	etag string // of the version being read, without quotes
	size int64  // of the object
	off  int64  // the next byte's offset in the object
	end  int64  // the offset to stop before; 0: the object's end
	rc   io.ReadCloser
	ctx  context.Context
}

// open opens key at offset, up to the byte before end (0: to the object's
// end). With etag set, the object must still have it (else errChanged);
// without, the current version is read and its ETag kept. An offset at or
// past the end gives an empty body.
func (s *Source) open(ctx context.Context, key, etag string, offset, end int64) (*body, error) {
	b := &body{s: s, key: key, etag: etag, off: offset, end: end, ctx: ctx}
	if err := b.get(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *body) get() error {
	in := &s3.GetObjectInput{Bucket: aws.String(b.s.cfg.Bucket), Key: aws.String(b.key)}
	if b.etag != "" {
		in.IfMatch = aws.String(`"` + b.etag + `"`)
	}
	switch {
	case b.end > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", b.off, b.end-1))
	case b.off > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", b.off))
	}
	out, err := b.s.client.GetObject(b.ctx, in)
	if err != nil {
		var nk *types.NoSuchKey
		var ae smithy.APIError
		switch {
		case errors.As(err, &nk):
			return errGone
		case errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed":
			return errChanged
		case errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange":
			// The offset is at the end: nothing is left to read.
			b.rc = io.NopCloser(strings.NewReader(""))
			b.size = b.off
			return nil
		}
		return b.s.fail(b.key, "get object", err)
	}
	if b.etag == "" {
		b.etag = strings.Trim(aws.ToString(out.ETag), `"`)
	}
	b.size = b.off + aws.ToInt64(out.ContentLength)
	if out.ContentRange != nil {
		// bytes first-last/size
		if i := strings.LastIndexByte(*out.ContentRange, '/'); i >= 0 {
			var n int64
			if _, err := fmt.Sscan((*out.ContentRange)[i+1:], &n); err == nil {
				b.size = n
			}
		}
	}
	if b.end > 0 {
		b.size = min(b.size, b.end)
	}
	b.rc = out.Body
	return nil
}

func (b *body) Read(p []byte) (int, error) {
	for attempt := 0; ; attempt++ {
		n, err := b.rc.Read(p)
		b.off += int64(n)
		if err == nil || errors.Is(err, io.EOF) {
			if errors.Is(err, io.EOF) && b.off < b.size {
				err = io.ErrUnexpectedEOF
			} else {
				return n, err
			}
		}
		if n > 0 {
			// Hand over what came; the error comes back on the next Read.
			return n, nil
		}
		if b.ctx.Err() != nil || attempt >= bodyRetries {
			return 0, b.s.fail(b.key, fmt.Sprintf("read object at byte %d", b.off), err)
		}
		sdk.Logger().Warn("object read broke off; opening it again from where it stopped", "object", "s3://"+b.s.cfg.Bucket+"/"+b.key, "byte", b.off, "error", err.Error())
		b.rc.Close()
		select {
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
		if gerr := b.get(); gerr != nil {
			b.rc = io.NopCloser(strings.NewReader(""))
			if errors.Is(gerr, errChanged) {
				return 0, fmt.Errorf("s3://%s/%s was rewritten while it was read (it had ETag %s); the next run reads it again", b.s.cfg.Bucket, b.key, b.etag)
			}
			return 0, gerr
		}
	}
}

func (b *body) Close() error { return b.rc.Close() }
