package vault

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// Kind is the type of an inode.
type Kind uint8

// The kinds of inode. The values are part of the file format.
const (
	KindFile Kind = 1 + iota
	KindDir
	KindSymlink
	KindFIFO
	KindSocket
	KindCharDev
	KindBlockDev
)

// String names the kind as ls -l's first column would describe it.
func (k Kind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindDir:
		return "directory"
	case KindSymlink:
		return "symlink"
	case KindFIFO:
		return "fifo"
	case KindSocket:
		return "socket"
	case KindCharDev:
		return "char device"
	case KindBlockDev:
		return "block device"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// FileMode returns the io/fs type bits of the kind.
func (k Kind) FileMode() fs.FileMode {
	switch k {
	case KindDir:
		return fs.ModeDir
	case KindSymlink:
		return fs.ModeSymlink
	case KindFIFO:
		return fs.ModeNamedPipe
	case KindSocket:
		return fs.ModeSocket
	case KindCharDev:
		return fs.ModeDevice | fs.ModeCharDevice
	case KindBlockDev:
		return fs.ModeDevice
	}
	return 0
}

// Inode is the metadata of one file, directory or symlink. Times are
// nanoseconds since the Unix epoch. For a file open in this process, Size
// and Mtime include writes not yet committed.
type Inode struct {
	ID         int64  // inode number, never reused
	Kind       Kind   // file, directory, symlink, ...
	Mode       uint32 // permission bits, including setuid, setgid and sticky (07777)
	UID, GID   uint32 // owner
	Nlink      uint32 // number of directory entries naming it
	Size       int64  // bytes (the target's length for a symlink)
	Atime      int64  // last access, ns (only changed when asked)
	Mtime      int64  // last data change, ns
	Ctime      int64  // last metadata change, ns
	Generation int64  // counts data changes; differs after any rewrite
	ChunkSize  int    // the chunk size the data is split with
	Rdev       uint32 // device number of a device node
	Target     string // a symlink's target
}

// ModTime returns Mtime as a time.Time.
func (in *Inode) ModTime() time.Time { return time.Unix(0, in.Mtime) }

// IsDir reports whether the inode is a directory.
func (in *Inode) IsDir() bool { return in.Kind == KindDir }

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
