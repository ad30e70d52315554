// Package export writes record batches as files: CSV, JSON Lines, a JSON
// array or Parquet, optionally gzip-compressed, into a Store (a local
// directory, a bucket). It is the engine shared by sink "file" and sink
// "s3".
//
// # Formats
//
// A Writer (NewWriter) encodes batches in one format. Reserved columns
// (sdk.ReservedPrefix) are never written.
//
//   - csv: sdk/arrowcsv: a header row, struct fields flattened into dotted
//     columns ("classifications.churn_risk.label"), lists and other nested
//     values as JSON text, nulls as empty fields, RFC 4180 quoting. The
//     header is fixed by an object's first batch; a batch with a column the
//     header lacks starts a new object. With Options.Columns the header is
//     those columns in every object, and other fields are left out.
//   - jsonl: one JSON object per line, by sdk/arrowjson's Encoder: nested
//     structure kept, explicit nulls (sdk.NullsColumn) written as null,
//     absent fields left out.
//   - json: the same objects as one JSON array, one per line:
//     "[\n{...},\n{...}\n]\n" ("[]\n" when empty).
//   - parquet: apache/arrow-go's pqarrow, with the Arrow schema stored in
//     the file (ARROW:schema), structs as groups, lists as lists, zstd by
//     default. Rows are buffered into row groups of RowGroupRows rows (or
//     128 MiB compressed, whichever comes first), so memory is bounded by
//     one row group. A file has one schema, that of its first batch: a
//     later batch that lacks fields, or has ints where the file has
//     float64, is conformed to it (nulls, widened values); a batch with a
//     new field or a conflicting type starts a new object (a lone Writer
//     fails instead, naming the field and both types). Parquet cannot
//     tell explicit nulls from absent values.
//
// # Objects and manifests
//
// An Exporter streams batches into objects named
//
//	<prefix>part-<h><ext>
//
// where h is the first 16 hex digits of the SHA-256 of the object's first
// record's sdk.IDColumn, so a re-run from the same checkpoint writes the same
// keys and replaces its earlier objects rather than adding duplicates.
// (Records without an id use the hash of the first record's JSON text and
// the object's position in its flush instead; a key already used in the
// Exporter's lifetime gets "-2", "-3", ... before the extension.) An object
// is committed when it reaches RollRows rows or RollBytes bytes, when a
// batch does not fit its schema (see Formats), and at every Flush. Batches
// are split at the RollRows boundary, so objects hold exactly RollRows rows
// except the last; byte rolling happens between slices of at most 4096
// rows, so an object may pass RollBytes by up to one slice. With gzip the
// compressor is flushed after each slice when RollBytes is set; with parquet
// RollBytes also makes data pages and dictionaries small (RollBytes/16,
// 4 KiB to 1 MiB) so that the buffered row group's size is visible, and the
// count is an estimate until the file is closed.
//
// Flush then writes a manifest, <prefix>_manifest-<h>.json with h the hash
// of the flush's first record id, listing the flush's objects; it is written
// only after all of them are committed, so a reader that sees a manifest
// sees all its objects. The prefix may hold {{ date }} (2006-01-02), {{ time
// }} (150405), {{ year }}, {{ month }}, {{ day }} and {{ hour }}, rendered
// from the time the flush's first batch arrived.
//
// # Grouping
//
// With GroupBy, Write only gathers records in a Grouper; Flush writes one
// row per group (see Grouper):
//
//	{"<GroupField>": "c1", "message_count": 3, "messages": [{...}, ...]}
//
// Records whose group_by value is null or empty form the group "". In CSV
// the messages list is one cell holding its JSON text. The first record id
// of a grouped object is that of the first arrived record of its first
// group, and its last record id that of the first arrived record of its
// last group.
package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Formats and compressions.
const (
	FormatCSV     = "csv"
	FormatJSONL   = "jsonl"
	FormatJSON    = "json"
	FormatParquet = "parquet"

	CompressionNone = "none"
	CompressionGzip = "gzip"
)

// Defaults.
const (
	// DefaultRowGroupRows is the parquet row group size. 128Ki rows of
	// typical event records (0.5-2 KB of JSON) make row groups of some
	// 10-60 MB compressed: large enough for efficient column scans and
	// statistics in DuckDB, Spark or Athena, small enough to buffer in
	// memory; maxRowGroupBytes caps wide records.
	DefaultRowGroupRows       = 128 * 1024
	DefaultParquetCompression = "zstd"
	DefaultGroupField         = "group"
)

// Options configures an Exporter, and a Writer (Format, Compression,
// ParquetCompression, RowGroupRows).
type Options struct {
	Format             string // "csv" | "jsonl" | "json" | "parquet"
	Compression        string // "" | "none" | "gzip" (csv, jsonl, json only)
	ParquetCompression string // "zstd" (default), "snappy", "gzip", "none"
	RowGroupRows       int64  // parquet row group size; default DefaultRowGroupRows
	GroupBy            bool   // the batches carry _pipeline_tpl_group_by
	OrderBy            bool   // the batches carry _pipeline_tpl_order_by (needs GroupBy)
	GroupField         string // name of the key column of grouped rows; default "group"
	// Columns, for csv, is the header: exactly these columns in this order
	// (dotted names for fields inside structs, as the header flattens
	// them; a struct's own name holds it as JSON). A record's fields that
	// are not listed are left out, absent ones are empty. Nil: the header
	// is the first batch's columns.
	Columns []string
	// Prefix is prepended to every key; it may hold {{ date }}, {{ time }},
	// {{ year }}, {{ month }}, {{ day }} and {{ hour }}.
	Prefix       string
	Location     *time.Location // for Prefix; default UTC
	RollRows     int64          // start a new object after this many rows (0: no limit)
	RollBytes    int64          // ... after this many bytes written to the object (0: no limit)
	RollInterval time.Duration  // FlushDue reports true this long after the first held batch (0: never)
	FullRefresh  bool           // recorded in the manifest
	Now          func() time.Time
}

// normalize applies defaults and checks the format options.
func (o *Options) normalize() error {
	o.Format = strings.ToLower(strings.TrimSpace(o.Format))
	o.Compression = strings.ToLower(strings.TrimSpace(o.Compression))
	o.ParquetCompression = strings.ToLower(strings.TrimSpace(o.ParquetCompression))
	switch o.Format {
	case FormatCSV, FormatJSONL, FormatJSON, FormatParquet:
	case "":
		return errors.New(`format is required: one of "csv", "jsonl", "json", "parquet"`)
	default:
		return fmt.Errorf(`format: unknown format %q: use "csv", "jsonl", "json" or "parquet"`, o.Format)
	}
	switch o.Compression {
	case "", CompressionNone:
		o.Compression = CompressionNone
	case CompressionGzip:
		if o.Format == FormatParquet {
			return errors.New(`compression: "gzip" applies to csv, jsonl and json; parquet compresses its pages itself (parquet_compression: "zstd", "snappy", "gzip" or "none")`)
		}
	default:
		return fmt.Errorf(`compression: unknown compression %q: use "none" or "gzip"`, o.Compression)
	}
	switch o.ParquetCompression {
	case "":
		o.ParquetCompression = DefaultParquetCompression
	case "zstd", "snappy", "gzip", "none":
	case "uncompressed":
		o.ParquetCompression = "none"
	default:
		return fmt.Errorf(`parquet_compression: unknown parquet compression %q: use "zstd", "snappy", "gzip" or "none"`, o.ParquetCompression)
	}
	if o.Columns != nil {
		if o.Format != FormatCSV {
			return fmt.Errorf("columns: applies to csv only, not %s", o.Format)
		}
		if len(o.Columns) == 0 {
			return errors.New("columns: list at least one column, or leave columns out to take them from the first batch")
		}
		seen := make(map[string]bool, len(o.Columns))
		for _, c := range o.Columns {
			switch {
			case strings.TrimSpace(c) == "":
				return errors.New("columns: a column name must not be empty")
			case seen[c]:
				return fmt.Errorf("columns: %q is listed twice", c)
			}
			seen[c] = true
		}
	}
	switch {
	case o.RowGroupRows < 0:
		return fmt.Errorf("export: row group rows must be positive, got %d", o.RowGroupRows)
	case o.RowGroupRows == 0:
		o.RowGroupRows = DefaultRowGroupRows
	}
	return nil
}

// Ext is the file name extension of a format and compression: ".csv",
// ".jsonl.gz", ".parquet", ".json".
func Ext(format, compression string) string {
	ext := "." + strings.ToLower(format)
	if strings.EqualFold(compression, CompressionGzip) && !strings.EqualFold(format, FormatParquet) {
		ext += ".gz"
	}
	return ext
}

// Manifest describes the objects of one flush. It is written as JSON after
// them. Compression is "none" or "gzip", or for parquet the page codec
// ("zstd", "snappy", "gzip", "none"); times are UTC, to the second.
type Manifest struct {
	Key           string           `json:"-"` // where it was written
	Version       int              `json:"version"`
	Format        string           `json:"format"`
	Compression   string           `json:"compression"`
	FullRefresh   bool             `json:"full_refresh"`
	StartedAt     time.Time        `json:"started_at"`
	FinishedAt    time.Time        `json:"finished_at"`
	Rows          int64            `json:"rows"`
	FirstRecordID string           `json:"first_record_id"`
	LastRecordID  string           `json:"last_record_id"`
	Objects       []ManifestObject `json:"objects"`
}

// ManifestObject is one object listed in a Manifest.
type ManifestObject struct {
	Key           string `json:"key"`
	Rows          int64  `json:"rows"`
	Bytes         int64  `json:"bytes"`
	FirstRecordID string `json:"first_record_id"`
	LastRecordID  string `json:"last_record_id"`
}

// ManifestVersion is the version of the manifest's JSON.
const ManifestVersion = 1

// byteRollSlice is the most rows written between two checks of RollBytes.
const byteRollSlice = 4096

// Exporter writes batches into objects of a Store. It implements the
// Write, FlushDue and Flush of an sdk.BufferedSink. It is not safe for
// concurrent use.
type Exporter struct {
	store  Store
	opts   Options
	prefix *prefixTemplate

	// since the last Flush
	held      bool
	started   time.Time
	keyPrefix string
	objects   []ManifestObject
	grouper   *Grouper

	// the open object
	obj     Object
	w       Writer
	cur     ManifestObject
	enc     *arrowjson.Encoder
	used    map[string]bool // keys written in the Exporter's lifetime
	err     error           // sticky: a failed Write or Flush
	written []Manifest
}

// New returns an Exporter writing to store.
func New(store Store, opts Options) (*Exporter, error) {
	if store == nil {
		return nil, errors.New("export: no store")
	}
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	switch {
	case opts.RollRows < 0:
		return nil, fmt.Errorf("export: roll rows must not be negative, got %d", opts.RollRows)
	case opts.RollBytes < 0:
		return nil, fmt.Errorf("export: roll bytes must not be negative, got %d", opts.RollBytes)
	case opts.RollInterval < 0:
		return nil, fmt.Errorf("export: roll interval must not be negative, got %s", opts.RollInterval)
	case opts.OrderBy && !opts.GroupBy:
		return nil, errors.New("order_by orders the messages of a group and needs group_by")
	}
	if opts.GroupField == "" {
		opts.GroupField = DefaultGroupField
	}
	if opts.GroupBy {
		switch {
		case sdk.IsReserved(opts.GroupField):
			return nil, fmt.Errorf("export: group field %q uses the reserved prefix %q", opts.GroupField, sdk.ReservedPrefix)
		case opts.GroupField == MessageCountField || opts.GroupField == MessagesField:
			return nil, fmt.Errorf("export: group field %q clashes with the %q column of grouped rows", opts.GroupField, opts.GroupField)
		}
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p, err := parsePrefix(opts.Prefix)
	if err != nil {
		return nil, err
	}
	e := &Exporter{store: store, opts: opts, prefix: p, used: map[string]bool{}}
	if opts.GroupBy {
		e.grouper = NewGrouper(opts.GroupField, opts.OrderBy)
	}
	return e, nil
}

// Write takes in a batch: it encodes it into the open object, or, with
// GroupBy, holds it until Flush.
func (e *Exporter) Write(ctx context.Context, b sdk.Batch) error {
	if e.err != nil {
		return fmt.Errorf("export: an earlier write failed: %w", e.err)
	}
	if b.Record == nil || b.Len() == 0 {
		return nil
	}
	if !e.held {
		e.held = true
		e.started = e.opts.Now()
		e.keyPrefix = e.prefix.render(e.started.In(e.opts.Location))
	}
	if e.grouper != nil {
		e.grouper.Add(b)
		return nil
	}
	if err := e.write(ctx, b); err != nil {
		return e.fail(ctx, err)
	}
	return nil
}

// fail records err, aborts the open object and returns err.
func (e *Exporter) fail(ctx context.Context, err error) error {
	e.err = err
	e.abort(ctx)
	return err
}

func (e *Exporter) abort(ctx context.Context) error {
	if e.obj == nil {
		return nil
	}
	if e.w != nil {
		_ = e.w.Close()
	}
	err := e.obj.Abort(ctx)
	e.obj, e.w = nil, nil
	if err != nil {
		return fmt.Errorf("export: abort %s: %w", e.cur.Key, err)
	}
	return nil
}

// write encodes b's records into objects, rolling as configured.
func (e *Exporter) write(ctx context.Context, b sdk.Batch) error {
	rec := b.Record
	n := int64(rec.NumRows())
	for off := int64(0); off < n; {
		if e.obj != nil {
			if a, ok := e.w.(schemaAcceptor); ok && !a.accepts(rec.Schema()) {
				if err := e.commit(ctx); err != nil {
					return err
				}
			}
		}
		if e.obj == nil {
			if err := e.open(ctx, b, int(off)); err != nil {
				return err
			}
		}
		take := n - off
		if e.opts.RollRows > 0 {
			take = min(take, e.opts.RollRows-e.cur.Rows)
		}
		if e.opts.RollBytes > 0 {
			take = min(take, byteRollSlice)
		}
		part := rec
		if off > 0 || take < n {
			part = rec.NewSlice(off, off+take)
		}
		err := e.w.Write(part)
		if part != rec {
			part.Release()
		}
		if err != nil {
			return fmt.Errorf("export: write %s (%s): %w", e.cur.Key, e.opts.Format, err)
		}
		e.cur.Rows += take
		e.cur.LastRecordID = b.ID(int(off + take - 1))
		off += take
		if e.opts.RollRows > 0 && e.cur.Rows >= e.opts.RollRows || e.opts.RollBytes > 0 && e.w.Bytes() >= e.opts.RollBytes {
			if err := e.commit(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// open starts an object whose first record is row of b.
func (e *Exporter) open(ctx context.Context, b sdk.Batch, row int) error {
	id := b.ID(row)
	seed := id
	if id == "" {
		if e.enc == nil {
			e.enc = arrowjson.NewEncoder()
		}
		seed = string(e.enc.AppendRow(nil, b.Record, row)) + "#" + strconv.Itoa(len(e.objects))
		e.enc = nil
	}
	key := e.uniqueKey(e.keyPrefix+"part-"+hash16(seed), Ext(e.opts.Format, e.opts.Compression))
	obj, err := e.store.Create(ctx, key)
	if err != nil {
		return fmt.Errorf("export: create %s: %w", key, err)
	}
	w, err := newWriter(obj, &e.opts)
	if err != nil {
		_ = obj.Abort(ctx)
		return fmt.Errorf("export: %s: %w", key, err)
	}
	e.obj, e.w = obj, w
	e.cur = ManifestObject{Key: key, FirstRecordID: id}
	return nil
}

func (e *Exporter) uniqueKey(base, ext string) string {
	key := base + ext
	for i := 2; e.used[key]; i++ {
		key = base + "-" + strconv.Itoa(i) + ext
	}
	e.used[key] = true
	return key
}

func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// commit completes the open object.
func (e *Exporter) commit(ctx context.Context) error {
	if err := e.w.Close(); err != nil {
		return fmt.Errorf("export: finish %s (%s): %w", e.cur.Key, e.opts.Format, err)
	}
	e.cur.Bytes = e.w.Bytes()
	obj := e.obj
	e.obj, e.w = nil, nil
	if err := obj.Commit(ctx); err != nil {
		_ = obj.Abort(ctx)
		return fmt.Errorf("export: commit %s: %w", e.cur.Key, err)
	}
	e.objects = append(e.objects, e.cur)
	return nil
}

// FlushDue reports whether RollInterval has passed since the first batch
// held.
func (e *Exporter) FlushDue(now time.Time) bool {
	return e.held && e.opts.RollInterval > 0 && now.Sub(e.started) >= e.opts.RollInterval
}

// Flush writes what is held (the grouped rows, with GroupBy), commits the
// open object and then writes the manifest of every object since the last
// Flush. With nothing held it does nothing.
func (e *Exporter) Flush(ctx context.Context) error {
	if e.err != nil {
		return fmt.Errorf("export: an earlier write failed: %w", e.err)
	}
	if !e.held {
		return nil
	}
	if err := e.flush(ctx); err != nil {
		return e.fail(ctx, err)
	}
	return nil
}

func (e *Exporter) flush(ctx context.Context) error {
	if e.grouper != nil {
		recs, err := e.grouper.Records(memory.DefaultAllocator)
		if err != nil {
			return fmt.Errorf("export: group records: %w", err)
		}
		for i, rec := range recs {
			err := e.write(ctx, sdk.NewBatch(rec))
			if err != nil {
				for _, r := range recs[i:] {
					r.Release()
				}
				return err
			}
			rec.Release()
		}
	}
	if e.obj != nil {
		if err := e.commit(ctx); err != nil {
			return err
		}
	}
	if len(e.objects) > 0 {
		m := Manifest{
			Version:       ManifestVersion,
			Format:        e.opts.Format,
			Compression:   e.opts.Compression,
			FullRefresh:   e.opts.FullRefresh,
			StartedAt:     e.started.UTC().Truncate(time.Second),
			FinishedAt:    e.opts.Now().UTC().Truncate(time.Second),
			FirstRecordID: e.objects[0].FirstRecordID,
			LastRecordID:  e.objects[len(e.objects)-1].LastRecordID,
			Objects:       e.objects,
		}
		for _, o := range e.objects {
			m.Rows += o.Rows
		}
		if e.opts.Format == FormatParquet {
			m.Compression = e.opts.ParquetCompression
		}
		seed := m.FirstRecordID
		if seed == "" {
			seed = e.objects[0].Key
		}
		m.Key = e.uniqueKey(e.keyPrefix+"_manifest-"+hash16(seed), ".json")
		data, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return fmt.Errorf("export: manifest %s: %w", m.Key, err)
		}
		if err := e.store.Put(ctx, m.Key, append(data, '\n')); err != nil {
			return fmt.Errorf("export: write manifest %s: %w", m.Key, err)
		}
		e.written = append(e.written, m)
	}
	e.held, e.objects = false, nil
	return nil
}

// Close aborts an object left open by a failure and drops what is held.
// It does not flush: call Flush first at the end of a good run.
func (e *Exporter) Close(ctx context.Context) error {
	if e.grouper != nil {
		e.grouper.Reset()
	}
	return e.abort(ctx)
}

// Manifests returns the manifests written so far.
func (e *Exporter) Manifests() []Manifest {
	return append([]Manifest(nil), e.written...)
}

// prefixTemplate is a key prefix with time placeholders.
type prefixTemplate struct {
	parts []prefixPart
}

type prefixPart struct {
	text   string
	layout func(time.Time) string // nil for text
}

var placeholder = regexp.MustCompile(`\{\{\s*([A-Za-z_]*)\s*\}\}`)

var prefixFuncs = map[string]func(time.Time) string{
	"date":  func(t time.Time) string { return t.Format("2006-01-02") },
	"time":  func(t time.Time) string { return t.Format("150405") },
	"year":  func(t time.Time) string { return t.Format("2006") },
	"month": func(t time.Time) string { return t.Format("01") },
	"day":   func(t time.Time) string { return t.Format("02") },
	"hour":  func(t time.Time) string { return t.Format("15") },
}

func parsePrefix(s string) (*prefixTemplate, error) {
	p := &prefixTemplate{}
	last := 0
	for _, m := range placeholder.FindAllStringSubmatchIndex(s, -1) {
		name := s[m[2]:m[3]]
		f := prefixFuncs[name]
		if f == nil {
			return nil, fmt.Errorf("prefix %q: unknown placeholder {{ %s }}: use date, time, year, month, day or hour", s, name)
		}
		p.parts = append(p.parts, prefixPart{text: s[last:m[0]]}, prefixPart{layout: f})
		last = m[1]
	}
	p.parts = append(p.parts, prefixPart{text: s[last:]})
	for _, part := range p.parts {
		if strings.Contains(part.text, "{{") || strings.Contains(part.text, "}}") {
			return nil, fmt.Errorf("prefix %q: unbalanced {{ }}", s)
		}
	}
	return p, nil
}

func (p *prefixTemplate) render(t time.Time) string {
	var b strings.Builder
	for _, part := range p.parts {
		if part.layout != nil {
			b.WriteString(part.layout(t))
		} else {
			b.WriteString(part.text)
		}
	}
	return b.String()
}

var plainPath = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

// GroupField names the key column of grouped rows after a group_by
// expression: its last field when it is a plain path
// ("metadata.conversation_id" → "conversation_id"), else DefaultGroupField.
func GroupField(groupBy string) string {
	src := strings.TrimSpace(groupBy)
	if src == "" || !plainPath.MatchString(src) {
		return DefaultGroupField
	}
	return src[strings.LastIndexByte(src, '.')+1:]
}
