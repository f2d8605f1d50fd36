package vault

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"
)

func TestPutGetDelete(t *testing.T) {
	v := openTest(t, smallChunks())
	mustPut(t, v, "video:456", []byte("hello"))
	mustPut(t, v, "clips/2024/a.mp4", bytes.Repeat([]byte("x"), 10000))
	mustPut(t, v, "empty", nil)
	if got := mustGet(t, v, "video:456"); string(got) != "hello" {
		t.Fatalf("got %q", got)
	}
	if got := mustGet(t, v, "clips/2024/a.mp4"); !bytes.Equal(got, bytes.Repeat([]byte("x"), 10000)) {
		t.Fatalf("wrong value of %d bytes", len(got))
	}
	if got := mustGet(t, v, "empty"); len(got) != 0 {
		t.Fatalf("empty: got %q", got)
	}
	mustPut(t, v, "video:456", []byte("replaced"))
	if got := mustGet(t, v, "video:456"); string(got) != "replaced" {
		t.Fatalf("got %q", got)
	}
	n, err := v.Len()
	if err != nil || n != 3 {
		t.Fatalf("Len = %d, %v; want 3", n, err)
	}
	if err := v.Delete("video:456"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get("video:456"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after delete: %v", err)
	}
	if err := v.Delete("video:456"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if ok, _ := v.Exists("clips/2024/a.mp4"); !ok {
		t.Fatal("Exists false")
	}
	if ok, _ := v.Exists("clips/2024"); ok {
		t.Fatal("a directory is not a key")
	}
	if _, err := v.Get("clips"); !errors.Is(err, ErrIsDir) {
		t.Fatalf("Get(dir) = %v", err)
	}
}

func TestBinaryKeys(t *testing.T) {
	v := openTest(t, nil)
	keys := []string{"\x00\x01bin", "a//b", "/abs", "trail/", ".", "..", ".kvault/x", string(bytes.Repeat([]byte("n"), 300))}
	for i, k := range keys {
		mustPut(t, v, k, []byte{byte(i)})
	}
	for i, k := range keys {
		if got := mustGet(t, v, k); !bytes.Equal(got, []byte{byte(i)}) {
			t.Fatalf("key %q: got %v", k, got)
		}
	}
	got := allKeys(t, v, "")
	want := slices.Clone(keys)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("keys = %q, want %q", got, want)
	}
	if _, err := v.Get(""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty key, never put: %v", err)
	}
}

func TestPutUnderFile(t *testing.T) {
	v := openTest(t, nil)
	mustPut(t, v, "a", []byte("file"))
	err := v.Put("a/b", []byte("x"))
	if !errors.Is(err, ErrInvalidArgument) || !errors.Is(err, ErrNotDir) {
		t.Fatalf("Put(a/b) = %v", err)
	}
	if got := mustGet(t, v, "a"); string(got) != "file" {
		t.Fatal("a changed")
	}
}

func TestListing(t *testing.T) {
	v := openTest(t, nil)
	keys := []string{"a.txt", "a/b", "a/c/d", "b", "clips/2024/x", "clips/2025/y", "clips/20"}
	for _, k := range keys {
		mustPut(t, v, k, []byte(k))
	}
	if got, want := allKeys(t, v, ""), []string{"a/b", "a/c/d", "a.txt", "b", "clips/20", "clips/2024/x", "clips/2025/y"}; !slices.Equal(got, want) {
		t.Fatalf("all: %q want %q", got, want)
	}
	if got, want := allKeys(t, v, "clips/202"), []string{"clips/2024/x", "clips/2025/y"}; !slices.Equal(got, want) {
		t.Fatalf("clips/202: %q want %q", got, want)
	}
	if got, want := allKeys(t, v, "a/"), []string{"a/b", "a/c/d"}; !slices.Equal(got, want) {
		t.Fatalf("a/: %q want %q", got, want)
	}
	if got := allKeys(t, v, "zzz"); len(got) != 0 {
		t.Fatalf("zzz: %q", got)
	}
}

// ReadAt zeroes the holes of the range it reads whatever the buffer held:
// chunk rows come back in index order and the missing ones (holes,
// before, between and after stored rows) are cleared, not skipped.
func TestReadAtZeroesHoles(t *testing.T) {
	opts := DefaultOptions()
	opts.ChunkSize = 4096
	v := openTest(t, opts)
	f, err := v.OpenFile("sparse", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Chunks 1 and 3 hold data; 0, 2, 4 and 5 are holes, 4 within the
	// stored extent (written, then overwritten with zeros, which removes
	// its row) and 5 past it.
	want := make([]byte, 6*4096)
	for _, idx := range []int{1, 3, 4} {
		block := bytes.Repeat([]byte{byte('a' + idx)}, 4096)
		if idx != 4 {
			copy(want[idx*4096:], block)
		}
		if _, err := f.WriteAt(block, int64(idx*4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 4*4096); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // commit, so the reads come from rows
		t.Fatal(err)
	}
	for _, off := range []int64{0, 100, 4096, 5000} {
		got := bytes.Repeat([]byte{0xff}, len(want)-int(off))
		if n, err := f.ReadAt(got, off); err != nil || n != len(got) {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
		if !bytes.Equal(got, want[off:]) {
			t.Fatalf("ReadAt(%d): holes not zeroed", off)
		}
	}
}
