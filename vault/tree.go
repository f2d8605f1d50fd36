package vault

import (
	"database/sql"
	"errors"
	"fmt"
)

// The tree: directory entries (parent, name) -> child, and the rules that
// keep it a POSIX file system tree. The helpers on *tx run inside a write
// transaction; the exported inode-level operations in fsops.go and the
// key-level ones (Put, Delete, Rename) are built from them.

// inlineFreeBytes is the largest file whose chunks are deleted inside the
// transaction that drops its last link; bigger files are freed afterwards
// in bounded batches so that no transaction grows with the file.
const inlineFreeBytes = 64 << 20

// lookupEntry returns the inode that name in parent refers to.
func (v *Vault) lookupEntry(q querier, parent int64, name string) (Inode, error) {
	var in Inode
	// A subquery rather than a join: SQLite plans this once, while the
	// join was re-planned on every call (four times the cost).
	err := scanInode(q.QueryRow(v.sql(`SELECT `+inodeColumns+` FROM {t}_inodes
		WHERE id = (SELECT child FROM {t}_dentries WHERE parent = ? AND name = ?)`), parent, name), &in)
	if errors.Is(err, sql.ErrNoRows) {
		return in, ErrNotFound
	}
	return in, err
}

// resolve finds the inode a key names, without following symlinks.
func (v *Vault) resolve(q querier, kp keyPath) (Inode, error) {
	if kp.binary {
		return v.lookupEntry(q, keysIno, binaryName(kp.key))
	}
	dir := RootIno
	for i, name := range kp.parts {
		in, err := v.lookupEntry(q, dir, name)
		if err != nil {
			return in, err
		}
		if i == len(kp.parts)-1 {
			return in, nil
		}
		if in.Kind != KindDir {
			return in, ErrNotFound // "a/b" when "a" is a file
		}
		dir = in.ID
	}
	panic("unreachable: a tree key has at least one component")
}

// parentFor returns the directory that holds a key's entry and the
// entry's name, creating missing parent directories when mkdirs is set.
// Putting "a/b" when "a" is a file is ErrNotDir.
func (t *tx) parentFor(kp keyPath, mkdirs bool) (int64, string, error) {
	if kp.binary {
		return keysIno, binaryName(kp.key), nil
	}
	dir := RootIno
	last := len(kp.parts) - 1
	for i, name := range kp.parts[:last] {
		var path string
		if t.dirs != nil {
			path = joinParts(kp.parts[:i+1])
			if id, ok := t.dirs[path]; ok {
				dir = id
				continue
			}
		}
		in, err := t.v.lookupEntry(t, dir, name)
		switch {
		case errors.Is(err, ErrNotFound) && mkdirs:
			in, err = t.create(dir, name, KindDir, 0o755, euid, egid, "", 0)
			if err != nil {
				return 0, "", err
			}
		case err != nil:
			return 0, "", err
		case in.Kind != KindDir:
			return 0, "", fmt.Errorf("%w: %q is a %s", ErrNotDir, name, in.Kind)
		}
		dir = in.ID
		if t.dirs != nil {
			t.dirs[path] = dir
		}
	}
	return dir, kp.parts[last], nil
}

// checkParent verifies that dir is a live directory where entries may be
// created (not the reserved directories, not removed).
func (t *tx) checkParent(dir int64) error {
	if dir == reservedIno || dir == keysIno {
		return fmt.Errorf("%w: %s is managed by the vault", ErrPermission, "/"+ReservedDir)
	}
	in, err := t.v.loadInode(t, dir)
	if err != nil {
		return err
	}
	return checkParentInode(in)
}

// checkParentInode is checkParent for a parent already loaded.
func checkParentInode(in Inode) error {
	switch {
	case in.ID == reservedIno || in.ID == keysIno:
		return fmt.Errorf("%w: %s is managed by the vault", ErrPermission, "/"+ReservedDir)
	case in.Kind != KindDir:
		return ErrNotDir
	case in.Nlink == 0:
		return fmt.Errorf("directory was removed: %w", ErrNotFound)
	}
	return nil
}

// create makes a new inode of kind and links it as name in parent, which
// must not have that name yet.
func (t *tx) create(parent int64, name string, kind Kind, mode, uid, gid uint32, target string, rdev uint32) (Inode, error) {
	p, err := t.v.loadInode(t, parent)
	if err != nil {
		return Inode{}, err
	}
	return t.createIn(p, name, kind, mode, uid, gid, target, rdev)
}

// createIn is create with the parent's inode already loaded.
func (t *tx) createIn(parent Inode, name string, kind Kind, mode, uid, gid uint32, target string, rdev uint32) (Inode, error) {
	if err := validName(name); err != nil {
		return Inode{}, err
	}
	if err := checkParentInode(parent); err != nil {
		return Inode{}, err
	}
	nlink := uint32(1)
	if kind == KindDir {
		nlink = 2
	}
	in, err := t.newInode(kind, mode, uid, gid, nlink, target, rdev)
	if err != nil {
		return in, err
	}
	if err := t.insertEntry(parent.ID, name, &in); err != nil {
		return in, err
	}
	return in, nil
}

// addEntry links an existing inode as name in parent and counts the
// link. A directory gets nlink 2 (its own "." and its entry).
func (t *tx) addEntry(parent int64, name string, child *Inode) error {
	if err := t.insertEntry(parent, name, child); err != nil {
		return err
	}
	child.Nlink++
	if child.Kind == KindDir {
		child.Nlink = 2
	}
	child.Ctime = t.now
	_, err := t.Exec(t.v.sql(`UPDATE {t}_inodes SET nlink = ?, ctime = ? WHERE id = ?`), child.Nlink, t.now, child.ID)
	return err
}

// insertEntry adds the directory entry name -> child in parent, which
// gains a link (its "..") if child is a directory, and touches parent.
// The child's own link count is the caller's business.
func (t *tx) insertEntry(parent int64, name string, child *Inode) error {
	_, err := t.Exec(t.v.sql(`INSERT INTO {t}_dentries (parent, name, child) VALUES (?, ?, ?)`), parent, name, child.ID)
	if isConstraint(err) {
		return ErrExists
	}
	if err != nil {
		return err
	}
	if child.Kind == KindDir {
		_, err := t.Exec(t.v.sql(`UPDATE {t}_inodes SET nlink = nlink + 1, mtime = ?1, ctime = ?1 WHERE id = ?2`), t.now, parent)
		return err
	}
	return t.touch(parent)
}

// removeEntry unlinks name from parent and drops one link of child,
// releasing the inode when no link is left.
func (t *tx) removeEntry(parent int64, name string, child Inode) error {
	if _, err := t.Exec(t.v.sql(`DELETE FROM {t}_dentries WHERE parent = ? AND name = ?`), parent, name); err != nil {
		return err
	}
	if parent == keysIno {
		if _, err := t.Exec(t.v.sql(`DELETE FROM {t}_binkeys WHERE name = ?`), name); err != nil {
			return err
		}
	}
	if child.Kind == KindDir {
		child.Nlink = 0
		if err := t.addLinks(parent, -1); err != nil {
			return err
		}
	} else {
		child.Nlink--
	}
	if err := t.touch(parent); err != nil {
		return err
	}
	if _, err := t.Exec(t.v.sql(`UPDATE {t}_inodes SET nlink = ?, ctime = ? WHERE id = ?`), child.Nlink, t.now, child.ID); err != nil {
		return err
	}
	if child.Nlink == 0 {
		return t.release(child)
	}
	return nil
}

// addLinks changes a directory's link count by delta (a subdirectory came
// or went) and touches it.
func (t *tx) addLinks(dir int64, delta int) error {
	_, err := t.Exec(t.v.sql(`UPDATE {t}_inodes SET nlink = nlink + ? WHERE id = ?`), delta, dir)
	return err
}

// touch marks a directory's mtime and ctime to be set: its entries
// changed. The update runs once per directory, before the commit.
func (t *tx) touch(dir int64) error {
	if t.touched == nil {
		t.touched = make(map[int64]bool)
	}
	t.touched[dir] = true
	return nil
}

// applyTouches sets the times of the directories touch marked.
func (t *tx) applyTouches() error {
	for dir := range t.touched {
		if _, err := t.Exec(t.v.sql(`UPDATE {t}_inodes SET mtime = ?1, ctime = ?1 WHERE id = ?2`), t.now, dir); err != nil {
			return err
		}
	}
	t.touched = nil
	return nil
}

// release frees an inode that has lost its last link, unless a process
// may have it open: then it stays, with nlink 0, until the last close or
// a later sweep (see the rule in session.go). Big files are freed after
// the transaction in bounded batches.
func (t *tx) release(in Inode) error {
	var open int
	if err := t.QueryRow(t.v.sql(`SELECT count(*) FROM {t}_open WHERE inode = ?`), in.ID).Scan(&open); err != nil {
		return err
	}
	if !t.claimFree(in.ID) { // open here: it stays until the last close
		return nil
	}
	if open > 0 {
		// The row may be this session's record of a file whose last
		// close is racing with this transaction, which must not keep the
		// data alive: unregister drops it and frees the inode unless
		// another process holds it.
		t.afterCommit(func() { t.v.unregister([]int64{in.ID}) })
		return nil
	}
	// Another live session may be reading it without a record: the
	// orphan waits for its sweeps.
	if ok, err := t.v.mayFree(t, t.now, t.now); err != nil || !ok {
		return err
	}
	if in.Size > inlineFreeBytes {
		t.afterCommit(func() { t.v.freeOrphan(in.ID) })
		return nil
	}
	return t.free(in.ID)
}

// free deletes an inode and everything it owns.
func (t *tx) free(id int64) error {
	for _, s := range []string{
		`DELETE FROM {t}_chunks WHERE inode = ?`,
		`DELETE FROM {t}_xattrs WHERE inode = ?`,
		`DELETE FROM {t}_inodes WHERE id = ? AND nlink = 0`,
	} {
		if _, err := t.Exec(t.v.sql(s), id); err != nil {
			return err
		}
	}
	t.v.reads.dropInode(id)
	return nil
}

// isAncestor reports whether dir is anc or lies below it.
func (v *Vault) isAncestor(q querier, anc, dir int64) (bool, error) {
	for dir != RootIno {
		if dir == anc {
			return true, nil
		}
		err := q.QueryRow(v.sql(`SELECT parent FROM {t}_dentries WHERE child = ? LIMIT 1`), dir).Scan(&dir)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil // a removed directory has no ancestors
		}
		if err != nil {
			return false, err
		}
	}
	return anc == RootIno, nil
}

// isEmptyDir reports whether a directory has no entries.
func (v *Vault) isEmptyDir(q querier, dir int64) (bool, error) {
	var n int
	err := q.QueryRow(v.sql(`SELECT count(*) FROM (SELECT 1 FROM {t}_dentries WHERE parent = ? LIMIT 1)`), dir).Scan(&n)
	return n == 0, err
}

// isReserved reports whether (parent, name) is one of the vault's own
// directories, which cannot be removed, renamed or replaced.
func isReserved(parent int64, name string) bool {
	return (parent == RootIno && name == ReservedDir) || parent == reservedIno
}
