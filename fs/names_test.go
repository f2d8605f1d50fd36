package fs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestNameTooLong checks that every operation taking a name longer than
// 255 bytes fails with ENAMETOOLONG, as on ext4 and tmpfs, and not with
// ENOENT from a lookup that could never have found it.
func TestNameTooLong(t *testing.T) {
	mnt, _ := mountTest(t, nil)
	long := strings.Repeat("n", 256)
	lp := filepath.Join(mnt, long)
	ok := filepath.Join(mnt, "ok")
	if err := os.WriteFile(ok, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A name of exactly 255 bytes works.
	max := filepath.Join(mnt, strings.Repeat("m", 255))
	if err := os.WriteFile(max, nil, 0o644); err != nil {
		t.Fatalf("create with a 255-byte name: %v", err)
	}
	ops := []struct {
		name string
		do   func() error
	}{
		{"stat", func() error { var st syscall.Stat_t; return syscall.Lstat(lp, &st) }},
		{"open", func() error { _, err := syscall.Open(lp, syscall.O_RDONLY, 0); return err }},
		{"create", func() error {
			fd, err := syscall.Open(lp, syscall.O_CREAT|syscall.O_WRONLY, 0o644)
			if err == nil {
				syscall.Close(fd)
			}
			return err
		}},
		{"mkdir", func() error { return syscall.Mkdir(lp, 0o755) }},
		{"mknod", func() error { return syscall.Mknod(lp, syscall.S_IFIFO|0o644, 0) }},
		{"symlink", func() error { return syscall.Symlink("target", lp) }},
		{"link", func() error { return syscall.Link(ok, lp) }},
		{"rename from", func() error { return syscall.Rename(lp, filepath.Join(mnt, "other")) }},
		{"rename to", func() error { return syscall.Rename(ok, lp) }},
		{"rename to in a directory", func() error { return syscall.Rename(ok, filepath.Join(mnt, "dir", long)) }},
		{"unlink", func() error { return syscall.Unlink(lp) }},
		{"rmdir", func() error { return syscall.Rmdir(lp) }},
		{"chmod", func() error { return syscall.Chmod(lp, 0o600) }},
		{"chown", func() error { return syscall.Chown(lp, 1, 1) }},
		{"truncate", func() error { return syscall.Truncate(lp, 0) }},
		{"utimes", func() error { return syscall.UtimesNano(lp, make([]syscall.Timespec, 2)) }},
		{"getxattr", func() error { _, err := syscall.Getxattr(lp, "user.a", nil); return err }},
	}
	for _, op := range ops {
		if err := op.do(); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("%s of a 256-byte name: %v, want ENAMETOOLONG", op.name, err)
		}
	}
	// Nothing was created or changed by the failed calls.
	entries, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 { // and .kvault
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		t.Errorf("entries after the failed calls: %q, want .kvault, ok, dir and the 255-byte name", names)
	}
	if _, err := os.Stat(ok); err != nil {
		t.Errorf("ok after the failed calls: %v", err)
	}
}
