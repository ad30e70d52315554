package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/klauspost/compress/gzip"

	"github.com/pipelinehq/pipeline/internal/testminio"
)

// s3ExportHCL exports every record of input to the bucket as Parquet, in
// objects of at most 300 rows.
func s3ExportHCL(input, endpoint, bucket string) string {
	return fmt.Sprintf(`
pipeline { name = "nightly" }

source "file" "calls" {
  path       = %q
  batch_rows = 100
}

sink "s3" "lake" {
  inputs    = [source.calls]
  bucket    = %q
  endpoint  = %q
  region    = "us-east-1"
  prefix    = "classified/dt={{ date }}/"
  format    = "parquet"
  roll_rows = 300
}
`, input, bucket, endpoint)
}

// bucketState lists the bucket: each object's key with its rows (Parquet
// objects), and the manifests.
type bucketState struct {
	objects   map[string][]string // key → row_ids in the object
	manifests map[string]manifest
}

type manifest struct {
	Rows        int64 `json:"rows"`
	FullRefresh bool  `json:"full_refresh"`
	Objects     []struct {
		Key  string `json:"key"`
		Rows int64  `json:"rows"`
	} `json:"objects"`
}

func listBucket(t *testing.T, c *s3.Client, bucket string) bucketState {
	t.Helper()
	ctx := context.Background()
	st := bucketState{objects: map[string][]string{}, manifests: map[string]manifest{}}
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out.Contents {
		key := aws.ToString(o.Key)
		obj, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(obj.Body)
		obj.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(key, "_manifest-"):
			var m manifest
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			st.manifests[key] = m
		case strings.HasSuffix(key, ".parquet"):
			st.objects[key] = parquetRowIDs(t, key, data)
		case strings.HasSuffix(key, ".jsonl.gz"):
			st.objects[key] = jsonlGzKeys(t, key, data)
		default:
			t.Fatalf("unexpected object %s", key)
		}
	}
	return st
}

func parquetRowIDs(t *testing.T, key string, data []byte) []string {
	t.Helper()
	tbl, err := pqarrow.ReadTable(context.Background(), bytes.NewReader(data), parquet.NewReaderProperties(memory.DefaultAllocator), pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatalf("read %s as Parquet: %v", key, err)
	}
	defer tbl.Release()
	idx := tbl.Schema().FieldIndices("row_id")
	if len(idx) != 1 {
		t.Fatalf("%s has no row_id column: %v", key, tbl.Schema())
	}
	var ids []string
	for _, chunk := range tbl.Column(idx[0]).Data().Chunks() {
		s := chunk.(*array.String)
		for i := 0; i < s.Len(); i++ {
			ids = append(ids, s.Value(i))
		}
	}
	return ids
}

// rows counts every row in the bucket's objects and fails on a duplicate.
func (st bucketState) rows(t *testing.T) int {
	t.Helper()
	seen := map[string]string{}
	for key, ids := range st.objects {
		for _, id := range ids {
			if other, dup := seen[id]; dup {
				t.Fatalf("record %s is in %s and in %s", id, other, key)
			}
			seen[id] = key
		}
	}
	return len(seen)
}

func (st bucketState) keys() []string {
	var ks []string
	for k := range st.objects {
		ks = append(ks, k)
	}
	for k := range st.manifests {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// crashProxy forwards to MinIO and, once armed, SIGKILLs the engine as soon
// as MinIO has stored a manifest: the upload is complete, and the engine
// never hears of it, so its checkpoint stays where it was.
type crashProxy struct {
	target *url.URL
	proxy  *httputil.ReverseProxy
	victim atomic.Pointer[os.Process]
	killed atomic.Bool
}

func newCrashProxy(t *testing.T, endpoint string) (*crashProxy, string) {
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &crashProxy{target: u, proxy: httputil.NewSingleHostReverseProxy(u)}
	p.proxy.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "_manifest-") && resp.StatusCode == http.StatusOK {
			if proc := p.victim.Load(); proc != nil && p.killed.CompareAndSwap(false, true) {
				// The engine's process group: the engine and its plugins.
				syscall.Kill(-proc.Pid, syscall.SIGKILL)
				proc.Kill()
			}
		}
		return nil
	}
	srv := &http.Server{Handler: p.proxy}
	ln := listenLoopback(t)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p, "http://" + ln.Addr().String()
}

func TestExportToS3CrashBetweenUploadAndCheckpointLeavesNoDuplicates(t *testing.T) {
	minio := testminio.Start(t)
	client := minio.Client(t)
	const bucket = "lake"
	minio.MakeBucket(t, bucket)
	creds := []string{"AWS_ACCESS_KEY_ID=" + minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + minio.SecretKey, "AWS_EC2_METADATA_DISABLED=true"}

	dir := t.TempDir()
	input := copyFile(t, calls(), dir)
	proxy, proxyURL := newCrashProxy(t, minio.Endpoint)
	writeFile(t, filepath.Join(dir, "crash.hcl"), s3ExportHCL(input, proxyURL, bucket))
	writeFile(t, filepath.Join(dir, "export.hcl"), s3ExportHCL(input, minio.Endpoint, bucket))

	// Run 1 dies the moment its manifest is stored.
	cmd := exec.Command(bin("pipeline"), "run", "--state", filepath.Join(dir, "state.db"), "crash.hcl")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), creds...), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	proxy.victim.Store(cmd.Process)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if !proxy.killed.Load() {
			t.Fatalf("run 1 ended (%v) before storing a manifest\n%s", err, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("run 1 did not finish\n%s", stderr.String())
	}
	first := listBucket(t, client, bucket)
	if len(first.manifests) != 1 || first.rows(t) != 1000 {
		t.Fatalf("after the crash: %d manifests, %d rows; want the whole export uploaded (1 manifest, 1000 rows)", len(first.manifests), first.rows(t))
	}

	// Run 2 starts from the same checkpoint: it writes the same keys again.
	res := pipeline(t, dir, append(creds, "HOME="+dir), "run", "--json", "--state", filepath.Join(dir, "state.db"), "export.hcl")
	if res.code != 0 {
		t.Fatalf("run 2 exited %d\n%s", res.code, res.stderr)
	}
	if s := parseSummary(t, res); s.Read != 1000 || s.Sinks["lake"] != 1000 {
		t.Fatalf("run 2 read %d and exported %d; want all 1000 again (the crash left the checkpoint before them)", s.Read, s.Sinks["lake"])
	}
	second := listBucket(t, client, bucket)
	if got, want := strings.Join(second.keys(), "\n"), strings.Join(first.keys(), "\n"); got != want {
		t.Fatalf("run 2 wrote other keys than run 1:\n%s\nwant\n%s", got, want)
	}
	if n := second.rows(t); n != 1000 {
		t.Fatalf("%d rows after the re-run; want 1000", n)
	}
	for key, m := range second.manifests {
		if m.Rows != 1000 || len(m.Objects) != 4 {
			t.Fatalf("%s: %d rows in %d objects; want 1000 rows in 4 objects of at most 300", key, m.Rows, len(m.Objects))
		}
		for _, o := range m.Objects {
			if int64(len(second.objects[o.Key])) != o.Rows {
				t.Fatalf("%s says %s has %d rows; it has %d", key, o.Key, o.Rows, len(second.objects[o.Key]))
			}
		}
	}

	// Run 3 has nothing new; run 4 exports only what was appended.
	if res := pipeline(t, dir, append(creds, "HOME="+dir), "run", "--json", "--state", filepath.Join(dir, "state.db"), "export.hcl"); res.code != 0 || parseSummary(t, res).Read != 0 {
		t.Fatalf("run 3 exited %d (want 0 and nothing read)\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if got := listBucket(t, client, bucket).keys(); len(got) != len(second.keys()) {
		t.Fatalf("run 3 with nothing new wrote objects: %v", got)
	}
	appendLines(t, input, 10)
	if res := pipeline(t, dir, append(creds, "HOME="+dir), "run", "--state", filepath.Join(dir, "state.db"), "export.hcl"); res.code != 0 {
		t.Fatalf("run 4 exited %d\n%s", res.code, res.stderr)
	}
	fourth := listBucket(t, client, bucket)
	if n := fourth.rows(t); n != 1010 || len(fourth.manifests) != 2 {
		t.Fatalf("after appending 10: %d rows, %d manifests; want 1010 rows and a second manifest", n, len(fourth.manifests))
	}
	for key, m := range fourth.manifests {
		if _, old := second.manifests[key]; !old && m.Rows != 10 {
			t.Fatalf("the incremental manifest %s has %d rows; want 10", key, m.Rows)
		}
	}

	// --full-refresh exports everything again, and says so.
	if res := pipeline(t, dir, append(creds, "HOME="+dir), "run", "--full-refresh", "--state", filepath.Join(dir, "state.db"), "export.hcl"); res.code != 0 {
		t.Fatalf("full refresh exited %d\n%s", res.code, res.stderr)
	}
	full := 0
	for _, m := range listBucket(t, client, bucket).manifests {
		if m.FullRefresh {
			full++
			if m.Rows != 1010 {
				t.Fatalf("the full refresh manifest has %d rows; want 1010", m.Rows)
			}
		}
	}
	if full != 1 {
		t.Fatalf("%d full-refresh manifests; want 1", full)
	}
}

// appendLines appends n new records (fresh row_ids) to a JSONL file.
func appendLines(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < n; i++ {
		fmt.Fprintf(f, `{"row_id":"new_%d","timestamp":"2025-11-15T00:00:%02dZ","text":"Grüße 👋","classifications":{"churn_risk":{"label":"High","confidence":0.9}},"metadata":{"conversation_id":"conv_new","queue":"retention"}}`+"\n", i, i)
	}
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// jsonlGzKeys reads a gzipped JSONL object of conversations: the ids are
// the conversation ids, and every message is checked to be in order.
func jsonlGzKeys(t *testing.T, key string, data []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	var ids []string
	var rows []conversationRow
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var c conversationRow
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		rows = append(rows, c)
		ids = append(ids, c.ConversationID)
	}
	checkConversations(t, rows)
	return ids
}

func TestNightlyExportS3ExampleAgainstMinIO(t *testing.T) {
	minio := testminio.Start(t)
	minio.MakeBucket(t, "acme-lake")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, calls(), filepath.Join(dir, "testdata"))
	example := copyFile(t, filepath.Join(repoRoot(), "pipelines", "nightly-export-s3.hcl"), dir)
	env := []string{"EXPORT_BUCKET=acme-lake", "S3_ENDPOINT=" + minio.Endpoint, "AWS_REGION=us-east-1", "HOME=" + dir,
		"AWS_ACCESS_KEY_ID=" + minio.AccessKey, "AWS_SECRET_ACCESS_KEY=" + minio.SecretKey, "AWS_EC2_METADATA_DISABLED=true"}
	res := pipeline(t, dir, env, "run", "--json", example)
	if res.code != 0 {
		t.Fatalf("run exited %d\n%s", res.code, res.stderr)
	}
	st := listBucket(t, minio.Client(t), "acme-lake")
	var lake, convs int
	conversations := map[string]bool{}
	for key, ids := range st.objects {
		switch {
		case strings.HasPrefix(key, "labelf/classified/dt="):
			lake += len(ids)
		case strings.HasPrefix(key, "labelf/conversations/dt="):
			for _, id := range ids {
				if conversations[id] {
					t.Fatalf("conversation %s has two rows in one run", id)
				}
				conversations[id] = true
			}
			convs += len(ids)
		default:
			t.Fatalf("object %s outside the example's prefixes", key)
		}
	}
	want := map[string]bool{}
	for _, r := range readRecords(t, calls()) {
		want[r.value["metadata"].(map[string]any)["conversation_id"].(string)] = true
	}
	if lake != 1000 || convs != len(want) || len(st.manifests) != 2 {
		t.Fatalf("%d rows in the lake, %d conversation rows (want %d), %d manifests (want 2)", lake, convs, len(want), len(st.manifests))
	}
}
