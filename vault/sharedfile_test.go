package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of one file written by several processes at once, and of the
// locking rules of open files (see openInode). Two Vaults opened on one
// path share nothing in memory: to the vault they are two processes.

// Two processes write different byte ranges of one chunk: each commit
// merges only its own ranges onto the chunk as stored, so both survive.
// It failed before: a write copied the whole stored chunk, and the later
// commit put that stale copy back over the other process's bytes.
func TestTwoProcessesWriteOneChunk(t *testing.T) {
	a := openTest(t, nil)
	b := openSecond(t, a)
	base := bytes.Repeat([]byte("."), 3*int(a.Options().ChunkSize)/2)
	mustPut(t, a, "f", base)
	fa, err := a.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := b.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	want := append(bytes.Clone(base), 0, 0) // a's TAIL grows the file by 2
	write := func(f *File, s string, off int) {
		t.Helper()
		if _, err := f.WriteAt([]byte(s), int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], s)
	}
	write(fa, "AAAA", 100)
	write(fb, "BBBB", 1000)
	write(fb, "bb", 102) // overlaps a's write: the later commit wins there
	write(fa, "TAIL", len(base)-2)
	if err := fb.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := fa.Sync(); err != nil { // a commits last: its "AA" at 102 wins
		t.Fatal(err)
	}
	copy(want[100:], "AAAA")
	for _, v := range []*Vault{a, b, openSecond(t, a)} {
		if got := mustGet(t, v, "f"); !bytes.Equal(got, want) {
			t.Fatalf("after both commits: %q...; want %q...", diffAt(got, want), diffAt(want, got))
		}
	}
	// Each open file sees the other's bytes once committed.
	got := make([]byte, len(want))
	if n, err := fb.ReadAt(got, 0); n != len(want) || !bytes.Equal(got, want) {
		t.Fatalf("b's open file reads %d bytes (%v), differing at %q", n, err, diffAt(got, want))
	}
}

// diffAt shows a around where it first differs from b.
func diffAt(a, b []byte) string {
	i := firstDiff(a, b)
	return fmt.Sprintf("@%d:%q", i, a[max(i-4, 0):min(i+12, len(a))])
}

// Two processes append lines to one file with O_APPEND, each keeping it
// open: every line lands whole, once, at the end as stored when it was
// written. It failed before: each process appended at the end it had seen
// when it opened the file, overwriting the other's lines.
func TestTwoProcessesAppend(t *testing.T) {
	a := openTest(t, smallChunks())
	b := openSecond(t, a)
	mustPut(t, a, "log", nil)
	var files []*File
	for _, v := range []*Vault{a, b} {
		f, err := v.OpenFile("log", os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	want := map[string]bool{}
	for i := range 300 {
		line := fmt.Sprintf("writer %d line %d %s\n", i%2, i, strings.Repeat("x", i%50))
		want[line] = true
		if _, err := files[i%2].Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	checkLines(t, mustGet(t, openSecond(t, a), "log"), want)
}

// checkLines asserts that data is exactly the lines of want, each once,
// in any order.
func checkLines(t *testing.T, data []byte, want map[string]bool) {
	t.Helper()
	if bytes.IndexByte(data, 0) >= 0 {
		t.Fatalf("NUL bytes at %d", bytes.IndexByte(data, 0))
	}
	seen := map[string]bool{}
	for line := range strings.Lines(string(data)) {
		if !want[line] || seen[line] {
			t.Fatalf("unexpected or repeated line %q", line)
		}
		seen[line] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("%d of %d lines survived", len(seen), len(want))
	}
}

// Appends and writes from two processes at once, each write committed
// (as a mount commits at close): nothing is lost.
func TestTwoProcessesAppendConcurrently(t *testing.T) {
	a := openTest(t, smallChunks())
	b := openSecond(t, a)
	mustPut(t, a, "log", nil)
	var progress atomic.Int64
	defer progressWatchdog(t, &progress, 30*time.Second)()
	var mu sync.Mutex
	want := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w, v := range []*Vault{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				line := fmt.Sprintf("w%d %d %s\n", w, i, strings.Repeat("y", (i*7)%90))
				f, err := v.OpenFile("log", os.O_WRONLY|os.O_APPEND, 0)
				if err == nil {
					_, err = f.Write([]byte(line))
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				want[line] = true
				mu.Unlock()
				progress.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkLines(t, mustGet(t, a, "log"), want)
}

// lockWriter takes the database's write lock on a connection of its own
// and returns the function that releases it.
func lockWriter(t *testing.T, path string) func() {
	t.Helper()
	db := rawDB(t, path, false)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			conn.ExecContext(ctx, `ROLLBACK`)
			conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// A truncate that fails to commit changes nothing: the bytes written
// before it are all still there and are committed at close. It failed
// before: the dirty chunks were cut before the transaction, so a busy
// database turned the written bytes into zeros while Close returned nil.
func TestFailedTruncateKeepsWrites(t *testing.T) {
	o := smallChunks()
	o.BusyTimeout, o.Retries = 20*time.Millisecond, 0
	v := openTest(t, o)
	f, err := v.OpenFile("f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("X"), 10000)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	release := lockWriter(t, v.Path())
	if err := f.Truncate(10); !errors.Is(err, ErrBusy) {
		t.Fatalf("Truncate with the database locked = %v, want ErrBusy", err)
	}
	if f.Size() != int64(len(data)) {
		t.Fatalf("Size after a failed truncate = %d, want %d", f.Size(), len(data))
	}
	release()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, v, "f"); !bytes.Equal(got, data) {
		t.Fatalf("after a failed truncate and close: %d bytes %s, want %d X", len(got), diffAt(got, data), len(data))
	}
}

// While a truncate or an attribute change waits for the write lock, the
// file's size, reads and writes do not wait behind it. They did before:
// truncate and setMeta held the inode's lock across the transaction.
func TestOpenFileNotBlockedByWaitingCommit(t *testing.T) {
	o := smallChunks()
	o.BusyTimeout, o.Retries = 20*time.Second, 0
	v := openTest(t, o)
	mustPut(t, v, "f", bytes.Repeat([]byte("z"), 20000))
	f, err := v.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	release := lockWriter(t, v.Path())
	waiting := make(chan error, 2)
	go func() { waiting <- f.Truncate(5) }()
	mtime := time.Now().UnixNano()
	go func() {
		_, err := v.SetAttr(f.Ino(), SetAttr{Mtime: &mtime})
		waiting <- err
	}()
	time.Sleep(100 * time.Millisecond) // both are now waiting for the lock
	done := make(chan struct{})
	var n int
	var rerr, werr error
	go func() {
		defer close(done)
		_ = f.Size()
		n, rerr = f.ReadAt(make([]byte, 100), 4000)
		_, werr = f.WriteAt([]byte("w"), 7)
		_ = f.Generation()
	}()
	waitOrHang(t, done, 5*time.Second, "Size, ReadAt and WriteAt during a waiting truncate")
	release()
	for range 2 {
		if err := <-waiting; err != nil {
			t.Errorf("truncate or setattr after the lock was released: %v", err)
		}
	}
	if n != 100 || rerr != nil || werr != nil {
		t.Fatalf("ReadAt = %d, %v; WriteAt: %v", n, rerr, werr)
	}
}

// Listings of a directory while one of its files is written at unaligned
// offsets and read: nothing waits for good. It hung before, within a
// second: the listings held pooled connections while waiting for the
// open file's lock, and the writer held that lock while waiting for a
// connection to read the chunk it partly covered.
func TestListingsWhileWritingNoDeadlock(t *testing.T) {
	o := smallChunks()
	v := openTest(t, o)
	for i := range 50 {
		mustPut(t, v, fmt.Sprintf("d/other%02d", i), []byte("x"))
	}
	const size = 64 * 4096
	mustPut(t, v, "d/f", bytes.Repeat([]byte("s"), size))
	f, err := v.OpenFile("d/f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir, err := v.Stat("d")
	if err != nil {
		t.Fatal(err)
	}
	var progress atomic.Int64
	defer progressWatchdog(t, &progress, 20*time.Second)()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	loop := func(fn func(rng *rand.Rand) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(progress.Add(1)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := fn(rng); err != nil {
					errs <- err
					return
				}
				progress.Add(1)
			}
		}()
	}
	for range 8 {
		loop(func(*rand.Rand) error {
			_, err := v.ReadDir(dir.ID, 0, 1000)
			return err
		})
	}
	for range 2 {
		loop(func(rng *rand.Rand) error {
			_, err := f.ReadAt(make([]byte, 3), rng.Int63n(size-3))
			return err
		})
	}
	writes := 0
	loop(func(rng *rand.Rand) error {
		if _, err := f.WriteAt([]byte("ab"), 2*rng.Int63n(size/2-1)+1); err != nil {
			return err
		}
		if writes++; writes%8 == 0 {
			return f.Flush()
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	waitOrHang(t, done, 20*time.Second, "the listing and writing loops")
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A background write-out that fails is reported to the writers of the
// file it could not commit, not to whoever writes next. Before, the next
// writer of any file got the other file's error.
func TestWriteOutErrorGoesToItsFile(t *testing.T) {
	o := smallChunks()
	v := openTest(t, o)
	v.EnableCache(64<<10, 32<<10)
	good, err := v.OpenFile("good", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	bad, err := v.OpenFile("bad", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// Make every commit of "bad" fail: its inode row is gone.
	db := rawDB(t, v.Path(), false)
	if _, err := db.Exec(tableSQL(DefaultTable, `DELETE FROM {t}_inodes WHERE id = ?`), bad.Ino()); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("b"), 4096)
	for i := range 12 { // past the threshold: a write-out runs and fails on "bad"
		if _, err := bad.WriteAt(chunk, int64(i)*4096); err != nil {
			break // the error reached bad's own writer: fine
		}
	}
	v.cache.waitWriteOut()
	for i := range 40 {
		if _, err := good.WriteAt(chunk, int64(i)*4096); err != nil {
			t.Fatalf("write %d of another file got %v", i, err)
		}
		v.cache.waitWriteOut()
	}
	if err := good.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, v, "good"); len(got) != 40*4096 {
		t.Fatalf("good has %d bytes", len(got))
	}
}

// Reads of a file that this process commits to often never wait for
// another process's write lock. They did while a read that overlapped
// commits fell back to the lock that orders commits, which a commit holds
// while it waits for the write lock.
func TestReadsNeverWaitForWriteLock(t *testing.T) {
	o := smallChunks()
	o.BusyTimeout, o.Retries = 5*time.Second, 0
	v := openTest(t, o)
	mustPut(t, v, "f", bytes.Repeat([]byte("s"), 64*4096))
	w, err := v.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // commits as fast as it can
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			w.WriteAt([]byte("w"), int64(i%64)*4096+1)
			w.Flush()
		}
	}()
	var worst atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 64*4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				if _, err := w.ReadAt(p, 0); err != nil {
					t.Error(err)
					return
				}
				if d := int64(time.Since(start)); d > worst.Load() {
					worst.Store(d)
				}
			}
		}()
	}
	// Another process holds the write lock for 2 s at a time: a read
	// that waited for it would take about that long, far more than a
	// read on a busy machine.
	for i := 0; i < 4 && worst.Load() < int64(time.Second); i++ {
		time.Sleep(100 * time.Millisecond)
		release := lockWriter(t, v.Path())
		time.Sleep(2 * time.Second)
		release()
	}
	close(stop)
	wg.Wait()
	if d := time.Duration(worst.Load()); d > time.Second {
		t.Fatalf("a ReadAt took %v while another process held the write lock", d)
	}
}

// A write-out error is forgotten once the file's data is committed: the
// writes after it succeed. Before, the first write after a successful
// Flush still failed with the old error.
func TestWriteOutErrorClearedByCommit(t *testing.T) {
	o := smallChunks()
	o.BusyTimeout, o.Retries = 20*time.Millisecond, 0
	v := openTest(t, o)
	f, err := v.OpenFile("f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte("b"), 3*4096), 0); err != nil {
		t.Fatal(err)
	}
	release := lockWriter(t, v.Path())
	if v.writeOutStep() { // fails: busy
		t.Fatal("a write-out committed while another process held the write lock")
	}
	release()
	if err := f.Flush(); err != nil {
		t.Fatalf("Flush once the lock is gone: %v", err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); err != nil {
		t.Fatalf("write after everything was committed: %v", err)
	}
}

// A row holding bytes past the stored size (left by an older version, or
// hostile) never shows through a read of an open file: the read reports
// the damage. Before, a read of an open file returned those bytes as
// data until the next commit.
func TestRowPastSizeNeverShows(t *testing.T) {
	v := openTest(t, smallChunks())
	mustPut(t, v, "f", bytes.Repeat([]byte("x"), 100))
	db := rawDB(t, v.Path(), false)
	if _, err := db.Exec(tableSQL(DefaultTable, `UPDATE {t}_inodes SET size = 10`)); err != nil {
		t.Fatal(err)
	}
	f, err := v.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("Y"), 200); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 201)
	n, err := f.ReadAt(p, 0)
	if err == nil && bytes.Contains(p[10:n], []byte("x")) {
		t.Fatalf("read %d bytes with the stale row's bytes past the size: %s", n, diffAt(p, nil))
	}
	if err != nil && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadAt = %d, %v; want the bytes as zeros or ErrCorrupt", n, err)
	}
}

// Grow never shrinks a file that another process made longer. Before,
// fallocate through a mount truncated to the end it asked for whenever
// its own view of the size was shorter.
func TestGrowKeepsLongerFile(t *testing.T) {
	a := openTest(t, smallChunks())
	b := openSecond(t, a)
	mustPut(t, a, "f", nil)
	f, err := a.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte("B"), 10000)
	mustPut(t, b, "f2", nil)
	g, err := b.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Grow(100); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, b, "f"); !bytes.Equal(got, data) {
		t.Fatalf("after Grow(100) by the other process: %d bytes, want %d", len(got), len(data))
	}
	if err := f.Grow(20000); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, b, "f"); len(got) != 20000 || !bytes.Equal(got[:10000], data) || !allZero(got[10000:]) {
		t.Fatalf("after Grow(20000): %d bytes", len(got))
	}
}
