package vault

import (
	"github.com/kohakuvault/kvaultfs/store"

	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// FormatVersion is the version of the file format this package creates.
// Opening a vault of a newer version fails and changes nothing.
//
// Format 2 (this one) differs from format 1 only in the chunk checksum:
// it covers the chunk's inode, index and length as well as its data
// (chunkCRC), so a chunk swapped or moved with its CRC is caught. A
// format-1 vault is not migrated: it is read and written in format 1, its
// checksums computed the old way, and every read also checks each
// chunk's length against its row and the inode's chunk size, and its end
// against the file's size (checkChunk), which catches a chunk of another
// length; what format 1 cannot catch is two chunks of equal length
// swapped with their CRCs. Migrating would mean rewriting every chunk
// row, because SQLite rewrites a whole row, blob included, to change one
// column: a full read and write of the file (twice, with WAL) at open,
// hours for a vault of terabytes, and a file that older kvaultfs could
// no longer open. A vault created by this version is format 2.
const FormatVersion = 2

// formatOf returns the format a vault's chunks are written in: its
// recorded version, or this package's for a vault being created.
func formatOf(st fileState) int64 {
	if st.version == 0 {
		return FormatVersion
	}
	return st.version
}

// Reserved inode numbers, created with the vault and never removed.
const (
	RootIno           = store.RootIno // the root directory
	reservedIno int64 = 2             // /.kvault
	keysIno     int64 = 3             // /.kvault/keys: binary keys, named by hash
)

// schema is format version 2 (the tables are those of format 1). Table names carry the Table option as a
// prefix ({t}). Every statement is idempotent so that a half-created
// schema (a crash during creation) is completed on the next open.
//
//   - inodes: one row per file, directory, symlink or special file. Times
//     are nanoseconds since the epoch. generation counts changes to the
//     data, so a reader spanning transactions, or a mount caching pages,
//     notices an in-place rewrite even when size and mtime are unchanged.
//     chunk_size is the size the file's data was split with. Ids are
//     AUTOINCREMENT, so never reused.
//   - dentries: (parent, name) -> child. id is the directory-listing
//     cookie, stable while entries around it come and go.
//   - chunks: the file data, one row per chunk of chunk_size bytes; data
//     holds len bytes with CRC-32C crc (over inode, idx, len and data
//     since format 2; see chunkCRC). A missing row is a hole. The blob
//     is the last column so len and crc are read without touching it.
//   - binkeys: keys that are not paths, stored whole, and the name of their
//     entry in the keys directory (the hex SHA-256 of the key).
//   - sessions, open: processes that hold files open, so a file unlinked
//     while open keeps its data until the last close in any process.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS {t}_meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS {t}_inodes (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		kind INTEGER NOT NULL,
		mode INTEGER NOT NULL,
		uid INTEGER NOT NULL,
		gid INTEGER NOT NULL,
		nlink INTEGER NOT NULL,
		size INTEGER NOT NULL,
		atime INTEGER NOT NULL,
		mtime INTEGER NOT NULL,
		ctime INTEGER NOT NULL,
		generation INTEGER NOT NULL,
		chunk_size INTEGER NOT NULL,
		rdev INTEGER NOT NULL DEFAULT 0,
		target BLOB)`,
	`CREATE INDEX IF NOT EXISTS {t}_inodes_orphans ON {t}_inodes(id) WHERE nlink = 0`,
	`CREATE TABLE IF NOT EXISTS {t}_dentries (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		parent INTEGER NOT NULL,
		name TEXT NOT NULL,
		child INTEGER NOT NULL,
		UNIQUE (parent, name))`,
	`CREATE INDEX IF NOT EXISTS {t}_dentries_listing ON {t}_dentries(parent, id)`,
	`CREATE INDEX IF NOT EXISTS {t}_dentries_child ON {t}_dentries(child)`,
	`CREATE TABLE IF NOT EXISTS {t}_chunks (
		inode INTEGER NOT NULL,
		idx INTEGER NOT NULL,
		len INTEGER NOT NULL,
		crc INTEGER NOT NULL,
		data BLOB NOT NULL,
		PRIMARY KEY (inode, idx))`,
	`CREATE TABLE IF NOT EXISTS {t}_xattrs (
		inode INTEGER NOT NULL,
		name TEXT NOT NULL,
		value BLOB NOT NULL,
		PRIMARY KEY (inode, name)) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS {t}_binkeys (key BLOB PRIMARY KEY, name TEXT NOT NULL UNIQUE)`,
	`CREATE TABLE IF NOT EXISTS {t}_sessions (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		pid INTEGER NOT NULL,
		start_ticks INTEGER NOT NULL,
		boot_id TEXT NOT NULL,
		host TEXT NOT NULL,
		started INTEGER NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS {t}_open (
		session INTEGER NOT NULL,
		inode INTEGER NOT NULL,
		PRIMARY KEY (session, inode)) WITHOUT ROWID`,
	`CREATE INDEX IF NOT EXISTS {t}_open_inode ON {t}_open(inode)`,
	// The reserved inodes: root, /.kvault and /.kvault/keys.
	`INSERT OR IGNORE INTO {t}_inodes (id, kind, mode, uid, gid, nlink, size, atime, mtime, ctime, generation, chunk_size)
		VALUES (1, 2, 493, 0, 0, 3, 0, :now, :now, :now, 1, 0),
		       (2, 2, 365, 0, 0, 3, 0, :now, :now, :now, 1, 0),
		       (3, 2, 493, 0, 0, 2, 0, :now, :now, :now, 1, 0)`,
	`INSERT OR IGNORE INTO {t}_dentries (parent, name, child) VALUES (1, '.kvault', 2), (2, 'keys', 3)`,
	`INSERT OR IGNORE INTO {t}_meta (key, value) VALUES ('format', :version)`,
}

// tableSQL substitutes the table prefix into a statement.
func tableSQL(table, s string) string { return strings.ReplaceAll(s, "{t}", table) }

// fileState is what Open learns about the file before touching it.
type fileState struct {
	isEmpty  bool // no tables at all: a new database
	hasVault bool // our meta table exists
	version  int64
	pageSize int
	wal      bool
}

// inspect reads the file's header state with read-only queries. A file
// that is not SQLite fails here, before anything is written.
func inspect(db *sql.DB, table string) (fileState, error) {
	var st fileState
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema`).Scan(&n); err != nil {
		return st, err
	}
	st.isEmpty = n == 0
	if err := db.QueryRow(`PRAGMA page_size`).Scan(&st.pageSize); err != nil {
		return st, err
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		return st, err
	}
	st.wal = strings.EqualFold(mode, "wal")
	err := db.QueryRow(tableSQL(table, `SELECT value FROM {t}_meta WHERE key = 'format'`)).Scan(&st.version)
	switch {
	case err == nil:
		st.hasVault = true
	case errors.Is(err, sql.ErrNoRows):
		st.hasVault = true // a meta table without a version: a crash during creation
	case strings.Contains(err.Error(), "no such table"):
	case strings.Contains(err.Error(), "no such column"):
		// Another program's table of the same name: never touched.
		return st, fmt.Errorf("%w: not a vault: the file has a table %s_meta without a vault's columns (another program's?); a vault of another name can share the file (option Table, --table)", ErrInvalidArgument, table)
	default:
		return st, err
	}
	return st, nil
}

// create sets the creation-only properties of a new, empty database
// (page size, incremental auto-vacuum, journal mode) and then creates or
// completes the schema. Pragmas that only apply to an empty file are
// skipped for a file that already has other tables, which are never
// touched.
func create(db *sql.DB, table string, st fileState, o *Options, now int64) error {
	if st.isEmpty {
		pageSize := o.PageSize
		if pageSize == 0 {
			pageSize = DefaultPageSize
		}
		journal := "DELETE"
		if o.EnableWAL {
			journal = "WAL"
		}
		for _, p := range []string{
			fmt.Sprintf("PRAGMA page_size = %d", pageSize),
			"PRAGMA auto_vacuum = INCREMENTAL",
			"PRAGMA journal_mode = " + journal,
		} {
			if _, err := db.Exec(p); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	t, err := db.Begin()
	if err != nil {
		return err
	}
	defer t.Rollback()
	for _, s := range schema {
		if _, err := t.Exec(tableSQL(table, s), sql.Named("now", now), sql.Named("version", FormatVersion)); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
	}
	return t.Commit()
}
