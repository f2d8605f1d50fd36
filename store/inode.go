package store

import (
	"fmt"
	"io/fs"
	"time"
)

// RootIno is the inode number of the root directory in every store.
const RootIno int64 = 1

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
