package vault

import (
	"sync"
	"sync/atomic"
	"time"
)

// Open inodes. Every File of one inode in this process shares one
// openInode: the bytes written here and not yet committed (dirty chunks,
// which live in the write-back cache's byte budget until a flush, fsync,
// close or FlushCache commits them or the budget forces them out), and
// the times and attributes that go with them. The database stays the
// truth for everything else, so several processes can write one file:
// see dirty.go for how their writes merge.

// openFiles is the registry of inodes open in this process.
type openFiles struct {
	mu sync.Mutex
	m  map[int64]*openInode
	// freeing counts, per inode, the transactions that found it not open
	// here and may free it; freed (on mu) is signalled when one ends. An
	// open of such an inode waits for the outcome, so it never reads a
	// row that a transaction is about to delete: checking "not open" and
	// claiming the inode are one step under mu, and so is publishing an
	// open.
	freeing map[int64]int
	freed   sync.Cond
}

// openInode is the shared state of an open inode.
//
// Locks. mu guards the in-memory state below and is only ever held for
// memory work: never while waiting for SQL, a database connection, I/O or
// any lock but the leaf locks of the write cache and the read cache. A
// reader copies what it needs under mu, fetches stored chunks without
// it, and overlays the dirty bytes under mu again; a writer needs no
// stored data at all (see dirty.go). commitMu orders the transactions
// that change the inode's stored data from this process (commits,
// appends, truncates, attribute writes): it is the one inode lock held
// across a transaction, and only the writer connection is waited for
// under it. No goroutine that holds a connection ever takes commitMu or
// mu (listings merge open state after closing their rows), so no cycle
// can form. Order: commitMu, then a connection, then the leaf locks; mu
// is never held with commitMu while waiting.
type openInode struct {
	ino   int64
	refs  int           // Files open on it; guarded by openFiles.mu
	ready chan struct{} // closed once the fields below are loaded
	err   error         // why loading failed
	cs    int64

	commitMu sync.Mutex

	mu sync.RWMutex
	// stored is the size as stored when this process last read or wrote
	// it; another process may have changed it since.
	stored sizeSeen
	// pendingEnd is the offset just past the last byte written here and
	// not yet committed (dirty or flushing), 0 if none. The size this
	// process sees is max(stored size, pendingEnd).
	pendingEnd int64
	dirty      map[int64]*dirtyChunk
	flushing   map[int64]*dirtyChunk // being committed, read-only until the commit ends
	outErr     error                 // why the background write-out could not commit this inode
	mtime      int64                 // pending times, valid when timesDirty
	ctime      int64
	timesDirty bool
	timesSeq   uint64 // counts touches, so a commit knows whether newer times arrived
	// gen is the data generation of the last commit here (or as loaded).
	// A read during which it changed may have missed bytes that moved
	// from pending to stored, and reads again.
	gen  int64
	meta pendingMeta

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

// claimFree reports whether ino is not open here and, if so, counts a
// transaction that may free it until endFree.
func (f *openFiles) claimFree(ino int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m[ino] != nil {
		return false
	}
	if f.freeing == nil {
		f.freeing = make(map[int64]int)
	}
	f.freeing[ino]++
	return true
}

// endFree ends a claimFree, once its transaction has committed or rolled
// back.
func (f *openFiles) endFree(ino int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.freeing[ino]--; f.freeing[ino] <= 0 {
		delete(f.freeing, ino)
	}
	if f.freed.L != nil {
		f.freed.Broadcast()
	}
}

// claimFree is openFiles.claimFree for the length of the transaction.
func (t *tx) claimFree(ino int64) bool {
	if !t.v.files.claimFree(ino) {
		return false
	}
	t.ends = append(t.ends, func() { t.v.files.endFree(ino) })
	return true
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
	// A transaction that claimed the inode before this open was
	// published may free it: wait for its outcome (the wait releases mu;
	// the transaction needs nothing this goroutine holds).
	for v.files.freeing[ino] > 0 {
		if v.files.freed.L == nil {
			v.files.freed.L = &v.files.mu
		}
		v.files.freed.Wait()
	}
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
	oi.cs, oi.gen = int64(in.ChunkSize), in.Generation
	oi.stored.note(in.Size, in.Generation)
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

// mergeLocked is merge with oi.mu held. in is as stored, fresh from the
// database: its size becomes this process's view of the stored size.
func (oi *openInode) mergeLocked(in *Inode) {
	oi.stored.note(in.Size, in.Generation)
	in.Size = max(in.Size, oi.pendingEnd)
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
// any other chunk is a hole, and so is the end of the file. Its cost
// does not grow with the file (see seek.go): the dirty chunks are noted
// under the lock, which is released before any query, as a lock must
// never be held while waiting for a connection.
func (oi *openInode) seekData(v *Vault, off int64, hole bool) (int64, error) {
	oi.mu.RLock()
	size, cs := oi.sizeLocked(), oi.cs
	if off > size || (off == size && !hole) {
		oi.mu.RUnlock()
		return 0, ErrNotFound
	}
	if off == size {
		oi.mu.RUnlock()
		return off, nil
	}
	first := off / cs
	pending := make(map[int64]bool)
	for idx := range oi.dirty {
		if idx >= first {
			pending[idx] = true
		}
	}
	for idx := range oi.flushing {
		if idx >= first {
			pending[idx] = true
		}
	}
	oi.mu.RUnlock()
	if hole {
		return v.seekHole(oi.ino, cs, size, off, pending)
	}
	return v.seekDataChunk(oi.ino, cs, size, off, pending)
}

// sizeLocked is the size this process sees: the stored size as last
// seen, or the end of the data written here if that is further.
// oi.mu must be held.
func (oi *openInode) sizeLocked() int64 { return max(oi.stored.Load(), oi.pendingEnd) }

// sizeSeen is an inode's stored size as this process last saw it, with
// the data generation it belongs to, so that a sighting from an older
// snapshot (a slow read) never replaces a newer one.
type sizeSeen struct {
	mu        sync.Mutex
	size, gen int64
}

// note records that the inode had size at generation gen.
func (s *sizeSeen) note(size, gen int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen >= s.gen {
		s.size, s.gen = size, gen
	}
}

// Load returns the newest size seen.
func (s *sizeSeen) Load() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}
