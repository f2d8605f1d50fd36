package vault

import "slices"

// Dirty chunks. A write to an open file does not copy the chunk it lands
// in: it records the bytes it wrote and where (spans, in offsets within
// the chunk). A commit merges exactly those spans onto the chunk as it is
// stored at commit time, inside the write transaction, so that bytes that
// another process (another mount, a library user) wrote to the same
// chunk in the meantime survive; reads overlay the spans on the stored
// chunk the same way. Writing never reads the database, so a writer never
// waits for a connection while it holds the inode's lock.

// span is a written range [lo, hi) of offsets within a chunk.
type span struct{ lo, hi int }

// dirtyChunk holds the bytes this process wrote to one chunk and not yet
// committed. buf is chunk-sized; only the bytes inside spans are
// meaningful. Invariant: spans are sorted, non-empty, and neither overlap
// nor touch (adjacent spans are merged).
type dirtyChunk struct {
	buf   []byte
	spans []span
}

// write copies p into the chunk at within and records the span.
func (dc *dirtyChunk) write(p []byte, within int) {
	copy(dc.buf[within:], p)
	dc.add(within, within+len(p))
}

// add records [lo, hi) as written, merging it with the spans it overlaps
// or touches.
func (dc *dirtyChunk) add(lo, hi int) {
	if lo >= hi {
		return
	}
	// first is the first span that ends at or after lo (touching merges),
	// last the first span that starts after hi.
	first, _ := slices.BinarySearchFunc(dc.spans, lo, func(s span, lo int) int { return s.hi - lo })
	last := first
	for last < len(dc.spans) && dc.spans[last].lo <= hi {
		lo, hi = min(lo, dc.spans[last].lo), max(hi, dc.spans[last].hi)
		last++
	}
	dc.spans = slices.Replace(dc.spans, first, last, span{lo, hi})
}

// end is the offset just past the last written byte.
func (dc *dirtyChunk) end() int {
	if len(dc.spans) == 0 {
		return 0
	}
	return dc.spans[len(dc.spans)-1].hi
}

// covers reports whether every byte of [lo, hi) was written.
func (dc *dirtyChunk) covers(lo, hi int) bool {
	if lo >= hi {
		return true
	}
	i, _ := slices.BinarySearchFunc(dc.spans, lo, func(s span, lo int) int { return s.hi - 1 - lo })
	return i < len(dc.spans) && dc.spans[i].lo <= lo && dc.spans[i].hi >= hi
}

// whole reports whether the written bytes are one run from the chunk's
// start, so that buf[:end()] is the chunk's new contents as it stands.
func (dc *dirtyChunk) whole() bool {
	return len(dc.spans) == 1 && dc.spans[0].lo == 0
}

// overlay copies the written bytes that fall in [within, within+len(dst))
// into dst, leaving the other bytes of dst as they are.
func (dc *dirtyChunk) overlay(dst []byte, within int) {
	end := within + len(dst)
	for _, s := range dc.spans {
		lo, hi := max(s.lo, within), min(s.hi, end)
		if lo < hi {
			copy(dst[lo-within:hi-within], dc.buf[lo:hi])
		}
	}
}

// cut forgets everything written at or past offset n of the chunk (a
// truncate).
func (dc *dirtyChunk) cut(n int) {
	i := 0
	for i < len(dc.spans) && dc.spans[i].hi <= n {
		i++
	}
	if i < len(dc.spans) && dc.spans[i].lo < n {
		dc.spans[i].hi = n
		i++
	}
	dc.spans = dc.spans[:i]
}

// absorb writes newer's spans over dc, so that dc holds both with
// newer's bytes winning where they overlap.
func (dc *dirtyChunk) absorb(newer *dirtyChunk) {
	for _, s := range newer.spans {
		dc.write(newer.buf[s.lo:s.hi], s.lo)
	}
}

// merged returns the chunk's contents once dc's spans are written over
// stored, the chunk's committed bytes: scratch (chunk-sized) holds the
// result unless dc's buffer already is it. Bytes between the stored end
// and a span read as zeros.
func (dc *dirtyChunk) merged(stored, scratch []byte) []byte {
	if len(stored) == 0 && dc.whole() {
		return dc.buf[:dc.end()]
	}
	n := copy(scratch, stored)
	if e := dc.end(); e > n {
		clear(scratch[n:e])
		n = e
	}
	dc.overlay(scratch[:n], 0)
	return scratch[:n]
}
