// Package store is the seam between the mount and the command line above
// and the ways of keeping keys in SQLite below: the native kvaultfs vault
// (package vault) and KohakuVault's tables (package kohaku) both implement
// it. It holds what they share: the errors, the inode and directory-entry
// types, the mapping from keys to paths, and the interfaces FS and File.
//
// Imports point one way: cmd -> fs -> store, and vault and kohaku ->
// store. Nothing here imports a store.
package store

// FS is the file-system view of a store: inodes named by (parent inode,
// name), with the operations a POSIX mount needs. uid, gid and mode come
// from the caller, already masked by its umask. A store that cannot keep
// something (a KohakuVault table has no hard links, symlinks or extended
// attributes) returns an error that names why, wrapping ErrPermission or
// ErrNotSupported.
type FS interface {
	// GetInode returns inode ino.
	GetInode(ino int64) (Inode, error)
	// Lookup returns the inode that name in directory parent names.
	Lookup(parent int64, name string) (Inode, error)
	// ReadDir lists up to limit entries of dir after the entry whose
	// Cookie is after (0: from the start).
	ReadDir(dir, after int64, limit int) ([]DirEntry, error)
	// OpenInode opens file ino with os.OpenFile's flags (O_RDONLY,
	// O_WRONLY, O_RDWR, O_APPEND, O_TRUNC).
	OpenInode(ino int64, flag int) (File, error)
	// CreateFile makes a regular file and opens it, in one transaction;
	// ErrExists if name exists.
	CreateFile(parent int64, name string, mode, uid, gid uint32, flag int) (File, Inode, error)
	// Mkdir makes a directory.
	Mkdir(parent int64, name string, mode, uid, gid uint32) (Inode, error)
	// Mknod makes a FIFO, socket or device node.
	Mknod(parent int64, name string, kind Kind, mode, uid, gid, rdev uint32) (Inode, error)
	// Symlink makes a symbolic link to target.
	Symlink(parent int64, name, target string, uid, gid uint32) (Inode, error)
	// Link gives inode ino another name.
	Link(ino, parent int64, name string) (Inode, error)
	// Unlink removes a name that is not a directory.
	Unlink(parent int64, name string) error
	// Rmdir removes an empty directory.
	Rmdir(parent int64, name string) error
	// RenameEntry moves an entry atomically, as rename(2).
	RenameEntry(parent int64, name string, newParent int64, newName string, flags RenameFlags) error
	// SetAttr changes attributes, as chmod, chown, truncate and
	// utimensat do, and returns the result.
	SetAttr(ino int64, a SetAttr) (Inode, error)
	// GetXattr returns an extended attribute's value, or ErrNotFound.
	GetXattr(ino int64, name string) ([]byte, error)
	// SetXattr sets an extended attribute.
	SetXattr(ino int64, name string, value []byte, flags XattrFlags) error
	// ListXattr lists the names of an inode's extended attributes.
	ListXattr(ino int64) ([]string, error)
	// RemoveXattr removes an extended attribute, or returns ErrNotFound.
	RemoveXattr(ino int64, name string) error
	// StatFS reports the store's size and the room left.
	StatFS() (FSStats, error)
	// Sync makes every committed change durable.
	Sync() error
	// DataVersion changes whenever another connection commits a change
	// (SQLite's PRAGMA data_version): cheap polling for changes.
	DataVersion() (int64, error)
	// Generations returns the data generation of each inode of ids that
	// still exists: a changed generation means changed data.
	Generations(ids []int64) (map[int64]int64, error)
	// ReadOnly reports whether writes are refused.
	ReadOnly() bool
}

// File is a file opened through FS. Writes may be held in memory until
// Flush, Sync or Close commits them.
type File interface {
	// ReadAt reads at off, as io.ReaderAt.
	ReadAt(p []byte, off int64) (int, error)
	// WriteAt writes at off, as io.WriterAt.
	WriteAt(p []byte, off int64) (int, error)
	// Append writes p at the end of the file as stored when it commits,
	// and returns where it went.
	Append(p []byte) (int, int64, error)
	// Truncate sets the size.
	Truncate(size int64) error
	// Grow makes the size at least size (fallocate without KEEP_SIZE).
	Grow(size int64) error
	// ZeroRange makes [off, end) read as zeros without changing the size.
	ZeroRange(off, end int64) error
	// SeekData returns the first offset at or after off that holds data
	// (hole false) or a hole (hole true), as lseek's SEEK_DATA and
	// SEEK_HOLE.
	SeekData(off int64, hole bool) (int64, error)
	// Size returns the size, including writes not yet committed.
	Size() int64
	// Stat returns the inode, including writes not yet committed.
	Stat() (Inode, error)
	// Flush commits writes; its error is what close(2) reports.
	Flush() error
	// Sync commits writes and makes them durable.
	Sync() error
	// Close commits writes and releases the file.
	Close() error
	// Generation returns the data generation as this file last saw it.
	Generation() int64
}
