// Package arrowjson converts JSON objects to Arrow record batches and back.
//
// # Decoding
//
// A Decoder turns JSON objects (typically the lines of a JSONL file) into
// Arrow record batches, inferring the schema as it goes. It is built for
// speed: a reused fastjson parser feeds per-column buffers directly, with no
// per-row maps and no reflection. The schema is kept across Flushes and only
// grows:
//
//   - objects become structs, arrays lists, strings utf8, true/false bool;
//     a number is int64 when it is an integer literal that fits, else
//     float64. Every field is nullable. Fields keep their first-seen order.
//   - a field that first appears at a later row is added; earlier rows of the
//     batch hold null for it.
//   - int64 followed by float64 widens the field to float64. Any other
//     conflict (string vs number, object vs string, an array whose elements
//     disagree, ...) turns the field into a raw JSON column: utf8 with field
//     metadata "pipeline.json" = "raw" (see MetadataKey), holding each value
//     as compact JSON text. Values already buffered are converted. A
//     conflict inside an array element turns the nearest enclosing object
//     field into a raw column.
//   - a field only ever seen as null has type arrow.Null.
//   - an absent key is null. An explicit JSON null is null too, and its
//     path is listed in the row's sdk.NullsColumn (list<utf8>) so the
//     encoder can write it back; see NullPath for the path syntax. That
//     column is added the first time an explicit null is seen, and from then
//     on is always the last column.
//   - duplicate keys in one object: the last one wins, as with
//     encoding/json.
//   - top-level keys that start with sdk.ReservedPrefix are rejected: those
//     column names belong to the engine.
//
// The decoder is strict where strictness protects the data: invalid number
// literals (01, +1, NaN, Infinity, 1.), invalid escapes and numbers out of
// float64 range are errors. Invalid UTF-8 is replaced with U+FFFD, and lone
// UTF-16 surrogates in \u escapes too, as encoding/json does. As a
// deliberate leniency, raw control characters inside strings are accepted
// and kept (the encoder writes them escaped). Nesting deeper than 300 levels
// is rejected.
//
// # Encoding
//
// An Encoder writes one row of a record batch as a compact JSON object. It
// reproduces what the Decoder read: null fields are omitted unless listed in
// the row's sdk.NullsColumn, raw JSON columns are written verbatim, and
// reserved columns (sdk.ReservedPrefix) are skipped. It also handles the
// Arrow types other sources produce (all integer widths, float16/32,
// binary as base64, dates, timestamps in RFC 3339, lists, maps, dictionaries).
package arrowjson
