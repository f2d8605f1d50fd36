// Package kohaku serves tables of KohakuVault files (the Python/Rust
// key-value store kvaultfs follows) in KohakuVault's own on-disk formats A
// and B/C, described in docs/kohakuvault-format.md ("the spec" in comments
// here, with its section numbers): the recognition of such tables by the
// shape of their columns, never by their names (survey.go); one table
// opened read-write (Table: KohakuVault's own statements and bindings,
// large values streamed through SQLite's incremental blob I/O in
// internal/sqlite, nothing else in the file ever changed); the table seen
// as a file system for the mount (Table.FS, fs*.go); and Create, which
// makes a new file as KohakuVault does.
package kohaku
