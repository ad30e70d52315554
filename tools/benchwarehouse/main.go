// Command benchwarehouse measures the Parquet bytes produced per record by
// the Snowflake and BigQuery sinks' load paths, without a warehouse.
//
// It reads a JSONL file of records (tools/gencalls writes one:
// go run ./tools/gencalls -n 1000000 -seed 7 -o .cache/bench/calls-1000000.jsonl),
// decodes it into Arrow batches with sdk/arrowjson the way plugins/source-file
// does (batches of -batch-rows records, also cut at 8 MiB of input), adds the
// record id column _pipeline_id the way the engine does (engine/run/flow.go
// addIDs: the record's row_id, else a hash prefix and the position), and then,
// for each path, converts and holds the batches and writes the Parquet file
// of each load as the sink does, with the sink's default batch limits.
//
// The sinks build their Parquet files in unexported code (sinksnowflake's
// mapper.convert and (*Sink).parquet; sinkbigquery's converter.convertBatch
// and (*Sink).flush), so this command replicates that code for the sinks'
// default configuration (no types, flatten = false): the same conversions,
// the same column names, order and nullability, the same bookkeeping columns
// (_PIPELINE_ID, _PIPELINE_FILE, _PIPELINE_SEQ for Snowflake; __pipeline_id,
// __pipeline_seq for BigQuery) and the same writer: sdk/export.NewWriter with
// Format parquet and ParquetCompression "snappy", default row groups. Keep it
// in step with the sinks when they change.
//
// With -path both (the default) each path runs in a child process of its
// own, so that each peak RSS is that path's alone.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/dustin/go-humanize"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/export"
)

// The sinks' default batch limits (sinksnowflake.DefaultBatchRows and
// DefaultBatchBytes; sinkbigquery.DefaultBatchBytes, no row limit). They are
// copied rather than imported so that this command does not link the
// Snowflake and BigQuery clients.
const (
	snowflakeBatchRows  = 1_000_000
	snowflakeBatchBytes = "64MiB"
	bigqueryBatchBytes  = "100MiB"
)

// As plugins/source-file: batches of batch_rows records (default 8192),
// also cut after 8 MiB of input.
const (
	sourceBatchRows  = 8192
	sourceBatchBytes = 8 << 20
)

type options struct {
	in        string
	n         int64
	batchRows int
	sfRows    int64
	sfBytes   int64
	bqBytes   int64
}

func main() {
	in := flag.String("in", ".cache/bench/calls-1000000.jsonl", "JSONL input (tools/gencalls writes one)")
	n := flag.Int64("n", 1_000_000, "records to read from the input (at most)")
	path := flag.String("path", "both", `"snowflake", "bigquery" or "both" (each in a child process)`)
	batchRows := flag.Int("batch-rows", sourceBatchRows, "records per source batch (source file's batch_rows)")
	sfRows := flag.Int64("snowflake-rows", snowflakeBatchRows, "Snowflake batch.rows: records per load")
	sfBytes := flag.String("snowflake-bytes", snowflakeBatchBytes, "Snowflake batch.bytes: held Arrow bytes per load")
	bqBytes := flag.String("bigquery-bytes", bigqueryBatchBytes, "BigQuery batch.bytes: held Arrow bytes per load")
	flag.Parse()

	o := options{in: *in, n: *n, batchRows: *batchRows, sfRows: *sfRows}
	var err error
	if o.sfBytes, err = parseBytes(*sfBytes); err == nil {
		o.bqBytes, err = parseBytes(*bqBytes)
	}
	if err == nil {
		switch *path {
		case "both":
			err = runBoth()
		case "snowflake", "bigquery":
			err = runPath(*path, o)
		default:
			err = fmt.Errorf(`-path %q: use "snowflake", "bigquery" or "both"`, *path)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchwarehouse:", err)
		os.Exit(1)
	}
}

func parseBytes(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is not a size such as \"256MiB\"", s)
	}
	return int64(n), nil
}

// runBoth runs each path in a child process with the same flags; each
// child reports its own peak RSS.
func runBoth() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, p := range []string{"snowflake", "bigquery"} {
		args := []string{"-path", p}
		flag.Visit(func(f *flag.Flag) {
			if f.Name != "path" {
				args = append(args, "-"+f.Name, f.Value.String())
			}
		})
		cmd := exec.Command(self, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s path: %w", p, err)
		}
		fmt.Println()
	}
	return nil
}

// loadSink is one warehouse sink's load path.
type loadSink interface {
	write(b sdk.Batch) error
	flushDue() bool
	// flush writes the held batches as one load's Parquet file and returns
	// its size.
	flush() (int64, error)
}

func runPath(path string, o options) error {
	var s loadSink
	switch path {
	case "snowflake":
		s = &snowflake{mem: memory.DefaultAllocator, maxRows: o.sfRows, maxBytes: o.sfBytes}
	default:
		s = &bigquery{mem: memory.DefaultAllocator, maxBytes: o.bqBytes}
	}
	f, err := os.Open(o.in)
	if err != nil {
		return fmt.Errorf("%w (write it with: go run ./tools/gencalls -n 1000000 -seed 7 -o %s)", err, o.in)
	}
	defer f.Close()

	var records, fileBytes, loads int64
	var decodeDur, encodeDur time.Duration
	flush := func() error {
		t0 := time.Now()
		n, err := s.flush()
		encodeDur += time.Since(t0)
		if err != nil {
			return err
		}
		if n > 0 {
			fileBytes += n
			loads++
		}
		return nil
	}
	emit := func(rec arrow.RecordBatch, offset int64) error {
		withIDs := addIDs(memory.DefaultAllocator, rec, o.in, offset)
		rec.Release()
		t0 := time.Now()
		err := s.write(sdk.NewBatch(withIDs))
		withIDs.Release()
		encodeDur += time.Since(t0)
		if err != nil {
			return err
		}
		if s.flushDue() {
			return flush()
		}
		return nil
	}

	br := bufio.NewReaderSize(f, 1<<20)
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	pending := 0
	t0 := time.Now()
	for records < o.n {
		line, rerr := readLine(br)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return rerr
		}
		if len(line) > 0 {
			switch err := dec.Append(line); {
			case err == nil:
				pending += len(line)
				records++
			case errors.Is(err, arrowjson.ErrEmptyLine):
			default:
				return fmt.Errorf("%s: record %d: %v", o.in, records+1, err)
			}
			if dec.Len() >= o.batchRows || pending >= sourceBatchBytes {
				rec := dec.Flush()
				pending = 0
				decodeDur += time.Since(t0)
				if rec != nil {
					if err := emit(rec, records-rec.NumRows()); err != nil {
						return err
					}
				}
				t0 = time.Now()
			}
		}
		if rerr != nil {
			break
		}
	}
	if rec := dec.Flush(); rec != nil {
		decodeDur += time.Since(t0)
		if err := emit(rec, records-rec.NumRows()); err != nil {
			return err
		}
	} else {
		decodeDur += time.Since(t0)
	}
	if err := flush(); err != nil {
		return err
	}

	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("%-9s  records %d  loads (Parquet files) %d  bytes %d (%s)  bytes/record %.1f\n",
		path, records, loads, fileBytes, humanize.IBytes(uint64(fileBytes)), float64(fileBytes)/float64(max(records, 1)))
	fmt.Printf("%-9s  encode (convert + hold + Parquet) %.2fs: %.0f records/s, %.1f MiB/s of Parquet  (JSON decode, not counted: %.2fs)\n",
		path, encodeDur.Seconds(), float64(records)/encodeDur.Seconds(), float64(fileBytes)/(1<<20)/encodeDur.Seconds(), decodeDur.Seconds())
	fmt.Printf("%-9s  peak RSS (getrusage Maxrss): %d MiB\n", path, ru.Maxrss/1024)
	return nil
}

// readLine is plugins/source-file's: a line of any length.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == nil || !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	buf := append([]byte(nil), line...)
	for errors.Is(err, bufio.ErrBufferFull) {
		line, err = br.ReadSlice('\n')
		buf = append(buf, line...)
	}
	return buf, err
}

// addIDs appends the _pipeline_id column as the engine does
// (engine/run/flow.go addIDs): the record's row_id when it has one, else a
// hash of the source and a position.
func addIDs(mem memory.Allocator, rec arrow.RecordBatch, source string, offset int64) arrow.RecordBatch {
	var rowIDs *array.String
	if idx := rec.Schema().FieldIndices("row_id"); len(idx) > 0 {
		rowIDs, _ = rec.Column(idx[0]).(*array.String)
	}
	h := sha256.Sum256([]byte(source))
	prefix := hex.EncodeToString(h[:8]) + "-"
	b := array.NewStringBuilder(mem)
	defer b.Release()
	n := int(rec.NumRows())
	b.Reserve(n)
	for i := 0; i < n; i++ {
		if rowIDs != nil && rowIDs.IsValid(i) && rowIDs.Value(i) != "" {
			b.Append(rowIDs.Value(i))
			continue
		}
		b.Append(prefix + strconv.FormatInt(offset+int64(i), 10))
	}
	ids := b.NewArray()
	defer ids.Release()
	fields := append(append([]arrow.Field(nil), rec.Schema().Fields()...), arrow.Field{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String, Nullable: true})
	md := rec.Schema().Metadata()
	cols := append(append([]arrow.Array(nil), rec.Columns()...), ids)
	return array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, rec.NumRows())
}

// recordBytes is the size of a record's buffers (both sinks' estimate for
// batch.bytes).
func recordBytes(rec arrow.RecordBatch) int64 {
	var n int64
	for _, col := range rec.Columns() {
		n += dataBytes(col.Data())
	}
	return n
}

func dataBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}

// parquetOptions are both sinks' writer options.
var parquetOptions = export.Options{Format: export.FormatParquet, ParquetCompression: "snappy"}

// ---------------------------------------------------------------------------
// Snowflake: replicates plugins/sink-snowflake (convert.go mapper.convert,
// schema.go unionColumns, sink.go loadFileName and (*Sink).parquet) for
// types = {} and flatten = false, with a new table (the table's column types
// are the records').

const (
	sfVarchar   = "VARCHAR"
	sfNumber    = "NUMBER(38,0)"
	sfFloat     = "FLOAT"
	sfBoolean   = "BOOLEAN"
	sfTimestamp = "TIMESTAMP_TZ"
	sfDate      = "DATE"
	sfVariant   = "VARIANT"

	sfColID   = "_PIPELINE_ID"
	sfColFile = "_PIPELINE_FILE"
	sfColSeq  = "_PIPELINE_SEQ"
)

type sfColumn struct {
	name, field, typ string
	arr              arrow.Array
}

type sfHeld struct {
	cols            []sfColumn
	rows            int
	firstID, lastID string
}

type snowflake struct {
	mem       memory.Allocator
	maxRows   int64
	maxBytes  int64
	held      []sfHeld
	heldRows  int64
	heldBytes int64
}

func (s *snowflake) write(b sdk.Batch) error {
	n := b.Len()
	if n == 0 {
		return nil
	}
	ids := array.NewStringBuilder(s.mem)
	for i := 0; i < n; i++ {
		if id := b.ID(i); id != "" {
			ids.Append(id)
		} else {
			ids.AppendNull()
		}
	}
	cols := []sfColumn{{name: sfColID, field: "the record id", typ: sfVarchar, arr: ids.NewArray()}}
	ids.Release()
	seen := map[string]string{sfColID: "the record id"}
	for i, f := range b.Record.Schema().Fields() {
		if sdk.IsReserved(f.Name) {
			continue
		}
		arr := b.Record.Column(i)
		if arr.DataType().ID() == arrow.NULL {
			continue // no column until the field has a type
		}
		name := strings.ToUpper(f.Name)
		if prev, dup := seen[name]; dup {
			return fmt.Errorf("fields %q and %q both become column %s", prev, f.Name, name)
		}
		seen[name] = f.Name
		typ, out := s.convert(f, arr)
		cols = append(cols, sfColumn{name: name, field: f.Name, typ: typ, arr: out})
	}
	s.held = append(s.held, sfHeld{cols: cols, rows: n, firstID: b.ID(0), lastID: b.ID(n - 1)})
	s.heldRows += int64(n)
	s.heldBytes += recordBytes(b.Record)
	return nil
}

func (s *snowflake) flushDue() bool {
	return len(s.held) > 0 && (s.heldRows >= s.maxRows || s.heldBytes >= s.maxBytes)
}

// convert is mapper.mapType's default branch and its converters: every
// column becomes a String, Int64, Float64 or Boolean array the sink owns.
func (s *snowflake) convert(f arrow.Field, arr arrow.Array) (string, arrow.Array) {
	id := arr.DataType().ID()
	switch {
	case id == arrow.STRING || id == arrow.LARGE_STRING:
		typ := sfVarchar
		if arrowjson.IsRaw(f) {
			typ = sfVariant
		}
		b := array.NewStringBuilder(s.mem)
		defer b.Release()
		for i := 0; i < arr.Len(); i++ {
			switch {
			case arr.IsNull(i):
				b.AppendNull()
			case id == arrow.STRING:
				b.Append(arr.(*array.String).Value(i))
			default:
				b.Append(arr.(*array.LargeString).Value(i))
			}
		}
		return typ, b.NewArray()
	}
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		b := array.NewInt64Builder(s.mem)
		defer b.Release()
		for i := 0; i < arr.Len(); i++ {
			if arr.IsNull(i) {
				b.AppendNull()
				continue
			}
			var v int64
			switch a := arr.(type) {
			case *array.Int8:
				v = int64(a.Value(i))
			case *array.Int16:
				v = int64(a.Value(i))
			case *array.Int32:
				v = int64(a.Value(i))
			case *array.Int64:
				v = a.Value(i)
			case *array.Uint8:
				v = int64(a.Value(i))
			case *array.Uint16:
				v = int64(a.Value(i))
			case *array.Uint32:
				v = int64(a.Value(i))
			case *array.Uint64:
				v = int64(a.Value(i)) // the sink stops the load above MaxInt64
			}
			b.Append(v)
		}
		return sfNumber, b.NewArray()
	case arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64:
		b := array.NewFloat64Builder(s.mem)
		defer b.Release()
		for i := 0; i < arr.Len(); i++ {
			if arr.IsNull(i) {
				b.AppendNull()
				continue
			}
			switch a := arr.(type) {
			case *array.Float16:
				b.Append(float64(a.Value(i).Float32()))
			case *array.Float32:
				b.Append(float64(a.Value(i)))
			case *array.Float64:
				b.Append(a.Value(i))
			}
		}
		return sfFloat, b.NewArray()
	case arrow.BOOL:
		b := array.NewBooleanBuilder(s.mem)
		defer b.Release()
		a := arr.(*array.Boolean)
		for i := 0; i < arr.Len(); i++ {
			if a.IsNull(i) {
				b.AppendNull()
			} else {
				b.Append(a.Value(i))
			}
		}
		return sfBoolean, b.NewArray()
	case arrow.TIMESTAMP:
		b := array.NewStringBuilder(s.mem)
		defer b.Release()
		a := arr.(*array.Timestamp)
		unit := a.DataType().(*arrow.TimestampType).Unit
		for i := 0; i < arr.Len(); i++ {
			if a.IsNull(i) {
				b.AppendNull()
			} else {
				b.Append(a.Value(i).ToTime(unit).UTC().Format(time.RFC3339Nano))
			}
		}
		return sfTimestamp, b.NewArray()
	case arrow.DATE32, arrow.DATE64:
		b := array.NewStringBuilder(s.mem)
		defer b.Release()
		for i := 0; i < arr.Len(); i++ {
			if arr.IsNull(i) {
				b.AppendNull()
				continue
			}
			switch a := arr.(type) {
			case *array.Date32:
				b.Append(a.Value(i).ToTime().Format(time.DateOnly))
			case *array.Date64:
				b.Append(a.Value(i).ToTime().Format(time.DateOnly))
			}
		}
		return sfDate, b.NewArray()
	}
	// Structs, lists, maps and anything else: VARIANT, as JSON text.
	b := array.NewStringBuilder(s.mem)
	defer b.Release()
	enc := arrowjson.NewEncoder()
	var buf []byte
	for i := 0; i < arr.Len(); i++ {
		if arr.IsNull(i) {
			b.AppendNull()
			continue
		}
		buf = enc.AppendValue(buf[:0], f, arr, i)
		b.Append(string(buf))
	}
	return sfVariant, b.NewArray()
}

// sfStagingType is how a column travels in the Parquet file.
func sfStagingType(t string) string {
	switch t {
	case sfVariant, sfTimestamp, sfDate:
		return sfVarchar
	}
	return t
}

func sfArrowType(t string) arrow.DataType {
	switch sfStagingType(t) {
	case sfNumber:
		return arrow.PrimitiveTypes.Int64
	case sfFloat:
		return arrow.PrimitiveTypes.Float64
	case sfBoolean:
		return arrow.FixedWidthTypes.Boolean
	}
	return arrow.BinaryTypes.String
}

// sfLoadFileName is sinksnowflake's loadFileName.
func sfLoadFileName(firstID, lastID string, rows int64) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d", firstID, lastID, rows)))
	return "load_" + hex.EncodeToString(h[:12]) + ".parquet"
}

func (s *snowflake) flush() (int64, error) {
	if len(s.held) == 0 {
		return 0, nil
	}
	defer s.release()
	// unionColumns: first-seen order; NUMBER and FLOAT make FLOAT.
	type col struct{ name, typ string }
	var cols []col
	at := map[string]int{}
	for _, h := range s.held {
		for _, c := range h.cols {
			i, ok := at[c.name]
			if !ok {
				at[c.name] = len(cols)
				cols = append(cols, col{c.name, c.typ})
				continue
			}
			switch prev := cols[i].typ; {
			case prev == c.typ:
			case (prev == sfNumber && c.typ == sfFloat) || (prev == sfFloat && c.typ == sfNumber):
				cols[i].typ = sfFloat
			default:
				return 0, fmt.Errorf("field %q changed type within one load, from %s to %s", c.field, prev, c.typ)
			}
		}
	}
	file := sfLoadFileName(s.held[0].firstID, s.held[len(s.held)-1].lastID, s.heldRows)
	// stagingColumns: the columns with their transport types, then the file
	// and sequence columns; every field nullable.
	stg := append(cols, col{sfColFile, sfVarchar}, col{sfColSeq, sfNumber})
	fields := make([]arrow.Field, len(stg))
	for i, c := range stg {
		fields[i] = arrow.Field{Name: c.name, Type: sfArrowType(c.typ), Nullable: true}
	}
	schema := arrow.NewSchema(fields, nil)
	var buf bytes.Buffer // the sink PUTs the file from memory
	w, err := export.NewWriter(&buf, parquetOptions)
	if err != nil {
		return 0, err
	}
	var seq int64
	for _, h := range s.held {
		arrs := make([]arrow.Array, len(stg))
		byName := map[string]arrow.Array{}
		for _, c := range h.cols {
			byName[c.name] = c.arr
		}
		for i, c := range stg {
			switch c.name {
			case sfColFile:
				b := array.NewStringBuilder(s.mem)
				for range h.rows {
					b.Append(file)
				}
				arrs[i] = b.NewArray()
				b.Release()
				continue
			case sfColSeq:
				b := array.NewInt64Builder(s.mem)
				for range h.rows {
					b.Append(seq)
					seq++
				}
				arrs[i] = b.NewArray()
				b.Release()
				continue
			}
			a, ok := byName[c.name]
			switch {
			case !ok:
				arrs[i] = array.MakeArrayOfNull(s.mem, fields[i].Type, h.rows)
			case a.DataType().ID() == arrow.INT64 && fields[i].Type.ID() == arrow.FLOAT64:
				arrs[i] = widenToFloat(s.mem, a)
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
			return 0, err
		}
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	return int64(buf.Len()), nil
}

func widenToFloat(mem memory.Allocator, arr arrow.Array) arrow.Array {
	a := arr.(*array.Int64)
	b := array.NewFloat64Builder(mem)
	defer b.Release()
	for i := 0; i < a.Len(); i++ {
		if a.IsNull(i) {
			b.AppendNull()
		} else {
			b.Append(float64(a.Value(i)))
		}
	}
	return b.NewArray()
}

func (s *snowflake) release() {
	for _, h := range s.held {
		for _, c := range h.cols {
			c.arr.Release()
		}
	}
	s.held, s.heldRows, s.heldBytes = nil, 0, 0
}

// ---------------------------------------------------------------------------
// BigQuery: replicates plugins/sink-bigquery (schema.go converter.convert
// and unionFields, sink.go Write and flush) for types = {} and
// flatten = false. The Parquet file goes to a temporary file, as the sink's
// does before the load job uploads it.

const (
	bqColID   = "__pipeline_id"
	bqColSeq  = "__pipeline_seq"
	bqTypeKey = "bigquery.type"
)

var bqTimestamp = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

type bigquery struct {
	mem       memory.Allocator
	maxBytes  int64
	held      []arrow.RecordBatch
	heldBytes int64
	seq       int64
}

func (s *bigquery) flushDue() bool {
	return len(s.held) > 0 && s.heldBytes >= s.maxBytes
}

// write is converter.convertBatch: the data columns converted, then the
// record id and the arrival sequence.
func (s *bigquery) write(b sdk.Batch) error {
	rec := b.Record
	n := int(rec.NumRows())
	if n == 0 {
		return nil
	}
	var fields []arrow.Field
	var cols []arrow.Array
	release := func() {
		for _, a := range cols {
			a.Release()
		}
	}
	for i, f := range rec.Schema().Fields() {
		if sdk.IsReserved(f.Name) {
			continue
		}
		nf, na, err := s.convert(f, rec.Column(i), f.Name)
		if err != nil {
			release()
			return err
		}
		fields = append(fields, nf)
		cols = append(cols, na)
	}
	idb := array.NewStringBuilder(s.mem)
	seqb := array.NewInt64Builder(s.mem)
	for i := 0; i < n; i++ {
		if id := b.ID(i); id != "" {
			idb.Append(id)
		} else {
			idb.AppendNull()
		}
		seqb.Append(s.seq + int64(i))
	}
	fields = append(fields,
		arrow.Field{Name: bqColID, Type: arrow.BinaryTypes.String, Nullable: true},
		arrow.Field{Name: bqColSeq, Type: arrow.PrimitiveTypes.Int64, Nullable: true})
	cols = append(cols, idb.NewArray(), seqb.NewArray())
	idb.Release()
	seqb.Release()
	out := array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, int64(n))
	release()
	s.seq += int64(n)
	s.held = append(s.held, out)
	s.heldBytes += recordBytes(out)
	return nil
}

// convert is converter.convert without declared types.
func (s *bigquery) convert(f arrow.Field, a arrow.Array, path string) (arrow.Field, arrow.Array, error) {
	out := arrow.Field{Name: f.Name, Nullable: true, Metadata: f.Metadata}
	if arrowjson.IsRaw(f) {
		out.Type = f.Type
		a.Retain()
		return out, a, nil
	}
	switch t := f.Type.(type) {
	case *arrow.StringType, *arrow.BooleanType, *arrow.Float64Type, *arrow.Int64Type, *arrow.Date32Type, *arrow.BinaryType:
		out.Type = f.Type
		a.Retain()
		return out, a, nil
	case *arrow.LargeStringType:
		b := array.NewStringBuilder(s.mem)
		defer b.Release()
		ls := a.(*array.LargeString)
		for i := 0; i < ls.Len(); i++ {
			if ls.IsNull(i) {
				b.AppendNull()
			} else {
				b.Append(ls.Value(i))
			}
		}
		out.Type = arrow.BinaryTypes.String
		return out, b.NewArray(), nil
	case *arrow.NullType:
		out.Type = arrow.BinaryTypes.String
		return out, array.MakeArrayOfNull(s.mem, out.Type, a.Len()), nil
	case *arrow.TimestampType:
		b := array.NewTimestampBuilder(s.mem, bqTimestamp)
		defer b.Release()
		ta := a.(*array.Timestamp)
		toTime, _ := t.GetToTimeFunc()
		for i := 0; i < ta.Len(); i++ {
			if ta.IsNull(i) {
				b.AppendNull()
				continue
			}
			b.Append(arrow.Timestamp(toTime(ta.Value(i)).UnixMicro()))
		}
		out.Type = bqTimestamp
		return out, b.NewArray(), nil
	case *arrow.StructType:
		if t.NumFields() == 0 {
			return s.toJSON(f, a, out)
		}
		sa := a.(*array.Struct)
		fields := make([]arrow.Field, t.NumFields())
		children := make([]arrow.Array, t.NumFields())
		for i, cf := range t.Fields() {
			child := array.NewSlice(sa.Field(i), int64(sa.Offset()), int64(sa.Offset()+sa.Len()))
			nf, na, err := s.convert(cf, child, path+"."+cf.Name)
			child.Release()
			if err != nil {
				for _, x := range children[:i] {
					x.Release()
				}
				return out, nil, err
			}
			fields[i], children[i] = nf, na
		}
		bm := validityOf(s.mem, a)
		if bm != nil {
			defer bm.Release()
		}
		out.Type = arrow.StructOf(fields...)
		datas := make([]arrow.ArrayData, len(children))
		for i, ch := range children {
			datas[i] = ch.Data()
		}
		nd := array.NewData(out.Type, sa.Len(), []*memory.Buffer{bm}, datas, sa.NullN(), 0)
		for _, ch := range children {
			ch.Release()
		}
		res := array.MakeFromData(nd)
		nd.Release()
		return out, res, nil
	case *arrow.ListType:
		if _, nested := t.Elem().(*arrow.ListType); nested {
			return out, nil, fmt.Errorf("column %q is a list of lists, which the sink rejects", path)
		}
		la := a.(*array.List)
		raw := la.Offsets()
		lo, hi := int64(raw[0]), int64(raw[la.Len()])
		vals := array.NewSlice(la.ListValues(), lo, hi)
		ef, ev, err := s.convert(t.ElemField(), vals, path)
		vals.Release()
		if err != nil {
			return out, nil, err
		}
		defer ev.Release()
		if ev.NullN() > 0 {
			return out, nil, fmt.Errorf("column %q holds a list with a null element, which the sink rejects", path)
		}
		offs := make([]int32, la.Len()+1)
		for i := range offs {
			offs[i] = raw[i] - int32(lo)
		}
		ob := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs))
		bm := validityOf(s.mem, a)
		if bm != nil {
			defer bm.Release()
		}
		ef.Nullable = true
		out.Type = arrow.ListOfField(ef)
		nd := array.NewData(out.Type, la.Len(), []*memory.Buffer{bm, ob}, []arrow.ArrayData{ev.Data()}, la.NullN(), 0)
		res := array.MakeFromData(nd)
		nd.Release()
		return out, res, nil
	}
	switch f.Type.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		b := array.NewInt64Builder(s.mem)
		defer b.Release()
		for i := 0; i < a.Len(); i++ {
			if a.IsNull(i) {
				b.AppendNull()
				continue
			}
			var v int64
			switch x := a.(type) {
			case *array.Int8:
				v = int64(x.Value(i))
			case *array.Int16:
				v = int64(x.Value(i))
			case *array.Int32:
				v = int64(x.Value(i))
			case *array.Uint8:
				v = int64(x.Value(i))
			case *array.Uint16:
				v = int64(x.Value(i))
			case *array.Uint32:
				v = int64(x.Value(i))
			case *array.Uint64:
				v = int64(x.Value(i)) // the sink stops the load above MaxInt64
			}
			b.Append(v)
		}
		out.Type = arrow.PrimitiveTypes.Int64
		return out, b.NewArray(), nil
	case arrow.FLOAT16, arrow.FLOAT32:
		b := array.NewFloat64Builder(s.mem)
		defer b.Release()
		for i := 0; i < a.Len(); i++ {
			if a.IsNull(i) {
				b.AppendNull()
				continue
			}
			switch x := a.(type) {
			case *array.Float32:
				b.Append(float64(x.Value(i)))
			case *array.Float16:
				b.Append(float64(x.Value(i).Float32()))
			}
		}
		out.Type = arrow.PrimitiveTypes.Float64
		return out, b.NewArray(), nil
	}
	return out, nil, fmt.Errorf("column %q has the Arrow type %s, which the BigQuery sink cannot map", path, f.Type)
}

// validityOf is a copy of a's validity bitmap, or nil when a has no nulls.
func validityOf(mem memory.Allocator, a arrow.Array) *memory.Buffer {
	if a.NullN() == 0 {
		return nil
	}
	bm := memory.NewResizableBuffer(mem)
	bm.Resize(int(bitutil.BytesForBits(int64(a.Len()))))
	for i := 0; i < a.Len(); i++ {
		if a.IsValid(i) {
			bitutil.SetBit(bm.Bytes(), i)
		} else {
			bitutil.ClearBit(bm.Bytes(), i)
		}
	}
	return bm
}

func (s *bigquery) toJSON(f arrow.Field, a arrow.Array, out arrow.Field) (arrow.Field, arrow.Array, error) {
	enc := arrowjson.NewEncoder()
	b := array.NewStringBuilder(s.mem)
	defer b.Release()
	var buf []byte
	for i := 0; i < a.Len(); i++ {
		if a.IsNull(i) {
			b.AppendNull()
			continue
		}
		buf = enc.AppendValue(buf[:0], f, a, i)
		b.Append(string(buf))
	}
	out.Type = arrow.BinaryTypes.String
	out.Metadata = arrow.NewMetadata([]string{bqTypeKey}, []string{"JSON"})
	return out, b.NewArray(), nil
}

func bqIsJSON(f arrow.Field) bool {
	if arrowjson.IsRaw(f) {
		return true
	}
	v, ok := f.Metadata.GetValue(bqTypeKey)
	return ok && v == "JSON"
}

// unionFields is sinkbigquery's: new fields are added, structs and lists
// merge, INT64 widens to FLOAT64; other differences stop the load.
func unionFields(dst, src []arrow.Field, path string) ([]arrow.Field, error) {
	index := map[string]int{}
	for i, f := range dst {
		index[f.Name] = i
	}
	for _, f := range src {
		i, ok := index[f.Name]
		if !ok {
			index[f.Name] = len(dst)
			dst = append(dst, f)
			continue
		}
		m, err := unionField(dst[i], f, path+f.Name)
		if err != nil {
			return nil, err
		}
		dst[i] = m
	}
	return dst, nil
}

func unionField(a, b arrow.Field, path string) (arrow.Field, error) {
	if arrow.TypeEqual(a.Type, b.Type) && bqIsJSON(a) == bqIsJSON(b) {
		return a, nil
	}
	ds, aok := a.Type.(*arrow.StructType)
	ss, bok := b.Type.(*arrow.StructType)
	if aok && bok {
		fs, err := unionFields(append([]arrow.Field(nil), ds.Fields()...), ss.Fields(), path+".")
		if err != nil {
			return a, err
		}
		a.Type = arrow.StructOf(fs...)
		return a, nil
	}
	dl, aok := a.Type.(*arrow.ListType)
	sl, bok := b.Type.(*arrow.ListType)
	if aok && bok {
		e, err := unionField(dl.ElemField(), sl.ElemField(), path)
		if err != nil {
			return a, err
		}
		a.Type = arrow.ListOfField(e)
		return a, nil
	}
	ia, ib := a.Type.ID(), b.Type.ID()
	switch {
	case !bqIsJSON(a) && !bqIsJSON(b) && ia == arrow.INT64 && ib == arrow.FLOAT64:
		return b, nil
	case !bqIsJSON(a) && !bqIsJSON(b) && ia == arrow.FLOAT64 && ib == arrow.INT64:
		return a, nil
	}
	return a, fmt.Errorf("column %q changed type within one flush: %s, then %s", path, a.Type, b.Type)
}

func (s *bigquery) flush() (int64, error) {
	if len(s.held) == 0 {
		return 0, nil
	}
	defer s.release()
	var fields []arrow.Field
	var err error
	for _, r := range s.held {
		if fields, err = unionFields(fields, r.Schema().Fields(), ""); err != nil {
			return 0, err
		}
	}
	f, err := os.CreateTemp("", "benchwarehouse-bigquery-*.parquet")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	w, err := export.NewWriter(f, parquetOptions)
	if err != nil {
		return 0, err
	}
	// As the sink: an empty record of the flush's schema fixes the file's
	// schema; the writer fills the columns a record lacks with nulls.
	empty := make([]arrow.Array, len(fields))
	for i, fd := range fields {
		empty[i] = array.MakeArrayOfNull(s.mem, fd.Type, 0)
	}
	rec := array.NewRecordBatch(arrow.NewSchema(fields, nil), empty, 0)
	err = w.Write(rec)
	rec.Release()
	for _, a := range empty {
		a.Release()
	}
	if err != nil {
		return 0, err
	}
	for _, r := range s.held {
		if err := w.Write(r); err != nil {
			return 0, err
		}
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (s *bigquery) release() {
	for _, r := range s.held {
		r.Release()
	}
	s.held, s.heldBytes = nil, 0
}
