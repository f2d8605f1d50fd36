package mount_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"testing"
	"time"
)

// Opens in the mount against other processes: reading never waits for a
// write lock held elsewhere, and a file the mount has closed is freed at
// once (within the orphan grace period) when another process deletes it.

// rawCountDB runs a count query on the vault file behind the daemon's back.
func rawCountDB(t *testing.T, db *sql.DB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestReadOpenWhileAnotherProcessHoldsWriteLock(t *testing.T) {
	m := mountFresh(t)
	want := genBytes(51, 300_000)
	v := openLibrary(t, m.db)
	if err := v.Put("held.bin", want); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite3", "file:"+m.db+"?_txlock=immediate&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`UPDATE kvault_meta SET value = value WHERE key = 'format'`); err != nil {
		t.Fatal(err)
	}
	// cat opens with O_RDONLY; the old daemon answered EBUSY after its
	// busy timeout and retries (about 25 s).
	r := runCmdLimit(60*time.Second, "", "cat", m.path("held.bin"))
	if r.err != nil {
		t.Fatalf("cat while another process holds the write lock: %v\n%s", r.err, r.stderr)
	}
	if !bytes.Equal([]byte(r.stdout), want) {
		t.Fatalf("cat read %d bytes, not the %d stored", len(r.stdout), len(want))
	}
}

func TestRmElsewhereFreesFileClosedByMount(t *testing.T) {
	m := mountFresh(t)
	for i := range 300 {
		writeFile(t, m.path(fmt.Sprintf("f%03d", i)), genBytes(uint64(i), 1000), 0o644)
	}
	writeFile(t, m.path("big.bin"), genBytes(52, 8<<20), 0o644)
	readFile(t, m.path("big.bin"))
	db, err := sql.Open("sqlite3", "file:"+m.db+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = eventually(10*time.Second, func() error {
		if n := rawCountDB(t, db, `SELECT count(*) FROM kvault_open`); n != 0 {
			return fmt.Errorf("%d open records after every file was closed, want 0", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ino := rawCountDB(t, db, `SELECT child FROM kvault_dentries WHERE parent = 1 AND name = 'big.bin'`)
	run(t, kvaultfs, "rm", m.db, "big.bin")
	err = eventually(10*time.Second, func() error {
		if n := rawCountDB(t, db, `SELECT count(*) FROM kvault_chunks WHERE inode = ?`, ino); n != 0 {
			return fmt.Errorf("%d chunk rows of a file deleted while no process had it open", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
