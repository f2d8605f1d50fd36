package fs

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSuidClearedOnChown checks what the mount does itself since the
// kernel leaves it to the file system (HANDLE_KILLPRIV_V2): chown clears
// setuid, and setgid only of a group-executable file, as on ext4.
func TestSuidClearedOnChown(t *testing.T) {
	mnt, _ := mountTest(t, nil)
	p := filepath.Join(mnt, "f")
	if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	mode := func() uint32 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode & 07777
	}
	if err := syscall.Chmod(p, 06755); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 06755 {
		t.Fatalf("after chmod: %o", m)
	}
	if err := os.Chown(p, 1, 1); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 0755 {
		t.Fatalf("after chown: %o, want 755", m)
	}
	if err := syscall.Chmod(p, 06745); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 2, 2); err != nil {
		t.Fatal(err)
	}
	if m := mode(); m != 02745 {
		t.Fatalf("after chown of a file the group cannot execute: %o, want 2745", m)
	}
	// A directory keeps its bits.
	d := filepath.Join(mnt, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(d, 02755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, 3, 3); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(d, &st); err != nil || st.Mode&07777 != 02755 {
		t.Fatalf("directory after chown: %o, %v", st.Mode&07777, err)
	}
}
