// Package sinkbigquery is the built-in sink "bigquery": it loads records
// into a BigQuery table through Parquet load jobs and a MERGE on a key.
package sinkbigquery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/managedwriter"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/batching"
	"github.com/pipelinehq/pipeline/sdk/export"
)

// Version is the plugin's version.
const Version = "0.1.0"

const (
	idColumn    = sdk.IDColumn // "_pipeline_id"
	modeMerge   = "merge"
	modeAppend  = "append"
	methodLoad  = "load"
	stagingTTL  = 24 * time.Hour
	maxJobTries = 5
)

var (
	_ sdk.Sink         = (*Sink)(nil)
	_ sdk.SinkCloser   = (*Sink)(nil)
	_ sdk.BufferedSink = (*Sink)(nil)
)

type config struct {
	Project         string            `json:"project"`
	Dataset         string            `json:"dataset"`
	Table           string            `json:"table"`
	Location        string            `json:"location"`
	CredentialsFile string            `json:"credentials_file"`
	Endpoint        string            `json:"endpoint"`
	Key             string            `json:"key"`
	Version         string            `json:"version"`
	Mode            string            `json:"mode"`
	Flatten         bool              `json:"flatten"`
	Types           map[string]string `json:"types"`
	Batch           *batching.Config  `json:"batch"`
	Method          string            `json:"method"`
}

// DefaultBatch is what the batch { } block leaves out: a load at 100 MiB
// held or five minutes, whichever comes first, with no row limit.
var DefaultBatch = batching.Limits{Bytes: 100 << 20, Interval: 5 * time.Minute}

// Sink loads records into BigQuery.
type Sink struct {
	cfg         config
	name        string
	fullRefresh bool
	target      tableRef
	conv        converter
	client      *bigquery.Client
	secrets     []string
	// wclient is the Storage Write API's client (method "storage_write"),
	// created by the first flush with writeOpts.
	wclient   *managedwriter.Client
	writeOpts []option.ClientOption

	limits batching.Limits

	held      []arrow.RecordBatch
	heldRows  int64
	heldBytes int64
	firstAt   time.Time
	firstID   string
	lastID    string
	seq       int64
	flushes   int
	// versionSeen: a held batch has the version field (perhaps as nulls).
	versionSeen bool

	// clientOptions are added to the client's (tests).
	clientOptions []option.ClientOption
	// writeOptions are added to the Storage Write API client's (tests).
	writeOptions []option.ClientOption
	now          func() time.Time
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "bigquery",
		Version:     Version,
		Description: "Loads records into a BigQuery table: Parquet load jobs into a staging table, then a MERGE on a key (or appends), creating the table and adding new columns as they appear.",
		Config: []sdk.Attribute{
			{Name: "project", Type: sdk.String, Required: true, Description: "The Google Cloud project of the dataset (jobs run in it too)."},
			{Name: "dataset", Type: sdk.String, Required: true, Description: "The dataset; created in location when missing."},
			{Name: "table", Type: sdk.String, Required: true, Description: "The table; created from the records' schema on the first load."},
			{Name: "location", Type: sdk.String, Description: `The dataset's location, e.g. "EU" or "us-central1" (default: BigQuery's default, US).`},
			{Name: "credentials_file", Type: sdk.String, Description: "A service account (or other) JSON key file; default: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server)."},
			{Name: "endpoint", Type: sdk.String, Description: `Base URL of a BigQuery REST API (an emulator, e.g. "http://127.0.0.1:9050"), for testing; without credentials_file no credentials are sent to it.`},
			{Name: "key", Type: sdk.String, Default: idColumn, Description: `The column that identifies a record: loads are idempotent on it (mode "merge"). Default: the record id, stored in column _pipeline_id.`},
			{Name: "version", Type: sdk.String, Description: `A top-level TIMESTAMP, INT64 or FLOAT64 column, e.g. "updated_at" (mode "merge"): a row replaces the stored row of its key only when its version is greater than or equal to the stored one, so late, out-of-order events never overwrite newer ones; within a load the greatest version of a key wins. A null version is older than any value. Default: every load overwrites.`},
			{Name: "mode", Type: sdk.String, Default: modeMerge, Description: `"merge" (upsert on key, the last arrival winning) or "append" (add every record).`},
			{Name: "flatten", Type: sdk.Bool, Default: false, Description: "Flatten nested objects into columns named parent_child instead of RECORD columns."},
			{Name: "types", Type: sdk.MapOf(sdk.String), Description: `Column types to use instead of the inferred ones: "timestamp" (a string field holding RFC 3339 times), "json" or "string" (the value as JSON text), e.g. { created_at = "timestamp", payload = "json" }. Nested fields are named with dots.`},
			batching.Attribute(DefaultBatch, "When to load what is held, whichever comes first (and at the end of the run); a batch is acked once its load is committed."),
			{Name: "method", Type: sdk.String, Default: methodLoad, Description: `"load" (Parquet load jobs into a staging table) or "storage_write" (the Storage Write API: a PENDING stream per flush, committed before the flush returns; into a staging table and the same MERGE in mode "merge", straight into the table in mode "append").`},
		},
	}
}

// Configure checks the block and builds the client. It does no network I/O.
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
	for name, v := range map[string]string{"project": c.Project, "dataset": c.Dataset, "table": c.Table} {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("%s must not be empty", name)
		}
	}
	if strings.ContainsAny(c.Dataset, ".`") || strings.ContainsAny(c.Table, ".`") || strings.ContainsAny(c.Project, "`") {
		return fmt.Errorf("project, dataset and table are single names: put the project in project and the dataset in dataset, not %q.%q", c.Dataset, c.Table)
	}
	s.target = tableRef{Project: c.Project, Dataset: c.Dataset, Table: c.Table}
	if c.Mode == "" {
		c.Mode = modeMerge
	}
	if c.Mode != modeMerge && c.Mode != modeAppend {
		return fmt.Errorf(`mode %q: use "merge" or "append"`, c.Mode)
	}
	if c.Key == "" {
		c.Key = idColumn
	}
	if v := c.Version; v != "" {
		switch {
		case c.Mode == modeAppend:
			return errors.New(`version is for mode "merge"; mode "append" inserts every record and replaces none`)
		case strings.ContainsAny(v, ".`"):
			return fmt.Errorf("version %q: name a top-level column (a TIMESTAMP, INT64 or FLOAT64), not a path", v)
		case sdk.IsReserved(v) || strings.HasPrefix(v, "__pipeline_"):
			return fmt.Errorf("version %q: %s* columns are the pipeline's own; name a timestamp or number field of the records", v, sdk.ReservedPrefix)
		case v == c.Key:
			return fmt.Errorf("version %q is also the key: name the column that orders a key's rows, such as updated_at", v)
		}
	}
	if c.Method == "" {
		c.Method = methodLoad
	}
	switch c.Method {
	case methodLoad, methodStorageWrite:
	default:
		return fmt.Errorf(`method %q: use "load" or "storage_write"`, c.Method)
	}
	for col, t := range c.Types {
		switch strings.ToLower(t) {
		case "timestamp", "json", "string":
			c.Types[col] = strings.ToLower(t)
		default:
			return fmt.Errorf(`types: column %q has type %q; use "timestamp", "json" or "string"`, col, t)
		}
	}
	s.conv = converter{mem: memory.DefaultAllocator, flatten: c.Flatten, types: c.Types, version: c.Version}

	limits, err := c.Batch.Limits(DefaultBatch)
	if err != nil {
		return err
	}
	s.limits = limits

	opts := []option.ClientOption{}
	s.secrets = nil
	if c.CredentialsFile != "" {
		data, err := os.ReadFile(c.CredentialsFile)
		if err != nil {
			return fmt.Errorf("credentials_file: %v", err)
		}
		var key map[string]any
		if err := json.Unmarshal(data, &key); err != nil {
			return fmt.Errorf("credentials_file %s is not a JSON key file: %v", c.CredentialsFile, syntaxOnly(err))
		}
		for _, k := range []string{"private_key", "private_key_id", "client_secret", "refresh_token"} {
			if v, ok := key[k].(string); ok && v != "" {
				s.secrets = append(s.secrets, v)
				// A PEM key also appears line by line in some errors.
				for _, line := range strings.Split(v, "\n") {
					if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
						s.secrets = append(s.secrets, line)
					}
				}
			}
		}
		typ, _ := key["type"].(string)
		if typ == "" {
			return fmt.Errorf("credentials_file %s has no \"type\": use a service account key or the file gcloud writes", c.CredentialsFile)
		}
		opts = append(opts, option.WithAuthCredentialsJSON(option.CredentialsType(typ), data))
	}
	var ep string
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf(`endpoint %q is not a URL such as "http://127.0.0.1:9050"`, c.Endpoint)
		}
		ep = strings.TrimSuffix(c.Endpoint, "/")
		if u.Path == "" || u.Path == "/" {
			ep += "/bigquery/v2"
		}
	}
	// The Storage Write API is gRPC: the REST endpoint does not apply.
	s.writeOpts = append(append([]option.ClientOption(nil), opts...), s.writeOptions...)
	if c.Method == methodStorageWrite && c.Endpoint != "" && len(s.writeOptions) == 0 {
		return fmt.Errorf(`method "storage_write" cannot be used with endpoint %q: the Storage Write API is a gRPC service that endpoint does not serve; use method = "load" with an emulator`, c.Endpoint)
	}
	if c.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(ep+"/"))
		if c.CredentialsFile == "" {
			opts = append(opts, option.WithoutAuthentication())
		}
	}
	opts = append(opts, s.clientOptions...)
	if s.client != nil {
		s.client.Close()
	}
	if s.wclient != nil {
		s.wclient.Close()
		s.wclient = nil
	}
	s.client, err = bigquery.NewClient(ctx, c.Project, opts...)
	if err != nil {
		return s.redact(fmt.Errorf("bigquery client: %w", err))
	}
	return nil
}

// syntaxOnly keeps a JSON error's position but none of the file's text.
func syntaxOnly(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d", se.Offset)
	}
	return errors.New("invalid JSON")
}

// Write converts the batch and holds it until the next Flush.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	n := b.Len()
	if n == 0 {
		return nil
	}
	rec, err := s.conv.convertBatch(b, s.seq)
	if err != nil {
		return err
	}
	keyName := s.cfg.Key
	if keyName == idColumn {
		keyName = stagingIDColumn
	}
	idx := rec.Schema().FieldIndices(keyName)
	if len(idx) == 0 {
		rec.Release()
		return fmt.Errorf("key %q is not a column of the records (columns: %s): set key to a top-level field, or leave it out to use the record id", s.cfg.Key, columnNames(rec.Schema()))
	}
	kf := rec.Schema().Field(idx[0])
	if _, ok := kf.Type.(*arrow.StructType); ok || isJSONField(kf) || kf.Type.ID() == arrow.LIST {
		rec.Release()
		return fmt.Errorf("key %q is a %s column; a key must be a scalar column such as a STRING or INT64", s.cfg.Key, bqTypeOf(kf))
	}
	if nulls := rec.Column(idx[0]).NullN(); nulls > 0 {
		rec.Release()
		if s.cfg.Key == idColumn {
			return fmt.Errorf("%d records carry no record id; mode %q needs one (set key to a column that identifies a record)", nulls, s.cfg.Mode)
		}
		return fmt.Errorf("%d records have no value in the key column %q; every record needs a key", nulls, s.cfg.Key)
	}
	seen := false
	if s.cfg.Version != "" {
		if seen, err = checkVersion(s.cfg.Version, b.Record.Schema(), rec.Schema()); err != nil {
			rec.Release()
			return err
		}
	}
	if len(s.held) == 0 {
		s.firstAt = s.now()
		s.firstID = b.ID(0)
		if s.firstID == "" {
			s.firstID = fmt.Sprint("seq:", s.seq)
		}
	}
	s.lastID = b.ID(n - 1)
	if s.lastID == "" {
		s.lastID = fmt.Sprint("seq:", s.seq+int64(n)-1)
	}
	s.seq += int64(n)
	s.versionSeen = s.versionSeen || seen
	s.held = append(s.held, rec)
	s.heldRows += int64(n)
	s.heldBytes += sdk.RecordBytes(rec)
	return nil
}

func columnNames(s *arrow.Schema) string {
	var names []string
	for _, f := range s.Fields() {
		if f.Name == stagingIDColumn || f.Name == stagingSeqColumn {
			continue
		}
		names = append(names, f.Name)
	}
	return strings.Join(names, ", ")
}

// FlushDue reports whether a batch limit is reached.
func (s *Sink) FlushDue(now time.Time) bool {
	if len(s.held) == 0 {
		return false
	}
	return s.limits.Due(s.heldRows, s.heldBytes, s.firstAt, now)
}

// Flush loads what is held; once it returns nil the records are in the
// table.
func (s *Sink) Flush(ctx context.Context) error {
	if len(s.held) == 0 {
		return nil
	}
	flush := s.flush
	if s.cfg.Method == methodStorageWrite {
		flush = s.flushStorage
	}
	if err := flush(ctx); err != nil {
		return s.redact(err)
	}
	s.release()
	s.flushes++
	return nil
}

func (s *Sink) release() {
	for _, r := range s.held {
		r.Release()
	}
	s.held = nil
	s.heldRows, s.heldBytes = 0, 0
	s.versionSeen = false
}

// Close releases what is held and the client.
func (s *Sink) Close(ctx context.Context) error {
	s.release()
	var errs []error
	if s.wclient != nil {
		errs = append(errs, s.wclient.Close())
		s.wclient = nil
	}
	if s.client != nil {
		errs = append(errs, s.client.Close())
		s.client = nil
	}
	return s.redact(errors.Join(errs...))
}

// heldFields is the union of the held records' fields.
func (s *Sink) heldFields() ([]arrow.Field, error) {
	var fields []arrow.Field
	var err error
	for _, r := range s.held {
		if fields, err = unionFields(fields, r.Schema().Fields(), ""); err != nil {
			return nil, err
		}
	}
	return fields, nil
}

// writeParquet writes the held records to w as the Parquet file of one
// load, with the columns fields.
func (s *Sink) writeParquet(w io.Writer, fields []arrow.Field) error {
	pw, err := export.NewWriter(w, export.Options{Format: export.FormatParquet, ParquetCompression: "snappy"})
	if err != nil {
		return err
	}
	// An empty record of the flush's schema fixes the file's schema; the
	// writer fills the columns a record lacks with nulls.
	empty := array.NewRecordBatch(arrow.NewSchema(fields, nil), emptyColumns(fields), 0)
	err = pw.Write(empty)
	empty.Release()
	if err != nil {
		return err
	}
	for _, rec := range s.held {
		if err := pw.Write(rec); err != nil {
			return err
		}
	}
	return pw.Close()
}

// plan is what the flush of the held records does, whichever the method:
// their fields, the staged schema and the jobs with their ids.
func (s *Sink) plan(ctx context.Context) ([]arrow.Field, bigquery.Schema, flushPlan, error) {
	fields, err := s.heldFields()
	if err != nil {
		return nil, nil, flushPlan{}, err
	}
	version := ""
	if s.cfg.Version != "" {
		if version, fields, err = s.versionColumn(ctx, fields); err != nil {
			return nil, nil, flushPlan{}, err
		}
	}
	staged := toBQSchema(fields)
	r := flushRange{
		Pipeline:    s.name,
		Target:      s.target,
		Mode:        s.cfg.Mode,
		FullRefresh: s.fullRefresh && s.flushes == 0,
		FirstID:     s.firstID,
		LastID:      s.lastID,
		Version:     version,
	}
	return fields, staged, planFlush(r, s.cfg.Location, staged, s.cfg.Key), nil
}

// checkVersion checks a batch's version column: a top-level field (in
// the records, src) converted to TIMESTAMP, INT64 or FLOAT64 (in rec).
// It reports whether the records have the field at all; a field of nulls
// only (which the converter leaves out) has no type yet.
func checkVersion(version string, src, rec *arrow.Schema) (bool, error) {
	i, j := fieldIndex(src, version), fieldIndex(rec, version)
	switch {
	case i < 0 && j < 0:
		return false, nil
	case i < 0:
		return false, fmt.Errorf("version %q: the column comes from a nested field (flatten = true), not a top-level field of the records", version)
	case j < 0 && src.Field(i).Type.ID() == arrow.NULL:
		return true, nil // only nulls
	case j < 0:
		return true, fmt.Errorf("version %q: the field is %s, flattened into columns; a version must be a TIMESTAMP, INT64 or FLOAT64", version, src.Field(i).Type)
	}
	switch t := bqTypeOf(rec.Field(j)); t {
	case "TIMESTAMP", "INT64", "FLOAT64":
		return true, nil
	default:
		return true, fmt.Errorf(`version %q: the column is %s (the records' field is %s); a version must be a TIMESTAMP, INT64 or FLOAT64 (a string of times can be declared with types = { %s = "timestamp" })`, version, t, src.Field(i).Type, version)
	}
}

// fieldIndex finds a top-level field by name, case-insensitively as
// BigQuery compares column names; -1 when there is none.
func fieldIndex(s *arrow.Schema, name string) int {
	for i, f := range s.Fields() {
		if strings.EqualFold(f.Name, name) {
			return i
		}
	}
	return -1
}

// versionColumn is the flush's version column, "" when the merge has none
// to compare. When no held record has a version value, the column comes
// from the table, its values all null; when the table has none either, no
// row has a version and the flush merges without one.
func (s *Sink) versionColumn(ctx context.Context, fields []arrow.Field) (string, []arrow.Field, error) {
	v := s.cfg.Version
	for _, f := range fields {
		if strings.EqualFold(f.Name, v) {
			return f.Name, fields, nil
		}
	}
	md, err := s.client.DatasetInProject(s.target.Project, s.target.Dataset).Table(s.target.Table).Metadata(ctx)
	if err != nil && !isStatus(err, http.StatusNotFound) {
		return "", nil, fmt.Errorf("table %s: %w", s.target, err)
	}
	if md != nil {
		for _, c := range md.Schema {
			if !strings.EqualFold(c.Name, v) {
				continue
			}
			var t arrow.DataType
			switch canonicalType(string(c.Type)) {
			case bigquery.TimestampFieldType:
				t = tsType
			case bigquery.IntegerFieldType:
				t = arrow.PrimitiveTypes.Int64
			case bigquery.FloatFieldType:
				t = arrow.PrimitiveTypes.Float64
			}
			if t == nil || c.Repeated {
				return "", nil, fmt.Errorf("version %q: column %s of table %s is %s; a version column must be a TIMESTAMP, INT64 or FLOAT64", v, c.Name, s.target, sqlType(c))
			}
			return c.Name, append(fields, arrow.Field{Name: c.Name, Type: t, Nullable: true}), nil
		}
	}
	if s.versionSeen {
		return "", fields, nil // only nulls
	}
	// Most likely a misspelt name.
	return "", nil, fmt.Errorf("version %q: the records have no such top-level field, and table %s has no such column", v, s.target)
}

func (s *Sink) flush(ctx context.Context) error {
	fields, staged, plan, err := s.plan(ctx)
	if err != nil {
		return err
	}

	if err := s.ensureDataset(ctx); err != nil {
		return err
	}
	if err := s.ensureTable(ctx, s.target, targetSchema(staged), time.Time{}); err != nil {
		return err
	}
	if plan.Staging != nil {
		if err := s.ensureTable(ctx, *plan.Staging, staged, s.now().Add(stagingTTL)); err != nil {
			return err
		}
	}

	f, err := os.CreateTemp("", "pipeline-bigquery-*.parquet")
	if err != nil {
		return fmt.Errorf("temporary file for the load: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := s.writeParquet(f, fields); err != nil {
		return err
	}

	load := func(ctx context.Context, jobID string) (*bigquery.Job, error) {
		if _, err := f.Seek(0, 0); err != nil {
			return nil, err
		}
		src := bigquery.NewReaderSource(f)
		src.SourceFormat = bigquery.Parquet
		src.ParquetOptions = &bigquery.ParquetOptions{EnableListInference: plan.Load.EnableListInference}
		d := plan.Load.Destination
		l := s.client.DatasetInProject(d.Project, d.Dataset).Table(d.Table).LoaderFrom(src)
		l.JobID = jobID
		l.Location = plan.Load.Location
		l.WriteDisposition = bigquery.TableWriteDisposition(plan.Load.WriteDisposition)
		l.CreateDisposition = bigquery.TableCreateDisposition(plan.Load.CreateDisposition)
		l.SchemaUpdateOptions = plan.Load.SchemaUpdateOptions
		return l.Run(ctx)
	}
	if err := s.runJob(ctx, plan.Load.JobID, plan.Load.Location, "load into "+plan.Load.Destination.String(), load); err != nil {
		return err
	}
	if plan.Merge == nil {
		return nil
	}
	merge := func(ctx context.Context, jobID string) (*bigquery.Job, error) {
		q := s.client.Query(plan.Merge.SQL)
		q.JobID = jobID
		q.Location = plan.Merge.Location
		return q.Run(ctx)
	}
	if err := s.runJob(ctx, plan.Merge.JobID, plan.Merge.Location, "insert into "+s.target.String(), merge); err != nil {
		return err
	}
	// The staging table expires by itself; deleting it early is tidy only.
	st := plan.Staging
	if err := s.client.DatasetInProject(st.Project, st.Dataset).Table(st.Table).Delete(ctx); err != nil && !isStatus(err, http.StatusNotFound) {
		sdk.Logger().Warn("could not delete the staging table; it expires in a day", "table", st.String(), "error", s.redact(err).Error())
	}
	return nil
}

func emptyColumns(fields []arrow.Field) []arrow.Array {
	cols := make([]arrow.Array, len(fields))
	for i, f := range fields {
		cols[i] = array.MakeArrayOfNull(memory.DefaultAllocator, f.Type, 0)
	}
	return cols
}

// runJob starts a job with a deterministic id and waits for it. When the
// id exists already (a retry of a flush whose job was started), the job is
// looked up instead: done and successful, it counts as this flush's; failed,
// the next id in the sequence id, id_r1, id_r2… is tried.
func (s *Sink) runJob(ctx context.Context, baseID, location, what string, start func(context.Context, string) (*bigquery.Job, error)) error {
	for try := 0; try < maxJobTries; try++ {
		id := baseID
		if try > 0 {
			id = fmt.Sprintf("%s_r%d", baseID, try)
		}
		job, err := start(ctx, id)
		existed := false
		if isDuplicate(err) {
			existed = true
			job, err = s.client.JobFromProject(ctx, s.cfg.Project, id, location)
			if err != nil {
				return fmt.Errorf("%s: job %s exists already but could not be looked up: %w", what, id, err)
			}
			sdk.Logger().Info("job exists already (a retry): not starting it again", "job", id)
		} else if err != nil {
			return fmt.Errorf("%s: start job %s: %w", what, id, err)
		}
		status, err := job.Wait(ctx)
		if err == nil && status != nil {
			err = status.Err()
		}
		if err == nil {
			return nil
		}
		if !existed || ctx.Err() != nil {
			return fmt.Errorf("%s: job %s failed: %w", what, id, err)
		}
		sdk.Logger().Warn("an earlier attempt's job failed: starting it again under a new id", "job", id, "error", s.redact(err).Error())
	}
	return fmt.Errorf("%s: job %s failed in %d attempts", what, baseID, maxJobTries)
}

// isDuplicate reports a 409 for a job id that exists already.
func isDuplicate(err error) bool {
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != http.StatusConflict {
		return false
	}
	if len(ge.Errors) == 0 {
		return true
	}
	for _, e := range ge.Errors {
		if e.Reason == "duplicate" {
			return true
		}
	}
	return false
}

func isStatus(err error, code int) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == code
}

func (s *Sink) ensureDataset(ctx context.Context) error {
	ds := s.client.DatasetInProject(s.target.Project, s.target.Dataset)
	if _, err := ds.Metadata(ctx); err == nil {
		return nil
	} else if !isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("dataset %s.%s: %w", s.target.Project, s.target.Dataset, err)
	}
	err := ds.Create(ctx, &bigquery.DatasetMetadata{Location: s.cfg.Location})
	if err != nil && !isStatus(err, http.StatusConflict) {
		return fmt.Errorf("create dataset %s.%s: %w", s.target.Project, s.target.Dataset, err)
	}
	sdk.Logger().Info("created dataset", "dataset", s.target.Project+"."+s.target.Dataset)
	return nil
}

// ensureTable creates t with schema, or adds the columns it lacks; an
// incompatible column type is an error naming it.
func (s *Sink) ensureTable(ctx context.Context, t tableRef, schema bigquery.Schema, expires time.Time) error {
	tbl := s.client.DatasetInProject(t.Project, t.Dataset).Table(t.Table)
	md, err := tbl.Metadata(ctx)
	if isStatus(err, http.StatusNotFound) {
		err = tbl.Create(ctx, &bigquery.TableMetadata{Schema: schema, ExpirationTime: expires})
		if err == nil {
			if expires.IsZero() {
				sdk.Logger().Info("created table", "table", t.String(), "columns", len(schema))
			}
			return nil
		}
		if !isStatus(err, http.StatusConflict) {
			return fmt.Errorf("create table %s: %w", t, err)
		}
		md, err = tbl.Metadata(ctx)
	}
	if err != nil {
		return fmt.Errorf("table %s: %w", t, err)
	}
	merged, added, err := evolve(t.String(), md.Schema, schema, "")
	if err != nil {
		return err
	}
	if len(added) == 0 {
		return nil
	}
	if _, err := tbl.Update(ctx, bigquery.TableMetadataToUpdate{Schema: merged}, md.ETag); err != nil {
		return fmt.Errorf("add columns %s to table %s: %w", strings.Join(added, ", "), t, err)
	}
	if expires.IsZero() {
		sdk.Logger().Info("added NULLABLE columns to the table", "table", t.String(), "columns", strings.Join(added, ", "))
	}
	return nil
}

// redact replaces the credentials' secrets in err's text, keeping err for
// errors.Is and errors.As.
func (s *Sink) redact(err error) error { return sdk.Redact(err, s.secrets...) }
