package store

import (
	"errors"
	"testing"

	"github.com/mattn/go-sqlite3"
)

// TestClassifyTooBig: SQLITE_TOOBIG (a string or BLOB over SQLite's
// length limit) is ErrTooLarge, which is also ErrInvalidArgument.
func TestClassifyTooBig(t *testing.T) {
	err := Classify(sqlite3.Error{Code: sqlite3.ErrTooBig})
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Classify(SQLITE_TOOBIG) = %v, want ErrTooLarge", err)
	}
	if err := Wrap("put", "k", sqlite3.Error{Code: sqlite3.ErrTooBig}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Wrap(SQLITE_TOOBIG) = %v, want ErrTooLarge", err)
	}
}
