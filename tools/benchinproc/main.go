// Command benchinproc is the benchmark's baseline: the same JSONL decode,
// filter and encode as `source "file" → filter → sink "file"`, in one
// process with no plugin boundary, so `make bench` can show what the
// boundary costs.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pipelinehq/pipeline/engine/expr"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

func main() {
	in := flag.String("in", "", "input JSONL")
	out := flag.String("out", "", "output JSONL")
	where := flag.String("where", "classifications.churn_risk.confidence > 0.8", "filter")
	rows := flag.Int("batch", 8192, "records per batch")
	flag.Parse()
	if err := run(*in, *out, *where, *rows); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(in, out, where string, rows int) error {
	start := time.Now()
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	o, err := os.Create(out)
	if err != nil {
		return err
	}
	defer o.Close()
	w := bufio.NewWriterSize(o, 1<<20)
	br := bufio.NewReaderSize(f, 1<<20)
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	enc := arrowjson.NewEncoder()
	var pred *expr.Predicate
	var read, kept int
	var buf []byte
	flush := func() error {
		rec := dec.Flush()
		if rec == nil {
			return nil
		}
		defer rec.Release()
		if pred == nil {
			if pred, err = expr.CompilePredicate(where, rec.Schema()); err != nil {
				return err
			}
		}
		sel, err := pred.Filter(rec)
		if err != nil {
			return err
		}
		defer sel.Release()
		kept += int(sel.NumRows())
		buf = buf[:0]
		for i := 0; i < int(sel.NumRows()); i++ {
			buf = append(enc.AppendRow(buf, sel, i), '\n')
		}
		_, err = w.Write(buf)
		return err
	}
	for {
		line, rerr := br.ReadSlice('\n')
		if len(line) > 0 {
			if err := dec.Append(line); err != nil && !errors.Is(err, arrowjson.ErrEmptyLine) {
				return fmt.Errorf("line %d: %w", read+1, err)
			}
			read++
			if dec.Len() >= rows {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("read %d kept %d in %.2fs: %.0f records/s\n", read, kept, el.Seconds(), float64(read)/el.Seconds())
	return nil
}
