package sinkbigquery

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

func TestVersionPlanGolden(t *testing.T) {
	staged := bigquery.Schema{
		{Name: "label_id", Type: bigquery.StringFieldType},
		{Name: "label", Type: bigquery.StringFieldType},
		{Name: "updated_at", Type: bigquery.TimestampFieldType},
		{Name: stagingIDColumn, Type: bigquery.StringFieldType},
		{Name: stagingSeqColumn, Type: bigquery.IntegerFieldType},
	}
	r := flushRange{Pipeline: "warehouse", Target: tableRef{"proj", "shop", "labels"}, Mode: modeMerge, FirstID: "r1", LastID: "r9", Version: "updated_at"}
	p := planFlush(r, "EU", staged, "label_id")
	golden(t, "merge_version.sql", p.Merge.SQL)
	fr := r
	fr.FullRefresh = true
	golden(t, "merge_version_full_refresh.sql", planFlush(fr, "EU", staged, "label_id").Merge.SQL)
	// The version is part of the jobs' identity: a MERGE that compares
	// versions is not the one that does not.
	plain := r
	plain.Version = ""
	if q := planFlush(plain, "EU", staged, "label_id"); q.Merge.JobID == p.Merge.JobID || strings.Contains(q.Merge.SQL, "NULLS LAST") {
		t.Errorf("without a version: job %s, SQL\n%s", q.Merge.JobID, q.Merge.SQL)
	}
}

var labelsSchema = arrow.NewSchema([]arrow.Field{
	{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
	{Name: "label_id", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "updated_at", Type: arrow.BinaryTypes.String, Nullable: true},
}, nil)

func configureLabels(t *testing.T, f *fakeBQ, w *fakeWrite, attrs map[string]any) *Sink {
	t.Helper()
	base := map[string]any{"project": "proj", "dataset": "shop", "table": "labels", "endpoint": f.srv.URL,
		"key": "label_id", "version": "updated_at", "types": map[string]string{"updated_at": "timestamp"}}
	if w != nil {
		base["method"] = "storage_write"
	}
	for k, v := range attrs {
		base[k] = v
	}
	raw, _ := json.Marshal(base)
	s := &Sink{}
	if w != nil {
		s.writeOptions = w.options(t)
	}
	if err := s.Configure(context.Background(), sdk.Config{Name: "warehouse", JSON: raw}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// labels reads the target's rows as "key=label@version" (version in
// micros), sorted by key.
func labels(t *testing.T, w *fakeWrite, version string) string {
	t.Helper()
	rows := w.rows("shop.labels")
	out := make([]string, 0, len(rows))
	for _, r := range rows {
		v := "null"
		if r[version] != nil {
			v = fmt.Sprint(r[version])
		}
		out = append(out, fmt.Sprintf("%v=%v@%s", r["label_id"], r["label"], v))
	}
	for i := range out { // few rows: insertion sort
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return strings.Join(out, " ")
}

func micros(s string) string {
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return fmt.Sprint(ts.UnixMicro())
}

func TestStorageWriteVersion(t *testing.T) {
	f, w := newStorageFakes(t)
	ctx := context.Background()
	flush := func(batches ...string) {
		t.Helper()
		s := configureLabels(t, f, w, nil)
		for _, js := range batches {
			if err := s.Write(ctx, batch(t, labelsSchema, js)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
	t1, t2, t3 := "2024-05-01T12:00:01Z", "2024-05-01T12:00:02Z", "2024-05-01T12:00:03Z"
	// Newest first within one flush (two batches): the newest wins; equal
	// versions: the later arrival; a null loses to any value, and among
	// nulls the later arrival wins.
	flush(
		`[{"_pipeline_id":"e3","label_id":"a","label":"third","updated_at":"`+t3+`"},
		  {"_pipeline_id":"e2","label_id":"a","label":"second","updated_at":"`+t2+`"},
		  {"_pipeline_id":"b1","label_id":"b","label":"early","updated_at":"`+t1+`"}]`,
		`[{"_pipeline_id":"e1","label_id":"a","label":"first","updated_at":null},
		  {"_pipeline_id":"b2","label_id":"b","label":"late","updated_at":"`+t1+`"},
		  {"_pipeline_id":"c1","label_id":"c","label":"null 1","updated_at":null},
		  {"_pipeline_id":"c2","label_id":"c","label":"null 2","updated_at":null}]`)
	want := "a=third@" + micros(t3) + " b=late@" + micros(t1) + " c=null 2@null"
	if got := labels(t, w, "updated_at"); got != want {
		t.Fatalf("after the first flush:\n got %s\nwant %s", got, want)
	}
	// Later flushes, oldest last: the stored rows stay; an equal version
	// replaces; a value replaces a stored null.
	flush(`[{"_pipeline_id":"e2b","label_id":"a","label":"second again","updated_at":"` + t2 + `"}]`)
	flush(`[{"_pipeline_id":"e1b","label_id":"a","label":"null again","updated_at":null}]`)
	flush(`[{"_pipeline_id":"b3","label_id":"b","label":"equal","updated_at":"` + t1 + `"},
	        {"_pipeline_id":"c3","label_id":"c","label":"dated","updated_at":"` + t1 + `"}]`)
	want = "a=third@" + micros(t3) + " b=equal@" + micros(t1) + " c=dated@" + micros(t1)
	if got := labels(t, w, "updated_at"); got != want {
		t.Errorf("after the late events:\n got %s\nwant %s", got, want)
	}
}

func TestStorageWriteVersionOnlyNulls(t *testing.T) {
	f, w := newStorageFakes(t)
	ctx := context.Background()
	seqSchema := arrow.NewSchema([]arrow.Field{labelsSchema.Field(0), labelsSchema.Field(1), labelsSchema.Field(2), {Name: "seq", Type: arrow.PrimitiveTypes.Int64, Nullable: true}}, nil)
	nullSchema := arrow.NewSchema([]arrow.Field{labelsSchema.Field(0), labelsSchema.Field(1), labelsSchema.Field(2), {Name: "seq", Type: arrow.Null, Nullable: true}}, nil)
	flush := func(schema *arrow.Schema, js string) *Sink {
		t.Helper()
		s := configureLabels(t, f, w, map[string]any{"version": "seq", "types": nil})
		if err := s.Write(ctx, batch(t, schema, js)); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		return s
	}
	// The first flush has only nulls: the table gets no column, the rows
	// merge as without a version.
	flush(nullSchema, `[{"_pipeline_id":"e1","label_id":"a","label":"one","seq":null},{"_pipeline_id":"e2","label_id":"a","label":"two","seq":null}]`)
	if got := labels(t, w, "seq"); got != "a=two@null" {
		t.Errorf("only nulls: %s", got)
	}
	f.mu.Lock()
	for _, c := range f.tables["shop.labels"].Schema.Fields {
		if c.Name == "seq" {
			t.Errorf("a column for an always-null version: %+v", c)
		}
	}
	f.mu.Unlock()
	flush(seqSchema, `[{"_pipeline_id":"e3","label_id":"a","label":"three","seq":3}]`)
	// Only nulls again: the table's INT64 column is the version, and the
	// nulls do not replace 3.
	flush(nullSchema, `[{"_pipeline_id":"e4","label_id":"a","label":"four","seq":null}]`)
	flush(seqSchema, `[{"_pipeline_id":"e5","label_id":"a","label":"two","seq":2}]`)
	if got := labels(t, w, "seq"); got != "a=three@3" {
		t.Errorf("after older events: %s, want a=three@3", got)
	}
	f.mu.Lock()
	var merges []string
	for _, id := range f.order {
		if q := f.jobs[id].Configuration.Query; q != nil && strings.HasPrefix(id, "pipeline_merge_") {
			merges = append(merges, q.Query)
		}
	}
	f.mu.Unlock()
	if len(merges) != 4 {
		t.Fatalf("%d MERGEs, want 4", len(merges))
	}
	const when = "WHEN MATCHED AND (T.`seq` IS NULL OR S.`seq` >= T.`seq`)"
	if strings.Contains(merges[0], when) || strings.Contains(merges[0], "NULLS LAST") {
		t.Errorf("the first MERGE compares versions:\n%s", merges[0])
	}
	for _, q := range merges[1:] {
		if !strings.Contains(q, when) {
			t.Errorf("MERGE without the version:\n%s", q)
		}
	}
}

func TestVersionLoadFlush(t *testing.T) {
	f := newFakeBQ(t)
	ctx := context.Background()
	s := configureLabels(t, f, nil, nil)
	if err := s.Write(ctx, batch(t, labelsSchema, `[{"_pipeline_id":"e2","label_id":"a","label":"new","updated_at":"2024-05-01T12:00:02Z"},{"_pipeline_id":"e1","label_id":"a","label":"old","updated_at":"2024-05-01T12:00:01Z"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.order) != 2 || !strings.HasPrefix(f.order[1], "pipeline_merge_") {
		t.Fatalf("jobs %v", f.order)
	}
	q := f.jobs[f.order[1]].Configuration.Query.Query
	for _, want := range []string{
		"ROW_NUMBER() OVER (PARTITION BY `label_id` ORDER BY `updated_at` DESC NULLS LAST, `__pipeline_seq` DESC)",
		"WHEN MATCHED AND (T.`updated_at` IS NULL OR S.`updated_at` >= T.`updated_at`) THEN UPDATE SET",
	} {
		if !strings.Contains(q, want) {
			t.Errorf("MERGE lacks %s:\n%s", want, q)
		}
	}
	_, rows := parquetRows(t, f.uploads[f.order[0]])
	if got := mustJSON(rows); !strings.Contains(got, `"label":"new","label_id":"a","updated_at":`) {
		t.Errorf("uploaded rows: %s", got)
	}
}

func TestVersionErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"mode": "append", "key": idColumn}, `version is for mode "merge"`},
		{map[string]any{"version": "meta.at"}, `version "meta.at": name a top-level column (a TIMESTAMP, INT64 or FLOAT64), not a path`},
		{map[string]any{"version": "_pipeline_id"}, `version "_pipeline_id": _pipeline_* columns are the pipeline's own`},
		{map[string]any{"version": "label_id"}, `version "label_id" is also the key`},
	} {
		f := newFakeBQ(t)
		base := map[string]any{"project": "proj", "dataset": "shop", "table": "labels", "endpoint": f.srv.URL, "key": "label_id", "version": "updated_at"}
		for k, v := range tc.attrs {
			base[k] = v
		}
		raw, _ := json.Marshal(base)
		err := (&Sink{}).Configure(ctx, sdk.Config{Name: "w", JSON: raw})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.attrs, err, tc.want)
		}
	}

	meta := arrow.Field{Name: "meta", Type: arrow.StructOf(arrow.Field{Name: "at", Type: arrow.PrimitiveTypes.Int64, Nullable: true}), Nullable: true}
	for _, tc := range []struct {
		name  string
		attrs map[string]any
		field arrow.Field
		js    string
		want  string
	}{
		{"string", map[string]any{"types": nil}, labelsSchema.Field(3), `"updated_at":"2024-05-01T12:00:00Z"`,
			`version "updated_at": the column is STRING (the records' field is utf8); a version must be a TIMESTAMP, INT64 or FLOAT64 (a string of times can be declared with types = { updated_at = "timestamp" })`},
		{"bool", map[string]any{"types": nil}, arrow.Field{Name: "updated_at", Type: arrow.FixedWidthTypes.Boolean, Nullable: true}, `"updated_at":true`, `the column is BOOL`},
		{"json", map[string]any{"types": map[string]string{"updated_at": "json"}}, labelsSchema.Field(3), `"updated_at":"x"`, `the column is JSON`},
		{"record", map[string]any{"types": nil}, arrow.Field{Name: "updated_at", Type: meta.Type, Nullable: true}, `"updated_at":{"at":1}`, `the column is RECORD`},
		{"flattened struct", map[string]any{"flatten": true, "types": nil}, arrow.Field{Name: "updated_at", Type: meta.Type, Nullable: true}, `"updated_at":{"at":1}`,
			`version "updated_at": the field is struct<at: int64 nullable>, flattened into columns`},
		{"flattened child", map[string]any{"flatten": true, "version": "meta_at"}, meta, `"meta":{"at":1}`,
			`version "meta_at": the column comes from a nested field (flatten = true), not a top-level field of the records`},
	} {
		f := newFakeBQ(t)
		s := configureLabels(t, f, nil, tc.attrs)
		schema := arrow.NewSchema([]arrow.Field{labelsSchema.Field(0), labelsSchema.Field(1), tc.field}, nil)
		err := s.Write(ctx, batch(t, schema, `[{"_pipeline_id":"e1","label_id":"a",`+tc.js+`}]`))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}

	// No record has the field and the table has no column: a misspelt name.
	f := newFakeBQ(t)
	s := configureLabels(t, f, nil, map[string]any{"version": "updated"})
	if err := s.Write(ctx, batch(t, labelsSchema, `[{"_pipeline_id":"e1","label_id":"a"}]`)); err != nil {
		t.Fatal(err)
	}
	err := s.Flush(ctx)
	if want := `version "updated": the records have no such top-level field, and table proj.shop.labels has no such column`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("misspelt: %v, want %q", err, want)
	}
	f.mu.Lock()
	if len(f.order) != 0 {
		t.Errorf("jobs ran despite the error: %v", f.order)
	}
	f.mu.Unlock()

	// Only nulls, and the table's column is not a version type.
	f = newFakeBQ(t)
	s = configureLabels(t, f, nil, map[string]any{"version": "label", "types": nil})
	if err := s.Write(ctx, batch(t, labelsSchema, `[{"_pipeline_id":"e1","label_id":"a","label":"x"}]`)); err == nil {
		t.Fatal("a STRING version accepted")
	}
	plain := configureLabels(t, f, nil, map[string]any{"version": nil, "types": nil})
	if err := plain.Write(ctx, batch(t, labelsSchema, `[{"_pipeline_id":"e1","label_id":"a","label":"x"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := plain.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	nullLabel := arrow.NewSchema([]arrow.Field{labelsSchema.Field(0), labelsSchema.Field(1), {Name: "label", Type: arrow.Null, Nullable: true}}, nil)
	if err := s.Write(ctx, batch(t, nullLabel, `[{"_pipeline_id":"e2","label_id":"a","label":null}]`)); err != nil {
		t.Fatal(err)
	}
	err = s.Flush(ctx)
	if want := `version "label": column label of table proj.shop.labels is STRING; a version column must be a TIMESTAMP, INT64 or FLOAT64`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("STRING column: %v, want %q", err, want)
	}
}
