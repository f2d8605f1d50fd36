package fs

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
)

// Opens through the mount: reading never waits for the write lock, and
// the mount's records of open files end at the last close.

// watchdog fails the test with every goroutine's stack if it is not
// stopped within d.
func watchdog(t *testing.T, d time.Duration) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(d):
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "watchdog: %s still running after %v\n%s", t.Name(), d, buf)
			os.Exit(2)
		}
	}()
	return func() { close(done) }
}

// rawVaultDB opens the vault's file directly, behind the vault's back.
func rawVaultDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=rw&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

func rawCount(t *testing.T, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// waitFor polls cond until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func TestReadOpenWhileAnotherProcessWrites(t *testing.T) {
	defer watchdog(t, 60*time.Second)()
	opts := vault.DefaultOptions()
	opts.BusyTimeout = 100 * time.Millisecond
	opts.Retries = 1
	mnt, v := mountTest(t, opts)
	want := bytes.Repeat([]byte("kvault "), 30000)
	if err := v.Put("a", want); err != nil {
		t.Fatal(err)
	}

	// Another writer holds the write lock, as a long transaction of
	// another process would.
	conn, err := rawVaultDB(t, v.Path()).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(context.Background(), "ROLLBACK")

	got, err := os.ReadFile(filepath.Join(mnt, "a"))
	if err != nil {
		t.Fatalf("open(O_RDONLY) and read through the mount while another process writes: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d stored", len(got), len(want))
	}
}

func TestMountOpenRecordsEndAtLastClose(t *testing.T) {
	defer watchdog(t, 180*time.Second)()
	mnt, v := mountTest(t, nil)
	db := rawVaultDB(t, v.Path())
	const files = 3000
	for i := range files {
		name := filepath.Join(mnt, fmt.Sprintf("f%04d", i))
		if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if _, err := os.ReadFile(name); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The kernel sends RELEASE after close(2) returns; each ends its
	// record in a transaction of its own, which on a loaded machine (the
	// whole suite at once on two cores) took more than 10 s for the
	// last of 3000.
	count := func() int64 { return rawCount(t, db, `SELECT count(*) FROM kvault_open`) }
	if !waitFor(60*time.Second, func() bool { return count() == 0 }) {
		t.Fatalf("%d open records after every file was closed, want 0", count())
	}

	// A closed file deleted by another process (here another vault
	// handle, a session of its own) has its data freed.
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := os.WriteFile(filepath.Join(mnt, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	in, err := v.Stat("big")
	if err != nil {
		t.Fatal(err)
	}
	other, err := vault.Open(v.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Delete("big"); err != nil {
		t.Fatal(err)
	}
	chunks := func() int64 { return rawCount(t, db, `SELECT count(*) FROM kvault_chunks WHERE inode = ?`, in.ID) }
	if !waitFor(10*time.Second, func() bool { return chunks() == 0 }) {
		t.Fatalf("%d chunk rows of a deleted file that no process has open, want 0", chunks())
	}
}
