package vault

import "github.com/kohakuvault/kvaultfs/store"

// The errors a vault returns are the store's (see package store): every
// error from this package wraps one of them (or an I/O error from the
// operating system) inside an *Error naming the operation and key, so
// callers test with errors.Is. Some are refinements of another:
// ErrNotDir, ErrIsDir, ErrNameTooLong and ErrTooLarge are also
// ErrInvalidArgument.
var (
	// ErrNotFound: the key, file or attribute does not exist.
	ErrNotFound = store.ErrNotFound
	// ErrExists: the target exists and the operation must not replace it.
	ErrExists = store.ErrExists
	// ErrBusy: another process held the database locked through
	// BusyTimeout and every retry.
	ErrBusy = store.ErrBusy
	// ErrInvalidArgument: a bad option, key, name, offset or file.
	ErrInvalidArgument = store.ErrInvalidArgument
	// ErrCorrupt: stored data failed its checksum or SQLite reported a
	// malformed database. Never returned together with data.
	ErrCorrupt = store.ErrCorrupt
	// ErrReadOnly: the vault was opened read-only, or its file or
	// directory is not writable.
	ErrReadOnly = store.ErrReadOnly
	// ErrNoSpace: the disk (or the database's size limit) is full.
	ErrNoSpace = store.ErrNoSpace
	// ErrNotEmpty: a directory that must be empty is not.
	ErrNotEmpty = store.ErrNotEmpty
	// ErrChanged: a value was replaced or rewritten while a streamed read
	// spanning several transactions was under way.
	ErrChanged = store.ErrChanged
	// ErrClosed: the vault or file has been closed.
	ErrClosed = store.ErrClosed
	// ErrPermission: the operation is not allowed on this entry.
	ErrPermission = store.ErrPermission
	// ErrNotDir: a path component that must be a directory is a file.
	ErrNotDir = store.ErrNotDir
	// ErrIsDir: the key names a directory where a file is needed.
	ErrIsDir = store.ErrIsDir
	// ErrNameTooLong: a path component is longer than 255 bytes.
	ErrNameTooLong = store.ErrNameTooLong
	// ErrTooLarge: a size or offset is past MaxFileSize (EFBIG).
	ErrTooLarge = store.ErrTooLarge
)

// Error is the error type of every failed vault operation.
type Error = store.Error

// wrap gives err the operation and key (see store.Wrap).
func wrap(op, key string, err error) error { return store.Wrap(op, key, err) }

// classify maps a SQLite error to a sentinel (see store.Classify).
func classify(err error) error { return store.Classify(err) }

// isBusy reports whether err is SQLite's busy or locked error.
func isBusy(err error) bool { return store.IsBusy(err) }
