package fs

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kohakuvault/kvaultfs/vault"
	"golang.org/x/sys/unix"
)

// The largest file size through the mount: truncate, fallocate and
// writes past vault.MaxFileSize fail with EFBIG and leave the file as it
// was; reads there are the end of the file. Before the limit,
// truncate -s 9223372036854775807 returned 0 and deleted every chunk.

func limitsFile(t *testing.T) (string, []byte) {
	t.Helper()
	mnt, _ := mountTest(t, nil)
	p := filepath.Join(mnt, "f")
	want := bytes.Repeat([]byte("kvaultfs limits "), 20000) // 320,000 bytes: several chunks
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, want
}

func checkFileIntact(t *testing.T, p string, want []byte, what string) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s: read back %d bytes (%v), want the %d written", what, len(got), err, len(want))
	}
}

func TestTruncateHugeIsEFBIG(t *testing.T) {
	p, want := limitsFile(t)
	for _, size := range []int64{math.MaxInt64, vault.MaxFileSize + 1} {
		if err := os.Truncate(p, size); !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("truncate to %d: %v, want EFBIG", size, err)
		}
		checkFileIntact(t, p, want, "after the refused truncate")
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = f.Truncate(size)
		f.Close()
		if !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("ftruncate to %d: %v, want EFBIG", size, err)
		}
		checkFileIntact(t, p, want, "after the refused ftruncate")
	}
}

func TestFallocateHugeIsEFBIG(t *testing.T) {
	p, want := limitsFile(t)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		mode     uint32
		off, len int64
	}{
		{0, 0, math.MaxInt64},
		{0, vault.MaxFileSize, 1},
		{0, 1, vault.MaxFileSize},
		{unix.FALLOC_FL_KEEP_SIZE, 0, math.MaxInt64},
		{unix.FALLOC_FL_ZERO_RANGE, 4096, math.MaxInt64 - 4096},
		{unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 4096, math.MaxInt64 - 4096},
	} {
		err := unix.Fallocate(int(f.Fd()), c.mode, c.off, c.len)
		if !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("fallocate(mode %#x, %d, %d): %v, want EFBIG", c.mode, c.off, c.len, err)
		}
		checkFileIntact(t, p, want, "after the refused fallocate")
	}
}

func TestWriteHugeIsEFBIG(t *testing.T) {
	p, want := limitsFile(t)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{vault.MaxFileSize, math.MaxInt64 - 100} {
		if _, err := f.WriteAt([]byte("0123456789"), off); !errors.Is(err, syscall.EFBIG) {
			t.Fatalf("pwrite at %d: %v, want EFBIG", off, err)
		}
	}
	if st, err := f.Stat(); err != nil || st.Size() != int64(len(want)) {
		t.Fatalf("size after the refused writes: %v, %v", st, err)
	}
	// A write across the limit: as on Linux's local file systems the
	// bytes before it may be written (the kernel sends the write a page
	// at a time), then it is EFBIG; the size never passes the limit.
	if _, err := f.WriteAt([]byte("0123456789"), vault.MaxFileSize-5); !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("pwrite across the limit: %v, want EFBIG", err)
	}
	if st, err := f.Stat(); err != nil || st.Size() > vault.MaxFileSize {
		t.Fatalf("size after a write across the limit: %v, %v", st, err)
	}
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	// read(2) near the largest offset is the end of the file. (Where
	// off+count overflows the kernel says EINVAL before asking us.)
	buf := make([]byte, 100)
	for _, off := range []int64{math.MaxInt64 - 200, vault.MaxFileSize} {
		if n, err := f.ReadAt(buf, off); n != 0 || err != io.EOF {
			t.Fatalf("pread at %d = %d, %v; want 0, EOF", off, n, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	checkFileIntact(t, p, want, "after the refused writes")

	// O_APPEND to a file that ends near the limit: EFBIG (after the bytes
	// that fit, as above), the size at most the limit, nothing lost.
	if err := os.Truncate(p, vault.MaxFileSize-10); err != nil {
		t.Fatal(err)
	}
	af, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = af.Write(make([]byte, 100))
	af.Close()
	if !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("append past the limit: %v, want EFBIG", err)
	}
	if st, err := os.Stat(p); err != nil || st.Size() < vault.MaxFileSize-10 || st.Size() > vault.MaxFileSize {
		t.Fatalf("size after the refused append: %v, %v", st, err)
	}
	if err := os.Truncate(p, int64(len(want))); err != nil {
		t.Fatal(err)
	}
	checkFileIntact(t, p, want, "after the refused append")
}
