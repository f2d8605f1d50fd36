package vault

import (
	"database/sql"
)

// SEEK_DATA and SEEK_HOLE over chunk rows, at a cost that does not grow
// with the file: cp and tar ask at every file, and a 1 TiB file has 16
// million chunks. SEEK_DATA is one indexed min(idx). SEEK_HOLE walks the
// run of data that starts at the offset in windows of seekWindow chunks,
// one statement each (its own short read transaction), which returns the
// first chunk of the window whose successor has no row; after
// seekMaxWindows windows without a hole it answers the end of the file,
// which lseek(2) allows (a hole may always be reported as data) and which
// costs the caller only reading zeros where a later hole was.
var (
	seekWindow     int64 = 4096
	seekMaxWindows       = 64
)

// seekDataChunk is SEEK_DATA from off in a file of the given size and
// chunk size; pending holds the dirty chunks at or after off's chunk.
func (v *Vault) seekDataChunk(ino, cs, size, off int64, pending map[int64]bool) (int64, error) {
	first, end := off/cs, (size+cs-1)/cs
	var stored sql.NullInt64
	err := v.read("seek", "", func(q querier) error {
		return q.QueryRow(v.sql(`SELECT min(idx) FROM {t}_chunks WHERE inode = ? AND idx >= ? AND idx < ?`),
			ino, first, end).Scan(&stored)
	})
	if err != nil {
		return 0, err
	}
	found := int64(-1)
	if stored.Valid {
		found = stored.Int64
	}
	for idx := range pending {
		if idx < end && (found < 0 || idx < found) {
			found = idx
		}
	}
	if found < 0 {
		return 0, ErrNotFound
	}
	return max(off, found*cs), nil
}

// seekHole is SEEK_HOLE from off, as seekDataChunk.
func (v *Vault) seekHole(ino, cs, size, off int64, pending map[int64]bool) (int64, error) {
	next, end := off/cs, (size+cs-1)/cs
	for windows := 0; ; windows++ {
		for pending[next] {
			next++
		}
		if next >= end || windows >= seekMaxWindows {
			return size, nil
		}
		limit := min(next+seekWindow, end)
		missing, err := v.firstMissingChunk(ino, next, limit)
		if err != nil {
			return 0, err
		}
		if missing < limit && !pending[missing] {
			return min(max(off, missing*cs), size), nil
		}
		next = missing
	}
}

// firstMissingChunk returns the first index in [lo, hi) of inode that
// has no chunk row, or hi if every one has. One statement: if lo has a
// row, the answer follows the first row of the window whose successor is
// missing (found in index order, so the scan stops there).
func (v *Vault) firstMissingChunk(ino, lo, hi int64) (int64, error) {
	var missing int64
	err := v.read("seek", "", func(q querier) error {
		return q.QueryRow(v.sql(`SELECT CASE
			WHEN NOT EXISTS (SELECT 1 FROM {t}_chunks WHERE inode = ?1 AND idx = ?2) THEN ?2
			ELSE coalesce((SELECT c.idx + 1 FROM {t}_chunks c
				WHERE c.inode = ?1 AND c.idx >= ?2 AND c.idx < ?3
				AND NOT EXISTS (SELECT 1 FROM {t}_chunks d WHERE d.inode = ?1 AND d.idx = c.idx + 1)
				ORDER BY c.idx LIMIT 1), ?3)
			END`), ino, lo, hi).Scan(&missing)
	})
	return min(missing, hi), err
}
