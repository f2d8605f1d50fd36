package vault

import (
	"database/sql"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Open inodes. Every File of one inode in this process shares one
// openInode: its size and times as the writers see them, and its dirty
// chunks, which live in the write-back cache's byte budget until a flush
// (fsync, close, FlushCache) commits them or the budget forces them out.

// openFiles is the registry of inodes open in this process.
type openFiles struct {
	mu sync.Mutex
	m  map[int64]*openInode
}

// openInode is the shared state of an open inode. Lock order: mu before
// any database transaction; never two openInode locks at once.
type openInode struct {
	ino   int64
	refs  int           // Files open on it; guarded by openFiles.mu
	ready chan struct{} // closed once the fields below are loaded
	err   error         // why loading failed
	cs    int64

	// commitMu serializes commits and truncates of this inode, so that
	// the flushing set belongs to one commit at a time.
	commitMu sync.Mutex

	mu         sync.RWMutex
	size       int64 // the size writers see, dirty data included
	stored     int64 // no stored chunk row holds data at or past this offset
	dirty      map[int64]*dirtyChunk
	flushing   map[int64]*dirtyChunk // being committed, read-only until the commit ends
	mtime      int64                 // pending times, valid when timesDirty
	ctime      int64
	timesDirty bool
	timesSeq   uint64 // counts touches, so a commit knows whether newer times arrived
	gen        int64  // the data generation as of the last load or commit here
	meta       pendingMeta

	writers atomic.Int32 // Files open for writing; guards deferring SetAttr

	// base is the inode as a transaction of this process stored it, valid
	// while Vault.txSeq is still baseSeq (no write here since; other
	// processes' changes show at the next GetInode). It lets a file just
	// created answer tar's chmod, chown and utimensat without a query.
	base    Inode
	baseSeq uint64 // 0: no base
}

// pendingMeta holds attribute changes (chmod, chown, utimensat) to a
// file open for writing here, committed with its data: tar sets them on
// every file before closing it, and one transaction is cheaper than
// four. This process sees them at once (merge); others at the commit.
type pendingMeta struct {
	set          bool
	seq          uint64 // counts changes, so a commit knows if newer ones came
	mode         *uint32
	uid, gid     *uint32
	atime, mtime *int64
	dropPriv     bool // clear setuid/setgid from the stored mode
	ctime        int64
}

// setMeta records attribute changes for the next commit.
func (oi *openInode) setMeta(a SetAttr) {
	oi.mu.Lock()
	defer oi.mu.Unlock()
	m := &oi.meta
	if a.Mode != nil {
		m.mode, m.dropPriv = a.Mode, false
	} else if a.DropPrivileges {
		if m.mode != nil {
			mode := withoutPrivileges(*m.mode)
			m.mode = &mode
		} else {
			m.dropPriv = true
		}
	}
	if a.UID != nil {
		m.uid = a.UID
	}
	if a.GID != nil {
		m.gid = a.GID
	}
	if a.Atime != nil {
		m.atime = a.Atime
	}
	if a.Mtime != nil {
		m.mtime = a.Mtime
		oi.timesDirty = false // an explicit mtime overrides the writes' time
	}
	m.ctime = time.Now().UnixNano()
	m.set = true
	m.seq++
}

// withoutPrivileges returns mode without setuid, and without setgid if
// the group may execute (otherwise setgid means mandatory locking).
func withoutPrivileges(mode uint32) uint32 {
	mode &^= 04000
	if mode&010 != 0 {
		mode &^= 02000
	}
	return mode
}

// dirtyChunk is a chunk's full current contents: buf[:n] are its bytes,
// and the chunk reads as zeros from n to the chunk size.
type dirtyChunk struct {
	buf []byte
	n   int
}

func (f *openFiles) isOpen(ino int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[ino] != nil
}

// lookup returns the open state of ino, or nil. An inode still being
// opened has no state yet (nothing written, nothing to merge), so it is
// left out, as by all.
func (f *openFiles) lookup(ino int64) *openInode {
	f.mu.Lock()
	oi := f.m[ino]
	f.mu.Unlock()
	if oi == nil || !oi.loaded() {
		return nil
	}
	return oi
}

// loaded reports whether acquire has finished loading oi successfully.
func (oi *openInode) loaded() bool {
	select {
	case <-oi.ready:
		return oi.err == nil
	default:
		return false
	}
}

// all returns every open inode.
func (f *openFiles) all() []*openInode {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*openInode, 0, len(f.m))
	for _, oi := range f.m {
		if oi.loaded() {
			out = append(out, oi)
		}
	}
	return out
}

// acquire opens inode ino (a regular file) for this process, for
// writing if write is set. The first open for writing records the inode
// in the database under this process's session, in the same transaction
// that checks the inode still exists, so that no process frees its data
// while it is open here: an unlink racing with the open either sees the
// record or makes the open fail. An open for reading only reads: it must
// never wait for the write lock, and the rule in session.go keeps its
// data alive instead.
func (v *Vault) acquire(ino int64, write bool) (*openInode, error) {
	v.files.mu.Lock()
	if oi := v.files.m[ino]; oi != nil {
		oi.refs++
		v.files.mu.Unlock()
		<-oi.ready
		if oi.err != nil {
			return oi, oi.err
		}
		if write && !v.readOnly && !v.isRegistered(ino) {
			// Open for reading only so far: record it now.
			if err := v.record([]int64{ino}); err != nil {
				v.releaseInode(oi)
				return nil, err
			}
		}
		return oi, nil
	}
	// Publish the inode as open before checking that it exists: a
	// concurrent unlink or close in this process then sees it and keeps
	// the inode, or frees it first and the check below fails.
	oi := &openInode{ino: ino, refs: 1, ready: make(chan struct{})}
	if v.files.m == nil {
		v.files.m = make(map[int64]*openInode)
	}
	v.files.m[ino] = oi
	v.files.mu.Unlock()
	in, err := v.registerOpen(ino, write)
	if err != nil {
		v.files.mu.Lock()
		delete(v.files.m, ino)
		v.files.mu.Unlock()
		oi.err = err
	} else {
		oi.load(v, in)
	}
	close(oi.ready)
	return oi, err
}

// load sets the state of a newly opened inode from its stored metadata.
func (oi *openInode) load(v *Vault, in Inode) {
	oi.cs, oi.size, oi.stored, oi.gen = int64(in.ChunkSize), in.Size, in.Size, in.Generation
	if oi.cs == 0 {
		oi.cs = int64(v.opts.ChunkSize)
	}
}

// adopt registers a file this process has just created (and recorded as
// open in the same transaction, number seq): nobody else can know it yet.
func (v *Vault) adopt(in Inode, seq uint64) *openInode {
	oi := &openInode{ino: in.ID, refs: 1, ready: make(chan struct{})}
	oi.load(v, in)
	oi.base, oi.baseSeq = in, seq
	close(oi.ready)
	v.files.mu.Lock()
	defer v.files.mu.Unlock()
	if v.files.m == nil {
		v.files.m = make(map[int64]*openInode)
	}
	v.files.m[in.ID] = oi
	return oi
}

// releaseInode drops one reference. The last one commits the dirty data
// and, if the inode lost its last link while open, frees it. If the
// commit fails the dirty data stays registered, so FlushCache or Close
// retries it, and the error is returned.
func (v *Vault) releaseInode(oi *openInode) error {
	_, err := oi.commit(v, false)
	v.files.mu.Lock()
	oi.refs--
	last := oi.refs == 0 && !oi.hasDirty()
	if last {
		delete(v.files.m, oi.ino)
	}
	v.files.mu.Unlock()
	if err != nil || !last {
		return err
	}
	return v.closedInode(oi.ino)
}

func (oi *openInode) hasDirty() bool {
	oi.mu.RLock()
	defer oi.mu.RUnlock()
	return len(oi.dirty) > 0 || len(oi.flushing) > 0 || oi.timesDirty || oi.meta.set
}

// flushAll commits the dirty data of every open inode.
func (f *openFiles) flushAll(v *Vault) error {
	var first error
	for _, oi := range f.all() {
		if _, err := oi.commit(v, false); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// readAt reads into p from off, merging dirty chunks with stored ones.
func (oi *openInode) readAt(v *Vault, p []byte, off int64) (int, error) {
	oi.mu.RLock()
	defer oi.mu.RUnlock()
	if off >= oi.size {
		return 0, io.EOF
	}
	want := len(p)
	end := min(off+int64(want), oi.size)
	p = p[:end-off]
	var fetch []int64 // chunks to read from the database
	for idx := off / oi.cs; idx*oi.cs < end; idx++ {
		start := idx * oi.cs
		dst := p[max(start, off)-off : min(start+oi.cs, end)-off]
		within := int(max(off-start, 0)) // offset of dst inside the chunk
		switch dc := oi.pending(idx); {
		case dc != nil:
			copyChunk(dst, dc.buf[:dc.n], within)
		case start >= oi.stored:
			clear(dst)
		default:
			fetch = append(fetch, idx)
		}
	}
	if len(fetch) > 0 {
		if err := v.fetchChunks(oi.ino, oi.cs, fetch, p, off); err != nil {
			return 0, err
		}
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
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
// generation still matches. One read transaction sees one version.
func (v *Vault) fetchChunks(ino, cs int64, idxs []int64, p []byte, off int64) error {
	return v.view("read", "", func(q *sql.Tx) error {
		var gen int64
		if err := q.QueryRow(v.sql(`SELECT generation FROM {t}_inodes WHERE id = ?`), ino).Scan(&gen); err != nil {
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
			err := v.scanChunks(q, ino, next, last, func(idx int64, data []byte) error {
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
		return nil
	})
}

// writeAt writes p at off into dirty chunks. Chunks that the write only
// partly covers start from their stored contents.
func (oi *openInode) writeAt(v *Vault, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	if err := v.cache.reserve(v, oi, chunksSpanned(oi.cs, off, len(p))); err != nil {
		return err
	}
	oi.mu.Lock()
	defer oi.mu.Unlock()
	return oi.writeLocked(v, p, off)
}

// appendData writes p at the end of the file, choosing the offset under
// the same lock as the write, and returns the offset.
func (oi *openInode) appendData(v *Vault, p []byte) (int64, error) {
	oi.mu.RLock()
	estimate := oi.size
	oi.mu.RUnlock()
	if err := v.cache.reserve(v, oi, chunksSpanned(oi.cs, estimate, len(p))); err != nil {
		return 0, err
	}
	oi.mu.Lock()
	defer oi.mu.Unlock()
	off := oi.size
	return off, oi.writeLocked(v, p, off)
}

// chunksSpanned counts the chunks that n bytes at off touch.
func chunksSpanned(cs, off int64, n int) int64 {
	if n == 0 {
		return 0
	}
	return (off+int64(n)-1)/cs - off/cs + 1
}

// writeLocked is writeAt with oi.mu held.
func (oi *openInode) writeLocked(v *Vault, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	end := off + int64(len(p))
	for idx := off / oi.cs; idx*oi.cs < end; idx++ {
		start := idx * oi.cs
		lo, hi := max(start, off), min(start+oi.cs, end)
		dc, err := oi.dirtyChunk(v, idx, lo, hi)
		if err != nil {
			return err
		}
		rel := int(lo - start)
		if rel > dc.n {
			clear(dc.buf[dc.n:rel])
		}
		copy(dc.buf[rel:], p[lo-off:hi-off])
		dc.n = max(dc.n, int(hi-start))
	}
	oi.size = max(oi.size, end)
	oi.touch()
	return nil
}

// touch records a data change now; the times are committed with the data.
func (oi *openInode) touch() {
	now := time.Now().UnixNano()
	oi.mtime, oi.ctime, oi.timesDirty = now, now, true
	oi.timesSeq++
	oi.meta.mtime = nil // a write after utimensat sets mtime again
}

// pending returns chunk idx's uncommitted contents, if any: a dirty copy,
// or else one being committed.
func (oi *openInode) pending(idx int64) *dirtyChunk {
	if dc := oi.dirty[idx]; dc != nil {
		return dc
	}
	return oi.flushing[idx]
}

// dirtyChunk returns chunk idx's dirty copy, creating it for a write of
// [lo, hi). The stored contents are read only when the write leaves some
// stored bytes of the chunk in place.
func (oi *openInode) dirtyChunk(v *Vault, idx, lo, hi int64) (*dirtyChunk, error) {
	if dc := oi.dirty[idx]; dc != nil {
		return dc, nil
	}
	start := idx * oi.cs
	dc := &dirtyChunk{buf: v.cache.chunkBuf(int(oi.cs))}
	storedEnd := min(start+oi.cs, oi.stored)
	if fc := oi.flushing[idx]; fc != nil {
		// Being committed: write to a copy, which the next commit stores.
		dc.n = copy(dc.buf, fc.buf[:fc.n])
	} else if start < storedEnd && (lo > start || hi < storedEnd) {
		err := v.view("write", "", func(q *sql.Tx) error {
			return v.scanChunks(q, oi.ino, idx, idx, func(_ int64, data []byte) error {
				dc.n = copy(dc.buf, data)
				return nil
			})
		})
		if err != nil {
			v.cache.putChunkBuf(dc.buf)
			return nil, err
		}
	}
	if oi.dirty == nil {
		oi.dirty = make(map[int64]*dirtyChunk)
	}
	oi.dirty[idx] = dc
	v.cache.addDirty(oi.cs)
	return dc, nil
}

// commit writes dirty chunks and the size and times in one transaction
// and returns how many chunks it wrote. With fullOnly it writes only
// chunks that are completely filled (the budget's early write-out, which
// leaves partial chunks to grow). The chunks move to the flushing set
// for the transaction, so writes and reads of the file go on meanwhile:
// a write to a chunk being committed goes to a fresh copy.
func (oi *openInode) commit(v *Vault, fullOnly bool) (int, error) {
	oi.commitMu.Lock()
	defer oi.commitMu.Unlock()
	oi.mu.Lock()
	batch := make(map[int64]*dirtyChunk)
	for idx, dc := range oi.dirty {
		if !fullOnly || int64(dc.n) == oi.cs {
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
	size, mtime, ctime, withTimes, seq := oi.size, oi.mtime, oi.ctime, oi.timesDirty && !fullOnly, oi.timesSeq
	meta := oi.meta
	withMeta := meta.set && !fullOnly
	oi.mu.Unlock()

	idxs := slices.Sorted(maps.Keys(batch))
	var dataEnd, gen int64
	err := v.update("write", "", func(t *tx) error {
		dataEnd = 0
		for _, idx := range idxs {
			dc := batch[idx]
			if err := t.putChunk(oi.ino, idx, dc.buf[:dc.n]); err != nil {
				return err
			}
			dataEnd = max(dataEnd, idx*oi.cs+int64(dc.n))
		}
		var row *sql.Row
		switch {
		case fullOnly:
			// Only part of the file is committed: grow the stored size to
			// cover what was written, no further.
			row = t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = max(size, ?), generation = generation + 1 WHERE id = ? RETURNING generation`),
				min(size, dataEnd), oi.ino)
		case withTimes:
			row = t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = ?, mtime = ?, ctime = ?, generation = generation + 1 WHERE id = ? RETURNING generation`),
				size, mtime, ctime, oi.ino)
		default:
			row = t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = ?, generation = generation + 1 WHERE id = ? RETURNING generation`), size, oi.ino)
		}
		if err := row.Scan(&gen); err != nil || !withMeta {
			return err
		}
		// 2048 is S_ISUID, 1024 S_ISGID, 8 S_IXGRP.
		_, err := t.Exec(v.sql(`UPDATE {t}_inodes SET
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
		if err != nil && oi.dirty[idx] == nil {
			oi.dirty[idx] = dc // not committed: pending again
			continue
		}
		v.cache.putChunkBuf(dc.buf)
		v.cache.addDirty(-oi.cs)
	}
	if err != nil {
		return 0, err
	}
	oi.stored = max(oi.stored, dataEnd)
	oi.gen = gen
	if withTimes && oi.timesSeq == seq {
		oi.timesDirty = false
	}
	if withMeta && oi.meta.seq == meta.seq {
		oi.meta = pendingMeta{seq: meta.seq}
	}
	v.reads.dropInode(oi.ino)
	return len(batch), nil
}

// truncate sets the size, committing at once: dirty chunks past the new
// end are dropped, the one it falls inside is cut, and stored rows past
// it are deleted, so that growing the file again exposes zeros.
func (oi *openInode) truncate(v *Vault, size int64) error {
	oi.commitMu.Lock()
	defer oi.commitMu.Unlock()
	oi.mu.Lock()
	defer oi.mu.Unlock()
	for idx, dc := range oi.dirty {
		start := idx * oi.cs
		switch {
		case start >= size:
			v.cache.putChunkBuf(dc.buf)
			delete(oi.dirty, idx)
			v.cache.addDirty(-oi.cs)
		case size-start < int64(dc.n):
			clear(dc.buf[size-start : dc.n])
			dc.n = int(size - start)
		}
	}
	var gen int64
	err := v.update("truncate", "", func(t *tx) error {
		if err := t.truncateChunks(oi.ino, int(oi.cs), size); err != nil {
			return err
		}
		return t.QueryRow(v.sql(`UPDATE {t}_inodes SET size = ?1, mtime = ?2, ctime = ?2, generation = generation + 1 WHERE id = ?3 RETURNING generation`),
			size, t.now, oi.ino).Scan(&gen)
	})
	if err != nil {
		return err
	}
	oi.size = size
	oi.stored = min(oi.stored, size)
	oi.gen = gen
	oi.timesDirty = false
	v.reads.dropInode(oi.ino)
	return nil
}

// merge overlays the in-process view (size and times not yet committed)
// on an inode read from the database.
func (oi *openInode) merge(in *Inode) {
	oi.mu.RLock()
	defer oi.mu.RUnlock()
	oi.mergeLocked(in)
}

// snapshot returns the inode with this process's pending changes, without
// a query, if no write transaction has run here since base was stored.
func (oi *openInode) snapshot(v *Vault) (Inode, bool) {
	oi.mu.RLock()
	defer oi.mu.RUnlock()
	if oi.baseSeq == 0 || v.txSeq.Load() != oi.baseSeq {
		return Inode{}, false
	}
	in := oi.base
	oi.mergeLocked(&in)
	return in, true
}

// mergeLocked is merge with oi.mu held.
func (oi *openInode) mergeLocked(in *Inode) {
	in.Size = oi.size
	if oi.timesDirty {
		in.Mtime, in.Ctime = oi.mtime, oi.ctime
	}
	if m := &oi.meta; m.set {
		switch {
		case m.mode != nil:
			in.Mode = *m.mode
		case m.dropPriv:
			in.Mode = withoutPrivileges(in.Mode)
		}
		if m.uid != nil {
			in.UID = *m.uid
		}
		if m.gid != nil {
			in.GID = *m.gid
		}
		if m.atime != nil {
			in.Atime = *m.atime
		}
		if m.mtime != nil {
			in.Mtime = *m.mtime
		}
		in.Ctime = max(in.Ctime, m.ctime)
	}
}

// seekData implements SEEK_DATA (hole false) and SEEK_HOLE (hole true)
// at chunk granularity: a chunk with a stored row or dirty data is data,
// any other chunk is a hole, and so is the end of the file.
func (oi *openInode) seekData(v *Vault, off int64, hole bool) (int64, error) {
	oi.mu.RLock()
	defer oi.mu.RUnlock()
	if off > oi.size || (off == oi.size && !hole) {
		return 0, ErrNotFound
	}
	if off == oi.size {
		return off, nil
	}
	first := off / oi.cs
	var idxs []int64
	for idx := range oi.dirty {
		if idx >= first {
			idxs = append(idxs, idx)
		}
	}
	for idx := range oi.flushing {
		if idx >= first {
			idxs = append(idxs, idx)
		}
	}
	err := v.view("seek", "", func(q *sql.Tx) error {
		rows, err := q.Query(v.sql(`SELECT idx FROM {t}_chunks WHERE inode = ? AND idx >= ? ORDER BY idx`), oi.ino, first)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var idx int64
			if err := rows.Scan(&idx); err != nil {
				return err
			}
			idxs = append(idxs, idx)
		}
		return rows.Err()
	})
	if err != nil {
		return 0, err
	}
	slices.Sort(idxs)
	idxs = slices.Compact(idxs)
	if !hole {
		if len(idxs) == 0 || idxs[0]*oi.cs >= oi.size {
			return 0, ErrNotFound
		}
		return max(off, idxs[0]*oi.cs), nil
	}
	next := first // the first chunk without data
	for _, idx := range idxs {
		if idx != next {
			break
		}
		next++
	}
	return min(max(off, next*oi.cs), oi.size), nil
}
