// Package s3client builds the S3 client of the built-in S3 plugins (sink
// "s3", source "s3") from the attributes they share, and describes S3
// errors: the bucket and key, S3's error code, what to check, and never a
// secret.
//
//	var c s3client.Config // decoded from the block, e.g. embedded in its config struct
//	if err := c.Check(); err != nil { ... }
//	client, err := c.New(ctx)
//	...
//	return sdk.Redact(s3client.Fail(bucket, key, "get object", err), c.Secrets()...)
package s3client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/pipelinehq/pipeline/sdk"
)

// DefaultRegion is used when neither the block nor the AWS configuration
// names one.
const DefaultRegion = "us-east-1"

// Config is how to reach S3: the endpoint, region and credentials
// attributes of a block. Embed it in a plugin's config struct; its JSON
// names are the attributes' (see Attributes).
type Config struct {
	Endpoint        string `json:"endpoint"`
	Region          string `json:"region"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token"`
	Profile         string `json:"profile"`
}

// Attributes declares Config's attributes, for a plugin's Info.
func Attributes() []sdk.Attribute {
	return []sdk.Attribute{
		{Name: "endpoint", Type: sdk.String, Description: `S3 API URL of an S3-compatible store such as MinIO ("http://127.0.0.1:9000"); path-style addressing is used. Default: AWS S3.`},
		{Name: "region", Type: sdk.String, Description: `The bucket's region; default from the AWS configuration (AWS_REGION, the profile), else "us-east-1".`},
		{Name: "access_key_id", Type: sdk.String, Description: "Access key id; without it, credentials come from the AWS chain (environment, shared files and profile, web identity, instance role)."},
		{Name: "secret_access_key", Type: sdk.String, Description: "Secret access key, with access_key_id."},
		{Name: "session_token", Type: sdk.String, Description: "Session token of temporary credentials, with access_key_id."},
		{Name: "profile", Type: sdk.String, Description: "Profile of the shared AWS config and credentials files (default: AWS_PROFILE, else default)."},
	}
}

// CheckBucket checks a bucket attribute.
func CheckBucket(bucket string) error {
	if strings.TrimSpace(bucket) == "" {
		return errors.New("bucket must not be empty")
	}
	if strings.Contains(bucket, "/") {
		return fmt.Errorf("bucket %q holds a /: put the folder in prefix", bucket)
	}
	return nil
}

// Check checks the attributes without I/O: credentials that go together,
// an endpoint that is a URL.
func (c Config) Check() error {
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
	return nil
}

// Secrets are the configured values that no message may show: pass them to
// sdk.Redact.
func (c Config) Secrets() []string {
	var out []string
	for _, v := range []string{c.SecretAccessKey, c.SessionToken} {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// New builds the client: explicit credentials or the AWS chain, the region
// (DefaultRegion when nothing names one), and for an endpoint path-style
// addressing. It does no I/O beyond reading the local AWS configuration.
func (c Config) New(ctx context.Context) (*s3.Client, error) {
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
		return nil, sdk.Redact(fmt.Errorf("load the AWS configuration: %w", err), c.Secrets()...)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	endpoint := strings.TrimSuffix(c.Endpoint, "/")
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if o.Logger != nil {
			o.Logger = quiet{o.Logger}
		}
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
			o.UsePathStyle = true
		}
	}), nil
}

// quiet drops the SDK's debug messages ("Response has no supported
// checksum", on every ranged GET), which its default logger prints.
type quiet struct{ logging.Logger }

func (q quiet) Logf(c logging.Classification, format string, v ...any) {
	if c != logging.Debug {
		q.Logger.Logf(c, format, v...)
	}
}

// Where names the store that client, built from c, talks to, for
// messages: the endpoint, or "AWS S3 (region)".
func (c Config) Where(client *s3.Client) string {
	if c.Endpoint != "" {
		return strings.TrimSuffix(c.Endpoint, "/")
	}
	return fmt.Sprintf("AWS S3 (%s)", client.Options().Region)
}

// Fail describes a failed request on the object at key (a prefix for a
// listing): an *Error with S3's error code, or the context's error.
// Throttling, server and transport errors are marked sdk.ErrRetryable.
func Fail(bucket, key, op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("s3://%s/%s: %s: %w", bucket, key, op, err)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return &Error{Bucket: bucket, Key: key, Op: op, Err: err, Retryable: true}
	}
	e := &Error{Bucket: bucket, Key: key, Op: op, Code: ae.ErrorCode(), Message: ae.ErrorMessage(), Err: err}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		e.Status = re.HTTPStatusCode()
	}
	switch {
	case e.Status >= 500, e.Status == http.StatusTooManyRequests, e.Code == "SlowDown", e.Code == "RequestTimeout", e.Code == "InternalError":
		e.Retryable = true
	}
	return e
}

// Error is a failed S3 request.
type Error struct {
	Bucket, Key, Op string
	// Endpoint, when set, is named after the object (see Where).
	Endpoint      string
	Code, Message string // S3's error code and message; empty for a transport error
	Status        int    // the HTTP status, 0 when there was no response
	Retryable     bool
	Err           error
}

func (e *Error) Error() string {
	where := fmt.Sprintf("s3://%s/%s", e.Bucket, e.Key)
	if e.Endpoint != "" {
		where += " at " + e.Endpoint
	}
	where += ": " + e.Op
	if e.Code == "" {
		return fmt.Sprintf("%s: %v", where, e.Err)
	}
	msg := fmt.Sprintf("%s: %s", where, e.Code)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	switch e.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "InvalidTokenId", "AccessDenied", "AllAccessDisabled":
		msg += "; check the credentials (access_key_id and secret_access_key, or the AWS credential chain: environment, profile, web identity, instance role) and the bucket's policy"
	case "NoSuchBucket":
		msg += "; check bucket (and endpoint/region)"
	}
	return msg
}

// Unwrap returns the SDK's error and, for throttling and server errors,
// sdk.ErrRetryable.
func (e *Error) Unwrap() []error {
	if e.Retryable {
		return []error{e.Err, sdk.ErrRetryable}
	}
	return []error{e.Err}
}
