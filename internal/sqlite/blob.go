// Package sqlite calls SQLite's C API on the connections of
// mattn/go-sqlite3, for what database/sql cannot do: incremental blob
// I/O (sqlite3_blob_open, _read, _write, _reopen), which reads or writes a
// range of a BLOB without loading the whole value into memory.
//
// The driver bundles SQLite and its package's object code exports the
// C functions, so this package only declares their prototypes and links
// with the copy already in the binary: no second SQLite is compiled. The
// sqlite3* handle of a connection is an unexported field of
// *sqlite3.SQLiteConn, reached with reflect and unsafe; go.mod pins the
// driver version and TestDriverLayout fails loudly if an upgrade moves it.
package sqlite

/*
// Prototypes from sqlite3.h (stable C API since SQLite 3.7.4). The
// definitions come from mattn/go-sqlite3's bundled SQLite, linked into
// the same binary.
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_blob sqlite3_blob;
typedef long long sqlite3_int64;
extern int sqlite3_blob_open(sqlite3*, const char *zDb, const char *zTable, const char *zColumn, sqlite3_int64 iRow, int flags, sqlite3_blob **ppBlob);
extern int sqlite3_blob_reopen(sqlite3_blob *, sqlite3_int64);
extern int sqlite3_blob_close(sqlite3_blob *);
extern int sqlite3_blob_bytes(sqlite3_blob *);
extern int sqlite3_blob_read(sqlite3_blob *, void *Z, int N, int iOffset);
extern int sqlite3_blob_write(sqlite3_blob *, const void *z, int n, int iOffset);
extern int sqlite3_extended_errcode(sqlite3 *db);
extern const char *sqlite3_errmsg(sqlite3*);
extern const char *sqlite3_errstr(int);
#include <stdlib.h>
*/
import "C"

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"unsafe"

	"github.com/mattn/go-sqlite3"
)

// Errors of this package that are not SQLite's own.
var (
	// ErrRange: an offset or length outside the blob (a write cannot
	// grow a blob) or a negative offset.
	ErrRange = errors.New("offset or length outside the blob")
	// ErrClosed: the blob was closed, or its connection was handed back
	// to the pool when Raw returned.
	ErrClosed = errors.New("blob closed")
	// ErrDriver: the driver connection is not a *sqlite3.SQLiteConn or
	// its layout changed (see TestDriverLayout).
	ErrDriver = errors.New("unexpected mattn/go-sqlite3 connection layout")
)

// Error is an error SQLite returned to a C API call. It unwraps to
// sqlite3.Error carrying SQLite's primary and extended codes, so that
// errors.As(err, &sqlite3.Error{}) and store.Classify treat it as any
// other driver error (busy, readonly, full, corrupt...).
type Error struct {
	Func   string        // the C function, such as "sqlite3_blob_open"
	SQLite sqlite3.Error // the codes
	Msg    string        // sqlite3_errmsg at the time of the failure
}

// Error formats as "sqlite3_blob_open: no such rowid: 7".
func (e *Error) Error() string { return e.Func + ": " + e.Msg }

// Unwrap returns the driver's error value with the same codes.
func (e *Error) Unwrap() error { return e.SQLite }

// Conn is the C handle of one driver connection, valid only inside the
// function given to Raw, and used by one goroutine at a time like the
// connection itself.
type Conn struct {
	db    *C.sqlite3
	blobs map[*Blob]struct{} // open blobs, closed when Raw returns
}

// Raw runs fn with the C handle of the connection c. Blobs fn leaves
// open are closed when it returns, since an open blob holds a read
// transaction that must not outlive fn on a pooled connection. Closing a
// writable blob in autocommit mode commits its writes: if that fails and
// fn succeeded, Raw returns the first such error (the writes are lost).
// fn must not keep the *Conn or its blobs.
//
// fn must not use c, or any *sql.Tx or statement of c: database/sql holds
// the driver connection's lock for the whole of Raw, so such a call waits
// for itself forever. Run the SQL before or after Raw, on the same Tx.
func Raw(ctx context.Context, c *sql.Conn, fn func(*Conn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.Raw(func(dc any) (err error) {
		db, err := handle(dc)
		if err != nil {
			return err
		}
		conn := &Conn{db: db, blobs: map[*Blob]struct{}{}}
		defer func() {
			for b := range conn.blobs {
				if cerr := b.Close(); cerr != nil && b.writable && err == nil {
					err = cerr
				}
			}
			conn.db = nil
		}()
		return fn(conn)
	})
}

// handle returns the sqlite3* of a *sqlite3.SQLiteConn: its unexported
// field db, of type *C.sqlite3 in the driver's package. dbField checks the
// field's name and type so a driver upgrade that renames or retypes it
// fails with ErrDriver rather than reading the wrong memory.
func handle(dc any) (*C.sqlite3, error) {
	sc, ok := dc.(*sqlite3.SQLiteConn)
	if !ok || sc == nil {
		return nil, fmt.Errorf("%w: driver connection is %T, not *sqlite3.SQLiteConn", ErrDriver, dc)
	}
	off, err := dbField()
	if err != nil {
		return nil, err
	}
	p := *(**C.sqlite3)(unsafe.Add(unsafe.Pointer(sc), off))
	if p == nil {
		return nil, fmt.Errorf("%w: connection closed", ErrDriver)
	}
	return p, nil
}

// dbField returns the offset of SQLiteConn.db, checked once.
var dbField = sync.OnceValues(func() (uintptr, error) {
	f, ok := reflect.TypeFor[sqlite3.SQLiteConn]().FieldByName("db")
	if !ok {
		return 0, fmt.Errorf("%w: *sqlite3.SQLiteConn has no field db", ErrDriver)
	}
	if f.Type.Kind() != reflect.Pointer || f.Type.Elem().Name() != "_Ctype_struct_sqlite3" {
		return 0, fmt.Errorf("%w: SQLiteConn.db is %v, not *C.sqlite3", ErrDriver, f.Type)
	}
	return f.Offset, nil
})

// fail builds the error of a C call that returned rc.
func (c *Conn) fail(fn string, rc C.int) error {
	msg := C.GoString(C.sqlite3_errmsg(c.db))
	if msg == "" || msg == "not an error" {
		msg = C.GoString(C.sqlite3_errstr(rc))
	}
	ext := C.sqlite3_extended_errcode(c.db)
	if ext&0xff != rc&0xff {
		ext = rc
	}
	return &Error{Func: fn, Msg: msg, SQLite: sqlite3.Error{
		Code:         sqlite3.ErrNo(rc & 0xff),
		ExtendedCode: sqlite3.ErrNoExtended(ext),
	}}
}

// Blob is an open handle on one BLOB (sqlite3_blob). Its size is fixed
// when opened: writes overwrite bytes in place, never grow or shrink it.
type Blob struct {
	c        *Conn
	b        *C.sqlite3_blob
	size     int64
	writable bool
	aborted  error // the error of a failed Reopen: SQLite aborted the handle
}

// OpenBlob opens the BLOB in column of the row rowid of table in the
// schema db ("main" for the file itself), for writing if writable. The
// handle sees the row as of its opening; in autocommit mode it holds a
// read transaction until closed.
func (c *Conn) OpenBlob(db, table, column string, rowid int64, writable bool) (*Blob, error) {
	if c.db == nil {
		return nil, ErrClosed
	}
	cdb, ctab, ccol := C.CString(db), C.CString(table), C.CString(column)
	defer C.free(unsafe.Pointer(cdb))
	defer C.free(unsafe.Pointer(ctab))
	defer C.free(unsafe.Pointer(ccol))
	var flags C.int
	if writable {
		flags = 1
	}
	var b *C.sqlite3_blob
	if rc := C.sqlite3_blob_open(c.db, cdb, ctab, ccol, C.sqlite3_int64(rowid), flags, &b); rc != 0 {
		err := c.fail("sqlite3_blob_open", rc)
		if b != nil {
			C.sqlite3_blob_close(b)
		}
		return nil, err
	}
	bl := &Blob{c: c, b: b, size: int64(C.sqlite3_blob_bytes(b)), writable: writable}
	c.blobs[bl] = struct{}{}
	return bl, nil
}

// Size returns the blob's length in bytes.
func (b *Blob) Size() int64 { return b.size }

// usable returns the error of a call on a closed or aborted handle.
func (b *Blob) usable() error {
	if b.b == nil || b.c.db == nil {
		return ErrClosed
	}
	return b.aborted
}

// ReadAt reads len(p) bytes at off with io.ReaderAt semantics: fewer
// bytes only at the end of the blob, then io.EOF.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	if err := b.usable(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, ErrRange)
	}
	if off >= b.size {
		if len(p) == 0 && off == b.size {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := int64(len(p))
	if n > b.size-off { // b.size <= MaxInt32, so n and off fit a C int
		n = b.size - off
	}
	if n > 0 {
		if rc := C.sqlite3_blob_read(b.b, unsafe.Pointer(&p[0]), C.int(n), C.int(off)); rc != 0 {
			return 0, b.c.fail("sqlite3_blob_read", rc)
		}
	}
	if int(n) < len(p) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// WriteAt writes p at off. The range must lie inside the blob
// (ErrRange otherwise, nothing written): a blob cannot grow.
func (b *Blob) WriteAt(p []byte, off int64) (int, error) {
	if err := b.usable(); err != nil {
		return 0, err
	}
	if off < 0 || off > b.size || int64(len(p)) > b.size-off {
		return 0, fmt.Errorf("write of %d bytes at %d in a blob of %d: %w", len(p), off, b.size, ErrRange)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if rc := C.sqlite3_blob_write(b.b, unsafe.Pointer(&p[0]), C.int(len(p)), C.int(off)); rc != 0 {
		return 0, b.c.fail("sqlite3_blob_write", rc)
	}
	return len(p), nil
}

// Reopen points the handle at the same column of another row, cheaper
// than a new OpenBlob. After a failure SQLite has aborted the handle:
// every later ReadAt, WriteAt and Reopen returns that failure (never an
// end of value), and the handle must still be closed.
func (b *Blob) Reopen(rowid int64) error {
	if err := b.usable(); err != nil {
		return err
	}
	if rc := C.sqlite3_blob_reopen(b.b, C.sqlite3_int64(rowid)); rc != 0 {
		b.size = 0
		b.aborted = b.c.fail("sqlite3_blob_reopen", rc)
		return b.aborted
	}
	b.size = int64(C.sqlite3_blob_bytes(b.b))
	return nil
}

// Close releases the handle. A write error SQLite deferred to the close
// (such as a full disk) is returned. Closing twice is a no-op.
func (b *Blob) Close() error {
	if b.b == nil {
		return nil
	}
	bb := b.b
	b.b = nil
	delete(b.c.blobs, b)
	if b.c.db == nil {
		return ErrClosed
	}
	if rc := C.sqlite3_blob_close(bb); rc != 0 {
		return b.c.fail("sqlite3_blob_close", rc)
	}
	return nil
}
