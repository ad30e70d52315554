// Package arrowjson converts JSON objects to Arrow record batches and back.
//
// # Decoding
//
// A Decoder turns JSON objects (typically the lines of a JSONL file) into
// Arrow record batches, inferring the schema as it goes. It is built for
// speed: each line is checked and tokenized in one pass by a small
// purpose-built scanner, and the tokens are appended straight to per-column
// buffers that Flush turns into Arrow arrays; there are no per-row maps, no
// reflection and no allocations per row. (valyala/fastjson was measured
// first: its parse alone costs more than this whole decoder, because it
// builds a value tree and unescapes every key and string again when read.)
//
// The schema is kept across Flushes and only grows:
//
//   - objects become structs, arrays lists, strings utf8, true/false bool;
//     a number is int64 when it is an integer literal that fits, else
//     float64. Every field is nullable. Fields keep their first-seen order.
//   - a field that first appears at a later row is added; earlier rows of the
//     batch hold null for it.
//   - int64 followed by float64 widens the field to float64 (buffered
//     values are converted). Any other conflict (string vs number, object
//     vs string, an array whose elements disagree, ...) turns the field into
//     a raw JSON column: utf8 with field metadata "pipeline.json" = "raw"
//     (MetadataKey, MetadataRaw; see IsRaw), holding each value as compact
//     JSON text. Buffered values are converted. A conflict between array
//     elements turns the nearest enclosing object field into a raw column.
//     A field's type may thus differ between batches; its name stays.
//   - a field only ever seen as null has type arrow.Null.
//   - an absent key is null. An explicit JSON null is null too, and its
//     path is listed in the row's sdk.NullsColumn (list<utf8>, null for rows
//     without explicit nulls) so that the Encoder writes it back; see
//     NullPath for the path syntax. That column is added the first time an
//     explicit null is seen and from then on is always the last column.
//     Nulls that are array elements are plain list element nulls.
//   - for a duplicate key the last value wins, as with encoding/json.
//   - keys are kept exactly, dots and all.
//
// The decoder accepts exactly the JSON objects encoding/json accepts, with
// three exceptions: nesting deeper than MaxDepth, numbers beyond the float64
// range, and top-level keys that start with sdk.ReservedPrefix (those column
// names belong to the engine) are rejected. Invalid UTF-8 and unpaired
// UTF-16 surrogates in \u escapes become U+FFFD, as with encoding/json. A
// leading UTF-8 byte order mark and a trailing "\n" or "\r\n" are ignored.
//
// # Encoding
//
// An Encoder writes one row of a record batch as a compact JSON object. It
// reproduces what the Decoder read: null fields are omitted unless listed in
// the row's sdk.NullsColumn, raw JSON columns are written verbatim, and
// reserved columns (sdk.ReservedPrefix) are skipped. It also writes the
// Arrow types other sources produce: all integer widths, float16/32/64,
// bool, utf8/large_utf8/string_view, binary as base64, date32/64 as
// "2006-01-02", timestamps in RFC 3339 (in the type's time zone, UTC when it
// has none), list/large_list/fixed_size_list, struct, map (as an object) and
// dictionary. Any other type is written as the JSON string of its ValueStr.
package arrowjson
