package sinks3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pipelinehq/pipeline/internal/testminio"
)

func getObject(t testing.TB, client *s3.Client, bucket, key string) []byte {
	t.Helper()
	out, err := client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func listKeys(t testing.TB, client *s3.Client, bucket string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

func pendingUploads(t testing.TB, client *s3.Client, bucket string) int {
	t.Helper()
	out, err := client.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Uploads)
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestStore(t *testing.T) {
	srv := testminio.Start(t)
	srv.MakeBucket(t, "store")
	client := srv.Client(t)
	store, err := NewStore(client, "store", MinPartSize)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("multipart", func(t *testing.T) {
		want := randomBytes(12<<20 + 12345) // two full 5 MiB parts and a last part
		obj, err := store.Create(ctx, "big/object.bin")
		if err != nil {
			t.Fatal(err)
		}
		// Odd-sized writes cross part boundaries.
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 777_777)
			if _, err := obj.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if obj.id == "" {
			t.Fatal("12 MiB with 5 MiB parts did not start a multipart upload")
		}
		if keys := listKeys(t, client, "store"); len(keys) != 0 {
			t.Fatalf("visible before Commit: %v", keys)
		}
		if err := obj.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if len(obj.parts) != 3 {
			t.Fatalf("%d parts, want 3", len(obj.parts))
		}
		if got := getObject(t, client, "store", "big/object.bin"); !bytes.Equal(got, want) {
			t.Fatalf("read back %d bytes that differ from the %d written", len(got), len(want))
		}
		if n := pendingUploads(t, client, "store"); n != 0 {
			t.Fatalf("%d multipart uploads left pending", n)
		}
	})

	t.Run("exact multiple of the part size", func(t *testing.T) {
		want := randomBytes(2 * MinPartSize)
		obj, _ := store.Create(ctx, "exact.bin")
		if _, err := obj.Write(want); err != nil {
			t.Fatal(err)
		}
		if err := obj.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got := getObject(t, client, "store", "exact.bin"); !bytes.Equal(got, want) {
			t.Fatal("read back differs")
		}
	})

	t.Run("small object", func(t *testing.T) {
		obj, _ := store.Create(ctx, "small.csv")
		io.WriteString(obj, "a,b\n")
		io.WriteString(obj, "1,2\n")
		if err := obj.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if obj.id != "" {
			t.Fatal("a small object went as a multipart upload")
		}
		if got := string(getObject(t, client, "store", "small.csv")); got != "a,b\n1,2\n" {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("empty object", func(t *testing.T) {
		obj, _ := store.Create(ctx, "empty")
		if err := obj.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got := getObject(t, client, "store", "empty"); len(got) != 0 {
			t.Fatalf("got %d bytes", len(got))
		}
	})

	t.Run("abort leaves nothing", func(t *testing.T) {
		for _, size := range []int{100, 11 << 20} {
			obj, _ := store.Create(ctx, "aborted/object")
			if _, err := obj.Write(randomBytes(size)); err != nil {
				t.Fatal(err)
			}
			if err := obj.Abort(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := obj.Write([]byte("x")); err == nil {
				t.Fatal("Write after Abort succeeded")
			}
		}
		for _, k := range listKeys(t, client, "store") {
			if strings.HasPrefix(k, "aborted/") {
				t.Fatalf("aborted object %s is visible", k)
			}
		}
		if n := pendingUploads(t, client, "store"); n != 0 {
			t.Fatalf("%d multipart uploads left after Abort", n)
		}
	})

	t.Run("put", func(t *testing.T) {
		if err := store.Put(ctx, "manifest.json", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if got := string(getObject(t, client, "store", "manifest.json")); got != `{}` {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("errors name the object and the code", func(t *testing.T) {
		missing, _ := NewStore(client, "no-such-bucket", MinPartSize)
		err := missing.Put(ctx, "k", []byte("x"))
		var se *Error
		if !errors.As(err, &se) || se.Code != "NoSuchBucket" {
			t.Fatalf("got %v", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "s3://no-such-bucket/k") || !strings.Contains(msg, "NoSuchBucket") {
			t.Fatalf("error %q does not name the object and the code", msg)
		}
		// The multipart path reports the same way, from Write or Commit.
		obj, _ := missing.Create(ctx, "big")
		_, werr := obj.Write(randomBytes(MinPartSize + 1))
		cerr := obj.Commit(ctx)
		if werr == nil || cerr == nil || !strings.Contains(cerr.Error(), "NoSuchBucket") {
			t.Fatalf("write: %v; commit: %v", werr, cerr)
		}
	})

	if _, err := NewStore(client, "store", MinPartSize-1); err == nil {
		t.Fatal("a part size under 5 MiB was accepted")
	}
}
