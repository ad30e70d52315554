package testminio

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestStartServesS3(t *testing.T) {
	srv := Start(t)
	srv.MakeBucket(t, "probe")
	client := srv.Client(t)
	ctx := context.Background()
	want := []byte("hej då")
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("probe"), Key: aws.String("a/b.txt"), Body: bytes.NewReader(want)}); err != nil {
		t.Fatal(err)
	}
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("probe"), Key: aws.String("a/b.txt")})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	got, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestBinaryHonoursTheEnvironment(t *testing.T) {
	t.Setenv(EnvBinary, "/nonexistent/minio")
	if _, err := Binary(); err == nil {
		t.Fatal("a missing PIPELINE_MINIO_BIN must be an error")
	}
}
