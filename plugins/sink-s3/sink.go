package sinks3

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/export"
	"github.com/pipelinehq/pipeline/sdk/s3client"
)

// Version is the plugin's version.
const Version = "0.1.0"

// DefaultRegion is used when neither the block nor the AWS configuration
// names one.
const DefaultRegion = s3client.DefaultRegion

var (
	_ sdk.Sink         = (*Sink)(nil)
	_ sdk.SinkCloser   = (*Sink)(nil)
	_ sdk.BufferedSink = (*Sink)(nil)
	_ export.Store     = storeAdapter{}
)

type config struct {
	Bucket string `json:"bucket"`
	Prefix string `json:"prefix"`
	// The endpoint, region and credentials attributes.
	s3client.Config
	Format             string   `json:"format"`
	Compression        string   `json:"compression"`
	ParquetCompression string   `json:"parquet_compression"`
	GroupBy            string   `json:"group_by"`
	OrderBy            string   `json:"order_by"`
	RollRows           *float64 `json:"roll_rows"`
	RollBytes          string   `json:"roll_bytes"`
	RollInterval       string   `json:"roll_interval"`
	PartSize           string   `json:"part_size"`
	Timezone           string   `json:"timezone"`
}

// Sink exports records to S3 through an export.Exporter: objects are
// streamed as multipart uploads, and a flush writes a manifest after its
// objects.
type Sink struct {
	cfg     config
	name    string
	store   *Store
	exp     *export.Exporter
	secrets []string // redacted from every error
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "s3",
		Version:     Version,
		Description: "Exports records as Parquet, CSV, JSON Lines or JSON objects to an S3 bucket (or MinIO and other S3-compatible stores), with a manifest per flush.",
		Config: append(append([]sdk.Attribute{
			{Name: "bucket", Type: sdk.String, Required: true, Description: "The bucket to write to."},
			{Name: "prefix", Type: sdk.String, Default: "", Description: `Key prefix, e.g. "exports/{{ date }}/"; may hold {{ date }}, {{ time }}, {{ year }}, {{ month }}, {{ day }} and {{ hour }} (the flush's start, in timezone). End it with "/" for a folder.`},
		}, s3client.Attributes()...), []sdk.Attribute{
			{Name: "format", Type: sdk.String, Default: export.FormatParquet, Description: `"parquet", "csv", "jsonl" or "json".`},
			{Name: "compression", Type: sdk.String, Default: export.CompressionNone, Description: `"none" or "gzip", for csv, jsonl and json (adds .gz).`},
			{Name: "parquet_compression", Type: sdk.String, Default: export.DefaultParquetCompression, Description: `Parquet page compression: "zstd", "snappy", "gzip" or "none".`},
			{Name: "group_by", Type: sdk.String, Expression: true, Description: `An expression (e.g. metadata.conversation_id): one row per value, with message_count and the group's records in messages; the key column is named after the expression's last field.`},
			{Name: "order_by", Type: sdk.String, Expression: true, Description: "An expression ordering the messages within each group (needs group_by)."},
			{Name: "roll_rows", Type: sdk.Number, Description: "Start a new object after this many rows (default: no limit)."},
			{Name: "roll_bytes", Type: sdk.String, Description: `Start a new object after this many bytes, e.g. "256MiB" (default: no limit).`},
			{Name: "roll_interval", Type: sdk.String, Description: `Flush (commit the objects and a manifest, then ack) this long after the first held record, e.g. "5m" (default: at the end of the run, or when the engine's limit of held batches is reached).`},
			{Name: "part_size", Type: sdk.String, Default: "16MiB", Description: `Multipart upload part size, 5MiB to 5GiB; memory use is at most two parts. An object has at most 10,000 parts.`},
			{Name: "timezone", Type: sdk.String, Default: "UTC", Description: `Time zone of the prefix's date placeholders, e.g. "Europe/Stockholm".`},
		}...),
	}
}

// Configure checks the block and sets up the client and exporter. It does
// no I/O beyond reading the local AWS configuration.
func (s *Sink) Configure(ctx context.Context, cfg sdk.Config) error {
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

	opts := export.Options{
		Format:             c.Format,
		Compression:        c.Compression,
		ParquetCompression: c.ParquetCompression,
		GroupBy:            cfg.HasTemplate("group_by"),
		OrderBy:            cfg.HasTemplate("order_by"),
		Prefix:             c.Prefix,
		FullRefresh:        cfg.FullRefresh,
	}
	if opts.Format == "" {
		opts.Format = export.FormatParquet
	}
	if opts.GroupBy {
		opts.GroupField = export.GroupField(c.GroupBy)
	}
	if c.RollRows != nil {
		n := *c.RollRows
		if n < 0 || n != math.Trunc(n) || n > math.MaxInt64/2 {
			return fmt.Errorf("roll_rows must be a whole number of rows, not %v", n)
		}
		opts.RollRows = int64(n)
	}
	if c.RollBytes != "" {
		n, err := humanize.ParseBytes(c.RollBytes)
		if err != nil || n > math.MaxInt64 {
			return fmt.Errorf(`roll_bytes %q is not a size such as "256MiB" or "1GB"`, c.RollBytes)
		}
		opts.RollBytes = int64(n)
	}
	if c.RollInterval != "" {
		d, err := time.ParseDuration(c.RollInterval)
		if err != nil || d <= 0 {
			return fmt.Errorf(`roll_interval %q is not a duration such as "5m" or "1h"`, c.RollInterval)
		}
		opts.RollInterval = d
	}
	tz := c.Timezone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return fmt.Errorf("timezone %q: %v", tz, err)
	}
	opts.Location = loc
	partSize := DefaultPartSize
	if c.PartSize != "" {
		n, err := humanize.ParseBytes(c.PartSize)
		if err != nil {
			return fmt.Errorf(`part_size %q is not a size such as "16MiB"`, c.PartSize)
		}
		if n < MinPartSize || n > MaxPartSize {
			return fmt.Errorf("part_size %q is outside S3's range of 5MiB to 5GiB", c.PartSize)
		}
		partSize = int(n)
	}

	client, err := c.New(ctx)
	if err != nil {
		return s.redact(err)
	}
	if s.store, err = NewStore(client, c.Bucket, partSize); err != nil {
		return err
	}
	if s.exp, err = export.New(storeAdapter{s.store}, opts); err != nil {
		return s.redact(err)
	}
	return nil
}

// Write hands the batch to the exporter, which streams it into the open
// object.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	return s.redact(s.exp.Write(ctx, b))
}

// FlushDue reports whether roll_interval has passed since the first held
// batch.
func (s *Sink) FlushDue(now time.Time) bool { return s.exp.FlushDue(now) }

// Flush commits the open objects and writes the flush's manifest; the
// batches written so far are then durable in the bucket.
func (s *Sink) Flush(ctx context.Context) error { return s.redact(s.exp.Flush(ctx)) }

// Close aborts an upload left open by a failure. The SDK flushes before.
func (s *Sink) Close(ctx context.Context) error {
	if s.exp == nil {
		return nil
	}
	return s.redact(s.exp.Close(ctx))
}

// Manifests returns the manifests written so far.
func (s *Sink) Manifests() []export.Manifest {
	if s.exp == nil {
		return nil
	}
	return s.exp.Manifests()
}

// redact replaces the configured secrets in err's text, keeping err for
// errors.Is and errors.As.
func (s *Sink) redact(err error) error { return sdk.Redact(err, s.secrets...) }

// storeAdapter makes a Store an export.Store.
type storeAdapter struct{ *Store }

func (a storeAdapter) Create(ctx context.Context, key string) (export.Object, error) {
	u, err := a.Store.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return u, nil
}
