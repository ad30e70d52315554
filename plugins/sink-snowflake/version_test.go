package sinksnowflake

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

var labelFields = []arrow.Field{
	{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
	{Name: "label_id", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "label", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "updated_at", Type: arrow.BinaryTypes.String, Nullable: true},
}

func TestVersionMergeSQL(t *testing.T) {
	tr := tableRef{Database: "ANALYTICS", Schema: "PUBLIC", Name: "LABELS"}
	cols := []column{{Name: colID, Type: typeVarchar}, {Name: "LABEL_ID", Type: typeVarchar}, {Name: "LABEL", Type: typeVarchar}, {Name: "UPDATED_AT", Type: typeTimestampTZ}}
	golden(t, "merge_version.sql", versionMergeSQL(tr, cols, "LABEL_ID", "UPDATED_AT", "load_x.parquet")+";\n")
	cols[3] = column{Name: "SEQ", Type: typeNumber}
	golden(t, "merge_version_number.sql", versionMergeSQL(tr, cols, "LABEL_ID", "SEQ", "load_x.parquet")+";\n")
	if got, want := versionMergeSQL(tr, cols, "LABEL_ID", "", "load_x.parquet"), mergeSQL(tr, cols, "LABEL_ID", "load_x.parquet"); got != want {
		t.Errorf("without a version:\n%s\nwant\n%s", got, want)
	}
}

func TestVersionLoadThroughDriver(t *testing.T) {
	f := newFakeSnowflake(t)
	ctx := context.Background()
	s, _ := newSink(t, map[string]any{
		"dsn":     f.dsn("pw"),
		"table":   "labels",
		"key":     "label_id",
		"version": "updated_at",
		"types":   map[string]string{"updated_at": "timestamp"},
	})
	// Newest first, in two batches of one load.
	for _, rows := range []string{
		`[{"_pipeline_id": "e3", "label_id": "a", "label": "third", "updated_at": "2024-05-01T12:00:03Z"},
		  {"_pipeline_id": "e2", "label_id": "a", "label": "second", "updated_at": "2024-05-01T12:00:02Z"}]`,
		`[{"_pipeline_id": "e1", "label_id": "a", "label": "first", "updated_at": null}]`,
	} {
		if err := s.Write(ctx, batch(t, labelFields, rows)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	golden(t, "version_load.sql", joinSQL(f.sql()))
	tbl := readParquet(t, stagedFile(t, f, findSQL(f.sql(), "PUT ")[0]))
	for col, want := range map[string]string{
		"LABEL":         "third|second|first",
		"UPDATED_AT":    "2024-05-01T12:00:03Z|2024-05-01T12:00:02Z|NULL",
		"_PIPELINE_SEQ": "0|1|2",
	} {
		if got := strings.Join(columnValues(t, tbl, col), "|"); got != want {
			t.Errorf("staged %s = %s, want %s", col, got, want)
		}
	}
	merge := findSQL(f.sql(), "MERGE INTO")
	if len(merge) != 1 || !strings.Contains(merge[0], `WHEN MATCHED AND (t."UPDATED_AT" IS NULL OR TO_TIMESTAMP_TZ(s."UPDATED_AT") >= t."UPDATED_AT") THEN UPDATE SET`) {
		t.Errorf("MERGE: %q", merge)
	}
}

func TestVersionOnlyNulls(t *testing.T) {
	ctx := context.Background()
	nullFields := []arrow.Field{labelFields[0], labelFields[1], {Name: "seq", Type: arrow.Null, Nullable: true}}
	rows := `[{"_pipeline_id": "e1", "label_id": "a", "seq": null}]`

	// The table has the column: the MERGE compares the (null) versions
	// with it.
	f := newFakeSnowflake(t)
	f.tables[`"ANALYTICS"."PUBLIC"."LABELS"`] = [][2]string{{colID, "VARCHAR(16777216)"}, {"LABEL_ID", "VARCHAR(16777216)"}, {"SEQ", "NUMBER(38,0)"}}
	s, _ := newSink(t, map[string]any{"dsn": f.dsn("pw"), "table": "labels", "key": "label_id", "version": "seq"})
	if err := s.Write(ctx, batch(t, nullFields, rows)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	merge := findSQL(f.sql(), "MERGE INTO")
	if len(merge) != 1 || !strings.Contains(merge[0], `ORDER BY "SEQ" DESC NULLS LAST, "_PIPELINE_SEQ" DESC`) ||
		!strings.Contains(merge[0], `WHEN MATCHED AND (t."SEQ" IS NULL OR s."SEQ" >= t."SEQ") THEN UPDATE SET`) {
		t.Errorf("MERGE with the table's version column: %q", merge)
	}
	tbl := readParquet(t, stagedFile(t, f, findSQL(f.sql(), "PUT ")[0]))
	if got := columnValues(t, tbl, "SEQ"); strings.Join(got, "|") != "NULL" {
		t.Errorf("staged SEQ = %q", got)
	}
	if typ := tbl.Schema().Field(tbl.Schema().FieldIndices("SEQ")[0]).Type; typ.ID() != arrow.INT64 {
		t.Errorf("SEQ staged as %s, want int64", typ)
	}

	// No column yet: no row has a version, the MERGE compares none.
	f2 := newFakeSnowflake(t)
	s2, _ := newSink(t, map[string]any{"dsn": f2.dsn("pw"), "table": "labels", "key": "label_id", "version": "seq"})
	if err := s2.Write(ctx, batch(t, nullFields, rows)); err != nil {
		t.Fatal(err)
	}
	if err := s2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	merge = findSQL(f2.sql(), "MERGE INTO")
	if len(merge) != 1 || strings.Contains(merge[0], "WHEN MATCHED AND") || !strings.Contains(merge[0], `ORDER BY "_PIPELINE_SEQ" DESC) = 1`) {
		t.Errorf("MERGE without a version column: %q", merge)
	}

	// The table's column is not a version type.
	f3 := newFakeSnowflake(t)
	f3.tables[`"ANALYTICS"."PUBLIC"."LABELS"`] = [][2]string{{colID, "VARCHAR(16777216)"}, {"LABEL_ID", "VARCHAR(16777216)"}, {"SEQ", "VARCHAR(16777216)"}}
	s3, _ := newSink(t, map[string]any{"dsn": f3.dsn("pw"), "table": "labels", "key": "label_id", "version": "seq"})
	if err := s3.Write(ctx, batch(t, nullFields, rows)); err != nil {
		t.Fatal(err)
	}
	err := s3.Flush(ctx)
	if want := `version "seq": column "SEQ" of table "ANALYTICS"."PUBLIC"."LABELS" is VARCHAR(16777216); a version column must be a timestamp or a number`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("VARCHAR column: %v, want %q", err, want)
	}
	if puts := findSQL(f3.sql(), "PUT "); len(puts) != 0 {
		t.Errorf("loaded despite the error: %q", puts)
	}

	// No record has the field and the table has no column: a misspelt name.
	f4 := newFakeSnowflake(t)
	s4, _ := newSink(t, map[string]any{"dsn": f4.dsn("pw"), "table": "labels", "key": "label_id", "version": "updated"})
	if err := s4.Write(ctx, batch(t, labelFields, `[{"_pipeline_id": "e1", "label_id": "a"}]`)); err != nil {
		t.Fatal(err)
	}
	err = s4.Flush(ctx)
	if want := `version "updated": the records have no such top-level field, and table "ANALYTICS"."PUBLIC"."LABELS" has no column "UPDATED"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("misspelt version: %v, want %q", err, want)
	}
	if puts := findSQL(f4.sql(), "PUT "); len(puts) != 0 {
		t.Errorf("loaded despite the error: %q", puts)
	}
}

func TestVersionTypeErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		attrs map[string]any
		field arrow.Field
		rows  string
		want  string
	}{
		{"string", nil, labelFields[3], `[{"_pipeline_id": "a", "label_id": "a", "updated_at": "2024-05-01T12:00:00Z"}]`,
			`version "UPDATED_AT": field "updated_at" is VARCHAR (utf8); a version must be a timestamp or a number: TIMESTAMP_TZ, NUMBER or FLOAT (a string of times can be declared with types = { "updated_at" = "timestamp" })`},
		{"date", map[string]any{"types": map[string]string{"updated_at": "date"}}, labelFields[3], `[{"_pipeline_id": "a", "label_id": "a", "updated_at": "2024-05-01"}]`,
			`field "updated_at" is DATE (utf8)`},
		{"bool", nil, arrow.Field{Name: "updated_at", Type: arrow.FixedWidthTypes.Boolean, Nullable: true}, `[{"_pipeline_id": "a", "label_id": "a", "updated_at": true}]`,
			`field "updated_at" is BOOLEAN (bool)`},
		{"struct", map[string]any{"flatten": true}, arrow.Field{Name: "updated_at", Type: arrow.StructOf(arrow.Field{Name: "at", Type: arrow.PrimitiveTypes.Int64, Nullable: true}), Nullable: true},
			`[{"_pipeline_id": "a", "label_id": "a", "updated_at": {"at": 1}}]`, `version "UPDATED_AT": field "updated_at" is a struct`},
	} {
		f := newFakeSnowflake(t)
		attrs := map[string]any{"dsn": f.dsn("pw"), "table": "labels", "key": "label_id", "version": "updated_at"}
		for k, v := range tc.attrs {
			attrs[k] = v
		}
		s, _ := newSink(t, attrs)
		err := s.Write(ctx, batch(t, []arrow.Field{labelFields[0], labelFields[1], tc.field}, tc.rows))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// A flattened column of the version's name is not the field.
	f := newFakeSnowflake(t)
	s, _ := newSink(t, map[string]any{"dsn": f.dsn("pw"), "table": "labels", "key": "label_id", "version": "meta_at", "flatten": true})
	meta := arrow.Field{Name: "meta", Type: arrow.StructOf(arrow.Field{Name: "at", Type: arrow.PrimitiveTypes.Int64, Nullable: true}), Nullable: true}
	err := s.Write(ctx, batch(t, []arrow.Field{labelFields[0], labelFields[1], meta}, `[{"_pipeline_id": "a", "label_id": "a", "meta": {"at": 1}}]`))
	if want := `version "META_AT": column "META_AT" holds field "meta.at", not a top-level field`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("flattened: %v, want %q", err, want)
	}
}

func TestVersionConfigureErrors(t *testing.T) {
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"version": "v", "mode": "append"}, `version is for mode = "merge"`},
		{map[string]any{"version": "meta.at"}, `version "meta.at": name a top-level field (a timestamp or a number), not a path`},
		{map[string]any{"version": "_PIPELINE_ID"}, `version "_PIPELINE_ID": _pipeline_* fields are the pipeline's own`},
		{map[string]any{"version": "email", "key": "EMAIL"}, `version "email" is also the key`},
	} {
		attrs := map[string]any{"dsn": "u:p@a/db/s", "table": "t"}
		for k, v := range tc.attrs {
			attrs[k] = v
		}
		s := &Sink{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		err := s.Configure(context.Background(), configJSON(t, attrs))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.attrs, err, tc.want)
		}
	}
}
