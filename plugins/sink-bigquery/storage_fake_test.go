package sinkbigquery

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	bq "google.golang.org/api/bigquery/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fakeWrite is an in-process BigQuery Storage Write API (gRPC over
// bufconn): PENDING streams on the tables of a fakeBQ, AppendRows with
// offsets (ALREADY_EXISTS before the end of a stream, OUT_OF_RANGE beyond
// it), finalize and batch commit. Rows are decoded with the descriptor the
// client sent; committed rows go to data, by "dataset.table".
type fakeWrite struct {
	storagepb.UnimplementedBigQueryWriteServer
	t    *testing.T
	rest *fakeBQ
	lis  *bufconn.Listener

	mu      sync.Mutex
	n       int
	streams map[string]*fakeStream
	events  []string // "create S", "append S@offset+rows", "finalize S", "commit S…"
	data    map[string][]map[string]any
	// lose makes the append at this offset land, then answer UNAVAILABLE
	// (the answer is lost), once.
	lose map[int64]bool
	// outOfRange answers OUT_OF_RANGE for an append at this offset.
	outOfRange map[int64]bool
	// hide, when it returns true, makes a new stream see hideSchema instead
	// of the table's (a schema change not visible yet).
	hide       func() bool
	hideSchema *bq.TableSchema
}

type fakeStream struct {
	name, table string
	rows        []map[string]any
	finalized   bool
	committed   bool
}

func newFakeWrite(t *testing.T, rest *fakeBQ) *fakeWrite {
	w := &fakeWrite{t: t, rest: rest, lis: bufconn.Listen(1 << 20), streams: map[string]*fakeStream{},
		data: map[string][]map[string]any{}, lose: map[int64]bool{}, outOfRange: map[int64]bool{}}
	srv := grpc.NewServer()
	storagepb.RegisterBigQueryWriteServer(srv, w)
	go srv.Serve(w.lis)
	t.Cleanup(srv.Stop)
	return w
}

// options connects a client to the fake (a connection of its own).
func (w *fakeWrite) options(t *testing.T) []option.ClientOption {
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return w.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return []option.ClientOption{option.WithGRPCConn(conn)}
}

var reParent = regexp.MustCompile(`^projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$`)

func (w *fakeWrite) CreateWriteStream(ctx context.Context, req *storagepb.CreateWriteStreamRequest) (*storagepb.WriteStream, error) {
	m := reParent.FindStringSubmatch(req.GetParent())
	if m == nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad parent %q", req.GetParent())
	}
	if req.GetWriteStream().GetType() != storagepb.WriteStream_PENDING {
		return nil, status.Errorf(codes.InvalidArgument, "want a PENDING stream, got %s", req.GetWriteStream().GetType())
	}
	key := m[2] + "." + m[3]
	w.rest.mu.Lock()
	tbl, ok := w.rest.tables[key]
	var ts *storagepb.TableSchema
	if ok {
		ts = &storagepb.TableSchema{Fields: storageFields(tbl.Schema.Fields)}
	}
	w.rest.mu.Unlock()
	if !ok {
		return nil, status.Errorf(codes.NotFound, "table %s not found", key)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hide != nil && w.hide() {
		ts = &storagepb.TableSchema{Fields: storageFields(w.hideSchema.Fields)}
	}
	w.n++
	st := &fakeStream{name: fmt.Sprintf("%s/streams/s%d", req.GetParent(), w.n), table: key}
	w.streams[st.name] = st
	w.events = append(w.events, "create "+st.name)
	return &storagepb.WriteStream{Name: st.name, Type: storagepb.WriteStream_PENDING, TableSchema: ts, Location: "US",
		CreateTime: timestamppb.Now()}, nil
}

func storageFields(fs []*bq.TableFieldSchema) []*storagepb.TableFieldSchema {
	var out []*storagepb.TableFieldSchema
	for _, f := range fs {
		t := map[string]storagepb.TableFieldSchema_Type{"STRING": storagepb.TableFieldSchema_STRING, "INTEGER": storagepb.TableFieldSchema_INT64,
			"FLOAT": storagepb.TableFieldSchema_DOUBLE, "BOOLEAN": storagepb.TableFieldSchema_BOOL, "TIMESTAMP": storagepb.TableFieldSchema_TIMESTAMP,
			"DATE": storagepb.TableFieldSchema_DATE, "BYTES": storagepb.TableFieldSchema_BYTES, "RECORD": storagepb.TableFieldSchema_STRUCT,
			"JSON": storagepb.TableFieldSchema_JSON}[f.Type]
		mode := storagepb.TableFieldSchema_NULLABLE
		if f.Mode == "REPEATED" {
			mode = storagepb.TableFieldSchema_REPEATED
		}
		out = append(out, &storagepb.TableFieldSchema{Name: f.Name, Type: t, Mode: mode, Fields: storageFields(f.Fields)})
	}
	return out
}

func (w *fakeWrite) GetWriteStream(ctx context.Context, req *storagepb.GetWriteStreamRequest) (*storagepb.WriteStream, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, ok := w.streams[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "stream %s", req.GetName())
	}
	return &storagepb.WriteStream{Name: st.name, Type: storagepb.WriteStream_PENDING, Location: "US"}, nil
}

func offsetErr(code codes.Code, sec storagepb.StorageError_StorageErrorCode, stream, msg string) *storagepb.AppendRowsResponse {
	st, _ := status.New(code, msg).WithDetails(&storagepb.StorageError{Code: sec, Entity: stream, ErrorMessage: msg})
	return &storagepb.AppendRowsResponse{Response: &storagepb.AppendRowsResponse_Error{Error: st.Proto()}, WriteStream: stream}
}

func (w *fakeWrite) AppendRows(srv storagepb.BigQueryWrite_AppendRowsServer) error {
	var stream string
	var md protoreflect.MessageDescriptor
	for {
		req, err := srv.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetWriteStream() != "" {
			stream = req.GetWriteStream()
		}
		pr := req.GetProtoRows()
		if ws := pr.GetWriterSchema().GetProtoDescriptor(); ws != nil {
			fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{Name: proto.String("fake.proto"), Syntax: proto.String("proto2"),
				MessageType: []*descriptorpb.DescriptorProto{ws}}, new(protoregistry.Files))
			if err != nil {
				return status.Errorf(codes.InvalidArgument, "writer schema: %v", err)
			}
			md = fd.Messages().Get(0)
		}
		if md == nil {
			return status.Error(codes.InvalidArgument, "no writer schema on the connection")
		}
		var rows []map[string]any
		for _, b := range pr.GetRows().GetSerializedRows() {
			msg := dynamicpb.NewMessage(md)
			if err := proto.Unmarshal(b, msg); err != nil {
				return status.Errorf(codes.InvalidArgument, "row: %v", err)
			}
			rows = append(rows, messageMap(msg))
		}
		if req.GetOffset() == nil {
			return status.Error(codes.InvalidArgument, "the fake expects explicit offsets")
		}
		off := req.GetOffset().GetValue()
		resp := w.append(stream, off, rows)
		if err := srv.Send(resp); err != nil {
			return err
		}
	}
}

func (w *fakeWrite) append(stream string, off int64, rows []map[string]any) *storagepb.AppendRowsResponse {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, fmt.Sprintf("append %s@%d+%d", stream, off, len(rows)))
	st, ok := w.streams[stream]
	switch {
	case !ok:
		return offsetErr(codes.NotFound, storagepb.StorageError_STREAM_NOT_FOUND, stream, "stream not found")
	case st.finalized:
		return offsetErr(codes.InvalidArgument, storagepb.StorageError_STREAM_FINALIZED, stream, "stream finalized")
	case w.outOfRange[off] || off > int64(len(st.rows)):
		return offsetErr(codes.OutOfRange, storagepb.StorageError_OFFSET_OUT_OF_RANGE, stream, fmt.Sprintf("offset %d is beyond the end of the stream (%d rows)", off, len(st.rows)))
	case off < int64(len(st.rows)):
		return offsetErr(codes.AlreadyExists, storagepb.StorageError_OFFSET_ALREADY_EXISTS, stream, fmt.Sprintf("offset %d already exists", off))
	}
	st.rows = append(st.rows, rows...)
	if w.lose[off] {
		delete(w.lose, off)
		st, _ := status.New(codes.Unavailable, "connection reset (the rows landed)").WithDetails()
		return &storagepb.AppendRowsResponse{Response: &storagepb.AppendRowsResponse_Error{Error: st.Proto()}, WriteStream: stream}
	}
	return &storagepb.AppendRowsResponse{WriteStream: stream, Response: &storagepb.AppendRowsResponse_AppendResult_{
		AppendResult: &storagepb.AppendRowsResponse_AppendResult{Offset: wrapperspb.Int64(off)}}}
}

func (w *fakeWrite) FinalizeWriteStream(ctx context.Context, req *storagepb.FinalizeWriteStreamRequest) (*storagepb.FinalizeWriteStreamResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, ok := w.streams[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "stream %s", req.GetName())
	}
	st.finalized = true
	w.events = append(w.events, "finalize "+st.name)
	return &storagepb.FinalizeWriteStreamResponse{RowCount: int64(len(st.rows))}, nil
}

func (w *fakeWrite) BatchCommitWriteStreams(ctx context.Context, req *storagepb.BatchCommitWriteStreamsRequest) (*storagepb.BatchCommitWriteStreamsResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, "commit "+strings.Join(req.GetWriteStreams(), " "))
	var errs []*storagepb.StorageError
	for _, name := range req.GetWriteStreams() {
		st, ok := w.streams[name]
		switch {
		case !ok:
			errs = append(errs, &storagepb.StorageError{Code: storagepb.StorageError_STREAM_NOT_FOUND, Entity: name})
		case !st.finalized:
			errs = append(errs, &storagepb.StorageError{Code: storagepb.StorageError_INVALID_STREAM_STATE, Entity: name, ErrorMessage: "not finalized"})
		case st.committed:
			errs = append(errs, &storagepb.StorageError{Code: storagepb.StorageError_STREAM_ALREADY_COMMITTED, Entity: name})
		}
	}
	if len(errs) > 0 {
		return &storagepb.BatchCommitWriteStreamsResponse{StreamErrors: errs}, nil
	}
	for _, name := range req.GetWriteStreams() {
		st := w.streams[name]
		st.committed = true
		w.data[st.table] = append(w.data[st.table], st.rows...)
	}
	return &storagepb.BatchCommitWriteStreamsResponse{CommitTime: timestamppb.Now()}, nil
}

// committedRows returns the rows of a table.
func (w *fakeWrite) rows(table string) []map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]map[string]any(nil), w.data[table]...)
}

// messageMap decodes a row by column name (the column_name annotation, or
// the field name); unset fields are left out.
func messageMap(m protoreflect.Message) map[string]any {
	out := map[string]any{}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && proto.HasExtension(opts, storagepb.E_ColumnName) {
			name = proto.GetExtension(opts, storagepb.E_ColumnName).(string)
		}
		if fd.IsList() {
			var l []any
			for i := 0; i < v.List().Len(); i++ {
				l = append(l, fieldValue(fd, v.List().Get(i)))
			}
			out[name] = l
			return true
		}
		out[name] = fieldValue(fd, v)
		return true
	})
	return out
}

func fieldValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	if fd.Kind() == protoreflect.MessageKind {
		return messageMap(v.Message())
	}
	return v.Interface()
}

// The SQL of the flush's query jobs, as planFlush writes it.
var (
	reMerge  = regexp.MustCompile("(?s)MERGE `([^`]+)` T.*FROM `([^`]+)`\\s*\\) WHERE.*ON T\\.`([^`]+)` = S\\.`([^`]+)`")
	reInsert = regexp.MustCompile("(?s)INSERT INTO `([^`]+)` .*FROM `([^`]+)`")
	reDelete = regexp.MustCompile("DELETE FROM `([^`]+)` WHERE TRUE")
	// With version: the version orders the rows of a key, and a stored row
	// is replaced only when its version is null or not greater.
	reVersionOrder = regexp.MustCompile("ORDER BY `([^`]+)` DESC NULLS LAST, `__pipeline_seq` DESC")
	reVersionWhen  = regexp.MustCompile("WHEN MATCHED AND \\(T\\.`([^`]+)` IS NULL OR S\\.`([^`]+)` >= T\\.`([^`]+)`\\) THEN UPDATE")
)

// compareVersions orders two version values as SQL does with NULLS LAST
// descending: nil is lowest. The values are int64 (INT64, TIMESTAMP
// micros) or float64.
func compareVersions(a, b any) int {
	num := func(v any) float64 {
		switch x := v.(type) {
		case int64:
			return float64(x)
		case float64:
			return x
		}
		panic(fmt.Sprintf("fake: version %T", v))
	}
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	if x, ok := a.(int64); ok {
		if y, ok := b.(int64); ok {
			return cmp.Compare(x, y)
		}
	}
	return cmp.Compare(num(a), num(b))
}

// runQuery runs the MERGE or INSERT of a flush on w.data: the staging rows
// deduplicated on the key (the highest __pipeline_seq winning) upsert the
// target's, or are appended.
func (w *fakeWrite) runQuery(sql string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	short := func(full string) string { p := strings.SplitN(full, ".", 2); return p[1] }
	toTarget := func(r map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range r {
			switch k {
			case stagingSeqColumn:
			case stagingIDColumn:
				out[idColumn] = v
			default:
				out[k] = v
			}
		}
		return out
	}
	if m := reDelete.FindStringSubmatch(sql); m != nil {
		delete(w.data, short(m[1]))
	}
	if m := reInsert.FindStringSubmatch(sql); m != nil {
		tgt, stg := short(m[1]), short(m[2])
		rows := append([]map[string]any(nil), w.data[stg]...)
		sort.SliceStable(rows, func(i, j int) bool { return rows[i][stagingSeqColumn].(int64) < rows[j][stagingSeqColumn].(int64) })
		for _, r := range rows {
			w.data[tgt] = append(w.data[tgt], toTarget(r))
		}
		return nil
	}
	m := reMerge.FindStringSubmatch(sql)
	if m == nil {
		return fmt.Errorf("fake: cannot run %s", sql)
	}
	tgt, stg, tkey, skey := short(m[1]), short(m[2]), m[3], m[4]
	version := ""
	if vo := reVersionOrder.FindStringSubmatch(sql); vo != nil {
		vw := reVersionWhen.FindStringSubmatch(sql)
		if vw == nil || vw[1] != vo[1] || vw[2] != vo[1] || vw[3] != vo[1] {
			return fmt.Errorf("fake: a version ORDER BY without its WHEN MATCHED AND: %s", sql)
		}
		version = vo[1]
	}
	latest := map[any]map[string]any{}
	var keys []any
	for _, r := range w.data[stg] {
		k := r[skey]
		old, ok := latest[k]
		if !ok {
			keys = append(keys, k)
		}
		later := ok && r[stagingSeqColumn].(int64) >= old[stagingSeqColumn].(int64)
		if version != "" && ok {
			if c := compareVersions(r[version], old[version]); c != 0 {
				later = c > 0
			}
		}
		if !ok || later {
			latest[k] = r
		}
	}
	for _, k := range keys {
		row := toTarget(latest[k])
		found := false
		for i, t := range w.data[tgt] {
			if t[tkey] == k {
				if version == "" || t[version] == nil || compareVersions(row[version], t[version]) >= 0 {
					w.data[tgt][i] = row
				}
				found = true
			}
		}
		if !found {
			w.data[tgt] = append(w.data[tgt], row)
		}
	}
	return nil
}
