// Package vault is a key-value store for media files in one SQLite file.
//
// Keys are byte strings. A key that is a valid relative path
// ("clips/2024/a.mp4") lives in a file system tree of inodes and directory
// entries, so that the same file can be mounted (package fs) with every
// key a file; any other key is kept whole in a side table and appears in
// the mount under /.kvault/keys/ by its SHA-256. Values are split into
// chunk rows, each with a CRC-32C that every read verifies, so values of
// any size stream in and out in constant memory, random reads and writes
// touch only their chunks, and damage is reported (ErrCorrupt) instead of
// returned as data.
//
// The API follows KohakuVault's: Put, Get, Delete, Exists, Len, Keys,
// Items, streamed PutReader and GetTo, a write-back cache (EnableCache,
// FlushCache, DisableCache), Optimize and Close, plus File for reads and
// writes at offsets, Rename for keys and directories, Stat and Sync.
//
// The methods come in two sets. The dict API above is the library's.
// The inode-level methods (GetInode, Lookup, ReadDir, CreateFile, Mkdir,
// RenameEntry, SetAttr, the xattr methods, ...) are the native vault's
// implementation of store.FS, the interface the mount is built on; reach
// them through FS(), which serves any store the file holds.
//
// KohakuVault's own files: Open recognises a KohakuVault table in the file
// (package kohaku) and serves the same dict API from it, in KohakuVault's
// format, so that both libraries can use the file at once; FS() is then
// the table seen as a file system, and what a whole-BLOB value cannot be
// (OpenFile, the inode-level methods) is ErrNotSupported. A file with
// tables of another program is refused unless Options.Init. See Open.
//
// Without the cache, a write is committed when it returns: every reader
// in any process sees it, and a crash of this process loses nothing. It is
// durable against power loss once Sync (or File.Sync) returns.
//
// # Concurrency
//
// Several processes (mounts, library users, the CLI) may read and write
// one file at once. Writes to an open file are held in memory as the byte
// ranges that were written; a commit (Flush, Sync, Close, fsync(2) or
// close(2) in a mount) merges exactly those ranges onto the chunks as
// stored at commit time, and an O_APPEND write commits at once at the end
// of the file as stored then. So bytes written by one writer and not
// overwritten by another are never lost; where two writers wrote the
// same bytes, the later commit wins.
//
// Locking rules, which every change must keep (they are what makes a hang
// impossible):
//
//   - No lock is held while waiting for SQL, a pooled connection, I/O or
//     another lock, with one exception per kind of writer: a lock that
//     exists to order write transactions (an open inode's commitMu, the
//     cache's flushMu) is held while waiting for the single writer
//     connection, and nothing that holds a connection ever takes such a
//     lock.
//   - No lock is taken while rows are open: listings copy their rows out
//     and close them before merging in-memory state.
//   - Nothing in memory changes before its transaction commits; what a
//     failed transaction took out of memory is put back.
package vault
