package kohakutest

import (
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	// The same driver as the code under test.
	_ "github.com/mattn/go-sqlite3"
)

// Formats as kohaku.Format's String method spells them, so a caller may
// pass f.String().
const (
	FormatA  = "A"
	FormatBC = "B/C"
)

// KohakuVault's statements (spec section 2.2), with {t} for the table name,
// which KohakuVault substitutes unquoted.
const (
	selectAll = "SELECT key, value FROM {t}"
	selectOne = "SELECT value FROM {t} WHERE key = ?1"
	upsertA   = "INSERT INTO {t}(key, value, size) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET value = excluded.value, size = excluded.size"
	upsertBC  = "INSERT INTO {t}(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
	deleteOne = "DELETE FROM {t} WHERE key = ?1"
)

func forTable(stmt, table string) string { return strings.ReplaceAll(stmt, "{t}", table) }

// open opens an existing file read-write as KohakuVault does (never
// creating it), with its busy timeout. No journal mode is set: the file's
// own stays.
func open(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("kohakutest: %v", err)
	}
	db, err := sql.Open("sqlite3", fileURI(path)+"?mode=rw&_busy_timeout=5000")
	if err != nil {
		tb.Fatalf("kohakutest: open %s: %v", path, err)
	}
	db.SetMaxOpenConns(1)
	return db
}

func closeDB(tb testing.TB, db *sql.DB) {
	tb.Helper()
	if err := db.Close(); err != nil {
		tb.Errorf("kohakutest: close: %v", err)
	}
}

// ReadAll reads a KV table with KohakuVault's own SELECT key, value FROM t
// and fails the test if any key or value is not a BLOB (KohakuVault's read
// would fail on it), or, in a format-A table, if size != length(value)
// (its get_to_file would truncate or fail). Keys are map keys as strings of
// their bytes.
func ReadAll(tb testing.TB, path, table string) map[string][]byte {
	tb.Helper()
	db := open(tb, path)
	defer closeDB(tb, db)
	tx, err := db.Begin()
	if err != nil {
		tb.Fatalf("kohakutest: begin: %v", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only transaction

	rows, err := tx.Query(forTable(selectAll, table))
	if err != nil {
		tb.Fatalf("kohakutest: %s: %v", path, err)
	}
	out := map[string][]byte{}
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			tb.Fatalf("kohakutest: %s: %v", path, err)
		}
		if _, dup := out[string(k)]; dup {
			tb.Errorf("kohakutest: %s table %s: key %x twice", path, table, k)
		}
		if v == nil {
			v = []byte{}
		}
		out[string(k)] = v
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("kohakutest: %s: %v", path, err)
	}
	rows.Close()

	check := "SELECT hex(key), typeof(key), typeof(value) FROM {t} WHERE typeof(key) != 'blob' OR typeof(value) != 'blob'"
	if hasSize(tb, tx, table) {
		check += " OR size IS NOT length(value) OR typeof(size) != 'integer'"
		check = strings.Replace(check, "typeof(value) FROM", "typeof(value) || ' size ' || quote(size) || ' length ' || length(value) FROM", 1)
	}
	bad, err := tx.Query(forTable(check, table))
	if err != nil {
		tb.Fatalf("kohakutest: %s: %v", path, err)
	}
	defer bad.Close()
	for bad.Next() {
		var k, kt, vt string
		if err := bad.Scan(&k, &kt, &vt); err != nil {
			tb.Fatalf("kohakutest: %s: %v", path, err)
		}
		tb.Errorf("kohakutest: %s table %s key %s: key is %s, value is %s; KohakuVault reads only BLOB keys and values (and size = length(value) in format A)",
			path, table, k, kt, vt)
	}
	if err := bad.Err(); err != nil {
		tb.Fatalf("kohakutest: %s: %v", path, err)
	}
	return out
}

// hasSize reports whether a table has format A's size column.
func hasSize(tb testing.TB, tx *sql.Tx, table string) bool {
	tb.Helper()
	var n int
	if err := tx.QueryRow("SELECT count(*) FROM pragma_table_info(?1) WHERE name = 'size'", table).Scan(&n); err != nil {
		tb.Fatalf("kohakutest: columns of %s: %v", table, err)
	}
	return n == 1
}

// GetLikeKohaku reads one value with KohakuVault's SELECT value FROM t
// WHERE key = ?1, the key bound as a BLOB; ok is false when no row came
// back. It fails the test if the value is not a BLOB.
func GetLikeKohaku(tb testing.TB, path, table string, key []byte) (value []byte, ok bool) {
	tb.Helper()
	db := open(tb, path)
	defer closeDB(tb, db)
	var typ string
	err := db.QueryRow(forTable("SELECT value, typeof(value) FROM {t} WHERE key = ?1", table), nonNil(key)).Scan(&value, &typ)
	if err == sql.ErrNoRows {
		return nil, false
	}
	if err != nil {
		tb.Fatalf("kohakutest: get %x from %s: %v", key, path, err)
	}
	if typ != "blob" {
		tb.Errorf("kohakutest: %s table %s key %x: value is %s, not blob", path, table, key, typ)
	}
	return nonNil(value), true
}

// PutLikeKohaku stores one value with KohakuVault's exact upsert for the
// format (FormatA: size = len(value)), autocommitted, key and value bound
// as BLOBs (an empty or nil value as a zero-length BLOB, as rusqlite does).
func PutLikeKohaku(tb testing.TB, path, table, format string, key, value []byte) {
	tb.Helper()
	db := open(tb, path)
	defer closeDB(tb, db)
	var err error
	switch format {
	case FormatA:
		_, err = db.Exec(forTable(upsertA, table), nonNil(key), nonNil(value), int64(len(value)))
	case FormatBC:
		_, err = db.Exec(forTable(upsertBC, table), nonNil(key), nonNil(value))
	default:
		tb.Fatalf("kohakutest: unknown format %q (want %q or %q)", format, FormatA, FormatBC)
	}
	if err != nil {
		tb.Fatalf("kohakutest: put %x into %s: %v", key, path, err)
	}
}

// DeleteLikeKohaku deletes one key with DELETE FROM t WHERE key = ?1 and
// returns whether a row was deleted.
func DeleteLikeKohaku(tb testing.TB, path, table string, key []byte) bool {
	tb.Helper()
	db := open(tb, path)
	defer closeDB(tb, db)
	res, err := db.Exec(forTable(deleteOne, table), nonNil(key))
	if err != nil {
		tb.Fatalf("kohakutest: delete %x from %s: %v", key, path, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		tb.Fatalf("kohakutest: delete %x from %s: %v", key, path, err)
	}
	return n > 0
}

// nonNil turns nil into an empty slice: mattn binds a nil []byte as NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Schema returns the whole sqlite_schema (type, name, table, SQL text), one
// row a line ordered by type and name, for before-and-after comparisons.
// rootpage is left out: it is where a table lives, not what it is, and a
// VACUUM may move it.
func Schema(tb testing.TB, path string) string {
	tb.Helper()
	return SchemaOf(tb, path)
}

// SchemaOf is Schema limited to the rows of the given tables and their
// indexes (all rows when none is given).
func SchemaOf(tb testing.TB, path string, tables ...string) string {
	tb.Helper()
	db := open(tb, path)
	defer closeDB(tb, db)
	rows, err := db.Query("SELECT type, name, tbl_name, quote(sql) FROM sqlite_schema ORDER BY type, name")
	if err != nil {
		tb.Fatalf("kohakutest: schema of %s: %v", path, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var typ, name, tbl, sqlText string
		if err := rows.Scan(&typ, &name, &tbl, &sqlText); err != nil {
			tb.Fatalf("kohakutest: schema of %s: %v", path, err)
		}
		if len(tables) == 0 || slices.Contains(tables, tbl) {
			fmt.Fprintf(&b, "%s|%s|%s|%s\n", typ, name, tbl, sqlText)
		}
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("kohakutest: schema of %s: %v", path, err)
	}
	return b.String()
}

// header reads the 100-byte SQLite header of a file.
func header(tb testing.TB, path string) []byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("kohakutest: %v", err)
	}
	defer f.Close()
	h := make([]byte, 100)
	if _, err := io.ReadFull(f, h); err != nil {
		tb.Fatalf("kohakutest: header of %s: %v", path, err)
	}
	if string(h[:16]) != "SQLite format 3\x00" {
		tb.Fatalf("kohakutest: %s is not a SQLite database", path)
	}
	return h
}

// PageSize returns the page size recorded in the file's header (bytes
// 16-17, 1 meaning 65536), read without opening a SQLite connection.
func PageSize(tb testing.TB, path string) int {
	tb.Helper()
	n := int(binary.BigEndian.Uint16(header(tb, path)[16:18]))
	if n == 1 {
		return 65536
	}
	return n
}

// JournalMode returns the journal mode persisted in the file's header:
// "wal" when bytes 18 and 19 are 2 (what PRAGMA journal_mode=WAL writes),
// else "delete" (a rollback journal: delete, truncate, persist or memory,
// which the file does not tell apart).
func JournalMode(tb testing.TB, path string) string {
	tb.Helper()
	h := header(tb, path)
	if h[18] == 2 && h[19] == 2 {
		return "wal"
	}
	return "delete"
}

// fileURI makes a SQLite file: URI of a path, escaping what would end it.
func fileURI(path string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }
