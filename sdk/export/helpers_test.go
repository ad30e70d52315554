package export

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// makeBatch decodes JSON lines with sdk/arrowjson (as the engine's sources
// do) and adds the engine's id and template columns.
func makeBatch(t testing.TB, ids []string, tpl map[string][]string, lines ...string) sdk.Batch {
	t.Helper()
	d := arrowjson.NewDecoder(arrowjson.Options{})
	for _, l := range lines {
		if err := d.Append([]byte(l)); err != nil {
			t.Fatalf("decode %s: %v", l, err)
		}
	}
	rec := d.Flush()
	if rec == nil {
		rec = array.NewRecordBatch(arrow.NewSchema(nil, nil), nil, 0)
	}
	fields := append([]arrow.Field(nil), rec.Schema().Fields()...)
	cols := append([]arrow.Array(nil), rec.Columns()...)
	addString := func(name string, vals []string) {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		defer b.Release()
		for _, v := range vals {
			b.Append(v)
		}
		fields = append(fields, arrow.Field{Name: name, Type: arrow.BinaryTypes.String})
		cols = append(cols, b.NewArray())
	}
	if ids != nil {
		addString(sdk.IDColumn, ids)
	}
	names := make([]string, 0, len(tpl))
	for k := range tpl {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		addString(sdk.TemplateColumnPrefix+k, tpl[k])
	}
	return sdk.NewBatch(array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows()))
}

// recordingStore wraps a Store and records the order in which objects
// become visible.
type recordingStore struct {
	Store
	mu     sync.Mutex
	events []string // "commit <key>", "put <key>", "abort <key>"
}

func (s *recordingStore) log(e string) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *recordingStore) Create(ctx context.Context, key string) (Object, error) {
	o, err := s.Store.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return &recordingObject{Object: o, s: s, key: key}, nil
}

func (s *recordingStore) Put(ctx context.Context, key string, data []byte) error {
	s.log("put " + key)
	return s.Store.Put(ctx, key, data)
}

type recordingObject struct {
	Object
	s   *recordingStore
	key string
}

func (o *recordingObject) Commit(ctx context.Context) error {
	o.s.log("commit " + o.key)
	return o.Object.Commit(ctx)
}

func (o *recordingObject) Abort(ctx context.Context) error {
	o.s.log("abort " + o.key)
	return o.Object.Abort(ctx)
}

// discardStore throws everything away (for benchmarks).
type discardStore struct{}

type discardObject struct{}

func (discardStore) Create(context.Context, string) (Object, error) { return discardObject{}, nil }
func (discardStore) Put(context.Context, string, []byte) error      { return nil }
func (discardObject) Write(p []byte) (int, error)                   { return len(p), nil }
func (discardObject) Commit(context.Context) error                  { return nil }
func (discardObject) Abort(context.Context) error                   { return nil }

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

// listFiles returns the regular files under dir, relative, slash-separated,
// sorted; temporary files are reported too so that tests see leftovers.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func readFile(t *testing.T, dir, key string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(key, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		data, err = io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	return data
}

// decodeJSON unmarshals with numbers kept as json.Number.
func decodeJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

// dropNulls removes null members of objects, recursively (for formats that
// cannot tell an explicit null from an absent key).
func dropNulls(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			if x != nil {
				out[k] = dropNulls(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = dropNulls(x)
		}
		return out
	}
	return v
}

func manifestOf(t *testing.T, dir string) Manifest {
	t.Helper()
	var keys []string
	for _, f := range listFiles(t, dir) {
		if strings.Contains(f, "_manifest-") {
			keys = append(keys, f)
		}
	}
	if len(keys) != 1 {
		t.Fatalf("want one manifest, have %v", keys)
	}
	var m Manifest
	if err := json.Unmarshal(readFile(t, dir, keys[0]), &m); err != nil {
		t.Fatal(err)
	}
	m.Key = keys[0]
	return m
}
