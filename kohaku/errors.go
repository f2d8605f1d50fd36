package kohaku

import "errors"

// Errors of recognition. Each also matches store.ErrInvalidArgument or
// store.ErrNotFound through errors.Is, so callers may test either the
// precise or the broad one.
var (
	// ErrNotSQLite: the file is not a SQLite database (also store.ErrInvalidArgument).
	ErrNotSQLite = errors.New("not a SQLite database")
	// ErrNoKVTable: no KohakuVault KV table in the file, or the named
	// table does not exist (also store.ErrNotFound).
	ErrNoKVTable = errors.New("no KohakuVault table")
	// ErrSeveralKVTables: several KohakuVault tables and none chosen
	// (also store.ErrInvalidArgument).
	ErrSeveralKVTables = errors.New("several KohakuVault tables")
	// ErrNotKVTable: the named table exists but has no KohakuVault KV
	// shape (also store.ErrInvalidArgument).
	ErrNotKVTable = errors.New("not a KohakuVault table")
)

// kindError is an error with its own message that matches several
// sentinels through errors.Is, without repeating their texts in the message.
type kindError struct {
	msg   string
	kinds []error
}

func (e *kindError) Error() string   { return e.msg }
func (e *kindError) Unwrap() []error { return e.kinds }

func newKindError(msg string, kinds ...error) error {
	return &kindError{msg: msg, kinds: kinds}
}
