package fs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/kohakuvault/kvaultfs/store"
)

// preferredIO is the st_blksize reported for files: tools such as cp
// size their buffers from it, and one 1 MiB write is one FUSE request
// (MaxWrite) instead of eight.
const preferredIO = 1 << 20

// typeBits returns the S_IFMT bits of a vault kind.
func typeBits(k store.Kind) uint32 {
	switch k {
	case store.KindDir:
		return syscall.S_IFDIR
	case store.KindSymlink:
		return syscall.S_IFLNK
	case store.KindFIFO:
		return syscall.S_IFIFO
	case store.KindSocket:
		return syscall.S_IFSOCK
	case store.KindCharDev:
		return syscall.S_IFCHR
	case store.KindBlockDev:
		return syscall.S_IFBLK
	}
	return syscall.S_IFREG
}

// kindOf returns the vault kind for the S_IFMT bits of a mode.
func kindOf(mode uint32) (store.Kind, bool) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
		return store.KindFile, true
	case syscall.S_IFIFO:
		return store.KindFIFO, true
	case syscall.S_IFSOCK:
		return store.KindSocket, true
	case syscall.S_IFCHR:
		return store.KindCharDev, true
	case syscall.S_IFBLK:
		return store.KindBlockDev, true
	}
	return 0, false
}

// fillAttr copies an inode's metadata into a FUSE attribute block.
func fillAttr(in *store.Inode, out *fuse.Attr) {
	out.Ino = uint64(in.ID)
	out.Size = uint64(in.Size)
	out.Blocks = (uint64(in.Size) + 511) / 512
	out.Mode = typeBits(in.Kind) | in.Mode&07777
	out.Nlink = in.Nlink
	out.Uid, out.Gid = in.UID, in.GID
	out.Rdev = in.Rdev
	out.Blksize = preferredIO
	if in.Kind == store.KindDir {
		// glibc sizes its getdents buffer from st_blksize: 1 MiB would
		// fetch thousands of entries per READDIRPLUS, whose entries then
		// expire before ls gets to stat them, costing a lookup each.
		out.Blksize = 4096
	}
	out.Atime, out.Atimensec = split(in.Atime)
	out.Mtime, out.Mtimensec = split(in.Mtime)
	out.Ctime, out.Ctimensec = split(in.Ctime)
}

// split turns nanoseconds since the epoch into seconds and nanoseconds.
func split(ns int64) (uint64, uint32) {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return uint64(sec), uint32(nsec)
}
