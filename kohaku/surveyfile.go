package kohaku

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mattn/go-sqlite3"

	"github.com/kohakuvault/kvaultfs/store"
)

// sqliteMagic starts every SQLite database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// SurveyFile surveys a file without changing it. A missing or 0-byte file is
// an empty survey (a new vault may be made there); a file that is not a
// SQLite database is an error matching ErrNotSQLite and store.ErrInvalidArgument,
// found from its first 100 bytes without handing it to SQLite at all.
//
// How the file is opened, so that nothing is written:
//   - normally with mode=ro;
//   - but a WAL-mode file (header bytes 18/19 = 2) that has no -wal file
//     beside it is opened read-write with query_only set: SQLite's read-only
//     connection then creates -wal and -shm to read a WAL database and,
//     being read-only, cannot remove them when it closes, so every survey
//     would leave two files behind. A read-write connection that writes
//     nothing creates the same two files and, as the last connection,
//     removes them at close; the database file itself is never written
//     (its bytes and mtime are unchanged, which the tests check).
//   - if that read-write open is impossible (a read-only directory or
//     file), with immutable=1: with no -wal file and no way to create one,
//     no other process can be writing the file in WAL mode either.
//
// When a -wal file exists another connection has the file open, and mode=ro
// reads through its -wal and -shm without creating anything.
func SurveyFile(path string) (Survey, error) {
	empty := Survey{Tables: []string{}, KV: []TableInfo{}}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return empty, nil
	}
	if err != nil {
		return Survey{}, fmt.Errorf("survey %s: %w", path, err)
	}
	if fi.IsDir() {
		return Survey{}, newKindError(fmt.Sprintf("survey %s: is a directory, not a SQLite database", path), ErrNotSQLite, store.ErrInvalidArgument)
	}
	if fi.Size() == 0 {
		return empty, nil
	}
	header, err := readHeader(path)
	if err != nil {
		return Survey{}, err
	}
	if len(header) < 100 || !bytes.HasPrefix(header, sqliteMagic) {
		return Survey{}, newKindError(fmt.Sprintf("survey %s: not a SQLite database (it does not start with %q)", path, "SQLite format 3"), ErrNotSQLite, store.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return Survey{}, fmt.Errorf("survey %s: %w", path, err)
	}
	walMode := header[18] == 2 && header[19] == 2
	_, walErr := os.Stat(abs + "-wal")
	if walMode && errors.Is(walErr, os.ErrNotExist) {
		s, err := surveyURI(abs, "mode=rw&_query_only=1")
		if err == nil {
			return s, nil
		}
		if s, err2 := surveyURI(abs, "mode=ro&immutable=1"); err2 == nil {
			return s, nil
		}
		return Survey{}, surveyError(path, err)
	}
	s, err := surveyURI(abs, "mode=ro")
	if err != nil {
		return Survey{}, surveyError(path, err)
	}
	return s, nil
}

// surveyError wraps an error of SQLite; SQLITE_NOTADB (a file with SQLite's
// magic but a damaged header or first page) becomes ErrNotSQLite too.
func surveyError(path string, err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrNotADB {
		return newKindError(fmt.Sprintf("survey %s: not a SQLite database (%v)", path, err), ErrNotSQLite, store.ErrInvalidArgument, err)
	}
	return fmt.Errorf("survey %s: %w", path, err)
}

// readHeader returns the first 100 bytes of a file (fewer if it is shorter).
func readHeader(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("survey %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, 100)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("survey %s: read header: %w", path, err)
	}
	return buf[:n], nil
}

// surveyURI opens an absolute path with URI parameters on one connection
// and surveys it inside one read transaction, for a consistent snapshot.
func surveyURI(abs, params string) (Survey, error) {
	db, err := sql.Open("sqlite3", fileURI(abs)+"?"+params+"&_busy_timeout=5000")
	if err != nil {
		return Survey{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return Survey{}, err
	}
	s, err := SurveyDB(ctx, tx)
	if rerr := tx.Rollback(); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return Survey{}, err
	}
	return s, db.Close()
}

// fileURI makes a SQLite file: URI of an absolute path, escaping the
// characters that would end the path ('?', '#') and the escape itself.
func fileURI(abs string) string {
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	return "file:" + r.Replace(abs)
}
