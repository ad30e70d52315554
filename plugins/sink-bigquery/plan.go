package sinkbigquery

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"cloud.google.com/go/bigquery"
)

// tableRef names a table.
type tableRef struct {
	Project string `json:"project"`
	Dataset string `json:"dataset"`
	Table   string `json:"table"`
}

// SQL quotes the table for Standard SQL.
func (t tableRef) SQL() string {
	return "`" + t.Project + "." + t.Dataset + "." + t.Table + "`"
}

func (t tableRef) String() string { return t.Project + "." + t.Dataset + "." + t.Table }

// flushRange identifies one flush: the same sink and records give the same
// job ids, so a retry finds the jobs of the attempt before it.
type flushRange struct {
	Pipeline    string // the sink block's name
	Target      tableRef
	Mode        string
	FullRefresh bool // this flush replaces the table
	FirstID     string
	LastID      string
	Version     string // the version column the MERGE compares, or ""
}

// rangeHash is a hex digest of the range.
func rangeHash(r flushRange) string {
	h := sha256.New()
	parts := []string{"v1", r.Pipeline, r.Target.String(), r.Mode, fmt.Sprint(r.FullRefresh), r.FirstID, r.LastID}
	if r.Version != "" {
		// A MERGE with a version is another job than one without.
		parts = append(parts, "version", r.Version)
	}
	for _, s := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))[:40]
}

// loadPlan is the configuration of a flush's load job.
type loadPlan struct {
	JobID               string          `json:"job_id"`
	Location            string          `json:"location,omitempty"`
	Destination         tableRef        `json:"destination"`
	SourceFormat        string          `json:"source_format"`
	EnableListInference bool            `json:"enable_list_inference"`
	WriteDisposition    string          `json:"write_disposition"`
	CreateDisposition   string          `json:"create_disposition"`
	SchemaUpdateOptions []string        `json:"schema_update_options"`
	Schema              bigquery.Schema `json:"-"`
	// Columns is Schema as "name TYPE" lines, for golden files.
	Columns []string `json:"columns"`
}

func schemaLines(s bigquery.Schema, prefix string) []string {
	var out []string
	for _, f := range s {
		line := prefix + f.Name + " " + string(f.Type)
		if f.Repeated {
			line += " REPEATED"
		}
		out = append(out, line)
		out = append(out, schemaLines(f.Schema, prefix+f.Name+".")...)
	}
	return out
}

// queryPlan is the configuration of a flush's MERGE query job.
type queryPlan struct {
	JobID    string `json:"job_id"`
	Location string `json:"location,omitempty"`
	SQL      string `json:"sql"`
}

// flushPlan is every job of one flush.
type flushPlan struct {
	Hash    string     `json:"hash"`
	Version string     `json:"version,omitempty"` // the version column of the MERGE
	Staging *tableRef  `json:"staging,omitempty"`
	Load    loadPlan   `json:"load"`
	Merge   *queryPlan `json:"merge,omitempty"`
}

// planFlush builds a flush's job configurations. staged is the staging
// schema (data columns, then the id and arrival columns); key is the key's
// column in the target.
func planFlush(r flushRange, location string, staged bigquery.Schema, key string) flushPlan {
	h := rangeHash(r)
	p := flushPlan{Hash: h, Version: r.Version}
	load := loadPlan{
		Location:            location,
		SourceFormat:        string(bigquery.Parquet),
		EnableListInference: true,
		CreateDisposition:   string(bigquery.CreateIfNeeded),
		SchemaUpdateOptions: []string{"ALLOW_FIELD_ADDITION"},
	}
	staging := r.Target
	staging.Table = r.Target.Table + "__pipeline_staging_" + h[:16]
	p.Staging = &staging
	load.JobID = "pipeline_load_" + h
	load.Destination = staging
	load.WriteDisposition = string(bigquery.WriteTruncate)
	load.Schema = staged
	load.Columns = schemaLines(staged, "")
	p.Load = load
	p.Merge = &queryPlan{
		JobID:    "pipeline_merge_" + h,
		Location: location,
		SQL:      mergeSQL(r.Target, staging, staged, key, r.Version, r.FullRefresh),
	}
	if r.Mode == modeAppend {
		p.Merge.JobID = "pipeline_append_" + h
		p.Merge.SQL = insertSQL(r.Target, staging, staged, r.FullRefresh)
	}
	return p
}

// targetSchema is the staging schema as the target holds it: the record id
// as _pipeline_id, without the arrival column.
func targetSchema(staged bigquery.Schema) bigquery.Schema {
	var out bigquery.Schema
	for _, f := range staged {
		switch f.Name {
		case stagingSeqColumn:
			continue
		case stagingIDColumn:
			nf := *f
			nf.Name = idColumn
			out = append(out, &nf)
		default:
			out = append(out, f)
		}
	}
	return out
}

// quoteIdent quotes a column name for Standard SQL.
func quoteIdent(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "\\`") + "`"
}

// mergeSQL returns the statement that upserts the staging table's rows
// into the target on key, the last arrival of each key winning. With a
// version column, of each key's rows the one with the greatest version
// wins (nulls lowest, the last arrival among equals), and it replaces the
// stored row only when the stored version is null or not greater. With
// fullRefresh the target is emptied first, in the same transaction.
func mergeSQL(target, staging tableRef, staged bigquery.Schema, key, version string, fullRefresh bool) string {
	type col struct{ target, source string }
	var cols []col
	for _, f := range staged {
		switch f.Name {
		case stagingSeqColumn:
		case stagingIDColumn:
			cols = append(cols, col{idColumn, stagingIDColumn})
		default:
			cols = append(cols, col{f.Name, f.Name})
		}
	}
	skey := key
	if key == idColumn {
		skey = stagingIDColumn
	}
	var b strings.Builder
	if fullRefresh {
		b.WriteString("BEGIN TRANSACTION;\n")
		fmt.Fprintf(&b, "DELETE FROM %s WHERE TRUE;\n", target.SQL())
	}
	fmt.Fprintf(&b, "MERGE %s T\n", target.SQL())
	order := quoteIdent(stagingSeqColumn) + " DESC"
	matched := "WHEN MATCHED THEN UPDATE SET\n"
	if version != "" {
		v := quoteIdent(version)
		order = v + " DESC NULLS LAST, " + order
		matched = "WHEN MATCHED AND (T." + v + " IS NULL OR S." + v + " >= T." + v + ") THEN UPDATE SET\n"
	}
	fmt.Fprintf(&b, "USING (\n  SELECT * EXCEPT(%s) FROM (\n    SELECT *, ROW_NUMBER() OVER (PARTITION BY %s ORDER BY %s) AS %s\n    FROM %s\n  ) WHERE %s = 1\n) S\n",
		stagingRowNumber, quoteIdent(skey), order, stagingRowNumber, staging.SQL(), stagingRowNumber)
	fmt.Fprintf(&b, "ON T.%s = S.%s\n", quoteIdent(key), quoteIdent(skey))
	b.WriteString(matched)
	first := true
	for _, c := range cols {
		if c.target == key {
			continue
		}
		if !first {
			b.WriteString(",\n")
		}
		first = false
		fmt.Fprintf(&b, "  %s = S.%s", quoteIdent(c.target), quoteIdent(c.source))
	}
	if first { // only the key: nothing to update
		fmt.Fprintf(&b, "  %s = S.%s", quoteIdent(key), quoteIdent(skey))
	}
	b.WriteString("\nWHEN NOT MATCHED THEN INSERT (")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c.target))
	}
	b.WriteString(")\n  VALUES (")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("S." + quoteIdent(c.source))
	}
	b.WriteString(")")
	if fullRefresh {
		b.WriteString(";\nCOMMIT TRANSACTION;")
	}
	b.WriteString("\n")
	return b.String()
}

// insertSQL returns the statement that appends the staging table's rows to
// the target (mode "append"); with fullRefresh the target is emptied first.
func insertSQL(target, staging tableRef, staged bigquery.Schema, fullRefresh bool) string {
	var tcols, scols []string
	for _, f := range staged {
		switch f.Name {
		case stagingSeqColumn:
		case stagingIDColumn:
			tcols = append(tcols, quoteIdent(idColumn))
			scols = append(scols, quoteIdent(stagingIDColumn))
		default:
			tcols = append(tcols, quoteIdent(f.Name))
			scols = append(scols, quoteIdent(f.Name))
		}
	}
	var b strings.Builder
	if fullRefresh {
		b.WriteString("BEGIN TRANSACTION;\n")
		fmt.Fprintf(&b, "DELETE FROM %s WHERE TRUE;\n", target.SQL())
	}
	fmt.Fprintf(&b, "INSERT INTO %s (%s)\nSELECT %s\nFROM %s\nORDER BY %s", target.SQL(), strings.Join(tcols, ", "), strings.Join(scols, ", "), staging.SQL(), quoteIdent(stagingSeqColumn))
	if fullRefresh {
		b.WriteString(";\nCOMMIT TRANSACTION;")
	}
	b.WriteString("\n")
	return b.String()
}
