package sources3

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
)

// positionVersion is the version of the checkpoint's format.
const positionVersion = 1

// position is the checkpoint: which objects are finished, and how far the
// one being read has got.
//
// An object is finished when every record in it was emitted; the engine
// commits a position only once every batch before it is acked, so a
// committed position lists an object only when all its records were acked.
// A finished object is remembered as an 8-byte hash of its key and ETag,
// so an object is read again when it is rewritten (new ETag) and a key that
// was never seen is read whatever its place in key order.
//
// The set is bounded: past track_objects entries, the entries of the
// smallest keys are folded into Through, and every key up to Through counts
// as finished whatever its ETag. That is what compaction gives up: an
// object that appears, or is rewritten, at a key at or before Through is not
// read. Objects are finished in key order, so Through never passes an
// object that this run listed and has not finished.
type position struct {
	V int `json:"v"`
	// Through: every key up to and including it counts as finished.
	Through string `json:"through,omitempty"`
	// Done holds the finished objects after Through: their hashes (see
	// objectHash), sorted, 8 bytes each, base64 in JSON.
	Done hashes `json:"done,omitempty"`
	// Cur is the object being read, when the position is inside one.
	Cur *cursor `json:"cur,omitempty"`
}

// cursor is a place inside an object.
type cursor struct {
	Key  string `json:"key"`
	ETag string `json:"etag"`
	// Gzip says the object is gzipped: it resumes by reading again from
	// the start and skipping Offset uncompressed bytes.
	Gzip bool `json:"gzip,omitempty"`
	// Offset is how many bytes of JSONL or CSV were consumed (of the
	// uncompressed stream for gzip), Line how many lines.
	Offset int64 `json:"offset,omitempty"`
	Line   int64 `json:"line,omitempty"`
	// Header is a CSV object's header length: a resumed read is given the
	// header again.
	Header int64 `json:"header,omitempty"`
	// Row is a Parquet object's next row: the absolute index, which is
	// also its place.
	Row int64 `json:"row,omitempty"`
}

// hashes is a sorted set of object hashes.
type hashes []uint64

func (h hashes) MarshalJSON() ([]byte, error) {
	buf := make([]byte, 8*len(h))
	for i, v := range h {
		binary.BigEndian.PutUint64(buf[8*i:], v)
	}
	return json.Marshal(base64.RawStdEncoding.EncodeToString(buf))
}

func (h *hashes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	buf, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	if len(buf)%8 != 0 {
		return fmt.Errorf("done holds %d bytes, not a multiple of 8", len(buf))
	}
	out := make(hashes, len(buf)/8)
	for i := range out {
		out[i] = binary.BigEndian.Uint64(buf[8*i:])
	}
	slices.Sort(out)
	*h = slices.Compact(out)
	return nil
}

func (h hashes) has(v uint64) bool {
	_, ok := slices.BinarySearch(h, v)
	return ok
}

// objectHash identifies a version of an object: the first 8 bytes of the
// SHA-256 of its key and ETag.
func objectHash(key, etag string) uint64 {
	sum := sha256.Sum256([]byte(key + "\x00" + etag))
	return binary.BigEndian.Uint64(sum[:8])
}

// object is a listed object.
type object struct {
	Key  string
	ETag string // without quotes
	Size int64
	hash uint64
}

// tracker is the position of a run as it reads, with the keys of the hashes
// in Done (they are all listed objects: see prune).
type tracker struct {
	pos   position
	limit int               // track_objects
	keys  map[uint64]string // hash in pos.Done → key
}

func decodePosition(from []byte, limit int) (*tracker, error) {
	t := &tracker{pos: position{V: positionVersion}, limit: limit, keys: map[uint64]string{}}
	if len(from) == 0 {
		return t, nil
	}
	t.pos.V = 0 // a checkpoint without a version is not this plugin's
	if err := json.Unmarshal(from, &t.pos); err != nil {
		return nil, fmt.Errorf("checkpoint is not one this plugin wrote (%v); reset it with `pipeline state reset`", err)
	}
	if t.pos.V != positionVersion {
		return nil, fmt.Errorf("checkpoint has version %d, this plugin writes %d; reset it with `pipeline state reset`", t.pos.V, positionVersion)
	}
	return t, nil
}

// finished reports whether a listed object needs no reading.
func (t *tracker) finished(o object) bool {
	return o.Key <= t.pos.Through || t.pos.Done.has(o.hash)
}

// prune drops from Done what the listing does not hold (objects deleted or
// rewritten since: a rewrite has a new hash), and a cursor on an object that
// is no longer there in the same version, then compacts. objs is the
// listing, in key order, of the keys after Through.
func (t *tracker) prune(objs []object) {
	listed := make(map[uint64]string, len(objs))
	for _, o := range objs {
		listed[o.hash] = o.Key
	}
	kept := t.pos.Done[:0]
	for _, h := range t.pos.Done {
		if key, ok := listed[h]; ok {
			kept = append(kept, h)
			t.keys[h] = key
		}
	}
	t.pos.Done = kept
	if c := t.pos.Cur; c != nil {
		if key, ok := listed[objectHash(c.Key, c.ETag)]; !ok || key != c.Key {
			t.pos.Cur = nil
		}
	}
	// A smaller limit than the last run's: fold the excess now. Nothing
	// has been read yet, so only entries before the first object still to
	// read may go.
	first := ""
	for _, o := range objs {
		if !t.finished(o) {
			first = o.Key
			break
		}
	}
	t.compact(first)
}

// resume returns where to start in o: the cursor when it is inside this
// version of o, else nil (from the start).
func (t *tracker) resume(o object) *cursor {
	if c := t.pos.Cur; c != nil && c.Key == o.Key && c.ETag == o.ETag {
		cc := *c
		return &cc
	}
	return nil
}

// at records that the next batch ends at c inside its object.
func (t *tracker) at(c cursor) { t.pos.Cur = &c }

// finish records that every record of the object's version was emitted.
func (t *tracker) finish(key, etag string) {
	t.pos.Cur = nil
	h := objectHash(key, etag)
	if key <= t.pos.Through || t.pos.Done.has(h) {
		return
	}
	i, _ := slices.BinarySearch(t.pos.Done, h)
	t.pos.Done = slices.Insert(t.pos.Done, i, h)
	t.keys[h] = key
	t.compact(key)
}

// compact folds the entries of the smallest keys into Through while Done
// holds more than the limit, but only entries at or before bound (the
// object just finished: every listed object before it is finished), or any
// entry when bound is "" (nothing left to read).
func (t *tracker) compact(bound string) {
	over := len(t.pos.Done) - t.limit
	if over <= 0 {
		return
	}
	type entry struct {
		key string
		h   uint64
	}
	entries := make([]entry, 0, len(t.pos.Done))
	for _, h := range t.pos.Done {
		entries = append(entries, entry{t.keys[h], h})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].key < entries[j].key })
	drop := map[uint64]bool{}
	for _, e := range entries[:over] {
		if bound != "" && e.key > bound {
			break
		}
		drop[e.h] = true
		delete(t.keys, e.h)
		if e.key > t.pos.Through {
			t.pos.Through = e.key
		}
	}
	if len(drop) == 0 {
		return
	}
	kept := t.pos.Done[:0]
	for _, h := range t.pos.Done {
		if !drop[h] {
			kept = append(kept, h)
		}
	}
	t.pos.Done = kept
}

func (t *tracker) encode() []byte {
	b, _ := json.Marshal(&t.pos)
	return b
}
