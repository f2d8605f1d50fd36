package fs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestXattrsAfterListing checks the shortcut that answers getxattr from a
// directory listing: a listed file without attributes reports ENODATA, a
// listed file with one reports it, and an attribute set after the listing
// is seen at once, through the mount and through the library.
func TestXattrsAfterListing(t *testing.T) {
	mnt, v := mountTest(t, nil)
	dir := filepath.Join(mnt, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	plain, tagged := filepath.Join(dir, "plain"), filepath.Join(dir, "tagged")
	for _, p := range []string{plain, tagged} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Setxattr(tagged, "user.tag", []byte("v1"), 0); err != nil {
		t.Fatal(err)
	}
	get := func(p, name string) (string, error) {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(p, name, buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	list := func() {
		t.Helper()
		if _, err := os.ReadDir(dir); err != nil {
			t.Fatal(err)
		}
	}

	list()
	if _, err := get(plain, "user.tag"); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr of a listed file without attributes: %v, want ENODATA", err)
	}
	if got, err := get(tagged, "user.tag"); err != nil || got != "v1" {
		t.Errorf("getxattr of a listed file with one: %q, %v", got, err)
	}

	// Set after the listing: seen at once.
	if err := unix.Setxattr(plain, "user.tag", []byte("v2"), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := get(plain, "user.tag"); err != nil || got != "v2" {
		t.Errorf("getxattr right after setxattr on a listed file: %q, %v", got, err)
	}
	// Listed again, now with an attribute.
	list()
	if got, err := get(plain, "user.tag"); err != nil || got != "v2" {
		t.Errorf("getxattr after a second listing: %q, %v", got, err)
	}
	in, err := v.Stat("d/plain")
	if err != nil {
		t.Fatal(err)
	}
	if val, err := v.GetXattr(in.ID, "user.tag"); err != nil || string(val) != "v2" {
		t.Errorf("the library reads %q, %v", val, err)
	}
}
