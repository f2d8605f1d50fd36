package kohaku

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kohakuvault/kvaultfs/internal/sqlite"
	"github.com/kohakuvault/kvaultfs/store"
)

// upsert is KohakuVault's own put statement for the table's format
// (spec 2.2), with ?1 the key, ?2 the value and, in A, ?3 its length.
func (t *Table) upsert() string {
	if t.info.Format == FormatA {
		return `INSERT INTO ` + t.q + `(key, value, size) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET value = excluded.value, size = excluded.size`
	}
	return `INSERT INTO ` + t.q + `(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value`
}

// upsertZero is the upsert of put_file: a zero-filled value of ?2 bytes
// (and, in A, size ?2) that blob writes then fill.
func (t *Table) upsertZero() string {
	if t.info.Format == FormatA {
		return `INSERT INTO ` + t.q + `(key, value, size) VALUES (?1, zeroblob(?2), ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value, size = excluded.size`
	}
	return `INSERT INTO ` + t.q + `(key, value) VALUES (?1, zeroblob(?2)) ON CONFLICT(key) DO UPDATE SET value = excluded.value`
}

// checkValue applies the size limit and the header policy.
func (t *Table) checkValue(key string, value []byte) error {
	if err := checkSize(key, int64(len(value))); err != nil {
		return err
	}
	return t.checkHeader(value, int64(len(value)))
}

// args binds key and value as BLOBs, never NULL or TEXT: a nil value
// becomes a zero-length BLOB.
func (t *Table) args(key string, value []byte) []any {
	if value == nil {
		value = []byte{}
	}
	if t.info.Format == FormatA {
		return []any{[]byte(key), value, int64(len(value))}
	}
	return []any{[]byte(key), value}
}

// Put stores value under key with KohakuVault's upsert, committed when it
// returns (format A also sets size). Bytes are stored verbatim.
func (t *Table) Put(key string, value []byte) error {
	return store.Wrap("put", key, t.put(key, value))
}

// put is Put with its errors not yet wrapped, for callers that wrap them
// with their own operation.
func (t *Table) put(key string, value []byte) error {
	if err := t.check(true); err != nil {
		return err
	}
	if err := t.checkValue(key, value); err != nil {
		return err
	}
	_, err := t.exec(t.upsert(), t.args(key, value)...)
	return tooBig(err, key, int64(len(value)))
}

// Item is one change of a PutBatch: a put of Value, or a delete.
type Item struct {
	Key    string
	Value  []byte
	Delete bool
}

// PutBatch applies items in order in one transaction (the write-back
// cache's flush): all or nothing. Deleting an absent key is no error. Every
// value is checked before anything is written.
func (t *Table) PutBatch(items []Item) error {
	if err := t.check(true); err != nil {
		return store.Wrap("put batch", "", err)
	}
	for _, it := range items {
		if !it.Delete {
			if err := t.checkValue(it.Key, it.Value); err != nil {
				return store.Wrap("put batch", it.Key, err)
			}
		}
	}
	if len(items) == 0 {
		return nil
	}
	var failed string
	err := t.updateReplay(func(ctx context.Context, _ *sql.Conn, tx *sql.Tx) error {
		put, err := tx.PrepareContext(ctx, t.upsert())
		if err != nil {
			return err
		}
		defer put.Close()
		del, err := tx.PrepareContext(ctx, `DELETE FROM `+t.q+` WHERE key = ?1`)
		if err != nil {
			return err
		}
		defer del.Close()
		for _, it := range items {
			if it.Delete {
				_, err = del.ExecContext(ctx, []byte(it.Key))
			} else {
				_, err = put.ExecContext(ctx, t.args(it.Key, it.Value)...)
			}
			if err != nil {
				failed = it.Key
				return tooBig(err, it.Key, int64(len(it.Value)))
			}
		}
		return nil
	})
	return store.Wrap("put batch", failed, err)
}

// PutReader stores the bytes r yields under key without holding the value
// in memory. With size >= 0, r must yield exactly size bytes; with size <
// 0 it is read to its end. In one write transaction the key gets a
// zero-filled value of that size (KohakuVault's put_file upsert) that blob
// writes then fill in 1 MiB pieces; any failure (of r, of SQLite, a reader
// that ends early or yields more) rolls it back and leaves the old value
// whole (KohakuVault's own put_file does not). A value that does not fit
// in a row (CheckSize) is store.ErrTooLarge and changes nothing; with a
// known size r is not read at all then.
//
// The write lock is held only while a local copy is written: r is read
// inside the transaction only when it is an in-memory reader
// (*bytes.Reader, *strings.Reader), a regular *os.File or a fileSection
// of one (the file-system view's spill), whose reads never wait on
// anything slow. Any other reader (a pipe, a socket, a
// decompressor), and every reader of unknown size, is first spooled to an
// unlinked temporary file beside the database (up to the row limit), and
// a short or long reader is found out there, before the lock is asked
// for. A slow source so never makes other writers, KohakuVault's
// included, wait past their busy_timeout; the spool needs free space for
// one more copy of the value in the database's directory.
func (t *Table) PutReader(key string, r io.Reader, size int64) error {
	if err := t.check(true); err != nil {
		return store.Wrap("put reader", key, err)
	}
	if size >= 0 {
		if err := checkSize(key, size); err != nil {
			return store.Wrap("put reader", key, err)
		}
	}
	// The header policy is applied to the first bytes before the rest is
	// read or spooled: a refused value costs ten bytes of its source.
	spool := size < 0 || (size > pieceSize && !direct(r))
	first := make([]byte, headerLen)
	if size >= 0 {
		first = first[:min(size, headerLen)]
	}
	n, err := io.ReadFull(r, first)
	switch {
	case size >= 0 && err != nil:
		return store.Wrap("put reader", key, shortReader(err, size))
	case err != nil && err != io.EOF && err != io.ErrUnexpectedEOF:
		return store.Wrap("put reader", key, err)
	}
	first = first[:n]
	if err := t.checkHeader(first, max(size, int64(n))); err != nil {
		return store.Wrap("put reader", key, err)
	}
	r = io.MultiReader(bytes.NewReader(first), r)
	// A value of one piece is read into memory below, before any lock.
	if spool {
		f, n, err := t.spool(key, r, size)
		if err != nil {
			return store.Wrap("put reader", key, err)
		}
		defer f.Close()
		r, size = f, n
	}
	head := make([]byte, min(size, headerLen))
	if _, err := io.ReadFull(r, head); err != nil {
		return store.Wrap("put reader", key, shortReader(err, size))
	}
	if size <= pieceSize { // one piece: a plain upsert costs less than a blob
		buf := make([]byte, size)
		copy(buf, head)
		if err := readExact(r, buf[len(head):], size); err != nil {
			return store.Wrap("put reader", key, err)
		}
		if err := readExact(r, nil, size); err != nil {
			return store.Wrap("put reader", key, err)
		}
		return store.Wrap("put reader", key, t.put(key, buf))
	}
	err = t.update(func(ctx context.Context, c *sql.Conn, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, t.upsertZero(), []byte(key), size); err != nil {
			return err
		}
		var rowid int64
		if err := tx.QueryRowContext(ctx, `SELECT rowid FROM `+t.q+` WHERE key = ?1`, []byte(key)).Scan(&rowid); err != nil {
			return err
		}
		return sqlite.Raw(ctx, c, func(sc *sqlite.Conn) error {
			b, err := sc.OpenBlob("main", t.info.Name, "value", rowid, true)
			if err != nil {
				return err
			}
			defer b.Close()
			if _, err := b.WriteAt(head, 0); err != nil {
				return err
			}
			buf := make([]byte, pieceSize)
			for off := int64(len(head)); off < size; {
				p := buf[:min(size-off, pieceSize)]
				if err := readExact(r, p, size); err != nil {
					return err
				}
				if _, err := b.WriteAt(p, off); err != nil {
					return err
				}
				off += int64(len(p))
			}
			if err := readExact(r, nil, size); err != nil {
				return err
			}
			return b.Close()
		})
	})
	return store.Wrap("put reader", key, tooBig(err, key, size))
}

// readExact fills p from r; with p empty it checks that r has ended. A
// reader that ends early or yields more than size bytes is an error.
func readExact(r io.Reader, p []byte, size int64) error {
	if len(p) > 0 {
		if _, err := io.ReadFull(r, p); err != nil {
			return shortReader(err, size)
		}
		return nil
	}
	var one [1]byte
	for {
		n, err := r.Read(one[:])
		if n > 0 {
			return fmt.Errorf("%w: the reader yields more than the %d bytes announced", store.ErrInvalidArgument, size)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// shortReader names a reader that ended before size bytes.
func shortReader(err error, size int64) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the reader ended before the %d bytes announced", store.ErrInvalidArgument, size)
	}
	return err
}

// direct reports whether PutReader may read r while it holds the write
// lock: memory, or a regular file, which never waits on another program.
func direct(r io.Reader) bool {
	switch r := r.(type) {
	case *bytes.Reader, *strings.Reader:
		return true
	case *os.File:
		fi, err := r.Stat()
		return err == nil && fi.Mode().IsRegular()
	case *fileSection:
		fi, err := r.f.Stat()
		return err == nil && fi.Mode().IsRegular()
	}
	return false
}

// fileSection reads the first size bytes of a regular file through
// ReadAt, leaving the file's offset alone (the file-system view's spill
// is written through WriteAt by other handles meanwhile). PutReader reads
// it inside its transaction as it reads an *os.File, without spooling a
// second copy: an io.SectionReader would hide the file from direct. A
// file shorter than size makes the reader end early, which PutReader
// refuses.
type fileSection struct {
	f    *os.File
	off  int64 // next byte to read
	size int64
}

// Read reads on from where the last Read ended.
func (r *fileSection) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if int64(len(p)) > r.size-r.off {
		p = p[:r.size-r.off]
	}
	n, err := r.f.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// spool copies r to an unlinked temporary file beside the database (the
// disk that must hold the value anyway, rather than a /tmp that may be
// memory), positioned at its start, and returns it with its length. With
// size >= 0, r must yield exactly size bytes (store.ErrInvalidArgument
// otherwise); with size < 0, more than fits in a row under key
// (CheckSize) is store.ErrTooLarge.
func (t *Table) spool(key string, r io.Reader, size int64) (*os.File, int64, error) {
	f, err := os.CreateTemp(filepath.Dir(t.path), ".kvaultfs-spool-*")
	if err != nil {
		return nil, 0, err
	}
	os.Remove(f.Name()) // unlinked: nothing to clean up after a crash
	var n int64
	if size >= 0 {
		n, err = io.CopyN(f, r, size)
		if err != nil {
			err = shortReader(err, size)
		} else {
			err = readExact(r, nil, size)
		}
	} else {
		limit := max(MaxValueSize-rowOverhead-int64(len(key)), 0)
		n, err = io.Copy(f, io.LimitReader(r, limit+1))
		if err == nil && n > limit {
			err = rowTooLarge(key, n)
		}
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}
