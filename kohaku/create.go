package kohaku

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/kohakuvault/kvaultfs/store"
)

// The statements KohakuVault v0.7+ runs when KVault(path, table=t) opens a
// new file (spec sections 2.1 and 5.1), byte for byte: SQLite keeps a
// CREATE statement's text, whitespace included, in sqlite_schema, and a
// file made from reformatted text would not be the file KohakuVault makes.
const (
	newFilePageSize = "PRAGMA page_size=32768;"
	newFileWAL      = "PRAGMA journal_mode='WAL'"
	// newFileMeta is MetaTable::ensure_table (src/kvault-rust/common/meta.rs).
	newFileMeta = "CREATE TABLE IF NOT EXISTS kohakuvault_meta (\n" +
		"                key TEXT PRIMARY KEY,\n" +
		"                value TEXT NOT NULL\n" +
		"            );"
	// newFileKV is the B/C table (src/kvault-rust/kv/mod.rs), {t} replaced
	// by the table name unquoted, as KohakuVault's format! does.
	newFileKV = "\n" +
		"            CREATE TABLE IF NOT EXISTS {t} (\n" +
		"                key   BLOB PRIMARY KEY NOT NULL,\n" +
		"                value BLOB NOT NULL\n" +
		"            );\n" +
		"            "
)

// newFileTable is the table name KohakuVault uses when none is given.
const newFileTable = "kv"

// identRE is what KohakuVault can use as a table name: it substitutes the
// name into its statements unquoted, so only a plain identifier works.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// Create makes a new KohakuVault file at path holding one empty KV table
// named table ("" means "kv", KohakuVault's default), exactly as KVault(path, table=table)
// of KohakuVault v0.8 creates it: page size 32768 set before the first
// table, journal mode WAL, kohakuvault_meta (empty) and then the table, both
// with KohakuVault's own statement text, so the file is format C.
//
// The file must not exist, or be empty (0 bytes; KohakuVault itself would
// leave SQLite's 4096-byte pages on such a file, Create treats it as new).
// Its directory must exist. If creation fails, a file Create made is
// removed again.
func Create(path, table string) (err error) {
	if table == "" {
		table = newFileTable
	}
	if !identRE.MatchString(table) || strings.HasPrefix(strings.ToLower(table), "sqlite_") ||
		strings.EqualFold(table, "kohakuvault_meta") {
		return fmt.Errorf("create %s: %w: table name %q: KohakuVault needs a plain SQL identifier (a letter or _, then letters, digits or _, at most 64), not sqlite_* or kohakuvault_meta",
			path, store.ErrInvalidArgument, table)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("create %s: %w", path, err)
	case fi.IsDir():
		return fmt.Errorf("create %s: %w: is a directory", path, store.ErrInvalidArgument)
	case fi.Size() != 0:
		return fmt.Errorf("create %s: %w: the file exists and is not empty", path, store.ErrInvalidArgument)
	}
	existed := err == nil
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	// mode=rwc creates the file; the file: URI keeps '?' and '#' in the
	// path from being read as parameters.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(abs)
	db, err := sql.Open("sqlite3", "file:"+esc+"?mode=rwc&_busy_timeout=5000")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // the page size is a property of the connection that makes the first table
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("create %s: %w", path, cerr)
		}
		if err != nil && !existed {
			for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
				os.Remove(abs + suffix)
			}
		}
	}()
	if _, err := db.Exec(newFilePageSize); err != nil {
		return fmt.Errorf("create %s: page size: %w", path, err)
	}
	var mode string
	if err := db.QueryRow(newFileWAL).Scan(&mode); err != nil {
		return fmt.Errorf("create %s: journal mode: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("create %s: journal mode is %s, not WAL (a file system without shared memory?)", path, mode)
	}
	// Two autocommitted statements, as KohakuVault runs them: the meta
	// table first (MetaTable::ensure_table), then the KV table.
	if _, err := db.Exec(newFileMeta); err != nil {
		return fmt.Errorf("create %s: kohakuvault_meta: %w", path, err)
	}
	if _, err := db.Exec(strings.ReplaceAll(newFileKV, "{t}", table)); err != nil {
		return fmt.Errorf("create %s: table %s: %w", path, table, err)
	}
	return nil
}
