package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// streamBatchBytes is how much of a streamed value one transaction
// writes. Bigger batches mean fewer commits; smaller ones bound the WAL,
// the memory a stream holds and how long other writers wait.
const streamBatchBytes = 8 << 20

// euid and egid own the files and directories that the library creates.
var euid, egid = uint32(os.Geteuid()), uint32(os.Getegid())

// batchBufs recycles streaming buffers, which are large enough that
// touching fresh memory for each stream would cost more than the copy.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, streamBatchBytes); return &b }}

// Put stores value under key, replacing any previous value. Parent
// directories of a path key are created as needed. Without the write-back
// cache the value is committed (visible to every process, safe from a
// crash of this one) when Put returns; see Sync for durability.
func (v *Vault) Put(key string, value []byte) error {
	if v.kv != nil {
		return v.kvPut(key, value)
	}
	kp, err := parseKey(key)
	if err != nil {
		return wrap("put", key, err)
	}
	if v.cache.accepts(key, len(value)) {
		if err := v.checkOpen(); err != nil { // after Close nothing would flush it
			return wrap("put", key, err)
		}
		if err := v.checkCachedPut(kp); err != nil {
			return wrap("put", key, err)
		}
		// Make room in the budget as the write-out does: whole dirty
		// chunks of open files first, then cached values, then the rest.
		// Failures stay with what failed to commit (see writeOutStep).
		for !v.cache.roomFor(int64(len(key)+len(value))) && v.writeOutStep() {
		}
		if v.cache.record(key, bytes.Clone(value), false) {
			_, err := v.FlushCache()
			return err
		}
		return nil
	}
	if len(value) > streamBatchBytes {
		return v.PutReader(key, bytes.NewReader(value), int64(len(value)))
	}
	if err := v.checkDirect(kp); err != nil {
		return wrap("put", key, err)
	}
	v.cache.dropIfEnabled(key)
	return v.update("put", key, func(t *tx) error { return t.putValue(kp, value, t.now) })
}

// PutReader stores everything r yields under key. size is the number of
// bytes r will yield, or -1 if unknown; a reader that yields a different
// number fails the put. The value is written in bounded transactions
// under a new inode and swapped in at the end in one short transaction:
// a put that fails midway (a read error, a full disk, a crash) leaves the
// old value whole, and its partial data is freed (at the next open, after
// a crash). Memory use does not grow with the value.
func (v *Vault) PutReader(key string, r io.Reader, size int64) error {
	if v.kv != nil {
		return v.kvPutReader(key, r, size)
	}
	kp, err := parseKey(key)
	if err != nil {
		return wrap("put", key, err)
	}
	if size < -1 {
		return wrap("put", key, fmt.Errorf("%w: size %d", ErrInvalidArgument, size))
	}
	if size > MaxFileSize {
		return wrap("put", key, checkSize(size))
	}
	if v.readOnly {
		return wrap("put", key, v.readOnlyErr())
	}
	if err := v.checkDirect(kp); err != nil {
		return wrap("put", key, err)
	}
	v.cache.dropIfEnabled(key)
	if size >= 0 {
		r = &exactReader{r: io.LimitReader(r, size+1), want: size}
	}
	bp := batchBufs.Get().(*[]byte)
	defer batchBufs.Put(bp)
	// A whole number of chunks, so that every batch ends on a chunk
	// boundary (the inode gets this chunk size in streamPut).
	buf := batchFor(bp, v.opts.ChunkSize)
	n, err := io.ReadFull(r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF { // fits one batch: one transaction
		return v.update("put", key, func(t *tx) error { return t.putValue(kp, buf[:n], t.now) })
	}
	if err != nil {
		return wrap("put", key, err)
	}
	return v.streamPut(kp, r, buf, n)
}

// streamPut writes a value bigger than one batch: chunks go to a new
// inode with no links, recorded as open by this process so that a crash
// leaves it for collection, and the key is swapped to it at the end.
func (v *Vault) streamPut(kp keyPath, r io.Reader, buf []byte, n int) error {
	sid, err := v.sessionID()
	if err != nil {
		return wrap("put", kp.key, err)
	}
	var in Inode
	err = v.update("put", kp.key, func(t *tx) error {
		in, err = t.newInode(KindFile, 0o644, euid, egid, 0, "", 0)
		if err != nil {
			return err
		}
		_, err = t.Exec(v.sql(`INSERT INTO {t}_open (session, inode) VALUES (?, ?)`), sid, in.ID)
		return err
	})
	if err != nil {
		return err
	}
	cs := in.ChunkSize
	var off int64
	writeBatch := func(t *tx, b []byte) error {
		for i := 0; i < len(b); i += cs {
			if err := t.putChunk(in.ID, (off+int64(i))/int64(cs), b[i:min(i+cs, len(b))]); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		if err := v.update("put", kp.key, func(t *tx) error { return writeBatch(t, buf[:n]) }); err != nil {
			v.abandon(sid, in.ID)
			return err
		}
		off += int64(n)
		var rerr error
		n, rerr = io.ReadFull(r, buf)
		if err := CheckRange(off, int64(n)); err != nil { // a stream of unknown size past the limit
			v.abandon(sid, in.ID)
			return wrap("put", kp.key, err)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			v.abandon(sid, in.ID)
			return wrap("put", kp.key, rerr)
		}
	}
	err = v.update("put", kp.key, func(t *tx) error {
		if err := writeBatch(t, buf[:n]); err != nil {
			return err
		}
		in.Size = off + int64(n)
		if _, err := t.Exec(v.sql(`UPDATE {t}_inodes SET size = ?, mtime = ?2, ctime = ?2 WHERE id = ?3`), in.Size, t.now, in.ID); err != nil {
			return err
		}
		if err := t.link(kp, &in); err != nil {
			return err
		}
		_, err := t.Exec(v.sql(`DELETE FROM {t}_open WHERE session = ? AND inode = ?`), sid, in.ID)
		return err
	})
	if err != nil {
		v.abandon(sid, in.ID)
	}
	return err
}

// abandon frees the inode of a streamed put that failed.
func (v *Vault) abandon(sid, ino int64) {
	v.update("put", "", func(t *tx) error {
		_, err := t.Exec(v.sql(`DELETE FROM {t}_open WHERE session = ? AND inode = ?`), sid, ino)
		return err
	})
	v.freeOrphan(ino)
}

// putValue stores a whole value under a key in one transaction.
func (t *tx) putValue(kp keyPath, value []byte, mtime int64) error {
	in, err := t.insertInode(Inode{Kind: KindFile, Mode: 0o644, UID: euid, GID: egid, Nlink: 1,
		Size: int64(len(value)), Atime: t.now, Mtime: mtime, Ctime: t.now, Generation: 1})
	if err != nil {
		return err
	}
	cs := in.ChunkSize
	for i := 0; i < len(value); i += cs {
		if err := t.putChunk(in.ID, int64(i/cs), value[i:min(i+cs, len(value))]); err != nil {
			return err
		}
	}
	return t.link(kp, &in)
}

// link makes key name the new inode in, replacing (and unlinking) what
// the key named before. A key that names a directory is ErrIsDir.
func (t *tx) link(kp keyPath, in *Inode) error {
	parent, name, err := t.parentFor(kp, true)
	if err != nil {
		return err
	}
	// A new key, the common case, costs one statement: try the insert.
	res, err := t.Exec(t.v.sql(`INSERT INTO {t}_dentries (parent, name, child) VALUES (?, ?, ?)
		ON CONFLICT (parent, name) DO NOTHING`), parent, name, in.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		if kp.binary {
			if _, err := t.Exec(t.v.sql(`INSERT OR IGNORE INTO {t}_binkeys (key, name) VALUES (?, ?)`), []byte(kp.key), name); err != nil {
				return err
			}
		}
		if err := t.touch(parent); err != nil {
			return err
		}
		return t.setOneLink(in)
	}
	old, err := t.v.lookupLinked(t, parent, name)
	switch {
	case err != nil:
		return err
	case old.Kind == KindDir:
		return ErrIsDir
	}
	if _, err := t.Exec(t.v.sql(`UPDATE {t}_dentries SET child = ? WHERE parent = ? AND name = ?`), in.ID, parent, name); err != nil {
		return err
	}
	if err := t.setOneLink(in); err != nil {
		return err
	}
	if err := t.touch(parent); err != nil {
		return err
	}
	old.Nlink--
	if _, err := t.Exec(t.v.sql(`UPDATE {t}_inodes SET nlink = ?, ctime = ? WHERE id = ?`), old.Nlink, t.now, old.ID); err != nil {
		return err
	}
	if old.Nlink == 0 {
		return t.release(old)
	}
	return nil
}

// setOneLink gives a new file the one link its key makes.
func (t *tx) setOneLink(in *Inode) error {
	if in.Nlink == 1 {
		return nil
	}
	in.Nlink = 1
	_, err := t.Exec(t.v.sql(`UPDATE {t}_inodes SET nlink = 1 WHERE id = ?`), in.ID)
	return err
}

// Delete removes key. A missing key is ErrNotFound; a directory is
// ErrIsDir. With the cache on, the delete is itself cached.
func (v *Vault) Delete(key string) error {
	if v.kv != nil {
		return v.kvDelete(key)
	}
	kp, err := parseKey(key)
	if err != nil {
		return wrap("delete", key, err)
	}
	if v.CacheEnabled() {
		return wrap("delete", key, v.cachedDelete(kp))
	}
	return v.update("delete", key, func(t *tx) error { return t.deleteKey(kp) })
}

// cachedDelete records a delete in the cache: a tombstone if the key is
// stored, or just the removal of a pending put that never reached the
// database.
func (v *Vault) cachedDelete(kp keyPath) error {
	if v.cache.isDir(kp.key) { // a directory in the cached view
		return ErrIsDir
	}
	p, cached := v.cache.lookup(kp.key)
	if cached && p.deleted {
		return ErrNotFound
	}
	in, err := v.statStored(kp)
	stored := err == nil
	switch {
	case err != nil && !errors.Is(err, ErrNotFound):
		return err
	case stored && in.Kind == KindDir:
		return ErrIsDir
	case !stored && !cached:
		return ErrNotFound
	case !stored:
		gone, err := v.cache.dropUnstored(kp.key, func() (bool, error) {
			_, err := v.statStored(kp)
			if errors.Is(err, ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		})
		if err != nil || gone {
			return err
		}
	}
	// Stored, or written by a flush that ran meanwhile: cache a delete.
	if v.cache.record(kp.key, nil, true) {
		_, err := v.FlushCache()
		return err
	}
	return nil
}

// deleteKey removes a key's entry in a transaction.
func (t *tx) deleteKey(kp keyPath) error {
	parent, name, err := t.parentFor(kp, false)
	if errors.Is(err, ErrNotDir) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	in, err := t.v.lookupLinked(t, parent, name)
	if err != nil {
		return err
	}
	if in.Kind == KindDir {
		return ErrIsDir
	}
	return t.removeEntry(parent, name, in)
}

// checkCachedPut verifies, before a put is cached, that it will be
// writable at flush time in the view the cache presents: no parent is a
// file and the key is not a directory.
func (v *Vault) checkCachedPut(kp keyPath) error {
	if kp.binary {
		return nil
	}
	if err := v.cache.checkPath(kp); err != nil {
		return err
	}
	return v.read("put", kp.key, func(q querier) error {
		dir := RootIno
		for i, name := range kp.parts {
			in, err := v.lookupEntry(q, dir, name)
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if i == len(kp.parts)-1 {
				if in.Kind == KindDir {
					return ErrIsDir
				}
				return nil
			}
			if in.Kind != KindDir {
				if p, ok := v.cache.lookup(joinParts(kp.parts[:i+1])); ok && p.deleted {
					return nil // deleted in the cache: the flush frees the name first
				}
				return fmt.Errorf("%w: %q is a %s", ErrNotDir, joinParts(kp.parts[:i+1]), in.Kind)
			}
			dir = in.ID
		}
		return nil
	})
}

// checkDirect readies a write of kp that bypasses the enabled cache: the
// cached state must allow it exactly as for a cached put, and a cached
// delete of a parent is flushed first (it frees the name).
func (v *Vault) checkDirect(kp keyPath) error {
	if !v.CacheEnabled() {
		return nil
	}
	if err := v.checkCachedPut(kp); err != nil {
		return err
	}
	if v.cache.deletedParent(kp) {
		if _, err := v.FlushCache(); err != nil && !isEntryError(err) {
			return err
		}
	}
	return nil
}

// savepoint runs fn so that its changes are undone if it fails, without
// aborting the transaction.
func (t *tx) savepoint(fn func() error) error {
	if _, err := t.Exec("SAVEPOINT entry"); err != nil {
		return err
	}
	if err := fn(); err != nil {
		t.Exec("ROLLBACK TO entry")
		t.Exec("RELEASE entry")
		return err
	}
	_, err := t.Exec("RELEASE entry")
	return err
}

// exactReader fails a stream that does not yield exactly want bytes.
type exactReader struct {
	r    io.Reader
	want int64
	got  int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.got += int64(n)
	if e.got > e.want {
		return n, fmt.Errorf("%w: the reader yielded more than the %d bytes announced", ErrInvalidArgument, e.want)
	}
	if err == io.EOF && e.got < e.want {
		return n, fmt.Errorf("%w: the reader ended after %d of the %d bytes announced", io.ErrUnexpectedEOF, e.got, e.want)
	}
	return n, err
}
