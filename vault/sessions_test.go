package vault

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tests of how opens are recorded: a read-only open never needs the
// write lock, records end at the last close, and data of a file deleted
// elsewhere is kept exactly as long as someone may still read it.

// holdWriteLock takes the database's write lock on a raw connection (as
// another process writing would) until the returned function is called.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	db := rawDB(t, path, false)
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("BEGIN IMMEDIATE: %v", err)
	}
	return func() {
		conn.ExecContext(context.Background(), "ROLLBACK")
		conn.Close()
	}
}

// impatient returns options whose writes give up quickly on a busy
// database, so that a wait for the write lock shows as ErrBusy at once.
func impatient() *Options {
	o := smallChunks()
	o.BusyTimeout = 100 * time.Millisecond
	o.Retries = 1
	o.BackoffBase = 10 * time.Millisecond
	return o
}

func TestReadOpenNeedsNoWriteLock(t *testing.T) {
	defer watchdog(t, 60*time.Second)()
	path := filepath.Join(t.TempDir(), "test.db")
	v, err := Open(path, impatient())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := genBytes(1, 3*4096+17)
	mustPut(t, v, "a", want)
	mustPut(t, v, "b", want)
	in, err := v.Stat("b")
	if err != nil {
		t.Fatal(err)
	}

	release := holdWriteLock(t, path)
	defer release()
	check := func(f *File, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("open for reading while another connection writes: %v", err)
		}
		got := make([]byte, len(want)+10)
		n, err := f.ReadAt(got, 0)
		if err != io.EOF || !bytes.Equal(got[:n], want) {
			t.Errorf("read %d bytes, %v; want the %d stored bytes", n, err, len(want))
		}
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	check(v.Open("a"))
	check(v.OpenInode(in.ID, os.O_RDONLY))
	check(v.Open("a")) // again, after the last close
	// Writing still needs the lock: it waits and says so.
	if _, err := v.OpenFile("a", os.O_RDWR, 0); !errors.Is(err, ErrBusy) {
		t.Errorf("open for writing while another connection writes: %v, want ErrBusy", err)
	}
}

// countOpen returns how many open records the vault file holds.
func countOpen(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	return rawCount(t, db, `SELECT count(*) FROM {t}_open`)
}

func TestOpenRecordsEndAtLastClose(t *testing.T) {
	defer watchdog(t, 120*time.Second)()
	path := filepath.Join(t.TempDir(), "test.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	db := rawDB(t, path, true)
	const files = 3000
	for i := range files {
		name := fmt.Sprintf("f%04d", i)
		f, _, err := v.CreateFile(RootIno, name, 0o644, 0, 0, os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte(name), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 1:
			f, err = v.OpenFile(name, os.O_RDWR, 0)
		case 2:
			f, err = v.Open(name)
		}
		if i%3 != 0 {
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := countOpen(t, db); n != 0 {
		t.Fatalf("%d open records after every file was closed, want 0", n)
	}

	// Another vault (a session of its own, as another process would be)
	// deletes a file this one has closed: its data goes at once.
	v2, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	mustPut(t, v2, "big", genBytes(2, 10*4096))
	f, err := v.Open("big")
	if err != nil {
		t.Fatal(err)
	}
	ino := f.Ino()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v2.Delete("big"); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		return rawCount(t, db, `SELECT count(*) FROM {t}_chunks WHERE inode = ?`, ino) == 0
	}) {
		t.Fatalf("%d chunk rows of a deleted file that nobody has open, want 0",
			rawCount(t, db, `SELECT count(*) FROM {t}_chunks WHERE inode = ?`, ino))
	}
}

// A file deleted by another vault while it is open here for reading (an
// open that wrote nothing) stays readable until its last close, however
// long after the delete that is, and is freed then.
func TestUnrecordedReaderKeepsDeletedFile(t *testing.T) {
	defer watchdog(t, 120*time.Second)()
	path := filepath.Join(t.TempDir(), "test.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	v2, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	db := rawDB(t, path, true)
	want := genBytes(3, 20*4096+5)
	mustPut(t, v2, "k", want)
	mustPut(t, v, "other", []byte("x"))
	f, err := v.Open("k")
	if err != nil {
		t.Fatal(err)
	}
	// The open wrote nothing; the session that makes other processes
	// keep the data is created in the background, at the first open.
	if !waitFor(10*time.Second, func() bool { return v.sess.id.Load() != 0 }) {
		t.Fatal("no session after an open for reading")
	}
	if err := v2.Delete("k"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2*orphanGrace + time.Second) // every sweep has had its chance to free it
	got := make([]byte, len(want))
	if n, err := f.ReadAt(got, 0); n != len(want) || !bytes.Equal(got, want) {
		t.Fatalf("read of an open file deleted elsewhere: %d bytes, %v, equal %v", n, err, bytes.Equal(got[:n], want[:n]))
	}
	ino := f.Ino()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		return rawCount(t, db, `SELECT count(*) FROM {t}_inodes WHERE id = ?`, ino) == 0 &&
			rawCount(t, db, `SELECT count(*) FROM {t}_chunks WHERE inode = ?`, ino) == 0
	}) {
		t.Fatal("the deleted file was not freed after its last close")
	}
	if n := countOpen(t, db); n != 0 {
		t.Errorf("%d open records left, want 0", n)
	}
}

// A read of a file whose data was freed behind its back (an open that
// was not yet protected) fails; it never returns zeros for the lost bytes.
func TestReadOfFreedFileFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "test.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mustPut(t, v, "k", genBytes(4, 5*4096))
	f, err := v.Open("k")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	db := rawDB(t, path, false)
	for _, s := range []string{`DELETE FROM {t}_dentries WHERE child = ?1`, `DELETE FROM {t}_inodes WHERE id = ?1`} {
		if _, err := db.Exec(tableSQL(DefaultTable, s), f.Ino()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	if n, err := f.ReadAt(buf, 4096); err == nil {
		t.Fatalf("read of a freed file returned %d bytes and no error", n)
	}
}

// Once the session exists, opening, reading and closing a file for
// reading runs no write transaction at all.
func TestReadOpenWritesNothing(t *testing.T) {
	v := openTest(t, smallChunks())
	mustPut(t, v, "k", genBytes(5, 3*4096))
	f, err := v.OpenFile("k", os.O_RDWR, 0) // creates the session
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	before := v.txSeq.Load()
	for range 3 {
		f, err := v.Open("k")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadAt(make([]byte, 100), 5000); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.txSeq.Load() - before; n != 0 {
		t.Errorf("%d write transactions for three opens for reading, want 0", n)
	}
}

// BenchmarkCreateWriteClose is what tar does per small file: create,
// write 4 KiB, close (whose record now ends in its own transaction).
func BenchmarkCreateWriteClose(b *testing.B) {
	v := openTest(b, nil)
	data := genBytes(6, 4096)
	b.ResetTimer()
	for i := range b.N {
		f, _, err := v.CreateFile(RootIno, fmt.Sprintf("f%d", i), 0o644, 0, 0, os.O_WRONLY)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.WriteAt(data, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenReadClose opens, reads 4 KiB of and closes one of many
// files, each for the first time: the open writes nothing now.
func BenchmarkOpenReadClose(b *testing.B) {
	v := openTest(b, nil)
	data := genBytes(7, 4096)
	const files = 1000
	for i := range files {
		mustPut(b, v, fmt.Sprintf("f%d", i), data)
	}
	buf := make([]byte, 4096)
	b.ResetTimer()
	for i := range b.N {
		f, err := v.Open(fmt.Sprintf("f%d", i%files))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.ReadAt(buf, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func init() {
	// openreader: args path, key. Opens key for reading, prints "open"
	// once its session exists, then obeys stdin: "read" prints the hex
	// SHA-256 of the whole file (or the error), "close" closes and exits.
	registerHelper("openreader", func(args []string) error {
		v, err := Open(args[0], nil)
		if err != nil {
			return err
		}
		defer v.Close()
		f, err := v.Open(args[1])
		if err != nil {
			return err
		}
		if !waitFor(10*time.Second, func() bool { return v.sess.id.Load() != 0 }) {
			return errors.New("no session after an open for reading")
		}
		fmt.Println("open")
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			switch in.Text() {
			case "read":
				h := sha256.New()
				if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<40)); err != nil {
					fmt.Println("error:", err)
					continue
				}
				fmt.Println(hex.EncodeToString(h.Sum(nil)))
			case "close":
				if err := f.Close(); err != nil {
					return err
				}
				return v.Close()
			}
		}
		return in.Err()
	})
}

// Another process has a file open for reading (which wrote nothing) when
// this one deletes it: the data stays while that process lives, however
// long after the grace period, and is freed once it dies (kill -9).
func TestOtherProcessReadingKeepsDeletedFile(t *testing.T) {
	defer watchdog(t, 120*time.Second)()
	path := filepath.Join(t.TempDir(), "test.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := genBytes(8, 30*4096+1)
	mustPut(t, v, "k", want)
	sum := sha256.Sum256(want)
	in, err := v.Stat("k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.sessionID(); err != nil { // this process sweeps too
		t.Fatal(err)
	}

	cmd := helperCmd(t, "", "openreader", path, "k")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	line := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("helper ended: %v\n%s", lines.Err(), stderr.String())
		}
		return strings.TrimSpace(lines.Text())
	}
	if got := line(); got != "open" {
		t.Fatalf("helper said %q", got)
	}
	if err := v.Delete("k"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2*orphanGrace + time.Second)
	fmt.Fprintln(stdin, "read")
	if got := line(); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("the other process read %q after the delete, want the file's SHA-256", got)
	}
	db := rawDB(t, path, true)
	chunks := func() int64 { return rawCount(t, db, `SELECT count(*) FROM {t}_chunks WHERE inode = ?`, in.ID) }
	if n := chunks(); n != 31 {
		t.Fatalf("%d chunk rows while the other process reads, want 31", n)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !waitFor(10*time.Second, func() bool { return chunks() == 0 }) {
		t.Fatalf("%d chunk rows after the reader died, want 0", chunks())
	}
}
