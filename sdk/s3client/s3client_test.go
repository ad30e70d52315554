package s3client

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/smithy-go"

	"github.com/pipelinehq/pipeline/sdk"
)

func TestErrorSaysWhereAndWhatToCheck(t *testing.T) {
	err := Fail("lake", "in/", "list objects", &smithy.GenericAPIError{Code: "InvalidAccessKeyId", Message: "no such key id"})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T", err)
	}
	e.Endpoint = "http://127.0.0.1:9000"
	want := "s3://lake/in/ at http://127.0.0.1:9000: list objects: InvalidAccessKeyId: no such key id; check the credentials"
	if msg := err.Error(); !strings.HasPrefix(msg, want) {
		t.Fatalf("got  %s\nwant %s…", msg, want)
	}
	if errors.Is(err, sdk.ErrRetryable) {
		t.Fatal("a credentials error is not retryable")
	}
	slow := Fail("lake", "k", "get object", &smithy.GenericAPIError{Code: "SlowDown"})
	if !errors.Is(slow, sdk.ErrRetryable) {
		t.Fatal("SlowDown is retryable")
	}
	if err := Fail("lake", "k", "get object", context.Canceled); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "s3://lake/k") {
		t.Fatalf("got %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{AccessKeyID: "a"}, "go together"},
		{Config{SecretAccessKey: "s"}, "go together"},
		{Config{SessionToken: "t"}, "session_token needs"},
		{Config{Endpoint: "minio:9000"}, "is not a URL"},
	} {
		if err := tc.c.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.c, err, tc.want)
		}
	}
	if err := (Config{Endpoint: "http://127.0.0.1:9000/", AccessKeyID: "a", SecretAccessKey: "s"}).Check(); err != nil {
		t.Fatal(err)
	}
	if got := (Config{SecretAccessKey: "s", SessionToken: "t"}).Secrets(); len(got) != 2 {
		t.Fatalf("secrets %v", got)
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_PROFILE", "")
	c := Config{Endpoint: "http://127.0.0.1:9000/", AccessKeyID: "a", SecretAccessKey: "s"}
	client, err := c.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if o := client.Options(); !o.UsePathStyle || *o.BaseEndpoint != "http://127.0.0.1:9000" || o.Region != DefaultRegion {
		t.Fatalf("options: path style %v, endpoint %s, region %s", o.UsePathStyle, *o.BaseEndpoint, o.Region)
	}
	if got := c.Where(client); got != "http://127.0.0.1:9000" {
		t.Fatal(got)
	}
	if got := (Config{}).Where(client); got != "AWS S3 (us-east-1)" {
		t.Fatal(got)
	}
}
