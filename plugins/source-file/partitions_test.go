package sourcefile

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/sdktest"
)

func readPart(t *testing.T, s *Source, partition string, from []byte) *batches {
	t.Helper()
	b := &batches{}
	if err := s.ReadPartition(context.Background(), partition, from, b); err != nil {
		t.Fatalf("ReadPartition(%s): %v", partition, err)
	}
	return b
}

func partitions(t *testing.T, s *Source) []string {
	t.Helper()
	parts, err := s.Partitions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

func decodePos(t *testing.T, p string) position {
	t.Helper()
	var pos position
	if err := json.Unmarshal([]byte(p), &pos); err != nil {
		t.Fatalf("position %s: %v", p, err)
	}
	return pos
}

// sameAsWhole checks that reading each partition on its own gives, batch
// for batch, what the whole Read gave for that file: the records, their
// origin (name, unit, places), and positions that hold that file alone,
// with the entry the whole Read's position has for it, in its encoding.
func sameAsWhole(t *testing.T, s *Source, whole *batches, parts []string) {
	t.Helper()
	total := 0
	for _, part := range parts {
		got := readPart(t, s, part, nil)
		var want batches
		row := 0
		for i, o := range whole.origins {
			n := len(o.Places)
			if o.Name == part || strings.HasPrefix(o.Name, part+"@") { // a rewritten Parquet file
				want.records = append(want.records, whole.records[row:row+n]...)
				want.origins = append(want.origins, o)
				want.positions = append(want.positions, whole.positions[i])
			}
			row += n
		}
		if len(got.origins) != len(want.origins) {
			t.Fatalf("partition %s: %d batches, the whole read has %d for it", part, len(got.origins), len(want.origins))
		}
		if !slices.Equal(got.records, want.records) {
			t.Fatalf("partition %s: records\n%q\nwant\n%q", part, got.records, want.records)
		}
		for i := range got.origins {
			g, w := got.origins[i], want.origins[i]
			if g.Name != w.Name || g.Unit != w.Unit || !slices.Equal(g.Places, w.Places) {
				t.Errorf("partition %s batch %d: origin %+v, want %+v", part, i, g, w)
			}
			gp, wp := decodePos(t, got.positions[i]), decodePos(t, want.positions[i])
			if len(gp.Files) != 1 {
				t.Errorf("partition %s batch %d: position %s holds more than the partition's file", part, i, got.positions[i])
			}
			if gp.Files[part] != wp.Files[part] {
				t.Errorf("partition %s batch %d: position %s, the whole read's has %+v for it", part, i, got.positions[i], wp.Files[part])
			}
			want := (&position{Files: map[string]filePos{part: wp.Files[part]}}).encode()
			if got.positions[i] != string(want) {
				t.Errorf("partition %s batch %d: position %s, want the encoding %s", part, i, got.positions[i], want)
			}
		}
		total += len(got.records)
	}
	if total != len(whole.records) {
		t.Fatalf("the partitions read %d records together, the whole read %d", total, len(whole.records))
	}
}

func gzipped(t *testing.T, text string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestPartitionsReadEachFileAsTheWholeReadDoes(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.jsonl")
	b := filepath.Join(dir, "b.jsonl.gz")
	c := filepath.Join(dir, "c.jsonl")
	write(t, a, `{"id":1}`+"\n"+`{"id":2}`+"\n\n"+`{"id":3}`+"\n"+`{"id":4}`+"\n"+`{"id":5}`+"\n")
	write(t, b, gzipped(t, `{"id":6}`+"\n"+`{"id":7}`+"\n"+`{"id":8}`+"\n"))
	write(t, c, `{"id":9}`+"\n"+`{"id":10}`+"\n"+`{"id":11,"te`) // a writer is mid-line
	s := newSource(t, map[string]any{"path": filepath.Join(dir, "*")})

	parts := partitions(t, s)
	if !slices.Equal(parts, []string{a, b, c}) {
		t.Fatalf("partitions %q, want %q", parts, []string{a, b, c})
	}
	whole := read(t, s, nil)
	if len(whole.records) != 10 {
		t.Fatalf("the whole read gave %d records: %q", len(whole.records), whole.records)
	}
	sameAsWhole(t, s, whole, parts)

	// Resuming a partition from a position inside its file: the rest of
	// that file, with the same lines.
	first := readPart(t, s, a, nil)
	rest := readPart(t, s, a, []byte(first.positions[0]))
	if strings.Join(rest.records, " ") != `{"id":3} {"id":4} {"id":5}` {
		t.Fatalf("a from its first position: %q", rest.records)
	}
	if got := rest.origins[0].Places; !slices.Equal(got, []int64{4, 5}) {
		t.Errorf("a from its first position: lines %v, want [4 5] (line 3 is empty)", got)
	}
	if again := readPart(t, s, a, first.last()); len(again.records) != 0 {
		t.Errorf("a from its last position: %q", again.records)
	}
	// The gzipped file resumes inside itself too.
	gz := readPart(t, s, b, nil)
	if rest := readPart(t, s, b, []byte(gz.positions[0])); strings.Join(rest.records, " ") != `{"id":8}` {
		t.Errorf("b.jsonl.gz from its first position: %q", rest.records)
	}

	// The partial last line waits for the writer, as in the whole read.
	cpart := readPart(t, s, c, nil)
	f, _ := os.OpenFile(c, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`xt":"done"}` + "\n")
	f.Close()
	after := readPart(t, s, c, cpart.last())
	if strings.Join(after.records, " ") != `{"id":11,"text":"done"}` || !slices.Equal(after.origins[0].Places, []int64{3}) {
		t.Fatalf("c after the writer finished: %q %+v", after.records, after.origins)
	}

	// A whole-source checkpoint is a valid start for a partition: only its
	// entry for the partition's file counts, and the positions hold that
	// file alone.
	fromWhole := readPart(t, s, c, whole.last())
	if strings.Join(fromWhole.records, " ") != `{"id":11,"text":"done"}` {
		t.Fatalf("c from the whole read's checkpoint: %q", fromWhole.records)
	}
	if pos := decodePos(t, string(fromWhole.last())); len(pos.Files) != 1 {
		t.Errorf("c from the whole read's checkpoint: position %s", fromWhole.last())
	}
}

func TestPartitionsFollowTheFilesThatAreThere(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl")
	write(t, a, `{"id":1}`+"\n")
	s := newSource(t, map[string]any{"path": filepath.Join(dir, "*.jsonl")})
	if parts := partitions(t, s); !slices.Equal(parts, []string{a}) {
		t.Fatalf("partitions %q", parts)
	}
	aRead := readPart(t, s, a, nil)

	// A file that appears later is a new partition, read from its start.
	write(t, b, `{"id":2}`+"\n")
	if parts := partitions(t, s); !slices.Equal(parts, []string{a, b}) {
		t.Fatalf("after b appeared: partitions %q", parts)
	}
	if got := readPart(t, s, b, nil); strings.Join(got.records, " ") != `{"id":2}` {
		t.Fatalf("b: %q", got.records)
	}

	// A removed file is no partition, and reading it reads nothing.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	if parts := partitions(t, s); !slices.Equal(parts, []string{b}) {
		t.Fatalf("after a was removed: partitions %q", parts)
	}
	for _, from := range [][]byte{nil, aRead.last()} {
		if got := readPart(t, s, a, from); len(got.records) != 0 {
			t.Fatalf("removed a from %s: %q", from, got.records)
		}
	}
	// Nor is a name the glob never matched.
	if got := readPart(t, s, filepath.Join(dir, "other.csv"), nil); len(got.records) != 0 {
		t.Fatalf("a name that is not a partition: %q", got.records)
	}

	// With every file gone, a partition still reads nothing, while listing
	// the partitions fails as a whole read does.
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	if got := readPart(t, s, b, nil); len(got.records) != 0 {
		t.Fatalf("removed b: %q", got.records)
	}
	_, perr := s.Partitions(context.Background())
	rerr := s.Read(context.Background(), nil, &batches{})
	if perr == nil || rerr == nil || perr.Error() != rerr.Error() || !strings.Contains(perr.Error(), "matches no files") {
		t.Fatalf("no files: Partitions %v, Read %v", perr, rerr)
	}
}

// Partitions are named as the whole read names the files, relative to the
// pipeline file's directory when the path was found there.
func TestPartitionNamesAreTheFilesOrigins(t *testing.T) {
	pipelines, elsewhere := pathsLayout(t)
	t.Chdir(elsewhere)
	s := configured(t, "data/*.jsonl", pipelines)
	parts := partitions(t, s)
	if len(parts) == 0 {
		t.Fatal("no partitions")
	}
	for _, p := range parts {
		if filepath.IsAbs(p) || !strings.HasPrefix(p, "data/") {
			t.Errorf("partition %q is not named as the glob names it", p)
		}
	}
	whole := read(t, s, nil)
	sameAsWhole(t, s, whole, parts)
}

func TestCSVPartitions(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.csv"), filepath.Join(dir, "b.csv.gz")
	write(t, a, "id,text\n1,one\n2,\"two\nlines\"\n3,three\n")
	write(t, b, gzipped(t, "id,text\n4,four\n5,five\n6,six\n"))
	s := newSource(t, map[string]any{"path": filepath.Join(dir, "*"), "format": "csv"})
	parts := partitions(t, s)
	if !slices.Equal(parts, []string{a, b}) {
		t.Fatalf("partitions %q", parts)
	}
	whole := read(t, s, nil)
	if len(whole.records) != 6 {
		t.Fatalf("the whole read: %q", whole.records)
	}
	sameAsWhole(t, s, whole, parts)

	for _, part := range parts {
		first := readPart(t, s, part, nil)
		rest := readPart(t, s, part, []byte(first.positions[0]))
		if !slices.Equal(rest.records, first.records[2:]) {
			t.Errorf("%s from its first position: %q, want %q", part, rest.records, first.records[2:])
		}
		if len(rest.origins) > 0 && !slices.Equal(rest.origins[0].Places, first.origins[1].Places) {
			t.Errorf("%s from its first position: lines %v, want %v", part, rest.origins[0].Places, first.origins[1].Places)
		}
	}
	// Appended rows are read from the partition's last position.
	end := readPart(t, s, a, nil).last()
	f, _ := os.OpenFile(a, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("7,seven\n")
	f.Close()
	last := readPart(t, s, a, end)
	if strings.Join(last.records, " ") != `{"id":7,"text":"seven"}` || !slices.Equal(last.origins[0].Places, []int64{6}) {
		t.Fatalf("a after appending: %q %+v", last.records, last.origins)
	}
}

func TestParquetPartitions(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.parquet"), filepath.Join(dir, "b.parquet")
	writeParquet(t, a, 3, rows("a", 0, 7)...)
	writeParquet(t, b, 2, rows("b", 0, 5)...)
	s := parquetSource(t, filepath.Join(dir, "*.parquet"), 2)
	parts := partitions(t, s)
	if !slices.Equal(parts, []string{a, b}) {
		t.Fatalf("partitions %q", parts)
	}
	whole := read(t, s, nil)
	if len(whole.records) != 12 {
		t.Fatalf("the whole read: %d records", len(whole.records))
	}
	sameAsWhole(t, s, whole, parts)

	// Resume inside a row group, and after every row.
	first := readPart(t, s, a, nil)
	rest := readPart(t, s, a, []byte(first.positions[0]))
	if !slices.Equal(rest.records, rows("a", 2, 7)) || rest.origins[0].Places[0] != 2 {
		t.Fatalf("a from its first position: %q %+v", rest.records, rest.origins)
	}
	if again := readPart(t, s, a, first.last()); len(again.records) != 0 {
		t.Fatalf("a from its last position: %q", again.records)
	}

	// A rewritten file is read again under its new name, as the whole read
	// does it.
	writeParquet(t, b, 2, rows("c", 0, 3)...)
	wholeAgain := read(t, s, whole.last())
	bPos := decodePos(t, string(whole.last())).Files[b]
	rewritten := readPart(t, s, b, (&position{Files: map[string]filePos{b: bPos}}).encode())
	if !slices.Equal(rewritten.records, wholeAgain.records) || !slices.Equal(rewritten.records, rows("c", 0, 3)) {
		t.Fatalf("rewritten b: %q, the whole read %q", rewritten.records, wholeAgain.records)
	}
	for i := range rewritten.origins {
		if rewritten.origins[i].Name != wholeAgain.origins[i].Name || !strings.HasPrefix(rewritten.origins[i].Name, b+"@") {
			t.Errorf("rewritten b batch %d: origin %q, the whole read %q", i, rewritten.origins[i].Name, wholeAgain.origins[i].Name)
		}
		if rewritten.positions[i] != string((&position{Files: map[string]filePos{b: decodePos(t, wholeAgain.positions[i]).Files[b]}}).encode()) {
			t.Errorf("rewritten b batch %d: position %s, the whole read %s", i, rewritten.positions[i], wholeAgain.positions[i])
		}
	}
}

func TestPartitionedSourceConformance(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := json.Marshal(map[string]any{"path": filepath.Join(dir, "*.jsonl"), "format": "jsonl", "on_error": "fail", "batch_rows": 2})
	var want []string
	for i := range 7 {
		want = append(want, fmt.Sprintf(`{"row_id":"r%d","n":%d}`, i, i))
	}
	sdktest.TestSource(t, func() sdk.Source { return &Source{} }, "", sdktest.SourceTest{
		Config: string(cfg),
		Setup: func(t testing.TB) {
			write(t.(*testing.T), filepath.Join(dir, "1.jsonl"), strings.Join(want[:3], "\n")+"\n")
			write(t.(*testing.T), filepath.Join(dir, "2.jsonl"), strings.Join(want[3:], "\n")+"\n")
		},
		Want: want,
	})
}
