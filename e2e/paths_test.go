package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A relative path of source "file" is resolved against the working
// directory, then against the pipeline file's directory; sink paths stay
// relative to the working directory (issue 10, item 10).

// pathsPipeline is a pipeline in dir/pipelines reading in.jsonl, which is
// beside it, into a webhook and out.jsonl.
func pathsPipeline(t *testing.T, n int) (root, pipelines string) {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pipelines = filepath.Join(root, "pipelines")
	var b strings.Builder
	for i := 0; i < n; i++ {
		// No row_id: the ids are derived from where each record is.
		fmt.Fprintf(&b, `{"n":%d,"text":"call %d"}`+"\n", i, i)
	}
	writeFile(t, filepath.Join(pipelines, "in.jsonl"), b.String())
	writeFile(t, filepath.Join(pipelines, "p.hcl"), `
pipeline { name = "paths" }

source "file" "in" {
  path       = "in.jsonl"
  batch_rows = 16
}

sink "webhook" "crm" {
  inputs = [source.in]
  url    = env("CRM_WEBHOOK_URL")
  secret = env("CRM_WEBHOOK_SECRET")
}

sink "file" "out" {
  inputs = [source.in]
  path   = "out.jsonl"
}
`)
	if err := os.MkdirAll(filepath.Join(root, "elsewhere"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root, pipelines
}

func TestPathsRelativeToThePipelineFileWhenRunFromElsewhere(t *testing.T) {
	const n = 100
	root, pipelines := pathsPipeline(t, n)
	elsewhere := filepath.Join(root, "elsewhere")

	// Each run on a state of its own, so each sends everything.
	run := func(cwd, file, statePath string) map[string]bool {
		t.Helper()
		rcv := newReceiver(t)
		r := pipeline(t, cwd, rcv.env(), "run", "--state", statePath, file)
		if r.code != 0 {
			t.Fatalf("run from %s: exit %d\nstderr:\n%s", cwd, r.code, r.stderr)
		}
		return rcv.ids()
	}
	here := run(pipelines, "p.hcl", filepath.Join(root, "here.db"))
	there := run(elsewhere, filepath.Join("..", "pipelines", "p.hcl"), filepath.Join(root, "there.db"))
	if len(here) != n || len(there) != n {
		t.Fatalf("delivered %d ids from the pipeline's directory and %d from another one, want %d each", len(here), len(there), n)
	}
	if !maps.Equal(here, there) {
		a, b := slices.Sorted(maps.Keys(here)), slices.Sorted(maps.Keys(there))
		t.Errorf("the records got other ids when run from another directory:\n  from pipelines/: %v…\n  from elsewhere/: %v…", a[:3], b[:3])
	}

	// The file sink wrote where each run was started.
	for _, dir := range []string{pipelines, elsewhere} {
		if recs := readRecords(t, filepath.Join(dir, "out.jsonl")); len(recs) != n {
			t.Errorf("%s/out.jsonl holds %d records, want %d", dir, len(recs), n)
		}
	}
}

func TestPathsMissingInputNamesBothPlaces(t *testing.T) {
	root, pipelines := pathsPipeline(t, 1)
	elsewhere := filepath.Join(root, "elsewhere")
	writeFile(t, filepath.Join(pipelines, "missing.hcl"), `
source "file" "in" {
  path = "missing.jsonl"
}

sink "file" "out" {
  inputs = [source.in]
  path   = "out.jsonl"
}
`)
	r := pipeline(t, elsewhere, nil, "run", "--state", filepath.Join(root, "state.db"), filepath.Join(pipelines, "missing.hcl"))
	want := fmt.Sprintf(`path "missing.jsonl" matches no files (looked in %s and %s)`, filepath.Join(elsewhere, "missing.jsonl"), filepath.Join(pipelines, "missing.jsonl"))
	if r.code != 1 || !strings.Contains(strings.Join(strings.Fields(r.stderr), " "), want) {
		t.Errorf("exit %d, want 1 with %q\nstderr:\n%s", r.code, want, r.stderr)
	}
}
