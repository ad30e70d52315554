package sourcefile

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipelinehq/pipeline/sdk"
)

// The parallel decode emits what a sequential one would: every record in
// file order with its line, a position after each batch that resumes
// exactly there, and an error in a late chunk only once the batches
// before it are out.
func TestJSONLParallelDecodeKeepsOrderPlacesAndPositions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "many.jsonl")
	var b strings.Builder
	var want []string
	var wantPlaces []int64
	line := int64(0)
	for i := range 5000 {
		line++
		switch {
		case i%97 == 0:
			b.WriteString("\n") // an empty line: passed over, counted
			line++
		}
		rec := fmt.Sprintf(`{"id":%d,"v":%d}`, i, i*7)
		b.WriteString(rec + "\n")
		want = append(want, rec)
		wantPlaces = append(wantPlaces, line)
	}
	write(t, path, b.String())
	s := newSource(t, map[string]any{"path": path, "batch_rows": 64})
	c := &collect{}
	if err := s.Read(context.Background(), nil, c); err != nil {
		t.Fatal(err)
	}
	if len(c.records) != len(want) {
		t.Fatalf("%d records, want %d", len(c.records), len(want))
	}
	for i := range want {
		if c.records[i] != want[i] {
			t.Fatalf("record %d: %.80s, want %.80s", i, c.records[i], want[i])
		}
		if c.places[i] != wantPlaces[i] {
			t.Fatalf("record %d: line %d, want %d", i, c.places[i], wantPlaces[i])
		}
	}
	if c.batches < 5000/64 {
		t.Errorf("%d batches for 5000 lines of batch_rows 64", c.batches)
	}
	var pos position
	json.Unmarshal(c.pos, &pos)
	if fp := pos.Files[s.origin(path)]; fp.Offset != int64(b.Len()) || fp.Line != line {
		t.Errorf("final position %+v, want offset %d line %d", fp, b.Len(), line)
	}

	// Resume from every emitted position: the rest follows exactly.
	positions := &positionsEmitter{}
	if err := s.Read(context.Background(), nil, positions); err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{0, 1, len(positions.pos) / 2, len(positions.pos) - 2} {
		rest := &collect{}
		if err := s.Read(context.Background(), positions.pos[k], rest); err != nil {
			t.Fatal(err)
		}
		done := positions.rows[k]
		if len(rest.records) != len(want)-done || (len(rest.records) > 0 && rest.records[0] != want[done]) {
			t.Fatalf("resumed after batch %d (%d records): %d records, first %.60v", k, done, len(rest.records), rest.records[:min(1, len(rest.records))])
		}
	}

	// A bad line late in the file: the batches before it are emitted, then
	// the error names its line.
	write(t, path, b.String()+`{"id":"broken"`+"\n"+`{"id":1}`+"\n")
	c = &collect{}
	err := newSource(t, map[string]any{"path": path, "batch_rows": 64}).Read(context.Background(), nil, c)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("many.jsonl:%d:", line+1)) {
		t.Fatalf("want an error at many.jsonl:%d, got %v", line+1, err)
	}
	// The batches before the bad line's are out, in order (the records
	// before it in its own batch are not: the run fails there, as it
	// always did).
	if len(c.records) < len(want)-64 || len(c.records) > len(want) || c.records[len(c.records)-1] != want[len(c.records)-1] {
		t.Errorf("%d records emitted before the bad line, want the %d or so before its batch", len(c.records), len(want))
	}
}

// positionsEmitter keeps the position after each batch and how many
// records came before it.
type positionsEmitter struct {
	collect
	pos  [][]byte
	rows []int
}

func (p *positionsEmitter) EmitAt(rec arrow.RecordBatch, position []byte, origin sdk.Origin) error {
	if err := p.collect.EmitAt(rec, position, origin); err != nil {
		return err
	}
	p.pos = append(p.pos, append([]byte(nil), position...))
	p.rows = append(p.rows, len(p.records))
	return nil
}

// A line longer than a read buffer is read whole.
func TestJSONLLineLongerThanABuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "long.jsonl")
	big := fmt.Sprintf(`{"id":2,"big":%q}`, strings.Repeat("x", batchBytes+1000))
	write(t, path, `{"id":1}`+"\n"+big+"\n"+`{"id":3}`)
	c := &collect{}
	if err := newSource(t, map[string]any{"path": path}).Read(context.Background(), nil, c); err != nil {
		t.Fatal(err)
	}
	if len(c.records) != 3 || c.records[1] != big || c.records[2] != `{"id":3}` || fmt.Sprint(c.places) != "[1 2 3]" {
		t.Fatalf("%d records, places %v", len(c.records), c.places)
	}
}
