// Package sdk is the only package a plugin author imports.
//
// A plugin is a Source, a Sink or a Transform. Its main function is a
// single call:
//
//	func main() { sdk.Serve(&MySink{}) }
//
// The engine starts the plugin as its own process, asks it to describe itself
// (Info), decodes the plugin's HCL block against the attributes it declares,
// hands it the values (Configure), and then streams Arrow record batches from
// it (Source.Read), to it (Sink.Write) or through it (Transform.Transform).
//
// Optional abilities are separate interfaces that the SDK type-asserts for,
// in the manner of database/sql/driver: SchemaSource, Partitioner and
// PartitionReader, SinkCloser, SinkAborter and BufferedSink.
package sdk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
)

// ProtocolVersion is the version of the plugin protocol this SDK speaks.
const ProtocolVersion = 1

// Kind says whether a plugin is a source, a sink or a transform.
type Kind string

const (
	KindSource    Kind = "source"
	KindSink      Kind = "sink"
	KindTransform Kind = "transform"
)

// Info describes a plugin: what it is and which attributes its HCL block takes.
type Info struct {
	Kind        Kind
	Type        string // the first block label, e.g. "webhook" in sink "webhook" "crm"
	Version     string
	Description string
	Config      []Attribute
	// Push marks a push source: one that listens for records and keeps
	// what it accepts in the engine's Inbox, reading them from there (as
	// sdk/push does). The engine then runs it on every worker of a cluster,
	// all of them sharing one inbox, instead of reading it as one partition
	// on one worker.
	Push bool
}

// Attribute is one attribute of a plugin's HCL block. The engine checks the
// block against these before the plugin sees it, so a missing, unknown or
// mistyped attribute is reported at its file:line:column.
type Attribute struct {
	Name        string
	Type        Type
	Required    bool
	Description string
	// Default is used when the attribute is absent. It must be a value that
	// encodes to JSON of the attribute's type.
	Default any
	// Template attributes may contain {{ expr }} placeholders. The engine
	// compiles them against the record schema and renders them for every
	// record; the plugin reads the result with Batch.Template.
	Template bool
	// Expression attributes hold one per-record expression, without
	// braces (order_by = "metadata.customer_id"). The engine evaluates it
	// for every record like a template; read it with Batch.Template.
	Expression bool
	// Nested makes the attribute a nested block written
	//	retry { max_attempts = 8 }
	// with these attributes (Type is then unused). Its value arrives as a
	// JSON object, or is absent when the block is not written.
	Nested []Attribute
}

// Type is an attribute type in go-cty's JSON type notation.
type Type string

const (
	String Type = `"string"`
	Number Type = `"number"`
	Bool   Type = `"bool"`
	Any    Type = `"dynamic"`
	// Duration is a string that Go's time.ParseDuration accepts, such as
	// "500ms", "10s" or "1h30m". The engine checks it when it decodes the
	// block, so a bad value is reported at its file:line:column together
	// with every other error of the block; the plugin receives the string
	// as written. It may be an element type: ListOf(Duration).
	Duration Type = `"duration"`
)

// ListOf is the type of a list whose elements are of type t.
func ListOf(t Type) Type { return Type(`["list",` + string(t) + `]`) }

// MapOf is the type of a map whose values are of type t.
func MapOf(t Type) Type { return Type(`["map",` + string(t) + `]`) }

// Config is a plugin's decoded HCL block.
type Config struct {
	// Name is the block's name label, e.g. "crm" in sink "webhook" "crm".
	Name string
	// JSON holds the attribute values as a JSON object, defaults applied.
	JSON json.RawMessage
	// Templates lists the template attributes whose value has placeholders.
	Templates []string
	// Outbox is the engine's durable outbox for this block, nil when the
	// engine serves none (`pipeline validate`, tests without an engine).
	Outbox Outbox
	// Inbox is the engine's durable inbox for a source (push sources keep
	// what they accept there), nil when the engine serves none.
	Inbox Inbox

	warnings *[]string
	// NoWait asks a sink with an outbox not to wait for pending deliveries
	// when its stream ends (`pipeline run --no-wait`).
	NoWait bool
	// FullRefresh says this run exports everything again (`pipeline run
	// --full-refresh`, or a sink with incremental = false): a sink that
	// appends to a destination replaces it instead.
	FullRefresh bool
	// BaseDir is the absolute directory of the pipeline file that holds the
	// block ("" outside a pipeline file). A source resolves a relative input
	// path against it when the path names nothing relative to the working
	// directory (as `source "file"` does).
	BaseDir string
}

// Warn reports a problem with the block that does not stop it (a
// signature check turned off, say). pipeline validate and run show it as a
// warning at the block, at the attribute the message names first.
func (c Config) Warn(format string, args ...any) {
	if c.warnings != nil {
		*c.warnings = append(*c.warnings, fmt.Sprintf(format, args...))
	}
}

// Decode unmarshals the block's attributes into v, typically a struct with
// `json:"name"` tags.
func (c Config) Decode(v any) error {
	if err := json.Unmarshal(c.JSON, v); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	return nil
}

// HasTemplate reports whether the attribute holds {{ }} placeholders, so its
// value differs per record and must be read with Batch.Template.
func (c Config) HasTemplate(attr string) bool {
	for _, t := range c.Templates {
		if t == attr {
			return true
		}
	}
	return false
}

// Source produces records.
type Source interface {
	// Info describes the plugin. It is called before Configure, and may be
	// the only call the plugin gets; it must not do I/O.
	Info() Info
	// Configure is called once with the plugin's block before Schema or
	// Read. An error is reported against the block and nothing is read.
	Configure(ctx context.Context, cfg Config) error
	// Read emits the source's records as batches, starting after the
	// position `from` (nil: from the beginning), and returns nil once the
	// source is drained. For each batch it calls emit.Emit with the position
	// that marks the batch's end; the engine hands that position back as
	// `from` on the next run once every sink has acked the batch, so the same
	// `from` must always lead to the same records. Read must return promptly
	// when ctx is cancelled. Any error ends the run and is shown to the user
	// with the plugin's name: say where (file and line) and what to do.
	Read(ctx context.Context, from []byte, emit Emitter) error
}

// Emitter receives a source's batches.
type Emitter interface {
	// Emit sends one batch and the position of its end. Emit takes over the
	// caller's reference to rec and releases it. It blocks while the engine
	// applies backpressure and fails once the run is cancelled.
	Emit(rec arrow.RecordBatch, position []byte) error
	// EmitAt is Emit with the batch's origin: where each of its records is in
	// the source's input. The engine derives the id of a record without a
	// row_id from its source, origin name and place, so ids stay the same
	// however a later run cuts batches (a full refresh, a resumed run), and
	// names the record's place in runtime errors ("calls.jsonl:3001").
	EmitAt(rec arrow.RecordBatch, position []byte, origin Origin) error
	// Skipped counts records that were dropped on purpose (bad input with
	// on_error = "skip"), so the run's summary can report them.
	Skipped(n int)
}

// Origin says where the records of one batch are in a source's input.
type Origin struct {
	// Name identifies the input: a file path as the glob names it, an
	// object key, a table. It must not depend on how the input is read.
	Name string
	// Unit is what Places count: "line" (1-based line where the record
	// starts) or "row" (0-based row index). "line" when empty.
	Unit string
	// Places holds one entry per row of the batch.
	Places []int64
	// IDs, when set, are the records' ids, one per row, as the source
	// assigned them: a push source tells its clients the ids the sinks
	// will see (RecordID). Nil: the engine derives each record's id from
	// its row_id, else from the source, Name and its place.
	IDs []string
}

// IDPrefix is the first part of the ids the engine derives for records
// without a row_id: a hash of the source's name and the origin's name.
func IDPrefix(source, origin string) string {
	h := sha256.Sum256([]byte(source + "\x00" + origin))
	return hex.EncodeToString(h[:8]) + "-"
}

// ErrNotPartitioned is what a Partitioner's Partitions answers when the
// source, as configured, does not split: it is one partition, named "",
// read with Read.
var ErrNotPartitioned = errors.New("the source is not partitioned")

// SchemaSource is a Source that can tell its record schema before reading,
// e.g. by sampling its input. The engine uses it to check expressions at
// validate time; without it, expressions are checked when the first batch
// arrives.
type SchemaSource interface {
	Schema(ctx context.Context) (*arrow.Schema, error)
}

// Partitioner is a Source whose input splits into partitions, each read on
// its own with a checkpoint of its own, so that several workers share the
// source (`pipeline serve --cluster` gives each partition to one worker at
// a time): the files of a glob, the objects under a prefix. A Source that
// implements Partitioner must implement PartitionReader too. A Source
// without it is one partition, named "", read with Read.
//
// A Partitioner whose configuration does not split it (source "postgres"
// without partitions) answers ErrNotPartitioned: it is one partition then.
type Partitioner interface {
	// Partitions lists the partitions there are now, after Configure. Each
	// name must be stable (the same part of the input has the same name in
	// every call and every process, since the engine keeps the partition's
	// checkpoint under it) and not empty: a file path as the glob names it,
	// an object key. A part that is gone is left out; a new one is a new
	// name. The SDK sorts the names and drops duplicates. The engine calls
	// it again whenever it wants to see new partitions, so it should be as
	// cheap as a listing.
	Partitions(ctx context.Context) ([]string, error)
}

// PartitionReader is a Source that reads one partition (a name Partitions
// returned) on its own. ReadPartition is Read restricted to that partition:
// it emits the partition's records from after the position `from` (nil:
// from the partition's beginning), which is a position that this same
// partition's ReadPartition emitted, and returns nil once the partition is
// drained. The positions it emits cover this partition alone. A record
// must get the same origin (name and place) as Read gives it, so that its
// id does not depend on whether the source was read whole or by
// partitions. A partition that no longer exists (its file was removed)
// reads nothing and is not an error.
type PartitionReader interface {
	ReadPartition(ctx context.Context, partition string, from []byte, emit Emitter) error
}

// Sink consumes records.
type Sink interface {
	// Info describes the plugin; see Source.Info.
	Info() Info
	// Configure is called once with the plugin's block before Write.
	Configure(ctx context.Context, cfg Config) error
	// Write delivers one batch. It is called for one batch at a time, in
	// order. Returning nil acks the batch: it must then be durable at the
	// destination, because the engine may commit the source position past it.
	// Returning an error fails the run; the batch is not acked and is sent
	// again on the next run. A batch's schema may differ from the previous
	// batch's (a field appeared); the sink must handle that or fail clearly.
	Write(ctx context.Context, b Batch) error
}

// SinkCloser is a Sink with something to flush or release when the stream
// ends. Close is called once after the last Write; an error fails the run.
// In a run that ends without completing (another plugin failed, the run was
// interrupted) a BufferedSink's held batches are not flushed first; Close
// must then drop them, or the sink implements SinkAborter.
type SinkCloser interface {
	Close(ctx context.Context) error
}

// SinkAborter is a Sink told that its run ends without completing. Abort is
// called instead of the final Flush and Close: it releases what the sink
// holds without making any of it visible (a replacing sink keeps the old
// file or table as it was). Those batches stay unacked and come again in the
// next run.
type SinkAborter interface {
	Abort(ctx context.Context) error
}

// MaxHeldBatches is how many written batches a BufferedSink may hold before
// the SDK flushes it whatever FlushDue says: the engine keeps sending until
// this many are unacked, so a sink waiting for more never stalls the run.
const MaxHeldBatches = 16384

// A BufferedSink holds the batches it is given until it flushes them: the
// rows of an object being uploaded, of a warehouse load being gathered. The
// SDK acks a batch only after a Flush that covers it has returned, so an acked
// batch is durable at the destination and the engine's checkpoint never runs
// ahead of it.
//
// The SDK calls Flush when FlushDue reports true (asked after every Write and
// every FlushCheckInterval while the stream is idle), when MaxHeldBatches are
// held, and at the end of the stream before Close. Write, FlushDue and Flush
// are never called concurrently.
type BufferedSink interface {
	Sink
	// FlushDue reports whether what is held should be flushed now: a size
	// or age limit was reached.
	FlushDue(now time.Time) bool
	// Flush makes every batch written so far durable. A failed Flush fails
	// the run; nothing written since the last good Flush is acked.
	Flush(ctx context.Context) error
}

// FlushCheckInterval is how often the SDK asks an idle BufferedSink whether
// a flush is due.
const FlushCheckInterval = 250 * time.Millisecond

// Transform turns batches into batches: it drops records and adds or
// replaces fields (an enrichment call, a redaction, a computed column).
// Every output record keeps the id of the input record it came from, so the
// engine still commits a source position only once every sink has acked
// everything derived from it.
type Transform interface {
	// Info describes the plugin; see Source.Info. Its Kind is
	// KindTransform.
	Info() Info
	// Configure is called once with the plugin's block before Transform.
	Configure(ctx context.Context, cfg Config) error
	// Transform returns what becomes of b. It is called for one batch at a
	// time, in order, and the next call waits for it to return, so a
	// transform never reorders batches; to go faster, work on b's records
	// concurrently inside the call (batched requests to a model endpoint).
	//
	// Build the result from b, which carries the record ids: b.With adds or
	// replaces a field, b.Filter drops records, and b itself passes the
	// batch through. The SDK puts each record's id back on the wire, and the
	// engine refuses an output record whose id is not one of its input's,
	// so a transform cannot add records or swap them between batches. A
	// result with no records is fine: everything was dropped. The SDK
	// releases the returned batch; b is valid only during the call.
	//
	// An error fails the run; the batch and everything after it are done
	// again on the next run (say which record and why).
	Transform(ctx context.Context, b Batch) (Batch, error)
}

// ErrRetryable may be wrapped by a Sink's Write error to say the failure is
// transient (a timeout, a 503). The engine then reports it as such; the batch
// is not acked either way.
var ErrRetryable = errors.New("retryable")
