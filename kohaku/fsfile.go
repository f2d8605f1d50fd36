package kohaku

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kohakuvault/kvaultfs/store"
)

// Open files. A file opened only for reading reads the table directly,
// through blob I/O of the range asked for. A file opened for writing gets
// one spill file per inode, shared by every handle: an unlinked temporary
// file beside the database holding the whole value (the old value copied
// in unless truncated), which writes, truncate and reads go to. Flush
// (every close(2)), Sync and the last Close commit it whole with one
// PutReader transaction when it changed: a value is rewritten whole at
// each commit, and between processes the last commit wins.

// openState is the data of a file open for writing. It belongs to a key
// (tableFS.byKey), not to an inode: a key may have two inodes at once (its
// path and its /.kvault/keys entry), and both share one state, so renames
// and unlinks find every open file of the keys they change, whatever
// inode opened it.
type openState struct {
	ino     int64         // the inode that made it (names in messages)
	ready   chan struct{} // closed once the spill is loaded or failed to
	loadErr error
	spill   *os.File
	// token serializes this file's commits with renames and unlinks of
	// it, so a commit never writes under a key the file has left. Only
	// they take it; no mutex is held while waiting for it.
	token chan struct{}
	// spillMu keeps the spill stable while a commit reads it: changes of
	// the spill (writes, appends, truncates, allocations) take the write
	// side around the change and its record (changed), a commit takes
	// the read side after its token and holds it across its transaction.
	// It is the one lock held while waiting for SQL, and it only orders
	// this file's commits with its own changes. Order: token, then
	// spillMu, then tableFS.mu; nothing waits for it while holding
	// tableFS.mu, a token or a connection, and what holds its write side
	// waits for nothing but tableFS.mu and the spill's own I/O.
	spillMu sync.RWMutex

	// Guarded by tableFS.mu.
	key     string             // where commits write; renames move it
	inos    map[int64]struct{} // the inodes sharing it (tableFS.open)
	loaded  bool
	refs    int   // handles open for writing, and operations in progress
	size    int64 // the value's length in the spill
	dirty   bool  // changed since the last commit
	seq     int64 // counts changes, so a commit knows whether it saw them all
	deleted bool  // the key was removed here: never commit again
}

// wait waits for the spill to be loaded.
func (st *openState) wait() error {
	<-st.ready
	return st.loadErr
}

// openWritable returns the open state of file e, making and loading it
// if it is the first handle for writing: the old value is streamed into
// the spill unless load is false (a new or truncated file).
func (f *tableFS) openWritable(e *entry, load bool) (*openState, error) {
	st, _, err := f.openData(e, load, -1)
	return st, err
}

// openData is openWritable loading at most limit bytes of the old value
// (all with limit < 0) when it makes the state; made says it did.
func (f *tableFS) openData(e *entry, load bool, limit int64) (*openState, bool, error) {
	f.mu.Lock()
	st := f.open[e.ino]
	key, ok := f.keyLocked(e)
	if st == nil && ok {
		// The key's state if another inode of it has it open.
		st = f.byKey[key]
	}
	if st != nil {
		st.refs++
		st.inos[e.ino] = struct{}{}
		f.open[e.ino] = st
		f.mu.Unlock()
		if err := st.wait(); err != nil {
			return nil, false, err
		}
		return st, false, nil
	}
	if !ok {
		name := e.name
		f.mu.Unlock()
		return nil, false, noEntry("open", name)
	}
	st = &openState{ino: e.ino, key: key, inos: map[int64]struct{}{e.ino: {}}, ready: make(chan struct{}), token: make(chan struct{}, 1), refs: 1}
	f.open[e.ino] = st
	f.byKey[key] = st
	f.mu.Unlock()

	spill, err := f.newSpill()
	var n int64
	for try := 0; err == nil && load; try++ {
		if n, err = f.t.getTo(key, spill, limit); err == nil || !notFound(err) || try == 3 {
			break
		}
		// A rename moved the key after it was read: load from its new key.
		f.mu.Lock()
		now, deleted := st.key, st.deleted
		f.mu.Unlock()
		if deleted || now == key {
			break
		}
		key = now
		if err = spill.Truncate(0); err == nil {
			_, err = spill.Seek(0, io.SeekStart)
		}
	}
	f.mu.Lock()
	if err != nil {
		st.loadErr = store.Wrap("open", key, err)
		f.forgetLocked(st)
		close(st.ready)
		f.mu.Unlock()
		if spill != nil {
			spill.Close()
		}
		return nil, false, st.loadErr
	}
	st.spill, st.size, st.loaded = spill, n, true
	close(st.ready)
	f.mu.Unlock()
	return st, true, nil
}

// release ends one use of an open state; the last one drops it and its
// spill.
func (f *tableFS) release(st *openState) {
	f.mu.Lock()
	st.refs--
	var spill *os.File
	if st.refs <= 0 {
		spill = f.dropLocked(st)
	}
	f.mu.Unlock()
	if spill != nil {
		spill.Close() // outside the lock: freeing a big file takes time
	}
}

// dropLocked forgets an open state and returns its spill to close.
func (f *tableFS) dropLocked(st *openState) *os.File {
	f.forgetLocked(st)
	spill := st.spill
	st.spill = nil
	return spill
}

// forgetLocked takes an open state out of the maps (by inode and by key).
func (f *tableFS) forgetLocked(st *openState) {
	for ino := range st.inos {
		if f.open[ino] == st {
			delete(f.open, ino)
		}
	}
	if f.byKey[st.key] == st {
		delete(f.byKey, st.key)
	}
}

// unkeyLocked marks an open state whose key was removed or replaced
// (here, or by a create after another process removed it): it is never
// committed again, and a new open of the key gets a state of its own.
func (f *tableFS) unkeyLocked(st *openState) {
	st.deleted = true
	if f.byKey[st.key] == st {
		delete(f.byKey, st.key)
	}
}

// rekeyLocked moves an open state to the key a rename gave its file; an
// entry of it under /.kvault/keys takes the new key's name there.
func (f *tableFS) rekeyLocked(st *openState, key string) {
	if f.byKey[st.key] == st {
		delete(f.byKey, st.key)
	}
	if o := f.byKey[key]; o != nil && o != st {
		o.deleted = true // replaced by the rename
	}
	f.byKey[key] = st
	st.key = key
	for ino := range st.inos {
		e := f.byIno[ino]
		if e == nil || !e.binary || e.parent == 0 {
			continue
		}
		if k := (childKey{keysIno, e.name}); f.kids[k] == e {
			delete(f.kids, k)
		}
		e.key, e.name = key, store.BinaryName(key)
		if k := (childKey{keysIno, e.name}); f.kids[k] == nil {
			f.kids[k] = e
		} else {
			f.detachLocked(e) // the new name is taken: the other entry serves it
		}
	}
}

// attachedLocked reports whether an entry of an open state is still in
// the tree (one removed or replaced by another process's change is not).
func (f *tableFS) attachedLocked(st *openState) bool {
	for ino := range st.inos {
		if e := f.byIno[ino]; e != nil {
			if _, ok := f.keyLocked(e); ok {
				return true
			}
		}
	}
	return false
}

// commit writes the spill as the file's value, in one transaction, if it
// changed since the last commit and the file still has its key: the key
// of its open state, which renames move and unlinks remove.
func (f *tableFS) commit(st *openState) error {
	if err := st.wait(); err != nil {
		return err
	}
	var key string
	var size, seq int64
	var spill *os.File
	for {
		st.token <- struct{}{}
		st.spillMu.RLock()
		f.mu.Lock()
		if st.deleted || !st.dirty || st.spill == nil || !f.attachedLocked(st) {
			f.mu.Unlock()
			st.spillMu.RUnlock()
			<-st.token
			return nil
		}
		key = st.key
		op := f.keyOpLocked(key)
		if op == nil {
			size, seq, spill = st.size, st.seq, st.spill
			f.mu.Unlock()
			break
		}
		// A rename or unlink of this key is under way: let it finish
		// (it may need this token), then commit where the file is then.
		f.mu.Unlock()
		st.spillMu.RUnlock()
		<-st.token
		<-op.done
	}
	// The spill stays as it is (spillMu) until the value is stored.
	defer func() {
		st.spillMu.RUnlock()
		<-st.token
	}()
	if err := f.t.PutReader(key, &fileSection{f: spill, size: size}, size); err != nil {
		return err
	}
	f.mu.Lock()
	if st.seq == seq {
		st.dirty = false
	}
	gen := f.counter.Add(1)
	for ino := range st.inos {
		if e := f.byIno[ino]; e != nil {
			e.gen = gen
		}
	}
	f.mu.Unlock()
	return nil
}

// changed records a change of the spill: its new size (if grown, or set
// when exact), the file dirty, mtime now.
func (f *tableFS) changed(st *openState, e *entry, end int64, exact bool) {
	now := time.Now().UnixNano()
	f.mu.Lock()
	if exact || end > st.size {
		st.size = end
	}
	st.dirty = true
	st.seq++
	e.mtime, e.ctime = now, now
	f.mu.Unlock()
}

// checkEnd refuses data past what a row under key can hold (CheckSize).
func checkEnd(key string, off, n int64) error {
	if off < 0 || n < 0 {
		return &store.Error{Op: "write", Key: key, Err: fmt.Errorf("%w: negative offset or length", store.ErrInvalidArgument)}
	}
	if off > MaxValueSize || n > MaxValueSize-off {
		return &store.Error{Op: "write", Key: key, Err: tooLarge(off + min(n, MaxValueSize))}
	}
	if err := checkSize(key, off+n); err != nil {
		return &store.Error{Op: "write", Key: key, Err: err}
	}
	return nil
}

// fsFile is one open handle.
type fsFile struct {
	f        *tableFS
	e        *entry
	st       *openState // nil when open only for reading
	appendTo bool
	closed   atomic.Bool
}

var _ store.File = (*fsFile)(nil)

// OpenInode opens file ino with os.OpenFile's flags.
func (f *tableFS) OpenInode(ino int64, flag int) (store.File, error) {
	f.mu.Lock()
	e := f.byIno[ino]
	f.mu.Unlock()
	if e == nil {
		return nil, noEntry("open", fmt.Sprint("inode ", ino))
	}
	if e.dir {
		return nil, &store.Error{Op: "open", Key: f.nameOf(e), Err: store.ErrIsDir}
	}
	// The mount keeps the kernel's cached pages if the generation is the
	// one they hold: learn of other processes' commits first.
	if err := f.refresh(); err != nil {
		return nil, err
	}
	if flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		if _, err := f.fileInode("open", e); err != nil {
			return nil, err
		}
		return &fsFile{f: f, e: e}, nil
	}
	if err := f.checkWrite("open", f.nameOf(e)); err != nil {
		return nil, err
	}
	st, err := f.openWritable(e, true)
	if err != nil {
		return nil, err
	}
	h := &fsFile{f: f, e: e, st: st, appendTo: flag&os.O_APPEND != 0}
	if flag&os.O_TRUNC != 0 {
		if err := h.Truncate(0); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// CreateFile makes an empty value under the new file's key at once (a
// zero-length BLOB, so other processes see the file) and opens it.
func (f *tableFS) CreateFile(parent int64, name string, mode, uid, gid uint32, flag int) (store.File, store.Inode, error) {
	if err := store.ValidName(name); err != nil {
		return nil, store.Inode{}, store.Wrap("create", name, err)
	}
	if err := f.treeParent("create", parent, name); err != nil {
		return nil, store.Inode{}, err
	}
	if err := f.checkWrite("create", name); err != nil {
		return nil, store.Inode{}, err
	}
	_, dir, err := f.dirPath("create", parent)
	if err != nil {
		return nil, store.Inode{}, err
	}
	p := join(dir, name)
	f.mu.Lock()
	old := f.kids[childKey{parent, name}]
	f.mu.Unlock()
	if old != nil && old.dir {
		if ok, err := f.dirExists(p, old); err != nil {
			return nil, store.Inode{}, err
		} else if ok {
			return nil, store.Inode{}, &store.Error{Op: "create", Key: p, Err: store.ErrExists}
		}
	} else if has, err := f.hasPathKeysUnder(p); err != nil {
		return nil, store.Inode{}, err
	} else if has {
		return nil, store.Inode{}, &store.Error{Op: "create", Key: p, Err: store.ErrExists}
	}
	if err := f.insertEmpty(p); err != nil {
		return nil, store.Inode{}, err
	}
	now := time.Now().UnixNano()
	f.mu.Lock()
	if old != nil && (old.dir || f.open[old.ino] != nil) {
		f.detachLocked(old) // a new file, not the one still open here
	}
	if st := f.byKey[p]; st != nil {
		f.unkeyLocked(st) // another process removed its key: that file is gone
	}
	e := f.bindLocked(parent, name, false, "")
	e.setMode, e.mode = true, mode&0o7777
	e.setUID, e.uid, e.setGID, e.gid = true, uid, true, gid
	e.mtime, e.ctime, e.atime = now, now, 0
	e.gen = f.counter.Add(1)
	in := f.inodeLocked(e, 0)
	f.mu.Unlock()
	if flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		return &fsFile{f: f, e: e}, in, nil
	}
	st, err := f.openWritable(e, false)
	if err != nil {
		return nil, in, err
	}
	return &fsFile{f: f, e: e, st: st, appendTo: flag&os.O_APPEND != 0}, in, nil
}

// ReadAt reads the spill of a file open for writing here, else the
// stored value's range through blob I/O.
func (h *fsFile) ReadAt(p []byte, off int64) (int, error) {
	if h.closed.Load() {
		return 0, &store.Error{Op: "read", Key: h.name(), Err: store.ErrClosed}
	}
	if off < 0 {
		return 0, &store.Error{Op: "read", Key: h.name(), Err: fmt.Errorf("%w: negative offset %d", store.ErrInvalidArgument, off)}
	}
	f := h.f
	f.mu.Lock()
	st := f.open[h.e.ino]
	var size int64
	if st != nil && st.loaded && st.spill != nil {
		st.refs++
		size = st.size
	} else {
		st = nil
	}
	key, ok := f.keyLocked(h.e)
	f.mu.Unlock()
	if st == nil {
		if !ok {
			return 0, noEntry("read", h.name())
		}
		return f.t.ReadAt(key, p, off)
	}
	defer f.release(st)
	if off >= size {
		return 0, io.EOF
	}
	q := p
	if int64(len(q)) > size-off {
		q = q[:size-off]
	}
	n, err := st.spill.ReadAt(q, off)
	if err == io.EOF && n == len(q) {
		err = nil
	}
	if err == nil && n < len(p) {
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		err = store.Wrap("read", h.name(), err)
	}
	return n, err
}

// writable returns the handle's open state, or an error for a handle
// open only for reading or closed.
func (h *fsFile) writable(op string) (*openState, error) {
	if h.closed.Load() {
		return nil, &store.Error{Op: op, Key: h.name(), Err: store.ErrClosed}
	}
	if h.st == nil {
		return nil, &store.Error{Op: op, Key: h.name(), Err: fmt.Errorf("%w: file not open for writing", store.ErrPermission)}
	}
	return h.st, nil
}

// WriteAt writes into the spill.
func (h *fsFile) WriteAt(p []byte, off int64) (int, error) {
	st, err := h.writable("write")
	if err != nil {
		return 0, err
	}
	if err := checkEnd(h.name(), off, int64(len(p))); err != nil {
		return 0, err
	}
	st.spillMu.Lock()
	defer st.spillMu.Unlock()
	n, err := st.spill.WriteAt(p, off)
	if n > 0 {
		h.f.changed(st, h.e, off+int64(n), false)
	}
	if err != nil {
		return n, store.Wrap("write", h.name(), err)
	}
	return n, nil
}

// Append writes p at the end of the spill and commits at once.
func (h *fsFile) Append(p []byte) (int, int64, error) {
	st, err := h.writable("append")
	if err != nil {
		return 0, 0, err
	}
	f := h.f
	name := h.name()
	st.spillMu.Lock()
	f.mu.Lock()
	off := st.size
	if err := checkEnd(name, off, int64(len(p))); err != nil {
		f.mu.Unlock()
		st.spillMu.Unlock()
		return 0, off, err
	}
	st.size += int64(len(p)) // reserved: a concurrent append goes after
	f.mu.Unlock()
	n, err := st.spill.WriteAt(p, off)
	if err != nil {
		// Give back what was not written (a full disk): the size must
		// not cover bytes never written, which a commit would store
		// as zeros. spillMu is held: no other change moved the size.
		f.mu.Lock()
		st.size = off + int64(n)
		f.mu.Unlock()
	}
	if n > 0 || err == nil {
		f.changed(st, h.e, off+int64(n), false)
	}
	st.spillMu.Unlock()
	if err != nil {
		return n, off, store.Wrap("append", h.name(), err)
	}
	return n, off, f.commit(st)
}

// Truncate sets the spill's size.
func (h *fsFile) Truncate(size int64) error {
	st, err := h.writable("truncate")
	if err != nil {
		return err
	}
	return st.truncate(h.f, size)
}

// truncate sets the size of the data of an open file.
func (st *openState) truncate(f *tableFS, size int64) error {
	f.mu.Lock()
	e := f.byIno[st.ino]
	name := ""
	if e != nil {
		name = e.name
	}
	f.mu.Unlock()
	if err := checkEnd(name, size, 0); err != nil {
		return err
	}
	st.spillMu.Lock()
	defer st.spillMu.Unlock()
	if err := st.spill.Truncate(size); err != nil {
		return store.Wrap("truncate", name, err)
	}
	if e != nil {
		f.changed(st, e, size, true)
	}
	return nil
}

// Grow makes the size at least size, never cutting what another handle
// wrote meanwhile (fallocate extends, never shrinks).
func (h *fsFile) Grow(size int64) error {
	st, err := h.writable("allocate")
	if err != nil {
		return err
	}
	if err := checkEnd(h.name(), size, 0); err != nil {
		return err
	}
	st.spillMu.Lock()
	defer st.spillMu.Unlock()
	if size <= h.Size() {
		return nil
	}
	if err := unix.Fallocate(int(st.spill.Fd()), 0, 0, size); err != nil {
		if err := writeZeros(st.spill, size-1, size); err != nil {
			return store.Wrap("allocate", h.name(), err)
		}
	}
	h.f.changed(st, h.e, size, false)
	return nil
}

// ZeroRange makes [off, end) zeros within the current size.
func (h *fsFile) ZeroRange(off, end int64) error {
	st, err := h.writable("zero range")
	if err != nil {
		return err
	}
	if err := checkEnd(h.name(), off, max(0, end-off)); err != nil {
		return err
	}
	st.spillMu.Lock()
	defer st.spillMu.Unlock()
	end = min(end, h.Size())
	if off >= end {
		return nil
	}
	if err := unix.Fallocate(int(st.spill.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, end-off); err != nil {
		if err := writeZeros(st.spill, off, end); err != nil {
			return store.Wrap("zero range", h.name(), err)
		}
	}
	h.f.changed(st, h.e, end, false)
	return nil
}

// writeZeros writes zeros over [off, end) in pieces of at most 1 MiB.
func writeZeros(w io.WriterAt, off, end int64) error {
	buf := make([]byte, min(end-off, 1<<20))
	for off < end {
		n, err := w.WriteAt(buf[:min(int64(len(buf)), end-off)], off)
		if err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// SeekData: a value has no holes, so data is everywhere before the end.
func (h *fsFile) SeekData(off int64, hole bool) (int64, error) {
	size := h.Size()
	if off < 0 || off >= size {
		return 0, &store.Error{Op: "seek", Key: h.name(), Err: store.ErrNotFound}
	}
	if hole {
		return size, nil
	}
	return off, nil
}

// Size returns the size, with writes not yet committed.
func (h *fsFile) Size() int64 {
	f := h.f
	f.mu.Lock()
	st := f.open[h.e.ino]
	if st != nil && st.loaded {
		n := st.size
		f.mu.Unlock()
		return n
	}
	key, ok := f.keyLocked(h.e)
	f.mu.Unlock()
	if !ok {
		return 0
	}
	n, err := f.t.Size(key)
	if err != nil {
		return 0
	}
	return n
}

// Stat returns the inode, with writes not yet committed.
func (h *fsFile) Stat() (store.Inode, error) { return h.f.fileInode("stat", h.e) }

// Flush commits the data if it changed: close(2) reports its error.
func (h *fsFile) Flush() error {
	if h.closed.Load() {
		return &store.Error{Op: "flush", Key: h.name(), Err: store.ErrClosed}
	}
	if h.st == nil {
		return nil
	}
	return h.f.commit(h.st)
}

// Sync commits the data and makes it durable.
func (h *fsFile) Sync() error {
	if err := h.Flush(); err != nil {
		return err
	}
	return h.f.Sync()
}

// Close commits the data if it changed and releases the handle; the
// last handle drops the spill.
func (h *fsFile) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	if h.st == nil {
		return nil
	}
	err := h.f.commit(h.st)
	h.f.release(h.st)
	return err
}

// name returns the file's current name, for messages.
func (h *fsFile) name() string { return h.f.nameOf(h.e) }

// Generation returns the file's data generation.
func (h *fsFile) Generation() int64 {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	return h.f.genLocked(h.e)
}

// insertEmpty stores an empty value (a zero-length BLOB, format A's size
// 0) under key, or fails with ErrExists if the key is there: a create
// never replaces another process's value.
func (f *tableFS) insertEmpty(key string) error {
	q := `INSERT INTO ` + f.t.q + `(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING`
	args := []any{[]byte(key), []byte{}}
	if f.t.info.Format == FormatA {
		q = `INSERT INTO ` + f.t.q + `(key, value, size) VALUES (?1, ?2, 0) ON CONFLICT(key) DO NOTHING`
	}
	if err := f.t.check(true); err != nil {
		return store.Wrap("create", key, err)
	}
	res, err := f.t.exec(q, args...)
	if err != nil {
		return store.Wrap("create", key, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return store.Wrap("create", key, err)
	} else if n == 0 {
		return &store.Error{Op: "create", Key: key, Err: store.ErrExists}
	}
	return nil
}
