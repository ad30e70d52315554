// Package sourcepostgres is the built-in `source "postgres"`: the rows of a
// table or a query, read incrementally by a monotonic cursor column and a
// unique key, in PostgreSQL's binary format straight into Arrow builders.
//
// A run reads one snapshot: it opens a REPEATABLE READ, READ ONLY
// transaction and streams one query,
//
//	SELECT * FROM <table or (query)> WHERE cursor IS NOT NULL AND key IS NOT NULL
//	  AND (cursor, key) > ($1, $2) ORDER BY cursor, key
//
// cutting the rows into batches as they arrive. Each batch's position is the
// (cursor, key) of its last row, so the next run, or a run resumed after a
// crash at any batch boundary, starts exactly after it: rows that share a
// cursor value are ordered by key, never skipped nor read twice.
package sourcepostgres

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/pgdsn"
)

// Version is the plugin's version.
const Version = "0.1.0"

const (
	defaultBatchRows = 8192
	// batchBytes also cuts a batch: at 8 MiB of binary row data.
	batchBytes = 8 << 20
	// sampleRows is how many rows Schema reads to infer the fields of json
	// columns with json = "struct".
	sampleRows = 2000
	// defaultConnectTimeout bounds a connection attempt when the DSN sets
	// no connect_timeout, so that validate does not hang on a dead host.
	defaultConnectTimeout = 15 * time.Second
	readBuffer            = 256 << 10
)

// JSON modes.
const (
	JSONRaw    = "raw"
	JSONStruct = "struct"
)

var (
	_ sdk.Source          = (*Source)(nil)
	_ sdk.SchemaSource    = (*Source)(nil)
	_ sdk.Partitioner     = (*Source)(nil)
	_ sdk.PartitionReader = (*Source)(nil)
)

type config struct {
	DSN       string `json:"dsn"`
	Table     string `json:"table"`
	Query     string `json:"query"`
	Cursor    string `json:"cursor"`
	Key       string `json:"key"`
	JSON      string `json:"json"`
	BatchRows int    `json:"batch_rows"`
	Lag       string `json:"lag"`
	// Partitions splits the rows by a hash of the key (serve --cluster).
	Partitions int `json:"partitions"`
}

// Source reads a PostgreSQL table or query.
type Source struct {
	cfg     config
	name    string
	pgcfg   *pgx.ConnConfig
	secrets []string
	// from is what the SELECT reads: a quoted table, or the query as a
	// subquery.
	from string
	// origin names the input in record ids: the table as written, or
	// "query".
	origin string
	// lag leaves rows whose cursor is that close to now for a later run.
	lag time.Duration
}

// Info describes the plugin.
func (s *Source) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSource,
		Type:        "postgres",
		Version:     Version,
		Description: "Reads a PostgreSQL table or query incrementally: the rows after the last (cursor, key) read, in one REPEATABLE READ snapshot, in the binary protocol.",
		Config: []sdk.Attribute{
			{Name: "dsn", Type: sdk.String, Description: `Connection string, "postgres://user@host:5432/db?sslmode=disable" or "host=... dbname=..."; default: the standard PG* environment (PGHOST, PGUSER, PGPASSWORD, PGDATABASE, ...). Never shown in errors.`},
			{Name: "table", Type: sdk.String, Default: "", Description: `The table (or view) to read, "table" or "schema.table", names exactly as created (case-sensitive). Either table or query.`},
			{Name: "query", Type: sdk.String, Default: "", Description: `A SELECT whose rows to read, without ORDER BY or LIMIT (the source orders the rows by cursor and key and cuts them into batches itself); its columns must include cursor and key. Either table or query.`},
			{Name: "cursor", Type: sdk.String, Required: true, Description: "A column that only grows as rows are added or changed: a timestamp, timestamptz, date or number (e.g. updated_at). Rows are read in (cursor, key) order."},
			{Name: "key", Type: sdk.String, Required: true, Description: "A unique column (e.g. id) that orders rows sharing a cursor value: an integer, numeric, text, uuid, date or timestamp."},
			{Name: "json", Type: sdk.String, Default: JSONRaw, Description: `json and jsonb columns: "raw" keeps each value as its JSON text (sinks write it verbatim); "struct" decodes values into nested fields, as source "file" does with JSONL.`},
			{Name: "batch_rows", Type: sdk.Number, Default: defaultBatchRows, Description: "Most rows per batch (batches are also cut at 8 MiB); each batch's end is a position a later run resumes from."},
			{Name: "partitions", Type: sdk.Number, Default: 0, Description: "For pipeline serve --cluster: split the rows into this many partitions by a hash of the key, each read by one worker at a time with a position of its own (0 or 1: one partition; at most 1024)."},
			{Name: "lag", Type: sdk.Duration, Description: `With a timestamptz or timestamp cursor: read only rows whose cursor is at least this old (e.g. "1m"), so that a transaction that commits late with an earlier cursor value is not skipped. Default: no lag.`},
		},
	}
}

// Configure checks the block and parses the connection settings. It does no
// I/O: Schema and Read connect.
func (s *Source) Configure(_ context.Context, cfg sdk.Config) error {
	s.cfg = config{}
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	c := &s.cfg
	s.name = cfg.Name
	s.secrets = nil
	if c.DSN != "" {
		s.secrets = append(s.secrets, c.DSN)
	}
	if c.Partitions < 0 || c.Partitions > maxPartitions {
		return fmt.Errorf("partitions: %d is not between 0 and %d", c.Partitions, maxPartitions)
	}
	switch {
	case c.Table != "" && c.Query != "":
		return errors.New("set table or query, not both")
	case c.Table == "" && c.Query == "":
		return errors.New(`set table ("schema.table") or query ("SELECT … FROM …")`)
	case c.Table != "":
		parts, err := parseTable(c.Table)
		if err != nil {
			return err
		}
		s.from, s.origin = pgx.Identifier(parts).Sanitize(), c.Table
	default:
		q, err := cleanQuery(c.Query)
		if err != nil {
			return err
		}
		s.from, s.origin = "("+q+"\n) AS _pipeline_q", "query"
	}
	if strings.TrimSpace(c.Cursor) == "" {
		return errors.New("cursor must name a column, e.g. updated_at")
	}
	if strings.TrimSpace(c.Key) == "" {
		return errors.New("key must name a unique column, e.g. id")
	}
	if c.Cursor == c.Key {
		return fmt.Errorf("cursor and key are both %q: the key is a second, unique column that orders rows sharing a cursor value", c.Key)
	}
	switch c.JSON {
	case "":
		c.JSON = JSONRaw
	case JSONRaw, JSONStruct:
	default:
		return fmt.Errorf(`json must be "raw" or "struct", not %q`, c.JSON)
	}
	if c.BatchRows < 1 {
		return fmt.Errorf("batch_rows must be at least 1, not %d", c.BatchRows)
	}
	s.lag = 0
	if c.Lag != "" {
		lag, err := time.ParseDuration(c.Lag)
		if err != nil || lag < 0 {
			return fmt.Errorf(`lag %q: want a duration such as "30s" or "5m"`, c.Lag)
		}
		s.lag = lag
	}
	pgcfg, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		return pgdsn.Error(c.DSN, err)
	}
	if pgcfg.Password != "" {
		s.secrets = append(s.secrets, pgcfg.Password)
	}
	if pgcfg.ConnectTimeout == 0 {
		pgcfg.ConnectTimeout = defaultConnectTimeout
	}
	// pgx reads the socket 8 KiB at a time, a few rows a read; a larger
	// buffer in front of it takes what the server has sent in one read.
	pgcfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		return pgproto3.NewFrontend(bufio.NewReaderSize(r, readBuffer), w)
	}
	s.pgcfg = pgcfg
	return nil
}

// redact replaces the dsn and password in err's text.
func (s *Source) redact(err error) error { return sdk.Redact(err, s.secrets...) }

func (s *Source) connect(ctx context.Context) (*pgx.Conn, error) {
	if s.pgcfg == nil {
		return nil, errors.New("not configured")
	}
	conn, err := pgx.ConnectConfig(ctx, s.pgcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.Close(ctx)
}

// what names the input in messages.
func (s *Source) what() string {
	if s.cfg.Table != "" {
		return "table " + s.cfg.Table
	}
	return "the query"
}

// shape is what describing the query found: its columns and types, and
// where the cursor, the key and a row_id are.
type shape struct {
	fields []pgconn.FieldDescription
	types  []*pgType
	cursor int
	key    int
	rowID  int // a text column named row_id, else -1
}

func (s *Source) baseSQL() string { return "SELECT * FROM " + s.from }

// readSQL is the query of a run and its parameters: it resumes after the
// (cursor, key) after when set, and stops short of the lag.
func (s *Source) readSQL(sh *shape, after []string, part int) (string, [][]byte, []uint32) {
	c, k := quoteIdent(s.cfg.Cursor), quoteIdent(s.cfg.Key)
	q := s.baseSQL() + "\nWHERE " + c + " IS NOT NULL AND " + k + " IS NOT NULL"
	if part >= 0 {
		// hashtext is int4: shifted to be non-negative before the mod.
		q += " AND mod(hashtext(" + k + "::text)::bigint + 2147483648, " + strconv.Itoa(s.cfg.Partitions) + ") = " + strconv.Itoa(part)
	}
	var params [][]byte
	var oids []uint32
	if after != nil {
		q += " AND (" + c + ", " + k + ") > ($1, $2)"
		params = append(params, []byte(after[0]), []byte(after[1]))
		oids = append(oids, sh.fields[sh.cursor].DataTypeOID, sh.fields[sh.key].DataTypeOID)
	}
	if s.lag > 0 {
		// now() is the transaction's start: the same for every batch.
		now := "now()"
		if sh.types[sh.cursor].kind == kTimestamp {
			now = "LOCALTIMESTAMP"
		}
		params = append(params, []byte(strconv.FormatInt(s.lag.Microseconds(), 10)+" microseconds"))
		oids = append(oids, pgtype.IntervalOID)
		q += " AND " + c + " <= " + now + " - $" + strconv.Itoa(len(params)) + "::interval"
	}
	return q + "\nORDER BY " + c + ", " + k, params, oids
}

// describe asks the server for the columns of the query (without running
// it) and maps their types.
func (s *Source) describe(ctx context.Context, conn *pgx.Conn) (*shape, error) {
	sd, err := conn.PgConn().Prepare(ctx, "", s.baseSQL(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.what(), err)
	}
	sh := &shape{fields: sd.Fields, cursor: -1, key: -1, rowID: -1}
	seen := map[string]bool{}
	var names []string
	var unmapped []string
	for i, fd := range sd.Fields {
		switch {
		case seen[fd.Name]:
			return nil, fmt.Errorf("%s: column %q appears twice; give the columns distinct names (AS)", s.what(), fd.Name)
		case sdk.IsReserved(fd.Name):
			return nil, fmt.Errorf("%s: column %q: names starting with %s are the pipeline's own; rename it in a query (SELECT %s AS …)", s.what(), fd.Name, sdk.ReservedPrefix, quoteIdent(fd.Name))
		}
		seen[fd.Name] = true
		names = append(names, fd.Name)
		t, err := resolveType(ctx, conn, fd.DataTypeOID, fd.TypeModifier)
		if errors.Is(err, errUnmapped) {
			unmapped = append(unmapped, describeError(ctx, conn, fd).Error())
			sh.types = append(sh.types, nil)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: column %q: %w", s.what(), fd.Name, err)
		}
		sh.types = append(sh.types, t)
		if fd.Name == s.cfg.Cursor {
			sh.cursor = i
		}
		if fd.Name == s.cfg.Key {
			sh.key = i
		}
		if fd.Name == "row_id" && t.kind == kText {
			sh.rowID = i
		}
	}
	if len(unmapped) > 0 {
		return nil, fmt.Errorf("%s: %s", s.what(), strings.Join(unmapped, "; "))
	}
	for _, c := range []struct {
		attr, name string
		idx        int
		ok         func(*pgType) bool
		want       string
	}{
		{"cursor", s.cfg.Cursor, sh.cursor, (*pgType).cursorOK, "a timestamptz, timestamp, date, integer, numeric or float column"},
		{"key", s.cfg.Key, sh.key, (*pgType).keyOK, "an integer, numeric, text, uuid, date or timestamp column"},
	} {
		if c.idx < 0 {
			return nil, fmt.Errorf("%s %q is not a column of %s (its columns: %s)", c.attr, c.name, s.what(), strings.Join(names, ", "))
		}
		if !c.ok(sh.types[c.idx]) {
			return nil, fmt.Errorf("%s %q has type %s; the %s must be %s", c.attr, c.name, typeName(ctx, conn, sd.Fields[c.idx]), c.attr, c.want)
		}
	}
	if k := sh.types[sh.cursor].kind; s.lag > 0 && k != kTimestamptz && k != kTimestamp {
		return nil, fmt.Errorf("lag is for a timestamptz or timestamp cursor; cursor %q has type %s", s.cfg.Cursor, typeName(ctx, conn, sd.Fields[sh.cursor]))
	}
	return sh, nil
}

func typeName(ctx context.Context, conn *pgx.Conn, fd pgconn.FieldDescription) string {
	var te *typeError
	if errors.As(describeError(ctx, conn, fd), &te) {
		return te.typ
	}
	return "oid " + strconv.FormatUint(uint64(fd.DataTypeOID), 10)
}

// warnNullable logs when the cursor or key column of a table may be NULL:
// such rows are never read.
func (s *Source) warnNullable(ctx context.Context, conn *pgx.Conn, sh *shape) {
	for _, i := range []int{sh.cursor, sh.key} {
		fd := sh.fields[i]
		if fd.TableOID == 0 {
			continue
		}
		var notNull bool
		err := conn.QueryRow(ctx, `SELECT attnotnull FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum = $2`, fd.TableOID, int16(fd.TableAttributeNumber)).Scan(&notNull)
		if err == nil && !notNull {
			sdk.Logger().Warn("the column may be NULL; rows where it is NULL are never read (declare it NOT NULL)", "source", s.name, "column", fd.Name)
		}
	}
}

// Schema describes the query: the columns' Arrow types, exactly. With
// json = "struct", the fields of json columns are inferred from the first
// rows, and the schema is marked as a sample.
func (s *Source) Schema(ctx context.Context) (*arrow.Schema, error) {
	schema, err := s.schema(ctx)
	return schema, s.redact(err)
}

func (s *Source) schema(ctx context.Context) (*arrow.Schema, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	sh, err := s.describe(ctx, conn)
	if err != nil {
		return nil, err
	}
	b := newBatcher(s, sh)
	defer b.release()
	if len(b.jsonCols) == 0 {
		return b.schema, nil
	}
	rr := conn.PgConn().ExecParams(ctx, s.baseSQL()+"\nLIMIT "+strconv.Itoa(sampleRows), nil, nil, nil, []int16{1})
	for rr.NextRow() {
		if err := b.add(rr.Values()); err != nil {
			rr.Close()
			return nil, err
		}
	}
	if _, err := rr.Close(); err != nil {
		return nil, fmt.Errorf("%s: %w", s.what(), err)
	}
	rec, _, err := b.flush()
	if err != nil {
		return nil, err
	}
	schema := b.structSchema(b.dec.Schema())
	if rec != nil {
		rec.Release()
	}
	return sdk.SampledSchema(schema, fmt.Sprintf("the json values of the first %d rows", sampleRows)), nil
}

// position is the checkpoint: the (cursor, key) of the last row emitted,
// as text PostgreSQL parses back to the same values.
type position struct {
	Columns []string `json:"columns"` // cursor, key
	After   []string `json:"after"`
}

// Read reads the rows after from's (cursor, key), or every row when from is
// nil (the first run, or --full-refresh).
func (s *Source) Read(ctx context.Context, from []byte, emit sdk.Emitter) error {
	err := s.read(ctx, from, emit, -1)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return s.redact(err)
}

// maxPartitions bounds the partitions attribute.
const maxPartitions = 1024

// Partitions names the key-hash partitions ("key-hash-03-of-16"), or says
// the source is one partition when partitions is 0 or 1.
func (s *Source) Partitions(context.Context) ([]string, error) {
	n := s.cfg.Partitions
	if n <= 1 {
		return nil, sdk.ErrNotPartitioned
	}
	out := make([]string, n)
	for i := range n {
		out[i] = partitionName(i, n)
	}
	return out, nil
}

func partitionName(i, n int) string {
	w := len(strconv.Itoa(n - 1))
	return fmt.Sprintf("key-hash-%0*d-of-%d", w, i, n)
}

// ReadPartition reads the rows of one key-hash partition after from's
// (cursor, key); its positions are the same kind as Read's, of that
// partition's rows alone. A name that is not one of Partitions' reads
// nothing.
func (s *Source) ReadPartition(ctx context.Context, partition string, from []byte, emit sdk.Emitter) error {
	part := -1
	for i := range s.cfg.Partitions {
		if partitionName(i, s.cfg.Partitions) == partition {
			part = i
		}
	}
	if part < 0 {
		sdk.Logger().Warn("no such partition (the partitions attribute changed?): nothing read", "partition", partition)
		return nil
	}
	err := s.read(ctx, from, emit, part)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return s.redact(err)
}

// read reads the rows after from, of one key-hash partition when part is
// not negative.
func (s *Source) read(ctx context.Context, from []byte, emit sdk.Emitter, part int) error {
	var after []string
	if len(from) > 0 {
		var p position
		if err := json.Unmarshal(from, &p); err != nil || len(p.Columns) != 2 || len(p.After) != 2 {
			return errors.New("the checkpoint is not one this plugin wrote; reset it with `pipeline state reset`")
		}
		if p.Columns[0] != s.cfg.Cursor || p.Columns[1] != s.cfg.Key {
			return fmt.Errorf("the checkpoint is a position in (cursor %q, key %q), but the block reads by (cursor %q, key %q): run with --full-refresh to read everything again, or `pipeline state reset`",
				p.Columns[0], p.Columns[1], s.cfg.Cursor, s.cfg.Key)
		}
		after = p.After
	}
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	// One snapshot for the whole run: every batch is cut from the same
	// consistent view, whatever commits meanwhile.
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	sh, err := s.describe(ctx, conn)
	if err != nil {
		return err
	}
	s.warnNullable(ctx, conn, sh)

	b := newBatcher(s, sh)
	defer b.release()
	sql, params, oids := s.readSQL(sh, after, part)
	rr := conn.PgConn().ExecParams(ctx, sql, params, oids, nil, []int16{1})
	if fds := rr.FieldDescriptions(); fds != nil && !sameColumns(fds, sh.fields) {
		return fmt.Errorf("the columns of %s changed while the run started; run again", s.what())
	}
	for rr.NextRow() {
		if err := b.add(rr.Values()); err != nil {
			return err // the deferred close drops the rest of the stream
		}
		if b.rows >= s.cfg.BatchRows || b.bytes >= batchBytes {
			if err := b.emit(emit); err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	if _, err := rr.Close(); err != nil {
		return fmt.Errorf("%s: %w", s.what(), err)
	}
	if err := b.emit(emit); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// sameColumns reports whether the query returns the columns it was
// described with.
func sameColumns(a, b []pgconn.FieldDescription) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].DataTypeOID != b[i].DataTypeOID || a[i].TypeModifier != b[i].TypeModifier {
			return false
		}
	}
	return true
}

// batcher turns rows into batches.
type batcher struct {
	s      *Source
	sh     *shape
	cols   []column
	schema *arrow.Schema // json = "raw", or no json columns

	// json = "struct": the json columns of each row, as one JSON object,
	// go through one decoder; its schema only grows.
	jsonCols    []int
	dec         *arrowjson.Decoder
	line        []byte
	lastDec     *arrow.Schema
	lastDecOut  *arrow.Schema
	lastDecCols []int // per column: the decoder's field index, -1

	rows, bytes int

	idPrefix []byte
	ids      []byte
	idEnds   []int
	rowIDs   int // rows whose id is their row_id

	cursorT, keyT *pgType
	lastCursor    []byte
	lastKey       []byte
}

func newBatcher(s *Source, sh *shape) *batcher {
	b := &batcher{s: s, sh: sh, cursorT: sh.types[sh.cursor], keyT: sh.types[sh.key]}
	b.idPrefix = []byte(sdk.IDPrefix(s.name, s.origin))
	fields := make([]arrow.Field, len(sh.fields))
	for i, fd := range sh.fields {
		t := sh.types[i]
		c := column{name: fd.Name, typ: t}
		fields[i] = t.field(fd.Name)
		if t.isJSON() && s.cfg.JSON == JSONStruct {
			c.structJSON = true
			b.jsonCols = append(b.jsonCols, i)
		} else {
			c.buf = newColBuf(t)
		}
		b.cols = append(b.cols, c)
	}
	if len(b.jsonCols) > 0 {
		b.dec = arrowjson.NewDecoder(arrowjson.Options{})
	} else {
		b.schema = arrow.NewSchema(fields, nil)
	}
	return b
}

func (b *batcher) release() {
	if b.dec != nil {
		b.dec.Release()
	}
}

// add appends one row, values in binary format (nil: NULL).
func (b *batcher) add(vals [][]byte) error {
	if len(vals) != len(b.cols) {
		return fmt.Errorf("a row of %d columns, want %d", len(vals), len(b.cols))
	}
	for i := range b.cols {
		c := &b.cols[i]
		v := vals[i]
		b.bytes += len(v)
		if c.buf == nil {
			continue
		}
		if v == nil {
			c.buf.addNull()
			continue
		}
		if err := c.buf.add(v); err != nil {
			return b.rowError(vals, c.name, err)
		}
	}
	if b.dec != nil {
		if err := b.addJSON(vals); err != nil {
			return err
		}
	}
	b.lastCursor = append(b.lastCursor[:0], vals[b.sh.cursor]...)
	b.lastKey = append(b.lastKey[:0], vals[b.sh.key]...)
	if r := b.sh.rowID; r >= 0 && len(vals[r]) > 0 {
		b.ids = append(b.ids, vals[r]...)
		b.rowIDs++
	} else {
		b.ids = append(b.ids, b.idPrefix...)
		var err error
		if b.ids, err = appendText(b.keyT, b.ids, vals[b.sh.key]); err != nil {
			return b.rowError(vals, b.s.cfg.Key, err)
		}
	}
	b.idEnds = append(b.idEnds, len(b.ids))
	b.rows++
	return nil
}

// addJSON appends the row's json columns to the decoder as one object
// keyed by column name; a NULL column is left out (null, and not listed as
// an explicit JSON null, which a JSON 'null' value is).
func (b *batcher) addJSON(vals [][]byte) error {
	line := append(b.line[:0], '{')
	first := true
	for _, i := range b.jsonCols {
		v := vals[i]
		if v == nil {
			continue
		}
		text, err := jsonText(v, b.cols[i].typ.kind == kJSONB)
		if err != nil {
			return b.rowError(vals, b.cols[i].name, err)
		}
		if !first {
			line = append(line, ',')
		}
		first = false
		line = arrowjson.AppendString(line, b.cols[i].name)
		line = append(line, ':')
		line = append(line, text...)
	}
	line = append(line, '}')
	b.line = line
	if err := b.dec.Append(line); err != nil {
		return b.rowError(vals, "", err)
	}
	return nil
}

// rowError names the row by its key and the column at fault.
func (b *batcher) rowError(vals [][]byte, col string, err error) error {
	key, kerr := appendText(b.keyT, nil, vals[b.sh.key])
	at := fmt.Sprintf("%s, row %s = %s", b.s.what(), b.s.cfg.Key, key)
	if kerr != nil {
		at = b.s.what()
	}
	if col == "" {
		return fmt.Errorf("%s: %v", at, err)
	}
	return fmt.Errorf("%s, column %q: %v", at, col, err)
}

// flush builds the batch of the rows added since the last flush, with its
// record ids; nil when there are none.
func (b *batcher) flush() (arrow.RecordBatch, []string, error) {
	if b.rows == 0 {
		return nil, nil, nil
	}
	n := b.rows
	cols := make([]arrow.Array, 0, len(b.cols)+1)
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	schema := b.schema
	build := func(c column) arrow.Array {
		d := c.buf.build()
		defer d.Release()
		return array.MakeFromData(d)
	}
	if b.dec == nil {
		for _, c := range b.cols {
			cols = append(cols, build(c))
		}
	} else {
		dec := b.dec.Flush()
		if dec == nil || int(dec.NumRows()) != n {
			return nil, nil, errors.New("internal error: the json decoder lost rows")
		}
		defer dec.Release()
		schema = b.structSchema(dec.Schema())
		for i, c := range b.cols {
			switch {
			case c.buf != nil:
				cols = append(cols, build(c))
			case b.lastDecCols[i] >= 0:
				a := dec.Column(b.lastDecCols[i])
				a.Retain()
				cols = append(cols, a)
			default:
				cols = append(cols, array.NewNull(n))
			}
		}
		if idx := dec.Schema().FieldIndices(sdk.NullsColumn); len(idx) > 0 {
			a := dec.Column(idx[0])
			a.Retain()
			cols = append(cols, a)
		}
	}
	rec := array.NewRecordBatch(schema, cols, int64(n))
	var ids []string
	if b.rowIDs < n {
		// When every row has a row_id, the engine makes the same ids from
		// it; they need not be sent.
		all := string(b.ids)
		ids = make([]string, n)
		start := 0
		for i, end := range b.idEnds {
			ids[i] = all[start:end]
			start = end
		}
	}
	b.rows, b.bytes, b.rowIDs = 0, 0, 0
	b.ids, b.idEnds = b.ids[:0], b.idEnds[:0]
	return rec, ids, nil
}

// structSchema is the schema of a batch whose json columns come from the
// decoder's schema dec: those it has not seen yet are null.
func (b *batcher) structSchema(dec *arrow.Schema) *arrow.Schema {
	if dec == b.lastDec && b.lastDecOut != nil {
		return b.lastDecOut
	}
	fields := make([]arrow.Field, 0, len(b.cols)+1)
	b.lastDecCols = make([]int, len(b.cols))
	for i, c := range b.cols {
		b.lastDecCols[i] = -1
		if c.buf != nil {
			fields = append(fields, c.typ.field(c.name))
			continue
		}
		if idx := dec.FieldIndices(c.name); len(idx) > 0 {
			b.lastDecCols[i] = idx[0]
			fields = append(fields, dec.Field(idx[0]))
		} else {
			fields = append(fields, arrow.Field{Name: c.name, Type: arrow.Null, Nullable: true})
		}
	}
	if idx := dec.FieldIndices(sdk.NullsColumn); len(idx) > 0 {
		fields = append(fields, dec.Field(idx[0]))
	}
	b.lastDec, b.lastDecOut = dec, arrow.NewSchema(fields, nil)
	return b.lastDecOut
}

// emit sends the rows added so far as one batch, with the position of its
// last row.
func (b *batcher) emit(emit sdk.Emitter) error {
	rec, ids, err := b.flush()
	if err != nil || rec == nil {
		return err
	}
	pos, err := b.position()
	if err != nil {
		rec.Release()
		return err
	}
	return emit.EmitAt(rec, pos, sdk.Origin{IDs: ids})
}

func (b *batcher) position() ([]byte, error) {
	c, err := appendText(b.cursorT, nil, b.lastCursor)
	if err != nil {
		return nil, fmt.Errorf("cursor %q: %w", b.s.cfg.Cursor, err)
	}
	k, err := appendText(b.keyT, nil, b.lastKey)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", b.s.cfg.Key, err)
	}
	if !utf8.Valid(k) {
		// JSON would replace the bad bytes, and the position would not
		// name this row any more (a SQL_ASCII database).
		return nil, fmt.Errorf("key %q: the value %q is not valid UTF-8, so no position can name it; use a key of another type or convert it in a query", b.s.cfg.Key, k)
	}
	return json.Marshal(position{Columns: []string{b.s.cfg.Cursor, b.s.cfg.Key}, After: []string{string(c), string(k)}})
}
