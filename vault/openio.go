package vault

import (
	"database/sql"
	"errors"
	"io"
	"maps"
	"runtime"
	"slices"
	"time"
)

// Reads, writes, commits and truncates of open inodes. See openInode for
// the locking rules and dirty.go for how this process's writes are merged
// with what other processes stored.

// readAt reads into p from off: stored chunks with this process's
// uncommitted writes over them. It never waits for a lock that is held
// across a transaction: the stored chunks are fetched without any lock,
// and if a commit of this process ended meanwhile (its bytes then neither
// pending any more nor, perhaps, in the snapshot read) the read is done
// again; it can only be redone as often as commits end.
func (oi *openInode) readAt(v *Vault, p []byte, off int64) (int, error) {
	want := len(p)
	end := off + int64(want)
	if end < off { // past the largest offset: nothing is stored there
		return 0, io.EOF
	}
	var fetch []int64
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			backoff(attempt)
		}
		oi.mu.RLock()
		fetch = fetch[:0]
		for idx := off / oi.cs; idx*oi.cs < end; idx++ {
			lo, hi := oi.chunkPart(idx, off, end)
			if !oi.pendingCovers(idx, lo, hi) {
				fetch = append(fetch, idx)
			}
		}
		oi.mu.RUnlock()

		gen, stored := int64(-1), oi.stored.Load()
		if len(fetch) > 0 {
			var err error
			if gen, stored, err = v.fetchChunks(oi.ino, oi.cs, fetch, p, off); err != nil {
				return 0, err
			}
			oi.stored.note(stored, gen)
		}

		oi.mu.RLock()
		if !oi.readValid(fetch, gen, off, end) {
			oi.mu.RUnlock()
			continue
		}
		for idx := off / oi.cs; idx*oi.cs < end; idx++ {
			lo, hi := oi.chunkPart(idx, off, end)
			dst := p[lo-off : hi-off]
			within := int(lo - idx*oi.cs)
			if dc := oi.flushing[idx]; dc != nil {
				dc.overlay(dst, within)
			}
			if dc := oi.dirty[idx]; dc != nil {
				dc.overlay(dst, within)
			}
		}
		size := max(stored, oi.pendingEnd)
		oi.mu.RUnlock()

		if off >= size {
			return 0, io.EOF
		}
		if end > size {
			return int(size - off), io.EOF
		}
		return want, nil
	}
}

// readValid reports whether a read that fetched the chunks in fetch
// (ascending) from a snapshot of generation gen, and found the others of
// [off, end) covered by pending writes, saw every byte committed here:
// the snapshot is no older than this process's last commit, and what was
// pending is still pending. oi.mu must be held.
func (oi *openInode) readValid(fetch []int64, gen, off, end int64) bool {
	if len(fetch) > 0 && gen < oi.gen {
		return false
	}
	next := 0
	for idx := off / oi.cs; idx*oi.cs < end; idx++ {
		if next < len(fetch) && fetch[next] == idx {
			next++
			continue
		}
		if lo, hi := oi.chunkPart(idx, off, end); !oi.pendingCovers(idx, lo, hi) {
			return false
		}
	}
	return true
}

// backoff waits a little before attempt number attempt of a read, longer
// each time, up to a millisecond.
func backoff(attempt int) {
	if attempt < 3 {
		runtime.Gosched()
		return
	}
	time.Sleep(min(time.Duration(attempt)*50*time.Microsecond, time.Millisecond))
}

// chunkPart returns the part [lo, hi) of [off, end) that chunk idx holds.
func (oi *openInode) chunkPart(idx, off, end int64) (lo, hi int64) {
	start := idx * oi.cs
	return max(start, off), min(start+oi.cs, end)
}

// pendingCovers reports whether uncommitted writes hold every byte of
// [lo, hi), which lies in chunk idx, so that a read needs nothing stored.
// oi.mu must be held.
func (oi *openInode) pendingCovers(idx, lo, hi int64) bool {
	start := idx * oi.cs
	for _, dc := range []*dirtyChunk{oi.dirty[idx], oi.flushing[idx]} {
		if dc != nil && dc.covers(int(lo-start), int(hi-start)) {
			return true
		}
	}
	return false
}

// copyChunk copies a chunk's bytes from within into dst, with zeros past
// the stored bytes.
func copyChunk(dst, data []byte, within int) {
	n := 0
	if within < len(data) {
		n = copy(dst, data[within:])
	}
	clear(dst[n:])
}

// fetchChunks reads the listed chunks (ascending) of ino into p, which
// holds the file's bytes from off, using the read cache where the inode's
// generation still matches, and returns the generation and size they
// belong to. One read transaction sees one version.
func (v *Vault) fetchChunks(ino, cs int64, idxs []int64, p []byte, off int64) (gen, size int64, err error) {
	err = v.view("read", "", func(q *sql.Tx) error {
		if err := q.QueryRow(v.sql(`SELECT generation, size FROM {t}_inodes WHERE id = ?`), ino).Scan(&gen, &size); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		dstOf := func(idx int64) ([]byte, int) {
			start := idx * cs
			lo, hi := max(start, off), min(start+cs, off+int64(len(p)))
			return p[lo-off : hi-off], int(lo - start)
		}
		var missing []int64
		for _, idx := range idxs {
			dst, within := dstOf(idx)
			stored, ok := v.reads.copyOut(dst, ino, idx, gen, within)
			if !ok {
				missing = append(missing, idx)
				continue
			}
			if within+len(dst) > stored {
				clear(dst[max(stored-within, 0):])
			}
		}
		for len(missing) > 0 {
			run := 1 // a run of consecutive chunks is one range query
			for run < len(missing) && missing[run] == missing[run-1]+1 {
				run++
			}
			// Rows come in index order; a chunk with no row is a hole,
			// zeroed when the next row (or the end) shows it is missing.
			next, last := missing[0], missing[run-1]
			clearTo := func(end int64) {
				for ; next < end; next++ {
					dst, _ := dstOf(next)
					clear(dst)
				}
			}
			err := v.scanChunksOf(q, ino, cs, size, next, last, func(idx int64, data []byte) error {
				clearTo(idx)
				next = idx + 1
				dst, within := dstOf(idx)
				copyChunk(dst, data, within)
				if within > 0 || int64(within+len(dst)) < cs {
					// Only part of the chunk was asked for: the rest is
					// likely the next read's. A chunk read whole (the
					// kernel's 1 MiB read-ahead) is not copied again.
					v.reads.put(ino, idx, gen, data)
				}
				return nil
			})
			if err != nil {
				return err
			}
			clearTo(last + 1)
			missing = missing[run:]
		}
		// Bytes past the stored size read as zeros, whatever a row left
		// by an older version holds there.
		if off+int64(len(p)) > size {
			clear(p[min(max(size-off, 0), int64(len(p))):])
		}
		return nil
	})
	return gen, size, err
}

// writeAt writes p at off into dirty chunks. It reads nothing stored:
// the commit merges what was written onto the chunks as stored then.
func (oi *openInode) writeAt(v *Vault, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	if err := oi.takeOutErr(); err != nil {
		return err
	}
	if err := v.cache.reserve(v, oi, chunksSpanned(oi.cs, off, len(p))); err != nil {
		return err
	}
	if err := CheckRange(off, int64(len(p))); err != nil {
		return err
	}
	oi.mu.Lock()
	defer oi.mu.Unlock()
	end := off + int64(len(p))
	for idx := off / oi.cs; idx*oi.cs < end; idx++ {
		lo, hi := oi.chunkPart(idx, off, end)
		oi.dirtyChunk(v, idx).write(p[lo-off:hi-off], int(lo-idx*oi.cs))
	}
	oi.pendingEnd = max(oi.pendingEnd, end)
	oi.touch()
	return nil
}

// takeOutErr returns, once, why the background write-out could not
// commit this inode: the error belongs to this file's writers, not to
// whoever writes next.
func (oi *openInode) takeOutErr() error {
	oi.mu.RLock() // every write asks: the common answer needs no exclusive lock
	none := oi.outErr == nil
	oi.mu.RUnlock()
	if none {
		return nil
	}
	oi.mu.Lock()
	defer oi.mu.Unlock()
	err := oi.outErr
	oi.outErr = nil
	return err
}

// chunksSpanned counts the chunks that n bytes at off touch.
func chunksSpanned(cs, off int64, n int) int64 {
	if n == 0 {
		return 0
	}
	return (off+int64(n)-1)/cs - off/cs + 1
}

// touch records a data change now; the times are committed with the data.
func (oi *openInode) touch() {
	now := time.Now().UnixNano()
	oi.mtime, oi.ctime, oi.timesDirty = now, now, true
	oi.timesSeq++
	oi.meta.mtime = nil // a write after utimensat sets mtime again
}

// dirtyChunk returns chunk idx's dirty record, creating an empty one. A
// chunk being committed gets a fresh record for the writes that follow;
// reads overlay both, the newer last. oi.mu must be held.
func (oi *openInode) dirtyChunk(v *Vault, idx int64) *dirtyChunk {
	if dc := oi.dirty[idx]; dc != nil {
		return dc
	}
	dc := &dirtyChunk{buf: v.cache.chunkBuf(int(oi.cs))}
	if oi.dirty == nil {
		oi.dirty = make(map[int64]*dirtyChunk)
	}
	oi.dirty[idx] = dc
	v.cache.addDirty(oi.cs)
	return dc
}

// freeChunk gives a dirty record's buffer back to the cache.
func (oi *openInode) freeChunk(v *Vault, dc *dirtyChunk) {
	v.cache.putChunkBuf(dc.buf)
	v.cache.addDirty(-oi.cs)
}

// recomputePendingEnd sets pendingEnd from the dirty and flushing
// records. oi.mu must be held.
func (oi *openInode) recomputePendingEnd() {
	oi.pendingEnd = 0
	for _, m := range []map[int64]*dirtyChunk{oi.dirty, oi.flushing} {
		for idx, dc := range m {
			oi.pendingEnd = max(oi.pendingEnd, idx*oi.cs+int64(dc.end()))
		}
	}
}

// storedChunk reads chunk idx of ino inside t into buf and returns its
// bytes, no more than limit of them (no stored row holds data past the
// inode's size).
func (t *tx) storedChunk(ino, idx int64, limit int, buf []byte) ([]byte, error) {
	n := 0
	err := t.v.scanChunks(t, ino, idx, idx, func(_ int64, data []byte) error {
		n = copy(buf[:limit], data)
		return nil
	})
	return buf[:n], err
}

// mergeChunk writes dc's spans over chunk idx as stored now (the inode's
// stored size is size) and stores the result. The stored chunk is read
// only if the spans leave some of its bytes in place.
func (t *tx) mergeChunk(ino, idx, cs, size int64, dc *dirtyChunk, scratch []byte) (end int64, err error) {
	var stored []byte
	if have := min(max(size-idx*cs, 0), cs); have > 0 && !dc.covers(0, int(have)) {
		// Read into the tail of scratch's twin: merged builds in scratch.
		if stored, err = t.storedChunk(ino, idx, int(have), scratch[cs:]); err != nil {
			return 0, err
		}
	}
	data := dc.merged(stored, scratch[:cs])
	return idx*cs + int64(len(data)), t.putChunk(ino, idx, data)
}

// commit writes dirty chunks and the size and times in one transaction
// and returns how many chunks it wrote. With fullOnly it writes only
// chunks that are written to their end or lie inside the stored data
// (the budget's early write-out, which leaves growing chunks to grow). The chunks move to the flushing set for
// the transaction, so writes and reads of the file go on meanwhile.
func (oi *openInode) commit(v *Vault, fullOnly bool) (int, error) {
	oi.commitMu.Lock()
	defer oi.commitMu.Unlock()
	return oi.commitLocked(v, fullOnly)
}

// commitLocked is commit with commitMu held.
func (oi *openInode) commitLocked(v *Vault, fullOnly bool) (int, error) {
	oi.mu.Lock()
	batch := make(map[int64]*dirtyChunk)
	stored := oi.stored.Load()
	for idx, dc := range oi.dirty {
		// A chunk written to its end, or inside the stored data, is one
		// that a sequential writer has left behind.
		if !fullOnly || dc.end() == int(oi.cs) || (idx+1)*oi.cs <= stored {
			batch[idx] = dc
		}
	}
	if len(batch) == 0 && (fullOnly || (!oi.timesDirty && !oi.meta.set)) {
		oi.mu.Unlock()
		return 0, nil
	}
	for idx := range batch {
		delete(oi.dirty, idx)
	}
	oi.flushing = batch
	mtime, ctime, withTimes, seq := oi.mtime, oi.ctime, oi.timesDirty && !fullOnly, oi.timesSeq
	meta := oi.meta
	withMeta := meta.set && !fullOnly
	oi.mu.Unlock()

	idxs := slices.Sorted(maps.Keys(batch))
	scratch := v.cache.chunkBuf(int(2 * oi.cs))
	defer v.cache.putChunkBuf(scratch)
	var size, gen int64
	err := v.update("write", "", func(t *tx) error {
		stored, err := t.storedSize(oi.ino)
		if err != nil {
			return err
		}
		size = stored
		for _, idx := range idxs {
			end, err := t.mergeChunk(oi.ino, idx, oi.cs, stored, batch[idx], scratch)
			if err != nil {
				return err
			}
			size = max(size, end)
		}
		var row *sql.Row
		if withTimes {
			row = t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = ?, mtime = ?, ctime = ?, generation = generation + 1 WHERE id = ? RETURNING generation`),
				size, mtime, ctime, oi.ino)
		} else {
			row = t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = ?, generation = generation + 1 WHERE id = ? RETURNING generation`), size, oi.ino)
		}
		if err := row.Scan(&gen); err != nil || !withMeta {
			return err
		}
		// 2048 is S_ISUID, 1024 S_ISGID, 8 S_IXGRP.
		_, err = t.Exec(v.sql(`UPDATE {t}_inodes SET
			mode = coalesce(?1, CASE WHEN ?2 THEN mode & ~2048 & ~(CASE WHEN mode & 8 THEN 1024 ELSE 0 END) ELSE mode END),
			uid = coalesce(?3, uid), gid = coalesce(?4, gid), atime = coalesce(?5, atime), mtime = coalesce(?6, mtime),
			ctime = max(ctime, ?7) WHERE id = ?8`),
			ptrVal(meta.mode, 07777), meta.dropPriv, ptrVal(meta.uid, ^uint32(0)), ptrVal(meta.gid, ^uint32(0)),
			meta.atime, meta.mtime, meta.ctime, oi.ino)
		return err
	})

	oi.mu.Lock()
	defer oi.mu.Unlock()
	oi.flushing = nil
	for idx, dc := range batch {
		if err == nil {
			oi.freeChunk(v, dc)
			continue
		}
		// Not committed: pending again, under what was written since.
		if newer := oi.dirty[idx]; newer != nil {
			dc.absorb(newer)
			oi.freeChunk(v, newer)
		}
		if oi.dirty == nil {
			oi.dirty = make(map[int64]*dirtyChunk)
		}
		oi.dirty[idx] = dc
	}
	oi.recomputePendingEnd()
	if err != nil {
		return 0, err
	}
	oi.stored.note(size, gen)
	oi.gen = gen
	oi.outErr = nil // whatever a write-out could not commit, this did
	if withTimes && oi.timesSeq == seq {
		oi.timesDirty = false
	}
	if withMeta && oi.meta.seq == meta.seq {
		oi.meta = pendingMeta{seq: meta.seq}
	}
	v.reads.dropInode(oi.ino)
	return len(batch), nil
}

// storedSize returns inode ino's size as stored.
func (t *tx) storedSize(ino int64) (int64, error) {
	var size int64
	err := t.QueryRow(t.v.sql(`SELECT size FROM {t}_inodes WHERE id = ?`), ino).Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	return size, err
}

// appendData writes p at the end of the file as stored at the moment it
// commits, in a transaction of its own, and returns the offset it went
// to: appends from several processes (two mounts, a mount and a library
// user) each land whole, one after the other. Writes of this process not
// yet committed are committed first, since they are part of the file
// whose end the append follows.
func (oi *openInode) appendData(v *Vault, p []byte) (int64, error) {
	oi.commitMu.Lock()
	defer oi.commitMu.Unlock()
	if _, err := oi.commitLocked(v, false); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		oi.mu.RLock()
		defer oi.mu.RUnlock()
		return oi.sizeLocked(), nil
	}
	scratch := v.cache.chunkBuf(int(2 * oi.cs))
	defer v.cache.putChunkBuf(scratch)
	one := &dirtyChunk{buf: v.cache.chunkBuf(int(oi.cs))}
	defer v.cache.putChunkBuf(one.buf)
	oi.mu.RLock()
	seq := oi.timesSeq
	oi.mu.RUnlock()
	var off, gen int64
	err := v.update("append", "", func(t *tx) error {
		var err error
		if off, err = t.storedSize(oi.ino); err != nil {
			return err
		}
		if err := CheckRange(off, int64(len(p))); err != nil { // the end is chosen here
			return err
		}
		end := off + int64(len(p))
		for idx := off / oi.cs; idx*oi.cs < end; idx++ {
			lo, hi := oi.chunkPart(idx, off, end)
			one.spans = one.spans[:0]
			one.write(p[lo-off:hi-off], int(lo-idx*oi.cs))
			if _, err := t.mergeChunk(oi.ino, idx, oi.cs, off, one, scratch); err != nil {
				return err
			}
		}
		return t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = ?1, mtime = ?2, ctime = ?2, generation = generation + 1 WHERE id = ?3 RETURNING generation`),
			end, t.now, oi.ino).Scan(&gen)
	})
	if err != nil {
		return 0, err
	}
	oi.mu.Lock()
	oi.stored.note(off+int64(len(p)), gen)
	oi.gen = gen
	if oi.timesSeq == seq {
		oi.timesDirty = false // the append stored the time of this write
	}
	oi.meta.mtime = nil // a write after utimensat sets mtime again
	oi.mu.Unlock()
	v.reads.dropInode(oi.ino)
	return off, nil
}

// truncate sets the size, committing at once: stored rows past the new
// end are deleted and the one it falls inside is cut, so that growing
// the file again exposes zeros. Uncommitted writes past the end are
// dropped only once the transaction has committed: if it fails, nothing
// written is lost.
func (oi *openInode) truncate(v *Vault, size int64) error {
	oi.commitMu.Lock()
	defer oi.commitMu.Unlock()
	var gen int64
	err := v.update("truncate", "", func(t *tx) error {
		if err := t.truncateChunks(oi.ino, int(oi.cs), size); err != nil {
			return err
		}
		err := t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = ?1, mtime = ?2, ctime = ?2, generation = generation + 1 WHERE id = ?3 RETURNING generation`),
			size, t.now, oi.ino).Scan(&gen)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		return err
	}
	oi.mu.Lock()
	for idx, dc := range oi.dirty { // no flushing set: commits hold commitMu
		start := idx * oi.cs
		if start >= size {
			delete(oi.dirty, idx)
			oi.freeChunk(v, dc)
		} else if size-start < oi.cs {
			dc.cut(int(size - start))
		}
	}
	oi.recomputePendingEnd()
	oi.stored.note(size, gen)
	oi.gen = gen
	oi.timesDirty = false
	oi.mu.Unlock()
	v.reads.dropInode(oi.ino)
	return nil
}

// grow makes the stored size at least size, as fallocate(2) without
// KEEP_SIZE does, committing at once: a file that another process has
// made longer meanwhile is never cut back to the size seen here.
func (oi *openInode) grow(v *Vault, size int64) error {
	oi.commitMu.Lock()
	defer oi.commitMu.Unlock()
	var stored, gen int64
	err := v.update("allocate", "", func(t *tx) error {
		err := t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = max(size, ?1),
			mtime = CASE WHEN size < ?1 THEN ?2 ELSE mtime END, ctime = CASE WHEN size < ?1 THEN ?2 ELSE ctime END,
			generation = generation + 1 WHERE id = ?3 RETURNING size, generation`),
			size, t.now, oi.ino).Scan(&stored, &gen)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		return err
	}
	oi.mu.Lock()
	oi.stored.note(stored, gen)
	oi.gen = gen
	oi.mu.Unlock()
	return nil
}
