package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// A JSON sink reproduces its input exactly, across batches whose schema
// grows, with explicit nulls, unicode and numbers intact.
func TestFileSinkReproducesRecordsAcrossSchemaChanges(t *testing.T) {
	dir := t.TempDir()
	input := []string{
		`{"row_id":"r1","text":"Hej, jag vill säga upp mitt abonnemang 😀","n":1,"score":0.91}`,
		`{"row_id":"r2","text":"plain","n":-7,"score":1e-7}`,
		`{"row_id":"r3","text":"a field appears","n":3,"score":0.5,"extra":{"deep":[1,2,3],"flag":true}}`,
		`{"row_id":"r4","text":"explicit null","n":null,"score":0.25,"extra":null}`,
		`{"row_id":"r5","metadata":{"queue":"retention","tags":["a","b"]},"text":"\"quoted\" \\ \u0001"}`,
		`{"row_id":"r6","n":9007199254740993,"score":123456789.125}`,
	}
	in := filepath.Join(dir, "in.jsonl")
	writeFile(t, in, strings.Join(input, "\n")+"\n")
	out := filepath.Join(dir, "out.jsonl")
	writeFile(t, filepath.Join(dir, "p.hcl"), fmt.Sprintf(`
source "file" "in" {
  path       = %q
  batch_rows = 2
}
sink "file" "out" {
  inputs = [source.in]
  path   = %q
}
`, in, out))
	if res := pipeline(t, dir, nil, "run", "p.hcl"); res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(got) != len(input) {
		t.Fatalf("%d records out, want %d:\n%s", len(got), len(input), data)
	}
	for i := range input {
		if !jsonEqual([]byte(got[i]), []byte(input[i])) {
			t.Errorf("record %d:\n got %s\nwant %s", i+1, got[i], input[i])
		}
		// Keys absent from the input stay absent: no invented nulls.
		if strings.Count(got[i], "null") != strings.Count(input[i], "null") {
			t.Errorf("record %d: nulls differ:\n got %s\nwant %s", i+1, got[i], input[i])
		}
	}
	if got[5] != input[5] {
		t.Errorf("large integer or float changed: %s", got[5])
	}
}

// {{ }} placeholders render per record in the URL path and in headers.
func TestTemplatesInURLAndHeaders(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	seen := map[string]string{} // path -> X-Customer header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("X-Customer") + "|" + r.Header.Get("X-Team")
		mu.Unlock()
	}))
	defer srv.Close()
	writeFile(t, filepath.Join(dir, "p.hcl"), fmt.Sprintf(`
source "file" "calls" {
  path = %q
}
sink "webhook" "crm" {
  inputs  = [source.calls]
  when    = "classifications.churn_risk.label == 'High'"
  signature = "none"
  url     = "%s/customers/{{ metadata.customer_id }}/calls/{{ row_id }}"
  headers = {
    X-Customer = "{{ metadata.customer_id }}"
    X-Team     = "retention"
  }
}
`, calls(), srv.URL))
	if res := pipeline(t, dir, nil, "run", "p.hcl"); res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	want := 0
	for _, r := range readRecords(t, calls()) {
		cls, _ := r.value["classifications"].(map[string]any)
		churn, _ := cls["churn_risk"].(map[string]any)
		if churn["label"] != "High" {
			continue
		}
		want++
		cust := r.value["metadata"].(map[string]any)["customer_id"].(string)
		path := fmt.Sprintf("/customers/%s/calls/%s", cust, rowID(r.value))
		if got, ok := seen[path]; !ok || got != cust+"|retention" {
			t.Errorf("%s: got %q (delivered: %v)", path, got, ok)
		}
	}
	if len(seen) != want {
		t.Errorf("%d deliveries, want %d", len(seen), want)
	}
}

func TestValidateCatchesUnknownFieldInTemplate(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "p.hcl"), fmt.Sprintf(`
source "file" "calls" {
  path = %q
}
sink "webhook" "crm" {
  inputs  = [source.calls]
  url     = "http://127.0.0.1:1/{{ metdata.customer_id }}"
}
`, calls()))
	res := pipeline(t, dir, nil, "validate", "p.hcl")
	if res.code != 1 || !strings.Contains(res.stderr, "p.hcl:7:") || !strings.Contains(res.stderr, "metdata") {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
}
