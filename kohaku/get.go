package kohaku

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"

	"github.com/kohakuvault/kvaultfs/internal/sqlite"
	"github.com/kohakuvault/kvaultfs/store"
)

// pieceSize is how much a streamed read or write moves per blob call:
// KohakuVault's chunk_size.
const pieceSize = 1 << 20

// Get returns the stored bytes of key (store.ErrNotFound when absent),
// verbatim: a value KohakuVault encoded with a header is returned with
// its header. It loads the whole value; GetTo and ReadAt do not. A value
// another program stored as INTEGER, REAL or TEXT is store.ErrCorrupt
// (KohakuVault cannot read it either), never its text form.
func (t *Table) Get(key string) ([]byte, error) {
	if err := t.check(false); err != nil {
		return nil, store.Wrap("get", key, err)
	}
	var v []byte
	var typ string
	err := t.r.QueryRow(`SELECT typeof(value), CASE typeof(value) WHEN 'blob' THEN value END FROM `+t.q+` WHERE key = ?1`,
		[]byte(key)).Scan(&typ, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.Wrap("get", key, store.ErrNotFound)
	}
	if err == nil && typ != "blob" {
		err = notBlob(typ)
	}
	if err != nil {
		return nil, store.Wrap("get", key, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// notBlob is the error of a value stored with another type than BLOB,
// which only another program can write: rusqlite's Vec<u8> read fails on
// it in KohakuVault too.
func notBlob(typ string) error {
	return fmt.Errorf("%w: the value is stored as %s, not a BLOB: KohakuVault cannot read it either", store.ErrCorrupt, typ)
}

// valueBytes is an SQL expression for the number of bytes of the value
// column: length() of a BLOB reads its record header only, and the text
// form of any other type is measured in bytes, not characters.
const valueBytes = `CASE typeof(value) WHEN 'blob' THEN length(value) ELSE length(CAST(value AS BLOB)) END`

// Exists reports whether key is in the table (KohakuVault's exists()).
func (t *Table) Exists(key string) (bool, error) {
	if err := t.check(false); err != nil {
		return false, store.Wrap("exists", key, err)
	}
	var one int
	err := t.r.QueryRow(`SELECT 1 FROM `+t.q+` WHERE key = ?1 LIMIT 1`, []byte(key)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, store.Wrap("exists", key, err)
	}
	return true, nil
}

// Size returns the length of key's value without reading it. In format
// A it is the size column, which must equal length(value): KohakuVault's
// get_to_file trusts it, so a mismatch is store.ErrCorrupt.
func (t *Table) Size(key string) (int64, error) {
	if err := t.check(false); err != nil {
		return 0, store.Wrap("size", key, err)
	}
	var n int64
	err := t.view(func(ctx context.Context, _ *sql.Conn, tx *sql.Tx) error {
		var err error
		_, n, err = t.locate(ctx, tx, key)
		return err
	})
	if err != nil {
		return 0, store.Wrap("size", key, err)
	}
	return n, nil
}

// locate returns the rowid and length of key's value inside tx
// (length() of a BLOB reads its record header, not the value). A value
// that is not a BLOB is store.ErrCorrupt; in format A so is a size column
// that is not the value's length (KohakuVault's get_to_file trusts it).
func (t *Table) locate(ctx context.Context, tx *sql.Tx, key string) (rowid, size int64, err error) {
	sizeCols := `'integer', NULL`
	if t.info.Format == FormatA {
		sizeCols = `typeof(size), CASE typeof(size) WHEN 'integer' THEN size END`
	}
	var typ, sizeType string
	var col sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT rowid, typeof(value), length(value), `+sizeCols+` FROM `+t.q+` WHERE key = ?1`,
		[]byte(key)).Scan(&rowid, &typ, &size, &sizeType, &col)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, store.ErrNotFound
	}
	if err != nil {
		return 0, 0, err
	}
	if typ != "blob" {
		return 0, 0, notBlob(typ)
	}
	if t.info.Format == FormatA {
		if err := checkSizeColumn(sizeType, col, size); err != nil {
			return 0, 0, err
		}
	}
	return rowid, size, nil
}

// checkSizeColumn compares format A's size column (its type, and its
// value when an integer) with the value's length.
func checkSizeColumn(typ string, col sql.NullInt64, length int64) error {
	if typ != "integer" {
		return fmt.Errorf("%w: the size column holds %s, not the value's length (%d bytes)", store.ErrCorrupt, typ, length)
	}
	if col.Int64 != length {
		return fmt.Errorf("%w: the size column says %d bytes, the value holds %d", store.ErrCorrupt, col.Int64, length)
	}
	return nil
}

// ReadAt reads len(p) bytes of key's value at off with io.ReaderAt
// semantics (fewer only at the end of the value, then io.EOF, returned
// bare). It reads only that range, through SQLite's incremental blob I/O.
func (t *Table) ReadAt(key string, p []byte, off int64) (int, error) {
	if err := t.check(false); err != nil {
		return 0, store.Wrap("read", key, err)
	}
	if off < 0 {
		return 0, store.Wrap("read", key, fmt.Errorf("%w: negative offset %d", store.ErrInvalidArgument, off))
	}
	var n int
	var eof bool
	err := t.view(func(ctx context.Context, c *sql.Conn, tx *sql.Tx) error {
		rowid, size, err := t.locate(ctx, tx, key)
		if err != nil {
			return err
		}
		if off >= size || len(p) == 0 {
			eof = off >= size && len(p) > 0
			return nil
		}
		return sqlite.Raw(ctx, c, func(sc *sqlite.Conn) error {
			b, err := sc.OpenBlob("main", t.info.Name, "value", rowid, false)
			if err != nil {
				return err
			}
			defer b.Close()
			n, err = b.ReadAt(p, off)
			if err == io.EOF {
				eof, err = true, nil
			}
			return err
		})
	})
	if err != nil {
		return 0, store.Wrap("read", key, err)
	}
	if eof {
		return n, io.EOF
	}
	return n, nil
}

// GetTo writes key's value to w in 1 MiB pieces, in constant memory, and
// returns the bytes written. The whole value comes from one read
// transaction, so it is never a mix of two versions, and a slow w keeps
// that transaction open. Under WAL that only holds back checkpoints. In a
// rollback-journal file it holds SQLite's SHARED lock for the whole
// stream, and no writer can commit meanwhile: writers, KohakuVault's
// included, wait up to their busy_timeout and then fail busy. Feeding a
// PutReader on the same file through a pipe works (PutReader spools a
// pipe before it takes the write lock, and GetTo has ended by then).
func (t *Table) GetTo(key string, w io.Writer) (int64, error) {
	return t.getTo(key, w, -1)
}

// getTo is GetTo of at most limit bytes of the value (all with limit <
// 0): a truncate that keeps a prefix reads only that prefix.
func (t *Table) getTo(key string, w io.Writer, limit int64) (int64, error) {
	if err := t.check(false); err != nil {
		return 0, store.Wrap("get to", key, err)
	}
	var done int64
	err := t.view(func(ctx context.Context, c *sql.Conn, tx *sql.Tx) error {
		rowid, size, err := t.locate(ctx, tx, key)
		if err != nil || size == 0 || limit == 0 {
			return err
		}
		return sqlite.Raw(ctx, c, func(sc *sqlite.Conn) error {
			b, err := sc.OpenBlob("main", t.info.Name, "value", rowid, false)
			if err != nil {
				return err
			}
			defer b.Close()
			if b.Size() != size {
				return fmt.Errorf("%w: blob of %d bytes, length(value) %d", store.ErrCorrupt, b.Size(), size)
			}
			if limit >= 0 {
				size = min(size, limit)
			}
			buf := make([]byte, min(size, pieceSize))
			for done < size {
				n, err := b.ReadAt(buf[:min(size-done, pieceSize)], done)
				if err != nil {
					return err
				}
				m, err := w.Write(buf[:n])
				done += int64(m)
				if err != nil {
					return err
				}
				if m != n {
					return io.ErrShortWrite
				}
			}
			return nil
		})
	})
	if err != nil {
		return done, store.Wrap("get to", key, err)
	}
	return done, nil
}

// Len returns the number of rows of the table, counted as KohakuVault's
// len() counts them (count(*)). That includes rows another program wrote
// with a key that is not a BLOB (TEXT, INTEGER...), which neither
// KohakuVault's key lookups nor Scan can reach, so Len may exceed what
// Scan shows; Verify reports such rows.
func (t *Table) Len() (int64, error) {
	if err := t.check(false); err != nil {
		return 0, store.Wrap("len", "", err)
	}
	var n int64
	if err := t.r.QueryRow(`SELECT count(*) FROM ` + t.q).Scan(&n); err != nil {
		return 0, store.Wrap("len", "", err)
	}
	return n, nil
}
