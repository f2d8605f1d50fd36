package store

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"github.com/mattn/go-sqlite3"
)

// The errors every store returns (the native vault and a KohakuVault
// table alike). Every error of a store wraps one of them (or an I/O error
// from the operating system) inside an *Error naming the operation and
// key, so callers test with errors.Is. Some are
// refinements of another: ErrNotDir, ErrIsDir and ErrNameTooLong are also
// ErrInvalidArgument.
var (
	// ErrNotFound: the key, file or attribute does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the target exists and the operation must not replace it.
	ErrExists = errors.New("already exists")
	// ErrBusy: another process held the database locked through
	// BusyTimeout and every retry.
	ErrBusy = errors.New("database busy")
	// ErrInvalidArgument: a bad option, key, name, offset or file.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrCorrupt: stored data failed its checksum or SQLite reported a
	// malformed database. Never returned together with data.
	ErrCorrupt = errors.New("corrupt data")
	// ErrReadOnly: the vault was opened read-only, or its file or
	// directory is not writable.
	ErrReadOnly = errors.New("read-only vault")
	// ErrNoSpace: the disk (or the database's size limit) is full.
	ErrNoSpace = errors.New("no space left")
	// ErrNotEmpty: a directory that must be empty is not.
	ErrNotEmpty = errors.New("directory not empty")
	// ErrChanged: a value was replaced or rewritten while a streamed read
	// spanning several transactions was under way; the bytes already
	// delivered belong to the old value.
	ErrChanged = errors.New("value changed during read")
	// ErrClosed: the vault or file has been closed.
	ErrClosed = errors.New("closed")
	// ErrPermission: the operation is not allowed on this entry, such as
	// removing the reserved /.kvault directory.
	ErrPermission = errors.New("operation not permitted")

	// ErrNotDir: a path component that must be a directory is a file
	// (putting "a/b" when "a" is a file).
	ErrNotDir = Refine(ErrInvalidArgument, "not a directory")
	// ErrIsDir: the key names a directory where a file is needed.
	ErrIsDir = Refine(ErrInvalidArgument, "is a directory")
	// ErrNameTooLong: a path component is longer than 255 bytes.
	ErrNameTooLong = Refine(ErrInvalidArgument, "name too long")
)

// refinedError is a sentinel that is also its parent for errors.Is.
type refinedError struct {
	msg    string
	parent error
}

// Refine returns a sentinel with message msg that is also parent for
// errors.Is.
func Refine(parent error, msg string) error { return &refinedError{msg, parent} }

func (e *refinedError) Error() string { return e.msg }
func (e *refinedError) Unwrap() error { return e.parent }

// Error is the error type of every failed store operation.
type Error struct {
	Op  string // the operation: "put", "get", "open", ...
	Key string // the key or path concerned, if any
	Err error  // the cause; errors.Is(e, ErrNotFound) etc. test it
}

// Error formats as "op key: cause", quoting keys that are not printable.
func (e *Error) Error() string {
	if e.Key == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + quoteKey(e.Key) + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// quoteKey leaves plain keys readable and escapes binary ones.
func quoteKey(k string) string {
	q := strconv.Quote(k)
	if q[1:len(q)-1] == k {
		return k
	}
	return q
}

// Wrap gives err the operation and key, translating SQLite's errors into
// the package's sentinels. It returns nil for nil and leaves an *Error
// that names another key alone.
func Wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if ve, ok := err.(*Error); ok && key != "" && (ve.Key == "" || (ve.Key == key && ve.Op != op)) {
		// An inner step that did not know the key (a chunk read, a
		// commit) or ran as another operation (the stat inside an open):
		// name the caller's operation and key instead.
		return &Error{Op: op, Key: key, Err: ve.Err}
	}
	var ve *Error
	if errors.As(err, &ve) {
		return err
	}
	return &Error{Op: op, Key: key, Err: Classify(err)}
}

// Classify maps a SQLite error to a sentinel, keeping SQLite's message.
func Classify(err error) error {
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return err
	}
	var kind error
	switch se.Code {
	case sqlite3.ErrBusy, sqlite3.ErrLocked:
		kind = ErrBusy
	case sqlite3.ErrFull:
		kind = ErrNoSpace
	case sqlite3.ErrIoErr:
		if se.SystemErrno != syscall.ENOSPC && se.SystemErrno != syscall.EDQUOT {
			return err
		}
		kind = ErrNoSpace // growing the -shm index or a truncate failed
	case sqlite3.ErrReadonly:
		kind = ErrReadOnly
	case sqlite3.ErrCorrupt:
		kind = ErrCorrupt
	case sqlite3.ErrNotADB:
		kind = ErrInvalidArgument
		return fmt.Errorf("%w: not a SQLite database (%v)", kind, se)
	case sqlite3.ErrTooBig:
		kind = ErrTooLarge // a string or BLOB over SQLite's length limit (also ErrInvalidArgument)
	default:
		return err
	}
	return fmt.Errorf("%w (%v)", kind, se)
}

// IsBusy reports whether err is SQLite's busy or locked error, the only
// errors a write retries.
func IsBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}

// ErrTooLarge: a size or offset is past what the store can hold (EFBIG):
// MaxFileSize for the native vault, a value's limit for a KohakuVault
// table. It is also ErrInvalidArgument.
var ErrTooLarge = Refine(ErrInvalidArgument, "file too large")

// ErrNotSupported: the store cannot keep this kind of thing at all (a
// KohakuVault table has no extended attributes); the mount answers
// EOPNOTSUPP.
var ErrNotSupported = errors.New("not supported by this store")
