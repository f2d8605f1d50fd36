package main

import "strings"

// The statements below are KohakuVault's, byte for byte (spec sections 3,
// 4 and 5.1): SQLite keeps the text of a CREATE statement, whitespace
// included, in sqlite_schema, so a fixture built from a reformatted statement
// would not be the file KohakuVault writes.

// formatASchema is the format-A table and its redundant unique index
// (KohakuVault v0.1.0 … v0.5.0), run as one batch like execute_batch does.
const formatASchema = "\n" +
	"            CREATE TABLE IF NOT EXISTS {t} (\n" +
	"                id    INTEGER PRIMARY KEY,\n" +
	"                key   BLOB    NOT NULL UNIQUE,\n" +
	"                value BLOB    NOT NULL,\n" +
	"                size  INTEGER NOT NULL\n" +
	"            );\n" +
	"\n" +
	"            CREATE UNIQUE INDEX IF NOT EXISTS {t}_key_idx\n" +
	"            ON {t}(key);\n" +
	"            "

// formatBSchema is the B/C table (v0.6.0 onwards).
const formatBSchema = "\n" +
	"            CREATE TABLE IF NOT EXISTS {t} (\n" +
	"                key   BLOB PRIMARY KEY NOT NULL,\n" +
	"                value BLOB NOT NULL\n" +
	"            );\n" +
	"            "

// metaSchema is kohakuvault_meta as MetaTable::ensure_table creates it (v0.7.0+).
const metaSchema = "CREATE TABLE IF NOT EXISTS kohakuvault_meta (\n" +
	"                key TEXT PRIMARY KEY,\n" +
	"                value TEXT NOT NULL\n" +
	"            );"

// columnVaultSchema is ColumnVault's v0.4.0+ schema (spec section 6). The
// spec gives its columns, not its whitespace, so only the columns are exact.
const columnVaultSchema = `
CREATE TABLE IF NOT EXISTS kohakuvault_meta (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            );
CREATE TABLE IF NOT EXISTS col_meta (
                col_id INTEGER PRIMARY KEY,
                name TEXT UNIQUE NOT NULL,
                dtype TEXT NOT NULL,
                elem_size INTEGER NOT NULL,
                length INTEGER NOT NULL,
                chunk_bytes INTEGER NOT NULL,
                min_chunk_bytes INTEGER DEFAULT 131072,
                max_chunk_bytes INTEGER DEFAULT 16777216
            );
CREATE INDEX IF NOT EXISTS col_meta_name_idx ON col_meta(name);
CREATE TABLE IF NOT EXISTS col_chunks (
                col_id INTEGER NOT NULL,
                chunk_idx INTEGER NOT NULL,
                data BLOB NOT NULL,
                actual_size INTEGER NOT NULL,
                bytes_used INTEGER NOT NULL DEFAULT 0,
                has_deleted INTEGER NOT NULL DEFAULT 0,
                start_elem_idx INTEGER DEFAULT 0,
                end_elem_idx INTEGER DEFAULT 0,
                PRIMARY KEY (col_id, chunk_idx),
                FOREIGN KEY (col_id) REFERENCES col_meta(col_id) ON DELETE CASCADE
            );
INSERT OR IGNORE INTO kohakuvault_meta (key, value) VALUES ('schema_version', '2');
`

// textVaultSchema is TextVault's (v0.8.0+, spec section 6) with one text
// column named content. FTS5 is not compiled into mattn/go-sqlite3 without
// a build tag, so this part is run through the sqlite3 CLI.
const textVaultSchema = `
CREATE VIRTUAL TABLE IF NOT EXISTS text_vault USING fts5(content, value_ref UNINDEXED);
CREATE TABLE IF NOT EXISTS text_vault_values (id INTEGER PRIMARY KEY AUTOINCREMENT, value BLOB NOT NULL);
`

// upsertA and upsertBC are KohakuVault's upserts (spec section 2.2).
const (
	upsertA  = "INSERT INTO {t}(key, value, size) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET value = excluded.value, size = excluded.size"
	upsertBC = "INSERT INTO {t}(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)

// forTable substitutes a table name into one of the statements above, the
// way KohakuVault's format! does (no quoting: the name is an identifier).
func forTable(stmt, table string) string {
	return strings.ReplaceAll(stmt, "{t}", table)
}
