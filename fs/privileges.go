package fs

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/kohakuvault/kvaultfs/store"
)

// testSetAttr, when a test sets it, replaces Vault.SetAttr, to make it
// fail.
var testSetAttr atomic.Pointer[func(ino int64, a store.SetAttr) (store.Inode, error)]

// setAttr is Vault.SetAttr, or what a test put in its place.
func (fsys *FS) setAttr(ino int64, a store.SetAttr) (store.Inode, error) {
	if f := testSetAttr.Load(); f != nil {
		return (*f)(ino, a)
	}
	return fsys.v.SetAttr(ino, a)
}

// capFSETID is the capability that lets a process keep set-group-ID on a
// file whose group it is not in (linux/capability.h).
const capFSETID = 4

// callerCreds is what the kernel's rules for clearing set-user-ID and
// set-group-ID look at: the caller's file-system ids, its other groups,
// and whether it holds CAP_FSETID.
type callerCreds struct {
	uid, gid   uint32
	groups     []uint32
	privileged bool
}

// credsOf returns the credentials of the process making the request,
// read from /proc (FUSE passes only the uid, gid and pid). Root counts
// as privileged without a look (it holds CAP_FSETID unless a container
// took it away): the first write of every file pays nothing for it. If
// the process is gone, its gid is its only group.
func credsOf(ctx context.Context) callerCreds {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Uid == 0 {
		return callerCreds{privileged: true}
	}
	cr := callerCreds{uid: c.Uid, gid: c.Gid}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil || c.Pid == 0 {
		return cr
	}
	for _, line := range strings.Split(string(status), "\n") {
		key, val, _ := strings.Cut(line, ":")
		switch key {
		case "Groups":
			for _, g := range strings.Fields(val) {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					cr.groups = append(cr.groups, uint32(n))
				}
			}
		case "CapEff":
			if caps, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64); err == nil {
				cr.privileged = caps&(1<<capFSETID) != 0
			}
		}
	}
	return cr
}

// inGroupOrPrivileged is the kernel's in_group_or_capable(CAP_FSETID).
func (c callerCreds) inGroupOrPrivileged(gid uint32) bool {
	if c.privileged || c.gid == gid {
		return true
	}
	for _, g := range c.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// withoutPrivileges returns mode as Linux leaves it after a chown, or a
// write or truncate by an unprivileged caller, of anything but a
// directory (setattr_should_drop_suidgid): set-user-ID goes; set-group-ID
// goes if the group may execute, or if the caller is neither in the
// file's group nor holds CAP_FSETID.
func withoutPrivileges(in *store.Inode, c callerCreds) uint32 {
	mode := in.Mode &^ syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&syscall.S_IXGRP != 0 || !c.inGroupOrPrivileged(in.GID)) {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// killPrivileges asks the vault to clear set-user-ID and set-group-ID
// where Linux does (withoutPrivileges): on chown of anything but a
// directory, and on a truncate the kernel marks (an unprivileged caller).
// With HANDLE_KILLPRIV_V2 negotiated the kernel leaves this to the file
// system, and in exchange stops asking for security.capability before
// every write.
//
// The common rule (set-user-ID, and set-group-ID of a group-executable
// file) is DropPrivileges, applied by the vault in the same statement as
// the chown. Only a caller outside the file's group without CAP_FSETID
// can lose more, which needs the file's mode and group: then the inode
// is read and the mode given explicitly.
func (n *node) killPrivileges(ctx context.Context, in *fuse.SetAttrIn, a *store.SetAttr) error {
	chown := a.UID != nil || a.GID != nil
	if a.Mode != nil || n.IsDir() || !(chown || in.Valid&fuse.FATTR_KILL_SUIDGID != 0) {
		return nil
	}
	a.DropPrivileges = true
	return n.killGroupPrivilege(ctx, a)
}

// killGroupPrivilege sets an explicit mode in a when the caller would
// also lose set-group-ID of a file its group may not execute. The read
// and the change are two steps: a chmod by another process in between
// can be overwritten, as with any read-modify-write of a mode.
func (n *node) killGroupPrivilege(ctx context.Context, a *store.SetAttr) error {
	c := credsOf(ctx)
	if c.privileged {
		return nil
	}
	cur, err := n.fsys.v.GetInode(n.ino())
	if err != nil {
		return err
	}
	if cur.Mode&(syscall.S_ISGID|syscall.S_IXGRP) != syscall.S_ISGID || c.inGroupOrPrivileged(cur.GID) {
		return nil
	}
	mode := withoutPrivileges(&cur, c)
	a.Mode = &mode
	return nil
}

// dropPrivileges clears set-user-ID and set-group-ID, as Linux does
// (withoutPrivileges), before the first write through the handle by a
// caller without CAP_FSETID (with HANDLE_KILLPRIV_V2 the kernel leaves
// this to us). The change waits with the file's data for its commit. If
// it fails, the write fails too: data written while the bit stays would
// let anyone who may write the file plant code that runs as its owner.
func (h *handle) dropPrivileges(ctx context.Context) error {
	if h.privChecked.Load() {
		return nil
	}
	c := credsOf(ctx)
	if !c.privileged {
		in, err := h.n.fsys.setAttr(h.n.ino(), store.SetAttr{DropPrivileges: true})
		if err != nil {
			return fmt.Errorf("clear set-user-ID before a write: %w", err)
		}
		if mode := withoutPrivileges(&in, c); mode != in.Mode {
			if _, err := h.n.fsys.setAttr(h.n.ino(), store.SetAttr{Mode: &mode}); err != nil {
				return fmt.Errorf("clear set-group-ID before a write: %w", err)
			}
		}
	}
	h.privChecked.Store(true)
	return nil
}
