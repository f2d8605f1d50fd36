package store

// DirEntry is one entry of a directory listing, with the inode it names.
type DirEntry struct {
	Name   string
	Inode  Inode // the child, as Lookup would return it
	Cookie int64 // pass as ReadDir's after to continue after this entry
	// NoXattrs reports that the child had no extended attributes when
	// it was listed, so that a mount can answer the getxattr calls of
	// ls -l (security.selinux, for every file) without a query each.
	NoXattrs bool
}

// RenameFlags are rename(2)'s flags.
type RenameFlags uint32

// Flags of RenameEntry, with the values renameat2(2) gives them.
const (
	RenameNoReplace RenameFlags = 1 // fail with ErrExists if the target exists
	RenameExchange  RenameFlags = 2 // swap source and target atomically
)

// SetAttr says which attributes SetAttr changes: nil fields stay.
type SetAttr struct {
	Mode  *uint32 // permission bits (07777)
	UID   *uint32
	GID   *uint32
	Size  *int64
	Atime *int64 // ns since the epoch
	Mtime *int64
	// DropPrivileges clears setuid, and setgid if the group may execute,
	// of anything but a directory (when Mode is nil), as chown(2) and a
	// truncate by an unprivileged user do.
	DropPrivileges bool
}

// XattrFlags are setxattr(2)'s flags.
type XattrFlags uint32

// Flags of SetXattr.
const (
	XattrCreate  XattrFlags = 1 // fail with ErrExists if the attribute exists
	XattrReplace XattrFlags = 2 // fail with ErrNotFound if it does not
)

// FSStats describes the space of the vault, for statfs(2). DBBytes plus
// DiskFree is the size of the vault's file system, FreeBytes what is
// free in it: DBBytes-(FreeBytes-DiskFree) is what the vault's data
// takes, and space released inside the file (free pages, cut from the
// file in the background) moves to DiskFree without changing FreeBytes.
// The -wal file is left out of both, like any other file on the disk: it
// comes and goes with checkpoints, not with what the vault holds.
type FSStats struct {
	DBBytes   int64  // bytes of the database file
	FreeBytes int64  // free pages inside the file, its tail past the last page, and DiskFree
	DiskFree  int64  // free space on the database's file system for this user
	Inodes    int64  // inodes in use
	PageSize  int    // the database page size
	NameMax   uint32 // longest name
}
