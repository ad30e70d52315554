package main

import (
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

var records = []string{
	`{"row_id":"row_1","text":"mail me at anna.svensson@example.se or anna@work.example.com","n":1}`,
	`{"row_id":"row_2","text":"billing question","n":2}`,
	`{"row_id":"row_3","n":3}`,
}

func TestRedactMasks(t *testing.T) {
	sdktest.TestTransform(t, func() sdk.Transform { return &Redact{} }, ".", sdktest.TransformTest{
		Config:  `{"field": "text", "drop": false}`,
		Records: records,
		Want: []string{
			`{"row_id":"row_1","text":"mail me at [email] or [email]","n":1}`,
			`{"row_id":"row_2","text":"billing question","n":2}`,
			`{"row_id":"row_3","n":3}`,
		},
	})
}

func TestRedactDrops(t *testing.T) {
	sdktest.TestTransform(t, func() sdk.Transform { return &Redact{} }, ".", sdktest.TransformTest{
		Config:  `{"field": "text", "drop": true}`,
		Records: records,
		Want:    records[1:],
		Check: func(t testing.TB, out []sdktest.Record) {
			if len(out) != 2 || out[0].ID != "row_2" || out[1].ID != "row_3" {
				t.Errorf("output %v, want records row_2 and row_3 under their ids", out)
			}
		},
	})
}
