package sdk

import (
	"github.com/apache/arrow-go/v18/arrow"
)

// Schema metadata keys that a SchemaSource sets on the schema it reports.
const (
	// SchemaKindKey says how complete a reported schema is. Its only value
	// today is SchemaSampled; without it a schema is complete: every record
	// the source will ever emit has only these fields.
	SchemaKindKey = "pipeline.schema"
	// SchemaSampled marks a schema inferred from part of the input.
	SchemaSampled = "sampled"
	// SchemaSampleKey describes the part that was read, in words that end a
	// sentence such as "the schema was inferred from …": "the first 2,000
	// lines of up to 16 files".
	SchemaSampleKey = "pipeline.schema.sample"
)

// SampledSchema returns s marked as a sample: the fields and types seen in
// part of the input (the first lines of a file, the first rows of a table),
// when records later on may carry fields it lacks. sample, when not empty,
// says which part was read ("the first 2,000 lines of up to 16 files"), for
// the messages that mention the sample.
//
// Against a sampled schema, an expression that reads a field the schema
// lacks is a warning at validate time, not an error: the field reads as null
// until records carry it. Against a complete schema (unmarked) it is an
// error, so a SchemaSource that knows its schema exactly (a table's columns,
// a declared Parquet schema) should not mark it. Type errors against the
// fields the sample has stay errors either way.
//
// The other metadata of s is kept; nil gives nil.
func SampledSchema(s *arrow.Schema, sample string) *arrow.Schema {
	if s == nil {
		return nil
	}
	md := s.Metadata()
	keys := append([]string(nil), md.Keys()...)
	values := append([]string(nil), md.Values()...)
	set := func(k, v string) {
		if i := md.FindKey(k); i >= 0 {
			values[i] = v
			return
		}
		keys, values = append(keys, k), append(values, v)
	}
	set(SchemaKindKey, SchemaSampled)
	if sample != "" {
		set(SchemaSampleKey, sample)
	}
	out := arrow.NewMetadata(keys, values)
	return arrow.NewSchema(s.Fields(), &out)
}

// IsSampled reports whether s was marked with SampledSchema.
func IsSampled(s *arrow.Schema) bool {
	if s == nil {
		return false
	}
	v, ok := s.Metadata().GetValue(SchemaKindKey)
	return ok && v == SchemaSampled
}

// SchemaSample is the description of the sample SampledSchema was given, or
// "" when s is not sampled or the source did not say.
func SchemaSample(s *arrow.Schema) string {
	if !IsSampled(s) {
		return ""
	}
	v, _ := s.Metadata().GetValue(SchemaSampleKey)
	return v
}
