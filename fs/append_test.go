package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kohakuvault/kvaultfs/vault"
)

// TestAppendWriteLandsInOnePiece: one write(2) to a file opened with
// O_APPEND is one append to the vault, even when it crosses a page
// boundary of the kernel's page cache. Without direct I/O on such handles
// the kernel sent the part up to the page boundary and the rest as two
// requests; each landed at the end of the file as stored at its commit,
// so an append from another mount could land between the two halves
// (TestStressTwoMountsAppend saw lines cut in two). Each append commits
// and bumps the generation once, which is what this counts.
func TestAppendWriteLandsInOnePiece(t *testing.T) {
	mnt, v := mountTest(t, nil)
	name := filepath.Join(mnt, "log")
	head := bytes.Repeat([]byte("h"), 4096-6) // 6 bytes short of a page
	if err := os.WriteFile(name, head, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{16, 3 * 4096, 300 << 10} {
		before := generation(t, v, "log")
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		line := bytes.Repeat([]byte("a"), size)
		if n, err := f.Write(line); err != nil || n != size {
			t.Fatalf("write %d: %d, %v", size, n, err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if got := generation(t, v, "log") - before; got != 1 {
			t.Errorf("a write of %d bytes at 6 bytes before a page boundary made %d commits; want 1 (one append)", size, got)
		}
		// Leave the end 6 bytes short of a page again.
		st, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		pad := (4096 - 6 - st.Size()%4096 + 4096) % 4096
		if err := appendBytes(name, bytes.Repeat([]byte("p"), int(pad))); err != nil {
			t.Fatal(err)
		}
	}
}

// generation returns the stored generation of key.
func generation(t *testing.T, v *vault.Vault, key string) int64 {
	t.Helper()
	in, err := v.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	return in.Generation
}

func appendBytes(name string, p []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(p); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
