package sinkbigquery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	"cloud.google.com/go/bigquery/storage/managedwriter"
	"cloud.google.com/go/bigquery/storage/managedwriter/adapt"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/pipelinehq/pipeline/sdk"
)

const methodStorageWrite = "storage_write"

// Tunables of the storage_write path (variables for tests).
var (
	// appendChunkBytes bounds the serialized rows of one AppendRows
	// request; the API refuses requests of 10 MB or more, and the first
	// request of a connection carries the schema as well.
	appendChunkBytes = 8 << 20
	// appendTries is how often a chunk is sent when the answer is lost
	// (a transient error): the retry goes to the same offset, so an
	// earlier attempt that landed is answered with ALREADY_EXISTS.
	appendTries = 4
	// appendBackoff is the pause before the second try; it doubles.
	appendBackoff = 500 * time.Millisecond
	// schemaWaits and schemaBackoff bound the wait for the Storage Write
	// API to see columns just added to a table (it may lag behind
	// tables.patch).
	schemaWaits   = 6
	schemaBackoff = 5 * time.Second
)

// writeClient returns the Storage Write API client, created on first use.
func (s *Sink) writeClient(ctx context.Context) (*managedwriter.Client, error) {
	if s.wclient != nil {
		return s.wclient, nil
	}
	// The client keeps ctx for its connections: not the flush's.
	c, err := managedwriter.NewClient(context.WithoutCancel(ctx), s.cfg.Project, s.writeOpts...)
	if err != nil {
		return nil, fmt.Errorf("bigquery storage write client: %w", err)
	}
	s.wclient = c
	return c, nil
}

// flushStorage writes what is held through the Storage Write API: into a
// staging table and then the flush's MERGE (mode "merge", and the full
// refresh flush of mode "append"), or straight into the target (mode
// "append").
func (s *Sink) flushStorage(ctx context.Context) error {
	_, staged, plan, err := s.plan(ctx)
	if err != nil {
		return err
	}
	fullRefresh := s.fullRefresh && s.flushes == 0

	if err := s.ensureDataset(ctx); err != nil {
		return err
	}
	target := targetSchema(staged)
	if err := s.ensureTable(ctx, s.target, target, time.Time{}); err != nil {
		return err
	}
	if s.cfg.Mode == modeAppend && !fullRefresh {
		// Straight into the target: the rows appear when the stream is
		// committed, all of them or none.
		rows, err := s.commitRows(ctx, s.target, target, true)
		if err != nil {
			return err
		}
		sdk.Logger().Info("appended rows through the Storage Write API", "table", s.target.String(), "rows", rows)
		return nil
	}

	// An earlier attempt at the same records whose MERGE (or INSERT) has
	// succeeded did the whole flush: the rows are in the target.
	done, err := s.jobDone(ctx, plan.Merge.JobID, plan.Merge.Location)
	if err != nil {
		return err
	}
	if done {
		sdk.Logger().Info("the flush's query job succeeded in an earlier attempt (a retry): not writing the rows again", "job", plan.Merge.JobID)
		return nil
	}
	// A staging table of its own per attempt: the rows an interrupted
	// attempt committed to its staging table are never merged twice.
	st := *plan.Staging
	st.Table += "_" + randomHex(4)
	if err := s.ensureTable(ctx, st, staged, s.now().Add(stagingTTL)); err != nil {
		return err
	}
	dropStaging := func() {
		if err := s.client.DatasetInProject(st.Project, st.Dataset).Table(st.Table).Delete(ctx); err != nil && !isStatus(err, http.StatusNotFound) {
			sdk.Logger().Warn("could not delete the staging table; it expires in a day", "table", st.String(), "error", s.redact(err).Error())
		}
	}
	if _, err := s.commitRows(ctx, st, staged, false); err != nil {
		dropStaging()
		return err
	}
	sqlText := mergeSQL(s.target, st, staged, s.cfg.Key, plan.Version, fullRefresh)
	what := "merge into "
	if s.cfg.Mode == modeAppend {
		sqlText = insertSQL(s.target, st, staged, fullRefresh)
		what = "insert into "
	}
	merge := func(ctx context.Context, jobID string) (*bigquery.Job, error) {
		q := s.client.Query(sqlText)
		q.JobID = jobID
		q.Location = plan.Merge.Location
		return q.Run(ctx)
	}
	if err := s.runJob(ctx, plan.Merge.JobID, plan.Merge.Location, what+s.target.String(), merge); err != nil {
		return err
	}
	dropStaging()
	return nil
}

// jobDone reports whether the job baseID (or one of its retries
// baseID_r1…) exists and succeeded.
func (s *Sink) jobDone(ctx context.Context, baseID, location string) (bool, error) {
	for try := 0; try < maxJobTries; try++ {
		id := baseID
		if try > 0 {
			id = fmt.Sprintf("%s_r%d", baseID, try)
		}
		job, err := s.client.JobFromProject(ctx, s.cfg.Project, id, location)
		if isStatus(err, http.StatusNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("look up job %s: %w", id, err)
		}
		st := job.LastStatus()
		if st == nil || !st.Done() {
			// Running still: runJob finds it by its id and waits.
			return false, nil
		}
		if st.Err() == nil {
			return true, nil
		}
	}
	return false, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// commitRows writes the held records to table t through one PENDING write
// stream, finalizes it and commits it, and returns the rows committed.
// want is the schema the rows need; toTarget maps the staging id column
// to _pipeline_id and leaves out the arrival column.
func (s *Sink) commitRows(ctx context.Context, t tableRef, want bigquery.Schema, toTarget bool) (int64, error) {
	wc, err := s.writeClient(ctx)
	if err != nil {
		return 0, err
	}
	parent := managedwriter.TableParentFromParts(t.Project, t.Dataset, t.Table)
	ws, err := s.createStream(ctx, wc, parent, t, want)
	if err != nil {
		return 0, err
	}
	md, err := streamDescriptor(ws, t, want)
	if err != nil {
		return 0, err
	}
	dp, err := adapt.NormalizeDescriptor(md)
	if err != nil {
		return 0, fmt.Errorf("write stream of %s: schema descriptor: %w", t, err)
	}
	chunks, rows, err := encodeRows(s.held, md, toTarget)
	if err != nil {
		return 0, err
	}
	ms, err := wc.NewManagedStream(ctx, managedwriter.WithStreamName(ws.GetName()), managedwriter.WithSchemaDescriptor(dp))
	if err != nil {
		return 0, fmt.Errorf("open write stream %s: %w", ws.GetName(), err)
	}
	defer ms.Close()
	var offset int64
	for _, c := range chunks {
		if err := appendChunk(ctx, ms, c, offset); err != nil {
			return 0, err
		}
		offset += int64(len(c))
	}
	n, err := ms.Finalize(ctx)
	if err != nil {
		return 0, fmt.Errorf("finalize write stream %s: %w", ws.GetName(), err)
	}
	if n != rows {
		return 0, fmt.Errorf("finalize write stream %s: it holds %d rows, but %d were appended; not committing it", ws.GetName(), n, rows)
	}
	resp, err := wc.BatchCommitWriteStreams(ctx, &storagepb.BatchCommitWriteStreamsRequest{Parent: parent, WriteStreams: []string{ws.GetName()}})
	if err != nil {
		return 0, fmt.Errorf("commit write stream %s: %w", ws.GetName(), err)
	}
	if errs := resp.GetStreamErrors(); len(errs) > 0 || resp.GetCommitTime() == nil {
		var msgs []string
		for _, e := range errs {
			msgs = append(msgs, fmt.Sprintf("%s: %s %s", e.GetEntity(), e.GetCode(), e.GetErrorMessage()))
		}
		return 0, fmt.Errorf("commit write stream %s: not committed: %s", ws.GetName(), strings.Join(msgs, "; "))
	}
	return rows, nil
}

// createStream creates a PENDING stream on the table. When the stream's
// view of the table lacks columns the records need (the Storage Write API
// can lag behind a schema change), it is abandoned (never committed, so
// BigQuery drops it) and another is created after a pause.
func (s *Sink) createStream(ctx context.Context, wc *managedwriter.Client, parent string, t tableRef, want bigquery.Schema) (*storagepb.WriteStream, error) {
	pause := schemaBackoff
	for try := 0; ; try++ {
		ws, err := wc.CreateWriteStream(ctx, &storagepb.CreateWriteStreamRequest{
			Parent:      parent,
			WriteStream: &storagepb.WriteStream{Type: storagepb.WriteStream_PENDING},
		})
		if err != nil {
			return nil, fmt.Errorf("create a write stream on %s: %w", t, err)
		}
		if ws.GetTableSchema() == nil {
			return ws, nil
		}
		missing := missingColumns(want, ws.GetTableSchema().GetFields(), "")
		if len(missing) == 0 {
			return ws, nil
		}
		if try+1 >= schemaWaits {
			return nil, fmt.Errorf("the Storage Write API does not see the columns %s of table %s yet (they were just added): run again later, or use method = \"load\"", strings.Join(missing, ", "), t)
		}
		sdk.Logger().Info("the Storage Write API does not see new columns yet: waiting", "table", t.String(), "columns", strings.Join(missing, ", "), "pause", pause.String())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		pause *= 2
	}
}

// missingColumns names the columns of want that have lacks.
func missingColumns(want bigquery.Schema, have []*storagepb.TableFieldSchema, path string) []string {
	index := map[string]*storagepb.TableFieldSchema{}
	for _, f := range have {
		index[strings.ToLower(f.GetName())] = f
	}
	var out []string
	for _, w := range want {
		h, ok := index[strings.ToLower(w.Name)]
		if !ok {
			out = append(out, path+w.Name)
			continue
		}
		if len(w.Schema) > 0 {
			out = append(out, missingColumns(w.Schema, h.GetFields(), path+w.Name+".")...)
		}
	}
	return out
}

// streamDescriptor is the message descriptor of the stream's rows: from
// the table schema the stream reports, else the schema the rows need.
func streamDescriptor(ws *storagepb.WriteStream, t tableRef, want bigquery.Schema) (protoreflect.MessageDescriptor, error) {
	ts := ws.GetTableSchema()
	if ts == nil {
		var err error
		if ts, err = adapt.BQSchemaToStorageTableSchema(want); err != nil {
			return nil, fmt.Errorf("schema of %s: %w", t, err)
		}
	}
	d, err := adapt.StorageSchemaToProto2Descriptor(ts, "root")
	if err != nil {
		return nil, fmt.Errorf("schema of %s as a protocol buffer: %w", t, err)
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, fmt.Errorf("schema of %s: not a message descriptor", t)
	}
	return md, nil
}

// appendChunk appends rows at offset. A lost answer (a transient error) is
// retried at the same offset; ALREADY_EXISTS then says the earlier attempt
// landed, which counts as done. OUT_OF_RANGE (the offset is beyond the end
// of the stream: rows before it are missing) is an error.
func appendChunk(ctx context.Context, ms *managedwriter.ManagedStream, rows [][]byte, offset int64) error {
	pause := appendBackoff
	for try := 1; ; try++ {
		err := appendOnce(ctx, ms, rows, offset)
		switch code := appendErrCode(err); {
		case err == nil:
			return nil
		case code == storagepb.StorageError_OFFSET_ALREADY_EXISTS:
			sdk.Logger().Info("rows at this offset were written already (a retry): continuing", "stream", ms.StreamName(), "offset", offset, "rows", len(rows))
			return nil
		case code == storagepb.StorageError_OFFSET_OUT_OF_RANGE:
			return fmt.Errorf("append %d rows at offset %d of write stream %s: OUT_OF_RANGE, the offset is beyond the end of the stream (rows before it are missing); nothing was committed: %w", len(rows), offset, ms.StreamName(), err)
		case !transient(err) || try >= appendTries || ctx.Err() != nil:
			return fmt.Errorf("append %d rows at offset %d of write stream %s: %w", len(rows), offset, ms.StreamName(), err)
		}
		sdk.Logger().Warn("append failed: sending it again at the same offset", "stream", ms.StreamName(), "offset", offset, "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause *= 2
	}
}

func appendOnce(ctx context.Context, ms *managedwriter.ManagedStream, rows [][]byte, offset int64) error {
	res, err := ms.AppendRows(ctx, rows, managedwriter.WithOffset(offset))
	if err != nil {
		return err
	}
	got, err := res.GetResult(ctx)
	if err != nil {
		return err
	}
	if got != managedwriter.NoStreamOffset && got != offset {
		return fmt.Errorf("the rows were written at offset %d instead", got)
	}
	return nil
}

// appendErrCode is the offset error an append reports, from the
// StorageError detail or else the gRPC code; UNSPECIFIED for others.
func appendErrCode(err error) storagepb.StorageError_StorageErrorCode {
	if err == nil {
		return storagepb.StorageError_STORAGE_ERROR_CODE_UNSPECIFIED
	}
	if ae, ok := apierror.FromError(err); ok {
		se := &storagepb.StorageError{}
		if ae.Details().ExtractProtoMessage(se) == nil {
			switch se.GetCode() {
			case storagepb.StorageError_OFFSET_ALREADY_EXISTS, storagepb.StorageError_OFFSET_OUT_OF_RANGE:
				return se.GetCode()
			}
		}
	}
	switch status.Code(err) {
	case codes.AlreadyExists:
		return storagepb.StorageError_OFFSET_ALREADY_EXISTS
	case codes.OutOfRange:
		return storagepb.StorageError_OFFSET_OUT_OF_RANGE
	}
	return storagepb.StorageError_STORAGE_ERROR_CODE_UNSPECIFIED
}

// transient reports an error after which the append may have landed or
// may succeed when sent again.
func transient(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.Internal, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// encodeRows serializes the held records as messages of md, in chunks of
// less than appendChunkBytes, and returns the chunks and the row count.
func encodeRows(held []arrow.RecordBatch, md protoreflect.MessageDescriptor, toTarget bool) ([][][]byte, int64, error) {
	e := &encoder{byName: map[protoreflect.FullName]map[string]protoreflect.FieldDescriptor{}}
	var chunks [][][]byte
	var cur [][]byte
	size := 0
	var rows int64
	for _, rec := range held {
		type col struct {
			fd   protoreflect.FieldDescriptor
			arr  arrow.Array
			name string
		}
		var cols []col
		for i, f := range rec.Schema().Fields() {
			name := f.Name
			if toTarget {
				switch name {
				case stagingSeqColumn:
					continue
				case stagingIDColumn:
					name = idColumn
				}
			}
			fd := e.field(md, name)
			if fd == nil {
				if rec.Column(i).NullN() == rec.Column(i).Len() {
					continue
				}
				return nil, 0, fmt.Errorf("column %q is not in the write stream's schema", name)
			}
			cols = append(cols, col{fd, rec.Column(i), name})
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			msg := dynamicpb.NewMessage(md)
			for _, c := range cols {
				if err := e.set(msg, c.fd, c.arr, i, c.name); err != nil {
					return nil, 0, err
				}
			}
			b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(msg)
			if err != nil {
				return nil, 0, fmt.Errorf("row %d: %w", rows, err)
			}
			if len(cur) > 0 && size+len(b)+8 > appendChunkBytes {
				chunks = append(chunks, cur)
				cur, size = nil, 0
			}
			cur = append(cur, b)
			size += len(b) + 8 // a few bytes of framing per row
			rows++
		}
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	return chunks, rows, nil
}

// encoder sets Arrow values on dynamic messages of the storage descriptor.
type encoder struct {
	byName map[protoreflect.FullName]map[string]protoreflect.FieldDescriptor
}

// field finds md's field of a column, by the column name (annotated for
// names that are not proto identifiers), case-insensitively as BigQuery.
func (e *encoder) field(md protoreflect.MessageDescriptor, column string) protoreflect.FieldDescriptor {
	m, ok := e.byName[md.FullName()]
	if !ok {
		m = map[string]protoreflect.FieldDescriptor{}
		fds := md.Fields()
		for i := 0; i < fds.Len(); i++ {
			fd := fds.Get(i)
			name := string(fd.Name())
			if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts != nil && proto.HasExtension(opts, storagepb.E_ColumnName) {
				if n, ok := proto.GetExtension(opts, storagepb.E_ColumnName).(string); ok && n != "" {
					name = n
				}
			}
			m[strings.ToLower(name)] = fd
		}
		e.byName[md.FullName()] = m
	}
	return m[strings.ToLower(column)]
}

func (e *encoder) set(msg protoreflect.Message, fd protoreflect.FieldDescriptor, a arrow.Array, i int, path string) error {
	if a.IsNull(i) {
		return nil
	}
	if fd.IsList() {
		la, ok := a.(*array.List)
		if !ok {
			return fmt.Errorf("column %q: a REPEATED column, but the records hold %s", path, a.DataType())
		}
		start, end := la.ValueOffsets(i)
		vals := la.ListValues()
		lst := msg.Mutable(fd).List()
		for j := int(start); j < int(end); j++ {
			if vals.IsNull(j) {
				return fmt.Errorf("column %q holds a list with a null element, which a BigQuery REPEATED column cannot hold", path)
			}
			if fd.Kind() == protoreflect.MessageKind {
				v := lst.NewElement()
				if err := e.fill(v.Message(), vals, j, path); err != nil {
					return err
				}
				lst.Append(v)
				continue
			}
			v, err := scalar(fd, vals, j, path)
			if err != nil {
				return err
			}
			lst.Append(v)
		}
		return nil
	}
	if fd.Kind() == protoreflect.MessageKind {
		return e.fill(msg.Mutable(fd).Message(), a, i, path)
	}
	v, err := scalar(fd, a, i, path)
	if err != nil {
		return err
	}
	msg.Set(fd, v)
	return nil
}

// fill sets the fields of a RECORD's message from row i of a struct array.
func (e *encoder) fill(msg protoreflect.Message, a arrow.Array, i int, path string) error {
	sa, ok := a.(*array.Struct)
	if !ok {
		return fmt.Errorf("column %q: a RECORD column, but the records hold %s", path, a.DataType())
	}
	st := sa.DataType().(*arrow.StructType)
	for k, f := range st.Fields() {
		fd := e.field(msg.Descriptor(), f.Name)
		child := sa.Field(k)
		if fd == nil {
			if child.IsNull(i) {
				continue
			}
			return fmt.Errorf("column %q is not in the write stream's schema", path+"."+f.Name)
		}
		if err := e.set(msg, fd, child, i, path+"."+f.Name); err != nil {
			return err
		}
	}
	return nil
}

// scalar converts row i of a to the field's kind: timestamps are int64
// microseconds, dates int32 days, JSON text a string.
func scalar(fd protoreflect.FieldDescriptor, a arrow.Array, i int, path string) (protoreflect.Value, error) {
	bad := func() (protoreflect.Value, error) {
		return protoreflect.Value{}, fmt.Errorf("column %q: the records hold %s, which does not fit the column's %s", path, a.DataType(), fd.Kind())
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		switch x := a.(type) {
		case *array.String:
			return protoreflect.ValueOfString(x.Value(i)), nil
		case *array.LargeString:
			return protoreflect.ValueOfString(x.Value(i)), nil
		}
	case protoreflect.BytesKind:
		if x, ok := a.(*array.Binary); ok {
			return protoreflect.ValueOfBytes(append([]byte(nil), x.Value(i)...)), nil
		}
	case protoreflect.BoolKind:
		if x, ok := a.(*array.Boolean); ok {
			return protoreflect.ValueOfBool(x.Value(i)), nil
		}
	case protoreflect.DoubleKind:
		switch x := a.(type) {
		case *array.Float64:
			return protoreflect.ValueOfFloat64(x.Value(i)), nil
		case *array.Int64: // INT64 values into a FLOAT64 column
			return protoreflect.ValueOfFloat64(float64(x.Value(i))), nil
		}
	case protoreflect.Int64Kind:
		switch x := a.(type) {
		case *array.Int64:
			return protoreflect.ValueOfInt64(x.Value(i)), nil
		case *array.Timestamp: // TIMESTAMP: microseconds since the epoch
			tt := x.DataType().(*arrow.TimestampType)
			toTime, err := tt.GetToTimeFunc()
			if err != nil {
				return bad()
			}
			return protoreflect.ValueOfInt64(toTime(x.Value(i)).UnixMicro()), nil
		}
	case protoreflect.Int32Kind:
		if x, ok := a.(*array.Date32); ok { // DATE: days since the epoch
			return protoreflect.ValueOfInt32(int32(x.Value(i))), nil
		}
	}
	return bad()
}
