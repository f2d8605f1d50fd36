package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"
)

// watchdog fails the test loudly if it runs longer than d (a blob call
// that waits on a lock forever would otherwise hang the suite).
func watchdog(t testing.TB, d time.Duration) {
	t.Helper()
	timer := time.AfterFunc(d, func() { panic(fmt.Sprintf("%s: still running after %v", t.Name(), d)) })
	t.Cleanup(func() { timer.Stop() })
}

// testDB creates a file with table kv(key BLOB PRIMARY KEY, value BLOB)
// holding the given values under keys k0, k1... (rowids 1, 2...).
func testDB(t testing.TB, values ...[]byte) (*sql.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000&_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for i, v := range values {
		if _, err := db.Exec(`INSERT INTO kv(key, value) VALUES (?1, ?2)`, []byte(fmt.Sprint("k", i)), v); err != nil {
			t.Fatal(err)
		}
	}
	return db, path
}

// withConn runs fn on the C handle of one connection of db.
func withConn(t testing.TB, db *sql.DB, fn func(*Conn) error) error {
	t.Helper()
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return Raw(ctx, c, fn)
}

func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

// TestDriverLayout guards the reflect+unsafe access to the driver's
// unexported sqlite3* field: if a mattn/go-sqlite3 upgrade renames or
// retypes SQLiteConn.db, this fails with a message saying what to fix.
func TestDriverLayout(t *testing.T) {
	f, ok := reflect.TypeOf(sqlite3.SQLiteConn{}).FieldByName("db")
	if !ok {
		t.Fatal("mattn/go-sqlite3's SQLiteConn has no field db any more: internal/sqlite.handle must be adapted to the new driver version (or go.mod's pin restored)")
	}
	if f.Type.Kind() != reflect.Pointer || f.Type.Elem().Name() != "_Ctype_struct_sqlite3" {
		t.Fatalf("mattn/go-sqlite3's SQLiteConn.db is now %v, not *C.sqlite3: internal/sqlite.handle must be adapted", f.Type)
	}
	db, _ := testDB(t, []byte("x"))
	err := withConn(t, db, func(c *Conn) error {
		if c.db == nil {
			return errors.New("nil sqlite3 handle")
		}
		// The handle must be the connection's: a blob opened through it
		// sees the row the driver inserted.
		b, err := c.OpenBlob("main", "kv", "value", 1, false)
		if err != nil {
			return err
		}
		defer b.Close()
		if b.Size() != 1 {
			return fmt.Errorf("size %d, want 1", b.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("driver layout: %v", err)
	}
	if _, err := handle(struct{}{}); !errors.Is(err, ErrDriver) {
		t.Fatalf("handle of a foreign connection: %v, want ErrDriver", err)
	}
}

func TestReadWriteRanges(t *testing.T) {
	watchdog(t, time.Minute)
	val := pattern(100_000)
	db, _ := testDB(t, val, []byte("second"))
	err := withConn(t, db, func(c *Conn) error {
		b, err := c.OpenBlob("main", "kv", "value", 1, true)
		if err != nil {
			return err
		}
		if b.Size() != int64(len(val)) {
			t.Errorf("size %d, want %d", b.Size(), len(val))
		}
		for _, r := range [][2]int{{0, 10}, {4095, 4098}, {50_000, 100_000}, {99_999, 100_000}, {0, 100_000}} {
			p := make([]byte, r[1]-r[0])
			n, err := b.ReadAt(p, int64(r[0]))
			if err != nil || n != len(p) || !bytes.Equal(p, val[r[0]:r[1]]) {
				t.Errorf("ReadAt %v: n=%d err=%v equal=%v", r, n, err, bytes.Equal(p, val[r[0]:r[1]]))
			}
		}
		// Past the end: a short read then io.EOF, as io.ReaderAt says.
		p := make([]byte, 10)
		if n, err := b.ReadAt(p, 99_995); n != 5 || err != io.EOF || !bytes.Equal(p[:5], val[99_995:]) {
			t.Errorf("read over the end: n=%d err=%v", n, err)
		}
		if n, err := b.ReadAt(p, 100_000); n != 0 || err != io.EOF {
			t.Errorf("read at the end: n=%d err=%v", n, err)
		}
		if _, err := b.ReadAt(p, -1); !errors.Is(err, ErrRange) {
			t.Errorf("read at -1: %v, want ErrRange", err)
		}
		// Writes in place.
		if n, err := b.WriteAt([]byte("HELLO"), 1000); n != 5 || err != nil {
			t.Errorf("WriteAt: n=%d err=%v", n, err)
		}
		copy(val[1000:], "HELLO")
		// A write cannot grow the blob and changes nothing.
		if _, err := b.WriteAt([]byte("abc"), 99_998); !errors.Is(err, ErrRange) {
			t.Errorf("write over the end: %v, want ErrRange", err)
		}
		if _, err := b.WriteAt([]byte("a"), -1); !errors.Is(err, ErrRange) {
			t.Errorf("write at -1: %v, want ErrRange", err)
		}
		// Reopen on the second row.
		if err := b.Reopen(2); err != nil {
			return err
		}
		p = make([]byte, 6)
		if n, err := b.ReadAt(p, 0); n != 6 || err != nil || string(p) != "second" || b.Size() != 6 {
			t.Errorf("after Reopen: %q n=%d err=%v size=%d", p, n, err, b.Size())
		}
		return b.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := db.QueryRow(`SELECT value FROM kv WHERE rowid = 1`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, val) {
		t.Fatal("value read back with SELECT differs from what was written through the blob")
	}
}

func TestErrors(t *testing.T) {
	watchdog(t, time.Minute)
	db, path := testDB(t, []byte("abc"))
	err := withConn(t, db, func(c *Conn) error {
		_, err := c.OpenBlob("main", "kv", "value", 42, false)
		var e *Error
		var se sqlite3.Error
		if !errors.As(err, &e) || !errors.As(err, &se) || se.Code != sqlite3.ErrError || !strings.Contains(err.Error(), "no such rowid") {
			t.Errorf("missing row: %v (%#v), want SQLite's error carrying its code", err, se)
		}
		if _, err := c.OpenBlob("main", "nosuch", "value", 1, false); err == nil {
			t.Error("missing table: no error")
		}
		if len(c.blobs) != 0 {
			t.Errorf("%d blobs recorded after failed opens", len(c.blobs))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A blob left open by fn is closed when Raw returns: using it is
	// ErrClosed, and the connection holds no read transaction.
	var kept *Blob
	if err := withConn(t, db, func(c *Conn) error {
		var err error
		kept, err = c.OpenBlob("main", "kv", "value", 1, false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := kept.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("blob used after Raw: %v, want ErrClosed", err)
	}

	// Writing through a read-only connection carries SQLITE_READONLY.
	ro, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	err = withConn(t, ro, func(c *Conn) error {
		b, err := c.OpenBlob("main", "kv", "value", 1, true)
		if err != nil {
			return err
		}
		defer b.Close()
		_, err = b.WriteAt([]byte("x"), 0)
		return err
	})
	var se sqlite3.Error
	if !errors.As(err, &se) || se.Code != sqlite3.ErrReadonly {
		t.Errorf("write on a read-only connection: %v, want code SQLITE_READONLY", err)
	}
}

// BenchmarkReadAt1MiB compares a 1 MiB random read of a 64 MiB value
// through the blob API with SELECT substr(value, ...), which loads the
// whole value on every call.
func BenchmarkReadAt1MiB(b *testing.B) {
	const size, piece = 64 << 20, 1 << 20
	db, _ := testDB(b)
	if _, err := db.Exec(`INSERT INTO kv(key, value) VALUES (?1, zeroblob(?2))`, []byte("big"), size); err != nil {
		b.Fatal(err)
	}
	offs := make([]int64, 64)
	for i := range offs {
		offs[i] = rand.Int64N(size - piece)
	}
	b.Run("blob", func(b *testing.B) {
		ctx := context.Background()
		c, err := db.Conn(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		p := make([]byte, piece)
		b.SetBytes(piece)
		i := 0
		for b.Loop() {
			err := Raw(ctx, c, func(c *Conn) error {
				bl, err := c.OpenBlob("main", "kv", "value", 1, false)
				if err != nil {
					return err
				}
				defer bl.Close()
				_, err = bl.ReadAt(p, offs[i%len(offs)])
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("substr", func(b *testing.B) {
		b.SetBytes(piece)
		var p []byte
		i := 0
		for b.Loop() {
			if err := db.QueryRow(`SELECT substr(value, ?1, ?2) FROM kv WHERE rowid = 1`, offs[i%len(offs)]+1, piece).Scan(&p); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
