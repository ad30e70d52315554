package sources3

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pipelinehq/pipeline/internal/testminio"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/s3client"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// lake is a MinIO server with a bucket "lake".
type lake struct {
	t      *testing.T
	srv    *testminio.Server
	client *s3.Client
}

func newLake(t *testing.T) *lake {
	t.Helper()
	testminio.IsolateAWS(t)
	srv := testminio.Start(t)
	srv.MakeBucket(t, "lake")
	return &lake{t: t, srv: srv, client: srv.Client(t)}
}

func (l *lake) put(key string, data []byte) {
	l.t.Helper()
	_, err := l.client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("lake"), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		l.t.Fatalf("put %s: %v", key, err)
	}
}

func (l *lake) delete(key string) {
	l.t.Helper()
	if _, err := l.client.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String("lake"), Key: aws.String(key)}); err != nil {
		l.t.Fatal(err)
	}
}

// block is a block for the server with its credentials, the defaults and
// attrs (a nil value removes the attribute).
func (l *lake) block(attrs map[string]any) map[string]any {
	cfg := map[string]any{
		"bucket":            "lake",
		"prefix":            "in/",
		"format":            "jsonl",
		"on_error":          "fail",
		"batch_rows":        3,
		"track_objects":     defaultTrackObjects,
		"endpoint":          l.srv.Endpoint,
		"access_key_id":     l.srv.AccessKey,
		"secret_access_key": l.srv.SecretKey,
	}
	for k, v := range attrs {
		if v == nil {
			delete(cfg, k)
		} else {
			cfg[k] = v
		}
	}
	return cfg
}

func configure(block map[string]any) (*Source, error) {
	data, err := json.Marshal(block)
	if err != nil {
		panic(err)
	}
	s := &Source{}
	return s, s.Configure(context.Background(), sdk.Config{Name: "drops", JSON: data})
}

func (l *lake) source(attrs map[string]any) *Source {
	l.t.Helper()
	s, err := configure(l.block(attrs))
	if err != nil {
		l.t.Fatalf("Configure: %v", err)
	}
	return s
}

// batch is one emitted batch.
type batch struct {
	records []string
	pos     []byte
	origin  string
	places  []int64
}

// collect is an Emitter that keeps every batch.
type collect struct {
	batches []batch
	skipped int
}

func (c *collect) Emit(rec arrow.RecordBatch, position []byte) error {
	return c.EmitAt(rec, position, sdk.Origin{})
}

func (c *collect) EmitAt(rec arrow.RecordBatch, position []byte, origin sdk.Origin) error {
	defer rec.Release()
	if int64(len(origin.Places)) != rec.NumRows() {
		panic("places do not match rows")
	}
	enc := arrowjson.NewEncoder()
	b := batch{pos: append([]byte(nil), position...), origin: origin.Name, places: append([]int64(nil), origin.Places...)}
	for i := 0; i < int(rec.NumRows()); i++ {
		b.records = append(b.records, string(enc.AppendRow(nil, rec, i)))
	}
	c.batches = append(c.batches, b)
	return nil
}

func (c *collect) Skipped(n int) { c.skipped += n }

func (c *collect) records() []string {
	var out []string
	for _, b := range c.batches {
		out = append(out, b.records...)
	}
	return out
}

// ids are the records' places as origin:place, what their ids derive from.
func (c *collect) ids() []string {
	var out []string
	for _, b := range c.batches {
		for _, p := range b.places {
			out = append(out, fmt.Sprintf("%s:%d", b.origin, p))
		}
	}
	return out
}

func (c *collect) last() []byte {
	if len(c.batches) == 0 {
		return nil
	}
	return c.batches[len(c.batches)-1].pos
}

// fields returns field f of every record.
func (c *collect) fields(f string) []string {
	var out []string
	for _, r := range c.records() {
		var m map[string]any
		if err := json.Unmarshal([]byte(r), &m); err != nil {
			panic(err)
		}
		out = append(out, fmt.Sprint(m[f]))
	}
	return out
}

func read(t *testing.T, s *Source, from []byte) *collect {
	t.Helper()
	c := &collect{}
	if err := s.Read(context.Background(), from, c); err != nil {
		t.Fatalf("Read: %v", err)
	}
	return c
}

// jsonl makes n records "<name>-<i>" as JSON Lines.
func jsonl(name string, n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"id":"%s-%d","n":%d}`+"\n", name, i, i)
	}
	return b.Bytes()
}

func gz(data []byte) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

func ids(name string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("%s-%d", name, i))
	}
	return out
}

func TestIncrementalByObject(t *testing.T) {
	l := newLake(t)
	l.put("in/b.jsonl", jsonl("b", 4))
	l.put("in/a.jsonl", jsonl("a", 2))
	l.put("in/d.jsonl", gz(jsonl("d", 5)))
	s := l.source(nil)

	first := read(t, s, nil)
	want := slices.Concat(ids("a", 2), ids("b", 4), ids("d", 5))
	if got := first.fields("id"); !slices.Equal(got, want) {
		t.Fatalf("first run read %v, want %v (key order)", got, want)
	}
	if got := first.ids()[2]; got != "in/b.jsonl:1" {
		t.Fatalf("the first record of b has place %s, want in/b.jsonl:1", got)
	}
	if again := read(t, s, first.last()); len(again.records()) != 0 {
		t.Fatalf("nothing new, but a re-run read %v", again.fields("id"))
	}

	// A key after the last and one before it, not seen before.
	l.put("in/e.jsonl", jsonl("e", 2))
	l.put("in/c.jsonl", jsonl("c", 1))
	second := read(t, s, first.last())
	if got, want := second.fields("id"), slices.Concat(ids("c", 1), ids("e", 2)); !slices.Equal(got, want) {
		t.Fatalf("second run read %v, want only the new objects %v", got, want)
	}

	// A rewritten object is read again in full, with the same ids for
	// the same lines.
	l.put("in/b.jsonl", jsonl("b2", 3))
	third := read(t, s, second.last())
	if got, want := third.fields("id"), ids("b2", 3); !slices.Equal(got, want) {
		t.Fatalf("after rewriting b the run read %v, want %v", got, want)
	}
	if got := third.ids(); !slices.Equal(got, first.ids()[2:5]) {
		t.Fatalf("places of the rewritten object %v, want those of its first version's lines %v", got, first.ids()[2:5])
	}
	if again := read(t, s, third.last()); len(again.records()) != 0 {
		t.Fatalf("a re-run after the rewrite read %v", again.fields("id"))
	}

	// Deleting objects shrinks the checkpoint once a batch carries it.
	var before position
	json.Unmarshal(third.last(), &before)
	l.delete("in/a.jsonl")
	l.delete("in/c.jsonl")
	l.put("in/f.jsonl", jsonl("f", 1))
	fourth := read(t, s, third.last())
	var after position
	json.Unmarshal(fourth.last(), &after)
	if got := fourth.fields("id"); !slices.Equal(got, ids("f", 1)) {
		t.Fatalf("fourth run read %v", got)
	}
	if len(before.Done) != 5 || len(after.Done) != 4 {
		t.Fatalf("done set had %d entries and then %d; want 5, then 4 (two deleted, one added)", len(before.Done), len(after.Done))
	}
}

// rangeRecorder records the Range header of every GET.
type rangeRecorder struct {
	mu     sync.Mutex
	ranges []string
}

func (r *rangeRecorder) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && req.URL.Query().Get("list-type") == "" {
		r.mu.Lock()
		r.ranges = append(r.ranges, req.Header.Get("Range"))
		r.mu.Unlock()
	}
	return http.DefaultClient.Do(req)
}

func (r *rangeRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.ranges
	r.ranges = nil
	return out
}

// recording makes s's client record the ranges it asks for.
func (l *lake) recording(s *Source) *rangeRecorder {
	rec := &rangeRecorder{}
	s.client = s3.New(l.srv.Options(), func(o *s3.Options) { o.HTTPClient = rec })
	return rec
}

// TestResumeFromEveryBatch reads objects whole, then from the position of
// every batch, as a run that died after that batch was committed would:
// exactly the records after it come, with the same places, from a ranged GET
// when the object is not gzipped.
func TestResumeFromEveryBatch(t *testing.T) {
	l := newLake(t)
	csvText := "\xef\xbb\xbfid,n,text\n" +
		"c-0,0,plain\n" +
		"c-1,1,\"two\nlines\"\n" +
		"c-2,2,x\n" +
		"c-3,3,\"three\nmore\nlines\"\n" +
		"c-4,4,y\n" +
		"c-5,5,z\n" +
		"c-6,6,w\n"
	jsonText := string(jsonl("j", 7))
	jsonText = strings.Replace(jsonText, "\n", "\n\n", 2) // blank lines count as lines
	for _, tc := range []struct {
		name, format string
		data         []byte
		gzip         bool
	}{
		{"jsonl", "jsonl", []byte(jsonText), false},
		{"jsonl.gz", "jsonl", gz([]byte(jsonText)), true},
		{"csv", "csv", []byte(csvText), false},
		{"csv.gz", "csv", gz([]byte(csvText)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "resume/" + tc.name + "/"
			l.put(prefix+"0.obj", tc.data)
			l.put(prefix+"1.obj", tc.data) // a second object after it
			s := l.source(map[string]any{"prefix": prefix, "format": tc.format, "batch_rows": 2})
			whole := read(t, s, nil)
			if n := len(whole.records()); n != 14 {
				t.Fatalf("read %d records, want 14", n)
			}
			if tc.format == "csv" {
				if got := whole.ids()[:5]; !slices.Equal(got, []string{prefix + "0.obj:2", prefix + "0.obj:3", prefix + "0.obj:5", prefix + "0.obj:6", prefix + "0.obj:9"}) {
					t.Fatalf("CSV places %v: want the line where each record starts", got)
				}
			}
			rec := l.recording(s)
			for i, b := range whole.batches {
				var p position
				if err := json.Unmarshal(b.pos, &p); err != nil {
					t.Fatal(err)
				}
				rest := &collect{batches: whole.batches[i+1:]}
				rec.take()
				got := read(t, s, b.pos)
				if !slices.Equal(got.records(), rest.records()) || !slices.Equal(got.ids(), rest.ids()) {
					t.Fatalf("from batch %d (%s) read\n%v %v\nwant\n%v %v", i+1, b.pos, got.fields("id"), got.ids(), rest.fields("id"), rest.ids())
				}
				ranges := rec.take()
				if p.Cur == nil {
					continue
				}
				if p.Cur.Gzip != tc.gzip {
					t.Fatalf("cursor %s: gzip %v, want %v", b.pos, p.Cur.Gzip, tc.gzip)
				}
				wantRange := fmt.Sprintf("bytes=%d-", p.Cur.Offset)
				if tc.gzip {
					wantRange = ""
				}
				want := []string{wantRange}
				if tc.format == "csv" && !tc.gzip {
					want = []string{fmt.Sprintf("bytes=0-%d", p.Cur.Header-1), wantRange} // the header, then the rest
				}
				if len(ranges) < len(want) || !slices.Equal(ranges[:len(want)], want) {
					t.Fatalf("from %s the GETs asked for ranges %q, want first %q", b.pos, ranges, want)
				}
			}
			// The last batch of an object marks it finished: no cursor.
			for i, b := range whole.batches {
				var p position
				json.Unmarshal(b.pos, &p)
				if last := i == len(whole.batches)-1 || whole.batches[i+1].origin != b.origin; last != (p.Cur == nil) {
					t.Fatalf("batch %d (last of its object: %v) has position %s", i+1, last, b.pos)
				}
			}
		})
	}
}

func TestCompactionBoundsThePosition(t *testing.T) {
	l := newLake(t)
	for _, k := range []string{"k1", "k2", "k3", "k4", "k5"} {
		l.put("in/"+k, jsonl(k, 1))
	}
	s := l.source(map[string]any{"track_objects": 2})
	first := read(t, s, nil)
	var p position
	json.Unmarshal(first.last(), &p)
	if p.Through != "in/k3" || len(p.Done) != 2 || p.Cur != nil {
		t.Fatalf("position %s: want through in/k3 and 2 objects after it", first.last())
	}
	// In the window (after through): a rewrite and a new key are read.
	// At or before through: compaction gave them up.
	l.put("in/k4", jsonl("k4v2", 1))
	l.put("in/k45", jsonl("k45", 1))
	l.put("in/k2", jsonl("k2v2", 1))
	l.put("in/k0", jsonl("k0", 1))
	second := read(t, s, first.last())
	if got, want := second.fields("id"), []string{"k4v2-0", "k45-0"}; !slices.Equal(got, want) {
		t.Fatalf("second run read %v, want %v", got, want)
	}
	json.Unmarshal(second.last(), &p)
	if p.Through != "in/k4" || len(p.Done) != 2 {
		t.Fatalf("position %s: want through in/k4 (k45 and k5 after it)", second.last())
	}
	if n := len(second.last()); n > 200 {
		t.Fatalf("position of %d bytes: %s", n, second.last())
	}
}

// TestLargeObjectStreams reads an object of tens of MB and checks that the
// heap stays far below its size.
func TestLargeObjectStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 48 MB")
	}
	l := newLake(t)
	pad := strings.Repeat("x", 400)
	var b bytes.Buffer
	n := 0
	for b.Len() < 48<<20 {
		fmt.Fprintf(&b, `{"id":%d,"text":"%s","meta":{"k":"v%d"}}`+"\n", n, pad, n%7)
		n++
	}
	size := b.Len()
	l.put("in/big.jsonl", b.Bytes())
	b = bytes.Buffer{}
	s := l.source(map[string]any{"batch_rows": 2000})
	c := &countingEmitter{}
	peak := watchHeap(t, func() {
		if err := s.Read(context.Background(), nil, c); err != nil {
			t.Fatal(err)
		}
	})
	if c.rows != n || c.batches < 5 {
		t.Fatalf("read %d rows in %d batches, want %d in several", c.rows, c.batches, n)
	}
	t.Logf("%d MB object, %d batches: peak heap %d MB", size>>20, c.batches, peak>>20)
	if peak > uint64(size)/2 {
		t.Fatalf("peak heap %d MB reading a %d MB object: is it buffered whole?", peak>>20, size>>20)
	}
}

func TestWrongCredentials(t *testing.T) {
	l := newLake(t)
	l.put("in/a.jsonl", jsonl("a", 1))
	const secret = "not-the-secret-0123456789abcdef"
	const token = "session-token-abcdef0123456789"
	for name, attrs := range map[string]map[string]any{
		"wrong secret":     {"secret_access_key": secret, "session_token": token},
		"unknown key id":   {"access_key_id": "nobody", "secret_access_key": secret},
		"wrong env secret": {"access_key_id": nil, "secret_access_key": nil},
	} {
		t.Run(name, func(t *testing.T) {
			if attrs["access_key_id"] == nil && attrs["secret_access_key"] == nil {
				t.Setenv("AWS_ACCESS_KEY_ID", l.srv.AccessKey)
				t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
			}
			s := l.source(attrs)
			_, serr := s.Schema(context.Background())
			rerr := s.Read(context.Background(), nil, &collect{})
			for op, err := range map[string]error{"Schema": serr, "Read": rerr} {
				if err == nil {
					t.Fatalf("%s: wrong credentials were accepted", op)
				}
				msg := err.Error()
				t.Logf("%s: %s", op, msg)
				if strings.Contains(msg, secret) || strings.Contains(msg, token) || strings.Contains(msg, l.srv.SecretKey) {
					t.Fatalf("%s: the error shows a secret: %s", op, msg)
				}
				var se *s3client.Error
				if !errors.As(err, &se) || !slices.Contains([]string{"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidTokenId"}, se.Code) {
					t.Fatalf("%s: want an S3 credentials error code, got %v", op, err)
				}
				for _, want := range []string{"s3://lake/in/", l.srv.Endpoint, se.Code, "check the credentials"} {
					if !strings.Contains(msg, want) {
						t.Fatalf("%s: the error does not say %q: %s", op, want, msg)
					}
				}
				if errors.Is(err, sdk.ErrRetryable) {
					t.Fatalf("%s: a credentials error is not retryable", op)
				}
			}
		})
	}
	t.Run("no such bucket", func(t *testing.T) {
		err := l.source(map[string]any{"bucket": "no-such-bucket"}).Read(context.Background(), nil, &collect{})
		if err == nil || !strings.Contains(err.Error(), "NoSuchBucket") || !strings.Contains(err.Error(), "s3://no-such-bucket/in/") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestSchemaSamplesTheFirstObject(t *testing.T) {
	l := newLake(t)
	s := l.source(nil)
	schema, err := s.Schema(context.Background())
	if err != nil || !sdk.IsSampled(schema) || schema.NumFields() != 0 {
		t.Fatalf("an empty prefix: schema %v, %v; want an empty sample", schema, err)
	}
	l.put("in/a.jsonl.gz", gz([]byte(`{"id":"x","meta":{"score":0.5}}`+"\n")))
	l.put("in/b.jsonl", []byte(`{"late":true}`+"\n"))
	schema, err = s.Schema(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sdk.IsSampled(schema) || !strings.Contains(sdk.SchemaSample(schema), "s3://lake/in/a.jsonl.gz") {
		t.Fatalf("schema %v is not marked as a sample of the first object", schema)
	}
	if len(schema.FieldIndices("meta")) != 1 || len(schema.FieldIndices("late")) != 0 {
		t.Fatalf("schema %v: want the first object's fields", schema)
	}
	l.put("csv/a.csv", []byte("id,meta.score\nx,0.5\n"))
	schema, err = l.source(map[string]any{"prefix": "csv/", "format": "csv"}).Schema(context.Background())
	if err != nil || len(schema.FieldIndices("meta")) != 1 || !sdk.IsSampled(schema) {
		t.Fatalf("CSV schema %v, %v", schema, err)
	}
}

func TestHiddenObjectsAreSkipped(t *testing.T) {
	l := newLake(t)
	l.put("in/dt=1/part-a.jsonl", jsonl("a", 1))
	l.put("in/dt=1/_manifest-123.json", []byte(`{"not":"a record"`))
	l.put("in/_SUCCESS", nil)
	l.put("in/.tmp/part-b.jsonl", []byte("garbage"))
	l.put("in/folder/", nil)
	l.put("other/x.jsonl", jsonl("x", 1))
	got := read(t, l.source(nil), nil)
	if ids := got.fields("id"); !slices.Equal(ids, []string{"a-0"}) {
		t.Fatalf("read %v, want only in/dt=1/part-a.jsonl", ids)
	}
}

func TestBadRecords(t *testing.T) {
	l := newLake(t)
	l.put("in/a.jsonl", []byte(`{"id":"a-0"}`+"\n"+`{"id": broken`+"\n"+`{"id":"a-2"}`+"\n"))
	err := l.source(nil).Read(context.Background(), nil, &collect{})
	if err == nil || !strings.Contains(err.Error(), "s3://lake/in/a.jsonl:2") || !strings.Contains(err.Error(), `on_error = "skip"`) {
		t.Fatalf("got %v; want the object and line and what to do", err)
	}
	c := read(t, l.source(map[string]any{"on_error": "skip"}), nil)
	if got := c.fields("id"); !slices.Equal(got, []string{"a-0", "a-2"}) || c.skipped != 1 {
		t.Fatalf("skip: read %v, skipped %d", got, c.skipped)
	}
	if got := c.ids(); !slices.Equal(got, []string{"in/a.jsonl:1", "in/a.jsonl:3"}) {
		t.Fatalf("places %v", got)
	}
}

func TestConfigureErrors(t *testing.T) {
	testminio.IsolateAWS(t)
	base := map[string]any{"bucket": "lake", "endpoint": "http://127.0.0.1:9"}
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"bucket": ""}, "bucket must not be empty"},
		{map[string]any{"bucket": "lake/in"}, "put the folder in prefix"},
		{map[string]any{"access_key_id": "AKIA"}, "go together"},
		{map[string]any{"secret_access_key": "s3cr3t-value"}, "go together"},
		{map[string]any{"session_token": "tok"}, "session_token needs"},
		{map[string]any{"endpoint": "127.0.0.1:9000"}, "is not a URL"},
		{map[string]any{"format": "xml"}, `format must be "jsonl", "csv" or "parquet"`},
		{map[string]any{"on_error": "ignore"}, "on_error must be"},
		{map[string]any{"batch_rows": -1}, "batch_rows must be at least 1"},
		{map[string]any{"track_objects": -1}, "track_objects must be at least 1"},
		{map[string]any{"profile": "no-such-profile"}, "no-such-profile"},
	} {
		block := map[string]any{}
		for k, v := range base {
			block[k] = v
		}
		for k, v := range tc.attrs {
			block[k] = v
		}
		_, err := configure(block)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error with %q", tc.attrs, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-value") {
			t.Errorf("%v: the error shows the secret: %v", tc.attrs, err)
		}
	}
	info := (&Source{}).Info()
	defaults := map[string]any{"bucket": "lake"}
	for _, a := range info.Config {
		if a.Description == "" {
			t.Errorf("%s has no description", a.Name)
		}
		if a.Default != nil {
			defaults[a.Name] = a.Default
		}
	}
	if _, err := configure(defaults); err != nil {
		t.Errorf("the defaults: %v", err)
	}
	if _, err := sdk.DescribeProto(info); err != nil {
		t.Fatal(err)
	}
}

func TestThroughTheProtocol(t *testing.T) {
	l := newLake(t)
	l.put("in/a.jsonl", []byte(`{"id":1}`+"\n"+`{"id":2}`+"\n"))
	l.put("in/b.jsonl.gz", gz([]byte(`{"id":3}`+"\n")))
	cfg, _ := json.Marshal(l.block(nil))
	sdktest.TestSource(t, func() sdk.Source { return &Source{} }, "", sdktest.SourceTest{
		Config: string(cfg),
		Want:   []string{`{"id":1}`, `{"id":2}`, `{"id":3}`},
	})
}

// countingEmitter counts and releases.
type countingEmitter struct{ rows, batches int }

func (c *countingEmitter) Emit(rec arrow.RecordBatch, _ []byte) error {
	c.rows += int(rec.NumRows())
	c.batches++
	rec.Release()
	return nil
}

func (c *countingEmitter) EmitAt(rec arrow.RecordBatch, pos []byte, _ sdk.Origin) error {
	return c.Emit(rec, pos)
}

func (c *countingEmitter) Skipped(int) {}

// watchHeap runs fn and returns the peak of the heap's object bytes above
// what it was before, sampled every few milliseconds.
func watchHeap(t *testing.T, fn func()) uint64 {
	t.Helper()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runtime.GC()
	base := heap()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if h := heap(); h > base && h-base > peak.Load() {
				peak.Store(h - base)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return peak.Load()
}

// breaker cuts the body of the first whole-object GET after some bytes, as
// a reset connection would.
type breaker struct {
	after  int
	broken atomic.Bool
	rangeRecorder
}

func (b *breaker) Do(req *http.Request) (*http.Response, error) {
	resp, err := b.rangeRecorder.Do(req)
	if err == nil && req.Method == http.MethodGet && req.Header.Get("Range") == "" && req.URL.Query().Get("list-type") == "" && b.broken.CompareAndSwap(false, true) {
		resp.Body = &cutBody{ReadCloser: resp.Body, left: b.after}
	}
	return resp, err
}

type cutBody struct {
	io.ReadCloser
	left int
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("connection reset by peer")
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= n
	return n, err
}

func TestBrokenConnectionResumesWithARangedGET(t *testing.T) {
	for _, zip := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", zip), func(t *testing.T) {
			l := newLake(t)
			data := jsonl("a", 2000)
			if zip {
				data = gz(data)
			}
			l.put("in/a.jsonl", data)
			s := l.source(map[string]any{"batch_rows": 500})
			br := &breaker{after: len(data) / 3}
			s.client = s3.New(l.srv.Options(), func(o *s3.Options) { o.HTTPClient = br })
			c := read(t, s, nil)
			if got := c.fields("id"); !slices.Equal(got, ids("a", 2000)) {
				t.Fatalf("read %d records after the cut, want the 2000 in order", len(got))
			}
			if got, want := br.take(), []string{"", fmt.Sprintf("bytes=%d-", len(data)/3)}; !slices.Equal(got, want) {
				t.Fatalf("GETs with ranges %q, want %q", got, want)
			}
		})
	}
}
