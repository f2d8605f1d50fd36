package main

import (
	"bytes"
	"database/sql"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

// Damaged files through the binary: no command panics; each fails with
// exit 1 and one line on stderr, and verify names the damaged key. A
// chunk size of 0 made get divide by zero, a negative size made it panic,
// and chunks moved with their CRC passed verify and came out of get.

// rawEdit runs one statement on the database behind kvaultfs's back and
// checks that it changed rows.
func rawEdit(t *testing.T, db, query string, args ...any) {
	t.Helper()
	sdb, err := sql.Open("sqlite3", db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	res, err := sdb.Exec(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		t.Fatalf("%s changed nothing", query)
	}
}

func TestHostileRowsCLI(t *testing.T) {
	for _, set := range []string{"chunk_size = 0", "chunk_size = -1", "size = -1",
		fmt.Sprintf("size = %d", math.MaxInt64), "chunk_size = 1 << 40"} {
		t.Run(set, func(t *testing.T) {
			dir := t.TempDir()
			db := filepath.Join(dir, "v.db")
			good := randomBytes(70000, 1)
			mustOK(t, kv(t, bytes.NewReader(randomBytes(200000, 2)), "put", db, "bad"), "put bad")
			mustOK(t, kv(t, bytes.NewReader(good), "put", db, "good"), "put good")
			ino := statField(t, db, "bad", "inode")
			rawEdit(t, db, `UPDATE kvault_inodes SET `+set+` WHERE id = ?`, ino)

			mustFail(t, kv(t, nil, "get", db, "bad"), 1, "corrupt", "get")
			mustFail(t, kv(t, nil, "get", db, "bad", filepath.Join(dir, "out")), 1, "corrupt", "get to a file")
			mustFail(t, kv(t, nil, "stat", db, "bad"), 1, "corrupt", "stat")
			r := kv(t, nil, "ls", db)
			mustOK(t, r, "ls") // listing names reads no inode
			if !strings.Contains(string(r.stdout), "bad") || !strings.Contains(string(r.stdout), "good") {
				t.Errorf("ls = %q", r.stdout)
			}
			r = kv(t, nil, "verify", db)
			mustFail(t, r, 1, "problem", "verify")
			if !strings.HasPrefix(string(r.stdout), "bad\t") {
				t.Errorf("verify stdout = %q, want a line for bad", r.stdout)
			}
			r = kv(t, nil, "get", db, "good")
			mustOK(t, r, "get good")
			if !bytes.Equal(r.stdout, good) {
				t.Error("good reads back wrong")
			}
			mustOK(t, kv(t, nil, "rm", db, "bad"), "rm of the damaged key")
			mustOK(t, kv(t, nil, "verify", db), "verify after rm")
		})
	}
}

func TestSwappedChunksCLI(t *testing.T) {
	db := filepath.Join(t.TempDir(), "v.db")
	val := randomBytes(3*65536, 3)
	mustOK(t, kv(t, bytes.NewReader(val), "put", db, "v"), "put")
	ino := statField(t, db, "v", "inode")
	// Swap chunks 0 and 1, each with its own CRC.
	rawEdit(t, db, `UPDATE kvault_chunks SET idx = CASE idx WHEN 0 THEN -1 ELSE idx END WHERE inode = ?`, ino)
	rawEdit(t, db, `UPDATE kvault_chunks SET idx = 0 WHERE inode = ? AND idx = 1`, ino)
	rawEdit(t, db, `UPDATE kvault_chunks SET idx = 1 WHERE inode = ? AND idx = -1`, ino)
	r := kv(t, nil, "verify", db)
	mustFail(t, r, 1, "1 problem", "verify")
	if !strings.HasPrefix(string(r.stdout), "v\t") {
		t.Errorf("verify stdout = %q", r.stdout)
	}
	r = kv(t, nil, "get", db, "v")
	mustFail(t, r, 1, "corrupt", "get")
	if !bytes.Equal(r.stdout, val[:len(r.stdout)]) {
		t.Error("get wrote bytes that are not the value's")
	}
}
