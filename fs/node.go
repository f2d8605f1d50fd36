package fs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/kohakuvault/kvaultfs/store"
)

// node is one inode of the vault in the kernel's view: a file,
// directory, symlink or special file. It holds no metadata of its own;
// every operation asks the vault, so the mount always agrees with the
// database (and with other processes writing it).
type node struct {
	gofs.Inode
	fsys *FS

	// cacheGen is the data generation that the kernel's page cache holds
	// for this file, if any: an open that finds the same generation keeps
	// the cache, and a different one (another process rewrote the file)
	// drops it.
	cacheGen atomic.Int64
	// writers counts handles open for writing in this mount; while there
	// are any, generation changes are our own and need no invalidation.
	writers atomic.Int32
	// absentXattrs remembers, until a deadline (ns), attribute names
	// that the vault reported missing.
	absentXattrs sync.Map
	// noXattrsUntil is a deadline (ns) before which the node is known to
	// have no extended attributes at all: a directory listing said so.
	noXattrsUntil atomic.Int64
}

var (
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
	_ gofs.NodeLinker         = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeRmdirer        = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeStatfser       = (*node)(nil)
	_ gofs.NodeOnForgetter    = (*node)(nil)
)

// ino is the vault inode number, which is also the FUSE inode number.
func (n *node) ino() int64 { return int64(n.StableAttr().Ino) }

// caller returns the uid and gid of the process making the request.
func caller(ctx context.Context) (uint32, uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

// newChild returns the kernel inode for a vault inode, reusing the node
// if the inode is already known (another hard link, a repeated lookup),
// and fills out the entry reply.
func (n *node) newChild(ctx context.Context, in *store.Inode, out *fuse.EntryOut) *gofs.Inode {
	fillAttr(in, &out.Attr)
	child := n.NewInode(ctx, &node{fsys: n.fsys}, gofs.StableAttr{Mode: typeBits(in.Kind), Ino: uint64(in.ID), Gen: 1})
	if cn, ok := child.Operations().(*node); ok {
		cn.noticeGeneration(in)
	}
	return child
}

// newFreshChild is newChild for an inode this call created: it has no
// extended attributes yet, which answers the getxattr of
// security.capability that the kernel sends before every write to it.
func (n *node) newFreshChild(ctx context.Context, in *store.Inode, out *fuse.EntryOut) *gofs.Inode {
	child := n.newChild(ctx, in, out)
	if cn, ok := child.Operations().(*node); ok {
		cn.noXattrsUntil.Store(time.Now().Add(n.fsys.opts.AttrTimeout).UnixNano())
	}
	return child
}

// noticeGeneration compares the generation the vault reports with the
// one the kernel's page cache holds and drops the cache if another
// process changed the file, even with the same size and mtime.
func (n *node) noticeGeneration(in *store.Inode) {
	if in.Kind != store.KindFile {
		return
	}
	old := n.cacheGen.Load()
	if old == 0 || old == in.Generation || n.writers.Load() > 0 {
		return
	}
	if n.cacheGen.CompareAndSwap(old, in.Generation) {
		n.fsys.invalidate(n)
	}
}

// Getattr reports the inode's attributes, with writes not yet committed.
func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	in, err := n.fsys.v.GetInode(n.ino())
	if err != nil {
		return toErrno(err)
	}
	n.noticeGeneration(&in)
	fillAttr(&in, &out.Attr)
	return 0
}

// Setattr implements chmod, chown, truncate and utimensat.
func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var a store.SetAttr
	if m, ok := in.GetMode(); ok {
		m &= 07777
		a.Mode = &m
	}
	if uid, ok := in.GetUID(); ok {
		a.UID = &uid
	}
	if gid, ok := in.GetGID(); ok {
		a.GID = &gid
	}
	if sz, ok := in.GetSize(); ok {
		s := int64(sz)
		a.Size = &s
	}
	if t, ok := in.GetATime(); ok {
		ns := t.UnixNano()
		a.Atime = &ns
	}
	if t, ok := in.GetMTime(); ok {
		ns := t.UnixNano()
		a.Mtime = &ns
	}
	if err := n.killPrivileges(ctx, in, &a); err != nil {
		return toErrno(err)
	}
	res, err := n.fsys.setAttr(n.ino(), a)
	if err != nil {
		return toErrno(err)
	}
	if a.Size != nil {
		n.cacheGen.Store(res.Generation) // the kernel truncated its cache itself
	}
	fillAttr(&res, &out.Attr)
	return 0
}

// nameErrno refuses a name longer than the vault allows with
// ENAMETOOLONG before anything is looked up, as local file systems do:
// a lookup that answered ENOENT would make chmod, unlink, rename and the
// rest report a missing file instead of an impossible name. The kernel
// passes names of up to 1024 bytes (FUSE_NAME_MAX) to the daemon.
func nameErrno(names ...string) syscall.Errno {
	for _, name := range names {
		if len(name) > store.MaxNameLen {
			return syscall.ENAMETOOLONG
		}
	}
	return 0
}

// Lookup finds a child by name.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := nameErrno(name); errno != 0 {
		return nil, errno
	}
	in, err := n.fsys.v.Lookup(n.ino(), name)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.newChild(ctx, &in, out), 0
}

// Mkdir creates a directory owned by the caller.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := nameErrno(name); errno != 0 {
		return nil, errno
	}
	uid, gid := caller(ctx)
	in, err := n.fsys.v.Mkdir(n.ino(), name, mode&07777, uid, gid)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.newFreshChild(ctx, &in, out), 0
}

// Mknod creates a regular file, FIFO, socket or device node.
func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := nameErrno(name); errno != 0 {
		return nil, errno
	}
	kind, ok := kindOf(mode)
	if !ok {
		return nil, syscall.EINVAL
	}
	uid, gid := caller(ctx)
	in, err := n.fsys.v.Mknod(n.ino(), name, kind, mode&07777, uid, gid, dev)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.newFreshChild(ctx, &in, out), 0
}

// Create makes a regular file and opens it, in one transaction. If the
// name exists (made by another process since the kernel's last lookup)
// and O_EXCL is not set, the existing file is opened, as open(2) would.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if errno := nameErrno(name); errno != 0 {
		return nil, nil, 0, errno
	}
	uid, gid := caller(ctx)
	f, in, err := n.fsys.v.CreateFile(n.ino(), name, mode&07777, uid, gid, openFlags(flags))
	if errors.Is(err, store.ErrExists) && flags&syscall.O_EXCL == 0 {
		if in, err = n.fsys.v.Lookup(n.ino(), name); err != nil {
			return nil, nil, 0, toErrno(err)
		}
		child := n.newChild(ctx, &in, out)
		fh, fuseFlags, errno := child.Operations().(*node).open(flags)
		if errno == 0 && flags&syscall.O_TRUNC != 0 {
			errno = toErrno(fh.(*handle).f.Truncate(0))
		}
		return child, fh, fuseFlags, errno
	}
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	child := n.newFreshChild(ctx, &in, out)
	return child, child.Operations().(*node).newHandle(f, flags), appendDirectIO(flags), 0
}

// Symlink creates a symbolic link owned by the caller.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := nameErrno(name); errno != 0 {
		return nil, errno
	}
	uid, gid := caller(ctx)
	in, err := n.fsys.v.Symlink(n.ino(), name, target, uid, gid)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.newFreshChild(ctx, &in, out), 0
}

// Readlink returns a symlink's target.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	in, err := n.fsys.v.GetInode(n.ino())
	if err != nil {
		return nil, toErrno(err)
	}
	if in.Kind != store.KindSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(in.Target), 0
}

// Link adds a hard link to target.
func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if errno := nameErrno(name); errno != 0 {
		return nil, errno
	}
	in, err := n.fsys.v.Link(int64(target.EmbeddedInode().StableAttr().Ino), n.ino(), name)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.newChild(ctx, &in, out), 0
}

// Unlink removes a name; an open file stays readable until closed.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := nameErrno(name); errno != 0 {
		return errno
	}
	return toErrno(n.fsys.v.Unlink(n.ino(), name))
}

// Rmdir removes an empty directory.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := nameErrno(name); errno != 0 {
		return errno
	}
	return toErrno(n.fsys.v.Rmdir(n.ino(), name))
}

// Rename moves an entry atomically; RENAME_NOREPLACE and RENAME_EXCHANGE
// are supported, RENAME_WHITEOUT is not.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	const supported = uint32(store.RenameNoReplace | store.RenameExchange)
	if flags&^supported != 0 {
		return syscall.EINVAL
	}
	if errno := nameErrno(name, newName); errno != 0 {
		return errno
	}
	dst := int64(newParent.EmbeddedInode().StableAttr().Ino)
	return toErrno(n.fsys.v.RenameEntry(n.ino(), name, dst, newName, store.RenameFlags(flags)))
}

// Open opens a regular file.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return n.open(flags)
}

// Statfs reports the database's size and the free space on its disk.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.fsys.v.StatFS()
	if err != nil {
		return toErrno(err)
	}
	const bsize = 4096
	out.Bsize, out.Frsize = bsize, bsize
	out.Blocks = uint64(st.DBBytes+st.DiskFree) / bsize
	out.Bfree = uint64(st.FreeBytes) / bsize
	out.Bavail = out.Bfree
	// Inodes cost a row, not a preallocated table: report what the free
	// space could hold at one small file per 4 KiB.
	out.Files = uint64(st.Inodes) + out.Bfree
	out.Ffree = out.Bfree
	out.NameLen = st.NameMax
	return 0
}

// OnForget stops watching a file the kernel no longer knows.
func (n *node) OnForget() { n.fsys.forget(n) }
