package parquetread

import (
	"math/bits"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Pool is a memory.Allocator that keeps freed buffers for reuse, in
// power-of-two size classes. Decoding a row group allocates about as many
// bytes as it decodes, and a source releases each batch as soon as it has
// sent it, so with the Go allocator most of a reader's CPU time went to the
// garbage collector; with a Pool the same few buffers serve batch after
// batch. Buffers are zeroed when handed out again, as the Go allocator's
// are, and 64-byte aligned. A buffer that is never freed (an array still
// referenced) is simply left to the garbage collector.
//
// It is the allocator Open uses when Options.Allocator is nil. Batches
// must then be released once done with (as sdk.Emitter.Emit does), and
// not used after: their memory goes to the next batch.
type Pool struct {
	classes [maxClass + 1]sync.Pool
	mem     memory.GoAllocator
}

const (
	minClass = 6  // 64 bytes
	maxClass = 30 // 1 GiB; larger buffers are not pooled
)

var defaultPool = &Pool{}

// NewPool returns an empty Pool.
func NewPool() *Pool { return &Pool{} }

func class(size int) int {
	if size <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(size - 1))
}

// Allocate returns a zeroed buffer of size bytes.
func (p *Pool) Allocate(size int) []byte {
	c := class(size)
	if c > maxClass {
		return p.mem.Allocate(size)
	}
	if v := p.classes[c].Get(); v != nil {
		b := (*v.(*[]byte))[:size]
		clear(b)
		return b
	}
	return p.mem.Allocate(1 << c)[:size]
}

// Reallocate returns a buffer of size bytes that starts with b's bytes
// (b itself when it has room; the bytes past len(b) are zeroed).
func (p *Pool) Reallocate(size int, b []byte) []byte {
	if cap(b) >= size {
		if size > len(b) {
			clear(b[len(b):size])
		}
		return b[:size]
	}
	out := p.Allocate(size)
	copy(out, b)
	p.Free(b)
	return out
}

// Free keeps b for reuse. Buffers the Pool did not hand out are dropped.
func (p *Pool) Free(b []byte) {
	c := cap(b)
	if c < 1<<minClass || c > 1<<maxClass || c&(c-1) != 0 {
		return
	}
	b = b[:c]
	p.classes[bits.Len(uint(c))-1].Put(&b)
}
