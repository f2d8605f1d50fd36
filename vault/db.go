package vault

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"
)

// connector opens SQLite connections with the vault's per-connection
// pragmas. database/sql opens connections lazily and more than once, so
// everything that belongs to a connection (rather than to the file) is
// set here on every one.
type connector struct {
	dsn    string
	pragma []string
	driver *sqlite3.SQLiteDriver
}

func newConnector(dsn string, pragmas []string) *connector {
	c := &connector{dsn: dsn, pragma: pragmas}
	c.driver = &sqlite3.SQLiteDriver{ConnectHook: func(conn *sqlite3.SQLiteConn) error {
		for _, p := range c.pragma {
			if _, err := conn.Exec(p, nil); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	}}
	return c
}

// connHook, when set (only by tests), wraps every new connection, so
// that a test can count the statements and rows an operation costs.
var connHook atomic.Pointer[func(dsn string, conn *sqlite3.SQLiteConn) driver.Conn]

// Connect implements driver.Connector.
func (c *connector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.driver.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	if hook := connHook.Load(); hook != nil {
		if sc, ok := conn.(*sqlite3.SQLiteConn); ok {
			return (*hook)(c.dsn, sc), nil
		}
	}
	return conn, nil
}

// Driver implements driver.Connector.
func (c *connector) Driver() driver.Driver { return c.driver }

// fileURI builds an SQLite URI for path, escaping the characters that
// would otherwise start a query or fragment.
func fileURI(path string, params url.Values) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?" + params.Encode()
}

// metaCacheKB bounds the page cache of each connection of the point
// query pool (Vault.meta), in KiB.
const metaCacheKB = 2 << 10

// poolKind says what a connection pool is for.
type poolKind int

const (
	writerPool     poolKind = iota // one connection, BEGIN IMMEDIATE
	readerPool                     // many connections, refuse writes
	readOnlyPool                   // a file we may not write
	immutablePool                  // a WAL file in a directory we may not write
	checkpointPool                 // one connection for background checkpoints
)

// openPool opens a connection pool on path. wal selects the synchronous
// level: WAL with synchronous=NORMAL never loses a commit to a process
// crash (Sync makes commits durable against power loss), while a rollback
// journal needs FULL for that.
func openPool(path string, o *Options, kind poolKind, wal bool, extra ...string) *sql.DB {
	params := url.Values{}
	params.Set("_busy_timeout", fmt.Sprint(o.BusyTimeout.Milliseconds()))
	params.Set("_stmt_cache_size", "64")
	maxConns := max(4, 2*runtime.GOMAXPROCS(0))
	switch kind {
	case writerPool:
		params.Set("mode", "rw") // never create a file here: Open does that deliberately
		params.Set("_txlock", "immediate")
		maxConns = 1
	case readerPool:
		params.Set("mode", "rw")
		params.Set("_query_only", "1")
	case checkpointPool:
		params.Set("mode", "rw")
		maxConns = 1
	case readOnlyPool:
		params.Set("mode", "ro")
	case immutablePool:
		params.Set("mode", "ro")
		params.Set("immutable", "1")
	}
	if wal {
		params.Set("_synchronous", "NORMAL")
	} else {
		params.Set("_synchronous", "FULL")
	}
	pragmas := []string{
		fmt.Sprintf("PRAGMA cache_size = -%d", o.CacheKB),
		fmt.Sprintf("PRAGMA mmap_size = %d", o.MmapSize),
		"PRAGMA temp_store = MEMORY",
	}
	if kind == writerPool {
		pragmas = append(pragmas, fmt.Sprintf("PRAGMA journal_size_limit = %d", journalSizeLimit))
	}
	pragmas = append(pragmas, extra...)
	db := sql.OpenDB(newConnector(fileURI(path, params), pragmas))
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(time.Minute)
	return db
}

// tx is a write transaction with the time every change in it records.
type tx struct {
	*sql.Tx
	v     *Vault
	now   int64    // nanoseconds since the epoch, one clock reading per transaction
	seq   uint64   // this transaction's number in Vault.txSeq
	after []func() // run once the transaction has committed
	ends  []func() // run once it has committed or failed
	data  int64    // chunk bytes written, to estimate the WAL it adds
	// lowSpace is set by roomFor when the disk is nearly full.
	lowSpace bool
	// touched are directories whose times the commit sets (see touch).
	touched map[int64]bool
	// dirs caches directories resolved by path during the transaction,
	// when set (a cache flush, where no directory is removed).
	dirs map[string]int64
}

// afterCommit schedules fn to run if and when the transaction commits.
func (t *tx) afterCommit(fn func()) { t.after = append(t.after, fn) }

// update runs fn in one write transaction (BEGIN IMMEDIATE on the single
// writer connection), retrying with exponential backoff while another
// process holds the database busy. fn may run more than once, so it must
// keep its effects inside the transaction. Errors are wrapped with op and
// key.
func (v *Vault) update(op, key string, fn func(t *tx) error) error {
	if v.kv != nil {
		return errKohakuFile(op)
	}
	if v.readOnly {
		return wrap(op, key, v.readOnlyErr())
	}
	if err := v.checkOpen(); err != nil {
		return wrap(op, key, err)
	}
	err := v.retry(func() error { return v.updateOnce(fn) })
	if v.checkpointAfterFull(err) { // see space.go
		err = v.retry(func() error { return v.updateOnce(fn) })
	}
	return wrap(op, key, err)
}

// retry runs fn until it succeeds, fails with something other than
// SQLite's busy error, or has been retried Retries times with exponential
// backoff from BackoffBase. SQLite's own busy_timeout has already waited
// inside each attempt.
func (v *Vault) retry(fn func() error) error {
	delay := v.opts.BackoffBase
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || !isBusy(err) || attempt >= v.opts.Retries {
			return err
		}
		time.Sleep(delay)
		delay *= 2
	}
}

func (v *Vault) updateOnce(fn func(t *tx) error) error {
	seq := v.txSeq.Add(1) // before Begin, so that a snapshot taken after any earlier transaction sees it
	sqlTx, err := v.w.Begin()
	if err != nil {
		return err
	}
	// The rollback is deferred so that a panic in fn, recovered by a
	// caller, does not leave the only writer connection inside BEGIN
	// IMMEDIATE, where every later write would wait for it forever.
	// After a commit it is a no-op (sql.ErrTxDone).
	defer sqlTx.Rollback()
	t := &tx{Tx: sqlTx, v: v, now: time.Now().UnixNano(), seq: seq}
	defer func() { // after the commit, or before the rollback (which changes nothing others see)
		for _, f := range t.ends {
			f()
		}
	}()
	err = fn(t)
	if err == nil {
		err = t.applyTouches()
	}
	if err == nil {
		err = v.roomFor(t)
	}
	if err != nil {
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return err
	}
	v.ckpt.note(t.data + txOverheadPages*int64(v.pageSize))
	if t.lowSpace {
		v.afterLowCommit() // see space.go
	}
	for _, f := range t.after {
		f()
	}
	v.ckpt.throttle() // holding nothing: the transaction is over
	return nil
}

// isConstraint reports a violated UNIQUE constraint: the name is taken.
func isConstraint(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrConstraint
}

// read runs fn with a reader pool itself: for a read of one statement,
// which is its own transaction, this saves the BEGIN and ROLLBACK that
// view pays. It uses the unmapped pool meta where there is one.
func (v *Vault) read(op, key string, fn func(q querier) error) error {
	if v.kv != nil {
		return errKohakuFile(op)
	}
	if err := v.checkOpen(); err != nil {
		return wrap(op, key, err)
	}
	if v.meta != nil {
		return wrap(op, key, fn(v.meta))
	}
	return wrap(op, key, fn(v.r))
}

// view runs fn in one read transaction on a reader connection, so that
// the queries it makes see one snapshot. Read transactions are kept short
// (one bounded batch) so that the WAL can always be checkpointed.
func (v *Vault) view(op, key string, fn func(q *sql.Tx) error) error {
	if v.kv != nil {
		return errKohakuFile(op)
	}
	if err := v.checkOpen(); err != nil {
		return wrap(op, key, err)
	}
	t, err := v.r.BeginTx(context.Background(), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return wrap(op, key, err)
	}
	defer t.Rollback()
	return wrap(op, key, fn(t))
}
