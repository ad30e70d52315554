// Package sinkpostgres is the built-in `sink "postgres"`: loads records into
// a PostgreSQL table created from the records' Arrow schema. Rows are held
// until a flush (by rows, bytes or time), then COPYed into a temporary
// staging table and upserted into the target in one transaction with the
// load's bookkeeping row, so a batch is acked only once its rows are
// committed, and a crash and re-run leaves exactly one row per key.
package sinkpostgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/jackc/pgx/v5"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/batching"
	"github.com/pipelinehq/pipeline/sdk/pgdsn"
)

// Version is the plugin's version.
const Version = "0.1.0"

// DefaultBatch is what the batch { } block leaves out: 100,000 rows,
// 64 MiB, 30 s.
var DefaultBatch = batching.Limits{Rows: 100000, Bytes: 64 << 20, Interval: 30 * time.Second}

// Modes.
const (
	ModeMerge  = "merge"
	ModeAppend = "append"
)

// IDColumn is the key column used when `key` is not set: the record id
// (sdk.IDColumn), text, primary key.
const IDColumn = sdk.IDColumn

// LoadsTable is the bookkeeping table, written in every load's transaction.
const LoadsTable = "_pipeline_loads"

var (
	_ sdk.Sink         = (*Sink)(nil)
	_ sdk.SinkCloser   = (*Sink)(nil)
	_ sdk.BufferedSink = (*Sink)(nil)
)

type config struct {
	DSN     string            `json:"dsn"`
	Schema  string            `json:"schema"`
	Table   string            `json:"table"`
	Key     string            `json:"key"`
	Version string            `json:"version"`
	Mode    string            `json:"mode"`
	Types   map[string]string `json:"types"`
	Flatten bool              `json:"flatten"`
	Batch   *batching.Config  `json:"batch"`
}

// held is one written batch, retained until the flush that covers it.
type held struct {
	rec arrow.RecordBatch
	ids []string
}

// Sink loads records into a PostgreSQL table.
type Sink struct {
	cfg         config
	pgxCopy     bool // COPY through pgx's CopyFrom even where copyBinary could (tests compare the two)
	name        string
	fullRefresh bool
	pgcfg       *pgx.ConnConfig
	secrets     []string

	limits batching.Limits

	conn      *pgx.Conn
	schema    string // resolved: cfg.Schema or current_schema()
	refreshed bool   // the full refresh's TRUNCATE is committed

	held     []held
	rows     int64
	bytes    int64
	firstAt  time.Time
	now      func() time.Time // the clock; tests replace it
	loads    int              // committed loads, for tests
	lastLoad loadStats
}

type loadStats struct {
	Rows    int64 // rows written to the table (after de-duplication)
	Added   []string
	Widened []string
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "postgres",
		Version:     Version,
		Description: "Loads records into a PostgreSQL table created from their schema: COPY into a staging table, then one upsert on the key, committed with the load's bookkeeping before the batch is acked.",
		Config: []sdk.Attribute{
			{Name: "dsn", Type: sdk.String, Description: `Connection string, "postgres://user@host:5432/db?sslmode=disable" or "host=... dbname=..."; default: the standard PG* environment (PGHOST, PGUSER, PGPASSWORD, PGDATABASE, ...).`},
			{Name: "schema", Type: sdk.String, Default: "", Description: "Schema of the table (default: the connection's current schema, normally public)."},
			{Name: "table", Type: sdk.String, Required: true, Description: "The table to load; created from the records' schema on the first load."},
			{Name: "key", Type: sdk.String, Default: "", Description: `A top-level string or integer field to upsert on, e.g. "row_id" (default: the record id, in a text column _pipeline_id).`},
			{Name: "version", Type: sdk.String, Default: "", Description: `A top-level timestamp or number field, e.g. "updated_at" (mode "merge"): a row replaces the stored row of its key only when its version is greater than or equal to the stored one, so late, out-of-order events never overwrite newer ones; within a load the greatest version of a key wins. A null version is older than any value. Default: every load overwrites.`},
			{Name: "mode", Type: sdk.String, Default: ModeMerge, Description: `"merge" (upsert on the key: re-runs are idempotent) or "append" (plain inserts, no key constraint).`},
			{Name: "types", Type: sdk.MapOf(sdk.String), Description: `Column types for string fields, e.g. { created_at = "timestamp" }: RFC 3339 strings become timestamptz.`},
			{Name: "flatten", Type: sdk.Bool, Default: false, Description: "Struct fields become one column per leaf, named by the path joined with _ (metadata_queue); lists stay jsonb. Default: a struct is one jsonb column."},
			batching.Attribute(DefaultBatch, "When to load, whichever is reached first; a batch is acked once its load is committed."),
		},
	}
}

var keyName = regexp.MustCompile(`^[^.]+$`)

// Configure checks the block and parses the connection settings. It does no
// I/O: the connection is made at the first load.
func (s *Sink) Configure(ctx context.Context, cfg sdk.Config) error {
	s.cfg = config{}
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	c := &s.cfg
	s.name = cfg.Name
	s.fullRefresh = cfg.FullRefresh
	if s.now == nil {
		s.now = time.Now
	}
	s.secrets = nil
	if c.DSN != "" {
		s.secrets = append(s.secrets, c.DSN)
	}
	if strings.TrimSpace(c.Table) == "" {
		return errors.New("table must not be empty")
	}
	if len(c.Table) > 63 || len(c.Schema) > 63 {
		return errors.New("schema and table names are at most 63 bytes in PostgreSQL")
	}
	switch c.Mode {
	case "":
		c.Mode = ModeMerge
	case ModeMerge, ModeAppend:
	default:
		return fmt.Errorf(`mode %q: use "merge" (upsert on the key) or "append"`, c.Mode)
	}
	if c.Key != "" && !keyName.MatchString(c.Key) {
		return fmt.Errorf("key %q: name a top-level field (a string or integer), not a path", c.Key)
	}
	if c.Key != "" && c.Mode == ModeAppend {
		return errors.New(`key is for mode = "merge"; append inserts every row and needs no key`)
	}
	if c.Version != "" {
		switch {
		case c.Mode == ModeAppend:
			return errors.New(`version is for mode = "merge"; append inserts every row and replaces none`)
		case !keyName.MatchString(c.Version):
			return fmt.Errorf("version %q: name a top-level field (a timestamp or a number), not a path", c.Version)
		case sdk.IsReserved(c.Version):
			return fmt.Errorf("version %q: %s* fields are the pipeline's own and are not loaded; name a timestamp or number field of the records", c.Version, sdk.ReservedPrefix)
		case c.Version == c.Key:
			return fmt.Errorf("version %q is also the key: name the field that orders a key's rows, such as updated_at", c.Version)
		}
	}
	for field, typ := range c.Types {
		switch strings.ToLower(typ) {
		case "timestamp", "timestamptz":
		default:
			return fmt.Errorf(`types: field %q: unknown type %q; the supported type is "timestamp" (RFC 3339 strings as timestamptz)`, field, typ)
		}
	}

	limits, err := c.Batch.Limits(DefaultBatch)
	if err != nil {
		return err
	}
	s.limits = limits

	pgcfg, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		return pgdsn.Error(c.DSN, err)
	}
	if pgcfg.Password != "" {
		s.secrets = append(s.secrets, pgcfg.Password)
	}
	s.pgcfg = pgcfg
	return nil
}

// Write holds the batch until the next flush.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	n := b.Len()
	if n == 0 {
		return nil
	}
	ids := make([]string, n)
	idBytes := 0
	for i := range ids {
		ids[i] = strings.Clone(b.ID(i))
		idBytes += len(ids[i]) + 16
	}
	b.Record.Retain()
	if len(s.held) == 0 {
		s.firstAt = s.now()
	}
	s.held = append(s.held, held{rec: b.Record, ids: ids})
	s.rows += int64(n)
	s.bytes += sdk.RecordBytes(b.Record) + int64(idBytes)
	return nil
}

// FlushDue reports whether the held rows reached batch.rows or batch.bytes,
// or the first of them was written batch.interval ago.
func (s *Sink) FlushDue(now time.Time) bool {
	if len(s.held) == 0 {
		return false
	}
	return s.limits.Due(s.rows, s.bytes, s.firstAt, now)
}

// Flush loads every held row in one transaction.
func (s *Sink) Flush(ctx context.Context) error {
	if len(s.held) == 0 {
		return nil
	}
	if err := s.load(ctx); err != nil {
		return s.redact(err)
	}
	s.release()
	return nil
}

// Abort drops what is held when the run ends without completing: nothing is
// loaded, and a full refresh leaves the table as it was.
func (s *Sink) Abort(ctx context.Context) error {
	s.release()
	if s.conn != nil {
		s.conn.Close(ctx)
		s.conn = nil
	}
	return nil
}

// Close empties the table of a full refresh that loaded nothing, and closes
// the connection. The SDK flushes before.
func (s *Sink) Close(ctx context.Context) error {
	var err error
	if s.fullRefresh && !s.refreshed && s.pgcfg != nil {
		err = s.redact(s.truncateOnly(ctx))
	}
	s.release()
	if s.conn != nil {
		s.conn.Close(ctx)
		s.conn = nil
	}
	return err
}

func (s *Sink) release() {
	for _, h := range s.held {
		h.rec.Release()
	}
	s.held = nil
	s.rows, s.bytes = 0, 0
}

// redact replaces the dsn and password in err's text, keeping err for
// errors.Is and errors.As.
func (s *Sink) redact(err error) error { return sdk.Redact(err, s.secrets...) }
