package vault

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Tests of the write-back cache's API: sizes, FlushCache, DisableCache,
// Close and the background flush. The view the cache presents is tested
// in cache_view_test.go, failing flushes in cache_flush_test.go, the
// shared byte budget in cache_budget_test.go and concurrency in
// cache_race_test.go.

// cacheState reads the cache's counters under its lock.
func cacheState(v *Vault) (valueBytes, dirtyBytes int64, entries int) {
	v.cache.mu.Lock()
	defer v.cache.mu.Unlock()
	return v.cache.valueBytes, v.cache.dirtyBytes, len(v.cache.values)
}

// openSecond opens an independent handle on v's file, with its own
// connections, as another process would; it sees only what v committed.
func openSecond(t testing.TB, v *Vault) *Vault {
	t.Helper()
	o := v.Options()
	w, err := Open(v.Path(), &o)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// setFlushHook installs flushHook for the rest of the test.
func setFlushHook(t testing.TB, fn func(v *Vault) error) {
	t.Helper()
	flushHook = fn
	t.Cleanup(func() { flushHook = nil })
}

// enableCache turns the cache on or fails the test.
func enableCache(t testing.TB, v *Vault, capBytes, threshold int64, opts ...CacheOption) {
	t.Helper()
	if err := v.EnableCache(capBytes, threshold, opts...); err != nil {
		t.Fatalf("EnableCache(%d, %d): %v", capBytes, threshold, err)
	}
}

func mustFlush(t testing.TB, v *Vault) int {
	t.Helper()
	n, err := v.FlushCache()
	if err != nil {
		t.Fatalf("FlushCache: %v", err)
	}
	return n
}

// wantValue checks that key reads as want in v.
func wantValue(t testing.TB, v *Vault, key, want string) {
	t.Helper()
	got, err := v.Get(key)
	if err != nil {
		t.Fatalf("Get(%q): %v, want %q", key, err, want)
	}
	if string(got) != want {
		t.Fatalf("Get(%q) = %q, want %q", key, got, want)
	}
}

// wantMissing checks that key has no value in v.
func wantMissing(t testing.TB, v *Vault, key string) {
	t.Helper()
	if got, err := v.Get(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", key, got, err)
	}
	if ok, err := v.Exists(key); ok || err != nil {
		t.Fatalf("Exists(%q) = %v, %v; want false", key, ok, err)
	}
}

func wantLen(t testing.TB, v *Vault, want int) {
	t.Helper()
	if n, err := v.Len(); err != nil || n != want {
		t.Fatalf("Len = %d, %v; want %d", n, err, want)
	}
}

// noBackgroundFlusher waits (briefly: a stopped goroutine may still be
// returning) until no background flush goroutine is left.
func noBackgroundFlusher() bool {
	return waitFor(2*time.Second, func() bool { return backgroundFlushers() == 0 })
}

// backgroundFlushers counts goroutines running the cache's background flush.
func backgroundFlushers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "(*writeCache).startBackground in goroutine") // the "created by" line
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestCacheEnableInvalidSizes(t *testing.T) {
	v := openTest(t, nil)
	for _, c := range []struct{ capBytes, threshold int64 }{
		{0, 0}, {0, 1}, {-1, 1}, {1 << 20, 0}, {1 << 20, -5}, {100, 101}, {-100, -200},
	} {
		err := v.EnableCache(c.capBytes, c.threshold)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("EnableCache(%d, %d) = %v, want ErrInvalidArgument", c.capBytes, c.threshold, err)
		}
		if v.CacheEnabled() {
			t.Fatalf("EnableCache(%d, %d) failed but turned the cache on", c.capBytes, c.threshold)
		}
	}
	// The bounds themselves are valid: threshold == cap, and 1 byte.
	enableCache(t, v, 100, 100)
	enableCache(t, v, 1, 1)
	if !v.CacheEnabled() {
		t.Fatal("CacheEnabled false after EnableCache")
	}
	// An invalid call on an enabled cache leaves its sizes alone.
	if err := v.EnableCache(10, 20); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("EnableCache(10, 20) = %v", err)
	}
	if v.cache.capBytes != 1 || v.cache.threshold != 1 {
		t.Fatalf("sizes changed to %d/%d by a refused call", v.cache.capBytes, v.cache.threshold)
	}
}

func TestCacheEnableReadOnlyAndClosed(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "k", []byte("v"))
	o := DefaultOptions()
	o.ReadOnly = true
	ro, err := Open(v.Path(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.EnableCache(1<<20, 1<<10); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("EnableCache on a read-only vault = %v, want ErrReadOnly", err)
	}
	if ro.CacheEnabled() {
		t.Fatal("read-only vault has its cache on")
	}

	w, err := Open(filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := w.EnableCache(1<<20, 1<<10); !errors.Is(err, ErrClosed) {
		t.Fatalf("EnableCache after Close = %v, want ErrClosed", err)
	}
}

func TestCacheFlushCountsEntries(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "stored", []byte("s"))
	enableCache(t, v, 1<<20, 1<<19)
	other := openSecond(t, v)

	if n := mustFlush(t, v); n != 0 {
		t.Fatalf("empty FlushCache = %d", n)
	}
	mustPut(t, v, "a", []byte("1"))
	mustPut(t, v, "b/c", []byte("2"))
	mustPut(t, v, "\x00bin", []byte("3"))
	mustPut(t, v, "a", []byte("4")) // the same entry again
	if err := v.Delete("stored"); err != nil {
		t.Fatal(err)
	}
	if _, _, n := cacheState(v); n != 4 {
		t.Fatalf("%d entries pending, want 4", n)
	}
	// Nothing has reached the database yet.
	for _, k := range []string{"a", "b/c", "\x00bin"} {
		wantMissing(t, other, k)
	}
	wantValue(t, other, "stored", "s")

	if n := mustFlush(t, v); n != 4 {
		t.Fatalf("FlushCache = %d, want 4 (three puts, one delete)", n)
	}
	if vb, _, n := cacheState(v); n != 0 || vb != 0 {
		t.Fatalf("after flush: %d entries, %d bytes pending", n, vb)
	}
	if n := mustFlush(t, v); n != 0 {
		t.Fatalf("second FlushCache = %d, want 0", n)
	}
	wantValue(t, other, "a", "4")
	wantValue(t, other, "b/c", "2")
	wantValue(t, other, "\x00bin", "3")
	wantMissing(t, other, "stored")
	wantLen(t, other, 3)
}

func TestCacheDisableFlushesFirst(t *testing.T) {
	v := openTest(t, nil)
	enableCache(t, v, 1<<20, 1<<19)
	other := openSecond(t, v)
	mustPut(t, v, "x", []byte("cached"))
	wantMissing(t, other, "x")
	if err := v.DisableCache(); err != nil {
		t.Fatal(err)
	}
	if v.CacheEnabled() {
		t.Fatal("CacheEnabled after DisableCache")
	}
	wantValue(t, other, "x", "cached")
	// Writes are direct again.
	mustPut(t, v, "y", []byte("direct"))
	wantValue(t, other, "y", "direct")
	if err := v.Delete("x"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, other, "x")
	if _, _, n := cacheState(v); n != 0 {
		t.Fatalf("%d entries cached with the cache off", n)
	}
	// Disabling a disabled cache is harmless.
	if err := v.DisableCache(); err != nil {
		t.Fatal(err)
	}
}

func TestCacheCloseFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "close.db")
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "gone", []byte("old"))
	mustPut(t, v, "kept", []byte("old"))
	enableCache(t, v, 1<<20, 1<<19)
	mustPut(t, v, "kept", []byte("new"))
	mustPut(t, v, "fresh/one", []byte("1"))
	mustPut(t, v, "\xffbin", []byte("2"))
	if err := v.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close nothing may be acknowledged that will not be written.
	if err := v.Put("\x00late", []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put (binary key) after Close = %v, want ErrClosed", err)
	}
	if err := v.Put("late", []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
	if err := v.Delete("kept"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delete after Close = %v, want ErrClosed", err)
	}

	v, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.CacheEnabled() {
		t.Fatal("the cache setting must not persist")
	}
	wantValue(t, v, "kept", "new")
	wantValue(t, v, "fresh/one", "1")
	wantValue(t, v, "\xffbin", "2")
	wantMissing(t, v, "gone")
	wantMissing(t, v, "\x00late")
	wantLen(t, v, 3)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheFlushWhenIdle(t *testing.T) {
	if !noBackgroundFlusher() {
		t.Fatalf("%d background flushers before the test", backgroundFlushers())
	}
	baseline := runtime.NumGoroutine()
	path := filepath.Join(t.TempDir(), "idle.db")
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	other, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })

	const idle = 250 * time.Millisecond
	enableCache(t, v, 1<<20, 1<<19, FlushWhenIdle(idle))
	if n := backgroundFlushers(); n != 1 {
		t.Fatalf("%d background flushers, want 1", n)
	}
	// Puts that keep coming (20 ms apart, for longer than the interval)
	// are not flushed: the interval is a quiet one.
	const puts = 20
	var last time.Time
	var maxGap time.Duration
	for i := range puts {
		now := time.Now()
		if i > 0 {
			maxGap = max(maxGap, now.Sub(last))
		}
		last = now // before the put: the flush comes at least idle after this
		mustPut(t, v, fmt.Sprintf("k%d", i), []byte("v"))
		if i < puts-1 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if ok, _ := other.Exists("k0"); ok {
		if maxGap < idle-50*time.Millisecond {
			t.Fatalf("flushed while puts kept coming (at most %v apart, interval %v)", maxGap, idle)
		}
		t.Logf("the machine stalled %v between puts; not checking that busy puts postpone the flush", maxGap)
	}
	if !waitFor(5*time.Second, func() bool { ok, _ := other.Exists(fmt.Sprintf("k%d", puts-1)); return ok }) {
		t.Fatal("the background flush did not happen")
	}
	if since := time.Since(last); since < idle {
		t.Fatalf("flushed %v after the last put, before the quiet interval %v", since, idle)
	}
	for i := range puts {
		wantValue(t, other, fmt.Sprintf("k%d", i), "v")
	}
	if _, _, n := cacheState(v); n != 0 {
		t.Fatalf("%d entries still pending after the background flush", n)
	}

	// Turning the option off (EnableCache without it) stops the goroutine,
	// and turning it on again starts exactly one.
	enableCache(t, v, 1<<20, 1<<19)
	if !noBackgroundFlusher() {
		t.Fatalf("%d background flushers after EnableCache without FlushWhenIdle", backgroundFlushers())
	}
	enableCache(t, v, 1<<20, 1<<19, FlushWhenIdle(idle))
	enableCache(t, v, 1<<20, 1<<19, FlushWhenIdle(idle))
	waitFor(time.Second, func() bool { return backgroundFlushers() == 1 }) // the replaced one returns
	if n := backgroundFlushers(); n != 1 {
		t.Fatalf("%d background flushers after enabling twice, want 1", n)
	}

	// Close stops it cleanly, and flushes what the timer did not.
	mustPut(t, v, "last", []byte("x"))
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !noBackgroundFlusher() {
		t.Fatalf("%d background flushers after Close", backgroundFlushers())
	}
	wantValue(t, other, "last", "x")
	other.Close()
	if !waitFor(2*time.Second, func() bool { return runtime.NumGoroutine() <= baseline }) {
		t.Fatalf("goroutines: %d after Close, %d before Open", runtime.NumGoroutine(), baseline)
	}
}

func TestCacheFlushWhenIdleStoppedByDisable(t *testing.T) {
	if !noBackgroundFlusher() {
		t.Fatalf("%d background flushers before the test", backgroundFlushers())
	}
	v := openTest(t, nil)
	enableCache(t, v, 1<<20, 1<<19, FlushWhenIdle(time.Hour))
	if n := backgroundFlushers(); n != 1 {
		t.Fatalf("%d background flushers, want 1", n)
	}
	if err := v.DisableCache(); err != nil {
		t.Fatal(err)
	}
	if !noBackgroundFlusher() {
		t.Fatalf("%d background flushers after DisableCache", backgroundFlushers())
	}
}

// A tiny interval must neither panic (a zero ticker period) nor spin.
func TestCacheFlushWhenIdleTiny(t *testing.T) {
	v := openTest(t, nil)
	other := openSecond(t, v)
	enableCache(t, v, 1<<20, 1<<19, FlushWhenIdle(time.Nanosecond))
	mustPut(t, v, "k", []byte("v"))
	if !waitFor(5*time.Second, func() bool { ok, _ := other.Exists("k"); return ok }) {
		t.Fatal("the background flush did not happen")
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if !noBackgroundFlusher() {
		t.Fatalf("%d background flushers after Close", backgroundFlushers())
	}
}

func TestCacheValueBytesCountedOnce(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "stored", bytes.Repeat([]byte("s"), 10))
	enableCache(t, v, 1<<20, 1<<19)
	check := func(want int64, entries int) {
		t.Helper()
		if vb, _, n := cacheState(v); vb != want || n != entries {
			t.Fatalf("cache holds %d bytes in %d entries, want %d in %d", vb, n, want, entries)
		}
	}
	mustPut(t, v, "key", make([]byte, 100))
	check(3+100, 1)
	mustPut(t, v, "key", make([]byte, 100))
	check(3+100, 1)
	mustPut(t, v, "key", make([]byte, 40))
	check(3+40, 1)
	mustPut(t, v, "other", make([]byte, 7))
	check(3+40+5+7, 2)
	if err := v.Delete("key"); err != nil { // never stored: the entry goes
		t.Fatal(err)
	}
	check(5+7, 1)
	if err := v.Delete("stored"); err != nil { // stored: a tombstone
		t.Fatal(err)
	}
	check(5+7+6, 2)
	mustPut(t, v, "stored", make([]byte, 20)) // replaces the tombstone
	check(5+7+6+20, 2)
	mustFlush(t, v)
	check(0, 0)
}
