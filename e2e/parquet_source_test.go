package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/extensions"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// pqWriterHCL writes every record of a JSONL input to a Parquet file with
// sink "file" (replaced by each run, holding the run's records).
func pqWriterHCL(input, output string) string {
	return fmt.Sprintf(`
pipeline { name = "to-parquet" }

source "file" "in" {
  path = %q
}

sink "file" "pq" {
  inputs = [source.in]
  path   = %q
  format = "parquet"
}
`, input, output)
}

// pqReaderHCL reads Parquet files with source "file" into JSONL,
// through a filter when where is set.
func pqReaderHCL(input, where, output string) string {
	stage, from := "", "source.pq"
	if where != "" {
		stage = fmt.Sprintf("filter \"f\" {\n  inputs = [source.pq]\n  where  = %q\n}\n", where)
		from = "filter.f"
	}
	return fmt.Sprintf(`
pipeline { name = "from-parquet" }

source "file" "pq" {
  path       = %q
  format     = "parquet"
  batch_rows = 7
}

%s
sink "file" "out" {
  inputs = [%s]
  path   = %q
}
`, input, stage, from, output)
}

func pqRun(t *testing.T, dir string, args ...string) summary {
	t.Helper()
	res := pipeline(t, dir, nil, append([]string{"run", "--json"}, args...)...)
	if res.code != 0 {
		t.Fatalf("pipeline run %v: exit %d\n%s", args, res.code, res.stderr)
	}
	return parseSummary(t, res)
}

// pqNestedInput returns n JSONL records from seed: nested objects, arrays of
// scalars, objects and arrays, empty objects and arrays, explicit nulls at
// every depth, null array elements, fields only some records have, a field
// that is a string in some records and an object in others (a raw JSON
// column), integers, floats, integers in a float field, booleans and text
// that needs escaping.
func pqNestedInput(seed int64, n int) []string {
	rng := rand.New(rand.NewSource(seed))
	words := []string{"hej", "då", "naïve", "quote\"d", "back\\slash", "tab\there", "new\nline", "emoji 🎉", "</script>", "\u2028"}
	word := func() string { return words[rng.Intn(len(words))] }
	var out []string
	for i := 0; i < n; i++ {
		r := map[string]any{}
		if i%9 != 4 {
			r["row_id"] = fmt.Sprintf("r%d-%d", seed, i)
		}
		r["n"] = rng.Int63n(1<<62) - 1<<61
		if rng.Intn(2) == 0 {
			r["score"] = float64(rng.Intn(1000)) / 100 // 3 and 0.5 alike
		} else {
			r["score"] = rng.Intn(10)
		}
		r["ok"] = rng.Intn(2) == 0
		r["text"] = word() + " " + word()
		meta := map[string]any{"queue": []string{"support", "sales", "billing"}[rng.Intn(3)], "lang": word()}
		switch rng.Intn(4) {
		case 0:
			meta["agent"] = nil
		case 1:
			meta["agent"] = map[string]any{"id": rng.Intn(100), "team": nil}
		case 2:
			meta["agent"] = map[string]any{"id": rng.Intn(100), "team": word()}
		}
		r["meta"] = meta
		var tags []any
		for k := rng.Intn(4); k > 0; k-- {
			if rng.Intn(5) == 0 {
				tags = append(tags, nil)
			} else {
				tags = append(tags, word())
			}
		}
		if tags == nil {
			tags = []any{}
		}
		r["tags"] = tags
		var items []any
		for k := rng.Intn(3); k > 0; k-- {
			item := map[string]any{"sku": fmt.Sprintf("sku-%d", rng.Intn(50))}
			if rng.Intn(2) == 0 {
				item["qty"] = rng.Intn(5)
			}
			if rng.Intn(4) == 0 {
				item["note"] = nil
			}
			if rng.Intn(3) == 0 {
				item["dims"] = []any{[]any{rng.Intn(9), rng.Intn(9)}, []any{}}
			}
			items = append(items, item)
		}
		if items != nil {
			r["items"] = items
		}
		switch i % 5 {
		case 0:
			r["extra"] = "plain"
		case 1:
			r["extra"] = map[string]any{"k": []any{1, nil, "two"}, "z": nil}
		case 2:
			r["extra"] = nil
		}
		if i%7 == 0 {
			r["empty"] = map[string]any{}
		}
		if i%13 == 0 {
			r["gone"] = nil
		}
		b, _ := json.Marshal(r)
		out = append(out, string(b))
	}
	return out
}

// pqDecodeJSON parses one JSON text, keeping numbers exact.
func pqDecodeJSON(t *testing.T, s string) any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

func pqReadJSONL(t *testing.T, path string) []any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, pqDecodeJSON(t, sc.Text()))
	}
	return out
}

// pqRawPaths lists the fields of a Parquet file's stored Arrow schema that
// are raw JSON columns (their text is written as it is): "extra",
// "items[].x", "a.b".
func pqRawPaths(t *testing.T, path string) map[string]bool {
	t.Helper()
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer rdr.Close()
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fr.Schema()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	var walk func(prefix string, f arrow.Field)
	walk = func(prefix string, f arrow.Field) {
		p := prefix + f.Name
		if v, ok := f.Metadata.GetValue("pipeline.json"); ok && v == "raw" {
			out[p] = true
		}
		switch dt := f.Type.(type) {
		case *arrow.StructType:
			for _, c := range dt.Fields() {
				walk(p+".", c)
			}
		case *arrow.ListType:
			walk(p+"[]", arrow.Field{Type: dt.Elem(), Metadata: dt.ElemField().Metadata})
		}
	}
	for _, f := range s.Fields() {
		walk("", f)
	}
	return out
}

// pqWithoutExplicitNulls is what a record must be after a trip through a
// Parquet file: the same, except that object members whose value is null
// are absent. Parquet has a null but no "absent": the engine keeps the
// difference in sdk.NullsColumn, a reserved column that writers do not
// write, so JSONL written from the file leaves every null member out. The
// exception is the text of raw JSON columns (paths in raw), which is
// written as it was read, nulls and all. Null array elements stay.
func pqWithoutExplicitNulls(v any, path string, raw map[string]bool) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			p := k
			if path != "" {
				p = path + "." + k
			}
			switch {
			case e == nil:
			case raw[p]:
				out[k] = e
			default:
				out[k] = pqWithoutExplicitNulls(e, p, raw)
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			if e != nil {
				out[i] = pqWithoutExplicitNulls(e, path+"[]", raw)
			}
		}
		return out
	}
	return v
}

// pqSameValue compares parsed JSON exactly: same keys, same elements in the
// same order, strings and booleans equal, numbers equal as numbers (3 and
// 3.0 alike, no rounding).
func pqSameValue(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, e := range x {
			f, ok := y[k]
			if !ok || !pqSameValue(e, f) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !pqSameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		p, ok1 := new(big.Rat).SetString(string(x))
		q, ok2 := new(big.Rat).SetString(string(y))
		return ok1 && ok2 && p.Cmp(q) == 0
	}
	return reflect.DeepEqual(a, b)
}

func pqWriteLines(t *testing.T, path string, lines []string, appendTo bool) {
	t.Helper()
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if appendTo {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// JSONL → sink "file" parquet → source "file" parquet → sink "file" jsonl
// gives back the input record by record, but for explicit nulls (see
// pqWithoutExplicitNulls). Two pipelines chained through the Parquet file:
// the first replaces it every run with the run's new records, and the
// second reads each new version in full, and nothing when it did not
// change.
func TestParquetRoundTripThroughSinkAndSourceFile(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in", "records.jsonl")
	mid := filepath.Join(dir, "mid", "records.parquet")
	back := filepath.Join(dir, "out", "back.jsonl")
	writeFile(t, filepath.Join(dir, "a.hcl"), pqWriterHCL(in, mid))
	writeFile(t, filepath.Join(dir, "b.hcl"), pqReaderHCL(mid, "", back))

	var want []any
	for round, lines := range [][]string{pqNestedInput(1, 300), pqNestedInput(2, 120)} {
		pqWriteLines(t, in, lines, round > 0)
		if s := pqRun(t, dir, "--state", "a.db", "a.hcl"); s.Read != int64(len(lines)) || s.Delivered != int64(len(lines)) {
			t.Fatalf("round %d, to parquet: %+v", round, s)
		}
		raw := pqRawPaths(t, mid)
		if round == 0 && (!raw["extra"] || !raw["empty"]) {
			t.Fatalf("raw JSON columns of the file: %v (want extra and empty among them)", raw)
		}
		s := pqRun(t, dir, "--state", "b.db", "b.hcl")
		if s.Read != int64(len(lines)) || s.Delivered != int64(len(lines)) {
			t.Fatalf("round %d, from parquet: %+v", round, s)
		}
		for _, l := range lines {
			want = append(want, pqWithoutExplicitNulls(pqDecodeJSON(t, l), "", raw))
		}
		got := pqReadJSONL(t, back)
		if len(got) != len(want) {
			t.Fatalf("round %d: %d records back, want %d", round, len(got), len(want))
		}
		for i := range got {
			if !pqSameValue(got[i], want[i]) {
				g, _ := json.Marshal(got[i])
				w, _ := json.Marshal(want[i])
				t.Fatalf("round %d, record %d:\ngot  %s\nwant %s", round, i+1, g, w)
			}
		}
		// Unchanged: nothing more.
		if s := pqRun(t, dir, "--state", "b.db", "b.hcl"); s.Read != 0 {
			t.Fatalf("round %d: a run over the unchanged file read %d records", round, s.Read)
		}
	}
}

// A `where` on nested fields of Parquet-sourced records, through the real
// binary, keeps exactly the records the same test in Go keeps; and
// validate checks expressions against the footer's schema, exactly: a
// misspelt field is an error, not a warning about a sample.
func TestParquetSourceFilterOnNestedFields(t *testing.T) {
	dir := t.TempDir()
	mid := filepath.Join(dir, "calls.parquet")
	writeFile(t, filepath.Join(dir, "a.hcl"), pqWriterHCL(calls(), mid))
	pqRun(t, dir, "--state", "a.db", "a.hcl")

	where := `classifications.churn_risk.label == "High" && classifications.churn_risk.confidence > 0.8 && metadata.queue != "x"`
	writeFile(t, filepath.Join(dir, "b.hcl"), pqReaderHCL(mid, where, filepath.Join(dir, "high.jsonl")))
	if r := pipeline(t, dir, nil, "validate", "b.hcl"); r.code != 0 || len(validateDiags(r.stderr)) != 0 {
		t.Fatalf("validate: exit %d\n%s", r.code, r.stderr)
	}
	s := pqRun(t, dir, "--state", "b.db", "b.hcl")
	var want []string
	for _, r := range readRecords(t, calls()) {
		if highChurn(r.value) {
			want = append(want, rowID(r.value))
		}
	}
	got := outRowIDs(readOutJSONL(t, filepath.Join(dir, "high.jsonl")))
	if len(want) == 0 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("the filter kept %d records, want %d:\n%v\n%v", len(got), len(want), got, want)
	}
	if s.Read != 1000 || s.Filtered != int64(1000-len(want)) {
		t.Fatalf("summary %+v", s)
	}

	writeFile(t, filepath.Join(dir, "typo.hcl"), pqReaderHCL(mid, `classifications.churn_rsk.label == "High"`, "typo.jsonl"))
	r := pipeline(t, dir, nil, "validate", "typo.hcl")
	diags := validateDiags(r.stderr)
	if r.code == 0 || len(diags) != 1 || diags[0].severity != "Error" || !strings.Contains(r.stderr, "churn_rsk") {
		t.Fatalf("validate of a misspelt field: exit %d, %v\n%s", r.code, diags, r.stderr)
	}
}

// pqTypedFile writes a Parquet file as another tool would, with Arrow
// types the JSON decoder never makes: dictionary, timestamps with time
// zones, date32, decimal, large_string, list, struct, map and UUID.
func pqTypedFile(t *testing.T, path string) {
	t.Helper()
	s := arrow.NewSchema([]arrow.Field{
		{Name: "row_id", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}},
		{Name: "at", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "Europe/Stockholm"}, Nullable: true},
		{Name: "day", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
		{Name: "amount", Type: &arrow.Decimal128Type{Precision: 12, Scale: 2}, Nullable: true},
		{Name: "note", Type: arrow.BinaryTypes.LargeString, Nullable: true},
		{Name: "tags", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
		{Name: "customer", Type: arrow.StructOf(
			arrow.Field{Name: "tier", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int16, ValueType: arrow.BinaryTypes.String}, Nullable: true},
			arrow.Field{Name: "address", Type: arrow.StructOf(arrow.Field{Name: "country", Type: arrow.BinaryTypes.LargeString, Nullable: true}), Nullable: true},
		), Nullable: true},
		{Name: "attrs", Type: arrow.MapOf(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64), Nullable: true},
		{Name: "uid", Type: extensions.NewUUIDType(), Nullable: true},
	}, nil)
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < 40; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		tier := []string{"gold", "silver", "bronze"}[i%3]
		country := []string{"SE", "NO", "DK", "FI"}[i%4]
		fmt.Fprintf(&b, `{"row_id":"t%02d","at":%d,"day":"2025-01-%02d","amount":"%d.%02d","note":"note %d","tags":["a%d","b"],`+
			`"customer":{"tier":"%s","address":{"country":"%s"}},"attrs":[{"key":"visits","value":%d}],"uid":"00000000-0000-4000-8000-0000000000%02d"}`,
			i, 1735689600000+int64(i)*3600000*12, 1+i/2, i*7, i, i, i%5, tier, country, i, i)
	}
	b.WriteByte(']')
	rec, _, err := array.RecordFromJSON(memory.DefaultAllocator, s, strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	var buf bytes.Buffer
	w, err := pqarrow.NewFileWriter(s, &buf, parquet.NewWriterProperties(parquet.WithMaxRowGroupLength(16)), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, buf.String())
}

// The engine's expressions and sink "file"'s writers handle the types a
// Parquet file from elsewhere brings, as the source converts them.
func TestParquetSourceTypesThroughTheEngine(t *testing.T) {
	dir := t.TempDir()
	pqTypedFile(t, filepath.Join(dir, "typed.parquet"))
	where := `customer.tier == "gold" && customer.address.country in ["SE", "NO", "DK"] && amount >= 21.03 && ` +
		`at >= date("2025-01-04T00:00:00+01:00") && day < date("2025-01-20") && tags[0] startsWith "a" && attrs.visits > 0 && ` +
		`note contains "note" && uid endsWith "0"`
	writeFile(t, filepath.Join(dir, "p.hcl"), fmt.Sprintf(`
pipeline { name = "typed" }

source "file" "t" {
  path   = "typed.parquet"
  format = "parquet"
}

filter "f" {
  inputs = [source.t]
  where  = %q
}

sink "file" "jsonl" {
  inputs = [filter.f]
  path   = "out/t.jsonl"
}

sink "file" "csv" {
  inputs = [filter.f]
  path   = "out/t.csv"
}

sink "file" "parquet" {
  inputs = [filter.f]
  path   = "out/t.parquet"
}
`, where))
	if r := pipeline(t, dir, nil, "validate", "p.hcl"); r.code != 0 || len(validateDiags(r.stderr)) != 0 {
		t.Fatalf("validate: exit %d\n%s", r.code, r.stderr)
	}
	s := pqRun(t, dir, "p.hcl")
	// Go's version of the filter over the rows pqTypedFile writes.
	var want []string
	for i := 0; i < 40; i++ {
		at := 1735689600000 + int64(i)*3600000*12
		if i%3 == 0 && i%4 != 3 && i*7*100+i >= 2103 && at >= 1735945200000 && 1+i/2 < 20 && i%10 == 0 {
			want = append(want, fmt.Sprintf("t%02d", i))
		}
	}
	if len(want) == 0 || s.Delivered != int64(3*len(want)) {
		t.Fatalf("want %v; summary %+v", want, s)
	}
	lines := readRecords(t, filepath.Join(dir, "out", "t.jsonl"))
	var got []string
	for _, l := range lines {
		got = append(got, rowID(l.value))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("kept %v, want %v", got, want)
	}
	// t30: 2025-01-16 at 12:00 Stockholm time.
	wantLine := `{"row_id":"t30","at":"2025-01-16T01:00:00+01:00","day":"2025-01-16","amount":"210.3","note":"note 30","tags":["a0","b"],` +
		`"customer":{"tier":"gold","address":{"country":"DK"}},"attrs":{"visits":30},"uid":"00000000-0000-4000-8000-000000000030"}`
	if last := lines[len(lines)-1].raw; last != wantLine {
		t.Fatalf("JSONL\ngot  %s\nwant %s", last, wantLine)
	}
	csv, err := os.ReadFile(filepath.Join(dir, "out", "t.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(csv), "row_id,at,day,amount,note,tags,customer.tier,customer.address.country,attrs,uid\n") ||
		!strings.Contains(string(csv), "\nt30,2025-01-16T01:00:00+01:00,2025-01-16,210.3,note 30,\"[\"\"a0\"\",\"\"b\"\"]\",gold,DK,\"{\"\"visits\"\":30}\",00000000-0000-4000-8000-000000000030\n") {
		t.Fatalf("CSV:\n%s", csv)
	}
	// The Parquet copy reads back as the same records.
	writeFile(t, filepath.Join(dir, "back.hcl"), pqReaderHCL(filepath.Join(dir, "out", "t.parquet"), "", filepath.Join(dir, "out", "back.jsonl")))
	pqRun(t, dir, "--state", "back.db", "back.hcl")
	back := readRecords(t, filepath.Join(dir, "out", "back.jsonl"))
	if len(back) != len(lines) {
		t.Fatalf("%d records back from the Parquet copy, want %d", len(back), len(lines))
	}
	for i := range back {
		if back[i].raw != lines[i].raw {
			t.Fatalf("record %d of the Parquet copy:\ngot  %s\nwant %s", i+1, back[i].raw, lines[i].raw)
		}
	}
}

// A Parquet file that is rewritten under the same name is read again in
// full; one that was copied (same footer) is not; one without a footer yet
// waits for its writer.
func TestParquetSourceRewrittenAndIncompleteFiles(t *testing.T) {
	dir := t.TempDir()
	pqWriteLines(t, filepath.Join(dir, "v1.jsonl"), pqNestedInput(3, 30), false)
	pqWriteLines(t, filepath.Join(dir, "v2.jsonl"), pqNestedInput(4, 20), false)
	writeFile(t, filepath.Join(dir, "w1.hcl"), pqWriterHCL("v1.jsonl", "in/data.parquet"))
	writeFile(t, filepath.Join(dir, "w2.hcl"), pqWriterHCL("v2.jsonl", "in/data.parquet"))
	writeFile(t, filepath.Join(dir, "r.hcl"), pqReaderHCL("in/*.parquet", "", "out.jsonl"))

	pqRun(t, dir, "--state", "w1.db", "w1.hcl")
	data, err := os.ReadFile(filepath.Join(dir, "in", "data.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "in", "late.parquet"), string(data[:len(data)/3])) // a writer is at it
	res := pipeline(t, dir, nil, "run", "--json", "--state", "r.db", "r.hcl")
	if res.code != 0 || parseSummary(t, res).Read != 30 || !strings.Contains(res.stderr, "not a complete Parquet file yet") {
		t.Fatalf("first read: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	// A copy over the file: the same footer, nothing to read.
	os.Remove(filepath.Join(dir, "in", "data.parquet"))
	writeFile(t, filepath.Join(dir, "in", "data.parquet"), string(data))
	if s := pqRun(t, dir, "--state", "r.db", "r.hcl"); s.Read != 0 {
		t.Fatalf("after a copy: read %d", s.Read)
	}
	// The writer finished; and the file is replaced by a new version.
	writeFile(t, filepath.Join(dir, "in", "late.parquet"), string(data))
	pqRun(t, dir, "--state", "w2.db", "w2.hcl")
	res = pipeline(t, dir, nil, "run", "--json", "--state", "r.db", "r.hcl")
	if res.code != 0 || parseSummary(t, res).Read != 50 || !strings.Contains(res.stderr, "rewritten") {
		t.Fatalf("after the rewrite: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	if n := len(readRecords(t, filepath.Join(dir, "out.jsonl"))); n != 30+30+20 {
		t.Fatalf("%d records in out.jsonl, want 80", n)
	}
}
