package kohaku

import (
	"errors"
	"fmt"

	"github.com/mattn/go-sqlite3"

	"github.com/kohakuvault/kvaultfs/store"
)

// headerLen is the length of KohakuVault's value header (spec 5.2).
const headerLen = 10

// checkHeader applies the header-magic policy to a value that begins
// with head (its first bytes, at least headerLen of them when the value
// is that long) and has size bytes. In a B/C table KohakuVault 0.7+ reads
// any value of 10 bytes or more starting 89 4B as a header (spec 5.2):
// a valid one is decoded, anything else fails to read. So a value that
// starts 89 4B is stored only if it is a valid version-1 header (known
// encoding, reserved bytes zero, closing magic 56 4B): then every reader
// gets what it would get from the same bytes written by KohakuVault itself
// (a copy of a value KohakuVault encoded, through the mount or the CLI).
// Any other such value is refused rather than stored where its own
// format's reader could not read it back. Format A (0.1-0.5) has no
// headers: every value is stored raw.
func (t *Table) checkHeader(head []byte, size int64) error {
	if t.info.Format != FormatBC || size < headerLen || len(head) < 2 || head[0] != 0x89 || head[1] != 0x4B {
		return nil
	}
	if validHeader(head) {
		return nil
	}
	return fmt.Errorf("%w: the value starts with the bytes 89 4B but is no valid KohakuVault header; KohakuVault 0.7 "+
		"and later would read it as one and fail to return it; a native vault (kvaultfs migrate) can hold it",
		store.ErrInvalidArgument)
}

// validHeader reports whether head (at least headerLen bytes) is a header
// that KohakuVault 0.7+ decodes without error (spec 5.2): version 1, an
// encoding it knows (0-6; 0xFF is reserved and fails), reserved bytes
// zero, and the closing magic.
func validHeader(head []byte) bool {
	return len(head) >= headerLen && head[0] == 0x89 && head[1] == 0x4B && head[2] == 1 && head[3] <= 6 &&
		head[5] == 0 && head[6] == 0 && head[7] == 0 && head[8] == 0x56 && head[9] == 0x4B
}

// rowOverhead bounds what a row holds besides its key and value bytes:
// SQLite's record header (its length and one serial type per column, at
// most 9 bytes each for a BLOB) and, in format A, the size column (at most
// 8 bytes; id, the rowid, is stored as NULL in the record). B/C needs at
// most 19 bytes, A at most 29.
const rowOverhead = 32

// CheckSize reports whether a value of size bytes under key fits in a
// row of a KohakuVault table: SQLite's length limit (SQLITE_MAX_LENGTH,
// 10^9, which KohakuVault's SQLite keeps too) applies to the whole
// record, key and value and record header together (see MaxValueSize). A
// value that does not fit is store.ErrTooLarge pointing to migration.
func CheckSize(key string, size int64) error {
	return store.Wrap("check size", key, checkSize(key, size))
}

// checkSize is CheckSize with its error not yet wrapped.
func checkSize(key string, size int64) error {
	if size > MaxValueSize-rowOverhead-int64(len(key)) {
		return rowTooLarge(key, size)
	}
	return nil
}

// tooLarge is the error of a value over MaxValueSize, for callers that
// know no key; rowTooLarge names the key's share of the row too.
func tooLarge(size int64) error {
	return rowTooLarge("", size)
}

// rowTooLarge is the error of a value that does not fit in a row.
func rowTooLarge(key string, size int64) error {
	return fmt.Errorf("%w: a value of %d bytes under a key of %d bytes is over KohakuVault's limit of %d bytes per row "+
		"(SQLite's limit on key, value and record header together); "+
		"copy the table to a native vault with `kvaultfs migrate`, which has no such limit",
		store.ErrTooLarge, size, len(key), int64(MaxValueSize))
}

// tooBig turns SQLite's SQLITE_TOOBIG, met by a value that passed
// CheckSize (a connection with a lower limit), into tooLarge.
func tooBig(err error, key string, size int64) error {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrTooBig {
		return rowTooLarge(key, size)
	}
	return err
}
