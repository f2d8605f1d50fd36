package fs

import (
	"context"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/kohakuvault/kvaultfs/store"
)

var (
	_ gofs.NodeGetxattrer    = (*node)(nil)
	_ gofs.NodeSetxattrer    = (*node)(nil)
	_ gofs.NodeRemovexattrer = (*node)(nil)
	_ gofs.NodeListxattrer   = (*node)(nil)
)

// unsupportedXattr reports names whose meaning the kernel would have to
// enforce (system.* holds POSIX ACLs): storing them unenforced would
// mislead, so they are refused and tools such as cp -a skip them.
func unsupportedXattr(name string) bool { return strings.HasPrefix(name, "system.") }

// Getxattr returns an attribute's value, or its size when dest is empty.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if unsupportedXattr(attr) {
		return 0, syscall.ENODATA
	}
	now := time.Now().UnixNano()
	if now < n.noXattrsUntil.Load() {
		return 0, syscall.ENODATA
	}
	if until, ok := n.absentXattrs.Load(attr); ok && now < until.(int64) {
		return 0, syscall.ENODATA
	}
	val, err := n.fsys.v.GetXattr(n.ino(), attr)
	if err != nil {
		errno := xattrErrno(err)
		if errno == syscall.ENODATA {
			// The kernel asks for security.capability and
			// security.selinux of a file again and again (writes,
			// chown, ls -l): remember the answer for the attribute
			// timeout, as the kernel remembers attributes.
			n.absentXattrs.Store(attr, time.Now().Add(n.fsys.opts.AttrTimeout).UnixNano())
		}
		return 0, errno
	}
	if len(dest) == 0 {
		return uint32(len(val)), 0
	}
	if len(dest) < len(val) {
		return uint32(len(val)), syscall.ERANGE
	}
	return uint32(copy(dest, val)), 0
}

// Setxattr sets an attribute; flags are XATTR_CREATE and XATTR_REPLACE.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if unsupportedXattr(attr) {
		return syscall.EOPNOTSUPP
	}
	if len(attr) > 255 {
		return syscall.ERANGE
	}
	if len(data) > 64<<10 {
		return syscall.E2BIG
	}
	err := n.fsys.v.SetXattr(n.ino(), attr, data, store.XattrFlags(flags))
	// Forget "absent" only now that the attribute is stored: a listing or
	// lookup that read the database before cannot have it, and one that
	// finishes after this sees xattrWrites changed and records nothing.
	n.fsys.xattrWrites.Add(1)
	n.noXattrsUntil.Store(0)
	n.absentXattrs.Delete(attr)
	return xattrErrno(err)
}

// Removexattr deletes an attribute.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if unsupportedXattr(attr) {
		return syscall.EOPNOTSUPP
	}
	return xattrErrno(n.fsys.v.RemoveXattr(n.ino(), attr))
}

// Listxattr returns the NUL-separated attribute names, or their total
// size when dest is empty.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.fsys.v.ListXattr(n.ino())
	if err != nil {
		return 0, toErrno(err)
	}
	size := 0
	for _, name := range names {
		size += len(name) + 1
	}
	if len(dest) == 0 {
		return uint32(size), 0
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, name := range names {
		off += copy(dest[off:], name)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

// xattrErrno is toErrno with "no such attribute" as ENODATA.
func xattrErrno(err error) syscall.Errno {
	if e := toErrno(err); e != syscall.ENOENT {
		return e
	}
	return syscall.ENODATA
}
