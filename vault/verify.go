package vault

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// verifyBatch is how many chunk rows Verify reads per transaction.
const verifyBatch = 64

// Damage is one problem Verify found.
type Damage struct {
	Keys []string // the keys whose data is damaged (several for hard links; none for an orphan)
	Ino  int64    // the damaged inode, or 0 for damage SQLite itself reports
	Err  error    // what is wrong
}

// Verify checks the whole file: SQLite's integrity_check, then every
// chunk's length and CRC-32C, in bounded transactions. It calls report
// for each problem and returns the number of chunks checked; a non-nil
// error means the check itself could not finish.
func (v *Vault) Verify(report func(Damage)) (int64, error) {
	if _, err := v.FlushCache(); err != nil {
		return 0, err
	}
	if err := v.files.flushAll(v); err != nil {
		return 0, err
	}
	rows, err := v.r.Query("PRAGMA integrity_check")
	if err != nil {
		return 0, wrap("verify", "", err)
	}
	for rows.Next() {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			rows.Close()
			return 0, wrap("verify", "", err)
		}
		if msg != "ok" {
			report(Damage{Err: fmt.Errorf("%w: integrity_check: %s", ErrCorrupt, msg)})
		}
	}
	rows.Close()

	var checked, after int64
	damaged := map[int64]bool{}
	for {
		var bad []int64
		n := 0
		err := v.view("verify", "", func(q *sql.Tx) error {
			rows, err := q.Query(v.sql(`SELECT rowid, inode, idx, len, crc, data FROM {t}_chunks
				WHERE rowid > ? ORDER BY rowid LIMIT ?`), after, verifyBatch)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var ino, idx, ln int64
				var crc uint32
				var data sql.RawBytes
				if err := rows.Scan(&after, &ino, &idx, &ln, &crc, &data); err != nil {
					return err
				}
				n++
				if int64(len(data)) != ln || checksum(data) != crc {
					bad = append(bad, ino)
				}
			}
			return rows.Err()
		})
		if err != nil {
			return checked, err
		}
		checked += int64(n)
		for _, ino := range bad {
			if damaged[ino] {
				continue
			}
			damaged[ino] = true
			keys, err := v.keysOf(ino)
			if err != nil {
				return checked, err
			}
			report(Damage{Keys: keys, Ino: ino, Err: fmt.Errorf("%w: a chunk fails its checksum", ErrCorrupt)})
		}
		if n < verifyBatch {
			return checked, nil
		}
	}
}

// keysOf returns the keys that name inode ino.
func (v *Vault) keysOf(ino int64) ([]string, error) {
	var keys []string
	err := v.view("verify", "", func(q *sql.Tx) error {
		rows, err := q.Query(v.sql(`SELECT parent, name FROM {t}_dentries WHERE child = ?`), ino)
		if err != nil {
			return err
		}
		type link struct {
			parent int64
			name   string
		}
		var links []link
		for rows.Next() {
			var l link
			if err := rows.Scan(&l.parent, &l.name); err != nil {
				rows.Close()
				return err
			}
			links = append(links, l)
		}
		rows.Close()
		for _, l := range links {
			k, err := v.keyOfEntry(q, l.parent, l.name)
			if err != nil {
				return err
			}
			keys = append(keys, k)
		}
		return nil
	})
	return keys, err
}

// keyOfEntry builds the key of entry name in dir by walking up the tree.
func (v *Vault) keyOfEntry(q querier, dir int64, name string) (string, error) {
	if dir == keysIno {
		var key []byte
		err := q.QueryRow(v.sql(`SELECT key FROM {t}_binkeys WHERE name = ?`), name).Scan(&key)
		if errors.Is(err, sql.ErrNoRows) {
			return ReservedDir + "/keys/" + name, nil
		}
		return string(key), err
	}
	parts := []string{name}
	for dir != RootIno {
		var parent int64
		var n string
		err := q.QueryRow(v.sql(`SELECT parent, name FROM {t}_dentries WHERE child = ? LIMIT 1`), dir).Scan(&parent, &n)
		if err != nil {
			return "", err
		}
		parts = append(parts, n)
		dir = parent
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/"), nil
}
