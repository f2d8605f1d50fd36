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
// Without the cache, a write is committed when it returns: every reader
// in any process sees it, and a crash of this process loses nothing. It is
// durable against power loss once Sync (or File.Sync) returns.
package vault
