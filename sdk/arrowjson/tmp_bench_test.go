package arrowjson

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fastjson"
)

var sample = []byte(`{"event":"classification.completed","timestamp":"2025-11-14T09:22:47Z","dataset_id":"ds_7f3a9b2c","row_id":"row_90312","text":"I want to cancel, I found a better deal with Telia","classifications":{"contact_reason":{"label":"Cancellation","confidence":0.94},"churn_risk":{"label":"High","confidence":0.91},"competitor_mention":{"label":"Telia","confidence":0.98}},"metadata":{"agent_id":"agent_4821","customer_id":"cust_90312","channel":"phone","queue":"retention","product":"fiber_100"}}`)

func BenchmarkTmpParse(b *testing.B) {
	var p fastjson.Parser
	for i := 0; i < b.N; i++ {
		p.ParseBytes(sample)
	}
}
func BenchmarkTmpValidate(b *testing.B) {
	for i := 0; i < b.N; i++ {
		fastjson.ValidateBytes(sample)
	}
}
func BenchmarkTmpJSONValid(b *testing.B) {
	for i := 0; i < b.N; i++ {
		json.Valid(sample)
	}
}
