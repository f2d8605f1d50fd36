package kohaku

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kohakuvault/kvaultfs/store"
)

// The file-system view of a table (Table.FS): what the mount shows.
//
// Keys are files under the key-to-path mapping of native vaults
// (store.PathParts): "photos/2024/a.jpg" is the file a.jpg in the
// directories photos/2024, and a key that is no path (the empty key, "a//b",
// "../x", a NUL byte, a component over 255 bytes, a first component
// ".kvault") is the file store.BinaryName(key) in /.kvault/keys/. KohakuVault
// allows both "a" and "a/b" as keys; the file "a" wins and "a/b" is shown in
// /.kvault/keys/ too. Directories are not stored: one exists while a key
// lives under it, and one made by mkdir is kept in memory until it gets
// removed or the mount ends.
//
// Nothing the format cannot keep is stored elsewhere in the file: inode
// numbers, modes, owners and times set through the mount live in memory
// while the view exists (see the README's "KohakuVault files" section).

// Fixed inode numbers of the reserved directories.
const (
	reservedIno int64 = 2 // /.kvault
	keysIno     int64 = 3 // /.kvault/keys
	firstIno    int64 = 16
)

// Default permission bits: KohakuVault stores none.
const (
	fileMode uint32 = 0o644
	dirMode  uint32 = 0o755
)

// tableFS is a Table seen through store.FS.
type tableFS struct {
	t        *Table
	uid, gid uint32 // of the database file
	baseTime int64  // the database file's mtime when the view was made, ns
	spillDir string // where open files keep their data: the database's directory

	// counter hands out generations: epoch when data_version moved, an
	// entry's gen when this view committed its value. Both only grow, so
	// max(epoch, gen) changes at every change of a value.
	counter atomic.Int64

	mu      sync.Mutex
	epoch   int64
	lastDV  int64
	dvSeen  bool
	nextIno int64
	byIno   map[int64]*entry
	kids    map[childKey]*entry
	made    map[*entry]struct{}   // directories made by mkdir (in memory only)
	open    map[int64]*openState  // files open for writing, by inode
	byKey   map[string]*openState // the same states, by the key they commit to
	keyOps  map[*keyOp]struct{}   // renames and unlinks under way
	removed []*entry              // the last maxRemoved entries taken out of the tree
	closed  bool
}

// childKey names a directory entry: the parent's inode and the name.
type childKey struct {
	parent int64
	name   string
}

// entry is what the view remembers of one inode: its place in the tree
// (parent and name; the key of a file under /.kvault/keys) and the
// attributes set through the mount. Entries are made when the kernel
// looks a name up or lists it, and kept while the view exists; a removed
// one is kept for a while (maxRemoved), since a directory listing may
// resume after its name.
type entry struct {
	ino    int64
	parent int64 // 0 once removed
	name   string
	dir    bool
	key    string // the key of a file under /.kvault/keys
	binary bool   // under /.kvault/keys

	setMode, setUID, setGID bool
	mode, uid, gid          uint32
	atime, mtime, ctime     int64 // ns; 0: not set by this mount
	gen                     int64 // counter at this view's last commit of the value
}

// FS returns the table as a file system for the mount (fs.Mount): its
// keys as files, read-write, while other processes (KohakuVault itself)
// use the file. The view holds no connection of its own: it works
// through the table's, and ends with it. It is also an io.Closer, whose
// Close commits files still open (a mount releases every handle when it
// ends, so only a caller that stops without unmounting needs it).
func (t *Table) FS() store.FS {
	f := &tableFS{
		t:        t,
		spillDir: filepath.Dir(t.path),
		nextIno:  firstIno,
		byIno:    map[int64]*entry{},
		kids:     map[childKey]*entry{},
		made:     map[*entry]struct{}{},
		open:     map[int64]*openState{},
		byKey:    map[string]*openState{},
		keyOps:   map[*keyOp]struct{}{},
	}
	f.baseTime = time.Now().UnixNano()
	if fi, err := os.Stat(t.path); err == nil {
		f.baseTime = fi.ModTime().UnixNano()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			f.uid, f.gid = st.Uid, st.Gid
		}
	}
	f.epoch = f.counter.Add(1)
	root := &entry{ino: store.RootIno, dir: true}
	res := &entry{ino: reservedIno, parent: store.RootIno, name: store.ReservedDir, dir: true}
	keys := &entry{ino: keysIno, parent: reservedIno, name: store.KeysDir, dir: true}
	for _, e := range []*entry{root, res, keys} {
		f.byIno[e.ino] = e
		if e.parent != 0 {
			f.kids[childKey{e.parent, e.name}] = e
		}
	}
	return f
}

// Close commits what files still open hold and drops them. The table
// stays open.
func (f *tableFS) Close() error {
	f.mu.Lock()
	states := make([]*openState, 0, len(f.open))
	seen := map[*openState]bool{}
	for _, st := range f.open {
		if !seen[st] {
			seen[st] = true
			states = append(states, st)
		}
	}
	f.closed = true
	f.mu.Unlock()
	var errs []error
	for _, st := range states {
		if err := f.commit(st); err != nil {
			errs = append(errs, err)
		}
		// spillMu: no handle still open is writing the spill while it
		// goes (writes after this find no spill and fail).
		st.spillMu.Lock()
		f.mu.Lock()
		st.refs = 0
		spill := f.dropLocked(st)
		f.mu.Unlock()
		st.spillMu.Unlock()
		if spill != nil {
			spill.Close() // outside the lock, as release does
		}
	}
	return errors.Join(errs...)
}

// fixed reports whether ino is the root or a reserved directory.
func fixed(ino int64) bool { return ino == store.RootIno || ino == reservedIno || ino == keysIno }

// ReadOnly reports whether the table refuses writes.
func (f *tableFS) ReadOnly() bool { return f.t.ReadOnly() }

// checkWrite refuses a change to a read-only table.
func (f *tableFS) checkWrite(op, key string) error {
	if f.t.ReadOnly() {
		return &store.Error{Op: op, Key: key, Err: fmt.Errorf("%w: %s", store.ErrReadOnly, f.t.path)}
	}
	return nil
}

// DataVersion is the table's PRAGMA data_version.
func (f *tableFS) DataVersion() (int64, error) { return f.t.DataVersion() }

// refresh moves the epoch when data_version says another connection
// (KohakuVault, or this process's other connections) committed: every
// file's generation then changes, since which value changed is unknown.
func (f *tableFS) refresh() error {
	v, err := f.t.DataVersion()
	if err != nil {
		return err
	}
	f.mu.Lock()
	if f.dvSeen && v != f.lastDV {
		f.epoch = f.counter.Add(1)
	}
	f.lastDV, f.dvSeen = v, true
	f.mu.Unlock()
	return nil
}

// genLocked is the generation of a file entry.
func (f *tableFS) genLocked(e *entry) int64 { return max(f.epoch, e.gen) }

// Generations returns the generation of each file of ids that is still
// in the tree.
func (f *tableFS) Generations(ids []int64) (map[int64]int64, error) {
	if err := f.refresh(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[int64]int64, len(ids))
	for _, id := range ids {
		if e := f.byIno[id]; e != nil && !e.dir && (e.parent != 0 || f.open[id] != nil) {
			out[id] = f.genLocked(e)
		}
	}
	return out, nil
}

// StatFS reports the file's pages and the disk's free space; Inodes is
// the number of keys.
func (f *tableFS) StatFS() (store.FSStats, error) {
	var pageCount, freePages, pageSize int64
	for _, p := range []struct {
		q string
		v *int64
	}{{"PRAGMA page_count", &pageCount}, {"PRAGMA freelist_count", &freePages}, {"PRAGMA page_size", &pageSize}} {
		if err := f.t.r.QueryRow(p.q).Scan(p.v); err != nil {
			return store.FSStats{}, store.Wrap("statfs", "", err)
		}
	}
	n, err := f.t.Len()
	if err != nil {
		return store.FSStats{}, err
	}
	st := store.FSStats{Inodes: n, PageSize: int(pageSize), NameMax: store.MaxNameLen}
	if fi, err := os.Stat(f.t.path); err == nil {
		st.DBBytes = fi.Size()
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(f.spillDir, &sfs); err == nil {
		st.DiskFree = int64(sfs.Bavail) * sfs.Bsize
	}
	st.FreeBytes = freePages*pageSize + max(0, st.DBBytes-pageCount*pageSize) + st.DiskFree
	return st, nil
}

// Sync makes every committed change durable (Table.Sync: an fsync of
// the -wal file, whose commits synchronous=NORMAL leaves unsynced).
func (f *tableFS) Sync() error { return f.t.Sync() }

// What the format cannot keep.

// Mknod makes an empty regular file (as mknod(2) with S_IFREG does);
// FIFOs, sockets and devices cannot be kept in a table (EPERM).
func (f *tableFS) Mknod(parent int64, name string, kind store.Kind, mode, uid, gid, rdev uint32) (store.Inode, error) {
	if kind != store.KindFile {
		return store.Inode{}, &store.Error{Op: "mknod", Key: name, Err: fmt.Errorf("%w: a KohakuVault table holds only files (no %s)", store.ErrPermission, kind)}
	}
	file, in, err := f.CreateFile(parent, name, mode, uid, gid, os.O_RDONLY)
	if err != nil {
		return in, err
	}
	return in, file.Close()
}

// Symlink is refused (EPERM): a table has no symbolic links.
func (f *tableFS) Symlink(parent int64, name, target string, uid, gid uint32) (store.Inode, error) {
	return store.Inode{}, &store.Error{Op: "symlink", Key: name, Err: fmt.Errorf("%w: a KohakuVault table has no symbolic links", store.ErrPermission)}
}

// Link is refused (EPERM, as file systems without hard links answer): a
// value has one key.
func (f *tableFS) Link(ino, parent int64, name string) (store.Inode, error) {
	return store.Inode{}, &store.Error{Op: "link", Key: name, Err: fmt.Errorf("%w: a KohakuVault table has no hard links (a value has one key)", store.ErrPermission)}
}

// GetXattr finds no attribute: a table keeps none (ENODATA).
func (f *tableFS) GetXattr(ino int64, name string) ([]byte, error) {
	return nil, &store.Error{Op: "getxattr", Key: name, Err: store.ErrNotFound}
}

// ListXattr lists none.
func (f *tableFS) ListXattr(ino int64) ([]string, error) { return nil, nil }

// SetXattr is refused (EOPNOTSUPP), which cp -a and rsync -X skip.
func (f *tableFS) SetXattr(ino int64, name string, value []byte, flags store.XattrFlags) error {
	return &store.Error{Op: "setxattr", Key: name, Err: fmt.Errorf("%w: a KohakuVault table keeps no extended attributes", store.ErrNotSupported)}
}

// RemoveXattr is refused (EOPNOTSUPP).
func (f *tableFS) RemoveXattr(ino int64, name string) error {
	return &store.Error{Op: "removexattr", Key: name, Err: fmt.Errorf("%w: a KohakuVault table keeps no extended attributes", store.ErrNotSupported)}
}

var _ store.FS = (*tableFS)(nil)
