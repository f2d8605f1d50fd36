package kohaku

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"

	"github.com/kohakuvault/kvaultfs/store"
)

// CheckValue reports whether value may be stored in the table under the
// empty key, before anything is written: the header-magic policy of B/C
// tables (see checkHeader) and the size limit. The write-back cache of
// package vault checks a value when it is cached, so that one refused
// value never fails a whole flush. The limit counts the key too: CheckPut
// checks a value under its key.
func (t *Table) CheckValue(value []byte) error {
	return store.Wrap("check value", "", t.checkValue("", value))
}

// CheckPut reports whether value may be stored under key, before anything
// is written: the size limit of a row (CheckSize) and the header-magic
// policy of B/C tables (see checkHeader), with the cause Put would
// return.
func (t *Table) CheckPut(key string, value []byte) error {
	return store.Wrap("check put", key, t.checkValue(key, value))
}

// Sync makes every committed change durable against power loss. Under a
// rollback journal every commit already is (synchronous FULL). Under WAL
// with synchronous NORMAL, as KohakuVault runs, commits reach the -wal
// file without an fsync: Sync fsyncs it and the database file directly,
// which writes nothing to the file (an empty commit would sync nothing,
// and a row written only to force one would change the user's table).
func (t *Table) Sync() error {
	if err := t.check(false); err != nil {
		return store.Wrap("sync", "", err)
	}
	if t.readOnly || !t.wal {
		return nil
	}
	for _, name := range []string{t.path + "-wal", t.path} {
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue // checkpointed and removed: its content is in the database
		}
		if err != nil {
			return store.Wrap("sync", "", err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return store.Wrap("sync", "", err)
		}
	}
	return nil
}

// verifyBatch is how many rows one read transaction of Verify checks.
const verifyBatch = 1000

// Verify checks the file as KohakuVault would need it and calls report
// for each problem: SQLite's integrity_check (with key ""), then every row
// of the table: a key and a value that are BLOBs (KohakuVault fails to
// read any other type), and in format A a size column equal to the
// value's length. It reads in bounded transactions and returns the number
// of rows checked; a non-nil error means the check itself could not
// finish.
func (t *Table) Verify(report func(key string, err error)) (int64, error) {
	if err := t.check(false); err != nil {
		return 0, store.Wrap("verify", "", err)
	}
	rows, err := t.r.Query(`PRAGMA integrity_check`)
	if err != nil {
		return 0, store.Wrap("verify", "", err)
	}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			rows.Close()
			return 0, store.Wrap("verify", "", err)
		}
		if line != "ok" {
			report("", fmt.Errorf("%w: integrity_check: %s", store.ErrCorrupt, line))
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, store.Wrap("verify", "", err)
	}
	// The size column is read by type, never scanned as an integer: a
	// TEXT there is a problem to report, not a reason to stop.
	size := `'integer', NULL`
	if t.info.Format == FormatA {
		size = `typeof(size), CASE typeof(size) WHEN 'integer' THEN size END`
	}
	query := fmt.Sprintf(`SELECT rowid, CAST(key AS BLOB), typeof(key), typeof(value), %s, %s
		FROM %s WHERE rowid > ?1 ORDER BY rowid LIMIT %d`, valueBytes, size, t.q, verifyBatch)
	var checked, last int64
	for {
		n := 0
		err := t.view(func(ctx context.Context, c *sql.Conn, tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, query, last)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var key []byte
				var keyType, valueType, sizeType string
				var length, stored sql.NullInt64
				if err := rows.Scan(&last, &key, &keyType, &valueType, &length, &sizeType, &stored); err != nil {
					return err
				}
				n++
				switch {
				case keyType != "blob":
					report(string(key), fmt.Errorf("%w: the key is stored as %s, not a BLOB: KohakuVault cannot read the table's keys", store.ErrCorrupt, keyType))
				case valueType != "blob":
					report(string(key), notBlob(valueType))
				case t.info.Format == FormatA:
					if err := checkSizeColumn(sizeType, stored, length.Int64); err != nil {
						report(string(key), err)
					}
				}
			}
			return rows.Err()
		})
		if err != nil {
			return checked, store.Wrap("verify", "", err)
		}
		checked += int64(n)
		if n < verifyBatch {
			return checked, nil
		}
	}
}
