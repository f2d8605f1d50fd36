package kohaku

import (
	"context"

	"github.com/kohakuvault/kvaultfs/store"
)

// Optimize runs VACUUM: SQLite rewrites the whole file into a temporary
// copy and back, returning the pages of deleted values to the file
// system and defragmenting the rest. It keeps the page size and the
// journal mode (neither is changed on any connection here) and every
// table of the file, KohakuVault's and others'. It needs free disk space
// up to twice the file's size, holds the write lock throughout (other
// writers, KohakuVault's included, wait up to their busy_timeout), and may
// renumber the rowids of B/C tables, which nothing in KohakuVault keeps
// (format A's id is an INTEGER PRIMARY KEY and stays).
func (t *Table) Optimize() error {
	if err := t.check(true); err != nil {
		return store.Wrap("optimize", "", err)
	}
	_, err := t.exec(`VACUUM`)
	return store.Wrap("optimize", "", err)
}

// DataVersion returns PRAGMA data_version on one connection kept for
// it: the value changes whenever another connection, in this process or
// another, has committed a change to the file since the last call.
// Compare successive values to poll for changes.
func (t *Table) DataVersion() (int64, error) {
	if err := t.check(false); err != nil {
		return 0, store.Wrap("data version", "", err)
	}
	var v int64
	if err := t.dv.QueryRowContext(context.Background(), `PRAGMA data_version`).Scan(&v); err != nil {
		return 0, store.Wrap("data version", "", err)
	}
	return v, nil
}
