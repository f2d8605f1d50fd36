package vault

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/kohakuvault/kvaultfs/store"
)

// Kind is the type of an inode (see store.Kind).
type Kind = store.Kind

// The kinds of inode. The values are part of the file format.
const (
	KindFile     = store.KindFile
	KindDir      = store.KindDir
	KindSymlink  = store.KindSymlink
	KindFIFO     = store.KindFIFO
	KindSocket   = store.KindSocket
	KindCharDev  = store.KindCharDev
	KindBlockDev = store.KindBlockDev
)

// Inode is the metadata of one file, directory or symlink (see
// store.Inode).
type Inode = store.Inode

// inodeColumns is the column list that scanInode reads; inodeColumnsI
// is the same for a query that names the inodes table "i".
const (
	inodeColumns  = `id, kind, mode, uid, gid, nlink, size, atime, mtime, ctime, generation, chunk_size, rdev, coalesce(target, '')`
	inodeColumnsI = `i.id, i.kind, i.mode, i.uid, i.gid, i.nlink, i.size, i.atime, i.mtime, i.ctime, i.generation, i.chunk_size, i.rdev, coalesce(i.target, '')`
)

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// scanInode reads a row selected with inodeColumns. It scans into int64s
// and converts afterwards: database/sql assigns to *int64 directly but
// goes through reflection for other integer types, which cost more than
// the query itself.
//
// Every inode read from the file passes through here, so this is where
// values that no vault writes are stopped: a size or chunk size out of
// range would divide by zero, allocate without bound or overflow in the
// chunk arithmetic. Such a row is a *badInodeError (ErrCorrupt), with in
// filled as read.
func scanInode(r rowScanner, in *Inode) error {
	var kind, mode, uid, gid, nlink, chunkSize, rdev int64
	var target []byte
	err := r.Scan(&in.ID, &kind, &mode, &uid, &gid, &nlink, &in.Size,
		&in.Atime, &in.Mtime, &in.Ctime, &in.Generation, &chunkSize, &rdev, &target)
	in.Kind, in.Mode, in.UID, in.GID, in.Nlink = Kind(kind), uint32(mode), uint32(uid), uint32(gid), uint32(nlink)
	in.ChunkSize, in.Rdev, in.Target = int(chunkSize), uint32(rdev), string(target)
	if err != nil {
		return err
	}
	return checkInode(in.ID, kind, in.Size, chunkSize)
}

// checkInode checks the values of an inode row that the code computes
// with: a known kind, a size within [0, MaxFileSize], and for a file a
// chunk size within [1, maxChunkSize] (any positive size works in the
// arithmetic; the options only ever wrote multiples of 4096).
func checkInode(id, kind, size, chunkSize int64) error {
	switch {
	case kind < int64(KindFile) || kind > int64(KindBlockDev):
		return &badInodeError{id, fmt.Sprintf("unknown kind %d", kind)}
	case size < 0 || size > MaxFileSize:
		return &badInodeError{id, fmt.Sprintf("size %d out of range [0, %d]", size, MaxFileSize)}
	case kind == int64(KindFile) && (chunkSize < 1 || chunkSize > maxChunkSize):
		return &badInodeError{id, fmt.Sprintf("chunk size %d out of range [1, %d]", chunkSize, maxChunkSize)}
	}
	return nil
}

// badInodeError is an inode row with values no vault writes. It is
// ErrCorrupt.
type badInodeError struct {
	id  int64
	why string
}

func (e *badInodeError) Error() string {
	return fmt.Sprintf("%v: inode %d has %s", ErrCorrupt, e.id, e.why)
}

func (e *badInodeError) Unwrap() error { return ErrCorrupt }

// lookupLinked is lookupEntry for operations that only move or drop the
// entry (unlink, rename, replacing or deleting a value): an inode whose
// values are out of range still has a right id, kind and link count,
// which is all they use, and deleting or replacing a damaged value is
// how a user gets rid of it.
func (v *Vault) lookupLinked(q querier, parent int64, name string) (Inode, error) {
	in, err := v.lookupEntry(q, parent, name)
	var bad *badInodeError
	if errors.As(err, &bad) {
		return in, nil
	}
	return in, err
}

// prefixScanner scans some leading columns into extra before the ones
// its caller asks for.
type prefixScanner struct {
	r     rowScanner
	extra []any
}

func (p prefixScanner) Scan(dest ...any) error { return p.r.Scan(append(p.extra, dest...)...) }

// querier is what reads need from a transaction or a pool.
type querier interface {
	QueryRow(query string, args ...any) *sql.Row
	Query(query string, args ...any) (*sql.Rows, error)
}

// loadInode reads inode id; a missing inode is ErrNotFound.
func (v *Vault) loadInode(q querier, id int64) (Inode, error) {
	var in Inode
	err := scanInode(q.QueryRow(v.sql(`SELECT `+inodeColumns+` FROM {t}_inodes WHERE id = ?`), id), &in)
	if errors.Is(err, sql.ErrNoRows) {
		return in, fmt.Errorf("inode %d: %w", id, ErrNotFound)
	}
	return in, err
}

// newInode inserts an inode with nlink links and returns it.
func (t *tx) newInode(kind Kind, mode, uid, gid, nlink uint32, target string, rdev uint32) (Inode, error) {
	in := Inode{Kind: kind, Mode: mode & 07777, UID: uid, GID: gid, Nlink: nlink,
		Atime: t.now, Mtime: t.now, Ctime: t.now, Generation: 1, Rdev: rdev, Target: target}
	if kind == KindSymlink {
		in.Size = int64(len(target))
	}
	return t.insertInode(in)
}

// insertInode inserts in (its ID is assigned) and returns it. A file
// gets the chunk size of the vault's options.
func (t *tx) insertInode(in Inode) (Inode, error) {
	if in.Kind == KindFile {
		in.ChunkSize = t.v.opts.ChunkSize
	}
	var tgt any
	if in.Kind == KindSymlink {
		tgt = []byte(in.Target)
	}
	res, err := t.Exec(t.v.sql(`INSERT INTO {t}_inodes (kind, mode, uid, gid, nlink, size, atime, mtime, ctime, generation, chunk_size, rdev, target)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)`),
		in.Kind, in.Mode, in.UID, in.GID, in.Nlink, in.Size, in.Atime, in.Mtime, in.Ctime, in.ChunkSize, in.Rdev, tgt)
	if err != nil {
		return in, err
	}
	in.ID, err = res.LastInsertId()
	return in, err
}
