package sinkbigquery

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

var ordersSchema = arrow.NewSchema([]arrow.Field{
	{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
	{Name: "order_id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "amount", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "paid", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "created_at", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "customer", Type: arrow.StructOf(
		arrow.Field{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: "age", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	), Nullable: true},
	{Name: "tags", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
}, nil)

func batch(t *testing.T, schema *arrow.Schema, js string) sdk.Batch {
	t.Helper()
	rec, _, err := array.RecordFromJSON(memory.DefaultAllocator, schema, strings.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Release)
	return sdk.NewBatch(rec)
}

const batch1 = `[
 {"_pipeline_id":"r1","order_id":1,"amount":9.5,"paid":true,"created_at":"2024-05-01T12:00:00Z","customer":{"name":"Ann","age":31},"tags":["a","b"]},
 {"_pipeline_id":"r2","order_id":2,"amount":3,"paid":false,"created_at":"2024-05-01T13:00:00Z","customer":null,"tags":[]}
]`

func configure(t *testing.T, f *fakeBQ, attrs map[string]any, fullRefresh bool) *Sink {
	t.Helper()
	base := map[string]any{"project": "proj", "dataset": "shop", "table": "orders", "endpoint": f.srv.URL,
		"types": map[string]string{"created_at": "timestamp"}}
	for k, v := range attrs {
		base[k] = v
	}
	raw, _ := json.Marshal(base)
	s := &Sink{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "warehouse", JSON: raw, FullRefresh: fullRefresh}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func TestMergeFlush(t *testing.T) {
	f := newFakeBQ(t)
	s := configure(t, f, nil, false)
	ctx := context.Background()
	if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
		t.Fatal(err)
	}
	// A field appears, and r1 arrives again: the later one wins.
	schema2 := arrow.NewSchema(append(ordersSchema.Fields(), arrow.Field{Name: "coupon", Type: arrow.BinaryTypes.String, Nullable: true}), nil)
	if err := s.Write(ctx, batch(t, schema2, `[{"_pipeline_id":"r1","order_id":1,"amount":10,"coupon":"X"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.datasets["shop"]; !ok {
		t.Error("dataset not created")
	}
	target := f.tables["shop.orders"]
	if target == nil {
		t.Fatal("target table not created")
	}
	var cols []string
	for _, fs := range target.Schema.Fields {
		c := fs.Name + ":" + fs.Type
		if fs.Mode == "REPEATED" {
			c += "*"
		}
		if fs.Mode == "REQUIRED" {
			t.Errorf("column %s is REQUIRED", fs.Name)
		}
		for _, sub := range fs.Fields {
			c += "/" + sub.Name + ":" + sub.Type
		}
		cols = append(cols, c)
	}
	want := "order_id:INTEGER amount:FLOAT paid:BOOLEAN created_at:TIMESTAMP customer:RECORD/name:STRING/age:INTEGER tags:STRING* _pipeline_id:STRING coupon:STRING"
	if got := strings.Join(cols, " "); got != want {
		t.Errorf("target columns\n got %s\nwant %s", got, want)
	}
	if len(f.order) != 2 || !strings.HasPrefix(f.order[0], "pipeline_load_") || !strings.HasPrefix(f.order[1], "pipeline_merge_") {
		t.Fatalf("jobs = %v, want a load then a merge", f.order)
	}
	load := f.jobs[f.order[0]].Configuration.Load
	if load.SourceFormat != "PARQUET" || load.WriteDisposition != "WRITE_TRUNCATE" ||
		strings.Join(load.SchemaUpdateOptions, ",") != "ALLOW_FIELD_ADDITION" ||
		load.ParquetOptions == nil || !load.ParquetOptions.EnableListInference {
		t.Errorf("load config = %+v", load)
	}
	if !strings.HasPrefix(load.DestinationTable.TableId, "orders__pipeline_staging_") || load.DestinationTable.DatasetId != "shop" || load.DestinationTable.ProjectId != "proj" {
		t.Errorf("load destination = %+v", load.DestinationTable)
	}
	if _, ok := f.tables["shop."+load.DestinationTable.TableId]; ok {
		t.Error("staging table not deleted after the MERGE")
	}
	q := f.jobs[f.order[1]].Configuration.Query
	if !strings.Contains(q.Query, "MERGE `proj.shop.orders` T") || !strings.Contains(q.Query, load.DestinationTable.TableId) {
		t.Errorf("merge query = %s", q.Query)
	}
	// The uploaded Parquet holds every record written, with arrival order.
	schema, rows := parquetRows(t, f.uploads[f.order[0]])
	if len(rows) != 3 {
		t.Fatalf("uploaded %d rows, want 3", len(rows))
	}
	if ts, ok := schema.Field(schema.FieldIndices("created_at")[0]).Type.(*arrow.TimestampType); !ok || ts.Unit != arrow.Microsecond {
		t.Errorf("created_at is %s in the Parquet, want timestamp[us]", schema.Field(schema.FieldIndices("created_at")[0]).Type)
	}
	got := mustJSON(rows)
	for _, w := range []string{`"__pipeline_id":"r1"`, `"__pipeline_seq":2`, `"coupon":"X"`, `"coupon":null`, `"tags":["a","b"]`, `"customer":{"age":31,"name":"Ann"}`, `"order_id":2`} {
		if !strings.Contains(got, w) {
			t.Errorf("uploaded rows lack %s:\n%s", w, got)
		}
	}
	for _, a := range f.auth {
		if a != "" {
			t.Errorf("credentials sent to an endpoint without credentials_file: %q", a)
		}
	}
}

func TestRetryFindsExistingJobs(t *testing.T) {
	f := newFakeBQ(t)
	ctx := context.Background()
	f.failInsert["pipeline_merge_"] = true
	s := configure(t, f, nil, false)
	if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
		t.Fatal(err)
	}
	err := s.Flush(ctx)
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("Flush = %v, want the injected MERGE failure", err)
	}
	f.mu.Lock()
	firstJobs := append([]string(nil), f.order...)
	f.mu.Unlock()
	if len(firstJobs) != 1 {
		t.Fatalf("jobs after the failed flush = %v, want the load only", firstJobs)
	}
	// The run is retried: a new process gets the same records again.
	s2 := configure(t, f, nil, false)
	if err := s2.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
		t.Fatal(err)
	}
	if err := s2.Flush(ctx); err != nil {
		t.Fatalf("retried Flush: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dups != 1 {
		t.Errorf("duplicate job inserts = %d, want 1 (the load)", f.dups)
	}
	if len(f.order) != 2 || f.order[0] != firstJobs[0] || !strings.HasPrefix(f.order[1], "pipeline_merge_") {
		t.Errorf("jobs = %v: want the first attempt's load (not loaded twice), then the merge", f.order)
	}
	if strings.TrimPrefix(f.order[0], "pipeline_load_") != strings.TrimPrefix(f.order[1], "pipeline_merge_") {
		t.Errorf("load and merge ids of one flush should share the range hash: %v", f.order)
	}
	loads := 0
	for _, id := range f.order {
		if f.jobs[id].Configuration.Load != nil {
			loads++
		}
	}
	if loads != 1 {
		t.Errorf("%d load jobs ran, want 1", loads)
	}
}

func TestRetryOfFailedJobUsesNextID(t *testing.T) {
	f := newFakeBQ(t)
	ctx := context.Background()
	s := configure(t, f, nil, false)
	if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
		t.Fatal(err)
	}
	plan := planFlush(flushRange{Pipeline: "warehouse", Target: s.target, Mode: modeMerge, FirstID: "r1", LastID: "r2"}, "", nil, idColumn)
	f.mu.Lock()
	f.failJob[plan.Load.JobID] = "Error while reading data"
	f.mu.Unlock()
	if err := s.Flush(ctx); err == nil || !strings.Contains(err.Error(), "Error while reading data") {
		t.Fatalf("Flush = %v, want the load job's error", err)
	}
	f.mu.Lock()
	delete(f.failJob, plan.Load.JobID)
	f.mu.Unlock()
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("second Flush: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{plan.Load.JobID, plan.Load.JobID + "_r1", plan.Merge.JobID}
	if fmt.Sprint(f.order) != fmt.Sprint(want) {
		t.Errorf("jobs = %v, want %v", f.order, want)
	}
}

func TestSchemaEvolution(t *testing.T) {
	ctx := context.Background()
	t.Run("new column added as NULLABLE", func(t *testing.T) {
		f := newFakeBQ(t)
		s := configure(t, f, nil, false)
		if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		schema2 := arrow.NewSchema(append(ordersSchema.Fields(), arrow.Field{Name: "note", Type: arrow.BinaryTypes.String, Nullable: true}), nil)
		if err := s.Write(ctx, batch(t, schema2, `[{"_pipeline_id":"r3","order_id":3,"note":"hi"}]`)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		fs := f.tables["shop.orders"].Schema.Fields
		last := fs[len(fs)-1]
		if last.Name != "note" || last.Type != "STRING" || last.Mode == "REQUIRED" {
			t.Errorf("last column = %+v, want note STRING NULLABLE", last)
		}
	})
	t.Run("incompatible type", func(t *testing.T) {
		f := newFakeBQ(t)
		s := configure(t, f, nil, false)
		if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		changed := arrow.NewSchema([]arrow.Field{
			{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
			{Name: "order_id", Type: arrow.BinaryTypes.String, Nullable: true},
		}, nil)
		if err := s.Write(ctx, batch(t, changed, `[{"_pipeline_id":"r9","order_id":"A-9"}]`)); err != nil {
			t.Fatal(err)
		}
		err := s.Flush(ctx)
		want := `column "order_id" of table proj.shop.orders is INT64, but the records now carry STRING`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Flush = %v\nwant an error containing %s", err, want)
		}
	})
}

func TestAppendMode(t *testing.T) {
	f := newFakeBQ(t)
	ctx := context.Background()
	s := configure(t, f, map[string]any{"mode": "append", "flatten": true}, true)
	if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batch(t, ordersSchema, `[{"_pipeline_id":"r5","order_id":5}]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.order) != 4 {
		t.Fatalf("jobs = %v, want a load and an insert per flush", f.order)
	}
	for i, full := range []bool{true, false} { // full refresh replaces on the first flush
		l := f.jobs[f.order[2*i]].Configuration.Load
		q := f.jobs[f.order[2*i+1]].Configuration.Query
		if l == nil || !strings.HasPrefix(l.DestinationTable.TableId, "orders__pipeline_staging_") || l.WriteDisposition != "WRITE_TRUNCATE" || l.SourceFormat != "PARQUET" {
			t.Errorf("job %d = %+v, want a load into a staging table", 2*i, l)
		}
		if q == nil || !strings.Contains(q.Query, "INSERT INTO `proj.shop.orders`") || strings.Contains(q.Query, "DELETE FROM") != full {
			t.Errorf("job %d = %+v, want an insert (emptying the table first: %v)", 2*i+1, q, full)
		}
	}
	_, rows := parquetRows(t, f.uploads[f.order[0]])
	if got := mustJSON(rows[0]); !strings.Contains(got, `"customer_name":"Ann"`) || !strings.Contains(got, `"customer_age":31`) {
		t.Errorf("flattened row = %s", got)
	}
	var names []string
	for _, fs := range f.tables["shop.orders"].Schema.Fields {
		names = append(names, fs.Name)
	}
	if got := strings.Join(names, ","); got != "order_id,amount,paid,created_at,customer_name,customer_age,tags,_pipeline_id" {
		t.Errorf("columns = %s", got)
	}
}

func TestCredentialsNeverInErrors(t *testing.T) {
	f := newFakeBQ(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	keyID := "0123456789abcdef0123456789abcdef01234567"
	tokenSrv := http.NewServeMux()
	tokenSrv.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"tok-123","token_type":"Bearer","expires_in":3600}`)
	})
	tsrv := httptest.NewServer(tokenSrv)
	defer tsrv.Close()
	ts := tsrv.URL
	cred := map[string]string{"type": "service_account", "project_id": "proj", "private_key_id": keyID, "private_key": pemKey,
		"client_email": "sink@proj.iam.gserviceaccount.com", "client_id": "1", "token_uri": ts + "/token"}
	path := filepath.Join(t.TempDir(), "key.json")
	raw, _ := json.Marshal(cred)
	os.WriteFile(path, raw, 0o600)
	// A server that echoes the key back in its errors (the worst case).
	lines := strings.Split(strings.TrimSpace(pemKey), "\n")
	f.echo = " key " + keyID + " " + lines[3]
	f.failInsert["pipeline_"] = true
	s := configure(t, f, map[string]any{"credentials_file": path}, false)
	ctx := context.Background()
	if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
		t.Fatal(err)
	}
	err = s.Flush(ctx)
	if err == nil {
		t.Fatal("Flush succeeded; want an error")
	}
	msg := err.Error()
	if strings.Contains(msg, keyID) || strings.Contains(msg, lines[3]) || !strings.Contains(msg, "[redacted]") {
		t.Errorf("error leaks credentials or was not redacted: %s", msg)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	authed := false
	for _, a := range f.auth {
		if strings.HasPrefix(a, "Bearer ") {
			authed = true
		}
	}
	if !authed {
		t.Errorf("credentials_file was not used: Authorization headers %q", f.auth)
	}
}

func TestConfigureErrors(t *testing.T) {
	f := newFakeBQ(t)
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"mode": "upsert"}, `mode "upsert"`},
		{map[string]any{"method": "storage_write"}, `method "storage_write" cannot be used with endpoint`},
		{map[string]any{"method": "bulk"}, `method "bulk": use "load" or "storage_write"`},
		{map[string]any{"types": map[string]string{"x": "decimal"}}, `column "x" has type "decimal"`},
		{map[string]any{"table": "a.b"}, "single names"},
		{map[string]any{"batch": map[string]any{"interval": "soon"}}, `interval "soon"`},
		{map[string]any{"credentials_file": "/nonexistent/key.json"}, "credentials_file"},
	} {
		base := map[string]any{"project": "proj", "dataset": "shop", "table": "orders", "endpoint": f.srv.URL}
		for k, v := range tc.attrs {
			base[k] = v
		}
		raw, _ := json.Marshal(base)
		s := &Sink{}
		err := s.Configure(context.Background(), sdk.Config{JSON: raw})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: Configure = %v, want %q", tc.attrs, err, tc.want)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	f := newFakeBQ(t)
	ctx := context.Background()
	s := configure(t, f, map[string]any{"key": "missing"}, false)
	if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err == nil || !strings.Contains(err.Error(), `key "missing" is not a column`) {
		t.Errorf("Write = %v", err)
	}
	s = configure(t, f, nil, false)
	bad := `[{"_pipeline_id":"r1","created_at":"yesterday"}]`
	if err := s.Write(ctx, batch(t, ordersSchema, bad)); err == nil || !strings.Contains(err.Error(), `column "created_at" is declared a timestamp`) {
		t.Errorf("Write = %v", err)
	}
}

func TestFlushDue(t *testing.T) {
	f := newFakeBQ(t)
	now := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	s := &Sink{now: func() time.Time { return now }}
	raw, _ := json.Marshal(map[string]any{"project": "p", "dataset": "d", "table": "t", "endpoint": f.srv.URL,
		"batch": map[string]any{"rows": 3, "interval": "1m"}})
	if err := s.Configure(context.Background(), sdk.Config{JSON: raw}); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if s.FlushDue(now.Add(time.Hour)) {
		t.Error("due with nothing held")
	}
	s.Write(context.Background(), batch(t, ordersSchema, batch1))
	if s.FlushDue(now.Add(30 * time.Second)) {
		t.Error("due at 2 rows and 30s")
	}
	if !s.FlushDue(now.Add(time.Minute)) {
		t.Error("not due after the interval")
	}
	s.Write(context.Background(), batch(t, ordersSchema, `[{"_pipeline_id":"r3"}]`))
	if !s.FlushDue(now) {
		t.Error("not due at 3 rows")
	}
}

func TestPlanGolden(t *testing.T) {
	staged := bigquery.Schema{
		{Name: "order_id", Type: bigquery.IntegerFieldType},
		{Name: "amount", Type: bigquery.FloatFieldType},
		{Name: "created_at", Type: bigquery.TimestampFieldType},
		{Name: "customer", Type: bigquery.RecordFieldType, Schema: bigquery.Schema{{Name: "name", Type: bigquery.StringFieldType}}},
		{Name: "tags", Type: bigquery.StringFieldType, Repeated: true},
		{Name: "payload", Type: bigquery.JSONFieldType},
		{Name: stagingIDColumn, Type: bigquery.StringFieldType},
		{Name: stagingSeqColumn, Type: bigquery.IntegerFieldType},
	}
	r := flushRange{Pipeline: "warehouse", Target: tableRef{"proj", "shop", "orders"}, Mode: modeMerge, FirstID: "r1", LastID: "r9"}
	p := planFlush(r, "EU", staged, idColumn)
	golden(t, "merge.sql", p.Merge.SQL)
	js, _ := json.MarshalIndent(p, "", "  ")
	golden(t, "plan_merge.json", string(js)+"\n")
	if again := planFlush(r, "EU", staged, idColumn); again.Load.JobID != p.Load.JobID || again.Merge.JobID != p.Merge.JobID {
		t.Error("job ids are not deterministic")
	}
	r2 := r
	r2.LastID = "r10"
	if planFlush(r2, "EU", staged, idColumn).Load.JobID == p.Load.JobID {
		t.Error("another range got the same job id")
	}

	golden(t, "merge_key.sql", planFlush(r, "EU", staged, "order_id").Merge.SQL)
	fr := r
	fr.FullRefresh = true
	golden(t, "merge_full_refresh.sql", planFlush(fr, "EU", staged, idColumn).Merge.SQL)
	ar := r
	ar.Mode = modeAppend
	golden(t, "insert.sql", planFlush(ar, "EU", staged, idColumn).Merge.SQL)
}

// TestBigQueryIntegration runs the sink against real BigQuery.
func TestBigQueryIntegration(t *testing.T) {
	project := os.Getenv("BIGQUERY_PROJECT")
	if project == "" {
		t.Skip("BIGQUERY_PROJECT not set: skipping the BigQuery integration test; see docs/warehouses.md")
	}
	dataset := os.Getenv("BIGQUERY_DATASET")
	if dataset == "" {
		dataset = "pipeline_it"
	}
	table := fmt.Sprintf("orders_%d", time.Now().UnixNano())
	attrs := map[string]any{"project": project, "dataset": dataset, "table": table,
		"types": map[string]string{"created_at": "timestamp"}}
	if loc := os.Getenv("BIGQUERY_LOCATION"); loc != "" {
		attrs["location"] = loc
	}
	raw, _ := json.Marshal(attrs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := &Sink{}
	if err := s.Configure(ctx, sdk.Config{Name: "it", JSON: raw}); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	defer func() {
		s.client.DatasetInProject(project, dataset).Table(table).Delete(context.Background())
	}()
	for range 2 { // the second round must not duplicate anything
		if err := s.Write(ctx, batch(t, ordersSchema, batch1)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	it, err := s.client.Query(fmt.Sprintf("SELECT COUNT(*) FROM `%s.%s.%s`", project, dataset, table)).Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var row []bigquery.Value
	if err := it.Next(&row); err != nil {
		t.Fatal(err)
	}
	if row[0].(int64) != 2 {
		t.Errorf("table holds %v rows, want 2", row[0])
	}
}
