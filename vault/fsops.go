package vault

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/kohakuvault/kvaultfs/store"
)

// Inode-level operations: the POSIX view of the vault that the mount
// (package fs) is built on. Entries are named by (parent inode, name);
// uid, gid and mode come from the caller, already masked by its umask.

// DirEntry is one entry of a directory listing (see store.DirEntry).
type DirEntry = store.DirEntry

// GetInode returns inode ino, with this process's uncommitted size and
// times merged in.
func (v *Vault) GetInode(ino int64) (Inode, error) {
	var in Inode
	err := v.read("getattr", "", func(q querier) error {
		var err error
		in, err = v.loadInode(q, ino)
		return err
	})
	if err != nil {
		return in, err
	}
	v.mergeOpen(&in)
	return in, nil
}

// mergeOpen overlays the uncommitted state of an inode open here.
func (v *Vault) mergeOpen(in *Inode) {
	if oi := v.files.lookup(in.ID); oi != nil {
		oi.merge(in)
	}
}

// Lookup returns the inode that name in directory parent refers to.
func (v *Vault) Lookup(parent int64, name string) (Inode, error) {
	var in Inode
	err := v.read("lookup", name, func(q querier) error {
		var err error
		in, err = v.lookupEntry(q, parent, name)
		return err
	})
	if err != nil {
		return in, err
	}
	v.mergeOpen(&in)
	return in, nil
}

// ReadDir returns up to limit entries of dir that follow the entry with
// cookie after (0 for the start), in cookie order, each with its inode so
// that a listing with attributes (READDIRPLUS, ls -l) needs no lookup per
// entry. Cookies are stable: entries added or removed during a listing
// never make it skip or repeat others.
func (v *Vault) ReadDir(dir, after int64, limit int) ([]DirEntry, error) {
	var out []DirEntry
	err := v.read("readdir", "", func(q querier) error {
		rows, err := q.Query(v.sql(`SELECT d.id, d.name,
			NOT EXISTS (SELECT 1 FROM {t}_xattrs x WHERE x.inode = d.child), `+inodeColumnsI+`
			FROM {t}_dentries d JOIN {t}_inodes i ON i.id = d.child
			WHERE d.parent = ? AND d.id > ? ORDER BY d.id LIMIT ?`), dir, after, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e DirEntry
			if err := scanInode(prefixScanner{rows, []any{&e.Cookie, &e.Name, &e.NoXattrs}}, &e.Inode); err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	// Only now that the rows (and their connection) are released: the
	// open state's lock is never taken while holding rows open.
	for i := range out {
		v.mergeOpen(&out[i].Inode)
	}
	return out, err
}

// Mknod creates a file, FIFO, socket or device node name in parent.
// A setgid parent passes on its group (and, to directories, the bit).
func (v *Vault) Mknod(parent int64, name string, kind Kind, mode, uid, gid, rdev uint32) (Inode, error) {
	return v.createEntry("create", parent, name, kind, mode, uid, gid, "", rdev)
}

// Mkdir creates directory name in parent.
func (v *Vault) Mkdir(parent int64, name string, mode, uid, gid uint32) (Inode, error) {
	return v.createEntry("mkdir", parent, name, KindDir, mode, uid, gid, "", 0)
}

// Symlink creates a symbolic link name in parent pointing at target.
func (v *Vault) Symlink(parent int64, name, target string, uid, gid uint32) (Inode, error) {
	if target == "" || len(target) > 4095 {
		return Inode{}, wrap("symlink", name, fmt.Errorf("%w: target of %d bytes", ErrInvalidArgument, len(target)))
	}
	return v.createEntry("symlink", parent, name, KindSymlink, 0o777, uid, gid, target, 0)
}

func (v *Vault) createEntry(op string, parent int64, name string, kind Kind, mode, uid, gid uint32, target string, rdev uint32) (Inode, error) {
	var in Inode
	err := v.update(op, name, func(t *tx) error {
		var err error
		in, err = t.createInherit(parent, name, kind, mode, uid, gid, target, rdev)
		return err
	})
	return in, err
}

// createInherit is create with a setgid parent's group (and, for a
// directory, its setgid bit) passed on, as on ext4.
func (t *tx) createInherit(parent int64, name string, kind Kind, mode, uid, gid uint32, target string, rdev uint32) (Inode, error) {
	p, err := t.v.loadInode(t, parent)
	if err != nil {
		return p, err
	}
	if p.Mode&syscall.S_ISGID != 0 {
		gid = p.GID
		if kind == KindDir {
			mode |= syscall.S_ISGID
		}
	}
	return t.createIn(p, name, kind, mode, uid, gid, target, rdev)
}

// CreateFile creates regular file name in parent and opens it with
// os.O_* access flags, in one transaction: what open(2) with O_CREAT
// does in the mount.
func (v *Vault) CreateFile(parent int64, name string, mode, uid, gid uint32, flag int) (*File, Inode, error) {
	var in Inode
	if v.readOnly {
		return nil, in, wrap("create", name, v.readOnlyErr())
	}
	sid, err := v.sessionID()
	if err != nil {
		return nil, in, err
	}
	var seq uint64
	err = v.update("create", name, func(t *tx) error {
		var err error
		seq = t.seq
		if in, err = t.createInherit(parent, name, KindFile, mode, uid, gid, "", 0); err != nil {
			return err
		}
		_, err = t.Exec(v.sql(`INSERT OR IGNORE INTO {t}_open (session, inode) VALUES (?, ?)`), sid, in.ID)
		return err
	})
	if err != nil {
		return nil, in, err
	}
	v.markRegistered(in.ID)
	oi := v.adopt(in, seq)
	f := &File{v: v, oi: oi, name: name, writable: flag&(os.O_WRONLY|os.O_RDWR) != 0, append: flag&os.O_APPEND != 0}
	if f.writable {
		oi.writers.Add(1)
	}
	return f, in, nil
}

// Link adds name in parent as a new link to the existing inode ino.
func (v *Vault) Link(ino, parent int64, name string) (Inode, error) {
	var in Inode
	err := v.update("link", name, func(t *tx) error {
		var err error
		if in, err = v.loadInode(t, ino); err != nil {
			return err
		}
		switch {
		case in.Kind == KindDir:
			return fmt.Errorf("%w: cannot hard-link a directory", ErrPermission)
		case in.Nlink == 0:
			return ErrNotFound // unlinked while open: linkat(2) gives ENOENT
		}
		if err := validName(name); err != nil {
			return err
		}
		if err := t.checkParent(parent); err != nil {
			return err
		}
		return t.addEntry(parent, name, &in)
	})
	if err == nil {
		if oi := v.files.lookup(in.ID); oi != nil {
			oi.merge(&in)
		}
	}
	return in, err
}

// Unlink removes the entry name (not a directory) from parent. The inode
// is freed with its last link, or at the last close if it is open.
func (v *Vault) Unlink(parent int64, name string) error {
	return v.update("unlink", name, func(t *tx) error {
		if isReserved(parent, name) {
			return fmt.Errorf("%w: %s is managed by the vault", ErrPermission, "/"+ReservedDir)
		}
		in, err := v.lookupLinked(t, parent, name)
		if err != nil {
			return err
		}
		if in.Kind == KindDir {
			return ErrIsDir
		}
		return t.removeEntry(parent, name, in)
	})
}

// Rmdir removes the empty directory name from parent.
func (v *Vault) Rmdir(parent int64, name string) error {
	return v.update("rmdir", name, func(t *tx) error {
		if isReserved(parent, name) || parent == keysIno {
			return fmt.Errorf("%w: %s is managed by the vault", ErrPermission, "/"+ReservedDir)
		}
		in, err := v.lookupEntry(t, parent, name)
		if err != nil {
			return err
		}
		if in.Kind != KindDir {
			return ErrNotDir
		}
		if empty, err := v.isEmptyDir(t, in.ID); err != nil {
			return err
		} else if !empty {
			return ErrNotEmpty
		}
		return t.removeEntry(parent, name, in)
	})
}

// RenameFlags are rename(2)'s flags (see store.RenameFlags).
type RenameFlags = store.RenameFlags

// Flags of RenameEntry, with the values renameat2(2) gives them.
const (
	RenameNoReplace = store.RenameNoReplace
	RenameExchange  = store.RenameExchange
)

// RenameEntry moves name in parent to newName in newParent, atomically,
// as rename(2): a file replaces a file, a directory replaces an empty
// directory, and a directory of any size moves by changing one row.
func (v *Vault) RenameEntry(parent int64, name string, newParent int64, newName string, flags RenameFlags) error {
	return v.update("rename", name, func(t *tx) error {
		return t.rename(entryRef{parent, name, ""}, entryRef{newParent, newName, ""}, flags)
	})
}

// entryRef names a directory entry; binKey is set for an entry in the
// binary-keys directory created by a key-level rename.
type entryRef struct {
	parent int64
	name   string
	binKey string
}

func (t *tx) rename(src, dst entryRef, flags RenameFlags) error {
	v := t.v
	if flags&^(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return fmt.Errorf("%w: rename flags %#x", ErrInvalidArgument, flags)
	}
	if isReserved(src.parent, src.name) || isReserved(dst.parent, dst.name) ||
		(dst.parent == keysIno && dst.binKey == "") {
		return fmt.Errorf("%w: %s is managed by the vault", ErrPermission, "/"+ReservedDir)
	}
	if err := validName(dst.name); err != nil {
		return err
	}
	from, err := v.lookupLinked(t, src.parent, src.name)
	if err != nil {
		return err
	}
	if err := t.checkParent(dst.parent); err != nil && dst.parent != keysIno {
		return err
	}
	to, err := v.lookupLinked(t, dst.parent, dst.name)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if from.Kind == KindDir {
		if below, err := v.isAncestor(t, from.ID, dst.parent); err != nil {
			return err
		} else if below {
			return fmt.Errorf("%w: cannot move a directory into itself", ErrInvalidArgument)
		}
	}
	switch {
	case flags&RenameExchange != 0:
		if !exists {
			return ErrNotFound
		}
		return t.exchange(src, dst, from, to)
	case exists && flags&RenameNoReplace != 0:
		return ErrExists
	case exists && to.ID == from.ID:
		return nil // two links to one inode: rename(2) does nothing
	case exists:
		if err := checkReplace(t, from, to); err != nil {
			return err
		}
		if err := t.removeEntry(dst.parent, dst.name, to); err != nil {
			return err
		}
	}
	if _, err := t.Exec(v.sql(`UPDATE {t}_dentries SET parent = ?, name = ? WHERE parent = ? AND name = ?`),
		dst.parent, dst.name, src.parent, src.name); err != nil {
		return err
	}
	if err := t.moveBinKey(src, dst); err != nil {
		return err
	}
	if from.Kind == KindDir && src.parent != dst.parent {
		if err := t.addLinks(src.parent, -1); err != nil {
			return err
		}
		if err := t.addLinks(dst.parent, 1); err != nil {
			return err
		}
	}
	if _, err := t.Exec(v.sql(`UPDATE {t}_inodes SET ctime = ? WHERE id = ?`), t.now, from.ID); err != nil {
		return err
	}
	if err := t.touch(src.parent); err != nil {
		return err
	}
	return t.touch(dst.parent)
}

// checkReplace applies rename(2)'s rules for replacing an existing entry.
func checkReplace(t *tx, from, to Inode) error {
	switch {
	case from.Kind == KindDir && to.Kind != KindDir:
		return ErrNotDir
	case from.Kind != KindDir && to.Kind == KindDir:
		return ErrIsDir
	case to.Kind == KindDir:
		empty, err := t.v.isEmptyDir(t, to.ID)
		if err != nil {
			return err
		}
		if !empty {
			return ErrNotEmpty
		}
	}
	return nil
}

// exchange swaps the inodes two entries refer to (RENAME_EXCHANGE).
func (t *tx) exchange(a, b entryRef, ain, bin Inode) error {
	v := t.v
	if bin.Kind == KindDir {
		if below, err := v.isAncestor(t, bin.ID, a.parent); err != nil {
			return err
		} else if below {
			return fmt.Errorf("%w: cannot move a directory into itself", ErrInvalidArgument)
		}
	}
	if a.parent == keysIno || b.parent == keysIno {
		return fmt.Errorf("%w: %s is managed by the vault", ErrPermission, "/"+ReservedDir)
	}
	for _, e := range []struct {
		ref   entryRef
		child int64
	}{{a, bin.ID}, {b, ain.ID}} {
		if _, err := t.Exec(v.sql(`UPDATE {t}_dentries SET child = ? WHERE parent = ? AND name = ?`), e.child, e.ref.parent, e.ref.name); err != nil {
			return err
		}
	}
	if a.parent != b.parent && ain.Kind != bin.Kind {
		// A directory changed parents: move its ".." link.
		da, db := 1, -1
		if ain.Kind == KindDir {
			da, db = -1, 1
		}
		if err := t.addLinks(a.parent, da); err != nil {
			return err
		}
		if err := t.addLinks(b.parent, db); err != nil {
			return err
		}
	}
	if _, err := t.Exec(v.sql(`UPDATE {t}_inodes SET ctime = ?1 WHERE id IN (?2, ?3)`), t.now, ain.ID, bin.ID); err != nil {
		return err
	}
	if err := t.touch(a.parent); err != nil {
		return err
	}
	return t.touch(b.parent)
}

// moveBinKey keeps the binary-keys table in step with an entry moving
// out of, or into, the binary-keys directory.
func (t *tx) moveBinKey(src, dst entryRef) error {
	if src.parent == keysIno {
		if _, err := t.Exec(t.v.sql(`DELETE FROM {t}_binkeys WHERE name = ?`), src.name); err != nil {
			return err
		}
	}
	if dst.parent == keysIno {
		_, err := t.Exec(t.v.sql(`INSERT OR REPLACE INTO {t}_binkeys (key, name) VALUES (?, ?)`), []byte(dst.binKey), dst.name)
		return err
	}
	return nil
}

// SetAttr says which attributes SetAttr changes (see store.SetAttr).
type SetAttr = store.SetAttr

// SetAttr changes an inode's attributes, as chmod, chown, truncate and
// utimensat do, and returns the result. Every change sets ctime; an
// explicit mtime also overrides the time of writes not yet committed.
func (v *Vault) SetAttr(ino int64, a SetAttr) (Inode, error) {
	oi := v.files.lookup(ino)
	if a.Size != nil {
		if err := checkSize(*a.Size); err != nil {
			return Inode{}, wrap("setattr", "", err)
		}
		var err error
		if oi != nil {
			err = oi.truncate(v, *a.Size)
		} else {
			err = v.truncateClosed(ino, *a.Size)
		}
		if err != nil {
			return Inode{}, wrap("setattr", "", err)
		}
	}
	if a.Mode == nil && a.UID == nil && a.GID == nil && a.Atime == nil && a.Mtime == nil && !a.DropPrivileges {
		return v.GetInode(ino)
	}
	if oi != nil && oi.writers.Load() > 0 {
		oi.setMeta(a)      // committed with the file's data, at the latest at close
		if a.Size == nil { // a truncate changed the generation: read it back
			if in, ok := oi.snapshot(v); ok {
				return in, nil
			}
		}
		return v.GetInode(ino)
	}
	in, err := v.setMeta(ino, a, oi)
	if err == nil && oi != nil {
		oi.merge(&in)
	}
	return in, err
}

// setMeta writes the attributes other than the size in one statement
// (NULL keeps a column) and returns the inode as stored.
func (v *Vault) setMeta(ino int64, a SetAttr, oi *openInode) (Inode, error) {
	var seq uint64
	if oi != nil {
		// No commit of this process's pending times may race the new
		// mtime: commits hold commitMu too. mu is not held across the
		// transaction (see openInode).
		oi.commitMu.Lock()
		defer oi.commitMu.Unlock()
		oi.mu.RLock()
		seq = oi.timesSeq
		oi.mu.RUnlock()
	}
	var in Inode
	err := v.update("setattr", "", func(t *tx) error {
		// 2048 is S_ISUID, 1024 S_ISGID, 8 S_IXGRP; kind 2 a directory.
		err := scanInode(t.QueryRow(v.sql(`UPDATE {t}_inodes SET
			mode = coalesce(?1, CASE WHEN ?2 AND kind <> 2 THEN mode & ~2048 & ~(CASE WHEN mode & 8 THEN 1024 ELSE 0 END) ELSE mode END),
			uid = coalesce(?3, uid), gid = coalesce(?4, gid), atime = coalesce(?5, atime), mtime = coalesce(?6, mtime), ctime = ?7
			WHERE id = ?8 RETURNING `+inodeColumns),
			ptrVal(a.Mode, 07777), a.DropPrivileges, ptrVal(a.UID, ^uint32(0)), ptrVal(a.GID, ^uint32(0)), a.Atime, a.Mtime, t.now, ino), &in)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	if err == nil && oi != nil && a.Mtime != nil {
		oi.mu.Lock()
		if oi.timesSeq == seq { // a write since sets mtime again
			oi.timesDirty = false
		}
		oi.mu.Unlock()
	}
	return in, err
}

// truncateClosed changes the size of an inode not open in this process.
func (v *Vault) truncateClosed(ino int64, size int64) error {
	return v.update("truncate", "", func(t *tx) error {
		in, err := v.loadInode(t, ino)
		if err != nil {
			return err
		}
		if err := regularFile(in); err != nil {
			return err
		}
		if err := t.truncateChunks(ino, in.ChunkSize, size); err != nil {
			return err
		}
		_, err = t.Exec(v.sql(`UPDATE {t}_inodes SET size = ?1, mtime = ?2, ctime = ?2, generation = generation + 1 WHERE id = ?3`), size, t.now, ino)
		v.reads.dropInode(ino)
		return err
	})
}

// Xattr limits, as Linux's.
const (
	maxXattrName  = 255
	maxXattrValue = 64 << 10
)

// XattrFlags are setxattr(2)'s flags (see store.XattrFlags).
type XattrFlags = store.XattrFlags

// Flags of SetXattr.
const (
	XattrCreate  = store.XattrCreate
	XattrReplace = store.XattrReplace
)

// GetXattr returns an extended attribute's value, or ErrNotFound.
func (v *Vault) GetXattr(ino int64, name string) ([]byte, error) {
	var val []byte
	err := v.read("getxattr", name, func(q querier) error {
		err := q.QueryRow(v.sql(`SELECT value FROM {t}_xattrs WHERE inode = ? AND name = ?`), ino, name).Scan(&val)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	return val, err
}

// SetXattr sets an extended attribute.
func (v *Vault) SetXattr(ino int64, name string, value []byte, flags XattrFlags) error {
	switch {
	case name == "" || len(name) > maxXattrName:
		return wrap("setxattr", name, fmt.Errorf("%w: attribute name of %d bytes", ErrNameTooLong, len(name)))
	case len(value) > maxXattrValue:
		return wrap("setxattr", name, fmt.Errorf("%w: value of %d bytes, over %d", ErrInvalidArgument, len(value), maxXattrValue))
	}
	return v.update("setxattr", name, func(t *tx) error {
		var n int
		if err := t.QueryRow(v.sql(`SELECT count(*) FROM {t}_xattrs WHERE inode = ? AND name = ?`), ino, name).Scan(&n); err != nil {
			return err
		}
		switch {
		case n > 0 && flags&XattrCreate != 0:
			return ErrExists
		case n == 0 && flags&XattrReplace != 0:
			return ErrNotFound
		}
		if value == nil {
			value = []byte{}
		}
		if _, err := t.Exec(v.sql(`INSERT OR REPLACE INTO {t}_xattrs (inode, name, value) VALUES (?, ?, ?)`), ino, name, value); err != nil {
			return err
		}
		_, err := t.Exec(v.sql(`UPDATE {t}_inodes SET ctime = ? WHERE id = ?`), t.now, ino)
		return err
	})
}

// ListXattr returns the names of an inode's extended attributes.
func (v *Vault) ListXattr(ino int64) ([]string, error) {
	var names []string
	err := v.read("listxattr", "", func(q querier) error {
		rows, err := q.Query(v.sql(`SELECT name FROM {t}_xattrs WHERE inode = ? ORDER BY name`), ino)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				return err
			}
			names = append(names, n)
		}
		return rows.Err()
	})
	return names, err
}

// RemoveXattr deletes an extended attribute, or returns ErrNotFound.
func (v *Vault) RemoveXattr(ino int64, name string) error {
	return v.update("removexattr", name, func(t *tx) error {
		res, err := t.Exec(v.sql(`DELETE FROM {t}_xattrs WHERE inode = ? AND name = ?`), ino, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		_, err = t.Exec(v.sql(`UPDATE {t}_inodes SET ctime = ? WHERE id = ?`), t.now, ino)
		return err
	})
}

// FSStats is what StatFS reports (see store.FSStats).
type FSStats = store.FSStats

// StatFS reports the database's size and the room left for it.
func (v *Vault) StatFS() (FSStats, error) {
	var st FSStats
	var pages, free int64
	err := v.view("statfs", "", func(q *sql.Tx) error {
		for _, p := range []struct {
			q   string
			dst any
		}{
			{"PRAGMA page_count", &pages},
			{"PRAGMA freelist_count", &free},
			{"PRAGMA page_size", &st.PageSize},
			{v.sql(`SELECT count(*) FROM {t}_inodes`), &st.Inodes},
		} {
			if err := q.QueryRow(p.q).Scan(p.dst); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(v.path, &sfs); err != nil {
		return st, wrap("statfs", v.path, err)
	}
	// With WAL the file is cut to its last page only at a checkpoint: the
	// tail until then is free space too (see vacuum.go). The other way
	// round, the newest pages may be in the -wal only: they count as the
	// file's already.
	file := max(statSize(v.path), pages*int64(st.PageSize))
	inside := free*int64(st.PageSize) + file - pages*int64(st.PageSize)
	st.DBBytes = file
	st.DiskFree = int64(sfs.Bavail) * sfs.Bsize
	st.FreeBytes = min(inside, st.DBBytes) + st.DiskFree
	st.NameMax = MaxNameLen
	return st, nil
}

// ptrVal dereferences p, masked; nil stays nil (NULL keeps the column).
func ptrVal(p *uint32, mask uint32) any {
	if p == nil {
		return nil
	}
	return *p & mask
}

// Generations returns the data generation of each listed inode that
// still exists, for a mount checking whether cached pages are stale.
func (v *Vault) Generations(ids []int64) (map[int64]int64, error) {
	out := make(map[int64]int64, len(ids))
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 500)]
		ids = ids[len(batch):]
		args := make([]any, len(batch))
		marks := make([]byte, 0, 2*len(batch))
		for i, id := range batch {
			args[i] = id
			if i > 0 {
				marks = append(marks, ',')
			}
			marks = append(marks, '?')
		}
		err := v.view("generations", "", func(q *sql.Tx) error {
			rows, err := q.Query(v.sql(`SELECT id, generation FROM {t}_inodes WHERE id IN (`)+string(marks)+`)`, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id, gen int64
				if err := rows.Scan(&id, &gen); err != nil {
					return err
				}
				out[id] = gen
			}
			return rows.Err()
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DataVersion returns a number that changes whenever any connection, in
// this process or another, commits a change to the database: a cheap
// test for "anything changed?" before a closer look.
func (v *Vault) DataVersion() (int64, error) {
	if v.kv != nil {
		return v.kv.DataVersion()
	}
	v.dvMu.Lock()
	defer v.dvMu.Unlock()
	if err := v.checkOpen(); err != nil {
		return 0, err
	}
	if v.dvConn == nil {
		c, err := v.r.Conn(context.Background())
		if err != nil {
			return 0, wrap("data version", "", err)
		}
		v.dvConn = c
	}
	var dv int64
	err := v.dvConn.QueryRowContext(context.Background(), "PRAGMA data_version").Scan(&dv)
	return dv, wrap("data version", "", err)
}

// ZeroRange makes [off, end) of the open file read as zeros, keeping
// its size (fallocate's PUNCH_HOLE and ZERO_RANGE): the chunks the range
// covers whole are deleted in one statement, committed at once, and only
// the partly covered chunks at its edges are written, so the cost does
// not grow with the range. Bytes past the end of file already read as
// zeros and are left alone.
func (f *File) ZeroRange(off, end int64) error {
	if err := f.check("zero range", true); err != nil {
		return err
	}
	if off < 0 || end < off {
		return wrap("zero range", f.name, fmt.Errorf("%w: range [%d, %d)", ErrInvalidArgument, off, end))
	}
	in, err := f.Stat() // the size as stored now, not as last seen
	if err != nil {
		return err
	}
	end = min(end, in.Size)
	if off >= end {
		return nil
	}
	cs := f.oi.cs
	first, last := (off+cs-1)/cs, end/cs // chunks [first, last) are covered whole
	zeroEdge := func(lo, hi int64) error {
		if lo >= hi {
			return nil
		}
		_, err := f.WriteAt(make([]byte, hi-lo), lo)
		return err
	}
	if first >= last {
		return zeroEdge(off, end) // within at most two chunks
	}
	if err := zeroEdge(off, first*cs); err != nil {
		return err
	}
	if err := zeroEdge(last*cs, end); err != nil {
		return err
	}
	return wrap("zero range", f.name, f.oi.deleteChunks(f.v, first, last))
}

// deleteChunks deletes chunks [first, last) of the open inode, stored and
// dirty, in one committed transaction. Commits of the inode wait
// (commitMu), so no dirty chunk of the range is stored meanwhile; the
// dirty ones are dropped only once the deletion has committed.
func (oi *openInode) deleteChunks(v *Vault, first, last int64) error {
	oi.commitMu.Lock()
	defer oi.commitMu.Unlock()
	var gen int64
	err := v.update("zero range", "", func(t *tx) error {
		if _, err := t.Exec(v.sql(`DELETE FROM {t}_chunks WHERE inode = ? AND idx >= ? AND idx < ?`), oi.ino, first, last); err != nil {
			return err
		}
		return t.QueryRow(v.sql(`UPDATE {t}_inodes SET mtime = ?1, ctime = ?1, generation = generation + 1 WHERE id = ?2 RETURNING generation`),
			t.now, oi.ino).Scan(&gen)
	})
	if err != nil {
		return err
	}
	oi.mu.Lock()
	for idx, dc := range oi.dirty {
		if idx >= first && idx < last {
			delete(oi.dirty, idx)
			oi.freeChunk(v, dc)
		}
	}
	oi.recomputePendingEnd()
	oi.gen = gen
	oi.touch()
	oi.mu.Unlock()
	v.reads.dropInode(oi.ino)
	return nil
}
