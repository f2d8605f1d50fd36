package kohaku

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// Unlink, rename: changes of keys, each one transaction, with the open
// state of the files concerned moved or dropped after it commits.

// keyOp is a change of keys in progress (a rename or an unlink): until it
// ends, no commit writes under the keys it covers, so none can bring back
// a key it moved away or removed, whatever file was opened meanwhile.
type keyOp struct {
	keys []string
	dir  bool // the keys are directories: every key under them is covered
	done chan struct{}
}

// covers reports whether the operation covers key.
func (op *keyOp) covers(key string) bool {
	for _, k := range op.keys {
		if key == k || (op.dir && strings.HasPrefix(key, k+"/")) {
			return true
		}
	}
	return false
}

// beginKeyOp registers a change of keys; endKeyOp ends it.
func (f *tableFS) beginKeyOp(dir bool, keys ...string) *keyOp {
	op := &keyOp{keys: keys, dir: dir, done: make(chan struct{})}
	f.mu.Lock()
	f.keyOps[op] = struct{}{}
	f.mu.Unlock()
	return op
}

func (f *tableFS) endKeyOp(op *keyOp) {
	f.mu.Lock()
	delete(f.keyOps, op)
	f.mu.Unlock()
	close(op.done)
}

// keyOpLocked returns a change of keys in progress that covers key.
func (f *tableFS) keyOpLocked(key string) *keyOp {
	for op := range f.keyOps {
		if op.covers(key) {
			return op
		}
	}
	return nil
}

// lockStates takes the commit tokens of the open states of every key op
// covers, whichever inode opened them (a path, or an entry under
// /.kvault/keys), in the order of the inodes that made them (fixed for
// a state's life, unlike its key), so two operations never wait for each
// other, and returns a function that gives them back. It waits for
// commits in progress; it holds no mutex while waiting. A state opened
// after it looked is no matter: its commit sees op and waits for it.
func (f *tableFS) lockStates(op *keyOp) func() {
	f.mu.Lock()
	var states []*openState
	for key, st := range f.byKey {
		if op.covers(key) {
			states = append(states, st)
		}
	}
	f.mu.Unlock()
	slices.SortFunc(states, func(a, b *openState) int { return cmp.Compare(a.ino, b.ino) })
	var held []*openState
	for _, st := range states {
		st.token <- struct{}{}
		held = append(held, st)
	}
	return func() {
		for _, st := range held {
			<-st.token
		}
	}
}

// Unlink removes a file's key. A file open here keeps its data (reads
// go on) but is never committed again.
func (f *tableFS) Unlink(parent int64, name string) error {
	if err := store.ValidName(name); err != nil {
		return store.Wrap("unlink", name, err)
	}
	if parent != keysIno {
		if err := f.treeParent("unlink", parent, name); err != nil {
			return err
		}
	}
	if err := f.checkWrite("unlink", name); err != nil {
		return err
	}
	var e *entry
	var key string
	if parent == keysIno {
		var err error
		if e, key, err = f.lookupBinary(name); err != nil {
			return err
		}
	} else {
		_, dir, err := f.dirPath("unlink", parent)
		if err != nil {
			return err
		}
		key = join(dir, name)
		if isKey, err := f.t.Exists(key); err != nil {
			return err
		} else if !isKey {
			f.mu.Lock()
			old := f.kids[childKey{parent, name}]
			f.mu.Unlock()
			if ok, err := f.dirExists(key, old); err != nil {
				return err
			} else if ok {
				return &store.Error{Op: "unlink", Key: key, Err: store.ErrIsDir}
			}
			return noEntry("unlink", key)
		}
		f.mu.Lock()
		e = f.kids[childKey{parent, name}]
		f.mu.Unlock()
	}
	op := f.beginKeyOp(false, key)
	defer f.endKeyOp(op)
	unlock := f.lockStates(op)
	defer unlock()
	if err := f.t.Delete(key); err != nil {
		return err
	}
	// Committed: every open file of the key (through its path or
	// /.kvault/keys) is gone, and so are its entries.
	now := time.Now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.byKey[key]; st != nil {
		f.unkeyLocked(st)
		for ino := range st.inos {
			if o := f.byIno[ino]; o != nil {
				o.ctime = now
				f.detachLocked(o)
			}
		}
	}
	if e != nil {
		e.ctime = now
		f.detachLocked(e)
	}
	return nil
}

// RenameEntry moves a file (Table.Rename) or a directory (every key under
// it, in one transaction). RENAME_NOREPLACE is honoured;
// RENAME_EXCHANGE is EINVAL, as renameat2(2) answers for a flag the file
// system does not support.
func (f *tableFS) RenameEntry(parent int64, name string, newParent int64, newName string, flags store.RenameFlags) error {
	if flags&store.RenameExchange != 0 {
		return &store.Error{Op: "rename", Key: name, Err: fmt.Errorf("%w: RENAME_EXCHANGE is not supported on a KohakuVault table", store.ErrInvalidArgument)}
	}
	if flags&^store.RenameNoReplace != 0 {
		return &store.Error{Op: "rename", Key: name, Err: fmt.Errorf("%w: rename flags %#x", store.ErrInvalidArgument, uint32(flags))}
	}
	for _, n := range []string{name, newName} {
		if err := store.ValidName(n); err != nil {
			return store.Wrap("rename", n, err)
		}
	}
	if parent != keysIno {
		if err := f.treeParent("rename", parent, name); err != nil {
			return err
		}
	}
	if err := f.treeParent("rename", newParent, newName); err != nil {
		return err
	}
	if err := f.checkWrite("rename", name); err != nil {
		return err
	}
	replace := flags&store.RenameNoReplace == 0

	// The source.
	var src *entry
	var srcKey string
	srcDir := false
	if parent == keysIno {
		var err error
		if src, srcKey, err = f.lookupBinary(name); err != nil {
			return err
		}
	} else {
		_, dir, err := f.dirPath("rename", parent)
		if err != nil {
			return err
		}
		srcKey = join(dir, name)
		if isKey, err := f.t.Exists(srcKey); err != nil {
			return err
		} else if isKey {
			src = f.bind(parent, name, false, "")
		} else {
			f.mu.Lock()
			old := f.kids[childKey{parent, name}]
			f.mu.Unlock()
			if ok, err := f.dirExists(srcKey, old); err != nil {
				return err
			} else if !ok {
				return noEntry("rename", srcKey)
			}
			src, srcDir = f.bind(parent, name, true, ""), true
		}
	}

	// The target.
	_, ndir, err := f.dirPath("rename", newParent)
	if err != nil {
		return err
	}
	dst := join(ndir, newName)
	if dst == srcKey && parent != keysIno {
		return nil
	}
	f.mu.Lock()
	dstE := f.kids[childKey{newParent, newName}]
	f.mu.Unlock()
	dstIsKey, err := f.t.Exists(dst)
	if err != nil {
		return err
	}
	dstIsDir := false
	if !dstIsKey {
		if dstIsDir, err = f.dirExists(dst, dstE); err != nil {
			return err
		}
	}
	if !srcDir {
		if dstIsDir {
			return &store.Error{Op: "rename", Key: dst, Err: store.ErrIsDir}
		}
		op := f.beginKeyOp(false, srcKey, dst)
		defer f.endKeyOp(op)
		unlock := f.lockStates(op)
		defer unlock()
		if err := f.t.Rename(srcKey, dst, replace); err != nil {
			return err
		}
	} else {
		if strings.HasPrefix(dst+"/", srcKey+"/") {
			return &store.Error{Op: "rename", Key: srcKey, Err: fmt.Errorf("%w: a directory cannot move into itself", store.ErrInvalidArgument)}
		}
		if dstIsKey {
			return &store.Error{Op: "rename", Key: dst, Err: store.ErrNotDir}
		}
		if dstIsDir {
			if !replace {
				return &store.Error{Op: "rename", Key: dst, Err: store.ErrExists}
			}
			if err := f.checkEmpty("rename", dst, dstE); err != nil {
				return err
			}
		}
		op := f.beginKeyOp(true, srcKey, dst)
		defer f.endKeyOp(op)
		unlock := f.lockStates(op)
		defer unlock()
		if err := f.movePrefix(srcKey, dst); err != nil {
			return err
		}
	}

	// Committed: move the entry (its inode, attributes and open state go
	// with it, and so does everything under a directory).
	now := time.Now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	if dstE != nil && dstE != src {
		f.detachLocked(dstE)
	}
	_, made := f.made[src]
	if k := (childKey{src.parent, src.name}); f.kids[k] == src {
		delete(f.kids, k)
	}
	src.parent, src.name, src.binary, src.key = newParent, newName, false, ""
	src.ctime = now
	f.kids[childKey{newParent, newName}] = src
	if made {
		f.made[src] = struct{}{}
	}
	// The open files move with their keys (a file replaced at dst is
	// marked deleted by rekeyLocked).
	if !srcDir {
		if st := f.byKey[srcKey]; st != nil {
			f.rekeyLocked(st, dst)
		} else if st := f.byKey[dst]; st != nil {
			f.unkeyLocked(st)
		}
		return nil
	}
	var moved []*openState
	for key, st := range f.byKey {
		if strings.HasPrefix(key, srcKey+"/") {
			moved = append(moved, st)
		}
	}
	for _, st := range moved {
		f.rekeyLocked(st, dst+st.key[len(srcKey):])
	}
	return nil
}

// checkEmpty fails with ErrNotEmpty if directory p holds a key or a
// directory made by mkdir.
func (f *tableFS) checkEmpty(op, p string, e *entry) error {
	if has, err := f.hasAnyKeyUnder(p); err != nil {
		return err
	} else if has {
		return &store.Error{Op: op, Key: p, Err: store.ErrNotEmpty}
	}
	if e == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for m := range f.made {
		if m.parent == e.ino {
			return &store.Error{Op: op, Key: p, Err: store.ErrNotEmpty}
		}
	}
	return nil
}

// movePrefix renames every key under directory from to the same place
// under to, in one write transaction, in batches of keys (the values are
// not read: only the key column changes; format A keeps id and size).
//
// Every key starting with from+"/" moves, those shown in the directory
// and those that are no path and are shown in /.kvault/keys instead
// ("d//x", "d/../x", "d/a/b" under a file "d/a"): they belong to the
// prefix KohakuVault's users see. The caller checked that to is not
// inside from and that no key shown as a path lies under to; a key under
// to that is no path (to+"//x") may still be there, so each new key is
// looked up first, and one that exists fails the whole rename with
// store.ErrNotEmpty (ENOTEMPTY) and changes nothing, rather than with
// the key column's UNIQUE constraint.
func (f *tableFS) movePrefix(from, to string) error {
	if err := f.t.check(true); err != nil {
		return store.Wrap("rename", from, err)
	}
	lo, hi, _ := dirBounds(from)
	err := f.t.update(func(ctx context.Context, _ *sql.Conn, tx *sql.Tx) error {
		for {
			rows, err := tx.QueryContext(ctx, `SELECT key FROM `+f.t.q+` WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT 256`, []byte(lo), []byte(hi))
			if err != nil {
				return err
			}
			var keys [][]byte
			for rows.Next() {
				var k []byte
				if err := rows.Scan(&k); err != nil {
					rows.Close()
					return err
				}
				keys = append(keys, k)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(keys) == 0 {
				return nil
			}
			for _, k := range keys {
				nk := append([]byte(to), k[len(from):]...)
				var one int
				err := tx.QueryRowContext(ctx, `SELECT 1 FROM `+f.t.q+` WHERE key = ?1`, nk).Scan(&one)
				if err == nil {
					return fmt.Errorf("%w: the key %q already exists (shown in /%s/%s) and %q would move onto it",
						store.ErrNotEmpty, nk, store.ReservedDir, store.KeysDir, k)
				}
				if !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				if _, err := tx.ExecContext(ctx, `UPDATE `+f.t.q+` SET key = ?2 WHERE key = ?1`, k, nk); err != nil {
					return err
				}
			}
		}
	})
	return store.Wrap("rename", from, err)
}
