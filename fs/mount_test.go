package fs

import (
	"fmt"
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
	mnt, v, _ := mountWith(t, opts)
	return mnt, v
}

// mountWith mounts a new vault opened with opts for the rest of the test
// and returns the mount point, the vault and the mount's state.
func mountWith(t *testing.T, opts *vault.Options) (string, *vault.Vault, *FS) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		skipOrFail(t, fmt.Sprintf("no /dev/fuse: %v", err))
	}
	if os.Geteuid() != 0 {
		if _, err := os.Stat("/usr/bin/fusermount3"); err != nil {
			skipOrFail(t, "not root and no fusermount3: cannot mount")
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
	srv, err := Mount(v.FS(), mnt, Options{})
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
	return mnt, v, srv.fsys
}

// skipOrFail skips a test whose environment is missing, or fails it when
// KVAULTFS_REQUIRE_ALL=1 (set by CI, where every test must run).
func skipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("KVAULTFS_REQUIRE_ALL") == "1" {
		t.Fatalf("%s (KVAULTFS_REQUIRE_ALL=1: every test must run here)", why)
	}
	t.Skip(why)
}
