// Package kohakutest checks KohakuVault files the way KohakuVault itself
// reads and writes them, for the tests of other packages: its own SELECT and
// upsert statements, typeof checks on every key and value, format A's size
// column, the file's schema, page size and journal mode, and copies of the
// committed fixtures (kohaku/testdata, written by scripts/mkkohaku).
//
// It is imported only by tests, and it does not import kohaku, so that
// kohaku's own in-package tests can use it.
package kohakutest
