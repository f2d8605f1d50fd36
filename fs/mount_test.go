package fs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kohakuvault/kvaultfs/vault"
)

// mountTest mounts a fresh vault in-process and unmounts it at the end.
// FUSE needs /dev/fuse and the right to mount: without them the test is
// skipped, saying so; CI runs as root where both exist.
func mountTest(t *testing.T, opts *vault.Options) (string, *vault.Vault) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	if os.Geteuid() != 0 {
		if _, err := os.Stat("/usr/bin/fusermount3"); err != nil {
			t.Skip("not root and no fusermount3: cannot mount")
		}
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(filepath.Join(dir, "test.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(v, mnt, Options{})
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
	return mnt, v
}
