package kohaku

import (
	"bytes"
	"database/sql"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// slowReader yields r but pauses once for d after 2 MiB, like a pipe or
// a network source that stalls.
type slowReader struct {
	r     io.Reader
	d     time.Duration
	n     int
	slept bool
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.n > 2<<20 && !s.slept {
		s.slept = true
		time.Sleep(s.d)
	}
	n, err := s.r.Read(p)
	s.n += n
	return n, err
}

// TestPutReaderSlowSourceHoldsNoLock: while PutReader waits on a slow
// source, the file's write lock is free: a KohakuVault-style writer (here
// with a 1 s busy_timeout, against a 2.5 s stall) succeeds. The old code
// held the lock while reading, and the writer failed with "database is
// locked".
func TestPutReaderSlowSourceHoldsNoLock(t *testing.T) {
	watchdog(t, time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			val := pattern(8<<20, 3)
			done := make(chan error, 1)
			go func() {
				done <- tb.PutReader("big", &slowReader{r: bytes.NewReader(val), d: 2500 * time.Millisecond}, int64(len(val)))
			}()
			time.Sleep(500 * time.Millisecond)
			db, err := sql.Open("sqlite3", "file:"+tb.Path()+"?_busy_timeout=1000")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			q := `INSERT INTO kv(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value`
			args := []any{[]byte("py"), []byte("x")}
			if f == FormatA {
				q = `INSERT INTO kv(key, value, size) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET value = excluded.value, size = excluded.size`
				args = append(args, 1)
			}
			if _, err := db.Exec(q, args...); err != nil {
				t.Errorf("a KohakuVault writer during PutReader's slow source: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatalf("PutReader: %v", err)
			}
			got, _ := kohakuGet(t, tb.Path(), f, "big")
			mustEqual(t, "big", got, val)
		})
	}
}

// TestPutReaderShortBeforeLock: a source that ends early or yields too
// much is found out while it is spooled, before the write lock is asked
// for: with another connection holding that lock, the error is the
// reader's (ErrInvalidArgument), not ErrBusy, and the old value stays.
func TestPutReaderShortBeforeLock(t *testing.T) {
	watchdog(t, time.Minute)
	path := newFile(t, FormatBC, true)
	tb, err := Open(path, Options{BusyTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	old := pattern(100, 9)
	if err := tb.Put("k", old); err != nil {
		t.Fatal(err)
	}
	other := rawDB(t, path)
	tx, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`INSERT INTO kv(key, value) VALUES (?1, ?2)`, []byte("lock"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	const n = 3 << 20
	val := pattern(n, 4)
	for name, c := range map[string]struct {
		r    io.Reader
		size int64
	}{
		"short": {io.MultiReader(bytes.NewReader(val[:n-1])), n},
		"long":  {io.MultiReader(bytes.NewReader(val)), n - 1},
	} {
		err := tb.PutReader("k", c.r, c.size)
		if !errors.Is(err, store.ErrInvalidArgument) || errors.Is(err, store.ErrBusy) {
			t.Errorf("%s reader under another writer's lock: %v, want the reader's ErrInvalidArgument", name, err)
		}
	}
	tx.Rollback()
	got, _ := kohakuGet(t, path, FormatBC, "k")
	mustEqual(t, "old value", got, old)
}

// TestPipeCopyRollbackJournal copies a value to another key through a
// pipe (GetTo into PutReader) in a rollback-journal file. GetTo's read
// transaction holds SHARED for the whole stream, under which no writer
// can commit; PutReader spools the pipe before taking the write lock, so
// the copy completes instead of waiting out the busy timeout.
func TestPipeCopyRollbackJournal(t *testing.T) {
	watchdog(t, time.Minute)
	for _, wal := range []bool{false, true} {
		path := newFile(t, FormatBC, wal)
		tb, err := Open(path, Options{BusyTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		val := pattern(40<<20, 5)
		if err := tb.Put("a", val); err != nil {
			t.Fatal(err)
		}
		pr, pw := io.Pipe()
		go func() {
			_, err := tb.GetTo("a", pw)
			pw.CloseWithError(err)
		}()
		if err := tb.PutReader("b", pr, int64(len(val))); err != nil {
			t.Errorf("pipe copy (WAL %v): %v", wal, err)
		}
		pr.Close()
		got, _ := kohakuGet(t, path, FormatBC, "b")
		mustEqual(t, "copy", got, val)
		tb.Close()
	}
}

// TestPutReaderSpoolLeavesNothing: the spool file is unlinked at once:
// no file is left beside the database after a spooled put or a failed one.
func TestPutReaderSpoolLeavesNothing(t *testing.T) {
	tb := openTable(t, FormatBC)
	val := pattern(3<<20, 6)
	if err := tb.PutReader("k", io.MultiReader(bytes.NewReader(val)), int64(len(val))); err != nil {
		t.Fatal(err)
	}
	_ = tb.PutReader("k", &failing{bytes.NewReader(val), errors.New("boom")}, int64(len(val))+1)
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(tb.Path()), ".kvaultfs-spool-*"))
	if len(matches) != 0 {
		t.Fatalf("spool files left: %v", matches)
	}
	// A regular file is read directly, not spooled.
	p := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(p, val, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if !direct(src) || direct(io.MultiReader(src)) {
		t.Fatal("direct: a regular *os.File is read directly, anything else spooled")
	}
	if err := tb.PutReader("f", src, int64(len(val))); err != nil {
		t.Fatal(err)
	}
	got, _ := kohakuGet(t, tb.Path(), FormatBC, "f")
	mustEqual(t, "from a file", got, val)
}
