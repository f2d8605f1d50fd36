package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"
)

// TestReadAfterFailedReopen: after a failed Reopen the handle is aborted
// (SQLite answers SQLITE_ABORT to every later call but close). ReadAt and
// WriteAt must keep failing with the reopen's error, never report a clean
// end of value (io.EOF) or a successful empty write.
func TestReadAfterFailedReopen(t *testing.T) {
	watchdog(t, 30*time.Second)
	db, _ := testDB(t, pattern(100))
	err := withConn(t, db, func(c *Conn) error {
		b, err := c.OpenBlob("main", "kv", "value", 1, true)
		if err != nil {
			return err
		}
		reopenErr := b.Reopen(999)
		if reopenErr == nil {
			t.Fatal("Reopen on a missing row succeeded")
		}
		p := make([]byte, 10)
		for name, err := range map[string]error{
			"ReadAt":      func() error { _, err := b.ReadAt(p, 0); return err }(),
			"ReadAt(nil)": func() error { _, err := b.ReadAt(nil, 0); return err }(),
			"WriteAt(nil)": func() error {
				_, err := b.WriteAt(nil, 0)
				return err
			}(),
			"WriteAt": func() error { _, err := b.WriteAt([]byte("x"), 0); return err }(),
			"Reopen":  b.Reopen(1),
		} {
			if err == nil || !errors.Is(err, reopenErr) {
				t.Errorf("%s after a failed Reopen: %v, want the reopen's error %v", name, err, reopenErr)
			}
		}
		return b.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRawReportsCloseOfWritableBlob: a writable blob that fn leaves open
// in autocommit mode commits when Raw closes it. If that commit fails
// (here: busy, a reader holds SHARED in a rollback-journal file), the
// write is lost, and Raw must say so when fn itself succeeded.
func TestRawReportsCloseOfWritableBlob(t *testing.T) {
	watchdog(t, 30*time.Second)
	path := filepath.Join(t.TempDir(), "rj.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=100&_journal_mode=DELETE")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO kv VALUES (x'6b', x'000000')`); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reader, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	rtx, err := reader.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rtx.Rollback()
	var n int
	if err := rtx.QueryRow(`SELECT count(*) FROM kv`).Scan(&n); err != nil { // takes SHARED
		t.Fatal(err)
	}
	err = withConn(t, db, func(c *Conn) error {
		b, err := c.OpenBlob("main", "kv", "value", 1, true)
		if err != nil {
			return err
		}
		_, err = b.WriteAt([]byte("abc"), 0)
		return err // b left open: Raw closes it, which commits
	})
	var se sqlite3.Error
	if !errors.As(err, &se) || se.Code != sqlite3.ErrBusy {
		t.Fatalf("Raw with a writable blob whose closing commit failed: %v, want SQLITE_BUSY", err)
	}
	rtx.Rollback()
	var v []byte
	if err := db.QueryRow(`SELECT value FROM kv`).Scan(&v); err != nil || string(v) != "\x00\x00\x00" {
		t.Fatalf("value %q, %v: the failed write must not be there", v, err)
	}
}
