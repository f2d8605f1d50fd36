package kohaku

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// watchdog fails loudly if the test runs longer than d: a lock waited for
// forever would otherwise hang the suite.
func watchdog(t testing.TB, d time.Duration) {
	t.Helper()
	name := t.Name()
	timer := time.AfterFunc(d, func() { panic(fmt.Sprintf("%s: still running after %v (hung?)", name, d)) })
	t.Cleanup(func() { timer.Stop() })
}

// The spec's CREATE statements (docs/kohakuvault-format.md 3, 4, 5.1), byte
// for byte, with {t} = kv.
const (
	createA = `
            CREATE TABLE IF NOT EXISTS kv (
                id    INTEGER PRIMARY KEY,
                key   BLOB    NOT NULL UNIQUE,
                value BLOB    NOT NULL,
                size  INTEGER NOT NULL
            );

            CREATE UNIQUE INDEX IF NOT EXISTS kv_key_idx
            ON kv(key);
            `
	createB = `
            CREATE TABLE IF NOT EXISTS kv (
                key   BLOB PRIMARY KEY NOT NULL,
                value BLOB NOT NULL
            );
            `
	createMeta = `CREATE TABLE IF NOT EXISTS kohakuvault_meta (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            );`
)

// rawDB opens path as KohakuVault does (its pragmas), for building files
// and reading them back with KohakuVault's statements.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// newFile creates a KohakuVault file of format f (A, or C: B's table
// plus kohakuvault_meta) as KohakuVault 0.x creates it: page size 32768,
// WAL unless wal is false.
func newFile(t testing.TB, f Format, wal bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "media.db")
	db := rawDB(t, path)
	stmts := []string{`PRAGMA page_size = 32768`}
	if wal {
		stmts = append(stmts, `PRAGMA journal_mode = WAL`)
	}
	if f == FormatA {
		stmts = append(stmts, createA)
	} else {
		stmts = append(stmts, createMeta, createB)
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	return path
}

// openTable creates a file of format f and opens its table.
func openTable(t testing.TB, f Format) *Table {
	t.Helper()
	tb, err := Open(newFile(t, f, true), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

// kohakuGet reads key as KohakuVault does (SELECT value FROM kv WHERE key
// = ?1 with a BLOB key), checking what rusqlite's Vec<u8> read requires:
// value and key are BLOBs; in format A also size = length(value).
func kohakuGet(t testing.TB, path string, f Format, key string) ([]byte, bool) {
	t.Helper()
	db := rawDB(t, path)
	defer db.Close()
	var v []byte
	var tv, tk string
	var size, length sql.NullInt64
	q := `SELECT value, typeof(value), typeof(key), NULL, length(value) FROM kv WHERE key = ?1`
	if f == FormatA {
		q = `SELECT value, typeof(value), typeof(key), size, length(value) FROM kv WHERE key = ?1`
	}
	err := db.QueryRow(q, []byte(key)).Scan(&v, &tv, &tk, &size, &length)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("KohakuVault's SELECT of %q: %v", key, err)
	}
	if tv != "blob" || tk != "blob" {
		t.Fatalf("key %q: typeof(value)=%s typeof(key)=%s, KohakuVault reads only BLOBs", key, tv, tk)
	}
	if f == FormatA && (!size.Valid || size.Int64 != length.Int64) {
		t.Fatalf("key %q: size column %v, length(value) %d", key, size, length.Int64)
	}
	if v == nil {
		v = []byte{}
	}
	return v, true
}

// fileState is what no operation may change: the schema, page size and
// journal mode.
func fileState(t testing.TB, path string) string {
	t.Helper()
	db := rawDB(t, path)
	defer db.Close()
	var b strings.Builder
	rows, err := db.Query(`SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a, n, tn, s string
		if err := rows.Scan(&a, &n, &tn, &s); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s %s %q\n", a, n, tn, s)
	}
	rows.Close()
	var ps int
	var jm string
	if err := db.QueryRow(`PRAGMA page_size`).Scan(&ps); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&jm); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "page_size %d journal_mode %s", ps, jm)
	return b.String()
}

// pattern returns n bytes that differ at every offset from a shifted copy,
// seeded so two values differ.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i) ^ byte(i>>8) ^ byte(i>>16) ^ seed
	}
	if n >= 2 && p[0] == 0x89 && p[1] == 0x4B {
		p[0] = 0
	}
	return p
}

// zeros yields n zero bytes without allocating them.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	m := int64(len(p))
	if m > z.n {
		m = z.n
	}
	clear(p[:m])
	z.n -= m
	return int(m), nil
}

// failing yields data then fails with err.
type failing struct {
	r   io.Reader
	err error
}

func (f *failing) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func mustEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes, want %d (differ)", what, len(got), len(want))
	}
}

var formats = []Format{FormatA, FormatBC}
