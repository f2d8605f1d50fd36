package mount_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
	"golang.org/x/sys/unix"
)

// smallDisk mounts a tmpfs of size MiB and returns a vaultDir on it. The
// tmpfs is unmounted when the test ends, after the mounts of the test
// (cleanups run last registered first), lazily if something holds it.
func smallDisk(t *testing.T, size int) vaultDir {
	t.Helper()
	needFUSE(t)
	if os.Geteuid() != 0 {
		skipOrFail(t, "mounting a small tmpfs to fill needs root")
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm", size)); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot mount a tmpfs (%v): the full-disk tests need one", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount the small disk %s: %v (detaching it)", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	d := vaultDir{dir: dir, db: filepath.Join(dir, "vault.db"), mnt: filepath.Join(dir, "mnt")}
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// fillDisk appends to path until the disk is full to the last byte.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if errors.Is(err, unix.ENOSPC) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for _, n := range []int{len(buf), 4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				if !errors.Is(err, unix.ENOSPC) {
					t.Fatalf("filling the disk: %v", err)
				}
				break
			}
		}
	}
}

// writeSynced writes data to path through the mount and fsyncs it,
// returning the first error of create, write, fsync or close.
func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TestMountFullDisk fills a 64 MiB disk through the mount: the write that
// does not fit fails with ENOSPC, every file fsynced before is intact,
// deleting works while the disk is full, and so does writing again into
// the space a delete freed; the vault mounts again on the full disk, and
// once space is freed the same mount writes again without a restart.
func TestMountFullDisk(t *testing.T) {
	d := smallDisk(t, 64)
	ballast := filepath.Join(d.dir, "ballast") // what the user frees at the end
	if err := os.WriteFile(ballast, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mountDaemon(t, d)
	const size = 2 << 20
	content := func(i int) []byte { return genBytes(uint64(i)+1, size) }
	var stored []int
	var werr error
	for i := 0; i < 64; i++ {
		if werr = writeSynced(m.path(fmt.Sprintf("f%02d", i)), content(i)); werr != nil {
			break
		}
		stored = append(stored, i)
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing until the disk is full: %v, want ENOSPC", werr)
	}
	if len(stored) < 8 {
		t.Fatalf("only %d files of 2 MiB fitted on a 56 MiB disk", len(stored))
	}
	t.Logf("%d files of 2 MiB fitted on 56 MiB", len(stored))
	check := func(when string, keys []int) {
		t.Helper()
		for _, i := range keys {
			got, err := os.ReadFile(m.path(fmt.Sprintf("f%02d", i)))
			if err != nil || !bytes.Equal(got, content(i)) {
				t.Fatalf("%s: f%02d: %d bytes, %v; want its %d bytes", when, i, len(got), err, size)
			}
		}
	}
	check("on the full disk", stored)
	if err := writeSynced(m.path("more"), content(100)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("another write on the full disk: %v, want ENOSPC", err)
	}

	// Deleting works while full, and what it frees takes a new file.
	for _, i := range stored[:2] {
		if err := os.Remove(m.path(fmt.Sprintf("f%02d", i))); err != nil {
			t.Fatalf("rm on a full disk: %v", err)
		}
	}
	stored = stored[2:]
	if err := writeSynced(m.path("more"), content(100)); err != nil {
		t.Fatalf("writing into the space a delete freed: %v", err)
	}
	os.Remove(m.path("more"))
	check("after deleting on the full disk", stored)

	// The vault mounts again on the disk its writes filled.
	m.unmount(t)
	m = mountDaemon(t, d)
	check("remounted on the full disk", stored)
	if err := os.Remove(m.path(fmt.Sprintf("f%02d", stored[0]))); err != nil {
		t.Fatalf("rm after remounting on a full disk: %v", err)
	}
	stored = stored[1:]

	// Space comes back: the same mount writes again.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if err := writeSynced(m.path("again"), content(101)); err != nil {
		t.Fatalf("writing once space is free again: %v", err)
	}
	if got, err := os.ReadFile(m.path("again")); err != nil || !bytes.Equal(got, content(101)) {
		t.Fatalf("reading back after recovery: %d bytes, %v", len(got), err)
	}
	check("after recovery", stored)
	m.unmount(t)
	integrityCheck(t, d.db)
}

// TestFullDiskCLI checks that put and rm on a filling disk exit 0 exactly
// when their change is committed, and that rm works on the full disk.
func TestFullDiskCLI(t *testing.T) {
	d := smallDisk(t, 32)
	src := filepath.Join(t.TempDir(), "src") // off the small disk
	data := genBytes(7, 1<<20)
	writeFile(t, src, data, 0o644)
	var stored []string
	var last result
	for i := 0; i < 40; i++ {
		key := fmt.Sprintf("k%02d", i)
		last = runCmd("", kvaultfs, "put", d.db, key, src)
		got := runCmd("", kvaultfs, "get", d.db, key)
		committed := got.err == nil && got.stdout == string(data)
		if (last.err == nil) != committed {
			t.Fatalf("put %s: exit %d (%s), but committed = %v", key, last.code, strings.TrimSpace(last.stderr), committed)
		}
		if last.err != nil {
			break
		}
		if last.stderr != "" && !strings.Contains(last.stderr, "warning") {
			t.Errorf("put %s succeeded with %q on stderr", key, last.stderr)
		}
		stored = append(stored, key)
	}
	if last.err == nil || !strings.Contains(last.stderr, "no space") {
		t.Fatalf("puts of 1 MiB never failed with no space on a 32 MiB disk: %d stored, last %q", len(stored), last.stderr)
	}
	if r := runCmd("", kvaultfs, "rm", d.db, stored[0]); r.err != nil {
		t.Fatalf("rm on a full disk: exit %d: %s", r.code, r.stderr)
	}
	if r := runCmd("", kvaultfs, "get", d.db, stored[0]); r.err == nil {
		t.Fatalf("%s still there after rm", stored[0])
	}
	if r := runCmd("", kvaultfs, "verify", d.db); r.err != nil {
		t.Fatalf("verify: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
}

// TestMountFinalCloseWaitsForSpace leaves data of an open file
// uncommitted on a full disk and stops the mount: the daemon must not
// exit and lose the data, but say so and commit it once space is freed.
func TestMountFinalCloseWaitsForSpace(t *testing.T) {
	d := smallDisk(t, 32)
	fg := mountForeground(t, d)
	f, err := os.Create(fg.mnt + "/held")
	if err != nil {
		t.Fatal(err)
	}
	data := genBytes(3, 8<<20)
	if _, err := f.Write(data); err != nil { // into the write-back cache
		t.Fatal(err)
	}
	filler := filepath.Join(d.dir, "filler")
	fillDisk(t, filler)
	if err := fg.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the daemon detaches the busy mount
	cerr := f.Close()
	t.Logf("close(2) of the held file on the full disk: %v", cerr)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(fg.stderr.String(), "tries again") {
		select {
		case <-fg.done:
			t.Fatalf("the daemon exited with data not committed: %v; stderr: %s", fg.err, fg.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon neither exited nor said it waits for space; stderr: %s", fg.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := fg.wait(t, 30*time.Second); err != nil {
		t.Fatalf("the daemon exited with %v once space was free; stderr: %s", err, fg.stderr)
	}
	if !strings.Contains(fg.stderr.String(), "everything is committed") {
		t.Errorf("the daemon did not say it committed everything: %s", fg.stderr)
	}
	v, err := vault.Open(d.db, &vault.Options{ReadOnly: true, Table: vault.DefaultTable, ChunkSize: vault.DefaultChunkSize, CacheKB: vault.DefaultCacheKB})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	got, err := v.Get("held")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("held after the daemon committed it: %d bytes, %v; want %d", len(got), err, len(data))
	}
}

// TestMountReadOnlyDatabase mounts, without --read-only, a vault whose
// file cannot be written (mode 0444 on a read-only file system, which
// binds root too): reads work, every write fails with EROFS, and the
// database file is unchanged.
func TestMountReadOnlyDatabase(t *testing.T) {
	needFUSE(t)
	if os.Geteuid() != 0 {
		skipOrFail(t, "a read-only bind mount needs root")
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src, ro := filepath.Join(dir, "src"), filepath.Join(dir, "ro")
	for _, p := range []string{src, ro, filepath.Join(dir, "mnt")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	v, err := vault.Open(filepath.Join(src, "vault.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := genBytes(11, 300<<10)
	if err := v.Put("dir/a.bin", want); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "vault.db"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, ro, "", unix.MS_BIND, ""); err != nil {
		skipOrFail(t, fmt.Sprintf("bind mount: %v", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(ro, 0); err != nil {
			t.Errorf("unmount the read-only bind mount: %v (detaching it)", err)
			unix.Unmount(ro, unix.MNT_DETACH)
		}
	})
	if err := unix.Mount("", ro, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	d := vaultDir{dir: dir, db: filepath.Join(ro, "vault.db"), mnt: filepath.Join(dir, "mnt")}
	before := readFile(t, d.db)
	stBefore, _ := os.Stat(d.db)
	m := mountDaemon(t, d)
	if got := readFile(t, m.path("dir/a.bin")); !bytes.Equal(got, want) {
		t.Fatalf("read through a mount of a read-only database: %d bytes, want %d", len(got), len(want))
	}
	p := m.path
	writes := map[string]func() error{
		"create":   func() error { return os.WriteFile(p("new"), []byte("x"), 0o644) },
		"write":    func() error { return os.WriteFile(p("dir/a.bin"), []byte("x"), 0o644) },
		"truncate": func() error { return os.Truncate(p("dir/a.bin"), 0) },
		"unlink":   func() error { return os.Remove(p("dir/a.bin")) },
		"mkdir":    func() error { return os.Mkdir(p("d2"), 0o755) },
		"rename":   func() error { return os.Rename(p("dir/a.bin"), p("b.bin")) },
		"chmod":    func() error { return os.Chmod(p("dir/a.bin"), 0o600) },
		"setxattr": func() error { return unix.Setxattr(p("dir/a.bin"), "user.x", []byte("y"), 0) },
	}
	for name, fn := range writes {
		if err := fn(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a mount of a read-only database: %v, want EROFS", name, err)
		}
	}
	m.unmount(t)
	stAfter, _ := os.Stat(d.db)
	if !bytes.Equal(readFile(t, d.db), before) || !stAfter.ModTime().Equal(stBefore.ModTime()) {
		t.Error("a mount of a read-only database changed the file")
	}
	if r := runCmd("", kvaultfs, "put", d.db, "k", "/etc/hostname"); r.err == nil || !strings.Contains(r.stderr, "read-only") {
		t.Errorf("put into a read-only database: exit %d, stderr %q; want a read-only error", r.code, r.stderr)
	}
}
