// Package expr compiles the per-record language (expr-lang) against an Arrow
// schema and evaluates it over whole record batches: predicates (`where`,
// `when`), values (a transform's `set`) and templates
// ("Churn risk {{ classifications.churn_risk.confidence }}").
//
// # Names and types
//
// Every column of the schema is a name in the expression, except the
// engine's bookkeeping columns (sdk.ReservedPrefix), which expressions
// cannot see. Structs are nested maps with fixed keys, so a misspelt field
// (`classifications.churn_rsk.label`, `metdata.queue`) is a compile error
// with its line and column. Integer columns are int (uint64 values beyond
// the int range are float), floating-point and
// decimal columns float, strings and binaries string, timestamps and dates
// time.Time, durations time.Duration, lists arrays, Arrow maps maps with
// any keys, and a utf8 field with the metadata pipeline.json=raw is the
// decoded JSON document, of type any. With a nil schema only the syntax is
// checked, and each batch's own schema is used when it arrives; a batch with
// a schema other than the compiled one gets its own compiled plan too.
//
// # Nulls
//
// A null value, a missing struct child and a value under a null parent are
// all nil, and nil never causes an error:
//
//   - A comparison (==, !=, <, <=, >, >=), `in`, contains, startsWith,
//     endsWith and matches with a nil operand is false. `x != 'High'` is
//     false when x is null, and so is `x == y` when both are. Only a
//     comparison with the literal nil tests for null: `x == nil`, `x != nil`.
//   - Logic is two-valued: a condition that is nil counts as false, and `!`
//     and `not` negate that, so `!(x == 'High')` and `x not in [...]` are true
//     when x is null, while `x != 'High'` is false.
//   - Arithmetic, unary minus and builtin functions with a nil argument give
//     nil (`lower(x)`, `len(x)`, `x * 100`), as do member access, indexing
//     (also out of range) and slicing of nil; nil then compares false. The
//     builtins type, string, toJSON and now keep expr's own handling of nil.
//   - In a template a nil value renders as "".
//
// Errors that remain at evaluation are genuine type errors that the schema
// cannot rule out (a raw JSON field holding a string where a number is
// compared, a condition that is not bool) and integer modulo by zero. They
// are a *RowError naming the 1-based row within the batch and the
// expression; the batch fails as a whole rather than silently dropping the
// row. Float division by zero is ±Inf, as in expr.
//
// # Vectorised evaluation
//
// A predicate is planned once per schema. These forms run column at a time
// over the Arrow arrays, with no per-row maps: `&&`, `||`, `!`/`not`, true
// and false, a bool column as a condition, and, where the column is a path
// of struct fields to an integer, float, string or bool leaf,
//
//   - column == != < <= > >= literal (number, string, bool), either way
//     round; column == nil, column != nil (any column type);
//   - column in [literals], column not in [literals];
//   - column contains / startsWith / endsWith / matches 'literal' (the
//     regexp compiled once), and hasPrefix / hasSuffix;
//   - lower(column) or upper(column) in place of a string column in any of
//     these.
//
// Struct child arrays are resolved once per batch, and a row is null where
// the leaf or any parent struct is. Any other sub-expression of the boolean
// structure (arithmetic, other functions, closures, raw JSON fields) runs
// row at a time with expr on an env that holds only the fields it reads,
// and only on the rows where it can still change the result: in
// `a && b` the expr part b runs only where a holds. Those programs are
// rewritten (expr's Patch) into calls of null-safe helpers, so both paths
// give the same answers.
//
// # Values
//
// A value expression (a transform's computed field, CompileValue) gives one
// Arrow array per batch. A column path keeps the column's own type and
// reuses its array; otherwise expr's static type decides the column type
// (bool, int → Int64, float → Float64, string), and any other type is JSON
// text in a String column marked pipeline.json=raw. Column paths, literals,
// the vectorised predicate forms and `cond ? a : b` over them run column at
// a time; anything else row at a time, with the same null rules.
//
// # Templates
//
// A template's text outside {{ }} is literal; there is no escape for a
// literal "{{". A placeholder that is a column path reads the column
// directly; any other runs with expr. Values render as: strings raw, ints
// without decimals, floats in their shortest form (0.91, 3, 1e-7), times in
// RFC 3339, structs, maps and lists as compact JSON with sorted keys.
package expr
