package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pipelinehq/pipeline/internal/testminio"
)

// clusterSourceHCL is a pipeline of the given source block into the
// webhook sink "crm" at the receiver.
func clusterSourceHCL(t *testing.T, dir, name, source string) string {
	t.Helper()
	file := filepath.Join(dir, name+".hcl")
	writeFile(t, file, fmt.Sprintf(`
pipeline { name = %q }

%s

sink "webhook" "crm" {
  inputs = [source.in]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
}
`, name, source))
	return file
}

// checkOnce checks that every record went out exactly once: with no
// failure, a cluster delivers nothing twice.
func checkOnce(t *testing.T, rcv *receiver, want map[string][]string) {
	t.Helper()
	total := 0
	for _, ids := range want {
		total += len(ids)
	}
	if got, n := len(rcv.ids()), rcv.total(); got != total || n != total {
		t.Errorf("%d distinct records in %d deliveries, want %d, each once", got, n, total)
	}
}

// source "postgres" with partitions = 4 on two workers: the key-hash
// partitions are shared out, every row is delivered once, and rows added
// later are read from each partition's own position.
func TestClusterPostgresKeyPartitions(t *testing.T) {
	prefix := clusterPrefix(t)
	pg := newPGSource(t)
	pg.exec(`CREATE TABLE {s}.tickets (id bigint PRIMARY KEY, seq bigint NOT NULL, row_id text NOT NULL)`)
	want := map[string][]string{}
	insert := func(from, to int) {
		t.Helper()
		pg.exec(fmt.Sprintf(`INSERT INTO {s}.tickets SELECT i, i, 'pg-' || i FROM generate_series(%d, %d) AS i`, from, to))
		for i := from; i <= to; i++ {
			want["pg"] = append(want["pg"], fmt.Sprintf("pg-%d", i))
		}
	}
	insert(1, 2000)
	dir := t.TempDir()
	rcv := newReceiver(t)
	file := clusterSourceHCL(t, dir, "pgcluster", fmt.Sprintf(`source "postgres" "in" {
  dsn        = %q
  table      = "%s.tickets"
  cursor     = "seq"
  key        = "id"
  partitions = 4
  batch_rows = 100
}`, pg.dsn, pg.schema))
	var ws []*worker
	for i := range 2 {
		ws = append(ws, startWorker(t, dir, fmt.Sprintf("w%d", i), prefix, rcv.env(), file))
	}
	waitDelivered(t, rcv, want, 90*time.Second, ws...)
	checkPartitionsSpread(t, ws, 4)
	insert(2001, 2300)
	waitDelivered(t, rcv, want, 60*time.Second, ws...)
	checkOnce(t, rcv, want)
	stopWorkers(t, ws...)
}

// source "s3" on two workers: each object is a partition, the objects are
// shared out, and every record is delivered once, including an object
// that arrives later.
func TestClusterS3ObjectPartitions(t *testing.T) {
	prefix := clusterPrefix(t)
	minio := testminio.Start(t)
	minio.MakeBucket(t, "drops")
	client := minio.Client(t)
	want := map[string][]string{}
	put := func(key string, n int) {
		t.Helper()
		var b bytes.Buffer
		for i := range n {
			id := fmt.Sprintf("%s-%d", key, i)
			fmt.Fprintf(&b, `{"row_id":%q}`+"\n", id)
			want[key] = append(want[key], id)
		}
		if _, err := client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("drops"), Key: aws.String("in/" + key + ".jsonl"), Body: bytes.NewReader(b.Bytes())}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	for i := range 6 {
		put(fmt.Sprintf("obj%d", i), 200)
	}
	dir := t.TempDir()
	rcv := newReceiver(t)
	file := clusterSourceHCL(t, dir, "s3cluster", fmt.Sprintf(`source "s3" "in" {
  bucket            = "drops"
  prefix            = "in/"
  format            = "jsonl"
  endpoint          = %q
  access_key_id     = env("S3_KEY")
  secret_access_key = env("S3_SECRET")
}`, minio.Endpoint))
	env := append(rcv.env(), "S3_KEY="+minio.AccessKey, "S3_SECRET="+minio.SecretKey, "HOME="+dir, "AWS_EC2_METADATA_DISABLED=true")
	var ws []*worker
	for i := range 2 {
		ws = append(ws, startWorker(t, dir, fmt.Sprintf("w%d", i), prefix, env, file))
	}
	waitDelivered(t, rcv, want, 90*time.Second, ws...)
	checkPartitionsSpread(t, ws, 6)
	put("late", 50)
	waitDelivered(t, rcv, want, 60*time.Second, ws...)
	checkOnce(t, rcv, want)
	stopWorkers(t, ws...)
}

// A sink's concurrency is per worker: two workers with concurrency = 2
// have up to 4 requests in flight at the receiver together, never more.
func TestClusterSinkConcurrencyIsPerWorker(t *testing.T) {
	prefix := clusterPrefix(t)
	dir := t.TempDir()
	rcv := newReceiver(t)
	rcv.setDelay(20 * time.Millisecond)
	var mu sync.Mutex
	inFlight, most := 0, 0
	rcv.wrap(func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
			inner.ServeHTTP(w, r)
		})
	})
	// 2,000 matching records: more than one worker holds of an outbox
	// (MaxHeld), so both deliver.
	glob, want := clusterInput(t, dir, 2, 2000)
	file := clusterPipelineWith(t, dir, glob, "  concurrency = 2")
	var ws []*worker
	for i := range 2 {
		ws = append(ws, startWorker(t, dir, fmt.Sprintf("w%d", i), prefix, rcv.env(), file))
	}
	waitDelivered(t, rcv, want, 120*time.Second, ws...)
	mu.Lock()
	got := most
	mu.Unlock()
	t.Logf("at most %d requests in flight", got)
	if got <= 2 || got > 4 {
		t.Errorf("at most %d requests in flight at once, want 3 or 4: concurrency 2 on each of two workers", got)
	}
	stopWorkers(t, ws...)
}
