// Command mkkohaku writes the KohakuVault fixture files of kohaku/testdata
// from the format spec (docs/kohakuvault-format.md), the way KohakuVault
// writes them: its CREATE statements byte for byte, page_size 32768 set
// before the first table, journal_mode WAL persisted in the header, keys and
// values bound as BLOBs through its own upserts, then checkpointed and closed
// so that no -wal or -shm file is left. It also writes manifest.json, the
// hex key, length and SHA-256 of every value, for tests to compare against.
//
// The TextVault (FTS5) tables of format-c.db are created through the sqlite3
// CLI because mattn/go-sqlite3 is built here without FTS5.
//
// Usage:
//
//	go run ./scripts/mkkohaku -out kohaku/testdata
package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	_ "github.com/mattn/go-sqlite3"

	"github.com/kohakuvault/kvaultfs/internal/kohakufixtures"
)

func main() {
	out := flag.String("out", "", "directory to write the fixture files and manifest.json into")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mkkohaku -out DIR")
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		log.Fatal(err)
	}
}

func run(out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, f := range kohakufixtures.Files() {
		path := filepath.Join(out, f.Name)
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if err := build(path, f); err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(path + suffix); err == nil {
				return fmt.Errorf("%s: %s left behind after close", f.Name, suffix)
			}
		}
	}
	m, err := json.MarshalIndent(kohakufixtures.BuildManifest(), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "manifest.json"), append(m, '\n'), 0o644)
}

// build writes one fixture file.
func build(path string, f kohakufixtures.File) error {
	switch f.Name {
	case "foreign.db":
		return buildForeign(path)
	}
	db, err := openLikeKohaku(path)
	if err != nil {
		return err
	}
	defer db.Close()
	switch f.Name {
	case "format-c.db":
		// ColumnVault (v0.4+) opened the file too: kohakuvault_meta
		// with schema_version, col_meta and col_chunks.
		if _, err := db.Exec(columnVaultSchema); err != nil {
			return fmt.Errorf("ColumnVault schema: %w", err)
		}
		if _, err := db.Exec(`INSERT INTO col_meta (col_id, name, dtype, elem_size, length, chunk_bytes) VALUES (1, 'scores', 'f64', 8, 3, 131072)`); err != nil {
			return err
		}
		data := make([]byte, 24) // three f64 values: 0.5, 1.5, 2.5
		copy(data, []byte{0, 0, 0, 0, 0, 0, 0xe0, 0x3f, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0, 0, 0, 0, 0, 0, 0x04, 0x40})
		if _, err := db.Exec(`INSERT INTO col_chunks (col_id, chunk_idx, data, actual_size, bytes_used, has_deleted, start_elem_idx, end_elem_idx) VALUES (1, 0, ?, 24, 24, 0, 0, 3)`, data); err != nil {
			return err
		}
	}
	for _, t := range f.KV {
		if err := createKV(db, t); err != nil {
			return fmt.Errorf("table %s: %w", t.Name, err)
		}
	}
	if f.Name == "format-c.db" {
		// A user who called kv.enable_headers() and kv.enable_auto_pack().
		if _, err := db.Exec(`INSERT OR REPLACE INTO kohakuvault_meta (key, value) VALUES ('kv_features', 'headers_v1,auto_pack_v1')`); err != nil {
			return err
		}
	}
	for _, t := range f.KV {
		if err := fill(db, t); err != nil {
			return fmt.Errorf("table %s: %w", t.Name, err)
		}
	}
	if err := closeLikeKohaku(db); err != nil {
		return err
	}
	if f.Name == "format-c.db" {
		return addTextVault(path)
	}
	return nil
}

// openLikeKohaku opens a new file as KVault's open_connection does (spec
// 2.1): page size before anything else, then WAL, on one connection so the
// per-connection pragmas apply to every statement that follows.
func openLikeKohaku(path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	for _, p := range []string{
		"PRAGMA page_size=32768",
		"PRAGMA journal_mode='WAL'",
		"PRAGMA wal_autocheckpoint=1000",
		"PRAGMA synchronous=NORMAL",
		"PRAGMA temp_store=MEMORY",
	} {
		if _, err := db.Exec(p); err != nil {
			db.Close()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return db, nil
}

// closeLikeKohaku checkpoints the WAL into the file and closes the last
// connection, which removes -wal and -shm.
func closeLikeKohaku(db *sql.DB) error {
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		db.Close()
		return err
	}
	return db.Close()
}

// createKV creates a KV table with KohakuVault's statements; a format-C
// table is preceded by kohakuvault_meta as in KVault.__init__ of v0.7+.
func createKV(db *sql.DB, t kohakufixtures.Table) error {
	switch t.Line {
	case "A":
		_, err := db.Exec(forTable(formatASchema, t.Name))
		return err
	case "B":
		_, err := db.Exec(forTable(formatBSchema, t.Name))
		return err
	case "C":
		if _, err := db.Exec(metaSchema); err != nil {
			return err
		}
		_, err := db.Exec(forTable(formatBSchema, t.Name))
		return err
	}
	return fmt.Errorf("unknown KohakuVault line %q", t.Line)
}

// fill stores every entry with KohakuVault's upsert, one autocommit
// statement each, keys and values bound as []byte (an empty value as a
// non-nil empty slice: mattn binds nil as NULL).
func fill(db *sql.DB, t kohakufixtures.Table) error {
	for _, e := range t.Entries {
		key := append([]byte{}, e.Key...)
		value := append([]byte{}, e.Value...)
		var err error
		if t.Format == kohakufixtures.FormatA {
			_, err = db.Exec(forTable(upsertA, t.Name), key, value, int64(len(value)))
		} else {
			_, err = db.Exec(forTable(upsertBC, t.Name), key, value)
		}
		if err != nil {
			return fmt.Errorf("put %x: %w", e.Key, err)
		}
	}
	return nil
}

// addTextVault adds a TextVault table and one document through the sqlite3
// CLI (FTS5). The stored value is the header-encoded str, as TextVault
// stores values with the KV header rules.
func addTextVault(path string) error {
	script := ".bail on\n" + textVaultSchema +
		"INSERT INTO text_vault_values (value) VALUES (X'" + strings.ToUpper(fmt.Sprintf("%x", kohakufixtures.HeaderStr)) + "');\n" +
		"INSERT INTO text_vault (content, value_ref) VALUES ('héllo wörld', 1);\n" +
		"PRAGMA wal_checkpoint(TRUNCATE);\n"
	cmd := exec.Command("sqlite3", path)
	cmd.Stdin = strings.NewReader(script)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("sqlite3 CLI (TextVault tables): %w", err)
	}
	return nil
}

// buildForeign writes another program's database: no vault of either kind.
func buildForeign(path string) error {
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(`
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), total_cents INTEGER NOT NULL);
CREATE TABLE sessions (token BLOB PRIMARY KEY, user_id INTEGER NOT NULL, expires INTEGER NOT NULL);
INSERT INTO users (name, email) VALUES ('ada', 'ada@example.org'), ('linus', 'linus@example.org');
INSERT INTO orders (user_id, total_cents) VALUES (1, 1299), (2, 450);
INSERT INTO sessions (token, user_id, expires) VALUES (X'00112233', 1, 1900000000);
`)
	if err != nil {
		return err
	}
	return db.Close()
}
