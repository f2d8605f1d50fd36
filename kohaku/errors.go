package kohaku

import "errors"

// ErrInvalidArgument and ErrNotFound stand in for store.ErrInvalidArgument
// and store.ErrNotFound until the store package exists; when it lands they
// become aliases of those (var ErrInvalidArgument = store.ErrInvalidArgument)
// so that errors.Is keeps working for every caller.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
)

// Errors of recognition. Each also matches ErrInvalidArgument or ErrNotFound
// through errors.Is, so callers may test either the precise or the broad one.
var (
	// ErrNotSQLite: the file is not a SQLite database (also ErrInvalidArgument).
	ErrNotSQLite = errors.New("not a SQLite database")
	// ErrNoKVTable: no KohakuVault KV table in the file, or the named
	// table does not exist (also ErrNotFound).
	ErrNoKVTable = errors.New("no KohakuVault table")
	// ErrSeveralKVTables: several KohakuVault tables and none chosen
	// (also ErrInvalidArgument).
	ErrSeveralKVTables = errors.New("several KohakuVault tables")
	// ErrNotKVTable: the named table exists but has no KohakuVault KV
	// shape (also ErrInvalidArgument).
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
