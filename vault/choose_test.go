package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The choice Open makes between the native vault, a KohakuVault table and
// a refusal (chooseStore), in the cases a review found wrong: each of
// these tests failed on the first version of chooseStore.

// sqliteFile makes an SQLite file with the statements run in it.
func sqliteFile(t *testing.T, stmts ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.db")
	db := rawDB(t, path, false)
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// refused checks that Open(path, o) fails with ErrInvalidArgument naming
// want, and leaves the file byte for byte as it was.
func refused(t *testing.T, path string, o *Options, want string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(path, o)
	if err == nil {
		v.Close()
		t.Fatalf("Open succeeded; want a refusal naming %q", want)
	}
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open: %v; want ErrInvalidArgument naming %q", err, want)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a refused open changed the file")
	}
}

// TestOpenTableNamedLikeOurs: another program's table called kvault_meta
// is not a vault: before, Open took it for one created halfway and added
// the rest of a vault to the file.
func TestOpenTableNamedLikeOurs(t *testing.T) {
	path := sqliteFile(t,
		`CREATE TABLE kvault_meta (key TEXT PRIMARY KEY, value TEXT)`,
		`CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)`,
		`INSERT INTO kvault_meta VALUES ('theme', 'dark')`)
	refused(t, path, nil, "kvault_meta")
	o := DefaultOptions()
	o.Init = true
	refused(t, path, o, "named like a kvaultfs vault's (kvault_meta)")
	o.Table = "media"
	v, err := Open(path, o)
	if err != nil {
		t.Fatalf("Init under another prefix: %v", err)
	}
	v.Close()
}

// TestInitRefusesTakenNames: a VectorKVault named kvault has a shadow
// table kvault_chunks; Init used to take it for the vault's own chunks,
// leaving a vault that failed every write.
func TestInitRefusesTakenNames(t *testing.T) {
	path := sqliteFile(t,
		`CREATE TABLE kvault_chunks (rowid INTEGER PRIMARY KEY, size INTEGER NOT NULL, validity BLOB NOT NULL, rowids BLOB NOT NULL)`,
		`INSERT INTO kvault_chunks VALUES (1, 1024, x'00', x'00')`)
	o := DefaultOptions()
	o.Init = true
	refused(t, path, o, "kvault_chunks")
}

// TestOpenNativeBesideKohaku: a file holding both a native vault and a
// KohakuVault table (what an older kvaultfs left behind) is refused when
// no table is chosen, naming both, instead of silently serving the
// native vault and hiding the user's KohakuVault keys; --table chooses.
func TestOpenNativeBesideKohaku(t *testing.T) {
	path := filepath.Join(t.TempDir(), "both.db")
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "native", []byte("n"))
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path, false)
	for _, s := range []string{
		`CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)`,
		`INSERT INTO kv VALUES (CAST('photo' AS BLOB), x'0102')`,
	} {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	refused(t, path, nil, "both a kvaultfs vault (kvault) and KohakuVault tables (kv)")
	for table, key := range map[string]string{"kv": "photo", "kvault": "native"} {
		o := DefaultOptions()
		o.Table = table
		v, err := Open(path, o)
		if err != nil {
			t.Fatalf("Open with Table %q: %v", table, err)
		}
		if _, err := v.Get(key); err != nil {
			t.Errorf("Table %q: Get(%q): %v", table, key, err)
		}
		v.Close()
	}
}

// TestOpenTwoKohakuTablesOneNamedKvault: a KohakuVault table called
// kvault (users passed table="kvault") beside another is refused like any
// two tables; it used to be served because the default prefix is kvault.
func TestOpenTwoKohakuTablesOneNamedKvault(t *testing.T) {
	path := sqliteFile(t,
		`CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)`,
		`CREATE TABLE kvault (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)`,
		`INSERT INTO kv VALUES (x'61', x'31')`)
	refused(t, path, nil, "kv, kvault")
	o := DefaultOptions()
	o.Table = "kvault"
	v, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if table, _, _ := v.Kohaku(); table != "kvault" {
		t.Errorf("Table kvault served %q", table)
	}
	v.Close()
}
