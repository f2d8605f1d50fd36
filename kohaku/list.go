package kohaku

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/kohakuvault/kvaultfs/store"
)

// scanBatch is how many keys one read transaction of Scan fetches: no
// long read transaction while fn runs, so a WAL can always be
// checkpointed.
const scanBatch = 1000

// Scan calls fn with every key that starts with prefix and is greater
// than after, in the order of their bytes (memcmp, KohakuVault's ORDER BY
// key), and its value's size, at most limit keys (limit <= 0: all). after
// == "" starts at the first key, the empty key included (it sorts first);
// a caller paging one key at a time past the empty key must skip it
// itself. Keys are read in batches, each in its own transaction, and fn
// runs outside them: a key changed meanwhile may be seen in its old or new
// state, but none is seen twice or skipped if it stays. An error from fn
// stops the scan and is returned as is.
//
// The size is the stored value's length in bytes (length() of the BLOB),
// also in format A: a size column that disagrees is for Size and Verify
// to report, not for a listing to show. Only BLOB keys are listed, as
// KohakuVault's own listing binds BLOB bounds; a value another program
// stored as TEXT or a number is listed with the length of its text form
// (reading it is store.ErrCorrupt).
func (t *Table) Scan(prefix, after string, limit int, fn func(key string, size int64) error) error {
	if err := t.check(false); err != nil {
		return store.Wrap("scan", prefix, err)
	}
	// Bounds: key >= lo (or > after), key < hi when the prefix has a
	// successor. prefix || 0xFF, KohakuVault's upper bound, misses keys
	// whose byte after the prefix is 0xFF; the successor does not.
	lo, strict := prefix, false
	if after != "" && after >= prefix {
		lo, strict = after, true
	}
	hi, bounded := successor(prefix)
	for sent := 0; limit <= 0 || sent < limit; {
		n := scanBatch
		if limit > 0 {
			n = min(n, limit-sent)
		}
		batch, err := t.keyBatch(lo, !strict, hi, bounded, n)
		if err != nil {
			return store.Wrap("scan", prefix, err)
		}
		for _, e := range batch {
			if err := fn(e.key, e.size); err != nil {
				return err
			}
		}
		sent += len(batch)
		if len(batch) < n {
			return nil
		}
		lo, strict = batch[len(batch)-1].key, true
	}
	return nil
}

// keySize is one row of a listing: a key and its value's length.
type keySize struct {
	key  string
	size int64
}

// keyBatch reads up to n keys from lo (included when inclusive) and below
// hi when bounded, in key order, with each value's stored length, in one
// read transaction. It is the one listing query of the package: Scan and
// the file-system view's listings page through it.
func (t *Table) keyBatch(lo string, inclusive bool, hi string, bounded bool, n int) ([]keySize, error) {
	cmp := ">"
	if inclusive {
		cmp = ">="
	}
	q := `SELECT key, ` + valueBytes + ` FROM ` + t.q + ` WHERE key ` + cmp + ` ?1`
	args := []any{[]byte(lo)}
	if bounded {
		q += ` AND key < ?2`
		args = append(args, []byte(hi))
	}
	q += fmt.Sprintf(` ORDER BY key LIMIT %d`, n)
	var batch []keySize
	err := t.view(func(ctx context.Context, _ *sql.Conn, tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k []byte
			var e keySize
			if err := rows.Scan(&k, &e.size); err != nil {
				return err
			}
			e.key = string(k)
			batch = append(batch, e)
		}
		return rows.Err()
	})
	return batch, err
}

// successor returns the smallest byte string greater than every string
// that starts with prefix, and false when there is none (an empty prefix,
// or one of only 0xFF bytes).
func successor(prefix string) (string, bool) {
	b := []byte(prefix)
	for len(b) > 0 && b[len(b)-1] == 0xFF {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "", false
	}
	b[len(b)-1]++
	return string(b), true
}
