package kohaku

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"

	"github.com/kohakuvault/kvaultfs/store"
)

// Options configure Open.
type Options struct {
	// Table names the KV table to serve; "" picks the only
	// KohakuVault-shaped table of the file (several is an error listing
	// them).
	Table string
	// ReadOnly opens the file without ever writing it; writes fail with
	// store.ErrReadOnly. A file or directory that is not writable is
	// opened read-only whatever this says.
	ReadOnly bool
	// BusyTimeout is how long SQLite waits for a lock another process
	// holds (KohakuVault's own connections wait 5 s). Zero means
	// DefaultBusyTimeout.
	BusyTimeout time.Duration
	// Retries is how many times a write that still finds the file busy
	// after BusyTimeout is tried again, with exponential backoff from
	// BackoffBase. Zero means DefaultRetries; a negative value means no
	// retry; at most 30. Only a write that has not yet consumed the
	// caller's reader is retried.
	Retries int
	// BackoffBase is the pause before the first retry, doubled for each
	// later one. Zero means DefaultBackoffBase; at most a minute.
	BackoffBase time.Duration
}

// DefaultBusyTimeout is KohakuVault's busy_timeout.
const DefaultBusyTimeout = 5 * time.Second

// DefaultRetries and DefaultBackoffBase are KohakuVault's own retries of a
// busy database (errors.py: 4 retries from 0.02 s doubling), and package
// vault's defaults.
const (
	DefaultRetries     = 4
	DefaultBackoffBase = 20 * time.Millisecond
)

// MaxValueSize is SQLite's default SQLITE_MAX_LENGTH, 10^9 bytes, which
// KohakuVault's bundled SQLite keeps (spec 2.1). It bounds a whole row,
// not only the value: the key, the value and the record header (a few
// bytes; in format A also the size column) together. So the largest value
// a key can hold is MaxValueSize - len(key) - a few bytes; CheckSize
// tells exactly (it reserves 32 bytes for the record, a little more than
// the most it can take). Larger values need a native vault.
const MaxValueSize = 1_000_000_000

// Per-connection settings. KohakuVault maps 256 MiB (spec 2.1); here the
// whole file up to SQLite's compile-time cap (SQLITE_MAX_MMAP_SIZE, just
// under 2 GiB), because a blob read at an offset walks the value's chain
// of overflow pages from its start: mapped pages make that walk cheap
// (README, Benchmarks, KohakuVault files). SQLite writes through
// pwrite whatever this says; it is virtual address space, not memory.
// The page cache is smaller than KohakuVault's 100 MB since a table has
// several connections. temp_store is left at its default (a file) so that
// VACUUM never builds a copy of the database in memory.
const (
	mmapSize    = 0x7fff0000
	cacheKB     = 16 << 10
	readerConns = 4
)

// Table is one KohakuVault KV table opened read-write in its own format:
// every value it writes is what KohakuVault's own statements write, so the
// Python library and kvaultfs can use the file at the same time.
//
// Connections: a pool of readers, and one writer connection whose
// transactions begin IMMEDIATE (the write lock is taken up front and
// waited for with busy_timeout inside SQLite, never under a Go lock; a
// write still busy after it is retried, Options.Retries).
// Nothing in the file other than rows of the table is ever changed: no
// page size, journal mode, table or index.
type Table struct {
	path     string
	info     TableInfo
	q        string // the table name quoted for SQL
	readOnly bool
	// canWrite: the file and its directory are writable. Readers then
	// open read-write with query_only even when the table is read-only:
	// a read-only connection cannot remove the -wal and -shm files that
	// opening a WAL file creates, and would leave them behind at close.
	canWrite bool
	wal      bool
	r        *sql.DB   // readers
	w        *sql.DB   // the writer, one connection; nil when read-only
	dv       *sql.Conn // kept for PRAGMA data_version
	retries  int       // Options.Retries resolved: >= 0
	backoff  time.Duration
	closed   atomic.Bool
}

// Open opens the KohakuVault table of the SQLite file at path: the one
// named by o.Table, or the only KohakuVault-shaped table in the file. The
// file must exist and hold such a table; its errors name what it holds.
func Open(path string, o Options) (*Table, error) {
	if o.BusyTimeout < 0 {
		return nil, store.Wrap("open", path, fmt.Errorf("%w: negative busy timeout", store.ErrInvalidArgument))
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	switch {
	case o.Retries > 30:
		return nil, store.Wrap("open", path, fmt.Errorf("%w: Retries %d: at most 30", store.ErrInvalidArgument, o.Retries))
	case o.BackoffBase < 0 || o.BackoffBase > time.Minute:
		return nil, store.Wrap("open", path, fmt.Errorf("%w: BackoffBase %v: must be between 0 and 1m", store.ErrInvalidArgument, o.BackoffBase))
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.BackoffBase == 0 {
		o.BackoffBase = DefaultBackoffBase
	}
	if _, err := os.Stat(path); err != nil {
		return nil, store.Wrap("open", path, err)
	}
	s, err := SurveyFile(path)
	if err != nil {
		return nil, store.Wrap("open", path, err)
	}
	info, err := s.Choose(o.Table)
	if err != nil {
		return nil, store.Wrap("open", path, err)
	}
	t := &Table{path: path, info: info, q: quoteIdent(info.Name), retries: o.Retries, backoff: o.BackoffBase}
	t.canWrite = writable(path)
	t.readOnly = o.ReadOnly || !t.canWrite
	if err := t.openPools(o); err != nil {
		t.closePools()
		return nil, store.Wrap("open", path, err)
	}
	return t, nil
}

// writable reports whether this process may write the file and create
// its -wal, -shm or -journal beside it.
func writable(path string) bool {
	return unix.Access(path, unix.W_OK) == nil && unix.Access(filepath.Dir(path), unix.W_OK|unix.X_OK) == nil
}

// openPools opens the reader pool, learns the journal mode, then opens the
// writer with the synchronous level that fits it.
func (t *Table) openPools(o Options) error {
	busy := fmt.Sprint(o.BusyTimeout.Milliseconds())
	params := url.Values{"_busy_timeout": {busy}}
	if !t.canWrite {
		params.Set("mode", "ro")
	} else {
		params.Set("mode", "rw")
		params.Set("_query_only", "1")
	}
	t.r = openDB(t.path, params, readerConns)
	ctx := context.Background()
	dv, err := t.r.Conn(ctx)
	if err != nil && t.readOnly {
		// A WAL file in a directory we may not write has no -shm to
		// share: read it as immutable (nothing else can write it either
		// without that directory).
		t.r.Close()
		params.Set("immutable", "1")
		t.r = openDB(t.path, params, readerConns)
		dv, err = t.r.Conn(ctx)
	}
	if err != nil {
		return err
	}
	t.dv = dv
	var mode string
	if err := dv.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	t.wal = strings.EqualFold(mode, "wal")
	if t.readOnly {
		return nil
	}
	// WAL with synchronous=NORMAL, as KohakuVault runs, loses no commit to
	// a process crash; a rollback journal needs FULL for that.
	sync := "FULL"
	if t.wal {
		sync = "NORMAL"
	}
	t.w = openDB(t.path, url.Values{
		"mode": {"rw"}, "_busy_timeout": {busy}, "_txlock": {"immediate"}, "_synchronous": {sync},
	}, 1)
	return t.w.PingContext(ctx)
}

// openDB opens a pool on path with the per-connection pragmas. No DSN
// parameter or pragma here changes the file (journal mode, page size).
func openDB(path string, params url.Values, conns int) *sql.DB {
	pragmas := []string{
		fmt.Sprintf("PRAGMA mmap_size = %d", mmapSize),
		fmt.Sprintf("PRAGMA cache_size = -%d", cacheKB),
	}
	drv := &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		for _, p := range pragmas {
			if _, err := c.Exec(p, nil); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	}}
	db := sql.OpenDB(connector{tableURI(path, params), drv})
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxIdleTime(time.Minute)
	return db
}

// tableURI builds an SQLite URI for path with params (see fileURI).
func tableURI(path string, params url.Values) string {
	return fileURI(path) + "?" + params.Encode()
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Name returns the table's name.
func (t *Table) Name() string { return t.info.Name }

// Format returns the table's format.
func (t *Table) Format() Format { return t.info.Format }

// Path returns the file's path as given to Open.
func (t *Table) Path() string { return t.path }

// ReadOnly reports whether writes are refused (store.ErrReadOnly).
func (t *Table) ReadOnly() bool { return t.readOnly }

// Close closes every connection; the last connection to a WAL file
// checkpoints it. Later calls fail with store.ErrClosed.
func (t *Table) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	return store.Wrap("close", "", t.closePools())
}

func (t *Table) closePools() error {
	var errs []error
	if t.dv != nil {
		errs = append(errs, t.dv.Close())
	}
	if t.r != nil {
		errs = append(errs, t.r.Close())
	}
	if t.w != nil {
		errs = append(errs, t.w.Close())
	}
	return errors.Join(errs...)
}

// check returns the error an operation gets before touching the file:
// closed, or (for a write) read-only.
func (t *Table) check(write bool) error {
	if t.closed.Load() {
		return store.ErrClosed
	}
	if write && t.readOnly {
		return fmt.Errorf("%w: %s is opened read-only", store.ErrReadOnly, t.path)
	}
	return nil
}

// update runs fn in one write transaction on the writer connection,
// committing if it returns nil. fn gets the connection too, for blob I/O.
// A BEGIN IMMEDIATE that finds the file busy (after busy_timeout) is
// retried (see retry); once fn has started nothing is retried, since fn
// may consume a reader that cannot be read again.
func (t *Table) update(fn func(ctx context.Context, c *sql.Conn, tx *sql.Tx) error) error {
	return t.updateTx(false, fn)
}

// updateReplay is update for an fn that only writes what it holds in
// memory and may run again: a busy error anywhere (a statement, the
// commit) retries the whole transaction.
func (t *Table) updateReplay(fn func(ctx context.Context, c *sql.Conn, tx *sql.Tx) error) error {
	return t.updateTx(true, fn)
}

// updateTx is update and updateReplay.
func (t *Table) updateTx(replay bool, fn func(ctx context.Context, c *sql.Conn, tx *sql.Tx) error) error {
	return t.retry(func() (retryable bool, err error) {
		ctx := context.Background()
		c, err := t.w.Conn(ctx)
		if err != nil {
			return false, err
		}
		// Closed before retry sleeps: no connection is held then.
		defer c.Close()
		tx, err := c.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
		if err != nil {
			return true, err
		}
		defer tx.Rollback() // a no-op after Commit
		if err := fn(ctx, c, tx); err != nil {
			return replay, err
		}
		return replay, tx.Commit()
	})
}

// retry runs try until it succeeds, fails with something other than
// SQLite's busy error, says its failure must not be retried, or has been
// retried Options.Retries times, pausing from BackoffBase doubling in
// between. try releases everything it took before returning, so the
// pauses hold no connection and no lock. SQLite's own busy_timeout has
// already waited inside each attempt.
func (t *Table) retry(try func() (retryable bool, err error)) error {
	delay := t.backoff
	for attempt := 0; ; attempt++ {
		retryable, err := try()
		if err == nil || !retryable || !store.IsBusy(err) || attempt >= t.retries {
			return err
		}
		time.Sleep(delay)
		delay *= 2
	}
}

// exec runs one autocommitted write statement on the writer, retried
// while the file is busy (its arguments are in memory).
func (t *Table) exec(q string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := t.retry(func() (bool, error) {
		var err error
		res, err = t.w.Exec(q, args...)
		return true, err
	})
	return res, err
}

// view runs fn in one read transaction on a reader connection, so that
// everything fn reads comes from one snapshot.
func (t *Table) view(fn func(ctx context.Context, c *sql.Conn, tx *sql.Tx) error) error {
	ctx := context.Background()
	c, err := t.r.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	tx, err := c.BeginTx(ctx, nil) // BEGIN (deferred): the snapshot starts at the first read
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(ctx, c, tx); err != nil {
		return err
	}
	return tx.Commit()
}
