package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/klauspost/compress/gzip"

	"github.com/pipelinehq/pipeline/internal/testminio"
	"github.com/pipelinehq/pipeline/sdk"
)

// s3SourceHCL reads the bucket's prefix into the crashy sink, which appends
// every delivered record's id to ids.txt. Credentials come from S3_KEY and
// S3_SECRET.
func s3SourceHCL(endpoint, bucket, prefix, format string, batchRows int) string {
	return fmt.Sprintf(`
pipeline { name = "drops" }

plugin "sink" "crashy" {
  command = %q
}

source "s3" "drops" {
  bucket            = %q
  prefix            = %q
  format            = %q
  endpoint          = %q
  access_key_id     = env("S3_KEY")
  secret_access_key = env("S3_SECRET")
  batch_rows        = %d
}

sink "crashy" "ids" {
  inputs = [source.drops]
  path   = "ids.txt"
}
`, bin("sink-crashy"), bucket, prefix, format, endpoint, batchRows)
}

// s3Drops is a MinIO with a bucket, and a directory with the pipeline.
type s3Drops struct {
	t      *testing.T
	minio  *testminio.Server
	client *s3.Client
	dir    string
	env    []string
}

func newS3Drops(t *testing.T, format string, batchRows int) *s3Drops {
	t.Helper()
	minio := testminio.Start(t)
	minio.MakeBucket(t, "drops")
	d := &s3Drops{t: t, minio: minio, client: minio.Client(t), dir: t.TempDir()}
	d.env = []string{"S3_KEY=" + minio.AccessKey, "S3_SECRET=" + minio.SecretKey, "HOME=" + d.dir, "AWS_EC2_METADATA_DISABLED=true"}
	writeFile(t, filepath.Join(d.dir, "p.hcl"), s3SourceHCL(minio.Endpoint, "drops", "classified/", format, batchRows))
	return d
}

func (d *s3Drops) put(key string, data []byte) {
	d.t.Helper()
	_, err := d.client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("drops"), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		d.t.Fatalf("put %s: %v", key, err)
	}
}

func (d *s3Drops) run(extraEnv ...string) result {
	d.t.Helper()
	return pipeline(d.t, d.dir, append(append([]string(nil), d.env...), extraEnv...), "run", "--json", "--state", filepath.Join(d.dir, "state.db"), "p.hcl")
}

// committed is the record count of the source's checkpoint.
func (d *s3Drops) committed() int {
	d.t.Helper()
	show := pipeline(d.t, d.dir, d.env, "state", "show", "--state", filepath.Join(d.dir, "state.db"), "p.hcl")
	for _, line := range strings.Split(show.stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "drops" && f[1] == "drops" {
			n, err := strconv.Atoi(f[2])
			if err != nil {
				d.t.Fatalf("state show: %s", show.stdout)
			}
			return n
		}
	}
	if strings.Contains(show.stdout, "no checkpoints") {
		return 0
	}
	d.t.Fatalf("state show has no checkpoint for the source:\n%s%s", show.stdout, show.stderr)
	return 0
}

// delivered is every id the sink received, in order.
func (d *s3Drops) delivered() []string {
	d.t.Helper()
	data, err := os.ReadFile(filepath.Join(d.dir, "ids.txt"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		d.t.Fatal(err)
	}
	return strings.Fields(string(data))
}

// dropLines makes n JSONL records without row_id, so their ids derive from
// the source, the key and the line.
func dropLines(tag string, n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"tag":"%s","n":%d,"text":"Grüße %d"}`+"\n", tag, i, i)
	}
	return b.Bytes()
}

func gzipped(data []byte) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

// lineIDs are the ids of lines 1..n of key, as the engine derives them.
func lineIDs(key string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, sdk.IDPrefix("drops", key)+strconv.Itoa(i))
	}
	return out
}

func TestS3SourceReadsNewAndRewrittenObjects(t *testing.T) {
	d := newS3Drops(t, "jsonl", 2)
	d.put("classified/dt=2025-11-14/a.jsonl", dropLines("a", 5))
	d.put("classified/dt=2025-11-14/b.jsonl.gz", gzipped(dropLines("b", 4)))
	d.put("classified/dt=2025-11-15/c.jsonl", dropLines("c", 3))

	runs := []struct {
		name string
		put  func()
		want []string
	}{
		{"three objects", func() {}, append(append(lineIDs("classified/dt=2025-11-14/a.jsonl", 1, 5),
			lineIDs("classified/dt=2025-11-14/b.jsonl.gz", 1, 4)...), lineIDs("classified/dt=2025-11-15/c.jsonl", 1, 3)...)},
		{"nothing new", func() {}, nil},
		{"two added, one before the last key", func() {
			d.put("classified/dt=2025-11-15/d.jsonl", dropLines("d", 2))
			d.put("classified/dt=2025-11-14/a2.jsonl.gz", gzipped(dropLines("a2", 3)))
		}, append(lineIDs("classified/dt=2025-11-14/a2.jsonl.gz", 1, 3), lineIDs("classified/dt=2025-11-15/d.jsonl", 1, 2)...)},
		{"one rewritten", func() {
			d.put("classified/dt=2025-11-14/b.jsonl.gz", gzipped(dropLines("b-v2", 6)))
		}, lineIDs("classified/dt=2025-11-14/b.jsonl.gz", 1, 6)},
		{"nothing new again", func() {}, nil},
	}
	for _, r := range runs {
		r.put()
		before := len(d.delivered())
		res := d.run()
		if res.code != 0 {
			t.Fatalf("%s: exit %d\n%s", r.name, res.code, res.stderr)
		}
		got := d.delivered()[before:]
		if s := parseSummary(t, res); s.Read != int64(len(r.want)) || strings.Join(got, " ") != strings.Join(r.want, " ") {
			t.Fatalf("%s: read %d and delivered\n%v\nwant\n%v", r.name, s.Read, got, r.want)
		}
	}
}

// TestS3SourceCrashMidObjectResumesInside kills the sink in the middle of a
// plain object and then in the middle of a gzipped one: each re-run starts
// inside the object at the committed batch, every record arrives, and only
// what was delivered but not committed (at most one batch) comes twice.
func TestS3SourceCrashMidObjectResumesInside(t *testing.T) {
	d := newS3Drops(t, "jsonl", 100)
	keys := []string{"classified/1.jsonl", "classified/2.jsonl", "classified/3.jsonl.gz"}
	d.put(keys[0], dropLines("one", 250))
	d.put(keys[1], dropLines("two", 250))
	d.put(keys[2], gzipped(dropLines("three", 250)))
	var want []string
	for _, k := range keys {
		want = append(want, lineIDs(k, 1, 250)...)
	}
	// Batches of 100, 100 and 50 per object: where each ends.
	ends := []int{100, 200, 250, 350, 450, 500, 600, 700, 750}
	batchesIn := func(records int) int {
		for i, e := range ends {
			if e == records {
				return i + 1
			}
		}
		if records != 0 {
			t.Fatalf("%d records committed: not at a batch's end", records)
		}
		return 0
	}

	// Run 1 dies on batch 5, the second of object 2.
	res := d.run("CRASHY_AFTER=4")
	if res.code != 1 || !strings.Contains(res.stderr, "exit status 3") {
		t.Fatalf("run 1: exit %d, want 1 and the crash\n%s", res.code, res.stderr)
	}
	c1, n1 := d.committed(), len(d.delivered())
	// What is committed lags what was delivered by the acks that had not
	// reached the engine when the sink died (a batch or two, by load).
	if n1 != 350 || c1 > 350 {
		t.Fatalf("run 1 delivered %d and committed %d; want 350 delivered, at most those committed", n1, c1)
	}
	// Run 2 starts inside object 2 (a ranged GET) and dies on batch 8, the
	// second of the gzipped object 3, having delivered up to batch 7.
	res = d.run(fmt.Sprintf("CRASHY_AFTER=%d", 7-batchesIn(c1)))
	if res.code != 1 || !strings.Contains(res.stderr, "exit status 3") {
		t.Fatalf("run 2: exit %d, want 1 and the crash\n%s", res.code, res.stderr)
	}
	c2, n2 := d.committed(), len(d.delivered())
	if n2-n1 != 600-c1 || c2 > 600 || c2 < c1 {
		t.Fatalf("run 2 delivered %d from %d and committed %d; want it to resume at %d, deliver up to 600 (batch 7) and commit no more than that", n2-n1, c1, c2, c1)
	}
	// Run 3 starts inside object 3 (read again and skipped to the offset).
	res = d.run()
	if res.code != 0 {
		t.Fatalf("run 3: exit %d\n%s", res.code, res.stderr)
	}
	if s := parseSummary(t, res); s.Read != int64(750-c2) {
		t.Fatalf("run 3 read %d records; want the %d after the checkpoint", s.Read, 750-c2)
	}
	got := d.delivered()
	count := map[string]int{}
	for _, id := range got {
		count[id]++
	}
	for _, id := range want {
		if count[id] == 0 {
			t.Fatalf("record %s was never delivered", id)
		}
	}
	if len(count) != len(want) {
		t.Fatalf("%d distinct ids delivered, want %d", len(count), len(want))
	}
	if dup := len(got) - len(want); dup != (350-c1)+(600-c2) {
		t.Fatalf("%d deliveries came twice; want only the %d delivered but not committed before each crash", dup, (350-c1)+(600-c2))
	}
	t.Logf("committed %d after crash 1 and %d after crash 2; %d repeated", c1, c2, len(got)-len(want))
	if res := d.run(); res.code != 0 || parseSummary(t, res).Read != 0 {
		t.Fatalf("a run after everything was read: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

func TestS3SourceWrongCredentialsSayWhatAndShowNoSecret(t *testing.T) {
	d := newS3Drops(t, "jsonl", 10)
	d.put("classified/a.jsonl", dropLines("a", 3))
	const secret = "wrong-secret-0123456789abcdefXYZ"
	for _, cmd := range [][]string{
		{"run", "--state", filepath.Join(d.dir, "state.db"), "p.hcl"},
		{"validate", "p.hcl"},
	} {
		res := pipeline(t, d.dir, append(d.env, "S3_SECRET="+secret), cmd...)
		out := res.stdout + res.stderr
		if res.code == 0 {
			t.Fatalf("%s with a wrong secret succeeded:\n%s", cmd[0], out)
		}
		t.Logf("%s:\n%s", cmd[0], out)
		if strings.Contains(out, secret) || strings.Contains(out, d.minio.SecretKey) {
			t.Fatalf("%s shows a secret:\n%s", cmd[0], out)
		}
		for _, want := range []string{"s3://drops/classified/", d.minio.Endpoint, "SignatureDoesNotMatch", "check the credentials"} {
			if !strings.Contains(out, want) {
				t.Fatalf("%s: the error does not say %q:\n%s", cmd[0], want, out)
			}
		}
	}
	if ids := d.delivered(); len(ids) != 0 {
		t.Fatalf("records delivered with wrong credentials: %v", ids)
	}
}

// TestS3SourceReadsParquetTheS3SinkWrote exports with sink "s3" (Parquet,
// with its manifests in the same prefix) and reads the objects back with
// source "s3": every record once, by its row_id, and on the next export
// only the new object.
func TestS3SourceReadsParquetTheS3SinkWrote(t *testing.T) {
	d := newS3Drops(t, "parquet", 128)
	input := copyFile(t, calls(), d.dir)
	writeFile(t, filepath.Join(d.dir, "export.hcl"), fmt.Sprintf(`
pipeline { name = "export" }

source "file" "calls" {
  path       = %q
  batch_rows = 100
}

sink "s3" "lake" {
  inputs            = [source.calls]
  bucket            = "drops"
  endpoint          = %q
  access_key_id     = env("S3_KEY")
  secret_access_key = env("S3_SECRET")
  prefix            = "classified/dt={{ date }}/"
  format            = "parquet"
  roll_rows         = 300
}
`, input, d.minio.Endpoint))
	export := func() {
		t.Helper()
		if res := pipeline(t, d.dir, d.env, "run", "--state", filepath.Join(d.dir, "export.db"), "export.hcl"); res.code != 0 {
			t.Fatalf("export exited %d\n%s", res.code, res.stderr)
		}
	}
	export()
	want := map[string]bool{}
	for _, r := range readRecords(t, calls()) {
		want[rowID(r.value)] = true
	}

	res := d.run()
	if res.code != 0 {
		t.Fatalf("read exited %d\n%s", res.code, res.stderr)
	}
	got := d.delivered()
	if s := parseSummary(t, res); s.Read != 1000 || len(got) != 1000 {
		t.Fatalf("read %d and delivered %d; want the 1000 exported", s.Read, len(got))
	}
	seen := map[string]bool{}
	for _, id := range got {
		if !want[id] || seen[id] {
			t.Fatalf("delivered %s: not exported, or twice", id)
		}
		seen[id] = true
	}
	if res := d.run(); res.code != 0 || parseSummary(t, res).Read != 0 {
		t.Fatalf("a re-run with nothing new: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}

	appendLines(t, input, 10)
	export()
	res = d.run()
	if s := parseSummary(t, res); res.code != 0 || s.Read != 10 {
		t.Fatalf("after exporting 10 more: exit %d, read %d; want only the new object's 10\n%s", res.code, s.Read, res.stderr)
	}
	for _, id := range d.delivered()[1000:] {
		if !strings.HasPrefix(id, "new_") {
			t.Fatalf("the incremental read delivered %s", id)
		}
	}
}
