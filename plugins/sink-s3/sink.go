package sinks3

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/dustin/go-humanize"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/export"
)

// Version is the plugin's version.
const Version = "0.1.0"

// DefaultRegion is used when neither the block nor the AWS configuration
// names one.
const DefaultRegion = "us-east-1"

var (
	_ sdk.Sink         = (*Sink)(nil)
	_ sdk.SinkCloser   = (*Sink)(nil)
	_ sdk.BufferedSink = (*Sink)(nil)
	_ export.Store     = storeAdapter{}
)

type config struct {
	Bucket             string   `json:"bucket"`
	Prefix             string   `json:"prefix"`
	Endpoint           string   `json:"endpoint"`
	Region             string   `json:"region"`
	AccessKeyID        string   `json:"access_key_id"`
	SecretAccessKey    string   `json:"secret_access_key"`
	SessionToken       string   `json:"session_token"`
	Profile            string   `json:"profile"`
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
		Config: []sdk.Attribute{
			{Name: "bucket", Type: sdk.String, Required: true, Description: "The bucket to write to."},
			{Name: "prefix", Type: sdk.String, Default: "", Description: `Key prefix, e.g. "exports/{{ date }}/"; may hold {{ date }}, {{ time }}, {{ year }}, {{ month }}, {{ day }} and {{ hour }} (the flush's start, in timezone). End it with "/" for a folder.`},
			{Name: "endpoint", Type: sdk.String, Description: `S3 API URL of an S3-compatible store such as MinIO ("http://127.0.0.1:9000"); path-style addressing is used. Default: AWS S3.`},
			{Name: "region", Type: sdk.String, Description: `The bucket's region; default from the AWS configuration (AWS_REGION, the profile), else "us-east-1".`},
			{Name: "access_key_id", Type: sdk.String, Description: "Access key id; without it, credentials come from the AWS chain (environment, shared files and profile, web identity, instance role)."},
			{Name: "secret_access_key", Type: sdk.String, Description: "Secret access key, with access_key_id."},
			{Name: "session_token", Type: sdk.String, Description: "Session token of temporary credentials, with access_key_id."},
			{Name: "profile", Type: sdk.String, Description: "Profile of the shared AWS config and credentials files (default: AWS_PROFILE, else default)."},
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
		},
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
	s.secrets = nil
	for _, v := range []string{c.SecretAccessKey, c.SessionToken} {
		if v != "" {
			s.secrets = append(s.secrets, v)
		}
	}
	if strings.TrimSpace(c.Bucket) == "" {
		return errors.New("bucket must not be empty")
	}
	if strings.Contains(c.Bucket, "/") {
		return fmt.Errorf("bucket %q holds a /: put the folder in prefix", c.Bucket)
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return errors.New("access_key_id and secret_access_key go together: set both, or neither to use the AWS credential chain")
	}
	if c.SessionToken != "" && c.AccessKeyID == "" {
		return errors.New("session_token needs access_key_id and secret_access_key")
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf(`endpoint %q is not a URL such as "https://s3.example.com" or "http://127.0.0.1:9000"`, c.Endpoint)
		}
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

	client, err := s.client(ctx)
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

// client builds the S3 client: explicit credentials or the AWS chain, the
// region, and for an endpoint path-style addressing.
func (s *Sink) client(ctx context.Context) (*s3.Client, error) {
	c := &s.cfg
	var load []func(*awsconfig.LoadOptions) error
	if c.Region != "" {
		load = append(load, awsconfig.WithRegion(c.Region))
	}
	if c.Profile != "" {
		load = append(load, awsconfig.WithSharedConfigProfile(c.Profile))
	}
	if c.AccessKeyID != "" {
		load = append(load, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("load the AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	endpoint := strings.TrimSuffix(c.Endpoint, "/")
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
			o.UsePathStyle = true
		}
	}), nil
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
