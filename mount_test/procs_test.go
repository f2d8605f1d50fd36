package mount_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
	"golang.org/x/sys/unix"
)

// visibleWithin is how long a change by another process may take to
// show in a mount with --attr-timeout 1s.
const visibleWithin = 3 * time.Second

// openLibrary opens the mounted database with the vault library, as a
// second process would, and closes it at the end of the test (before
// the mount's own cleanup).
func openLibrary(t testing.TB, db string) *vault.Vault {
	t.Helper()
	v, err := vault.Open(db, nil)
	if err != nil {
		t.Fatalf("vault.Open of the mounted database: %v", err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("close the library's vault: %v", err)
		}
	})
	return v
}

// showsContent waits until path in the mount reads as want (each
// attempt a fresh open), and reports how long that took.
func showsContent(t testing.TB, what, path string, want []byte) time.Duration {
	t.Helper()
	start := time.Now()
	err := eventually(visibleWithin, func() error {
		got, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("reads %d bytes (first difference at %d), want %d", len(got), firstDiff(got, want), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: not visible in the mount after %v: %v", what, visibleWithin, err)
	}
	return time.Since(start)
}

// isGone waits until path no longer exists in the mount.
func isGone(t testing.TB, what, path string) time.Duration {
	t.Helper()
	start := time.Now()
	err := eventually(visibleWithin, func() error {
		_, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("lstat: %v", err)
	})
	if err != nil {
		t.Fatalf("%s: still in the mount after %v: %v", what, visibleWithin, err)
	}
	return time.Since(start)
}

// TestOtherProcessChanges writes, overwrites and deletes keys with the
// library and the CLI while the vault is mounted: the mount shows each
// change within the attribute timeout.
func TestOtherProcessChanges(t *testing.T) {
	m := mountFresh(t, "--attr-timeout", "1s")
	v := openLibrary(t, m.db)

	// A new key, after the mount has cached its absence.
	if _, err := os.Stat(m.path("lib/new.txt")); !os.IsNotExist(err) {
		t.Fatalf("before the put: %v", err)
	}
	first := []byte("written by the library")
	if err := v.Put("lib/new.txt", first); err != nil {
		t.Fatal(err)
	}
	t.Logf("a new key showed after %v", showsContent(t, "new key", m.path("lib/new.txt"), first))

	// An overwrite with a different size.
	second := genBytes(31, 700_000)
	if err := v.Put("lib/new.txt", second); err != nil {
		t.Fatal(err)
	}
	t.Logf("an overwrite showed after %v", showsContent(t, "overwrite", m.path("lib/new.txt"), second))

	// An overwrite with the same size and, set back, the same mtime.
	before, err := v.Stat("lib/new.txt")
	if err != nil {
		t.Fatal(err)
	}
	readFile(t, m.path("lib/new.txt")) // the kernel caches the pages
	third := genBytes(32, len(second))
	if err := v.Put("lib/new.txt", third); err != nil {
		t.Fatal(err)
	}
	after, err := v.Stat("lib/new.txt")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.SetAttr(after.ID, vault.SetAttr{Mtime: &before.Mtime}); err != nil {
		t.Fatal(err)
	}
	t.Logf("a same-size, same-mtime overwrite showed after %v", showsContent(t, "same-size same-mtime overwrite", m.path("lib/new.txt"), third))
	var st unix.Stat_t
	if err := unix.Stat(m.path("lib/new.txt"), &st); err != nil || st.Mtim.Nano() != before.Mtime {
		t.Errorf("mtime in the mount = %d (%v), want the original %d", st.Mtim.Nano(), err, before.Mtime)
	}

	// The same in place, on the same inode, whose pages the kernel holds:
	// only the bytes (and the inode's generation) change.
	readFile(t, m.path("lib/new.txt"))
	inode, err := v.Stat("lib/new.txt")
	if err != nil {
		t.Fatal(err)
	}
	fourth := bytes.Clone(third)
	copy(fourth[100_000:], genBytes(33, 200_000))
	f, err := v.OpenFile("lib/new.txt", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(fourth[100_000:300_000], 100_000); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.SetAttr(inode.ID, vault.SetAttr{Mtime: &inode.Mtime}); err != nil {
		t.Fatal(err)
	}
	t.Logf("an in-place same-size, same-mtime rewrite showed after %v", showsContent(t, "in-place rewrite", m.path("lib/new.txt"), fourth))
	if got := statOf(t, "%i", m.path("lib/new.txt")); got != fmt.Sprint(inode.ID) {
		t.Errorf("inode in the mount = %s, want %d", got, inode.ID)
	}

	// A delete, of a file and of a whole directory's last key.
	if err := v.Delete("lib/new.txt"); err != nil {
		t.Fatal(err)
	}
	t.Logf("a delete showed after %v", isGone(t, "delete", m.path("lib/new.txt")))

	// The CLI, a process of its own.
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, src, genBytes(34, 300_000), 0o644)
	run(t, kvaultfs, "put", m.db, "cli/dir/file.bin", src)
	t.Logf("kvaultfs put showed after %v", showsContent(t, "kvaultfs put", m.path("cli/dir/file.bin"), readFile(t, src)))
	writeFile(t, src, genBytes(35, 300_000), 0o644)
	run(t, kvaultfs, "put", m.db, "cli/dir/file.bin", src)
	t.Logf("kvaultfs put over it showed after %v", showsContent(t, "kvaultfs put over a key", m.path("cli/dir/file.bin"), readFile(t, src)))
	run(t, kvaultfs, "rm", m.db, "cli/dir/file.bin")
	t.Logf("kvaultfs rm showed after %v", isGone(t, "kvaultfs rm", m.path("cli/dir/file.bin")))
}

// TestOpenFileRewrittenElsewhere keeps a file open in the mount while
// another process rewrites it in place: a fresh read through the open
// descriptor shows the new bytes within the attribute timeout, so the
// kernel's cached pages were dropped.
func TestOpenFileRewrittenElsewhere(t *testing.T) {
	m := mountFresh(t, "--attr-timeout", "1s")
	old := genBytes(41, 500_000)
	writeFile(t, m.path("held.bin"), old, 0o644)
	v := openLibrary(t, m.db)

	fd, err := os.Open(m.path("held.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	buf := make([]byte, len(old))
	for i := 0; i < 2; i++ { // cached after the first read
		if _, err := fd.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, old) {
			t.Fatalf("first read: %v", err)
		}
	}
	st, err := v.Stat("held.bin")
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.OpenFile("held.bin", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	patch := genBytes(42, 4096)
	if _, err := f.WriteAt(patch, 8192); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.SetAttr(st.ID, vault.SetAttr{Mtime: &st.Mtime}); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(old)
	copy(want[8192:], patch)
	start := time.Now()
	err = eventually(visibleWithin, func() error {
		if _, err := fd.ReadAt(buf, 0); err != nil {
			return err
		}
		if !bytes.Equal(buf, want) {
			return fmt.Errorf("the open descriptor still reads old bytes at %d", firstDiff(buf, want))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after an in-place rewrite by another process: %v", err)
	}
	t.Logf("the open descriptor read the new bytes after %v", time.Since(start).Round(time.Millisecond))
}

// TestMountWritesReachLibrary checks that a file written through the
// mount is readable by another process's library as soon as it is
// closed, with no unmount or sync.
func TestMountWritesReachLibrary(t *testing.T) {
	m := mountFresh(t)
	v := openLibrary(t, m.db)
	small := []byte("small file")
	big := genBytes(51, 70<<20) // more than the cache's flush threshold
	if err := os.Mkdir(m.path("a"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("a/small.txt"), small, 0o644)
	writeFile(t, m.path("a/big.bin"), big, 0o644)
	for key, want := range map[string][]byte{"a/small.txt": small, "a/big.bin": big} {
		got, err := v.Get(key)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("library Get(%q) right after close: %d bytes, %v; want %d", key, len(got), err, len(want))
		}
	}
	// Rewrite part of the big one through an open descriptor: the library
	// sees it after close, and not torn.
	f, err := os.OpenFile(m.path("a/big.bin"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	patch := genBytes(52, 3<<20)
	if _, err := f.WriteAt(patch, 10<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	copy(big[10<<20:], patch)
	got, err := v.Get("a/big.bin")
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("library Get after rewriting through the mount: %v, first difference at %d", err, firstDiff(got, big))
	}
	// Metadata too: a rename and a mode.
	if err := os.Rename(m.path("a"), m.path("b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.path("b/small.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := v.Stat("b/small.txt")
	if err != nil || st.Mode != 0o600 {
		t.Fatalf("library Stat after rename and chmod: %+v, %v", st, err)
	}
	if ok, err := v.Exists("a/small.txt"); err != nil || ok {
		t.Fatalf("the old key after the rename: %v %v", ok, err)
	}
}
