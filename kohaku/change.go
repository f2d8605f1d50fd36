package kohaku

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/kohakuvault/kvaultfs/store"
)

// Delete removes key, committed when it returns; store.ErrNotFound when
// it is absent.
func (t *Table) Delete(key string) error {
	if err := t.check(true); err != nil {
		return store.Wrap("delete", key, err)
	}
	res, err := t.exec(`DELETE FROM `+t.q+` WHERE key = ?1`, []byte(key))
	if err != nil {
		return store.Wrap("delete", key, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		if err == nil {
			err = store.ErrNotFound
		}
		return store.Wrap("delete", key, err)
	}
	return nil
}

// Rename moves the value of from to the key to in one transaction, by
// changing the row's key: the value is not copied, and in format A the id
// and size stay. If to exists it is replaced when replace is set, and
// store.ErrExists otherwise. from absent is store.ErrNotFound; renaming a
// key to itself changes nothing.
func (t *Table) Rename(from, to string, replace bool) error {
	if err := t.check(true); err != nil {
		return store.Wrap("rename", from, err)
	}
	err := t.updateReplay(func(ctx context.Context, _ *sql.Conn, tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM `+t.q+` WHERE key = ?1`, []byte(from)).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil || from == to {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM `+t.q+` WHERE key = ?1`, []byte(to)).Scan(&one)
		switch {
		case err == nil && !replace:
			return fmt.Errorf("%w: the key %q", store.ErrExists, to)
		case err == nil:
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t.q+` WHERE key = ?1`, []byte(to)); err != nil {
				return err
			}
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE `+t.q+` SET key = ?2 WHERE key = ?1`, []byte(from), []byte(to))
		return err
	})
	return store.Wrap("rename", from, err)
}
