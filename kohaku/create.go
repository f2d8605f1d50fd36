package kohaku

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

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
// The file is created with O_EXCL, so two programs creating one path never
// both believe they made it. An existing path is refused (store.ErrExists,
// also store.ErrInvalidArgument), a dangling symlink included, except a
// regular file of 0 bytes, which is made a new vault (KohakuVault itself
// would leave SQLite's 4096-byte pages on such a file); if another program
// fills that file meanwhile, Create refuses it rather than add a table.
// The directory must exist. If creation fails, Create removes the file and
// its -wal, -shm and -journal only if it created them; never a file it
// found.
func Create(path, table string) (err error) {
	if table == "" {
		table = newFileTable
	}
	if !identRE.MatchString(table) || strings.HasPrefix(strings.ToLower(table), "sqlite_") ||
		strings.EqualFold(table, "kohakuvault_meta") {
		return store.Wrap("create", path, fmt.Errorf("%w: table name %q: KohakuVault needs a plain SQL identifier (a letter or _, then letters, digits or _, at most 64), not sqlite_* or kohakuvault_meta",
			store.ErrInvalidArgument, table))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return store.Wrap("create", path, err)
	}
	f, made, err := createExcl(abs)
	if err != nil {
		return store.Wrap("create", path, err)
	}
	defer f.Close() // after the removal below: releases the flock last
	defer func() {
		if err != nil {
			for _, name := range made {
				os.Remove(name)
			}
		}
	}()
	if err := initFile(abs, table); err != nil {
		if errors.Is(err, errFilled) {
			made = nil // another program's database now: not ours to remove
		}
		return store.Wrap("create", path, err)
	}
	return nil
}

// errFilled: the file Create made or accepted empty holds another
// program's database.
var errFilled = fmt.Errorf("%w: %w: another program made a database in the file meanwhile", store.ErrInvalidArgument, store.ErrExists)

// createExcl creates the file at abs with O_EXCL, or accepts an existing
// regular file of 0 bytes, and returns it open and locked with flock
// (LOCK_EX) until Create ends, so that a concurrent Create that finds the
// file empty waits for this one and then sees it filled. SQLite locks with
// fcntl, which flock does not touch. It also returns the names Create may
// remove if it fails: the file if it made it, and the -wal, -shm and
// -journal names that did not exist then (SQLite creates them for it).
func createExcl(abs string) (*os.File, []string, error) {
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err == nil {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			os.Remove(abs)
			return nil, nil, err
		}
		made := []string{abs}
		for _, suffix := range []string{"-wal", "-shm", "-journal"} {
			if _, err := os.Lstat(abs + suffix); errors.Is(err, os.ErrNotExist) {
				made = append(made, abs+suffix)
			}
		}
		return f, made, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return nil, nil, err
	}
	fi, err := os.Lstat(abs)
	if err == nil {
		err = checkEmpty(fi)
	}
	if err != nil {
		return nil, nil, err
	}
	// O_NOFOLLOW: the name was a regular file a moment ago; never follow
	// a symlink put there since.
	f, err = os.OpenFile(abs, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, nil, err
	}
	// Under the lock: still empty, and still the file at abs (a Create
	// that made it and failed has removed it).
	fi2, err := f.Stat()
	if err == nil {
		err = checkEmpty(fi2)
	}
	if now, lerr := os.Lstat(abs); err == nil && (lerr != nil || !os.SameFile(fi2, now)) {
		err = fmt.Errorf("%w: the file was removed or replaced meanwhile", store.ErrInvalidArgument)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, nil, nil // an empty file: a new vault, but not ours to remove
}

// checkEmpty accepts a regular file of 0 bytes and refuses anything else
// as existing.
func checkEmpty(fi os.FileInfo) error {
	switch {
	case fi.IsDir():
		return fmt.Errorf("%w: %w: is a directory", store.ErrInvalidArgument, store.ErrExists)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %w: the path exists and is not a regular file (%v)", store.ErrInvalidArgument, store.ErrExists, fi.Mode().Type())
	case fi.Size() != 0:
		return fmt.Errorf("%w: %w: the file exists and is not empty", store.ErrInvalidArgument, store.ErrExists)
	}
	return nil
}

// initFile runs KohakuVault's statements on the new or empty file abs.
func initFile(abs, table string) (err error) {
	// mode=rw: the file exists by now, and SQLite must not create another
	// one if it vanished. The file: URI keeps '?' and '#' in the path from
	// being read as parameters.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(abs)
	db, err := sql.Open("sqlite3", "file:"+esc+"?mode=rw&_busy_timeout=5000")
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1) // the page size is a property of the connection that makes the first table
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	// An empty file accepted above may have been filled by another program
	// since: never add a table to what it made.
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema`).Scan(&n); err != nil {
		return err
	}
	if n != 0 {
		return errFilled
	}
	if _, err := db.Exec(newFilePageSize); err != nil {
		return fmt.Errorf("page size: %w", err)
	}
	var mode string
	if err := db.QueryRow(newFileWAL).Scan(&mode); err != nil {
		return fmt.Errorf("journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %s, not WAL (a file system without shared memory?)", mode)
	}
	// Two autocommitted statements, as KohakuVault runs them: the meta
	// table first (MetaTable::ensure_table), then the KV table.
	if _, err := db.Exec(newFileMeta); err != nil {
		return fmt.Errorf("kohakuvault_meta: %w", err)
	}
	if _, err := db.Exec(strings.ReplaceAll(newFileKV, "{t}", table)); err != nil {
		return fmt.Errorf("table %s: %w", table, err)
	}
	return nil
}
