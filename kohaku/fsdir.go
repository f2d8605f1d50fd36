package kohaku

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// Directories of the view: derived from the keys, never stored.

// fsScanBatch is how many keys one read transaction of a listing fetches.
const fsScanBatch = 256

// errStop ends a scan early.
var errStop = errors.New("stop")

// scanFrom calls fn with every key >= lo (and < hi when bounded), in key
// order, with its value's length, in batches of one read transaction
// each. fn may return next > the key to skip ahead (a whole
// subdirectory), or "" to go on with the following key; errStop ends the
// scan. Table.Scan only starts after a key; skipping a directory needs
// an inclusive start.
func (f *tableFS) scanFrom(lo, hi string, bounded bool, fn func(key string, size int64) (next string, err error)) error {
	for {
		batch, err := f.t.keyBatch(lo, true, hi, bounded, fsScanBatch)
		if err != nil {
			return store.Wrap("list", lo, err)
		}
		skipTo := ""
		for _, e := range batch {
			if skipTo != "" && e.key < skipTo {
				continue
			}
			next, err := fn(e.key, e.size)
			if errors.Is(err, errStop) {
				return nil
			}
			if err != nil {
				return err
			}
			if next > e.key {
				skipTo = next
			}
		}
		if len(batch) < fsScanBatch {
			return nil
		}
		lo = batch[len(batch)-1].key + "\x00"
		if skipTo > lo {
			lo = skipTo
		}
	}
}

// scanKeys calls fn with every key >= lo with the prefix (all keys for
// ""), in order.
func (f *tableFS) scanKeys(prefix, lo string, fn func(key string, size int64) error) error {
	if lo < prefix {
		lo = prefix
	}
	hi, bounded := successor(prefix)
	return f.scanFrom(lo, hi, bounded, func(k string, n int64) (string, error) { return "", fn(k, n) })
}

// dirBounds returns the range of the keys under directory path p: p+"/"
// up to p+"0" ('0' follows '/'); the root holds every key.
func dirBounds(p string) (lo, hi string, bounded bool) {
	if p == "" {
		return "", "", false
	}
	return p + "/", p + "0", true
}

// hasPathKeysUnder reports whether a key shown at its path lies under
// directory path p ("" for the root).
func (f *tableFS) hasPathKeysUnder(p string) (bool, error) {
	lo, hi, bounded := dirBounds(p)
	found := false
	err := f.scanFrom(lo, hi, bounded, func(k string, _ int64) (string, error) {
		if store.IsPathKey(k) {
			found = true
			return "", errStop
		}
		return "", nil
	})
	return found, err
}

// hasAnyKeyUnder reports whether any key starts with p+"/".
func (f *tableFS) hasAnyKeyUnder(p string) (bool, error) {
	lo, hi, bounded := dirBounds(p)
	found := false
	err := f.scanFrom(lo, hi, bounded, func(string, int64) (string, error) {
		found = true
		return "", errStop
	})
	return found, err
}

// dirExists reports whether directory path p exists: not a key itself
// (the file wins), and made by mkdir (e, if given, is its entry) or with
// keys under it.
func (f *tableFS) dirExists(p string, e *entry) (bool, error) {
	if isKey, err := f.t.Exists(p); err != nil || isKey {
		return false, err
	}
	if e != nil {
		f.mu.Lock()
		_, made := f.made[e]
		f.mu.Unlock()
		if made {
			return true, nil
		}
	}
	return f.hasPathKeysUnder(p)
}

// ReadDir lists up to limit entries of directory dir after the entry
// whose cookie (its inode number) is after. Entries come in key order,
// then the directories made by mkdir that hold no key, by name; a
// listing resumes from the name of the entry after is, so entries removed
// meanwhile never make it skip others.
func (f *tableFS) ReadDir(dir, after int64, limit int) ([]store.DirEntry, error) {
	if limit <= 0 {
		return nil, nil
	}
	switch dir {
	case reservedIno:
		if after != 0 {
			return nil, nil
		}
		in, err := f.GetInode(keysIno)
		if err != nil {
			return nil, err
		}
		return []store.DirEntry{{Name: store.KeysDir, Inode: in, Cookie: keysIno, NoXattrs: true}}, nil
	case keysIno:
		return f.readKeysDir(after, limit)
	}
	de, p, err := f.dirPath("readdir", dir)
	if err != nil {
		return nil, err
	}
	var out []store.DirEntry
	lo, hi, bounded := dirBounds(p)
	prefix := lo
	madePhase, madeAfter := false, ""
	if dir == store.RootIno && after == 0 {
		in, err := f.GetInode(reservedIno)
		if err != nil {
			return nil, err
		}
		out = append(out, store.DirEntry{Name: store.ReservedDir, Inode: in, Cookie: reservedIno, NoXattrs: true})
	}
	if after != 0 && after != reservedIno {
		f.mu.Lock()
		ae := f.byIno[after]
		var aeMade, aeDir bool
		var aeName string
		if ae != nil {
			_, aeMade = f.made[ae]
			aeDir, aeName = ae.dir, ae.name
		}
		f.mu.Unlock()
		if ae == nil {
			return nil, &store.Error{Op: "readdir", Key: p, Err: fmt.Errorf("%w: unknown directory cookie %d", store.ErrInvalidArgument, after)}
		}
		switch {
		case aeMade:
			has, err := f.hasPathKeysUnder(join(p, aeName))
			if err != nil {
				return nil, err
			}
			if !has {
				madePhase, madeAfter = true, aeName
			} else {
				lo = prefix + aeName + "0"
			}
		case aeDir:
			lo = prefix + aeName + "0" // past its subtree
		default:
			lo = prefix + aeName + "\x00"
		}
	}
	if !madePhase {
		err = f.scanFrom(lo, hi, bounded, func(k string, size int64) (string, error) {
			if len(out) >= limit {
				return "", errStop
			}
			if !store.IsPathKey(k) {
				return "", nil
			}
			rest := k[len(prefix):]
			name, _, isDir := strings.Cut(rest, "/")
			if !isDir {
				e := f.bind(dir, name, false, "")
				f.mu.Lock()
				in := f.inodeLocked(e, size)
				f.mu.Unlock()
				out = append(out, store.DirEntry{Name: name, Inode: in, Cookie: e.ino, NoXattrs: true})
				return "", nil
			}
			skip := prefix + name + "0"
			if isKey, err := f.t.Exists(prefix + name); err != nil {
				return "", err
			} else if isKey {
				return skip, nil // the file wins; its subtree is in /.kvault/keys
			}
			e := f.bind(dir, name, true, "")
			f.mu.Lock()
			in := f.inodeLocked(e, 0)
			f.mu.Unlock()
			out = append(out, store.DirEntry{Name: name, Inode: in, Cookie: e.ino, NoXattrs: true})
			return skip, nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(out) >= limit {
		return out, nil
	}
	// Directories made by mkdir that hold no key.
	type madeDir struct {
		e    *entry
		name string
	}
	f.mu.Lock()
	var made []madeDir
	for m := range f.made {
		if m.parent == de.ino && m.name > madeAfter {
			made = append(made, madeDir{m, m.name})
		}
	}
	f.mu.Unlock()
	slices.SortFunc(made, func(a, b madeDir) int { return strings.Compare(a.name, b.name) })
	for _, m := range made {
		if len(out) >= limit {
			break
		}
		if has, err := f.hasPathKeysUnder(join(p, m.name)); err != nil {
			return nil, err
		} else if has {
			continue // listed with the keys
		}
		if isKey, err := f.t.Exists(join(p, m.name)); err != nil {
			return nil, err
		} else if isKey {
			continue
		}
		f.mu.Lock()
		in := f.inodeLocked(m.e, 0)
		f.mu.Unlock()
		out = append(out, store.DirEntry{Name: m.name, Inode: in, Cookie: m.e.ino, NoXattrs: true})
	}
	return out, nil
}

// readKeysDir lists /.kvault/keys: every key that is not shown at its
// path, named by its BinaryName, in key order. It reads every key of the
// table (the keys shown there cannot be found through an index).
func (f *tableFS) readKeysDir(after int64, limit int) ([]store.DirEntry, error) {
	lo := ""
	if after != 0 {
		f.mu.Lock()
		ae := f.byIno[after]
		ok := ae != nil && ae.binary
		if ok {
			lo = ae.key + "\x00"
		}
		f.mu.Unlock()
		if !ok {
			return nil, &store.Error{Op: "readdir", Key: store.ReservedDir + "/" + store.KeysDir, Err: fmt.Errorf("%w: unknown directory cookie %d", store.ErrInvalidArgument, after)}
		}
	}
	var out []store.DirEntry
	cache := map[string]bool{}
	err := f.scanKeys("", lo, func(k string, size int64) error {
		if len(out) >= limit {
			return errStop
		}
		shown, err := f.shownInKeys(k, cache)
		if err != nil || !shown {
			return err
		}
		name := store.BinaryName(k)
		e := f.bind(keysIno, name, false, k)
		f.mu.Lock()
		in := f.inodeLocked(e, size)
		f.mu.Unlock()
		out = append(out, store.DirEntry{Name: name, Inode: in, Cookie: e.ino, NoXattrs: true})
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return out, nil
}

// Mkdir makes an empty directory, kept in memory until it is removed or
// the mount ends: a table has no empty directories. It lasts on disk once
// a file is written in it.
func (f *tableFS) Mkdir(parent int64, name string, mode, uid, gid uint32) (store.Inode, error) {
	if err := store.ValidName(name); err != nil {
		return store.Inode{}, store.Wrap("mkdir", name, err)
	}
	if err := f.checkWrite("mkdir", name); err != nil {
		return store.Inode{}, err
	}
	if err := f.treeParent("mkdir", parent, name); err != nil {
		return store.Inode{}, err
	}
	_, dir, err := f.dirPath("mkdir", parent)
	if err != nil {
		return store.Inode{}, err
	}
	p := join(dir, name)
	if isKey, err := f.t.Exists(p); err != nil {
		return store.Inode{}, err
	} else if isKey {
		return store.Inode{}, &store.Error{Op: "mkdir", Key: p, Err: store.ErrExists}
	}
	f.mu.Lock()
	old := f.kids[childKey{parent, name}]
	_, oldMade := f.made[old]
	f.mu.Unlock()
	if old != nil && old.dir && oldMade {
		return store.Inode{}, &store.Error{Op: "mkdir", Key: p, Err: store.ErrExists}
	}
	if has, err := f.hasPathKeysUnder(p); err != nil {
		return store.Inode{}, err
	} else if has {
		return store.Inode{}, &store.Error{Op: "mkdir", Key: p, Err: store.ErrExists}
	}
	now := time.Now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.bindLocked(parent, name, true, "")
	f.made[e] = struct{}{}
	e.setMode, e.mode = true, mode&0o7777
	e.setUID, e.uid, e.setGID, e.gid = true, uid, true, gid
	e.mtime, e.ctime = now, now
	return f.inodeLocked(e, 0), nil
}

// treeParent refuses to make or remove name in the reserved
// directories, and the name .kvault at the root.
func (f *tableFS) treeParent(op string, parent int64, name string) error {
	switch {
	case parent == reservedIno || parent == keysIno:
		return &store.Error{Op: op, Key: name, Err: fmt.Errorf("%w: /%s is kvaultfs's own directory; a key that is no path is written through the library or CLI", store.ErrPermission, store.ReservedDir)}
	case parent == store.RootIno && name == store.ReservedDir:
		if op == "mkdir" || op == "create" {
			return &store.Error{Op: op, Key: name, Err: store.ErrExists}
		}
		return &store.Error{Op: op, Key: name, Err: fmt.Errorf("%w: /%s is kvaultfs's own directory", store.ErrPermission, store.ReservedDir)}
	}
	return nil
}

// Rmdir removes an empty directory: one with a key under it is
// ErrNotEmpty. A directory that keys made is gone with its last key, and
// its rmdir (rm -r's last step) succeeds.
func (f *tableFS) Rmdir(parent int64, name string) error {
	if err := store.ValidName(name); err != nil {
		return store.Wrap("rmdir", name, err)
	}
	if err := f.treeParent("rmdir", parent, name); err != nil {
		return err
	}
	if err := f.checkWrite("rmdir", name); err != nil {
		return err
	}
	_, dir, err := f.dirPath("rmdir", parent)
	if err != nil {
		return err
	}
	p := join(dir, name)
	if isKey, err := f.t.Exists(p); err != nil {
		return err
	} else if isKey {
		return &store.Error{Op: "rmdir", Key: p, Err: store.ErrNotDir}
	}
	if has, err := f.hasAnyKeyUnder(p); err != nil {
		return err
	} else if has {
		return &store.Error{Op: "rmdir", Key: p, Err: store.ErrNotEmpty}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.kids[childKey{parent, name}]
	if e == nil || !e.dir {
		// Never looked up here: it exists only if mkdir made it, and
		// that made an entry.
		return noEntry("rmdir", p)
	}
	for m := range f.made {
		if m.parent == e.ino {
			return &store.Error{Op: "rmdir", Key: p, Err: store.ErrNotEmpty}
		}
	}
	f.detachLocked(e)
	return nil
}
