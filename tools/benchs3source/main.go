// Command benchs3source measures `source "s3"` on one large object in a real
// MinIO: it uploads a JSONL object of about -size bytes of tools/gencalls
// records (seed 7, the records of make bench) by multipart upload, streamed
// from the generator 64 MiB a part (never whole in memory or on disk), then
// runs `pipeline run` of source "s3" → filter
// `classifications.churn_risk.confidence > 0.8` → sink "file" (JSONL). It
// checks that the run read every record and wrote every one the filter
// keeps, and prints records/s and the peak RSS of the run (wait4's rusage:
// the largest of the engine and the plugin processes it waited for). Run it
// with two sizes to see whether memory depends on the object's size:
//
//	go build -o bin/pipeline ./cmd/pipeline
//	go run ./tools/benchs3source -size 268435456
//	go run ./tools/benchs3source                     # 2 GiB
//
// It runs from the repository's root (it builds tools/gencalls). The MinIO
// data directory and the output file are removed at the end; the pipeline
// file, its state and its stderr stay in -dir.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/dustin/go-humanize"
	"github.com/valyala/fastjson"

	"github.com/pipelinehq/pipeline/internal/testminio"
)

const (
	bucket   = "bench"
	key      = "calls/calls.jsonl"
	partSize = 64 << 20
)

func main() {
	size := flag.Int64("size", 2<<30, "bytes of JSONL in the object (whole records: the last one crosses it)")
	pipelineBin := flag.String("pipeline", "bin/pipeline", "the pipeline binary")
	work := flag.String("dir", ".cache/bench/s3source", "working directory")
	flag.Parse()
	if err := run(*size, *pipelineBin, *work); err != nil {
		fmt.Fprintln(os.Stderr, "benchs3source:", err)
		os.Exit(1)
	}
}

func run(size int64, pipelineBin, work string) error {
	pipelineBin, err := filepath.Abs(pipelineBin) // the run's Dir is work
	if err != nil {
		return err
	}
	bin, err := testminio.Binary()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	data := filepath.Join(work, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	gencalls := filepath.Join(work, "gencalls")
	if out, err := exec.Command("go", "build", "-o", gencalls, "./tools/gencalls").CombinedOutput(); err != nil {
		return fmt.Errorf("build tools/gencalls: %v\n%s", err, out)
	}
	addr, err := testminio.FreeAddr()
	if err != nil {
		return err
	}
	console, err := testminio.FreeAddr()
	if err != nil {
		return err
	}
	const user, pass = "benchadmin", "benchadmin-secret"
	minio := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, data)
	minio.Env = append(os.Environ(), "MINIO_ROOT_USER="+user, "MINIO_ROOT_PASSWORD="+pass)
	minio.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := minio.Start(); err != nil {
		return err
	}
	defer func() {
		syscall.Kill(-minio.Process.Pid, syscall.SIGKILL)
		minio.Wait()
		os.RemoveAll(data)
	}()
	endpoint := "http://" + addr
	if err := testminio.WaitReady(endpoint, nil, 30*time.Second); err != nil {
		return err
	}
	client := s3.New(s3.Options{Region: testminio.Region, BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(user, pass, "")})
	ctx := context.Background()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return err
	}

	start := time.Now()
	up, err := upload(ctx, client, gencalls, size)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "uploaded s3://%s/%s to MinIO (%s): %d bytes, %d records (%d with churn_risk.confidence > 0.8) in %.1f s\n",
		bucket, key, endpoint, up.bytes, up.records, up.kept, time.Since(start).Seconds())

	hcl := fmt.Sprintf(`
pipeline { name = "bench-s3source" }

source "s3" "drops" {
  bucket            = %q
  prefix            = "calls/"
  format            = "jsonl"
  endpoint          = %q
  region            = %q
  access_key_id     = env("BENCH_S3_KEY")
  secret_access_key = env("BENCH_S3_SECRET")
}

filter "high_churn" {
  inputs = [source.drops]
  where  = "classifications.churn_risk.confidence > 0.8"
}

sink "file" "out" {
  inputs = [filter.high_churn]
  path   = "out.jsonl"
}
`, bucket, endpoint, testminio.Region)
	if err := os.WriteFile(filepath.Join(work, "p.hcl"), []byte(hcl), 0o644); err != nil {
		return err
	}
	out := filepath.Join(work, "out.jsonl")
	defer os.Remove(out)
	cmd := exec.Command(pipelineBin, "run", "--json", "--state", "state.db", "p.hcl")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "BENCH_S3_KEY="+user, "BENCH_S3_SECRET="+pass, "AWS_EC2_METADATA_DISABLED=true")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := os.Create(filepath.Join(work, "pipeline.stderr"))
	if err != nil {
		return err
	}
	cmd.Stderr = stderr
	start = time.Now()
	err = cmd.Run()
	secs := time.Since(start).Seconds()
	stderr.Close()
	if err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		return fmt.Errorf("pipeline run: %v\n%s", err, msg)
	}
	// wait4's rusage covers the engine and the plugin processes it waited
	// for: ru_maxrss is the largest of them.
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss / 1024

	var summary struct {
		Status string `json:"status"`
		Read   int64  `json:"read"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &summary); err != nil {
		return fmt.Errorf("the run's --json summary: %v\n%s", err, stdout.Bytes())
	}
	if summary.Status != "done" || summary.Read != up.records {
		return fmt.Errorf("the run read %d records (status %q), want %d", summary.Read, summary.Status, up.records)
	}
	lines, err := countLines(out)
	if err != nil {
		return err
	}
	if lines != up.kept {
		return fmt.Errorf("out.jsonl has %d lines, want the %d records with churn_risk.confidence > 0.8", lines, up.kept)
	}
	fmt.Printf("s3 source, %d MB JSONL object (%s records) → filter → file (%s kept): %.1f s, %s records/s, peak RSS %d MB (largest process)\n",
		up.bytes>>20, humanize.Comma(up.records), humanize.Comma(up.kept), secs, humanize.Comma(int64(float64(up.records)/secs)), rss)
	return nil
}

// uploaded is what upload put into the object.
type uploaded struct {
	bytes, records int64
	kept           int64 // records with classifications.churn_risk.confidence > 0.8
}

// upload writes gencalls' records (seed 7) into one object by multipart
// upload, a part at a time as they are generated, up to the record that
// reaches size bytes.
func upload(ctx context.Context, client *s3.Client, gencalls string, size int64) (uploaded, error) {
	var up uploaded
	// A record is about 530 bytes, never under 300: -n is more than enough,
	// and the generator is stopped once size is reached.
	gen := exec.Command(gencalls, "-n", fmt.Sprint(size/300+1), "-seed", "7")
	gen.Stderr = os.Stderr
	pipe, err := gen.StdoutPipe()
	if err != nil {
		return up, err
	}
	if err := gen.Start(); err != nil {
		return up, err
	}
	defer func() {
		gen.Process.Kill()
		gen.Wait()
	}()
	mp, err := client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String(key), ChecksumAlgorithm: types.ChecksumAlgorithmCrc32})
	if err != nil {
		return up, err
	}
	var parts []types.CompletedPart
	part := make([]byte, 0, partSize+1<<20)
	send := func() error {
		num := aws.Int32(int32(len(parts) + 1))
		out, err := client.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String(key),
			UploadId: mp.UploadId, PartNumber: num, Body: bytes.NewReader(part), ContentLength: aws.Int64(int64(len(part))),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32})
		if err != nil {
			return fmt.Errorf("upload part %d: %w", *num, err)
		}
		parts = append(parts, types.CompletedPart{PartNumber: num, ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32})
		part = part[:0]
		return nil
	}
	br := bufio.NewReaderSize(pipe, 1<<20)
	var p fastjson.Parser
	for up.bytes < size {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, io.EOF) {
			return up, fmt.Errorf("tools/gencalls stopped after %d bytes", up.bytes)
		}
		if err != nil {
			return up, err
		}
		v, err := p.ParseBytes(line)
		if err != nil {
			return up, fmt.Errorf("record %d: %w", up.records+1, err)
		}
		if c := v.Get("classifications", "churn_risk", "confidence"); c != nil && c.GetFloat64() > 0.8 {
			up.kept++
		}
		up.records++
		up.bytes += int64(len(line))
		part = append(part, line...)
		if len(part) >= partSize {
			if err := send(); err != nil {
				return up, err
			}
		}
	}
	if len(part) > 0 {
		if err := send(); err != nil {
			return up, err
		}
	}
	_, err = client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key),
		UploadId: mp.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	return up, err
}

func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	buf := make([]byte, 1<<20)
	for {
		k, err := f.Read(buf)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
