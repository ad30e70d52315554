// Package sinksnowflake is the built-in sink "snowflake": it loads records
// into a Snowflake table, creating and widening the table from the Arrow
// schema, and merges each load on a key so that a retried load does not
// duplicate rows.
//
// Each flush writes the held batches to one Parquet file (sdk/export),
// PUTs it from memory to the stage of a transient staging table under a
// name derived from the flush's first and last record ids, COPYs it into
// the staging table, and MERGEs (or, with mode = "append", INSERTs) the
// staging rows into the target in a transaction.
package sinksnowflake

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/snowflakedb/gosnowflake"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/batching"
	"github.com/pipelinehq/pipeline/sdk/export"
)

// Version is the plugin's version.
const Version = "0.1.0"

// DefaultBatch is what the batch { } block leaves out: a flush (one
// Parquet file, one COPY, one MERGE) at 1,000,000 rows, 64 MiB held or a
// minute, whichever comes first. The converted columns and the Parquet file
// are held too, so the process needs several times the bytes limit.
var DefaultBatch = batching.Limits{Rows: 1_000_000, Bytes: 64 << 20, Interval: time.Minute}

var (
	_ sdk.Sink         = (*Sink)(nil)
	_ sdk.SinkCloser   = (*Sink)(nil)
	_ sdk.BufferedSink = (*Sink)(nil)
)

type config struct {
	DSN            string            `json:"dsn"`
	Account        string            `json:"account"`
	User           string            `json:"user"`
	PrivateKeyPath string            `json:"private_key_path"`
	Password       string            `json:"password"`
	Warehouse      string            `json:"warehouse"`
	Database       string            `json:"database"`
	Schema         string            `json:"schema"`
	Role           string            `json:"role"`
	Table          string            `json:"table"`
	Key            string            `json:"key"`
	Version        string            `json:"version"`
	Mode           string            `json:"mode"`
	Flatten        bool              `json:"flatten"`
	Types          map[string]string `json:"types"`
	Batch          *batching.Config  `json:"batch"`
}

// Modes.
const (
	ModeMerge  = "merge"
	ModeAppend = "append"
)

// Sink loads records into a Snowflake table.
type Sink struct {
	cfg         config
	db          *sql.DB
	table       tableRef
	key         string // key column name
	version     string // version column name, "" without one
	m           mapper
	fullRefresh bool
	secrets     []string
	log         *slog.Logger

	limits batching.Limits

	held      []heldBatch
	heldRows  int64
	heldBytes int64
	firstHeld time.Time

	// What is known of the tables, read on the first flush: column name →
	// type as Snowflake reports it.
	known        bool
	targetCols   map[string]string
	stagingCols  map[string]string
	replacedOnce bool
}

type heldBatch struct {
	cols    []loadCol
	rows    int
	version bool // the records have the version field (perhaps only nulls)
	firstID string
	lastID  string
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "snowflake",
		Version:     Version,
		Description: "Loads records into a Snowflake table through Parquet files PUT to a stage, COPY INTO a staging table and MERGE on a key; creates the table and adds columns for new fields.",
		Config: []sdk.Attribute{
			{Name: "dsn", Type: sdk.String, Description: `A gosnowflake DSN, "user:password@account/database/schema?warehouse=WH&role=ROLE"; instead of account, user and password or private_key_path.`},
			{Name: "account", Type: sdk.String, Description: `Account identifier, e.g. "myorg-myaccount".`},
			{Name: "user", Type: sdk.String, Description: "User to log in as."},
			{Name: "private_key_path", Type: sdk.String, Description: "PEM file of the user's unencrypted RSA private key (PKCS#8 or PKCS#1), for key-pair authentication."},
			{Name: "password", Type: sdk.String, Description: "Password, when not using private_key_path."},
			{Name: "warehouse", Type: sdk.String, Description: "Warehouse that runs the COPY and MERGE (default: the user's)."},
			{Name: "database", Type: sdk.String, Description: "Database of the table (default: the DSN's or the user's)."},
			{Name: "schema", Type: sdk.String, Description: "Schema of the table (default: the DSN's or the user's)."},
			{Name: "role", Type: sdk.String, Description: "Role to use (default: the user's)."},
			{Name: "table", Type: sdk.String, Required: true, Description: `Table to load; created on the first load. Unquoted names are upper-cased as in SQL; write "\"MixedCase\"" to keep the case.`},
			{Name: "key", Type: sdk.String, Default: colID, Description: `Field the MERGE matches rows on (a dotted path when flatten = true). Default: the record id, kept in column _PIPELINE_ID.`},
			{Name: "version", Type: sdk.String, Description: `A top-level timestamp or number field, e.g. "updated_at" (mode "merge"): a row replaces the stored row of its key only when its version is greater than or equal to the stored one, so late, out-of-order events never overwrite newer ones; within a load the greatest version of a key wins. A null version is older than any value. Default: every load overwrites.`},
			{Name: "mode", Type: sdk.String, Default: ModeMerge, Description: `"merge": update the row with the same key, else insert; "append": insert every record.`},
			{Name: "flatten", Type: sdk.Bool, Default: false, Description: "Load struct fields as one column per leaf (ADDRESS_CITY) instead of a VARIANT column."},
			{Name: "types", Type: sdk.MapOf(sdk.String), Description: `Column types for fields that the records cannot tell: { created_at = "timestamp" } (TIMESTAMP_TZ), "date", "variant" (a string holding JSON) or "string".`},
			batching.Attribute(DefaultBatch, "When to load, whichever comes first (and at the end of the run); a batch is acked once its load is committed. The converted columns and the Parquet file are held too: the process needs several times bytes."),
		},
	}
}

// Configure checks the block and prepares the connection. It does not
// connect: the first flush does.
func (s *Sink) Configure(ctx context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	c := &s.cfg
	if s.log == nil {
		s.log = sdk.Logger()
	}
	s.fullRefresh = cfg.FullRefresh
	s.secrets = nil
	for _, v := range []string{c.DSN, c.Password} {
		if v != "" {
			s.secrets = append(s.secrets, v)
		}
	}
	sfCfg, err := s.driverConfig()
	if err != nil {
		return s.redact(err)
	}
	if sfCfg.Password != "" {
		s.secrets = append(s.secrets, sfCfg.Password)
	}

	name, err := ident(c.Table)
	if err != nil {
		return fmt.Errorf("table %q: %v", c.Table, err)
	}
	if name == "" {
		return errors.New("table must not be empty")
	}
	s.table = tableRef{Name: name}
	if s.table.Database, err = ident(sfCfg.Database); err != nil {
		return fmt.Errorf("database %q: %v", sfCfg.Database, err)
	}
	if s.table.Schema, err = ident(sfCfg.Schema); err != nil {
		return fmt.Errorf("schema %q: %v", sfCfg.Schema, err)
	}

	switch c.Mode {
	case "", ModeMerge:
		c.Mode = ModeMerge
	case ModeAppend:
	default:
		return fmt.Errorf(`mode %q: use "merge" or "append"`, c.Mode)
	}
	s.key = colID
	if k := strings.TrimSpace(c.Key); k != "" && k != colID {
		if c.Mode == ModeAppend {
			return errors.New(`key is for mode = "merge"; mode = "append" inserts every record`)
		}
		s.key = columnName(strings.Split(k, "."))
	}
	s.version = ""
	if v := strings.TrimSpace(c.Version); v != "" {
		s.version = columnName([]string{v})
		switch {
		case c.Mode == ModeAppend:
			return errors.New(`version is for mode = "merge"; mode = "append" inserts every record and replaces none`)
		case strings.Contains(v, "."):
			return fmt.Errorf("version %q: name a top-level field (a timestamp or a number), not a path", v)
		case sdk.IsReserved(strings.ToLower(v)):
			return fmt.Errorf("version %q: %s* fields are the pipeline's own and are not loaded; name a timestamp or number field of the records", v, sdk.ReservedPrefix)
		case s.version == s.key:
			return fmt.Errorf("version %q is also the key: name the field that orders a key's rows, such as updated_at", v)
		}
	}
	types := map[string]string{}
	for f, t := range c.Types {
		t = strings.ToLower(strings.TrimSpace(t))
		switch t {
		case declTimestamp, declDate, declVariant, declString:
		default:
			return fmt.Errorf(`types: field %q has type %q; use "timestamp", "date", "variant" or "string"`, f, t)
		}
		types[f] = t
	}
	s.m = mapper{flatten: c.Flatten, types: types, key: s.key, version: s.version, mem: memory.DefaultAllocator}

	if s.limits, err = c.Batch.Limits(DefaultBatch); err != nil {
		return err
	}

	connector := gosnowflake.NewConnector(gosnowflake.SnowflakeDriver{}, *sfCfg)
	s.db = sql.OpenDB(connector)
	// One session: the statements of a flush run in order, and the MERGE's
	// transaction is the session's.
	s.db.SetMaxOpenConns(1)
	return nil
}

// ident turns a configured name into the stored identifier: upper case as
// Snowflake stores unquoted names, or as written inside double quotes.
func ident(name string) (string, error) {
	name = strings.TrimSpace(name)
	if len(name) >= 2 && strings.HasPrefix(name, `"`) && strings.HasSuffix(name, `"`) {
		return strings.ReplaceAll(name[1:len(name)-1], `""`, `"`), nil
	}
	if strings.ContainsAny(name, `".`) {
		return "", errors.New(`a name holds a quote or a dot: give database, schema and table separately, and quote a mixed-case name as "\"Name\""`)
	}
	return strings.ToUpper(name), nil
}

// driverConfig builds the gosnowflake configuration from dsn or from
// account, user and a key or password, then applies warehouse, database,
// schema and role.
func (s *Sink) driverConfig() (*gosnowflake.Config, error) {
	c := &s.cfg
	var cfg *gosnowflake.Config
	if c.DSN != "" {
		if c.Account != "" || c.User != "" || c.Password != "" || c.PrivateKeyPath != "" {
			return nil, errors.New("dsn holds the account and credentials: set either dsn, or account, user and password or private_key_path")
		}
		parsed, err := gosnowflake.ParseDSN(c.DSN)
		if err != nil {
			return nil, fmt.Errorf("dsn is not a Snowflake DSN (user:password@account/database/schema?warehouse=WH): %v", err)
		}
		cfg = parsed
	} else {
		if c.Account == "" || c.User == "" {
			return nil, errors.New("set dsn, or account and user with password or private_key_path")
		}
		cfg = &gosnowflake.Config{Account: c.Account, User: c.User}
		switch {
		case c.PrivateKeyPath != "" && c.Password != "":
			return nil, errors.New("set one of password and private_key_path")
		case c.PrivateKeyPath != "":
			key, err := readPrivateKey(c.PrivateKeyPath)
			if err != nil {
				return nil, err
			}
			cfg.Authenticator = gosnowflake.AuthTypeJwt
			cfg.PrivateKey = key
		case c.Password != "":
			cfg.Password = c.Password
		default:
			return nil, errors.New("set password or private_key_path for user " + c.User)
		}
	}
	if c.Warehouse != "" {
		cfg.Warehouse = c.Warehouse
	}
	if c.Database != "" {
		cfg.Database = c.Database
	}
	if c.Schema != "" {
		cfg.Schema = c.Schema
	}
	if c.Role != "" {
		cfg.Role = c.Role
	}
	return cfg, nil
}

func readPrivateKey(path string) (*rsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("private_key_path: %v", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("private_key_path %s: not a PEM file", path)
	}
	if strings.Contains(block.Type, "ENCRYPTED") {
		return nil, fmt.Errorf("private_key_path %s: the key is encrypted; give an unencrypted key (openssl pkcs8 -topk8 -nocrypt)", path)
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private_key_path %s: not an RSA key", path)
		}
		return rk, nil
	}
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("private_key_path %s: not a PKCS#8 or PKCS#1 RSA private key", path)
	}
	return k, nil
}

// Write converts the batch to its load columns and holds it.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	n := b.Len()
	if n == 0 {
		return nil
	}
	cols, err := s.m.convert(b)
	if err != nil {
		return err
	}
	if len(s.held) == 0 {
		s.firstHeld = time.Now()
	}
	s.held = append(s.held, heldBatch{cols: cols, rows: n, firstID: b.ID(0), lastID: b.ID(n - 1), version: s.m.hasVersion(b.Record.Schema())})
	s.heldRows += int64(n)
	s.heldBytes += sdk.RecordBytes(b.Record)
	return nil
}

// FlushDue reports whether batch's rows, bytes or interval is reached.
func (s *Sink) FlushDue(now time.Time) bool {
	if len(s.held) == 0 {
		return false
	}
	return s.limits.Due(s.heldRows, s.heldBytes, s.firstHeld, now)
}

// Flush loads the held batches: table DDL as needed, PUT, COPY INTO
// staging, then MERGE or INSERT.
func (s *Sink) Flush(ctx context.Context) error {
	if len(s.held) == 0 {
		return nil
	}
	if err := s.redact(s.flush(ctx)); err != nil {
		return err
	}
	s.release()
	return nil
}

func (s *Sink) release() {
	for _, h := range s.held {
		for _, c := range h.cols {
			c.arr.Release()
		}
	}
	s.held, s.heldRows, s.heldBytes = nil, 0, 0
}

// loadFileName is the flush's file: a hash of its first and last record
// ids and its row count, so that the retry of a flush PUTs and COPYs the
// same file, which Snowflake's load history then skips.
func loadFileName(firstID, lastID string, rows int64) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d", firstID, lastID, rows)))
	return "load_" + hex.EncodeToString(h[:12]) + ".parquet"
}

// heldColumns is the union of the held batches' columns.
func (s *Sink) heldColumns() ([]column, error) {
	sets := make([][]column, len(s.held))
	for i, h := range s.held {
		for _, c := range h.cols {
			sets[i] = append(sets[i], c.column)
		}
	}
	return unionColumns(sets)
}

// loadFile is the held batches as the Parquet file of one load with the
// columns cols: its name and its bytes.
func (s *Sink) loadFile(cols []column) (string, []byte, error) {
	file := loadFileName(s.held[0].firstID, s.held[len(s.held)-1].lastID, s.heldRows)
	data, err := s.parquet(cols, file)
	return file, data, err
}

func (s *Sink) flush(ctx context.Context) error {
	cols, err := s.heldColumns()
	if err != nil {
		return err
	}
	if err := s.knowTables(ctx, cols); err != nil {
		return err
	}
	version, cols, err := s.versionColumn(cols)
	if err != nil {
		return err
	}
	if err := s.prepareTables(ctx, cols); err != nil {
		return err
	}
	// The column types as the table has them (integers into a FLOAT column).
	for i := range cols {
		if have, ok := s.targetCols[cols[i].Name]; ok {
			cols[i].Type = canonical(have)
		}
	}
	file, data, err := s.loadFile(cols)
	if err != nil {
		return err
	}
	if err := s.exec(ctx, clearStagingSQL(s.table, file)); err != nil {
		return err
	}
	if err := s.exec(gosnowflake.WithFileStream(ctx, &replayReader{data: data}), putSQL(s.table, file)); err != nil {
		return err
	}
	if err := s.exec(ctx, copySQL(s.table, file)); err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("snowflake: begin: %w", err)
	}
	load := versionMergeSQL(s.table, cols, s.key, version, file)
	if s.cfg.Mode == ModeAppend {
		load = insertSQL(s.table, cols, file)
	}
	for _, q := range []string{load, doneStagingSQL(s.table, file)} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("snowflake: %s: %w", firstLine(q), err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("snowflake: commit: %w", err)
	}
	s.log.Info("snowflake: loaded", "table", s.table.String(), "rows", s.heldRows, "file", file, "mode", s.cfg.Mode)
	return nil
}

func firstLine(q string) string {
	if i := strings.IndexByte(q, '\n'); i >= 0 {
		q = q[:i]
	}
	return strings.TrimSpace(q)
}

func (s *Sink) exec(ctx context.Context, q string) error {
	if _, err := s.db.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("snowflake: %s: %w", firstLine(q), err)
	}
	return nil
}

// versionColumn is the flush's version column, "" when the merge has
// none to compare. When no record of the flush has a version value, the
// column comes from the table, its values all null; when the table has
// none either, no row has a version and the flush merges without one.
func (s *Sink) versionColumn(cols []column) (string, []column, error) {
	if s.version == "" {
		return "", cols, nil
	}
	for _, c := range cols {
		if c.Name == s.version {
			return s.version, cols, nil
		}
	}
	have, ok := s.targetCols[s.version]
	if ok {
		t := canonical(have)
		if !versionType(t) {
			return "", nil, fmt.Errorf("version %q: column %s of table %s is %s; a version column must be a timestamp or a number (TIMESTAMP_*, NUMBER or FLOAT)", s.cfg.Version, quoteIdent(s.version), s.table, have)
		}
		return s.version, append(cols, column{Name: s.version, Field: strings.TrimSpace(s.cfg.Version), Type: t}), nil
	}
	for _, h := range s.held {
		if h.version {
			return "", cols, nil // only nulls
		}
	}
	// Most likely a misspelt name.
	return "", nil, fmt.Errorf("version %q: the records have no such top-level field, and table %s has no column %s", s.cfg.Version, s.table, quoteIdent(s.version))
}

// knowTables creates the tables on the run's first flush (replaces them
// on a full refresh's) and reads their columns.
func (s *Sink) knowTables(ctx context.Context, cols []column) error {
	if !s.known {
		replace := s.fullRefresh && !s.replacedOnce
		if err := s.exec(ctx, createTableSQL(s.table, cols, replace)); err != nil {
			return err
		}
		if err := s.exec(ctx, createStagingSQL(s.table, cols, replace)); err != nil {
			return err
		}
		s.replacedOnce = true
		var err error
		if s.targetCols, err = s.describe(ctx, s.table); err != nil {
			return err
		}
		if s.stagingCols, err = s.describe(ctx, s.table.staging()); err != nil {
			return err
		}
		s.known = true
	}
	return nil
}

// prepareTables creates the tables on the first flush, reads their
// columns, and adds the columns that cols has and they lack. A column
// whose type cannot take its field stops the load.
func (s *Sink) prepareTables(ctx context.Context, cols []column) error {
	if err := s.knowTables(ctx, cols); err != nil {
		return err
	}
	var addTarget []column
	for i, c := range cols {
		have, ok := s.targetCols[c.Name]
		if !ok {
			addTarget = append(addTarget, c)
			continue
		}
		t, err := reconcile(s.table.String(), c, have)
		if err != nil {
			return err
		}
		cols[i].Type = t
	}
	for _, c := range addTarget {
		if err := s.exec(ctx, addColumnSQL(s.table, c)); err != nil {
			return err
		}
		s.log.Info("snowflake: added a column for a new field", "table", s.table.String(), "column", c.Name, "type", c.Type, "field", c.Field)
		s.targetCols[c.Name] = c.Type
	}
	// The staging table is the sink's own: a column of another type is
	// replaced with the whole table.
	stg := stagingColumns(cols)
	for _, c := range stg {
		if have, ok := s.stagingCols[c.Name]; ok && canonical(have) != c.Type {
			s.log.Warn("snowflake: recreating the staging table", "table", s.table.staging().String(), "column", c.Name, "was", have, "now", c.Type)
			if err := s.exec(ctx, createStagingSQL(s.table, cols, true)); err != nil {
				return err
			}
			s.stagingCols = map[string]string{}
			for _, c := range stg {
				s.stagingCols[c.Name] = c.Type
			}
			return nil
		}
	}
	for _, c := range stg {
		if _, ok := s.stagingCols[c.Name]; !ok {
			if err := s.exec(ctx, addColumnSQL(s.table.staging(), c)); err != nil {
				return err
			}
			s.stagingCols[c.Name] = c.Type
		}
	}
	return nil
}

// describe reads a table's columns: name → type.
func (s *Sink) describe(ctx context.Context, t tableRef) (map[string]string, error) {
	q := describeSQL(t)
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("snowflake: %s: %w", q, err)
	}
	defer rows.Close()
	names, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for rows.Next() {
		vals := make([]sql.NullString, len(names))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("snowflake: %s: %w", q, err)
		}
		if len(vals) < 2 {
			return nil, fmt.Errorf("snowflake: %s: %d columns, want name and type", q, len(vals))
		}
		out[vals[0].String] = vals[1].String
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("snowflake: %s: %w", q, err)
	}
	return out, nil
}

// parquet writes the held batches as one Parquet file with the staging
// table's columns.
func (s *Sink) parquet(cols []column, file string) ([]byte, error) {
	stg := stagingColumns(cols)
	fields := make([]arrow.Field, len(stg))
	for i, c := range stg {
		fields[i] = arrow.Field{Name: c.Name, Type: arrowType(c.Type), Nullable: true}
	}
	schema := arrow.NewSchema(fields, nil)
	var buf bytes.Buffer
	w, err := export.NewWriter(&buf, export.Options{Format: export.FormatParquet, ParquetCompression: "snappy"})
	if err != nil {
		return nil, err
	}
	mem := memory.DefaultAllocator
	var seq int64
	for _, h := range s.held {
		arrs := make([]arrow.Array, len(stg))
		byName := map[string]arrow.Array{}
		for _, c := range h.cols {
			byName[c.Name] = c.arr
		}
		for i, c := range stg {
			switch c.Name {
			case colFile:
				b := array.NewStringBuilder(mem)
				for range h.rows {
					b.Append(file)
				}
				arrs[i] = b.NewArray()
				b.Release()
				continue
			case colSeq:
				b := array.NewInt64Builder(mem)
				for range h.rows {
					b.Append(seq)
					seq++
				}
				arrs[i] = b.NewArray()
				b.Release()
				continue
			}
			a, ok := byName[c.Name]
			switch {
			case !ok:
				arrs[i] = array.MakeArrayOfNull(mem, fields[i].Type, h.rows)
			case a.DataType().ID() == arrow.INT64 && fields[i].Type.ID() == arrow.FLOAT64:
				arrs[i] = widen(mem, a)
			default:
				a.Retain()
				arrs[i] = a
			}
		}
		rec := array.NewRecordBatch(schema, arrs, int64(h.rows))
		for _, a := range arrs {
			a.Release()
		}
		err := w.Write(rec)
		rec.Release()
		if err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Close releases the connection. The SDK flushes before.
func (s *Sink) Close(ctx context.Context) error {
	s.release()
	if s.db == nil {
		return nil
	}
	return s.redact(s.db.Close())
}

// redact replaces the configured secrets in err's text, keeping err for
// errors.Is and errors.As.
func (s *Sink) redact(err error) error { return sdk.Redact(err, s.secrets...) }

// replayReader reads data and, after each io.EOF, starts over.
// gosnowflake (v1.19.1) reads a PUT stream twice: into its upload buffer,
// then again for the file's SHA-256 digest and size. With a reader that
// reads once, the second pass sees nothing: the staged file's digest is
// that of an empty file and a LOCAL_FS stage writes an empty file.
type replayReader struct {
	data []byte
	off  int
}

func (r *replayReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		r.off = 0
		return 0, io.EOF
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}
