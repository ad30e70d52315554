package sourcefile

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// origins is an Emitter that keeps each batch's origin name and the last
// position.
type origins struct {
	names []string
	rows  int64
	pos   []byte
}

func (o *origins) Emit(rec arrow.RecordBatch, position []byte) error {
	return o.EmitAt(rec, position, sdk.Origin{})
}

func (o *origins) EmitAt(rec arrow.RecordBatch, position []byte, origin sdk.Origin) error {
	defer rec.Release()
	if len(o.names) == 0 || o.names[len(o.names)-1] != origin.Name {
		o.names = append(o.names, origin.Name)
	}
	o.rows += rec.NumRows()
	o.pos = append([]byte(nil), position...)
	return nil
}

func (o *origins) Skipped(int) {}

// configured is a source of path in a pipeline file in baseDir.
func configured(t *testing.T, path, baseDir string) *Source {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"path": path, "format": "jsonl", "on_error": "fail", "batch_rows": 100})
	s := &Source{}
	if err := s.Configure(context.Background(), sdk.Config{Name: "calls", JSON: data, BaseDir: baseDir}); err != nil {
		t.Fatal(err)
	}
	return s
}

// pathsLayout makes root/pipelines (the pipeline file's directory, with
// in.jsonl and data/), root/shared, and root/elsewhere (empty).
func pathsLayout(t *testing.T) (pipelines, elsewhere string) {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pipelines = filepath.Join(root, "pipelines")
	elsewhere = filepath.Join(root, "elsewhere")
	for _, d := range []string{filepath.Join(pipelines, "data", "2025"), filepath.Join(root, "shared"), elsewhere} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(pipelines, "in.jsonl"), `{"id":1}`+"\n"+`{"id":2}`+"\n")
	write(t, filepath.Join(pipelines, "data", "a.jsonl"), `{"id":3}`+"\n")
	write(t, filepath.Join(pipelines, "data", "b.jsonl"), `{"id":4}`+"\n")
	write(t, filepath.Join(pipelines, "data", "2025", "c.jsonl"), `{"id":5}`+"\n")
	write(t, filepath.Join(root, "shared", "s.jsonl"), `{"id":6}`+"\n")
	return pipelines, elsewhere
}

// A relative path that matches nothing in the working directory is read
// from the pipeline file's directory, under the same names (so the same
// checkpoint and the same record ids) as a run from that directory.
func TestRelativePathFallsBackToThePipelineFilesDirectory(t *testing.T) {
	pipelines, elsewhere := pathsLayout(t)
	for _, tc := range []struct {
		path  string
		names []string
		rows  int64
	}{
		{"in.jsonl", []string{"in.jsonl"}, 2},
		{"./in.jsonl", []string{"./in.jsonl"}, 2},
		{"data/*.jsonl", []string{"data/a.jsonl", "data/b.jsonl"}, 2},
		{"./data/*.jsonl", []string{"data/a.jsonl", "data/b.jsonl"}, 2},
		{"data/*/*.jsonl", []string{"data/2025/c.jsonl"}, 1},
		{"../shared/*.jsonl", []string{"../shared/s.jsonl"}, 1},
	} {
		t.Run(tc.path, func(t *testing.T) {
			read := func(cwd string) *origins {
				t.Chdir(cwd)
				o := &origins{}
				if err := configured(t, tc.path, pipelines).Read(context.Background(), nil, o); err != nil {
					t.Fatalf("from %s: %v", cwd, err)
				}
				return o
			}
			here, there := read(pipelines), read(elsewhere)
			if !slices.Equal(here.names, tc.names) || here.rows != tc.rows {
				t.Errorf("from the pipeline's directory: origins %q, %d records; want %q, %d", here.names, here.rows, tc.names, tc.rows)
			}
			if !slices.Equal(there.names, here.names) || there.rows != here.rows {
				t.Errorf("from another directory: origins %q, %d records; from the pipeline's: %q, %d", there.names, there.rows, here.names, here.rows)
			}
			if string(there.pos) != string(here.pos) {
				t.Errorf("positions differ:\n  from another directory %s\n  from the pipeline's    %s", there.pos, here.pos)
			}
		})
	}
}

// A checkpoint taken from one directory resumes from another.
func TestCheckpointResumesFromAnotherDirectory(t *testing.T) {
	pipelines, elsewhere := pathsLayout(t)
	t.Chdir(pipelines)
	first := &origins{}
	if err := configured(t, "in.jsonl", pipelines).Read(context.Background(), nil, first); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(pipelines, "in.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"id":7}` + "\n")
	f.Close()

	t.Chdir(elsewhere)
	second := &origins{}
	if err := configured(t, "in.jsonl", pipelines).Read(context.Background(), first.pos, second); err != nil {
		t.Fatal(err)
	}
	if second.rows != 1 {
		t.Errorf("the run from another directory read %d records after the checkpoint, want the 1 appended", second.rows)
	}
}

// The working directory comes first: a file there is read even when the
// pipeline file's directory has one of the same name.
func TestWorkingDirectoryComesFirst(t *testing.T) {
	pipelines, elsewhere := pathsLayout(t)
	write(t, filepath.Join(elsewhere, "in.jsonl"), `{"id":10}`+"\n"+`{"id":11}`+"\n"+`{"id":12}`+"\n")
	t.Chdir(elsewhere)
	o := &origins{}
	if err := configured(t, "in.jsonl", pipelines).Read(context.Background(), nil, o); err != nil {
		t.Fatal(err)
	}
	if o.rows != 3 || !slices.Equal(o.names, []string{"in.jsonl"}) {
		t.Errorf("read %d records from %q, want the working directory's 3 from in.jsonl", o.rows, o.names)
	}
}

func TestMissingPathNamesWhereItLooked(t *testing.T) {
	pipelines, elsewhere := pathsLayout(t)
	for _, tc := range []struct {
		name, path, cwd, baseDir, want string
	}{
		{"both directories", "missing.jsonl", elsewhere, pipelines,
			`path "missing.jsonl" matches no files (looked in ` + filepath.Join(elsewhere, "missing.jsonl") + " and " + filepath.Join(pipelines, "missing.jsonl") + ")"},
		{"a glob", "nope/*.jsonl", elsewhere, pipelines,
			`path "nope/*.jsonl" matches no files (looked in ` + filepath.Join(elsewhere, "nope/*.jsonl") + " and " + filepath.Join(pipelines, "nope/*.jsonl") + ")"},
		{"run from the pipeline's directory", "missing.jsonl", pipelines, pipelines,
			`path "missing.jsonl" matches no files (looked in ` + filepath.Join(pipelines, "missing.jsonl") + ")"},
		{"no pipeline file", "missing.jsonl", elsewhere, "",
			`path "missing.jsonl" matches no files (looked in ` + filepath.Join(elsewhere, "missing.jsonl") + ")"},
		{"absolute", filepath.Join(elsewhere, "missing.jsonl"), pipelines, pipelines,
			`path "` + filepath.Join(elsewhere, "missing.jsonl") + `" matches no files`},
		{"a directory is no file", "data", elsewhere, pipelines,
			`path "data" matches no files (looked in ` + filepath.Join(elsewhere, "data") + " and " + filepath.Join(pipelines, "data") + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(tc.cwd)
			err := configured(t, tc.path, tc.baseDir).Read(context.Background(), nil, &origins{})
			if err == nil || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
			if _, err := configured(t, tc.path, tc.baseDir).Schema(context.Background()); err == nil || !strings.Contains(err.Error(), "matches no files") {
				t.Errorf("Schema: %v, want the same error", err)
			}
		})
	}
}

// A pipeline file's directory whose name reads as a glob is still found.
func TestPipelineDirectoryWithGlobCharacters(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pipelines := filepath.Join(root, "team [a]*?")
	if err := os.MkdirAll(filepath.Join(pipelines, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(pipelines, "data", "a.jsonl"), `{"id":1}`+"\n")
	t.Chdir(root)
	o := &origins{}
	if err := configured(t, "data/*.jsonl", pipelines).Read(context.Background(), nil, o); err != nil {
		t.Fatal(err)
	}
	if o.rows != 1 || !slices.Equal(o.names, []string{"data/a.jsonl"}) {
		t.Errorf("read %d records from %q, want 1 from data/a.jsonl", o.rows, o.names)
	}
}
