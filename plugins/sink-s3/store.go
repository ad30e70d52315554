package sinks3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/pipelinehq/pipeline/sdk/s3client"
)

// Part sizes: S3 wants every part but the last to be at least 5 MiB, and at
// most 10,000 parts of at most 5 GiB.
const (
	MinPartSize     = 5 << 20
	MaxPartSize     = 5 << 30
	DefaultPartSize = 16 << 20
	maxParts        = 10000
)

// Store writes objects to one bucket. Create streams an object as a
// multipart upload with bounded memory (at most two part buffers: one being
// filled, one being uploaded); Put writes a small object whole.
type Store struct {
	client   *s3.Client
	bucket   string
	partSize int
	checksum types.ChecksumAlgorithm
	buffers  sync.Pool // *[]byte of cap partSize, reused across objects
}

// NewStore returns a Store for bucket; partSize 0 means DefaultPartSize.
func NewStore(client *s3.Client, bucket string, partSize int) (*Store, error) {
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < MinPartSize || partSize > MaxPartSize {
		return nil, fmt.Errorf("part size %d is outside S3's range of 5 MiB to 5 GiB", partSize)
	}
	s := &Store{client: client, bucket: bucket, partSize: partSize}
	// Multipart checksums must be declared when the upload is created and
	// repeated when it is completed. With AWS_REQUEST_CHECKSUM_CALCULATION
	// = when_required (S3-compatible stores without checksum support) none
	// is sent.
	if client.Options().RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired {
		s.checksum = types.ChecksumAlgorithmCrc32
	}
	return s, nil
}

// Bucket is the store's bucket.
func (s *Store) Bucket() string { return s.bucket }

// Put writes data as the object at key.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(key),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return s.fail(key, "put object", err)
	}
	return nil
}

// Create starts the object at key. Nothing is visible at key until Commit;
// parts are uploaded as they fill, using ctx, which must outlive the upload.
func (s *Store) Create(ctx context.Context, key string) (*Upload, error) {
	if ctx == nil {
		return nil, errors.New("nil context")
	}
	return &Upload{s: s, ctx: ctx, key: key, buf: s.getBuffer()}, nil
}

func (s *Store) getBuffer() []byte {
	if b, ok := s.buffers.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, s.partSize)
}

func (s *Store) putBuffer(b []byte) {
	if cap(b) == s.partSize {
		s.buffers.Put(&b)
	}
}

// release returns the upload's buffers to the store.
func (u *Upload) release() {
	for _, b := range [][]byte{u.buf, u.spare} {
		if b != nil {
			u.s.putBuffer(b)
		}
	}
	u.buf, u.spare = nil, nil
}

// Upload is one object being written: a multipart upload once the first part
// is full, a single PutObject when the whole object fits in one part.
type Upload struct {
	s   *Store
	ctx context.Context
	key string

	buf   []byte // the part being filled
	spare []byte // the buffer of the part last uploaded, reused
	id    string // the multipart upload id, "" until the first part is full
	parts []types.CompletedPart
	done  bool // committed or aborted
	err   error

	// At most one part uploads in the background while the next fills.
	// The goroutine owns the buffer it was handed until wait receives it
	// back; it reads only fields that no longer change.
	inflight chan partResult
}

type partResult struct {
	part types.CompletedPart
	buf  []byte
	err  error
}

// Key is the object's key.
func (u *Upload) Key() string { return u.key }

// Write buffers p, uploading each part as it fills.
func (u *Upload) Write(p []byte) (int, error) {
	if u.done {
		return 0, fmt.Errorf("s3://%s/%s: write after commit or abort", u.s.bucket, u.key)
	}
	if u.err != nil {
		return 0, u.err
	}
	n := 0
	for len(p) > 0 {
		room := u.s.partSize - len(u.buf)
		take := min(room, len(p))
		u.buf = append(u.buf, p[:take]...)
		p = p[take:]
		n += take
		if len(u.buf) == u.s.partSize {
			if err := u.sendPart(); err != nil {
				u.err = err
				return n, err
			}
		}
	}
	return n, nil
}

// sendPart starts uploading the full buffer as the next part, after waiting
// for the previous part's upload, and carries on filling the other buffer.
func (u *Upload) sendPart() error {
	if u.id == "" {
		out, err := u.s.client.CreateMultipartUpload(u.ctx, &s3.CreateMultipartUploadInput{
			Bucket:            aws.String(u.s.bucket),
			Key:               aws.String(u.key),
			ChecksumAlgorithm: u.s.checksum,
		})
		if err != nil {
			return u.s.fail(u.key, "create multipart upload", err)
		}
		u.id = aws.ToString(out.UploadId)
	}
	if err := u.wait(); err != nil {
		return err
	}
	if len(u.parts) >= maxParts {
		return fmt.Errorf("s3://%s/%s: the object would exceed S3's %d parts of %d bytes: raise part_size or set roll_bytes", u.s.bucket, u.key, maxParts, u.s.partSize)
	}
	num := int32(len(u.parts) + 1)
	data := u.buf
	u.inflight = make(chan partResult, 1)
	go func(ch chan<- partResult) {
		part, err := u.uploadPart(num, data)
		ch <- partResult{part: part, buf: data, err: err}
	}(u.inflight)
	// Fill the spare buffer next (taken on the first part only).
	if u.spare == nil {
		u.spare = u.s.getBuffer()
	}
	u.buf, u.spare = u.spare[:0], nil
	return nil
}

// wait collects the part in flight, if any.
func (u *Upload) wait() error {
	if u.inflight == nil {
		return nil
	}
	r := <-u.inflight
	u.inflight = nil
	u.spare = r.buf[:0]
	if r.err != nil {
		return r.err
	}
	u.parts = append(u.parts, r.part)
	return nil
}

func (u *Upload) uploadPart(num int32, data []byte) (types.CompletedPart, error) {
	out, err := u.s.client.UploadPart(u.ctx, &s3.UploadPartInput{
		Bucket:            aws.String(u.s.bucket),
		Key:               aws.String(u.key),
		UploadId:          aws.String(u.id),
		PartNumber:        aws.Int32(num),
		Body:              bytes.NewReader(data),
		ContentLength:     aws.Int64(int64(len(data))),
		ChecksumAlgorithm: u.s.checksum,
	})
	if err != nil {
		return types.CompletedPart{}, u.s.fail(u.key, fmt.Sprintf("upload part %d", num), err)
	}
	return types.CompletedPart{
		PartNumber:     aws.Int32(num),
		ETag:           out.ETag,
		ChecksumCRC32:  out.ChecksumCRC32,
		ChecksumCRC32C: out.ChecksumCRC32C,
		ChecksumSHA1:   out.ChecksumSHA1,
		ChecksumSHA256: out.ChecksumSHA256,
	}, nil
}

// Commit makes the object visible at its key: the last part and
// CompleteMultipartUpload, or one PutObject for an object smaller than a
// part. A failed Commit aborts the upload.
func (u *Upload) Commit(ctx context.Context) error {
	if u.done {
		return fmt.Errorf("s3://%s/%s: commit after commit or abort", u.s.bucket, u.key)
	}
	if u.err != nil {
		_ = u.Abort(ctx)
		return u.err
	}
	u.done = true
	if u.id == "" {
		defer u.release()
		return u.s.Put(ctx, u.key, u.buf)
	}
	err := u.wait()
	if err == nil && len(u.buf) > 0 {
		var part types.CompletedPart
		if part, err = u.uploadPart(int32(len(u.parts)+1), u.buf); err == nil {
			u.parts = append(u.parts, part)
		}
	}
	u.release()
	if err == nil {
		sort.Slice(u.parts, func(i, j int) bool { return *u.parts[i].PartNumber < *u.parts[j].PartNumber })
		_, err = u.s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket:          aws.String(u.s.bucket),
			Key:             aws.String(u.key),
			UploadId:        aws.String(u.id),
			MultipartUpload: &types.CompletedMultipartUpload{Parts: u.parts},
		})
		if err != nil {
			err = u.s.fail(u.key, "complete multipart upload", err)
		}
	}
	if err != nil {
		u.abortUpload(ctx)
		return err
	}
	return nil
}

// Abort discards the object: nothing appears at its key, and the parts
// uploaded so far are deleted.
func (u *Upload) Abort(ctx context.Context) error {
	if u.done {
		return nil
	}
	u.done = true
	_ = u.wait()
	u.release()
	return u.abortUpload(ctx)
}

func (u *Upload) abortUpload(ctx context.Context) error {
	if u.id == "" {
		return nil
	}
	_, err := u.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   aws.String(u.s.bucket),
		Key:      aws.String(u.key),
		UploadId: aws.String(u.id),
	})
	if err != nil {
		var nf *types.NoSuchUpload
		if errors.As(err, &nf) {
			return nil
		}
		return u.s.fail(u.key, "abort multipart upload", err)
	}
	return nil
}

// fail describes an S3 error with the object it concerns and S3's error
// code; throttling and server errors are marked sdk.ErrRetryable.
func (s *Store) fail(key, op string, err error) error {
	return s3client.Fail(s.bucket, key, op, err)
}

// Error is a failed S3 request.
type Error = s3client.Error
