package expr

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func str(name string) arrow.Field {
	return arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true}
}

func labelStruct(name string) arrow.Field {
	return arrow.Field{Name: name, Nullable: true, Type: arrow.StructOf(
		str("label"),
		arrow.Field{Name: "confidence", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	)}
}

// sampleSchema is the classified-conversation record of DESIGN.md, plus
// columns of the other types expressions see, plus engine bookkeeping.
func sampleSchema() *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		str("event"),
		str("timestamp"),
		str("dataset_id"),
		str("row_id"),
		str("text"),
		{Name: "classifications", Nullable: true, Type: arrow.StructOf(
			labelStruct("contact_reason"),
			labelStruct("churn_risk"),
			labelStruct("competitor_mention"),
		)},
		{Name: "metadata", Nullable: true, Type: arrow.StructOf(
			str("agent_id"), str("customer_id"), str("channel"), str("queue"), str("product"),
		)},
		{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "x", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "flag", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "tags", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
		{Name: "payload", Type: arrow.BinaryTypes.String, Nullable: true,
			Metadata: arrow.NewMetadata([]string{rawJSONKey}, []string{rawJSONValue})},
		{Name: "ts", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}, Nullable: true},
		str("_pipeline_id"),
		{Name: "_pipeline_nulls", Type: arrow.ListOf(arrow.BinaryTypes.String), Nullable: true},
	}, nil)
}

// sampleRows: row 1 is the DESIGN.md record. The others have nulls at every
// level, missing struct children, unicode, and ints against floats.
var sampleRows = []string{
	`{"event":"classification.completed","timestamp":"2025-11-14T09:22:47Z","dataset_id":"ds_7f3a9b2c","row_id":"row_90312",
	  "text":"I want to cancel, I found a better deal with Telia",
	  "classifications":{"contact_reason":{"label":"Cancellation","confidence":0.94},"churn_risk":{"label":"High","confidence":0.91},"competitor_mention":{"label":"Telia","confidence":0.98}},
	  "metadata":{"agent_id":"agent_4821","customer_id":"cust_90312","channel":"phone","queue":"retention","product":"fiber_100"},
	  "n":2,"x":1.5,"flag":true,"tags":["a","b"],"payload":"{\"k\":1,\"s\":\"v\"}","ts":"2025-11-14T09:22:47Z","_pipeline_id":"id1"}`,
	`{"text":"Jag vill säga upp mitt abonnemang 😡",
	  "classifications":{"churn_risk":{"label":"Low","confidence":0.3}},
	  "metadata":{"customer_id":"cust_2","channel":"chat","queue":"support"},
	  "n":1,"x":0.5,"flag":false,"tags":["b"],"payload":"{\"k\":2.5}","ts":"2024-01-01T00:00:00Z","_pipeline_id":"id2"}`,
	`{"classifications":null,"metadata":{"queue":null,"customer_id":"cust_3","channel":"email"},
	  "n":null,"x":null,"flag":null,"tags":null,"payload":null,"_pipeline_id":"id3"}`,
	`{"text":"","classifications":{"contact_reason":{"label":"Billing","confidence":0.5}},
	  "n":0,"x":0,"flag":false,"tags":[],"payload":"{\"k\":0}","_pipeline_id":"id4"}`,
	`{"text":"cancel NOW","classifications":{"churn_risk":{"label":null,"confidence":0.95}},
	  "metadata":{"customer_id":"cust_5","channel":"phone","queue":"Retention"},
	  "n":2,"x":1.0,"flag":true,"tags":["c"],"payload":"{\"k\":5}","_pipeline_id":"id5"}`,
	`{"text":"Cancel my subscription","classifications":{"churn_risk":{"label":"High","confidence":0.8}},
	  "metadata":{"customer_id":"cust_6","channel":"phone","queue":"retention"},
	  "n":3,"x":2.0,"flag":true,"tags":["a"],"payload":"{\"k\":3}","_pipeline_id":"id6"}`,
	`{"text":"Säg upp","classifications":{"churn_risk":{"label":"HIGH","confidence":0.99}},
	  "metadata":{"customer_id":"cust_ü","channel":"chat","queue":"ÅTERKÖP"},
	  "n":10,"x":10.25,"flag":false,"tags":["b","c"],"payload":"{\"k\":null}","_pipeline_id":"id7"}`,
	`{"text":"telia is cheaper","classifications":{"churn_risk":{"label":"High","confidence":0.85}},
	  "metadata":{"customer_id":null,"queue":"retention"},
	  "n":-1,"x":-0.5,"flag":true,"tags":[],"payload":"{\"other\":true}","_pipeline_id":"id8"}`,
}

// batch builds a record batch from JSON objects with arrow-go's own JSON
// reader (missing keys are null).
func batch(t testing.TB, schema *arrow.Schema, rows []string) arrow.RecordBatch {
	t.Helper()
	rec, _, err := array.RecordFromJSON(memory.DefaultAllocator, schema,
		strings.NewReader("["+strings.Join(rows, ",")+"]"))
	if err != nil {
		t.Fatalf("building batch: %v", err)
	}
	t.Cleanup(rec.Release)
	return rec
}

func sampleBatch(t testing.TB) arrow.RecordBatch { return batch(t, sampleSchema(), sampleRows) }

// rowsOf lists the 1-based rows a mask selects.
func rowsOf(mask []bool) []int {
	rows := []int{}
	for i, m := range mask {
		if m {
			rows = append(rows, i+1)
		}
	}
	return rows
}

// column returns the string values of a top-level string column.
func column(t testing.TB, rec arrow.RecordBatch, name string) []string {
	t.Helper()
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		t.Fatalf("no column %s", name)
	}
	col := rec.Column(idx[0]).(*array.String)
	out := make([]string, col.Len())
	for i := range out {
		out[i] = col.Value(i)
	}
	return out
}
