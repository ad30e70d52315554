// Package testminio starts a real MinIO server for tests of code that talks
// to S3: no mocks, the same wire protocol, multipart uploads and error codes
// as the real thing.
//
//	srv := testminio.Start(t)
//	srv.MakeBucket(t, "exports")
//	client := srv.Client(t)
//
// The MinIO binary is, in order: $PIPELINE_MINIO_BIN; the cached build in
// ${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-test/minio/<Version>/minio; else
// it is built there with `go install` (a few minutes, once per machine; an
// flock on that directory makes parallel test packages wait for one build).
// When it cannot be built (no network to the module proxy, say), the test is
// skipped with the reason.
package testminio

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Version is the MinIO module version that is built and cached.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Module is the MinIO module built by Binary.
const Module = "github.com/minio/minio"

// EnvBinary names an existing MinIO binary to use instead of the cached build.
const EnvBinary = "PIPELINE_MINIO_BIN"

// Region is the region the server and Client use.
const Region = "us-east-1"

// Server is a running MinIO server, stopped when the test ends.
type Server struct {
	// Endpoint is the S3 API's base URL, "http://127.0.0.1:PORT".
	Endpoint string
	// AccessKey and SecretKey are the root credentials (the secret is
	// random per server).
	AccessKey, SecretKey string
	// Dir is the data directory.
	Dir string

	cmd *exec.Cmd
	log *syncBuffer
}

// CacheDir is where Binary keeps its build.
func CacheDir() (string, error) {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no cache directory: set XDG_CACHE_HOME or HOME: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "pipeline-test", "minio", Version), nil
}

// Binary returns the path of a MinIO binary: $PIPELINE_MINIO_BIN, else the
// cached build, which it makes first when it is missing (a few minutes;
// progress goes to stderr). Concurrent callers, in this process or others,
// wait for one build.
func Binary() (string, error) {
	return binary(func(format string, args ...any) { fmt.Fprintf(os.Stderr, "testminio: "+format+"\n", args...) })
}

var binaryMu sync.Mutex

func binary(logf func(string, ...any)) (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "minio")
	if executable(bin) == nil {
		return bin, nil
	}

	binaryMu.Lock() // one build per process; the flock below covers other processes
	defer binaryMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		logf("waiting for another process building MinIO into %s", dir)
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
		}
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if executable(bin) == nil { // built while we waited
		return bin, nil
	}

	// Build into a staging directory and rename, so that the cached path
	// only ever holds a complete binary.
	stage, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)
	logf("building MinIO %s@%s into %s (takes a few minutes, once per machine)", Module, Version, dir)
	start := time.Now()
	cmd := exec.Command("go", "install", Module+"@"+Version)
	cmd.Dir = stage // outside any module: `go install pkg@version` needs no go.mod
	cmd.Env = append(os.Environ(), "GOBIN="+stage, "GOFLAGS=", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go install %s@%s: %v\n%s", Module, Version, err, tail(out, 4000))
	}
	if err := os.Rename(filepath.Join(stage, "minio"), bin); err != nil {
		return "", err
	}
	logf("built MinIO in %s", time.Since(start).Round(time.Second))
	return bin, nil
}

func executable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return append([]byte("..."), b[len(b)-n:]...)
	}
	return b
}

// Start starts a MinIO server with an empty data directory and stops it
// when the test ends; on failure its log is added to the test's. It skips
// the test when MinIO could not be built.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binary(func(format string, args ...any) {
		// Also on stderr: a build takes minutes, and t.Logf shows only with -v.
		t.Logf("testminio: "+format, args...)
		fmt.Fprintf(os.Stderr, "testminio: "+format+"\n", args...)
	})
	if err != nil {
		if os.Getenv(EnvBinary) != "" {
			t.Fatalf("MinIO: %v", err)
		}
		t.Skipf("MinIO could not be built, so this test needs a MinIO binary in %s: %v", EnvBinary, err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := start(t, bin)
		if err == nil {
			return s
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	t.Fatalf("start MinIO: %v", lastErr)
	return nil
}

var errPortTaken = errors.New("port taken")

func start(t testing.TB, bin string) (*Server, error) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Endpoint:  fmt.Sprintf("http://127.0.0.1:%d", port),
		AccessKey: "pipeline-test",
		SecretKey: randomHex(20),
		Dir:       t.TempDir(),
		log:       &syncBuffer{},
	}
	s.cmd = exec.Command(bin, "server",
		"--address", fmt.Sprintf("127.0.0.1:%d", port),
		"--console-address", fmt.Sprintf("127.0.0.1:%d", console),
		s.Dir)
	s.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.AccessKey,
		"MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CALLHOME_ENABLE=off",
		"MINIO_REGION="+Region,
	)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	begin := time.Now()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(exited) }()
	stop := func() {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	if err := s.waitReady(exited, 60*time.Second); err != nil {
		stop()
		log := s.log.String()
		if strings.Contains(log, "address already in use") {
			return nil, errPortTaken
		}
		return nil, fmt.Errorf("%w\nMinIO's log:\n%s", err, log)
	}
	t.Logf("testminio: MinIO ready at %s in %s", s.Endpoint, time.Since(begin).Round(time.Millisecond))
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("MinIO's log (%s):\n%s", s.Endpoint, s.log.String())
		}
	})
	return s, nil
}

// waitReady polls the health endpoints until the server serves requests.
func (s *Server) waitReady(exited <-chan struct{}, timeout time.Duration) error {
	return WaitReady(s.Endpoint, exited, timeout)
}

// WaitReady polls a MinIO's health endpoints until it serves requests, it
// exits (exited is closed; nil: not watched) or timeout passes.
func WaitReady(endpoint string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for _, path := range []string{"/minio/health/live", "/minio/health/ready"} {
		for {
			select {
			case <-exited:
				return errors.New("MinIO exited before it was ready")
			default:
			}
			resp, err := client.Get(endpoint + path)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("MinIO at %s was not ready (GET %s) within %s", endpoint, path, timeout)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	return nil
}

// Log returns what the server printed so far.
func (s *Server) Log() string { return s.log.String() }

// Options returns S3 client options for the server: its endpoint, path-style
// addressing, the root credentials.
func (s *Server) Options() s3.Options {
	return s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	}
}

// Client returns an S3 client for the server with the root credentials.
func (s *Server) Client(t testing.TB) *s3.Client {
	t.Helper()
	return s3.New(s.Options())
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := s.Client(t)
	for {
		_, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
		if err == nil {
			return
		}
		var ae smithy.APIError
		// A server that just came up may still be initialising its object layer.
		if errors.As(err, &ae) && ae.ErrorCode() == "XMinioServerNotInitialized" && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		t.Fatalf("make bucket %s: %v", name, err)
	}
}

// IsolateAWS keeps the machine's AWS configuration out of a test: no
// credentials from the environment or files, and no instance metadata
// lookups (which would go to a link-local address).
func IsolateAWS(t testing.TB) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_ACCESS_KEY_ID":           "",
		"AWS_SECRET_ACCESS_KEY":       "",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "",
		"AWS_DEFAULT_REGION":          "",
		"AWS_WEB_IDENTITY_TOKEN_FILE": "",
		"AWS_ROLE_ARN":                "",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_S3":         "",
	} {
		t.Setenv(k, v)
	}
}

// FreeAddr is a loopback address with a port nothing listens on.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
