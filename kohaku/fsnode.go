package kohaku

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// Inodes of the view: entries in memory, bound to paths.

// nameOf returns an entry's current name (a rename may change it).
func (f *tableFS) nameOf(e *entry) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return e.name
}

// notFound reports whether err says a key or file is missing.
func notFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// noEntry is ENOENT for a name.
func noEntry(op, name string) error { return &store.Error{Op: op, Key: name, Err: store.ErrNotFound} }

// pathLocked returns the path of a tree entry ("" for the root) and
// whether the entry is still in the tree. Entries under /.kvault have
// paths starting ".kvault/".
func (f *tableFS) pathLocked(e *entry) (string, bool) {
	var parts []string
	for n := 0; e.ino != store.RootIno; n++ {
		if e.parent == 0 || n > 4096 {
			return "", false
		}
		parts = append(parts, e.name)
		p := f.byIno[e.parent]
		if p == nil {
			return "", false
		}
		e = p
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/"), true
}

// keyLocked returns the key of a file entry, and false if it was removed.
func (f *tableFS) keyLocked(e *entry) (string, bool) {
	if e.binary {
		return e.key, e.parent != 0
	}
	return f.pathLocked(e)
}

// dirPath returns the path of directory ino for a lookup or listing in
// it; ErrNotFound if it is unknown or removed, ErrNotDir for a file.
func (f *tableFS) dirPath(op string, ino int64) (*entry, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.byIno[ino]
	if e == nil {
		return nil, "", noEntry(op, fmt.Sprint("inode ", ino))
	}
	if !e.dir {
		return nil, "", &store.Error{Op: op, Key: e.name, Err: store.ErrNotDir}
	}
	p, ok := f.pathLocked(e)
	if !ok {
		return nil, "", noEntry(op, e.name)
	}
	return e, p, nil
}

// join appends a name to a directory path.
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// bind returns the entry named name in parent, making it (with a new
// inode number) if there is none or if the one there is of the other kind
// (another process replaced a file by a directory or back): inode numbers
// stay while the mount runs. key is the key of a file under
// /.kvault/keys.
func (f *tableFS) bind(parent int64, name string, dir bool, key string) *entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bindLocked(parent, name, dir, key)
}

func (f *tableFS) bindLocked(parent int64, name string, dir bool, key string) *entry {
	ck := childKey{parent, name}
	if e := f.kids[ck]; e != nil {
		if e.dir == dir && (parent != keysIno || e.key == key) {
			return e
		}
		f.detachLocked(e)
	}
	e := &entry{ino: f.nextIno, parent: parent, name: name, dir: dir, key: key, binary: parent == keysIno}
	f.nextIno++
	f.byIno[e.ino] = e
	f.kids[ck] = e
	return e
}

// detachLocked takes an entry out of the tree; it stays known by its
// inode number (an open file keeps working, a listing resumes after it).
func (f *tableFS) detachLocked(e *entry) {
	if e.parent == 0 || fixed(e.ino) {
		return
	}
	if f.kids[childKey{e.parent, e.name}] == e {
		delete(f.kids, childKey{e.parent, e.name})
	}
	delete(f.made, e)
	e.parent = 0
	// Removed entries are kept for a while, so that a listing resumes
	// after one (rm -r removes what it listed, then lists on), and then
	// forgotten: removing many files costs bounded memory.
	f.removed = append(f.removed, e)
	if len(f.removed) > maxRemoved {
		old := f.removed[0]
		f.removed[0] = nil
		f.removed = f.removed[1:]
		if old.parent == 0 && f.open[old.ino] == nil && f.byIno[old.ino] == old {
			delete(f.byIno, old.ino)
		}
	}
}

// maxRemoved is how many removed entries the view remembers.
const maxRemoved = 4096

// inodeLocked builds the inode of an entry; size is the value's length
// (files), taken from the open data when the file is open for writing.
func (f *tableFS) inodeLocked(e *entry, size int64) store.Inode {
	in := store.Inode{ID: e.ino, Kind: store.KindFile, Mode: fileMode, UID: f.uid, GID: f.gid, Nlink: 1, Size: size}
	if e.dir {
		in.Kind, in.Mode, in.Nlink, in.Size = store.KindDir, dirMode, 2, 0
	} else {
		if st := f.open[e.ino]; st != nil && st.loaded {
			in.Size = st.size
		}
		in.Generation = f.genLocked(e)
		if e.parent == 0 {
			in.Nlink = 0
		}
	}
	if e.setMode {
		in.Mode = e.mode
	}
	if e.setUID {
		in.UID = e.uid
	}
	if e.setGID {
		in.GID = e.gid
	}
	in.Mtime = f.baseTime
	if e.mtime != 0 {
		in.Mtime = e.mtime
	}
	in.Ctime = max(in.Mtime, e.ctime)
	in.Atime = in.Mtime
	if e.atime != 0 {
		in.Atime = e.atime
	}
	return in
}

// fileInode returns the inode of file entry e, reading its size from the
// table unless the file is open for writing here.
func (f *tableFS) fileInode(op string, e *entry) (store.Inode, error) {
	if err := f.refresh(); err != nil {
		return store.Inode{}, err
	}
	f.mu.Lock()
	key, ok := f.keyLocked(e)
	st := f.open[e.ino]
	if st != nil && st.loaded {
		in := f.inodeLocked(e, st.size)
		f.mu.Unlock()
		return in, nil
	}
	f.mu.Unlock()
	if !ok {
		return store.Inode{}, noEntry(op, f.nameOf(e))
	}
	size, err := f.t.Size(key)
	if err != nil {
		return store.Inode{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inodeLocked(e, size), nil
}

// dirInode returns the inode of directory entry e if it still exists.
func (f *tableFS) dirInode(op string, e *entry) (store.Inode, error) {
	if !fixed(e.ino) {
		f.mu.Lock()
		p, ok := f.pathLocked(e)
		name := e.name
		f.mu.Unlock()
		if !ok {
			return store.Inode{}, noEntry(op, name)
		}
		exists, err := f.dirExists(p, e)
		if err != nil {
			return store.Inode{}, err
		}
		if !exists {
			return store.Inode{}, noEntry(op, p)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inodeLocked(e, 0), nil
}

// GetInode returns inode ino as it is now.
func (f *tableFS) GetInode(ino int64) (store.Inode, error) {
	f.mu.Lock()
	e := f.byIno[ino]
	f.mu.Unlock()
	if e == nil {
		return store.Inode{}, noEntry("stat", fmt.Sprint("inode ", ino))
	}
	if e.dir {
		return f.dirInode("stat", e)
	}
	return f.fileInode("stat", e)
}

// Lookup finds name in directory parent: a key at that path is a file; a
// path with keys under it (and no key of its own) or made by mkdir is a
// directory.
func (f *tableFS) Lookup(parent int64, name string) (store.Inode, error) {
	if err := store.ValidName(name); err != nil {
		return store.Inode{}, store.Wrap("lookup", name, err)
	}
	switch parent {
	case reservedIno:
		if name != store.KeysDir {
			return store.Inode{}, noEntry("lookup", name)
		}
		return f.GetInode(keysIno)
	case keysIno:
		e, _, err := f.lookupBinary(name)
		if err != nil {
			return store.Inode{}, err
		}
		return f.fileInode("lookup", e)
	case store.RootIno:
		if name == store.ReservedDir {
			return f.GetInode(reservedIno)
		}
	}
	_, dir, err := f.dirPath("lookup", parent)
	if err != nil {
		return store.Inode{}, err
	}
	p := join(dir, name)
	size, err := f.t.Size(p)
	if err == nil {
		e := f.bind(parent, name, false, "")
		if err := f.refresh(); err != nil {
			return store.Inode{}, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.inodeLocked(e, size), nil
	}
	if !notFound(err) {
		return store.Inode{}, err
	}
	f.mu.Lock()
	e := f.kids[childKey{parent, name}]
	if e != nil && !e.dir {
		e = nil
	}
	f.mu.Unlock()
	exists, err := f.dirExists(p, e)
	if err != nil {
		return store.Inode{}, err
	}
	if !exists {
		// A file open here whose key another process removed meanwhile
		// is still this mount's file until it closes.
		f.mu.Lock()
		defer f.mu.Unlock()
		if o := f.kids[childKey{parent, name}]; o != nil && !o.dir && f.open[o.ino] != nil && f.open[o.ino].loaded {
			return f.inodeLocked(o, 0), nil
		}
		return store.Inode{}, noEntry("lookup", p)
	}
	e = f.bind(parent, name, true, "")
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inodeLocked(e, 0), nil
}

// lookupBinary finds the file named name in /.kvault/keys: an entry a
// listing made, else the key whose BinaryName it is, found by a scan of
// every key (names there are hashes, which no index can reverse).
func (f *tableFS) lookupBinary(name string) (*entry, string, error) {
	f.mu.Lock()
	e := f.kids[childKey{keysIno, name}]
	var key string
	if e != nil {
		key = e.key
	}
	f.mu.Unlock()
	if e != nil {
		shown, err := f.shownInKeys(key, nil)
		if err != nil {
			return nil, "", err
		}
		if ok, err := f.t.Exists(key); err != nil {
			return nil, "", err
		} else if ok && shown {
			return e, key, nil
		}
	}
	if len(name) != 64 {
		return nil, "", noEntry("lookup", name)
	}
	var found string
	var ok bool
	errFound := errors.New("found")
	err := f.scanKeys("", "", func(key string, size int64) error {
		if store.BinaryName(key) != name {
			return nil
		}
		shown, err := f.shownInKeys(key, nil)
		if err != nil {
			return err
		}
		if shown {
			found, ok = key, true
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return nil, "", err
	}
	if !ok {
		return nil, "", noEntry("lookup", name)
	}
	return f.bind(keysIno, name, false, found), found, nil
}

// shownInKeys reports whether key is shown in /.kvault/keys rather than at
// its path: it is no path, or a proper prefix of it is itself a key (the
// file "a" wins over the directory "a" of "a/b"). cache remembers which
// prefixes are keys across calls of one listing (nil: none).
func (f *tableFS) shownInKeys(key string, cache map[string]bool) (bool, error) {
	parts, ok := store.PathParts(key)
	if !ok {
		return true, nil
	}
	for i := 1; i < len(parts); i++ {
		prefix := key[:len(strings.Join(parts[:i], "/"))]
		isKey, seen := cache[prefix]
		if !seen {
			var err error
			if isKey, err = f.t.Exists(prefix); err != nil {
				return false, err
			}
			if cache != nil && len(cache) < 4096 {
				cache[prefix] = isKey
			}
		}
		if isKey {
			return true, nil
		}
	}
	return false, nil
}

// SetAttr changes the size of a file (rewriting its value, or the data of
// a file open for writing here) and keeps mode, owner and times in memory.
func (f *tableFS) SetAttr(ino int64, a store.SetAttr) (store.Inode, error) {
	f.mu.Lock()
	e := f.byIno[ino]
	f.mu.Unlock()
	if e == nil {
		return store.Inode{}, noEntry("setattr", fmt.Sprint("inode ", ino))
	}
	if err := f.checkWrite("setattr", f.nameOf(e)); err != nil {
		return store.Inode{}, err
	}
	if a.Mode != nil && *a.Mode&^0o7777 != 0 {
		return store.Inode{}, &store.Error{Op: "setattr", Key: f.nameOf(e), Err: fmt.Errorf("%w: mode %o", store.ErrInvalidArgument, *a.Mode)}
	}
	now := time.Now().UnixNano()
	if a.Size != nil {
		if e.dir {
			return store.Inode{}, &store.Error{Op: "truncate", Key: f.nameOf(e), Err: store.ErrIsDir}
		}
		if err := f.resize(e, *a.Size); err != nil {
			return store.Inode{}, err
		}
	} else if _, err := f.GetInode(ino); err != nil {
		return store.Inode{}, err
	}
	f.mu.Lock()
	if a.Size != nil && a.Mtime == nil {
		e.mtime = now
	}
	if a.Mode != nil {
		e.setMode, e.mode = true, *a.Mode
	} else if a.DropPrivileges && !e.dir {
		in := f.inodeLocked(e, 0)
		m := in.Mode &^ syscall.S_ISUID
		if m&syscall.S_IXGRP != 0 {
			m &^= syscall.S_ISGID
		}
		e.setMode, e.mode = true, m
	}
	if a.UID != nil {
		e.setUID, e.uid = true, *a.UID
	}
	if a.GID != nil {
		e.setGID, e.gid = true, *a.GID
	}
	if a.Atime != nil {
		e.atime = *a.Atime
	}
	if a.Mtime != nil {
		e.mtime = *a.Mtime
	}
	e.ctime = now
	f.mu.Unlock()
	return f.GetInode(ino)
}

// resize sets the size of a file. A file open for writing here gets its
// data truncated (committed with it). Any other file is opened for the
// time of the truncate as a handle would be, loading only the bytes that
// stay, and committed at once: the write so goes through commit, which
// takes the file's token and re-reads its key, so a rename or unlink of
// the file or of a directory above it that ran meanwhile is honoured (the
// value is written under the key the file has then, or not at all).
func (f *tableFS) resize(e *entry, size int64) error {
	if size < 0 {
		return &store.Error{Op: "truncate", Key: f.nameOf(e), Err: fmt.Errorf("%w: negative size %d", store.ErrInvalidArgument, size)}
	}
	if err := checkSize(f.nameOf(e), size); err != nil {
		return &store.Error{Op: "truncate", Key: f.nameOf(e), Err: err}
	}
	st, made, err := f.openData(e, true, size)
	if err != nil {
		return err
	}
	defer f.release(st)
	if err := st.truncate(f, size); err != nil {
		return err
	}
	if !made {
		return nil // committed with the handles that have it open
	}
	return f.commit(st)
}

// newSpill makes an unlinked temporary file beside the database (the disk
// that holds the values anyway): a crash leaves nothing behind.
func (f *tableFS) newSpill() (*os.File, error) {
	tmp, err := os.CreateTemp(f.spillDir, ".kvaultfs-spill-*")
	if err != nil {
		return nil, err
	}
	os.Remove(tmp.Name())
	return tmp, nil
}
