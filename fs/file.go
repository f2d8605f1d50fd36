package fs

import (
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/kohakuvault/kvaultfs/store"
	"golang.org/x/sys/unix"
)

// handle is an open file. Its writes go to the vault's dirty chunks
// (shared by every handle of the inode, so they see each other's writes
// at once); Flush, which runs at every close(2), commits them, Fsync
// also makes them durable, and Release drops the handle.
type handle struct {
	n        *node
	f        store.File
	writable bool
	append   bool
	// privChecked is set once a write has cleared setuid and setgid
	// bits, as a write by an unprivileged user must (dropPrivileges).
	privChecked atomic.Bool
}

var (
	_ gofs.FileReader    = (*handle)(nil)
	_ gofs.FileWriter    = (*handle)(nil)
	_ gofs.FileFlusher   = (*handle)(nil)
	_ gofs.FileFsyncer   = (*handle)(nil)
	_ gofs.FileReleaser  = (*handle)(nil)
	_ gofs.FileGetattrer = (*handle)(nil)
	_ gofs.FileLseeker   = (*handle)(nil)
	_ gofs.FileAllocater = (*handle)(nil)
)

// openFlags converts open(2) flags to the os.O_* flags the vault takes.
func openFlags(flags uint32) int {
	osFlags := os.O_RDONLY
	switch int(flags) & syscall.O_ACCMODE {
	case syscall.O_WRONLY:
		osFlags = os.O_WRONLY
	case syscall.O_RDWR:
		osFlags = os.O_RDWR
	}
	if flags&syscall.O_APPEND != 0 {
		osFlags |= os.O_APPEND
	}
	return osFlags
}

// open opens the node's file with open(2) flags. The kernel keeps its
// page cache for the file only if no other process changed the data
// since this mount last cached it.
func (n *node) open(flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	f, err := n.fsys.v.OpenInode(n.ino(), openFlags(flags))
	if err != nil {
		return nil, 0, toErrno(err)
	}
	fuseFlags := appendDirectIO(flags)
	if gen := f.Generation(); n.cacheGen.Swap(gen) == gen {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return n.newHandle(f, flags), fuseFlags, 0
}

// appendDirectIO returns FOPEN_DIRECT_IO for a writable open with
// O_APPEND, else 0. Through the page cache the kernel splits a write at
// the first page boundary when that page is not cached, and sends the
// parts as separate requests; each part of an append lands at the end of
// the file as stored when it commits, so another mount's append could
// land between them. With direct I/O a write of up to MaxWrite (1 MiB)
// arrives as one request and lands whole. The cost: such a descriptor
// cannot be mapped shared (ENODEV), and its reads bypass the page cache.
func appendDirectIO(flags uint32) uint32 {
	if flags&syscall.O_APPEND != 0 && int(flags)&syscall.O_ACCMODE != syscall.O_RDONLY {
		return fuse.FOPEN_DIRECT_IO
	}
	return 0
}

// newHandle wraps an open vault file for the kernel.
func (n *node) newHandle(f store.File, flags uint32) *handle {
	h := &handle{n: n, f: f, writable: int(flags)&syscall.O_ACCMODE != syscall.O_RDONLY, append: flags&syscall.O_APPEND != 0}
	if h.writable {
		n.writers.Add(1)
	}
	n.cacheGen.Store(f.Generation())
	n.fsys.watch(n)
	return h
}

// Read reads from the vault; dirty data of other handles is included.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.f.ReadAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write writes into the vault's dirty chunks; with O_APPEND the data
// goes to the current end of the file, whatever offset the kernel chose.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if err := h.dropPrivileges(ctx); err != nil {
		return 0, toErrno(err)
	}
	var err error
	if h.append {
		_, _, err = h.f.Append(data)
	} else {
		_, err = h.f.WriteAt(data, off)
	}
	if err != nil {
		return 0, toErrno(err)
	}
	return uint32(len(data)), 0
}

// Flush commits the handle's inode's dirty data. It runs at every
// close(2) of a descriptor, so its error is what close(2) returns.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	return toErrno(h.f.Flush())
}

// Fsync commits the dirty data and returns once it is durable.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return toErrno(h.f.Sync())
}

// Release closes the handle. The kernel ignores its error; Flush has
// already reported any failure to commit.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	gen := h.f.Generation()
	err := h.f.Close()
	if h.writable {
		if err == nil {
			gen = h.f.Generation() // the commit at close: the kernel's pages hold it
		}
		h.n.cacheGen.Store(gen)
		h.n.writers.Add(-1)
	}
	h.n.fsys.unwatch(h.n)
	return toErrno(err)
}

// Getattr reports attributes through the handle, which works after the
// file was unlinked.
func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	st, err := h.f.Stat()
	if err != nil {
		return toErrno(err)
	}
	fillAttr(&st, &out.Attr)
	return 0
}

// Lseek implements SEEK_DATA and SEEK_HOLE.
func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	switch whence {
	case unix.SEEK_DATA, unix.SEEK_HOLE:
		res, err := h.f.SeekData(int64(off), whence == unix.SEEK_HOLE)
		if errors.Is(err, store.ErrNotFound) {
			return 0, syscall.ENXIO
		}
		return uint64(res), toErrno(err)
	case io.SeekStart:
		return off, 0
	case io.SeekEnd:
		return uint64(h.f.Size()) + off, 0
	}
	return 0, syscall.EINVAL
}

// Allocate implements fallocate(2). Space is not reserved ahead (a
// database grows as it is written), so plain allocation only extends
// the size; punching a hole or zeroing a range makes it a hole.
func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	keepSize := mode&unix.FALLOC_FL_KEEP_SIZE != 0
	if off > uint64(store.MaxFileSize) || size > uint64(store.MaxFileSize) {
		return syscall.EFBIG // before the sum below can overflow
	}
	if err := store.CheckRange(int64(off), int64(size)); err != nil {
		return toErrno(err)
	}
	end := int64(off + size)
	switch mode &^ unix.FALLOC_FL_KEEP_SIZE {
	case 0:
		if !keepSize {
			return toErrno(h.f.Grow(end)) // never below what another process stored
		}
		return 0
	case unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_ZERO_RANGE:
		if mode&unix.FALLOC_FL_PUNCH_HOLE != 0 && !keepSize {
			return syscall.EINVAL // punching a hole requires KEEP_SIZE
		}
		// ZeroRange stops at the end of the file as stored; Grow then
		// extends it with zeros unless KEEP_SIZE.
		if err := h.f.ZeroRange(int64(off), end); err != nil {
			return toErrno(err)
		}
		if !keepSize {
			return toErrno(h.f.Grow(end))
		}
		return 0
	}
	return syscall.EOPNOTSUPP
}
