package fs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/kohakuvault/kvaultfs/vault"
)

// mountShared mounts a fresh vault that other users may enter
// (allow_other, and a path they can walk), for tests that act as an
// unprivileged user.
func mountShared(t *testing.T) (string, *Server) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to act as another user")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		skipOrFail(t, "no /dev/fuse")
	}
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	v, err := openTestVault(filepath.Join(dir, "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(v.FS(), mnt, Options{AllowOther: true})
	if err != nil {
		v.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if err := v.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if err := os.Chmod(mnt, 0o777); err != nil {
		t.Fatal(err)
	}
	return mnt, srv
}

// asNobody runs a command as uid and gid 65534 with no other groups.
func asNobody(t *testing.T, name string, args ...string) error {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("%s %v: %s", name, args, out)
	}
	return err
}

// TestChownClearsPrivilegesOfEveryKind checks chown against what Linux
// does on tmpfs and ext4 (kernel 6.18, measured): on every kind of file
// but a directory, chown clears set-user-ID, clears set-group-ID of a
// group-executable file, and clears set-group-ID of any file when the
// caller is neither in the file's group nor privileged (CAP_FSETID).
// With HANDLE_KILLPRIV_V2 the kernel leaves all of this to the daemon.
func TestChownClearsPrivilegesOfEveryKind(t *testing.T) {
	mnt, _ := mountShared(t)
	kinds := map[string]uint32{"file": syscall.S_IFREG, "fifo": syscall.S_IFIFO, "chardev": syscall.S_IFCHR, "socket": syscall.S_IFSOCK}
	mode := func(p string) uint32 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode & 07777
	}
	mknod := func(p string, kind, perm uint32, uid, gid int) {
		t.Helper()
		if err := syscall.Mknod(p, kind|0o600, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name      string
		perm      uint32
		fileGID   int
		root      bool
		want      uint32
		statement string
	}{
		{"root-gx", 06555, 0, true, 0555, "root's chown clears setuid, and setgid of a group-executable file"},
		{"root-nogx", 06545, 0, true, 02545, "root's chown keeps setgid without group execute"},
		{"user-gx", 06555, 65534, false, 0555, "an owner's chgrp clears setuid and setgid of a group-executable file"},
		{"user-ingroup", 06545, 65534, false, 02545, "an owner in the file's group keeps setgid without group execute"},
		{"user-notingroup", 06545, 0, false, 0545, "an owner outside the file's group loses setgid even without group execute"},
	}
	for kname, kind := range kinds {
		for _, c := range cases {
			p := filepath.Join(mnt, kname+"-"+c.name)
			mknod(p, kind, c.perm, 65534, c.fileGID)
			if got := mode(p); got != c.perm {
				t.Fatalf("%s: mode %o after chmod, want %o", p, got, c.perm)
			}
			var err error
			if c.root {
				err = os.Lchown(p, 1, 1)
			} else {
				err = asNobody(t, "chgrp", "-h", "65534", p)
			}
			if err != nil {
				t.Errorf("%s %s: chown: %v", kname, c.name, err)
				continue
			}
			if got := mode(p); got != c.want {
				t.Errorf("%s %s: mode %o after chown, want %o: %s", kname, c.name, got, c.want, c.statement)
			}
		}
	}
	// A directory keeps both bits, whoever changes its group.
	d := filepath.Join(mnt, "dir")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(d, 65534, 0); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(d, 06755); err != nil {
		t.Fatal(err)
	}
	if err := asNobody(t, "chgrp", "65534", d); err != nil {
		t.Fatal(err)
	}
	if got := mode(d); got != 06755 {
		t.Errorf("directory after chgrp: %o, want 6755", got)
	}
}

// openTestVault opens a new vault with default options.
func openTestVault(path string) (*vault.Vault, error) { return vault.Open(path, nil) }

// TestWriteFailsWhenPrivilegesStay checks that a write by an
// unprivileged user fails, writing nothing, when clearing set-user-ID
// before it fails: the bit must never survive such a write.
func TestWriteFailsWhenPrivilegesStay(t *testing.T) {
	mnt, srv := mountShared(t)
	p := filepath.Join(mnt, "suid")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p, 06777); err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int32
	hook := func(ino int64, a vault.SetAttr) (vault.Inode, error) {
		if a.DropPrivileges && failed.Add(1) == 1 {
			return vault.Inode{}, fmt.Errorf("injected: %w", vault.ErrBusy)
		}
		return srv.fsys.v.SetAttr(ino, a)
	}
	testSetAttr.Store(&hook)
	t.Cleanup(func() { testSetAttr.Store(nil) })
	if err := asNobody(t, "sh", "-c", "printf new >> "+p); err == nil {
		t.Error("a write whose clearing of set-user-ID failed succeeded")
	}
	if failed.Load() == 0 {
		t.Fatal("the write never tried to clear set-user-ID")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode&07777 == 06777 && string(got) != "old" {
		t.Fatalf("the write went through (%q) and the mode kept set-user-ID: %o", got, st.Mode&07777)
	}
	// The next write, with clearing working again, clears the bits.
	if err := asNobody(t, "sh", "-c", "printf new >> "+p); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(p, &st); err != nil || st.Mode&07777 != 0777 {
		t.Fatalf("mode after a write that cleared the bits: %o, %v; want 777", st.Mode&07777, err)
	}
}

// TestWriteDropsSetgidOutsideGroup checks a write by a user outside the
// file's group against tmpfs on Linux 6.18 (measured): set-group-ID goes
// even without group execute, as it does for chown.
func TestWriteDropsSetgidOutsideGroup(t *testing.T) {
	mnt, _ := mountShared(t)
	p := filepath.Join(mnt, "f")
	if err := os.WriteFile(p, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(p, 02646); err != nil {
		t.Fatal(err)
	}
	if err := asNobody(t, "sh", "-c", "printf x >> "+p); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil || st.Mode&07777 != 0646 {
		t.Fatalf("mode after a write by a user outside the group: %o, %v; want 646", st.Mode&07777, err)
	}
}
