// Package kohaku serves tables of KohakuVault files (the Python/Rust
// key-value store kvaultfs follows) in KohakuVault's own on-disk formats A
// and B/C, described in the shared KOHAKUVAULT-FORMAT.md. This part holds
// the recognition of such tables: a survey of a file by the shape of its
// tables, never by their names, and the choice of one table. Table (table.go
// and the files named by operation) is one such table opened read-write:
// KohakuVault's own statements and bindings, large values streamed through
// SQLite's incremental blob I/O (internal/sqlite), and nothing else in the
// file ever changed.
package kohaku
