package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

func TestAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	cfg, _ := json.Marshal(map[string]string{"path": path})
	sdktest.TestSink(t, func() sdk.Sink { return &Audit{} }, ".", sdktest.SinkTest{
		Config: string(cfg),
		Records: []string{
			`{"row_id":"row_1","text":"Jag vill säga upp mitt abonnemang","classifications":{"churn_risk":{"label":"High","confidence":0.91}}}`,
			`{"row_id":"row_2","text":"billing question","n":3}`,
			`{"text":"no row id here","tags":["a","b"]}`,
		},
		Setup: func(t testing.TB) { os.Remove(path) },
		Check: func(t testing.TB, sent []sdktest.Record) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			if len(got) != len(sent) {
				t.Fatalf("%d lines, want %d:\n%s", len(got), len(sent), data)
			}
			for i, rec := range sent {
				id, body, _ := strings.Cut(got[i], " ")
				if id != rec.ID || !sdktest.SameJSON(body, rec.JSON) {
					t.Errorf("line %d = %q, want id %q and %s", i+1, got[i], rec.ID, rec.JSON)
				}
			}
		},
	})
}
