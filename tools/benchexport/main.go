// Command benchexport measures exports into a real MinIO: `pipeline run`
// with source "file" → sink "s3" as Parquet and as CSV, for the records of
// a JSONL file. It prints rows/s, peak RSS (the largest process: the engine
// or a plugin) and bytes per record in the bucket. make bench runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pipelinehq/pipeline/internal/testminio"
)

func main() {
	in := flag.String("in", "", "JSONL input")
	records := flag.Int64("n", 0, "records in the input")
	pipelineBin := flag.String("pipeline", "bin/pipeline", "the pipeline binary")
	work := flag.String("dir", ".cache/bench/export", "working directory")
	flag.Parse()
	if err := run(*in, *records, *pipelineBin, *work); err != nil {
		fmt.Fprintln(os.Stderr, "benchexport:", err)
		os.Exit(1)
	}
}

func run(in string, n int64, pipelineBin, work string) error {
	bin, err := testminio.Binary()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(work, "data"), 0o755); err != nil {
		return err
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
	minio := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, filepath.Join(work, "data"))
	minio.Env = append(os.Environ(), "MINIO_ROOT_USER="+user, "MINIO_ROOT_PASSWORD="+pass)
	minio.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := minio.Start(); err != nil {
		return err
	}
	defer syscall.Kill(-minio.Process.Pid, syscall.SIGKILL)
	endpoint := "http://" + addr
	if err := testminio.WaitReady(endpoint, nil, 30*time.Second); err != nil {
		return err
	}
	client := s3.New(s3.Options{Region: testminio.Region, BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(user, pass, "")})
	ctx := context.Background()

	fmt.Printf("export of %d records into MinIO (%s), one object per 250,000 rows\n", n, endpoint)
	for _, format := range []string{"parquet", "csv"} {
		bucket := "bench-" + format
		if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			return err
		}
		hcl := filepath.Join(work, format+".hcl")
		abs, _ := filepath.Abs(in)
		if err := os.WriteFile(hcl, []byte(fmt.Sprintf(`
pipeline { name = "bench-export-%s" }
source "file" "calls" { path = %q }
sink "s3" "lake" {
  inputs    = [source.calls]
  bucket    = %q
  endpoint  = %q
  region    = "us-east-1"
  prefix    = "calls/"
  format    = %q
  roll_rows = 250000
}
`, format, abs, bucket, endpoint, format)), 0o644); err != nil {
			return err
		}
		cmd := exec.Command(pipelineBin, "run", "--json", "--state", filepath.Join(work, format+".db"), hcl)
		cmd.Env = append(os.Environ(), "PIPELINE_CPUPROFILE="+os.Getenv("BENCH_PROFILE"), "AWS_ACCESS_KEY_ID="+user, "AWS_SECRET_ACCESS_KEY="+pass, "AWS_EC2_METADATA_DISABLED=true")
		cmd.Stdout = nil
		stderr, _ := os.Create(filepath.Join(work, format+".stderr"))
		cmd.Stderr = stderr
		start := time.Now()
		err := cmd.Run()
		secs := time.Since(start).Seconds()
		stderr.Close()
		if err != nil {
			out, _ := os.ReadFile(filepath.Join(work, format+".stderr"))
			return fmt.Errorf("%s: %v\n%s", format, err, out)
		}
		rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss / 1024
		var bytes, objects int64
		p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, o := range page.Contents {
				bytes += aws.ToInt64(o.Size)
				objects++
			}
		}
		fmt.Printf("%-8s %7.2f s  %9.0f rows/s  peak RSS %5d MB (largest process)  %6.1f MB in %d objects = %5.1f bytes/record\n",
			format, secs, float64(n)/secs, rss, float64(bytes)/1e6, objects, float64(bytes)/float64(n))
	}
	return nil
}
