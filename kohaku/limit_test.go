package kohaku

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/kohakuvault/kvaultfs/store"
)

// isTooLarge checks that err is store.ErrTooLarge pointing to migrate.
func isTooLarge(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrTooLarge) || !strings.Contains(err.Error(), "kvaultfs migrate") {
		t.Errorf("%s: %v, want store.ErrTooLarge with the migrate hint", what, err)
	}
}

// TestValueAtRowLimit: SQLite's limit (SQLITE_MAX_LENGTH, 10^9) is on the
// whole row, key and value and record header. A value of MaxValueSize
// bytes, or of MaxValueSize-len(key), passed the old check and then failed
// inside SQLite with SQLITE_TOOBIG as ErrInvalidArgument, without the
// migrate hint. It must be ErrTooLarge up front: the reader (zeros, never
// allocated) not read, nothing written.
func TestValueAtRowLimit(t *testing.T) {
	watchdog(t, 2*time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			const key = "some/key"
			if err := tb.Put(key, []byte("old")); err != nil {
				t.Fatal(err)
			}
			before := fileState(t, tb.Path())
			for _, size := range []int64{MaxValueSize, MaxValueSize - int64(len(key))} {
				z := &zeros{size}
				isTooLarge(t, "PutReader", tb.PutReader(key, z, size))
				if z.n != size {
					t.Errorf("PutReader of %d bytes read %d bytes of a value it must refuse", size, size-z.n)
				}
				isTooLarge(t, "CheckSize", CheckSize(key, size))
			}
			if err := CheckSize(key, 1<<20); err != nil {
				t.Errorf("CheckSize of 1 MiB: %v", err)
			}
			if v, _ := kohakuGet(t, tb.Path(), f, key); string(v) != "old" {
				t.Fatalf("value changed: %q", v)
			}
			if fileState(t, tb.Path()) != before {
				t.Fatal("file changed")
			}
		})
	}
}

// TestTooBigFromSQLite: whatever passes the checks and still meets
// SQLITE_TOOBIG inside SQLite is ErrTooLarge with the migrate hint too,
// and changes nothing. The writer connection's length limit is lowered to
// reach it without gigabytes.
func TestTooBigFromSQLite(t *testing.T) {
	watchdog(t, time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			if err := tb.Put("k", []byte("old")); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			c, err := tb.w.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Raw(func(dc any) error {
				dc.(*sqlite3.SQLiteConn).SetLimit(sqlite3.SQLITE_LIMIT_LENGTH, 64<<10)
				return nil
			})
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			big := pattern(100<<10, 1)
			isTooLarge(t, "Put", tb.Put("k", big))
			isTooLarge(t, "PutBatch", tb.PutBatch([]Item{{Key: "k", Value: big}}))
			isTooLarge(t, "PutReader", tb.PutReader("k", bytes.NewReader(pattern(3<<20, 2)), 3<<20))
			if v, _ := kohakuGet(t, tb.Path(), f, "k"); string(v) != "old" {
				t.Fatalf("value changed: %q", v)
			}
		})
	}
}
