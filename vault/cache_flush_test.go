package vault

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Nothing acknowledged is lost: a flush that fails keeps every entry, the
// next flush retries them, and entries written during a flush stay dirty.

var errInjected = errors.New("injected flush failure")

// failingFlush is the scenario every way of failing a flush runs through:
// stored keys, then cached puts, overwrites and deletes; the flush fails
// (twice) and must keep everything; once the cause is gone the next
// flush writes it all.
type failingFlush struct {
	valueSize int
	fail      func(t *testing.T, v *Vault) // make flushes fail
	recover   func(t *testing.T, v *Vault) // make them work again
	want      error                        // what a failed flush reports
}

func (s failingFlush) run(t *testing.T, v *Vault) {
	other := openSecond(t, v)
	val := func(tag string, i int) []byte {
		b := bytes.Repeat([]byte{byte(i)}, s.valueSize)
		copy(b, fmt.Sprintf("%s-%d", tag, i))
		return b
	}
	for i := range 5 {
		mustPut(t, v, fmt.Sprintf("s%d", i), val("stored", i))
	}
	enableCache(t, v, 64<<20, 64<<20)
	model := map[string][]byte{}
	for i := range 5 {
		model[fmt.Sprintf("s%d", i)] = val("stored", i)
	}
	const n = 40
	for i := range n {
		k := fmt.Sprintf("p/%02d", i)
		model[k] = val("cached", i)
		mustPut(t, v, k, model[k])
	}
	model["s0"] = val("over", 0)
	mustPut(t, v, "s0", model["s0"])
	for _, k := range []string{"s1", "s2"} {
		if err := v.Delete(k); err != nil {
			t.Fatal(err)
		}
		delete(model, k)
	}
	vb, _, entries := cacheState(v)
	if entries != n+3 {
		t.Fatalf("%d entries pending, want %d", entries, n+3)
	}

	check := func(w *Vault, m map[string][]byte) {
		t.Helper()
		for k, want := range m {
			if got := mustGet(t, w, k); !bytes.Equal(got, want) {
				t.Fatalf("%q: got %d bytes %.12q, want %.12q", k, len(got), got, want)
			}
		}
		wantLen(t, w, len(m))
	}
	stored := map[string][]byte{}
	for i := range 5 {
		stored[fmt.Sprintf("s%d", i)] = val("stored", i)
	}

	s.fail(t, v)
	for attempt := range 2 {
		got, err := v.FlushCache()
		if !errors.Is(err, s.want) {
			t.Fatalf("attempt %d: FlushCache = %d, %v; want %v", attempt, got, err, s.want)
		}
		if got != 0 {
			t.Fatalf("a failed flush reports %d entries committed", got)
		}
		if b, _, e := cacheState(v); b != vb || e != entries {
			t.Fatalf("after a failed flush: %d bytes in %d entries, want %d in %d", b, e, vb, entries)
		}
		check(v, model)      // this process still sees every write
		check(other, stored) // and nothing reached the file
	}
	if err := v.DisableCache(); !errors.Is(err, s.want) {
		t.Fatalf("DisableCache with a failing flush = %v", err)
	}
	if !v.CacheEnabled() {
		t.Fatal("DisableCache turned the cache off although its flush failed")
	}
	if _, _, e := cacheState(v); e != entries {
		t.Fatalf("DisableCache lost entries: %d left of %d", e, entries)
	}

	s.recover(t, v)
	if got := mustFlush(t, v); got != entries {
		t.Fatalf("FlushCache after recovery = %d, want %d", got, entries)
	}
	if b, _, e := cacheState(v); b != 0 || e != 0 {
		t.Fatalf("after the flush: %d bytes in %d entries", b, e)
	}
	check(other, model)
	check(v, model)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	w, err := Open(v.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	check(w, model)
}

func TestCacheFlushInjectedError(t *testing.T) {
	v := openTest(t, nil)
	var failing bool
	setFlushHook(t, func(w *Vault) error {
		if w == v && failing {
			return errInjected
		}
		return nil
	})
	failingFlush{
		valueSize: 100,
		fail:      func(*testing.T, *Vault) { failing = true },
		recover:   func(*testing.T, *Vault) { failing = false },
		want:      errInjected,
	}.run(t, v)
}

// The vault opens a file it cannot write read-only and then refuses to
// enable the cache, and permissions are only checked when a file is
// opened (root ignores them anyway), so a live vault meets a read-only
// database when SQLite refuses the write. PRAGMA query_only on the
// writer connection (the pool holds exactly one) makes SQLite fail the
// flush's writes with SQLITE_READONLY, as a read-only file does, through
// the real statement and error-mapping path.
func TestCacheFlushReadOnlyDatabase(t *testing.T) {
	v := openTest(t, nil)
	setQueryOnly := func(on int) func(*testing.T, *Vault) {
		return func(t *testing.T, v *Vault) {
			if _, err := v.w.Exec(fmt.Sprintf("PRAGMA query_only = %d", on)); err != nil {
				t.Fatal(err)
			}
		}
	}
	failingFlush{valueSize: 100, fail: setQueryOnly(1), recover: setQueryOnly(0), want: ErrReadOnly}.run(t, v)
}

// The disk fills up: the vault lives on an 8 MiB tmpfs, a filler file
// takes the rest, and the flush (640 KiB, more than the WAL holds) gets
// ENOSPC, which is ErrNoSpace. Deleting the filler lets the next flush
// write everything.
func TestCacheFlushDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "mounting a small tmpfs to fill needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8m"); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot mount a tmpfs (%v): the full-disk test needs one", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	v, err := Open(filepath.Join(dir, "full.db"), smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() }) // before the unmount
	filler := filepath.Join(dir, "filler")
	fill := func(t *testing.T, _ *Vault) {
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 64<<10)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, unix.ENOSPC) {
					t.Fatalf("filling the disk: %v", err)
				}
				break
			}
		}
		for _, n := range []int{4096, 512, 1} { // the last partial pages too
			for {
				if _, err := f.Write(buf[:n]); err != nil {
					break
				}
			}
		}
	}
	free := func(t *testing.T, _ *Vault) {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	failingFlush{valueSize: 16 << 10, fail: fill, recover: free, want: ErrNoSpace}.run(t, v)
}

// An entry that one key cannot take (another process made its parent a
// file) fails alone: the rest commit, it stays cached and is reported
// again by the next flush.
func TestCacheFlushEntryError(t *testing.T) {
	v := openTest(t, nil)
	enableCache(t, v, 1<<20, 1<<20)
	other := openSecond(t, v)
	mustPut(t, v, "a/b", []byte("under a"))
	mustPut(t, v, "ok", []byte("fine"))
	mustPut(t, other, "a", []byte("a file now")) // like another process
	n, err := v.FlushCache()
	if n != 1 || !errors.Is(err, ErrNotDir) {
		t.Fatalf("FlushCache = %d, %v; want 1, ErrNotDir", n, err)
	}
	var ve *Error
	if !errors.As(err, &ve) || ve.Key != "a/b" {
		t.Fatalf("the error %v does not name the key a/b", err)
	}
	wantValue(t, other, "ok", "fine")
	wantValue(t, v, "a/b", "under a") // kept
	if n, err := v.FlushCache(); n != 0 || !errors.Is(err, ErrNotDir) {
		t.Fatalf("second FlushCache = %d, %v; want 0, ErrNotDir", n, err)
	}
	// Deleting the entry resolves it.
	if err := v.Delete("a/b"); err != nil {
		t.Fatal(err)
	}
	if n, err := v.FlushCache(); n != 0 || err != nil {
		t.Fatalf("FlushCache after the delete = %d, %v", n, err)
	}
	wantValue(t, other, "a", "a file now")
}

// A Close whose flush fails returns the error and keeps the vault open
// with everything pending; once the cause is gone, Close succeeds and
// nothing was lost.
func TestCacheCloseReturnsFlushError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "close.db")
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	failing := true
	setFlushHook(t, func(w *Vault) error {
		if w == v && failing {
			return errInjected
		}
		return nil
	})
	enableCache(t, v, 1<<20, 1<<20)
	mustPut(t, v, "k", []byte("v"))
	if err := v.Close(); !errors.Is(err, errInjected) {
		t.Fatalf("Close = %v, want the flush error", err)
	}
	mustPut(t, v, "k2", []byte("v2")) // still open
	failing = false
	if err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := v.Put("k3", []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
	v2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	wantValue(t, v2, "k", "v")
	wantValue(t, v2, "k2", "v2")
}

// A put that crosses the threshold reports the failed flush, and its
// value is kept with the others.
func TestCacheThresholdFlushFailureKeepsPut(t *testing.T) {
	v := openTest(t, nil)
	var failing = true
	setFlushHook(t, func(w *Vault) error {
		if w == v && failing {
			return errInjected
		}
		return nil
	})
	enableCache(t, v, 1000, 100)
	other := openSecond(t, v)
	mustPut(t, v, "a", make([]byte, 50))
	if err := v.Put("b", make([]byte, 60)); !errors.Is(err, errInjected) {
		t.Fatalf("Put crossing the threshold = %v, want the flush error", err)
	}
	if _, _, n := cacheState(v); n != 2 {
		t.Fatalf("%d entries pending, want 2", n)
	}
	if got := mustGet(t, v, "b"); len(got) != 60 {
		t.Fatalf("b: %d bytes", len(got))
	}
	failing = false
	if n := mustFlush(t, v); n != 2 {
		t.Fatalf("FlushCache = %d, want 2", n)
	}
	if got := mustGet(t, other, "b"); len(got) != 60 {
		t.Fatalf("b in the file: %d bytes", len(got))
	}
}

// pauseFlushes makes v's next flush wait inside its transaction, after
// writing its entries, until release is closed. entered is closed when
// it waits.
func pauseFlushes(t *testing.T, v *Vault) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	paused := false
	setFlushHook(t, func(w *Vault) error {
		if w != v || paused {
			return nil
		}
		paused = true
		close(entered)
		<-release
		return nil
	})
	return entered, release
}

func TestCacheRewriteDuringFlushStaysDirty(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "del", []byte("stored"))
	enableCache(t, v, 1<<20, 1<<20)
	other := openSecond(t, v)
	mustPut(t, v, "k", []byte("v1"))
	mustPut(t, v, "same", []byte("same"))
	mustPut(t, v, "del", []byte("v1"))
	entered, release := pauseFlushes(t, v)
	type result struct {
		n   int
		err error
	}
	done := make(chan result)
	go func() {
		n, err := v.FlushCache()
		done <- result{n, err}
	}()
	<-entered
	// Written while the flush runs: newer than what it commits.
	mustPut(t, v, "k", []byte("v2"))
	if err := v.Delete("del"); err != nil { // stored: a tombstone
		t.Fatal(err)
	}
	mustPut(t, v, "new", []byte("n"))
	wantValue(t, v, "k", "v2")
	wantMissing(t, v, "del")
	close(release)
	r := <-done
	if r.err != nil || r.n != 3 {
		t.Fatalf("paused FlushCache = %d, %v; want 3", r.n, r.err)
	}
	// The flush committed what it had; the newer writes are still pending.
	wantValue(t, other, "k", "v1")
	wantValue(t, other, "del", "v1")
	wantValue(t, other, "same", "same")
	wantMissing(t, other, "new")
	wantValue(t, v, "k", "v2")
	wantMissing(t, v, "del")
	if _, _, n := cacheState(v); n != 3 {
		t.Fatalf("%d entries pending after the flush, want 3 (k, del, new)", n)
	}
	if n := mustFlush(t, v); n != 3 {
		t.Fatalf("second FlushCache = %d, want 3", n)
	}
	wantValue(t, other, "k", "v2")
	wantMissing(t, other, "del")
	wantValue(t, other, "new", "n")
}

// A delete of a key that exists only in the cache, made while a flush is
// writing that key, must still delete it: the flush stores the key (the
// same version, or an older one while a newer one waits in the cache),
// so the delete has to reach the database too.
func TestCacheDeleteDuringFlush(t *testing.T) {
	for _, rewrite := range []bool{false, true} {
		t.Run(fmt.Sprintf("rewritten=%v", rewrite), func(t *testing.T) {
			v := openTest(t, nil)
			enableCache(t, v, 1<<20, 1<<20)
			other := openSecond(t, v)
			mustPut(t, v, "k", []byte("v1"))
			entered, release := pauseFlushes(t, v)
			flushed := make(chan error)
			go func() {
				_, err := v.FlushCache()
				flushed <- err
			}()
			<-entered
			if rewrite {
				mustPut(t, v, "k", []byte("v2"))
			}
			deleted := make(chan error)
			go func() { deleted <- v.Delete("k") }()
			select { // the delete may wait for the flush, or finish first
			case err := <-deleted:
				close(release)
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(200 * time.Millisecond):
				close(release)
				if err := <-deleted; err != nil {
					t.Fatal(err)
				}
			}
			if err := <-flushed; err != nil {
				t.Fatal(err)
			}
			wantMissing(t, v, "k")
			wantLen(t, v, 0)
			mustFlush(t, v)
			wantMissing(t, other, "k")
			wantMissing(t, v, "k")
		})
	}
}
