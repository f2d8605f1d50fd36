package vault

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kohakuvault/kvaultfs/kohaku"
	"github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
)

// Vault is an open key-value store in one SQLite file. Its methods are
// safe for concurrent use by many goroutines, and several processes may
// open the same file at once.
type Vault struct {
	path     string
	opts     Options
	wal      bool
	pageSize int
	readOnly bool
	roReason string // why the vault is read-only, for error messages
	format   int64  // the file's format version: how chunk checksums are computed

	w *sql.DB // the single writer connection
	r *sql.DB // reader connections
	// meta are reader connections for the one-statement point queries of
	// read (lookups, getattr, listings), without mmap: SQLite unmaps a
	// connection's whole mapping at the first read after any commit by
	// another connection, and mapping and faulting it in again made a
	// lookup after a commit cost 766 us against 140 us without (a vault
	// of 3,000 files). Chunk data keeps the mapped pool r. nil when the
	// vault is read-only (nothing here commits, r serves).
	meta *sql.DB

	queries sync.Map // SQL template -> text with the table prefix

	closed atomic.Bool
	files  openFiles  // inodes open in this process, with their dirty chunks
	cache  writeCache // the write-back cache and the byte budget
	reads  chunkCache // recently read, verified chunks
	sess   session    // this process's session, created on first need

	ckpt *checkpointer // background checkpoints; nil unless writable WAL

	// tableChosen reports that Options.Table named the vault or table to
	// serve, rather than leaving the choice to Open (kohaku.go).
	tableChosen bool
	// kv is the KohakuVault table the vault serves, if the file is a
	// KohakuVault file (kohaku.go); then every native field above is
	// unused and the dict API goes to it.
	kv *kohaku.Table

	// txSeq counts write transactions begun in this process. Writes take
	// turns on the single writer connection, so an unchanged count means
	// that nothing here has changed the database since a transaction
	// read it (see openInode.snapshot).
	txSeq atomic.Uint64

	dvMu   sync.Mutex
	dvConn *sql.Conn // the connection DataVersion asks, kept so its answer compares
}

// Open opens the vault in the SQLite file at path, creating the file if
// it does not exist (its directory must). A nil opts means
// DefaultOptions(). A file that is not SQLite, a vault of a newer format,
// or an invalid option fails with an error and leaves the file untouched.
// A file (or directory) that cannot be written is opened read-only:
// reads work and writes fail with ErrReadOnly.
//
// Before anything is written, the file is surveyed: a KohakuVault table
// (Options.Table, or the file's only one) is served in its own format; a
// native vault of the Table prefix is served; a file holding both kinds,
// or several KohakuVault tables, with no Table named, is refused naming
// them; so is a file holding tables of another program and no vault,
// unless Options.Init adds a vault beside them (never over a table that
// has one of the vault's names). Kohaku reports which store was chosen.
func Open(path string, opts *Options) (*Vault, error) {
	if opts == nil {
		opts = DefaultOptions()
	}
	o := *opts
	if err := o.validate(); err != nil {
		return nil, wrap("open", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, wrap("open", path, err)
	}
	v := &Vault{path: abs, opts: o, tableChosen: o.Table != ""}
	if o.Table == "" {
		v.opts.Table = DefaultTable
	}
	v.cache.init()
	v.reads.init(readCacheBytes)
	if err := v.checkPath(); err != nil {
		return nil, wrap("open", path, err)
	}
	if info, err := v.chooseStore(); err != nil {
		return nil, wrap("open", path, err)
	} else if info != nil {
		if err := v.openKohaku(info); err != nil {
			return nil, wrap("open", path, err)
		}
		return v, nil
	}
	if err := v.open(); err != nil {
		v.closePools()
		if c := classify(err); errors.Is(c, ErrNoSpace) {
			// Reads and deletes work on a full disk, but SQLite cannot
			// open a WAL database without room for its index (-shm).
			err = fmt.Errorf("%w; opening needs about %d KiB free next to the database for SQLite's shared-memory index: free some space", c, shmRoom>>10)
		}
		return nil, wrap("open", path, err)
	}
	if v.ckpt != nil {
		v.reserveLog() // room for deletes on a full disk (space.go)
	}
	return v, nil
}

// checkPath refuses a path that cannot hold a vault before anything
// looks inside the file: a missing directory, a directory, a file that is
// not SQLite.
func (v *Vault) checkPath() error {
	dir := filepath.Dir(v.path)
	if st, err := os.Stat(dir); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // "directory /x: no such file or directory", not "stat /x: ..." again
		}
		return fmt.Errorf("directory %s: %w", dir, err)
	} else if !st.IsDir() {
		return fmt.Errorf("%s is not a directory: %w", dir, fs.ErrNotExist)
	}
	if st, err := os.Stat(v.path); err == nil && st.IsDir() {
		return fmt.Errorf("%w: %s is a directory", ErrInvalidArgument, v.path)
	}
	return checkSQLiteHeader(v.path)
}

// open opens (or creates) the native vault at v.path, which checkPath
// has accepted.
func (v *Vault) open() error {
	dir := filepath.Dir(v.path)
	if err := v.chooseMode(dir); err != nil {
		return err
	}

	if v.readOnly {
		v.r = openPool(v.path, &v.opts, readOnlyPool, true)
		st, err := inspect(v.r, v.opts.Table)
		if err != nil && (isCantOpen(err) || isReadOnly(err)) {
			// A WAL database in a directory we cannot write has no -shm to
			// share (SQLite says it cannot open or cannot initialise it);
			// read it as an immutable file instead.
			v.r.Close()
			v.r = openPool(v.path, &v.opts, immutablePool, true)
			st, err = inspect(v.r, v.opts.Table)
		}
		if err != nil {
			return err
		}
		if !st.hasVault {
			return fmt.Errorf("%w: no vault table %q in the file, and it is %s", ErrInvalidArgument, v.opts.Table+"_meta", v.roReason)
		}
		v.wal, v.format = st.wal, formatOf(st)
		return checkFormat(st, &v.opts)
	}

	v.w = openPool(v.path, &v.opts, writerPool, true)
	st, err := inspect(v.w, v.opts.Table)
	if err != nil {
		return err
	}
	if err := checkFormat(st, &v.opts); err != nil {
		return err
	}
	if !st.hasVault || st.version == 0 || st.isEmpty {
		if err := create(v.w, v.opts.Table, st, &v.opts, time.Now().UnixNano()); err != nil {
			return err
		}
		if st, err = inspect(v.w, v.opts.Table); err != nil {
			return err
		}
	}
	v.wal, v.pageSize, v.format = st.wal, st.pageSize, formatOf(st)
	// Reopen the writer with the settings that depend on the file: a
	// rollback journal needs FULL synchronous for a commit to be durable,
	// and the WAL's inline checkpoint threshold is counted in pages.
	v.w.Close()
	if v.wal {
		v.w = openPool(v.path, &v.opts, writerPool, true,
			fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", walAutoCheckpointBytes/st.pageSize))
	} else {
		v.w = openPool(v.path, &v.opts, writerPool, false)
	}
	// Connect now, so the first write does not pay for it.
	if err := v.w.Ping(); err != nil {
		return err
	}
	v.r = openPool(v.path, &v.opts, readerPool, v.wal)
	// Their page caches are emptied by every commit anyway: a small one
	// does, and keeps the daemon's C memory near what it was.
	v.meta = openPool(v.path, &v.opts, readerPool, v.wal, "PRAGMA mmap_size = 0",
		fmt.Sprintf("PRAGMA cache_size = -%d", min(v.opts.CacheKB, metaCacheKB)))
	v.startCheckpointer() // checkpoints and the release of free pages, in the background
	return v.collectOrphans()
}

// chooseMode decides whether the vault is writable, creating the file if
// it does not exist.
func (v *Vault) chooseMode(dir string) error {
	if v.opts.ReadOnly {
		v.readOnly, v.roReason = true, "opened read-only"
		if _, err := os.Stat(v.path); err != nil {
			return err
		}
		return nil
	}
	f, err := os.OpenFile(v.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err == nil {
		f.Close()
		if unix.Access(dir, unix.W_OK|unix.X_OK) != nil {
			v.readOnly, v.roReason = true, "in a directory that is not writable"
		}
		return nil
	}
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS) {
		if _, serr := os.Stat(v.path); serr != nil {
			return err // cannot create it either
		}
		v.readOnly, v.roReason = true, "not writable"
		return nil
	}
	return err
}

// checkFormat refuses versions newer than ours and page sizes that the
// caller asked for but the file does not have.
func checkFormat(st fileState, o *Options) error {
	if st.version > FormatVersion {
		return fmt.Errorf("%w: vault format version %d is newer than this kvaultfs supports (%d); upgrade kvaultfs", ErrInvalidArgument, st.version, FormatVersion)
	}
	if !st.isEmpty && o.PageSize != 0 && o.PageSize != st.pageSize {
		return fmt.Errorf("%w: option PageSize = %d, but the file has %d-byte pages; page size only applies when a file is created (Optimize keeps the file's)", ErrInvalidArgument, o.PageSize, st.pageSize)
	}
	return nil
}

func isCantOpen(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrCantOpen
}

func isReadOnly(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrReadonly
}

// sqliteMagic starts every SQLite database file.
const sqliteMagic = "SQLite format 3\x00"

// checkSQLiteHeader refuses an existing, non-empty file that does not
// start as an SQLite database does. SQLite itself takes some of them (a
// file of one byte, say) for an empty database, and Open would then write
// a vault over the file.
func checkSQLiteHeader(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // missing (a new file) or unreadable: the open reports it
	}
	defer f.Close()
	var hdr [len(sqliteMagic)]byte
	n, _ := f.ReadAt(hdr[:], 0)
	if n > 0 && string(hdr[:n]) != sqliteMagic {
		return fmt.Errorf("%w: not a SQLite database", ErrInvalidArgument)
	}
	return nil
}

// checkOpen reports ErrClosed once Close has begun.
func (v *Vault) checkOpen() error {
	if v.closed.Load() {
		return ErrClosed
	}
	return nil
}

func (v *Vault) readOnlyErr() error {
	return fmt.Errorf("%w: the database is %s", ErrReadOnly, v.roReason)
}

// sql returns the statement s with the table prefix substituted, caching
// the result so hot paths do not rebuild their SQL.
func (v *Vault) sql(s string) string {
	if q, ok := v.queries.Load(s); ok {
		return q.(string)
	}
	q := tableSQL(v.opts.Table, s)
	v.queries.Store(s, q)
	return q
}

// Path returns the absolute path of the database file.
func (v *Vault) Path() string { return v.path }

// ReadOnly reports whether the vault refuses writes.
func (v *Vault) ReadOnly() bool { return v.readOnly }

// Options returns the options the vault was opened with.
func (v *Vault) Options() Options { return v.opts }

// Sync makes every committed change durable against power loss: it
// returns after the log (or database) has been fsynced. Cached writes are
// not flushed by Sync; call FlushCache first.
func (v *Vault) Sync() error {
	if v.kv != nil {
		return v.kvSync()
	}
	if v.readOnly || !v.wal {
		return nil // nothing to make durable, or every commit already was (FULL)
	}
	if err := v.checkOpen(); err != nil {
		return wrap("sync", "", err)
	}
	// A commit on a connection with synchronous=FULL fsyncs the WAL, which
	// makes every earlier frame durable too. The commit must change
	// something, or SQLite writes (and syncs) nothing. The pragma cannot
	// change inside a transaction, so this holds the writer connection.
	return wrap("sync", "", v.retry(func() error {
		ctx := context.Background()
		conn, err := v.w.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = FULL"); err != nil {
			return err
		}
		defer conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL")
		_, err = conn.ExecContext(ctx, v.sql(`INSERT INTO {t}_meta (key, value) VALUES ('synced', ?1)
			ON CONFLICT (key) DO UPDATE SET value = ?1`), time.Now().UnixNano())
		return err
	}))
}

// Optimize rebuilds the database file (VACUUM), returning the space of
// deleted values to the file system. It needs free disk space about the
// size of the database and blocks writers while it runs. A vault created
// without incremental auto-vacuum is converted, so that from then on its
// free pages are released in the background (see vacuum.go).
func (v *Vault) Optimize() error {
	if v.kv != nil {
		return v.kvOptimize()
	}
	if _, err := v.FlushCache(); err != nil {
		return wrap("optimize", "", err)
	}
	if v.readOnly {
		return wrap("optimize", "", v.readOnlyErr())
	}
	if err := v.vacuum(); err != nil {
		return wrap("optimize", "", err)
	}
	_, err := v.w.Exec("PRAGMA optimize")
	return wrap("optimize", "", err)
}

// Close flushes the write-back cache and every open file's dirty data,
// ends this process's session, checkpoints the WAL into the database
// (TRUNCATE, so the .db file alone is complete) and closes the file.
//
// If the flush fails for a reason that may pass (a full disk, a busy or
// read-only file), Close returns the error and leaves the vault open with
// everything still pending, so that nothing acknowledged is lost: remove
// the cause and call Close again. Entries that can never be written as
// they stand (a put of "a/b" after another process made "a" a file) are
// named in the error and dropped, and the vault closes.
func (v *Vault) Close() error {
	if v.kv != nil {
		return v.kvClose()
	}
	if v.closed.Load() {
		return nil
	}
	v.cache.waitWriteOut()
	_, err := v.FlushCache()
	if err == nil {
		err = v.files.flushAll(v)
	}
	if err != nil && !onlyEntryErrors(err) {
		return wrap("close", "", fmt.Errorf("%w (the vault stays open with its pending data: remove the cause and Close again)", err))
	}
	v.cache.stopBackground()
	if serr := v.endSession(); err == nil {
		err = serr
	}
	v.closed.Store(true)
	v.ckpt.close() // before the final checkpoint, which it would make busy
	v.ckpt = nil
	if v.w != nil && v.wal {
		// Busy means another process still has the file open: it will
		// checkpoint when it closes. A full disk leaves everything
		// committed in the WAL, where the next open finds it: not a
		// failure of Close.
		if _, cerr := v.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); cerr != nil && !isBusy(cerr) && !errors.Is(classify(cerr), ErrNoSpace) && err == nil {
			err = cerr
		}
	}
	if cerr := v.closePools(); err == nil {
		err = cerr
	}
	return wrap("close", "", err)
}

// onlyEntryErrors reports whether err consists only of errors that belong
// to single cache entries, which no retry can fix.
func onlyEntryErrors(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !isEntryError(e) {
				return false
			}
		}
		return true
	}
	return isEntryError(err)
}

func (v *Vault) closePools() error {
	var err error
	if v.ckpt != nil { // Open failed after starting it
		v.ckpt.close()
		v.ckpt = nil
	}
	v.dvMu.Lock()
	if v.dvConn != nil {
		v.dvConn.Close()
		v.dvConn = nil
	}
	v.dvMu.Unlock()
	if v.r != nil {
		err = v.r.Close()
	}
	if v.meta != nil {
		if merr := v.meta.Close(); err == nil {
			err = merr
		}
	}
	if v.w != nil {
		if werr := v.w.Close(); err == nil {
			err = werr
		}
	}
	return err
}
