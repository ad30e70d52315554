package sinksnowflake

import (
	"fmt"
	"strings"
)

// The SQL the sink sends is built by the pure functions of this file, so
// that its text can be kept in golden files (testdata/*.sql).

// Snowflake column types the sink creates.
const (
	typeVarchar     = "VARCHAR"
	typeNumber      = "NUMBER(38,0)"
	typeFloat       = "FLOAT"
	typeBoolean     = "BOOLEAN"
	typeTimestampTZ = "TIMESTAMP_TZ"
	typeDate        = "DATE"
	typeVariant     = "VARIANT"
)

// Bookkeeping columns. They are upper case so that sdk.IsReserved (which
// matches "_pipeline_") does not drop them from the Parquet file.
const (
	colID   = "_PIPELINE_ID"   // the record id, the default key
	colFile = "_PIPELINE_FILE" // staging only: the load file a row came in
	colSeq  = "_PIPELINE_SEQ"  // staging only: the row's arrival order in its file
)

// column is one column of the target table.
type column struct {
	Name  string // Snowflake name, as stored (upper case unless the user quoted it)
	Field string // the record field it comes from (a dotted path when flattened)
	Type  string // Snowflake type, one of the type* constants
}

// stagingType is how a column travels in the Parquet file and sits in the
// staging table: VARIANT as JSON text, timestamps and dates as ISO 8601
// text, converted by the MERGE.
func stagingType(t string) string {
	switch t {
	case typeVariant, typeTimestampTZ, typeDate:
		return typeVarchar
	}
	return t
}

// loadExpr is the expression that turns the staging column into the
// target's type.
func loadExpr(c column, alias string) string {
	return convertExpr(c, alias+"."+quoteIdent(c.Name))
}

// convertExpr turns ref, the staging column of c, into the target's type.
func convertExpr(c column, ref string) string {
	switch c.Type {
	case typeVariant:
		return "PARSE_JSON(" + ref + ")"
	case typeTimestampTZ:
		return "TO_TIMESTAMP_TZ(" + ref + ")"
	case typeDate:
		return "TO_DATE(" + ref + ")"
	}
	return ref
}

// quoteIdent quotes a Snowflake identifier.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// quoteString quotes a Snowflake string literal.
func quoteString(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// tableRef names a table: "DB"."SCHEMA"."TABLE", or shorter when the
// database or schema comes from the connection.
type tableRef struct {
	Database, Schema, Name string
}

func (t tableRef) String() string {
	var parts []string
	if t.Database != "" {
		parts = append(parts, quoteIdent(t.Database))
	}
	if t.Schema != "" {
		parts = append(parts, quoteIdent(t.Schema))
	} else if t.Database != "" {
		parts = append(parts, "") // "DB".."T": the database's default schema
	}
	return strings.Join(append(parts, quoteIdent(t.Name)), ".")
}

// stage is the table's own stage.
func (t tableRef) stage() string {
	var parts []string
	if t.Database != "" {
		parts = append(parts, quoteIdent(t.Database))
	}
	if t.Schema != "" {
		parts = append(parts, quoteIdent(t.Schema))
	} else if t.Database != "" {
		parts = append(parts, "")
	}
	return "@" + strings.Join(append(parts, "%"+quoteIdent(t.Name)), ".")
}

// staging is the transient table a flush is loaded into before the MERGE.
// It lives as long as the target, so that its load history (and with it
// COPY's skipping of files already loaded) survives a failed run.
func (t tableRef) staging() tableRef {
	t.Name += "__PIPELINE_STAGE"
	return t
}

func columnDefs(cols []column, typ func(string) string) string {
	defs := make([]string, len(cols))
	for i, c := range cols {
		defs[i] = "  " + quoteIdent(c.Name) + " " + typ(c.Type)
	}
	return strings.Join(defs, ",\n")
}

func same(t string) string { return t }

// createTableSQL creates the target table (replace: for a full refresh).
func createTableSQL(t tableRef, cols []column, replace bool) string {
	verb := "CREATE TABLE IF NOT EXISTS "
	if replace {
		verb = "CREATE OR REPLACE TABLE "
	}
	return verb + t.String() + " (\n" + columnDefs(cols, same) + "\n)"
}

// stagingColumns are the staging table's columns: the target's, with their
// transport types, then the file and sequence columns.
func stagingColumns(cols []column) []column {
	out := make([]column, 0, len(cols)+2)
	for _, c := range cols {
		c.Type = stagingType(c.Type)
		out = append(out, c)
	}
	return append(out, column{Name: colFile, Type: typeVarchar}, column{Name: colSeq, Type: typeNumber})
}

// createStagingSQL creates the transient staging table.
func createStagingSQL(t tableRef, cols []column, replace bool) string {
	verb := "CREATE TRANSIENT TABLE IF NOT EXISTS "
	if replace {
		verb = "CREATE OR REPLACE TRANSIENT TABLE "
	}
	return verb + t.staging().String() + " (\n" + columnDefs(stagingColumns(cols), same) + "\n)"
}

// describeSQL lists a table's columns (name in column 1, type in column 2).
func describeSQL(t tableRef) string { return "DESCRIBE TABLE " + t.String() }

// addColumnSQL adds a nullable column.
func addColumnSQL(t tableRef, c column) string {
	return "ALTER TABLE " + t.String() + " ADD COLUMN " + quoteIdent(c.Name) + " " + c.Type
}

// clearStagingSQL drops what a failed flush left in staging, except the rows
// of this flush's file (a retry of the same flush finds them there while
// COPY skips the file).
func clearStagingSQL(t tableRef, file string) string {
	return "DELETE FROM " + t.staging().String() + " WHERE " + quoteIdent(colFile) + " <> " + quoteString(file)
}

// streamPath is the local path named in PUT. Nothing is read from it: the
// driver uploads the stream passed with gosnowflake.WithFileStream and only
// keeps the path's base name as the staged file's name.
func streamPath(file string) string { return "/pipeline-stream/" + file }

// putSQL uploads the flush's Parquet file to the staging table's stage.
func putSQL(t tableRef, file string) string {
	return "PUT " + quoteString("file://"+streamPath(file)) + " " + t.staging().stage() + " AUTO_COMPRESS = FALSE SOURCE_COMPRESSION = NONE"
}

// copySQL loads the file into staging. Snowflake's load history makes a
// second COPY of the same file (a retried flush) load nothing.
func copySQL(t tableRef, file string) string {
	return "COPY INTO " + t.staging().String() + "\nFROM " + t.staging().stage() +
		"\nFILES = (" + quoteString(file) + ")" +
		"\nFILE_FORMAT = (TYPE = PARQUET)" +
		"\nMATCH_BY_COLUMN_NAME = CASE_INSENSITIVE" +
		"\nPURGE = TRUE"
}

// versionType reports whether a column of the sink's type t can hold a
// version: a timestamp or a number.
func versionType(t string) bool {
	return t == typeTimestampTZ || t == typeNumber || t == typeFloat
}

// mergeSQL upserts the file's staging rows into the target on key, the
// last arrival of each key winning.
func mergeSQL(t tableRef, cols []column, key, file string) string {
	return versionMergeSQL(t, cols, key, "", file)
}

// versionMergeSQL upserts the file's staging rows into the target on key,
// comparing the version column (none when ""): of each key's rows, the one
// with the greatest version (nulls lowest, the last arrival among equals)
// replaces the stored row when the stored version is null or not greater.
func versionMergeSQL(t tableRef, cols []column, key, version, file string) string {
	var b strings.Builder
	names := make([]string, len(cols))
	var ver column
	for i, c := range cols {
		names[i] = quoteIdent(c.Name)
		if c.Name == version {
			ver = c
		}
	}
	k := quoteIdent(key)
	order := quoteIdent(colSeq) + " DESC"
	matched := "WHEN MATCHED THEN UPDATE SET\n"
	if version != "" {
		v := quoteIdent(version)
		order = convertExpr(ver, v) + " DESC NULLS LAST, " + order
		matched = "WHEN MATCHED AND (t." + v + " IS NULL OR " + loadExpr(ver, "s") + " >= t." + v + ") THEN UPDATE SET\n"
	}
	fmt.Fprintf(&b, "MERGE INTO %s AS t\nUSING (\n  SELECT %s\n  FROM %s\n  WHERE %s = %s\n  QUALIFY ROW_NUMBER() OVER (PARTITION BY %s ORDER BY %s) = 1\n) AS s\nON t.%s = s.%s\n",
		t, strings.Join(names, ", "), t.staging(), quoteIdent(colFile), quoteString(file), k, order, k, k)
	var sets, vals []string
	for _, c := range cols {
		if c.Name != key {
			sets = append(sets, "  "+quoteIdent(c.Name)+" = "+loadExpr(c, "s"))
		}
		vals = append(vals, loadExpr(c, "s"))
	}
	if len(sets) > 0 {
		b.WriteString(matched + strings.Join(sets, ",\n") + "\n")
	}
	fmt.Fprintf(&b, "WHEN NOT MATCHED THEN INSERT (%s)\nVALUES (%s)", strings.Join(names, ", "), strings.Join(vals, ", "))
	return b.String()
}

// insertSQL appends the file's staging rows to the target (mode = "append").
func insertSQL(t tableRef, cols []column, file string) string {
	names := make([]string, len(cols))
	vals := make([]string, len(cols))
	for i, c := range cols {
		names[i] = quoteIdent(c.Name)
		vals[i] = loadExpr(c, "s")
	}
	return fmt.Sprintf("INSERT INTO %s (%s)\nSELECT %s\nFROM %s AS s\nWHERE s.%s = %s\nORDER BY s.%s",
		t, strings.Join(names, ", "), strings.Join(vals, ", "), t.staging(), quoteIdent(colFile), quoteString(file), quoteIdent(colSeq))
}

// doneStagingSQL empties staging of the file once it is in the target, in
// the same transaction.
func doneStagingSQL(t tableRef, file string) string {
	return "DELETE FROM " + t.staging().String() + " WHERE " + quoteIdent(colFile) + " = " + quoteString(file)
}
