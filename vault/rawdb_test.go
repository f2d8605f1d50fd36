package vault

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Direct SQLite access for tests that look at, or damage, the stored
// rows behind the vault's back, and a consistency check of the tree.

// rawDB opens the database file with the SQLite driver, bypassing the
// vault. readOnly opens it with mode=ro; otherwise it is created if
// missing.
func rawDB(t testing.TB, path string, readOnly bool) *sql.DB {
	t.Helper()
	mode := "rwc"
	if readOnly {
		mode = "ro"
	}
	db, err := sql.Open("sqlite3", fileURI(path, url.Values{"mode": {mode}, "_busy_timeout": {"10000"}}))
	if err != nil {
		t.Fatalf("raw open %s: %v", path, err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// rawCount runs a count query and returns its result.
func rawCount(t testing.TB, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(tableSQL(DefaultTable, query), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// fileSHA256 returns the hex SHA-256 of a file's bytes.
func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// dirNames lists a directory's entries.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// contentTables are the tables of format 1 that hold the vault's content
// (leaving out the sessions and open files, a process's bookkeeping).
var contentTables = []string{"meta", "inodes", "dentries", "chunks", "xattrs", "binkeys"}

// dbDigest hashes every row of the vault's content tables, read through
// a separate read-only connection: two equal digests mean no change to
// the content was committed in between.
func dbDigest(t testing.TB, path string) string {
	t.Helper()
	db := rawDB(t, path, true)
	defer db.Close()
	h := sha256.New()
	for _, tbl := range contentTables {
		rows, err := db.Query(fmt.Sprintf(`SELECT * FROM %s_%s ORDER BY 1, 2`, DefaultTable, tbl))
		if err != nil {
			t.Fatalf("digest %s: %v", tbl, err)
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(h, "%s:%v\n", tbl, vals)
		}
		rows.Close()
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkConsistent checks the invariants of the stored tree on a closed
// (or quiescent) vault file, as a file system checker would:
//   - no inode without links (a freed streamed put, a file removed while
//     open) is left once every holder is gone, and no session or open row;
//   - every chunk row belongs to a file that has a link, is no longer
//     than its chunk size and holds no byte at or past the file's size;
//   - link counts match the entries (a directory has 2 plus one per
//     subdirectory);
//   - every binary-key row has its entry and vice versa;
//   - PRAGMA integrity_check is ok.
func checkConsistent(t testing.TB, path string) {
	t.Helper()
	db := rawDB(t, path, true)
	defer db.Close()
	var problems []string
	check := func(what, query string) {
		if n := rawCount(t, db, query); n != 0 {
			problems = append(problems, fmt.Sprintf("%d %s", n, what))
		}
	}
	check("inodes with no links", `SELECT count(*) FROM {t}_inodes WHERE nlink = 0`)
	check("sessions left", `SELECT count(*) FROM {t}_sessions`)
	check("open rows left", `SELECT count(*) FROM {t}_open`)
	check("chunk rows of missing inodes", `SELECT count(*) FROM {t}_chunks WHERE inode NOT IN (SELECT id FROM {t}_inodes)`)
	check("chunk rows of unlinked inodes", `SELECT count(*) FROM {t}_chunks WHERE inode NOT IN (SELECT child FROM {t}_dentries)`)
	check("chunk rows of non-files", `SELECT count(*) FROM {t}_chunks c JOIN {t}_inodes i ON i.id = c.inode WHERE i.kind != 1`)
	check("chunk rows longer than their chunk", `SELECT count(*) FROM {t}_chunks c JOIN {t}_inodes i ON i.id = c.inode WHERE c.len > i.chunk_size OR c.len != length(c.data)`)
	check("chunk rows holding bytes past the size", `SELECT count(*) FROM {t}_chunks c JOIN {t}_inodes i ON i.id = c.inode WHERE c.idx * i.chunk_size + c.len > i.size`)
	check("empty chunk rows", `SELECT count(*) FROM {t}_chunks WHERE len = 0`)
	check("entries of missing inodes", `SELECT count(*) FROM {t}_dentries WHERE child NOT IN (SELECT id FROM {t}_inodes)`)
	check("entries in non-directories", `SELECT count(*) FROM {t}_dentries d JOIN {t}_inodes p ON p.id = d.parent WHERE p.kind != 2`)
	check("files with wrong link counts", `SELECT count(*) FROM {t}_inodes i WHERE i.kind != 2
		AND i.nlink != (SELECT count(*) FROM {t}_dentries WHERE child = i.id)`)
	check("directories with wrong link counts", `SELECT count(*) FROM {t}_inodes i WHERE i.kind = 2
		AND i.nlink != 2 + (SELECT count(*) FROM {t}_dentries d JOIN {t}_inodes c ON c.id = d.child WHERE d.parent = i.id AND c.kind = 2)`)
	check("directories with several entries", `SELECT count(*) FROM (SELECT child FROM {t}_dentries d JOIN {t}_inodes i ON i.id = d.child
		WHERE i.kind = 2 GROUP BY child HAVING count(*) > 1)`)
	check("binary keys without an entry", `SELECT count(*) FROM {t}_binkeys WHERE name NOT IN (SELECT name FROM {t}_dentries WHERE parent = 3)`)
	check("entries in the keys directory without a key", `SELECT count(*) FROM {t}_dentries WHERE parent = 3 AND name NOT IN (SELECT name FROM {t}_binkeys)`)
	var ok string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		problems = append(problems, fmt.Sprintf("integrity_check: %q %v", ok, err))
	}
	if len(problems) > 0 {
		t.Fatalf("%s is inconsistent:\n  %s", filepath.Base(path), strings.Join(problems, "\n  "))
	}
}

// keyOrder sorts keys as Keys lists them: path keys first, component by
// component, then every other key by its bytes. It is written here from
// the documented order, independently of the package's compareKeys.
func keyOrder(keys []string) {
	isPath := func(k string) ([]string, bool) {
		if k == "" || strings.Contains(k, "\x00") {
			return nil, false
		}
		parts := strings.Split(k, "/")
		for _, p := range parts {
			if p == "" || p == "." || p == ".." || len(p) > 255 {
				return nil, false
			}
		}
		return parts, parts[0] != ".kvault"
	}
	slices.SortFunc(keys, func(a, b string) int {
		pa, aok := isPath(a)
		pb, bok := isPath(b)
		switch {
		case aok && bok:
			return slices.Compare(pa, pb)
		case aok:
			return -1
		case bok:
			return 1
		}
		return strings.Compare(a, b)
	})
}
