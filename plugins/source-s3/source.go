// Package sources3 is the built-in `source "s3"`: JSONL, CSV (plain or
// gzipped) or Parquet objects under a prefix of an S3 bucket, or of MinIO
// and other S3-compatible stores, read incrementally by object.
//
// Objects are read in key order, each streamed (never held whole). The
// checkpoint says which objects are finished (all their records acked) and
// where inside the one being read the last acked batch ended, so a new or
// rewritten object is read on the next run and a run that dies mid-object
// resumes inside it. See position for the checkpoint and its bound.
package sources3

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/s3client"
)

// Version is the plugin's version.
const Version = "0.1.0"

// Batches are cut at whichever limit comes first, as source "file" does.
const (
	defaultBatchRows = 8192
	batchBytes       = 8 << 20
	// sampleLines bounds how much of the first object Schema reads.
	sampleLines = 2000
	// defaultTrackObjects is how many finished objects the checkpoint
	// remembers one by one (8 bytes each).
	defaultTrackObjects = 1000
)

// Formats.
const (
	formatJSONL   = "jsonl"
	formatCSV     = "csv"
	formatParquet = "parquet"
)

var (
	_ sdk.Source          = (*Source)(nil)
	_ sdk.SchemaSource    = (*Source)(nil)
	_ sdk.Partitioner     = (*Source)(nil)
	_ sdk.PartitionReader = (*Source)(nil)
)

// Source reads the objects under a prefix.
type Source struct {
	cfg     config
	name    string
	client  *s3.Client
	where   string   // the endpoint, for messages
	secrets []string // redacted from every error
}

type config struct {
	Bucket string `json:"bucket"`
	Prefix string `json:"prefix"`
	Format string `json:"format"`
	// The endpoint, region and credentials attributes.
	s3client.Config
	OnError      string `json:"on_error"`
	BatchRows    int    `json:"batch_rows"`
	TrackObjects int    `json:"track_objects"`
}

// Info describes the plugin.
func (s *Source) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSource,
		Type:        "s3",
		Version:     Version,
		Description: "Reads JSONL, CSV (gzip detected) or Parquet objects under a prefix of an S3 bucket (or MinIO and other S3-compatible stores), in key order; re-runs read only new and rewritten objects.",
		Config: append(append([]sdk.Attribute{
			{Name: "bucket", Type: sdk.String, Required: true, Description: "The bucket to read."},
			{Name: "prefix", Type: sdk.String, Default: "", Description: `Read the objects whose keys start with this, e.g. "classified/" (end it with "/" for a folder). Objects with a name part starting with "_" or "." (_manifest-….json, _SUCCESS, .tmp/) are skipped.`},
			{Name: "format", Type: sdk.String, Default: formatJSONL, Description: `"jsonl", "csv" or "parquet"; gzip is detected for jsonl and csv.`},
		}, s3client.Attributes()...), []sdk.Attribute{
			{Name: "on_error", Type: sdk.String, Default: "fail", Description: `"fail" stops at a bad record with its object and line; "skip" logs it, counts it and goes on.`},
			{Name: "batch_rows", Type: sdk.Number, Default: defaultBatchRows, Description: "Most records per batch (batches are also cut at 8 MiB of input)."},
			{Name: "track_objects", Type: sdk.Number, Default: defaultTrackObjects, Description: "How many finished objects the checkpoint remembers by key and ETag (8 bytes each); older ones in key order are folded into a watermark, and an object that appears or is rewritten at or before it is not read."},
		}...),
	}
}

// Configure checks the block and builds the client. It does no I/O beyond
// reading the local AWS configuration.
func (s *Source) Configure(ctx context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	c := &s.cfg
	s.name = cfg.Name
	s.secrets = c.Secrets()
	if err := s3client.CheckBucket(c.Bucket); err != nil {
		return err
	}
	if err := c.Check(); err != nil {
		return err
	}
	switch c.Format {
	case formatJSONL, formatCSV, formatParquet:
	case "":
		c.Format = formatJSONL
	default:
		return fmt.Errorf(`format must be "jsonl", "csv" or "parquet", not %q`, c.Format)
	}
	switch c.OnError {
	case "fail", "skip":
	case "":
		c.OnError = "fail"
	default:
		return fmt.Errorf(`on_error must be "fail" or "skip", not %q`, c.OnError)
	}
	if c.BatchRows == 0 {
		c.BatchRows = defaultBatchRows
	}
	if c.BatchRows < 1 {
		return fmt.Errorf("batch_rows must be at least 1, not %d", c.BatchRows)
	}
	if c.TrackObjects == 0 {
		c.TrackObjects = defaultTrackObjects
	}
	if c.TrackObjects < 1 {
		return fmt.Errorf("track_objects must be at least 1, not %d", c.TrackObjects)
	}
	client, err := c.New(ctx)
	if err != nil {
		return s.redact(err)
	}
	s.client = client
	s.where = c.Where(client)
	return nil
}

// redact replaces the configured secrets in err's text, keeping err for
// errors.Is and errors.As.
func (s *Source) redact(err error) error { return sdk.Redact(err, s.secrets...) }

// fail describes a failed request on key (or the prefix, for a listing)
// with the bucket, the endpoint and S3's error code.
func (s *Source) fail(key, op string, err error) error {
	err = s3client.Fail(s.cfg.Bucket, key, op, err)
	var e *s3client.Error
	if errors.As(err, &e) {
		e.Endpoint = s.where
	}
	return s.redact(err)
}

// url names an object in messages.
func (s *Source) url(key string) string { return "s3://" + s.cfg.Bucket + "/" + key }

// hidden reports whether a key is skipped: a folder marker, or a name part
// after the prefix that starts with "_" or "." (manifests, _SUCCESS
// markers, temporary folders).
func (s *Source) hidden(key string) bool {
	if strings.HasSuffix(key, "/") {
		return true
	}
	for _, part := range strings.Split(strings.TrimPrefix(key, s.cfg.Prefix), "/") {
		if strings.HasPrefix(part, "_") || strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// list returns the objects after the key startAfter ("" for all), in key
// order; with limit > 0, at most that many.
func (s *Source) list(ctx context.Context, startAfter string, limit int) ([]object, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket)}
	if s.cfg.Prefix != "" {
		in.Prefix = aws.String(s.cfg.Prefix)
	}
	if startAfter != "" {
		in.StartAfter = aws.String(startAfter)
	}
	var out []object
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.fail(s.cfg.Prefix, "list objects", err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if s.hidden(key) {
				continue
			}
			etag := strings.Trim(aws.ToString(o.ETag), `"`)
			out = append(out, object{Key: key, ETag: etag, Size: aws.ToInt64(o.Size), hash: objectHash(key, etag)})
		}
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Read reads every object that is not finished, in key order, each from
// where the checkpoint left it.
func (s *Source) Read(ctx context.Context, from []byte, emit sdk.Emitter) error {
	t, err := decodePosition(from, s.cfg.TrackObjects)
	if err != nil {
		return err
	}
	objs, err := s.list(ctx, t.pos.Through, 0)
	if err != nil {
		return err
	}
	t.prune(objs)
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if t.finished(o) {
			continue
		}
		if err := s.readObject(ctx, o, t, emit); err != nil {
			return err
		}
	}
	return nil
}

// Partitions are the objects under the prefix now, one partition each,
// named by key (the records' origin), in key order; hidden ones are left
// out, as Read leaves them.
func (s *Source) Partitions(ctx context.Context) ([]string, error) {
	objs, err := s.list(ctx, "", 0)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	return keys, nil
}

// ReadPartition reads one object, the current version of the key
// partition, exactly as Read reads it (the same batches, origins and
// places), from where from has it: a position this partition's read
// emitted, or a whole-source checkpoint, of which only what concerns this
// object counts. Its positions are in Read's encoding and hold this object
// alone: its cursor while inside it, then its hash as finished. An object
// that is not there (deleted) reads nothing.
func (s *Source) ReadPartition(ctx context.Context, partition string, from []byte, emit sdk.Emitter) error {
	all, err := decodePosition(from, s.cfg.TrackObjects)
	if err != nil {
		return err
	}
	o, ok, err := s.lookup(ctx, partition)
	if err != nil {
		return err
	}
	if !ok {
		sdk.Logger().Warn("the partition's object is no longer there (deleted); nothing to read", "object", s.url(partition))
		return nil
	}
	if all.finished(o) {
		return nil
	}
	t := &tracker{pos: position{V: positionVersion, Cur: all.resume(o)}, limit: s.cfg.TrackObjects, keys: map[uint64]string{}}
	return s.readObject(ctx, o, t, emit)
}

// lookup finds the object key as a listing shows it, if it is one that
// the source reads.
func (s *Source) lookup(ctx context.Context, key string) (object, bool, error) {
	if key == "" || !strings.HasPrefix(key, s.cfg.Prefix) || s.hidden(key) {
		return object{}, false, nil
	}
	out, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(key), MaxKeys: aws.Int32(1)})
	if err != nil {
		return object{}, false, s.fail(key, "list objects", err)
	}
	if len(out.Contents) == 0 || aws.ToString(out.Contents[0].Key) != key {
		return object{}, false, nil
	}
	c := out.Contents[0]
	etag := strings.Trim(aws.ToString(c.ETag), `"`)
	return object{Key: key, ETag: etag, Size: aws.ToInt64(c.Size), hash: objectHash(key, etag)}, true, nil
}

// readObject reads one object from its cursor, or from the start.
func (s *Source) readObject(ctx context.Context, o object, t *tracker, emit sdk.Emitter) error {
	from := t.resume(o)
	var err error
	switch s.cfg.Format {
	case formatParquet:
		err = s.readParquet(ctx, o, from, t, emit)
	default:
		err = s.readText(ctx, o, from, t, emit)
	}
	if errors.Is(err, errGone) {
		// Deleted since the listing: there is nothing to read.
		sdk.Logger().Warn("object was deleted after it was listed; skipping it", "object", s.url(o.Key))
		t.pos.Cur = nil
		return nil
	}
	return err
}

// Schema samples the first object: the first lines of a JSONL object, the
// header and first lines of a CSV one, a Parquet object's schema. It is
// marked as a sample (sdk.SampledSchema): a field that only later records
// or objects have is not in it, and the engine then warns about
// expressions that read it instead of failing. With no object under the
// prefix yet, the sample has no fields.
func (s *Source) Schema(ctx context.Context) (*arrow.Schema, error) {
	objs, err := s.list(ctx, "", 1)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return sdk.SampledSchema(arrow.NewSchema(nil, nil), s.url(s.cfg.Prefix)+", which holds no objects yet"), nil
	}
	o := objs[0]
	var schema *arrow.Schema
	var sample string
	switch s.cfg.Format {
	case formatParquet:
		schema, err = s.parquetSchema(ctx, o)
		sample = "the schema of " + s.url(o.Key) + ", the first object"
	case formatCSV:
		schema, err = s.sampleText(ctx, o)
		sample = fmt.Sprintf("the header and the first %d lines of %s, the first object", sampleLines, s.url(o.Key))
	default:
		schema, err = s.sampleText(ctx, o)
		sample = fmt.Sprintf("the first %d lines of %s, the first object", sampleLines, s.url(o.Key))
	}
	if errors.Is(err, errGone) {
		return sdk.SampledSchema(arrow.NewSchema(nil, nil), s.url(o.Key)+", which was deleted as it was sampled"), nil
	}
	if err != nil {
		return nil, err
	}
	return sdk.SampledSchema(schema, sample), nil
}
