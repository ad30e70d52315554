package sinks3

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pipelinehq/pipeline/internal/testminio"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/export"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

// minio starts a server with a bucket "out".
func minio(t *testing.T) *testminio.Server {
	t.Helper()
	testminio.IsolateAWS(t)
	srv := testminio.Start(t)
	srv.MakeBucket(t, "out")
	return srv
}

// blockFor returns a block for the server with its credentials and the
// given attributes.
func blockFor(srv *testminio.Server, attrs map[string]any) map[string]any {
	cfg := map[string]any{
		"bucket":            "out",
		"endpoint":          srv.Endpoint,
		"access_key_id":     srv.AccessKey,
		"secret_access_key": srv.SecretKey,
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

func configure(t *testing.T, block map[string]any, templates ...string) (*Sink, error) {
	t.Helper()
	data, err := json.Marshal(block)
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{}
	return s, s.Configure(context.Background(), sdk.Config{Name: "lake", JSON: data, Templates: templates})
}

func mustConfigure(t *testing.T, block map[string]any, templates ...string) *Sink {
	t.Helper()
	s, err := configure(t, block, templates...)
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return s
}

// run writes records in batches of batchRows, flushes and closes, as the SDK
// does at the end of a stream.
func run(t *testing.T, s *Sink, batchRows int, records []string) error {
	t.Helper()
	batches, _, err := sdktest.Batches(records, batchRows)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, rec := range batches {
		err := s.Write(ctx, sdk.NewBatch(rec))
		rec.Release()
		if err != nil {
			return err
		}
	}
	if err := s.Flush(ctx); err != nil {
		return err
	}
	return s.Close(ctx)
}

func records(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"row_id":"r%03d","n":%d,"text":"hej %d, \"då\"","meta":{"conversation_id":"c%d","score":%d.5}}`, i, i, i, i%3, i)
	}
	return out
}

func readManifest(t *testing.T, client *s3.Client, key string) export.Manifest {
	t.Helper()
	var m export.Manifest
	if err := json.Unmarshal(getObject(t, client, "out", key), &m); err != nil {
		t.Fatalf("manifest %s: %v", key, err)
	}
	return m
}

// splitKeys returns the keys of the manifests and of the other objects.
func splitKeys(keys []string) (manifests, objects []string) {
	for _, k := range keys {
		if strings.Contains(k, "_manifest-") {
			manifests = append(manifests, k)
		} else {
			objects = append(objects, k)
		}
	}
	return manifests, objects
}

// checkManifest checks that the bucket holds exactly one manifest listing
// exactly the other objects, with rows adding up to wantRows, and returns
// it.
func checkManifest(t *testing.T, client *s3.Client, wantRows int64) export.Manifest {
	t.Helper()
	manifests, objects := splitKeys(listKeys(t, client, "out"))
	if len(manifests) != 1 {
		t.Fatalf("manifests %v, want one (objects %v)", manifests, objects)
	}
	m := readManifest(t, client, manifests[0])
	var listed []string
	var rows int64
	for _, o := range m.Objects {
		listed = append(listed, o.Key)
		rows += o.Rows
	}
	slices.Sort(listed)
	slices.Sort(objects)
	if !slices.Equal(listed, objects) {
		t.Fatalf("the manifest lists %v; the bucket holds %v", listed, objects)
	}
	if rows != wantRows || m.Rows != wantRows {
		t.Fatalf("the manifest counts %d rows (objects: %d), want %d", m.Rows, rows, wantRows)
	}
	return m
}

func readParquet(t *testing.T, data []byte) []string {
	t.Helper()
	pf, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	tr := array.NewTableReader(tbl, -1)
	defer tr.Release()
	enc := arrowjson.NewEncoder()
	var rows []string
	for tr.Next() {
		rec := tr.RecordBatch()
		for i := 0; i < int(rec.NumRows()); i++ {
			rows = append(rows, string(enc.AppendRow(nil, rec, i)))
		}
	}
	return rows
}

func TestParquetExport(t *testing.T) {
	srv := minio(t)
	client := srv.Client(t)
	s := mustConfigure(t, blockFor(srv, map[string]any{
		"prefix":    "exports/{{ date }}/",
		"roll_rows": 4,
		"timezone":  "Europe/Stockholm",
	}))
	in := records(7)
	start := time.Now()
	if err := run(t, s, 2, in); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d records as parquet in %s", len(in), time.Since(start).Round(time.Millisecond))

	m := checkManifest(t, client, 7)
	if m.Format != "parquet" || m.Compression != "zstd" || m.FullRefresh {
		t.Fatalf("manifest: format %q, compression %q, full refresh %v", m.Format, m.Compression, m.FullRefresh)
	}
	if len(m.Objects) != 2 || m.Objects[0].Rows != 4 || m.Objects[1].Rows != 3 {
		t.Fatalf("objects %+v: want 4 and 3 rows (roll_rows = 4)", m.Objects)
	}
	if m.FirstRecordID != "r000" || m.LastRecordID != "r006" {
		t.Fatalf("manifest record ids %s..%s", m.FirstRecordID, m.LastRecordID)
	}
	date := time.Now().In(mustLoc(t, "Europe/Stockholm")).Format("2006-01-02")
	var got []string
	for _, o := range m.Objects {
		if !strings.HasPrefix(o.Key, "exports/"+date+"/part-") || !strings.HasSuffix(o.Key, ".parquet") {
			t.Fatalf("key %q: want exports/%s/part-<hash>.parquet", o.Key, date)
		}
		data := getObject(t, client, "out", o.Key)
		if int64(len(data)) != o.Bytes {
			t.Fatalf("%s: %d bytes, the manifest says %d", o.Key, len(data), o.Bytes)
		}
		got = append(got, readParquet(t, data)...)
	}
	if len(got) != len(in) {
		t.Fatalf("read back %d rows, wrote %d", len(got), len(in))
	}
	for i := range in {
		if !sdktest.SameJSON(got[i], in[i]) {
			t.Fatalf("row %d:\n got %s\nwant %s", i, got[i], in[i])
		}
	}
	if ms := s.Manifests(); len(ms) != 1 || ms[0].Rows != 7 {
		t.Fatalf("Manifests() = %+v", ms)
	}
}

func mustLoc(t *testing.T, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestCSVGzipWithCredentialsFromTheEnvironment(t *testing.T) {
	srv := minio(t)
	client := srv.Client(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	s := mustConfigure(t, blockFor(srv, map[string]any{
		"access_key_id":     nil,
		"secret_access_key": nil,
		"format":            "csv",
		"compression":       "gzip",
		"prefix":            "csv/",
	}))
	in := records(5)
	if err := run(t, s, 2, in); err != nil {
		t.Fatal(err)
	}
	m := checkManifest(t, client, 5)
	if len(m.Objects) != 1 || !strings.HasSuffix(m.Objects[0].Key, ".csv.gz") || !strings.HasPrefix(m.Objects[0].Key, "csv/part-") {
		t.Fatalf("objects %+v: want one csv/part-<hash>.csv.gz", m.Objects)
	}
	zr, err := gzip.NewReader(bytes.NewReader(getObject(t, client, "out", m.Objects[0].Key)))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(zr).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	wantHeader := []string{"row_id", "n", "text", "meta.conversation_id", "meta.score"}
	if !slices.Equal(rows[0], wantHeader) {
		t.Fatalf("header %v, want %v", rows[0], wantHeader)
	}
	if len(rows) != 6 {
		t.Fatalf("%d rows, want a header and 5", len(rows))
	}
	if got := rows[3]; got[0] != "r002" || got[2] != `hej 2, "då"` || got[3] != "c2" {
		t.Fatalf("row 3: %q", got)
	}
}

func TestRerunOverwritesTheSameKeys(t *testing.T) {
	srv := minio(t)
	client := srv.Client(t)
	block := blockFor(srv, map[string]any{"format": "jsonl", "roll_rows": 3})
	in := records(8)
	if err := run(t, mustConfigure(t, block), 2, in); err != nil {
		t.Fatal(err)
	}
	first := listKeys(t, client, "out")
	if len(first) != 4 { // 3 + 3 + 2 rows, and the manifest
		t.Fatalf("keys after the first run: %v", first)
	}
	// The engine sends the same records again after a crash before the
	// checkpoint: the objects are replaced, not duplicated.
	if err := run(t, mustConfigure(t, block), 2, in); err != nil {
		t.Fatal(err)
	}
	second := listKeys(t, client, "out")
	if !slices.Equal(first, second) {
		t.Fatalf("a re-run changed the keys:\nfirst  %v\nsecond %v", first, second)
	}
	checkManifest(t, client, 8)
}

func TestWrongCredentials(t *testing.T) {
	srv := minio(t)
	const secret = "not-the-secret-0123456789abcdef"
	const token = "session-token-abcdef0123456789"
	for name, attrs := range map[string]map[string]any{
		"wrong secret":     {"secret_access_key": secret, "session_token": token},
		"unknown key id":   {"access_key_id": "nobody", "secret_access_key": secret},
		"wrong env secret": {"access_key_id": nil, "secret_access_key": nil},
	} {
		t.Run(name, func(t *testing.T) {
			if attrs["access_key_id"] == nil && attrs["secret_access_key"] == nil {
				t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
				t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
			}
			for _, format := range []string{"parquet", "csv"} {
				attrs["format"] = format
				s := mustConfigure(t, blockFor(srv, attrs))
				err := run(t, s, 2, records(3))
				if err == nil {
					t.Fatal("wrong credentials were accepted")
				}
				msg := err.Error()
				t.Logf("%s: %s", format, msg)
				if strings.Contains(msg, secret) || strings.Contains(msg, token) || strings.Contains(msg, srv.SecretKey) {
					t.Fatalf("the error shows a secret: %s", msg)
				}
				var se *Error
				if !errors.As(err, &se) || !slices.Contains([]string{"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidTokenId"}, se.Code) {
					t.Fatalf("want an S3 credentials error code, got %v", err)
				}
				if !strings.Contains(msg, "s3://out/") || !strings.Contains(msg, se.Code) || !strings.Contains(msg, "check the credentials") {
					t.Fatalf("the error does not name the object, code and what to check: %s", msg)
				}
				if errors.Is(err, sdk.ErrRetryable) {
					t.Fatal("a credentials error is not retryable")
				}
			}
		})
	}
	if keys := listKeys(t, srv.Client(t), "out"); len(keys) != 0 {
		t.Fatalf("objects written with wrong credentials: %v", keys)
	}
}

// groupedBatch builds a batch with the group_by column the engine adds.
func groupedBatch(t *testing.T, ids, groups []string, lines ...string) sdk.Batch {
	t.Helper()
	d := arrowjson.NewDecoder(arrowjson.Options{})
	defer d.Release()
	for _, l := range lines {
		if err := d.Append([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	rec := d.Flush()
	defer rec.Release()
	fields := append([]arrow.Field(nil), rec.Schema().Fields()...)
	cols := append([]arrow.Array(nil), rec.Columns()...)
	for name, vals := range map[string][]string{sdk.IDColumn: ids, sdk.TemplateColumnPrefix + "group_by": groups} {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		b.AppendValues(vals, nil)
		col := b.NewArray()
		b.Release()
		defer col.Release()
		fields = append(fields, arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true})
		cols = append(cols, col)
	}
	return sdk.NewBatch(array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows()))
}

func TestGroupBy(t *testing.T) {
	srv := minio(t)
	client := srv.Client(t)
	s := mustConfigure(t, blockFor(srv, map[string]any{"format": "jsonl", "group_by": "meta.conversation_id"}), "group_by")
	ctx := context.Background()
	b := groupedBatch(t, []string{"a", "b", "c"}, []string{"c1", "c2", "c1"},
		`{"n":1,"meta":{"conversation_id":"c1"}}`, `{"n":2,"meta":{"conversation_id":"c2"}}`, `{"n":3,"meta":{"conversation_id":"c1"}}`)
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Record.Release()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	m := checkManifest(t, client, 2)
	lines := strings.Split(strings.TrimSpace(string(getObject(t, client, "out", m.Objects[0].Key))), "\n")
	type group struct {
		ConversationID string           `json:"conversation_id"`
		MessageCount   int              `json:"message_count"`
		Messages       []map[string]any `json:"messages"`
	}
	var groups []group
	for _, l := range lines {
		var g group
		if err := json.Unmarshal([]byte(l), &g); err != nil {
			t.Fatal(err)
		}
		groups = append(groups, g)
	}
	if len(groups) != 2 || groups[0].ConversationID != "c1" || groups[0].MessageCount != 2 || len(groups[0].Messages) != 2 || groups[1].ConversationID != "c2" {
		t.Fatalf("grouped rows (the key column is named after the expression's last field):\n%s", strings.Join(lines, "\n"))
	}

	// An expression that is not a plain path names the column "group".
	s = mustConfigure(t, blockFor(srv, map[string]any{"format": "jsonl", "group_by": `lower(meta.conversation_id)`, "prefix": "g2/"}), "group_by")
	b = groupedBatch(t, []string{"a"}, []string{"c1"}, `{"n":1}`)
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Record.Release()
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	key := s.Manifests()[0].Objects[0].Key
	if got := string(getObject(t, client, "out", key)); !strings.HasPrefix(got, `{"group":"c1"`) {
		t.Fatalf("got %s", got)
	}
}

// TestThroughTheProtocol drives the sink as the engine does, over gRPC: a
// BufferedSink is flushed before the batches are acked.
func TestThroughTheProtocol(t *testing.T) {
	srv := minio(t)
	client := srv.Client(t)
	block, _ := json.Marshal(blockFor(srv, map[string]any{"format": "json", "prefix": "proto/"}))
	in := records(5)
	sdktest.TestSink(t, func() sdk.Sink { return &Sink{} }, "", sdktest.SinkTest{
		Config:  string(block),
		Records: in,
		Check: func(t testing.TB, sent []sdktest.Record) {
			m := checkManifest(t.(*testing.T), client, int64(len(sent)))
			var rows []json.RawMessage
			if err := json.Unmarshal(getObject(t, client, "out", m.Objects[0].Key), &rows); err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(in) || !sdktest.SameJSON(string(rows[4]), in[4]) {
				t.Fatalf("read back %d rows: %s", len(rows), rows)
			}
		},
	})
}

func TestConfigureErrors(t *testing.T) {
	testminio.IsolateAWS(t)
	base := map[string]any{"bucket": "out", "endpoint": "http://127.0.0.1:9"}
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"bucket": ""}, "bucket must not be empty"},
		{map[string]any{"bucket": "out/exports"}, "put the folder in prefix"},
		{map[string]any{"access_key_id": "AKIA"}, "go together"},
		{map[string]any{"secret_access_key": "s3cr3t-value"}, "go together"},
		{map[string]any{"session_token": "tok"}, "session_token needs"},
		{map[string]any{"endpoint": "127.0.0.1:9000"}, "is not a URL"},
		{map[string]any{"part_size": "1MiB"}, "outside S3's range"},
		{map[string]any{"part_size": "big"}, "is not a size"},
		{map[string]any{"roll_bytes": "lots"}, "is not a size"},
		{map[string]any{"roll_rows": 1.5}, "whole number"},
		{map[string]any{"roll_interval": "soon"}, "is not a duration"},
		{map[string]any{"timezone": "Mars/Olympus_Mons"}, "timezone"},
		{map[string]any{"format": "xml"}, "unknown format"},
		{map[string]any{"format": "parquet", "compression": "gzip"}, "parquet compresses its pages itself"},
		{map[string]any{"prefix": "{{ week }}/"}, "unknown placeholder"},
		{map[string]any{"profile": "no-such-profile"}, "no-such-profile"},
	} {
		block := map[string]any{}
		for k, v := range base {
			block[k] = v
		}
		for k, v := range tc.attrs {
			block[k] = v
		}
		_, err := configure(t, block)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error with %q", tc.attrs, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-value") {
			t.Errorf("%v: the error shows the secret: %v", tc.attrs, err)
		}
	}
	// order_by without group_by
	if _, err := configure(t, map[string]any{"bucket": "out", "order_by": "n"}, "order_by"); err == nil || !strings.Contains(err.Error(), "needs group_by") {
		t.Errorf("order_by without group_by: %v", err)
	}
	// A good block, with the defaults the engine applies.
	good := map[string]any{"bucket": "out", "prefix": "", "format": "parquet", "compression": "none", "parquet_compression": "zstd", "part_size": "16MiB", "timezone": "UTC"}
	if _, err := configure(t, good); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestInfoDefaultsAreValid(t *testing.T) {
	info := (&Sink{}).Info()
	if info.Type != "s3" || info.Kind != sdk.KindSink {
		t.Fatalf("info %+v", info)
	}
	for _, a := range info.Config {
		if a.Description == "" {
			t.Errorf("%s has no description", a.Name)
		}
		if a.Default != nil {
			if _, err := json.Marshal(a.Default); err != nil {
				t.Errorf("%s: %v", a.Name, err)
			}
		}
	}
	if _, err := sdk.DescribeProto(info); err != nil {
		t.Fatal(err)
	}
}

func bigRecords(n int) []string {
	pad := strings.Repeat("x", 1000)
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"row_id":"big%05d","n":%d,"pad":"%s"}`, i, i, pad)
	}
	return out
}

// TestMultipartThroughTheExporter streams an object larger than two parts
// and checks what a failed run leaves: no object, no pending upload.
func TestMultipartThroughTheExporter(t *testing.T) {
	srv := minio(t)
	client := srv.Client(t)
	block := blockFor(srv, map[string]any{"format": "jsonl", "part_size": "5MiB", "prefix": "big/"})
	in := bigRecords(12_000) // ~12 MiB of JSON Lines

	data, _ := json.Marshal(block)
	s := &Sink{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "lake", JSON: data, FullRefresh: true}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := run(t, s, 1000, in); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d records (~12 MiB) in 5 MiB parts in %s", len(in), time.Since(start).Round(time.Millisecond))
	m := checkManifest(t, client, int64(len(in)))
	if !m.FullRefresh {
		t.Fatal("the manifest does not record the full refresh")
	}
	if len(m.Objects) != 1 || m.Objects[0].Bytes <= 2*MinPartSize {
		t.Fatalf("objects %+v: want one of more than two 5 MiB parts", m.Objects)
	}
	got := getObject(t, client, "out", m.Objects[0].Key)
	if int64(len(got)) != m.Objects[0].Bytes {
		t.Fatalf("%d bytes, the manifest says %d", len(got), m.Objects[0].Bytes)
	}
	lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
	if len(lines) != len(in) || lines[0] != in[0] || lines[len(in)-1] != in[len(in)-1] {
		t.Fatalf("read back %d lines", len(lines))
	}
	if n := pendingUploads(t, client, "out"); n != 0 {
		t.Fatalf("%d multipart uploads pending", n)
	}

	// A run that fails before its flush: the SDK calls no Flush, and Close
	// aborts the upload in progress (parts already sent are deleted).
	s = mustConfigure(t, blockFor(srv, map[string]any{"format": "jsonl", "part_size": "5MiB", "prefix": "failed/"}))
	batches, _, err := sdktest.Batches(in, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range batches {
		if err := s.Write(context.Background(), sdk.NewBatch(rec)); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if n := pendingUploads(t, client, "out"); n != 1 {
		t.Fatalf("%d multipart uploads in progress, want 1", n)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := pendingUploads(t, client, "out"); n != 0 {
		t.Fatalf("%d multipart uploads left after Close", n)
	}
	for _, k := range listKeys(t, client, "out") {
		if strings.HasPrefix(k, "failed/") {
			t.Fatalf("%s is visible though the run never flushed", k)
		}
	}
}
