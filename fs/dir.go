package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/kohakuvault/kvaultfs/store"
)

// readdirBatch is how many entries a directory handle reads per query.
const readdirBatch = 256

// Directory offsets. "." and ".." come first; every other entry's
// offset is its stable cookie in the vault plus firstCookie, so entries
// removed during a listing never make it skip others, and seekdir to
// any offset telldir returned resumes exactly there.
const (
	offDot      = 1
	offDotDot   = 2
	firstCookie = 2
)

// dirHandle is an open directory, listed in bounded batches.
type dirHandle struct {
	n     *node
	mu    sync.Mutex
	pos   uint64 // offset of the last entry returned
	batch []store.DirEntry
	done  bool
	// writes is FS.xattrWrites when the batch was read: if it changed,
	// the batch's NoXattrs may be stale and is not passed on.
	writes int64
	last   *store.DirEntry // the entry Readdirent returned last, for Lookup
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileLookuper     = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
)

// OpendirHandle opens a directory for listing.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	in, err := n.fsys.v.GetInode(n.ino())
	if err != nil {
		return nil, 0, toErrno(err)
	}
	if in.Kind != store.KindDir {
		return nil, 0, syscall.ENOTDIR
	}
	return &dirHandle{n: n}, 0, 0
}

// Readdirent returns the next entry, or nil at the end.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.pos {
	case 0:
		d.pos = offDot
		return &fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: uint64(d.n.ino()), Off: offDot}, 0
	case offDot:
		d.pos = offDotDot
		ino := uint64(d.n.ino())
		if _, parent := d.n.Parent(); parent != nil {
			ino = parent.StableAttr().Ino
		}
		return &fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: ino, Off: offDotDot}, 0
	}
	if len(d.batch) == 0 && !d.done {
		d.writes = d.n.fsys.xattrWrites.Load()
		entries, err := d.n.fsys.v.ReadDir(d.n.ino(), int64(d.pos-firstCookie), readdirBatch)
		if err != nil {
			return nil, toErrno(err)
		}
		d.batch, d.done = entries, len(entries) < readdirBatch
	}
	if len(d.batch) == 0 {
		return nil, 0
	}
	e := &d.batch[0]
	d.batch = d.batch[1:]
	d.pos = uint64(e.Cookie) + firstCookie
	d.last = e
	return &fuse.DirEntry{Name: e.Name, Mode: typeBits(e.Inode.Kind), Ino: uint64(e.Inode.ID), Off: d.pos}, 0
}

// Seekdir continues the listing after the entry at offset off.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pos, d.batch, d.done, d.last = off, nil, false, nil
	return 0
}

// Lookup answers READDIRPLUS for the name Readdirent just produced,
// from the inode read with the listing: no query per entry.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d.mu.Lock()
	e, writes := d.last, d.writes
	d.mu.Unlock()
	if e == nil || e.Name != name {
		return d.n.Lookup(ctx, name, out)
	}
	in := e.Inode
	child := d.n.newChild(ctx, &in, out)
	if cn, ok := child.Operations().(*node); ok && e.NoXattrs && d.n.fsys.xattrWrites.Load() == writes {
		// ls -l asks every file for security.selinux right after the
		// listing: answer from it, for as long as the attributes hold.
		cn.noXattrsUntil.Store(time.Now().Add(d.n.fsys.opts.AttrTimeout).UnixNano())
	}
	return child, 0
}

// Fsyncdir makes committed directory changes durable.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return toErrno(d.n.fsys.v.Sync())
}
