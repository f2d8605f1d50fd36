package vault

import (
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

// With the cache on, everything in the process sees the cached state,
// while another handle on the file sees only what was flushed.

func TestCacheViewReads(t *testing.T) {
	v := openTest(t, smallChunks())
	mustPut(t, v, "s1", []byte("old"))
	mustPut(t, v, "s2", []byte("keep"))
	enableCache(t, v, 1<<20, 1<<19)
	other := openSecond(t, v)

	big := bytes.Repeat([]byte("0123456789"), 1000) // several chunks
	mustPut(t, v, "s1", []byte("new"))
	mustPut(t, v, "c1", []byte("cached"))
	mustPut(t, v, "dir/x", big)

	for key, want := range map[string][]byte{"s1": []byte("new"), "s2": []byte("keep"), "c1": []byte("cached"), "dir/x": big} {
		if got := mustGet(t, v, key); !bytes.Equal(got, want) {
			t.Fatalf("Get(%q) = %d bytes, want %d", key, len(got), len(want))
		}
		var buf bytes.Buffer
		if n, err := v.GetTo(key, &buf); err != nil || n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("GetTo(%q) = %d, %v", key, n, err)
		}
		if ok, err := v.Exists(key); !ok || err != nil {
			t.Fatalf("Exists(%q) = %v, %v", key, ok, err)
		}
		in, err := v.Stat(key)
		if err != nil || in.Size != int64(len(want)) || in.Kind != KindFile {
			t.Fatalf("Stat(%q) = %+v, %v", key, in, err)
		}
	}
	wantLen(t, v, 4)
	if got, want := allKeys(t, v, ""), []string{"c1", "dir/x", "s1", "s2"}; !slices.Equal(got, want) {
		t.Fatalf("Keys = %q, want %q", got, want)
	}

	// The other handle sees only the stored state.
	wantValue(t, other, "s1", "old")
	wantMissing(t, other, "c1")
	wantMissing(t, other, "dir/x")
	wantLen(t, other, 2)
	if got := allKeys(t, other, ""); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Fatalf("other Keys = %q", got)
	}

	// Opening a cached key reads the cached value.
	f, err := v.Open("dir/x")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Open+ReadAll = %d bytes, %v", len(got), err)
	}
	p := make([]byte, 5)
	f, err = v.Open("s1")
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.ReadAt(p, 0)
	f.Close()
	if string(p[:n]) != "new" || err != io.EOF {
		t.Fatalf("ReadAt(s1) = %q, %v", p[:n], err)
	}

	mustFlush(t, v)
	wantValue(t, other, "s1", "new")
	wantValue(t, other, "c1", "cached")
	if got := mustGet(t, other, "dir/x"); !bytes.Equal(got, big) {
		t.Fatal("dir/x differs after flush")
	}
	wantLen(t, other, 4)
}

func TestCacheViewDelete(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "s1", []byte("old1"))
	mustPut(t, v, "s2", []byte("old2"))
	mustPut(t, v, "s3", []byte("old3"))
	enableCache(t, v, 1<<20, 1<<19)
	other := openSecond(t, v)

	// A stored key deleted: the delete is cached.
	if err := v.Delete("s1"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, v, "s1")
	if _, err := v.Stat("s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of deleted = %v", err)
	}
	if _, err := v.GetTo("s1", io.Discard); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTo of deleted = %v", err)
	}
	if err := v.Delete("s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	wantValue(t, other, "s1", "old1") // not flushed yet

	// A cached overwrite of a stored key, then deleted: the delete wins.
	mustPut(t, v, "s2", []byte("new2"))
	if err := v.Delete("s2"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, v, "s2")
	// A stored key deleted and put again: the new value wins.
	if err := v.Delete("s3"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "s3", []byte("new3"))
	wantValue(t, v, "s3", "new3")
	// A key only in the cache, deleted: it never reaches the database.
	mustPut(t, v, "c", []byte("cached"))
	if err := v.Delete("c"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, v, "c")
	// Keys that never existed.
	for _, k := range []string{"never", "no/such/key", "\x00never"} {
		if err := v.Delete(k); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Delete(%q) = %v, want ErrNotFound", k, err)
		}
	}
	wantLen(t, v, 1)
	if got := allKeys(t, v, ""); !slices.Equal(got, []string{"s3"}) {
		t.Fatalf("Keys = %q", got)
	}
	wantValue(t, other, "s2", "old2")
	wantValue(t, other, "s3", "old3")

	// Opening a key deleted in the cache fails (it flushes first).
	if _, err := v.Open("s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of deleted = %v", err)
	}
	mustFlush(t, v)
	wantMissing(t, other, "s1")
	wantMissing(t, other, "s2")
	wantMissing(t, other, "c")
	wantValue(t, other, "s3", "new3")
	wantLen(t, other, 1)
	wantLen(t, v, 1)
}

// A directory that exists only because of cached puts behaves as a
// directory, as it will once flushed.
func TestCacheViewCachedDirectory(t *testing.T) {
	v := openTest(t, nil)
	enableCache(t, v, 1<<20, 1<<19)
	mustPut(t, v, "d/x", []byte("x"))
	check := func(when string) {
		t.Helper()
		if _, err := v.Get("d"); !errors.Is(err, ErrIsDir) {
			t.Fatalf("%s: Get(dir) = %v, want ErrIsDir", when, err)
		}
		if err := v.Delete("d"); !errors.Is(err, ErrIsDir) {
			t.Fatalf("%s: Delete(dir) = %v, want ErrIsDir", when, err)
		}
		if ok, err := v.Exists("d"); ok || err != nil {
			t.Fatalf("%s: Exists(dir) = %v, %v", when, ok, err)
		}
		if err := v.Put("d", []byte("file")); !errors.Is(err, ErrIsDir) {
			t.Fatalf("%s: Put(dir) = %v, want ErrIsDir", when, err)
		}
	}
	check("cached")
	mustFlush(t, v)
	check("flushed")
}

func TestCacheViewPathConflicts(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "f", []byte("stored file"))
	enableCache(t, v, 1<<10, 1<<10)
	other := openSecond(t, v)
	big := make([]byte, 2<<10) // bypasses the cache

	mustPut(t, v, "a", []byte("file"))
	for _, val := range [][]byte{[]byte("x"), big} {
		if err := v.Put("a/b", val); !errors.Is(err, ErrNotDir) || !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Put(a/b, %d bytes) with a cached file a = %v, want ErrNotDir", len(val), err)
		}
	}
	mustPut(t, v, "d/x", []byte("x"))
	for _, val := range [][]byte{[]byte("file"), big} {
		if err := v.Put("d", val); !errors.Is(err, ErrIsDir) {
			t.Fatalf("Put(d, %d bytes) with a cached d/x = %v, want ErrIsDir", len(val), err)
		}
	}
	if err := v.Put("d/x/y", []byte("y")); !errors.Is(err, ErrNotDir) {
		t.Fatalf("Put(d/x/y) = %v, want ErrNotDir", err)
	}

	// A stored file deleted in the cache frees its name for a directory.
	if err := v.Delete("f"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "f/g", []byte("g"))
	wantValue(t, v, "f/g", "g")
	if _, err := v.Get("f"); !errors.Is(err, ErrIsDir) {
		t.Fatalf("Get(f) = %v, want ErrIsDir: f is a directory in the cached view", err)
	}
	if ok, _ := v.Exists("f"); ok {
		t.Fatal("Exists(f) after its delete")
	}
	wantLen(t, v, 3)
	if got := allKeys(t, v, ""); !slices.Equal(got, []string{"a", "d/x", "f/g"}) {
		t.Fatalf("Keys = %q", got)
	}
	if n, err := v.FlushCache(); err != nil || n != 4 {
		t.Fatalf("FlushCache = %d, %v; want 4", n, err)
	}
	wantValue(t, other, "f/g", "g")
	if in, err := other.Stat("f"); err != nil || in.Kind != KindDir {
		t.Fatalf("Stat(f) = %+v, %v; want a directory", in, err)
	}
	wantValue(t, other, "a", "file")
	wantValue(t, other, "d/x", "x")
	wantLen(t, other, 3)

	// The same through writes that bypass the cache: a big value, a
	// stream, and a file created with OpenFile.
	mustPut(t, v, "h", []byte("stored file"))
	mustFlush(t, v)
	if err := v.Delete("h"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "h/big", big)
	if got := mustGet(t, other, "h/big"); !bytes.Equal(got, big) {
		t.Fatal("h/big not written through")
	}
	mustPut(t, v, "p", []byte("cached file"))
	if err := v.PutReader("p/q", strings.NewReader("streamed"), -1); !errors.Is(err, ErrNotDir) {
		t.Fatalf("PutReader(p/q) with a cached file p = %v, want ErrNotDir", err)
	}
	if f, err := v.OpenFile("p/q", os.O_RDWR|os.O_CREATE, 0o644); !errors.Is(err, ErrNotDir) {
		if err == nil {
			f.Close()
		}
		t.Fatalf("OpenFile(p/q, O_CREATE) with a cached file p = %v, want ErrNotDir", err)
	}
	mustPut(t, v, "r/s", []byte("cached"))
	if f, err := v.OpenFile("r", os.O_RDWR|os.O_CREATE, 0o644); !errors.Is(err, ErrIsDir) {
		if err == nil {
			f.Close()
		}
		t.Fatalf("OpenFile(r, O_CREATE) with a cached r/s = %v, want ErrIsDir", err)
	}
	// Nothing of that broke a later flush.
	if _, err := v.FlushCache(); err != nil {
		t.Fatalf("FlushCache: %v", err)
	}
	wantValue(t, other, "p", "cached file")
	wantValue(t, other, "r/s", "cached")
	wantMissing(t, other, "p/q")
	if _, err := other.Get("h"); !errors.Is(err, ErrIsDir) {
		t.Fatalf("Get(h) = %v, want ErrIsDir", err)
	}
}

func TestCacheListingMatchesUncached(t *testing.T) {
	stored := []string{"a.txt", "a/b", "a/c/d", "b", "clips/2024/x", "clips/2025/y", "clips/20", "\x00bin1", "z//z", "zz/top", "old/1", "old/2"}
	cachedPuts := []string{"a/a", "a/c/e", "a0", "b", "clips/2024/w", "clips/2026/q", "\x00bin0", "\x00bin2", "z//y", "new/1", "a1", "old/3"}
	cachedDeletes := []string{"a/c/d", "clips/20", "\x00bin1", "old/1", "zz/top"}

	c := openTest(t, nil)
	for _, k := range stored {
		mustPut(t, c, k, []byte("stored "+k))
	}
	enableCache(t, c, 1<<20, 1<<19)
	for _, k := range cachedPuts {
		mustPut(t, c, k, []byte("cached "+k))
	}
	for _, k := range cachedDeletes {
		if err := c.Delete(k); err != nil {
			t.Fatalf("Delete(%q): %v", k, err)
		}
	}
	// The same final state, written without the cache.
	plain := openTest(t, nil)
	final := map[string]string{}
	for _, k := range stored {
		final[k] = "stored " + k
	}
	for _, k := range cachedPuts {
		final[k] = "cached " + k
	}
	for _, k := range cachedDeletes {
		delete(final, k)
	}
	for k, val := range final {
		mustPut(t, plain, k, []byte(val))
	}

	prefixes := []string{"", "a", "a/", "a/c", "b", "clips/202", "clips/2024/", "\x00", "\x00bin", "z", "z/", "old", "new/", "nothing", "/"}
	compare := func(when string) {
		t.Helper()
		for _, p := range prefixes {
			got, want := allKeys(t, c, p), allKeys(t, plain, p)
			if !slices.Equal(got, want) {
				t.Fatalf("%s: Keys(%q) = %q, want %q", when, p, got, want)
			}
			for _, k := range got {
				if !strings.HasPrefix(k, p) {
					t.Fatalf("Keys(%q) yielded %q", p, k)
				}
			}
		}
		var items []Item
		for it, err := range c.Items("") {
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, it)
		}
		if len(items) != len(final) {
			t.Fatalf("%s: Items yielded %d, want %d", when, len(items), len(final))
		}
		for _, it := range items {
			if string(it.Value) != final[it.Key] {
				t.Fatalf("%s: Items: %q = %q, want %q", when, it.Key, it.Value, final[it.Key])
			}
		}
		wantLen(t, c, len(final))
	}
	compare("cached")
	// A listing stopped early stops cleanly.
	for k, err := range c.Keys("") {
		if err != nil || k == "" {
			t.Fatalf("Keys: %q, %v", k, err)
		}
		break
	}
	mustFlush(t, c)
	compare("flushed")
}

func TestCacheRenameSeesCache(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "stored", []byte("s"))
	mustPut(t, v, "gone", []byte("g"))
	enableCache(t, v, 1<<20, 1<<19)
	other := openSecond(t, v)

	mustPut(t, v, "r1", []byte("cached"))
	if err := v.Rename("r1", "dir/r2"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, v, "r1")
	wantValue(t, v, "dir/r2", "cached")
	wantValue(t, other, "dir/r2", "cached") // Rename commits

	// A cached overwrite is what moves.
	mustPut(t, v, "stored", []byte("new"))
	if err := v.Rename("stored", "moved"); err != nil {
		t.Fatal(err)
	}
	wantValue(t, v, "moved", "new")
	wantMissing(t, v, "stored")

	// A cached delete is seen: the key is gone.
	if err := v.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	if err := v.Rename("gone", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Rename of a deleted key = %v, want ErrNotFound", err)
	}
	// Renaming over a cached value replaces it, for good.
	mustPut(t, v, "target", []byte("cached target"))
	mustPut(t, v, "src", []byte("src"))
	if err := v.Rename("src", "target"); err != nil {
		t.Fatal(err)
	}
	wantValue(t, v, "target", "src")
	mustFlush(t, v)
	wantValue(t, other, "target", "src")
	wantLen(t, v, 3)
	wantLen(t, other, 3)
}

func TestCacheThresholdFlushes(t *testing.T) {
	v := openTest(t, nil)
	enableCache(t, v, 10000, 1000)
	other := openSecond(t, v)
	val := make([]byte, 300)
	for i := range 3 { // 3 * (2+300) = 906 bytes: under the threshold
		mustPut(t, v, string(rune('a'+i))+"0", val)
	}
	if ok, _ := other.Exists("a0"); ok {
		t.Fatal("flushed under the threshold")
	}
	// The same key again does not grow the count.
	mustPut(t, v, "c0", val)
	if ok, _ := other.Exists("a0"); ok {
		t.Fatal("an overwrite counted twice and crossed the threshold")
	}
	mustPut(t, v, "d0", val) // 1208 bytes: crosses it
	for _, k := range []string{"a0", "b0", "c0", "d0"} {
		if ok, err := other.Exists(k); !ok || err != nil {
			t.Fatalf("%q not flushed when the threshold was crossed: %v", k, err)
		}
	}
	if vb, _, n := cacheState(v); vb != 0 || n != 0 {
		t.Fatalf("after the threshold flush: %d bytes in %d entries pending", vb, n)
	}
	// Deletes count too (their key bytes).
	enableCache(t, v, 10, 10)
	if err := v.Delete("a0"); err != nil { // 2 bytes
		t.Fatal(err)
	}
	if ok, _ := other.Exists("a0"); !ok {
		t.Fatal("flushed under the threshold")
	}
	for _, k := range []string{"b0", "c0", "d0", "e0"} {
		if k == "e0" {
			mustPut(t, v, "e0", nil)
			continue
		}
		if err := v.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
	wantMissing(t, other, "a0")
	wantLen(t, other, 1)
}

func TestCacheCapFlushesBeforeAccepting(t *testing.T) {
	v := openTest(t, nil)
	enableCache(t, v, 1000, 1000)
	other := openSecond(t, v)
	val := make([]byte, 300)
	for _, k := range []string{"k0", "k1", "k2"} { // 906 bytes
		mustPut(t, v, k, val)
	}
	if ok, _ := other.Exists("k0"); ok {
		t.Fatal("flushed early")
	}
	mustPut(t, v, "k3", val) // 302 more would pass the cap: flush the three first
	for _, k := range []string{"k0", "k1", "k2"} {
		if ok, _ := other.Exists(k); !ok {
			t.Fatalf("%q not flushed before the cap was passed", k)
		}
	}
	if ok, _ := other.Exists("k3"); ok {
		t.Fatal("k3 should still be cached")
	}
	if vb, _, n := cacheState(v); vb != 302 || n != 1 {
		t.Fatalf("cache holds %d bytes in %d entries, want 302 in 1", vb, n)
	}
	// A value exactly at the cap is cached; one byte more is not.
	enableCache(t, v, 1000, 1000)
	mustFlush(t, v)
	mustPut(t, v, "e", make([]byte, 999))
	if ok, _ := other.Exists("e"); !ok {
		t.Fatal("a value that fills the cap crosses the threshold and flushes")
	}
}

func TestCacheBigValueBypasses(t *testing.T) {
	v := openTest(t, smallChunks())
	enableCache(t, v, 1000, 500)
	other := openSecond(t, v)
	big := bytes.Repeat([]byte("B"), 5000)

	mustPut(t, v, "big", big)
	if got := mustGet(t, other, "big"); !bytes.Equal(got, big) {
		t.Fatal("a value over capBytes must be written at once")
	}
	if vb, _, n := cacheState(v); vb != 0 || n != 0 {
		t.Fatalf("the big value went into the cache: %d bytes in %d entries", vb, n)
	}

	// A big put replaces a cached small value of the same key, and no
	// flush later brings the small one back.
	mustPut(t, v, "k", []byte("small"))
	mustPut(t, v, "k", big)
	if got := mustGet(t, v, "k"); !bytes.Equal(got, big) {
		t.Fatalf("Get after big put = %d bytes", len(got))
	}
	mustFlush(t, v)
	if got := mustGet(t, other, "k"); !bytes.Equal(got, big) {
		t.Fatalf("after flush the other handle reads %d bytes, want the big value", len(got))
	}
	// Likewise over a cached delete.
	if err := v.Delete("k"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, v, "k", big)
	mustFlush(t, v)
	if got := mustGet(t, other, "k"); !bytes.Equal(got, big) {
		t.Fatalf("after flush the other handle reads %d bytes, want the big value", len(got))
	}
	// And through PutReader, which never caches.
	mustPut(t, v, "r", []byte("small"))
	if err := v.PutReader("r", bytes.NewReader([]byte("streamed")), -1); err != nil {
		t.Fatal(err)
	}
	wantValue(t, other, "r", "streamed")
	mustFlush(t, v)
	wantValue(t, other, "r", "streamed")
	wantValue(t, v, "r", "streamed")
}

// A listing lists every key that exists from its start to its end, even
// when the cache is flushed or written during the iteration.
func TestCacheListingDuringFlushAndWrites(t *testing.T) {
	v := openTest(t, nil)
	for _, k := range []string{"a", "c", "e", "g"} {
		mustPut(t, v, k, []byte("stored"))
	}
	enableCache(t, v, 1<<20, 1<<20)
	mustPut(t, v, "b", []byte("cached"))
	mustPut(t, v, "d", []byte("cached"))
	mustPut(t, v, "e", []byte("cached over stored"))
	if err := v.Delete("g"); err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "b", "c", "d", "e"}

	var got []string
	for k, err := range v.Keys("") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k)
		if k == "a" {
			mustFlush(t, v) // b and d move from the cache to the file
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Keys with a flush during the listing = %q, want %q", got, want)
	}

	got = got[:0]
	for k, err := range v.Keys("") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k)
		if k == "a" { // stored keys written again: now cached
			mustPut(t, v, "c", []byte("new"))
			mustPut(t, v, "e", []byte("newer"))
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Keys with writes during the listing = %q, want %q", got, want)
	}
}
