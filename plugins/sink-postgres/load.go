package sinkpostgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

const stageTable = "_pipeline_stage"

// seqColumn is the staging table's arrival order of the rows, in a merge
// with a version.
const seqColumn = "_pipeline_seq"

func ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

func (s *Sink) target() string { return ident(s.schema, s.cfg.Table) }

// connect opens the connection (again, after a failure) and resolves the
// schema.
func (s *Sink) connect(ctx context.Context) error {
	if s.conn != nil && !s.conn.IsClosed() {
		return nil
	}
	conn, err := pgx.ConnectConfig(ctx, s.pgcfg)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	s.conn = conn
	if s.schema == "" {
		s.schema = s.cfg.Schema
	}
	if s.schema == "" {
		var cur *string
		if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&cur); err != nil {
			return fmt.Errorf("read the current schema: %w", err)
		}
		if cur == nil {
			return errors.New("the connection's search_path names no existing schema: set schema")
		}
		s.schema = *cur
	}
	return nil
}

// tableColumns reads the table's columns and their types; an empty map
// means there is no such table.
func tableColumns(ctx context.Context, tx pgx.Tx, schema, table string) (map[string]string, error) {
	rows, err := tx.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s.%s: %w", schema, table, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, err
		}
		out[name] = canon(typ)
	}
	return out, rows.Err()
}

// load writes every held row in one transaction: schema changes, the
// full refresh's TRUNCATE, the rows, and a row in _pipeline_loads.
func (s *Sink) load(ctx context.Context) error {
	cols, err := s.plan()
	if err != nil {
		return fmt.Errorf("%s: %w", s.cfg.Table, err)
	}
	if err := s.connect(ctx); err != nil {
		return err
	}
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		s.dropConn(ctx)
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx)
	if err := s.loadTx(ctx, tx, cols); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		s.dropConn(ctx)
		return fmt.Errorf("commit the load into %s: %w", s.target(), err)
	}
	if s.fullRefresh {
		s.refreshed = true
	}
	s.loads++
	return nil
}

func (s *Sink) dropConn(ctx context.Context) {
	if s.conn != nil {
		s.conn.Close(ctx)
		s.conn = nil
	}
}

func (s *Sink) lock(ctx context.Context, tx pgx.Tx) error {
	// Serialise loaders of the same table: their DDL and bookkeeping.
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "pipeline:"+s.schema+"."+s.cfg.Table)
	if err != nil {
		return fmt.Errorf("lock %s: %w", s.target(), err)
	}
	return nil
}

func (s *Sink) loadTx(ctx context.Context, tx pgx.Tx, cols []*column) error {
	if err := s.lock(ctx, tx); err != nil {
		return err
	}
	have, err := tableColumns(ctx, tx, s.schema, s.cfg.Table)
	if err != nil {
		return err
	}
	var keyCol, verCol *column
	for _, c := range cols {
		if c.key {
			keyCol = c
		}
		if c.ver {
			verCol = c
		}
	}
	stats := loadStats{}
	var ddl []string
	if len(have) == 0 {
		var defs []string
		for _, c := range cols {
			if c.typ == "" {
				continue // only nulls so far: added when a value shows its type
			}
			def := ident(c.name) + " " + c.typ
			if c.key {
				def += " PRIMARY KEY"
			}
			defs = append(defs, def)
			c.table = c.typ
		}
		ddl = append(ddl, "CREATE TABLE "+s.target()+" ("+strings.Join(defs, ", ")+")")
		sdk.Logger().Info("postgres: creating table", "sink", s.name, "table", s.schema+"."+s.cfg.Table, "columns", len(defs))
	} else {
		var problems []string
		for _, c := range cols {
			t, ok := have[c.name]
			if !ok {
				if c.key {
					return fmt.Errorf("table %s has no column %q to merge on: add it with a unique constraint, or load into a new table", s.target(), c.name)
				}
				if c.typ == "" {
					continue
				}
				ddl = append(ddl, "ALTER TABLE "+s.target()+" ADD COLUMN "+ident(c.name)+" "+c.typ)
				stats.Added = append(stats.Added, c.name)
				c.table = c.typ
				continue
			}
			c.table = t
			compat, widen := compatible(t, c.typ)
			switch {
			case compat:
			case widen && !c.key:
				ddl = append(ddl, "ALTER TABLE "+s.target()+" ALTER COLUMN "+ident(c.name)+" TYPE double precision")
				stats.Widened = append(stats.Widened, c.name)
				c.table = tDouble
			default:
				problems = append(problems, fmt.Sprintf("column %q: the table has %s, the records have %s", c.name, t, c.typ))
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("%s: %s; change the column or the data (nothing was loaded)", s.target(), strings.Join(problems, "; "))
		}
	}
	if verCol != nil {
		switch {
		case verCol.table == "" && verCol.absent:
			// Most likely a misspelt name.
			return fmt.Errorf("version %q: the records have no such top-level field, and %s has no such column", s.cfg.Version, s.target())
		case verCol.table == "":
			// Null in every record, and no column yet: no row has a
			// version, so the rows merge as without one.
			verCol = nil
		case !versionType(verCol.table):
			return fmt.Errorf("version %q: column %q of %s is %s; a version column must be a timestamp or a number (nothing was loaded)", s.cfg.Version, verCol.name, s.target(), verCol.table)
		}
	}
	for _, q := range ddl {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	for _, name := range stats.Added {
		sdk.Logger().Info("postgres: added column for a new field", "sink", s.name, "table", s.schema+"."+s.cfg.Table, "column", name)
	}
	for _, name := range stats.Widened {
		sdk.Logger().Warn("postgres: widened column from bigint to double precision", "sink", s.name, "table", s.schema+"."+s.cfg.Table, "column", name)
	}
	if s.fullRefresh && !s.refreshed {
		if _, err := tx.Exec(ctx, "TRUNCATE "+s.target()); err != nil {
			return fmt.Errorf("full refresh: truncate %s: %w", s.target(), err)
		}
	}

	// The columns the load fills.
	var load []*column
	for _, c := range cols {
		if c.table != "" {
			load = append(load, c)
		}
	}
	names := make([]string, len(load))
	for i, c := range load {
		names[i] = c.name
	}
	src, err := s.newSource(load, keyCol, verCol)
	if err != nil {
		return err
	}
	copyInto := func(table pgx.Identifier) (int64, error) {
		if !s.pgxCopy && binaryCopyable(load) {
			return copyBinary(ctx, tx, table.Sanitize(), names, src)
		}
		return tx.CopyFrom(ctx, table, names, src)
	}
	var n int64
	if s.cfg.Mode == ModeAppend {
		if n, err = copyInto(pgx.Identifier{s.schema, s.cfg.Table}); err != nil {
			return src.wrap(err, s.target())
		}
	} else {
		stage := "CREATE TEMP TABLE " + ident(stageTable) + " (LIKE " + s.target() + ") ON COMMIT DROP"
		if verCol != nil {
			// Every row is staged, with its arrival order.
			stage = "CREATE TEMP TABLE " + ident(stageTable) + " (LIKE " + s.target() + ", " + ident(seqColumn) + " bigint) ON COMMIT DROP"
			names = append(names, seqColumn)
		}
		if _, err := tx.Exec(ctx, stage); err != nil {
			return fmt.Errorf("create the staging table: %w", err)
		}
		if _, err = copyInto(pgx.Identifier{stageTable}); err != nil {
			return src.wrap(err, "the staging table")
		}
		tag, err := tx.Exec(ctx, mergeSQL(s.target(), load, keyCol, verCol))
		if err != nil {
			return fmt.Errorf("merge into %s on %q: %w", s.target(), keyCol.name, err)
		}
		n = tag.RowsAffected()
	}
	stats.Rows = n

	if err := s.bookkeep(ctx, tx, n); err != nil {
		return err
	}
	s.lastLoad = stats
	return nil
}

// mergeSQL upserts the staged rows into target on key. Without a version
// the staging table holds one row per key (the last to arrive), and it
// replaces the stored row. With a version the staging table holds every
// row with its arrival order in _pipeline_seq: DISTINCT ON keeps each key's
// row with the greatest version (nulls lowest; the last to arrive among
// equals), and it replaces the stored row only when the stored version is
// null or not greater.
func mergeSQL(target string, load []*column, key, ver *column) string {
	quoted := make([]string, len(load))
	var set []string
	for i, c := range load {
		quoted[i] = ident(c.name)
		if !c.key {
			set = append(set, ident(c.name)+" = EXCLUDED."+ident(c.name))
		}
	}
	list := strings.Join(quoted, ", ")
	k := ident(key.name)
	if ver == nil {
		action := "DO NOTHING"
		if len(set) > 0 {
			action = "DO UPDATE SET " + strings.Join(set, ", ")
		}
		return "INSERT INTO " + target + " (" + list + ") SELECT " + list + " FROM " + ident(stageTable) +
			" ON CONFLICT (" + k + ") " + action
	}
	v := ident(ver.name)
	// The version is never the key, so set is not empty.
	return "INSERT INTO " + target + " AS t (" + list + ")" +
		" SELECT DISTINCT ON (" + k + ") " + list + " FROM " + ident(stageTable) +
		" ORDER BY " + k + ", " + v + " DESC NULLS LAST, " + ident(seqColumn) + " DESC" +
		" ON CONFLICT (" + k + ") DO UPDATE SET " + strings.Join(set, ", ") +
		" WHERE t." + v + " IS NULL OR EXCLUDED." + v + " >= t." + v
}

// bookkeep records the load in _pipeline_loads, in the load's transaction.
func (s *Sink) bookkeep(ctx context.Context, tx pgx.Tx, rows int64) error {
	loads := ident(s.schema, LoadsTable)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('pipeline:_pipeline_loads', 0))`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+loads+` (
	load_id      text PRIMARY KEY,
	sink         text NOT NULL,
	table_name   text NOT NULL,
	mode         text NOT NULL,
	full_refresh boolean NOT NULL,
	records      bigint NOT NULL,
	rows         bigint NOT NULL,
	first_id     text,
	last_id      text,
	committed_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create %s: %w", loads, err)
	}
	var id [12]byte
	rand.Read(id[:])
	var first, last string
	if len(s.held) > 0 {
		h := s.held[0]
		first = h.ids[0]
		h = s.held[len(s.held)-1]
		last = h.ids[len(h.ids)-1]
	}
	_, err := tx.Exec(ctx, `INSERT INTO `+loads+` (load_id, sink, table_name, mode, full_refresh, records, rows, first_id, last_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		hex.EncodeToString(id[:]), s.name, s.schema+"."+s.cfg.Table, s.cfg.Mode, s.fullRefresh && !s.refreshed, s.rows, rows, first, last)
	if err != nil {
		return fmt.Errorf("record the load in %s: %w", loads, err)
	}
	return nil
}

// truncateOnly empties the table for a full refresh that had no records.
func (s *Sink) truncateOnly(ctx context.Context) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := s.lock(ctx, tx); err != nil {
		return err
	}
	have, err := tableColumns(ctx, tx, s.schema, s.cfg.Table)
	if err != nil || len(have) == 0 {
		return err
	}
	if _, err := tx.Exec(ctx, "TRUNCATE "+s.target()); err != nil {
		return fmt.Errorf("full refresh: truncate %s: %w", s.target(), err)
	}
	if err := s.bookkeep(ctx, tx, 0); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	s.refreshed = true
	return nil
}

// copySource feeds the held rows to COPY; in merge mode without a version
// only the last row of each key, with a version every row, followed by its
// arrival order (seqColumn).
type copySource struct {
	s    *Sink
	cols []*column
	skip [][]bool // per held batch, rows superseded by a later row of the same key
	seq  bool     // add the arrival order after cols
	n    int64    // rows handed out so far

	enc  *arrowjson.Encoder
	b, i int // current batch and row; i = -1 before the first Next
	gets []getter
	vals []any
	err  error
}

func (s *Sink) newSource(cols []*column, key, ver *column) (*copySource, error) {
	src := &copySource{s: s, cols: cols, b: 0, i: -1, vals: make([]any, len(cols))}
	if key == nil {
		return src, nil
	}
	// Find each key's last row (with a version, only check that every row
	// has a key: the merge picks the row).
	type pos struct{ b, i int32 }
	var last map[string]pos
	if ver == nil {
		last = make(map[string]pos, s.rows)
	}
	dups := false
	for b, h := range s.held {
		keyOf, err := s.keyFunc(h, key)
		if err != nil {
			return nil, err
		}
		for i := range h.ids {
			k, err := keyOf(i)
			if err != nil {
				return nil, err
			}
			if ver != nil {
				continue
			}
			if _, seen := last[k]; seen {
				dups = true
			}
			last[k] = pos{int32(b), int32(i)}
		}
	}
	if ver != nil {
		src.seq = true
		src.vals = append(src.vals, nil)
		return src, nil
	}
	if !dups {
		return src, nil
	}
	src.skip = make([][]bool, len(s.held))
	for b, h := range s.held {
		src.skip[b] = make([]bool, len(h.ids))
		for i := range src.skip[b] {
			src.skip[b][i] = true
		}
	}
	for _, p := range last {
		src.skip[p.b][p.i] = false
	}
	return src, nil
}

// keyFunc returns the key of a held batch's rows as a string.
func (s *Sink) keyFunc(h held, key *column) (func(int) (string, error), error) {
	if key.id {
		return func(i int) (string, error) {
			if h.ids[i] == "" {
				return "", errors.New("a record has no id; set key to a field that identifies records")
			}
			return h.ids[i], nil
		}, nil
	}
	arr, _, _ := lookup(h.rec, key.path)
	missing := func(i int) (string, error) {
		return "", fmt.Errorf("record %s has no value for the key %q (nothing was loaded)", h.ids[i], key.name)
	}
	if arr == nil {
		return missing, nil
	}
	if sv, ok := arr.(stringer); ok {
		return func(i int) (string, error) {
			if arr.IsNull(i) {
				return missing(i)
			}
			return sv.Value(i), nil
		}, nil
	}
	if isInt(arr.DataType().ID()) {
		return func(i int) (string, error) {
			if arr.IsNull(i) {
				return missing(i)
			}
			return arr.ValueStr(i), nil
		}, nil
	}
	return nil, fmt.Errorf("key %q: the field is %s; a key must be a string or an integer", key.name, arr.DataType())
}

func (c *copySource) Next() bool {
	for c.err == nil && c.b < len(c.s.held) {
		h := c.s.held[c.b]
		if c.gets == nil {
			// A fresh encoder per batch keeps it from holding old arrays.
			c.enc = arrowjson.NewEncoder()
			c.gets, c.err = c.s.bind(h, c.cols, c.enc)
			if c.err != nil {
				return false
			}
		}
		c.i++
		if c.i >= len(h.ids) {
			c.b, c.i, c.gets = c.b+1, -1, nil
			continue
		}
		if c.skip != nil && c.skip[c.b][c.i] {
			continue
		}
		for j, g := range c.gets {
			v, err := g(c.i)
			if err != nil {
				c.err = c.recordError(err)
				return false
			}
			c.vals[j] = v
		}
		if c.seq {
			c.vals[len(c.gets)] = c.n
		}
		c.n++
		return true
	}
	return false
}

func (c *copySource) recordError(err error) error {
	id := c.s.held[c.b].ids[c.i]
	if id == "" {
		id = "#" + strconv.Itoa(c.i+1)
	}
	return fmt.Errorf("record %s: %w", id, err)
}

func (c *copySource) Values() ([]any, error) { return c.vals, nil }
func (c *copySource) Err() error             { return c.err }

// wrap names where a COPY failed; a record's own error is returned as is.
func (c *copySource) wrap(err error, where string) error {
	if c.err != nil {
		return c.err
	}
	if c.b < len(c.s.held) && c.i >= 0 {
		return fmt.Errorf("copy into %s, at record %s: %w", where, c.s.held[c.b].ids[c.i], err)
	}
	return fmt.Errorf("copy into %s: %w", where, err)
}
