package sdktest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// ReadJSONL decodes the JSON Lines file at path into batches of rows records
// with the id column the engine adds (a record's row_id, else "rec-<line>"),
// and calls fn with each; fn must not keep the batch past its return unless
// it retains the record. It reads the file as a stream, for benchmarks over
// large inputs.
func ReadJSONL(path string, rows int, fn func(sdk.Batch) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	var ids []string
	flush := func() error {
		rec := dec.Flush()
		if rec == nil {
			return nil
		}
		withID := withIDs(rec, ids)
		ids = ids[:0]
		defer withID.Release()
		return fn(sdk.NewBatch(withID))
	}
	for line := 1; ; line++ {
		b, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return fmt.Errorf("%s:%d: line longer than 1 MiB", path, line)
		}
		if len(b) > 1 {
			if aerr := dec.Append(b); aerr != nil {
				return fmt.Errorf("%s:%d: %w", path, line, aerr)
			}
			var v struct {
				RowID string `json:"row_id"`
			}
			_ = json.Unmarshal(b, &v)
			if v.RowID == "" {
				v.RowID = fmt.Sprintf("rec-%d", line)
			}
			ids = append(ids, v.RowID)
			if dec.Len() >= rows {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			return err
		}
	}
}

// BenchJSONL is the JSON Lines file load benchmarks read: $BENCH_JSONL, else
// make bench's .cache/bench/calls-1000000.jsonl, else the demo data
// (testdata/calls.jsonl), both in the repository this package is in.
func BenchJSONL() string {
	if p := os.Getenv("BENCH_JSONL"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if p := filepath.Join(root, ".cache", "bench", "calls-1000000.jsonl"); fileExists(p) {
		return p
	}
	return filepath.Join(root, "testdata", "calls.jsonl")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
