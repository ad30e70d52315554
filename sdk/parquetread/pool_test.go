package parquetread

import (
	"testing"
	"unsafe"
)

func TestPoolReusesZeroedAlignedBuffers(t *testing.T) {
	p := NewPool()
	for _, size := range []int{0, 1, 63, 64, 65, 1000, 4096, 1 << 20} {
		b := p.Allocate(size)
		if len(b) != size || cap(b) < size || cap(b)&(cap(b)-1) != 0 {
			t.Fatalf("Allocate(%d): len %d cap %d", size, len(b), cap(b))
		}
		if addr := uintptr(unsafe.Pointer(unsafe.SliceData(b[:cap(b)]))); addr%64 != 0 {
			t.Fatalf("Allocate(%d) is not 64-byte aligned", size)
		}
		full := b[:cap(b)]
		for i := range full {
			full[i] = 0xAA // dirty all of it, past len too
		}
		p.Free(b)
		// A buffer that comes back is zeroed, and so is what Reallocate
		// adds in place.
		c := p.Allocate(size)
		for i, x := range c {
			if x != 0 {
				t.Fatalf("Allocate(%d) after reuse: byte %d is %x", size, i, x)
			}
		}
		if size < cap(c) {
			grown := p.Reallocate(cap(c), c)
			for i, x := range grown {
				if x != 0 {
					t.Fatalf("Reallocate(%d) in place: byte %d is %x", cap(c), i, x)
				}
			}
			c = grown
		}
		c = append(c[:0], "kept"...)[:len(c)]
		moved := p.Reallocate(cap(c)*2+1, c)
		if len(moved) != cap(c)*2+1 || (len(c) >= 4 && string(moved[:4]) != "kept") {
			t.Fatalf("Reallocate to a larger class lost the bytes")
		}
		for _, x := range moved[len(c):] {
			if x != 0 {
				t.Fatal("Reallocate to a larger class: the new bytes are not zero")
			}
		}
		p.Free(moved)
	}
	// Buffers it did not hand out are dropped, not pooled.
	p.Free(make([]byte, 100))
	p.Free(make([]byte, 3, 96))
}
