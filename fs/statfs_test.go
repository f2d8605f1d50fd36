package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// statfs through the mount counts deleted space as free at once, and
// keeps counting it so while the background moves it from inside the
// database file to the disk.
func TestStatfsCountsDeletedSpace(t *testing.T) {
	timer := time.AfterFunc(2*time.Minute, func() {
		buf := make([]byte, 8<<20)
		n := runtime.Stack(buf, true)
		fmt.Fprintf(os.Stderr, "TestStatfsCountsDeletedSpace hung; goroutines:\n%s\n", buf[:n])
		panic("TestStatfsCountsDeletedSpace: watchdog")
	})
	t.Cleanup(func() { timer.Stop() })
	mnt, v := mountTest(t, nil)
	const size = 96 << 20
	used := func() int64 {
		t.Helper()
		var s syscall.Statfs_t
		if err := syscall.Statfs(mnt, &s); err != nil {
			t.Fatal(err)
		}
		if s.Bfree > s.Blocks || s.Bavail > s.Bfree {
			t.Fatalf("statfs: blocks %d, free %d, available %d", s.Blocks, s.Bfree, s.Bavail)
		}
		return int64(s.Blocks-s.Bfree) * s.Bsize
	}
	empty := used()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	path := filepath.Join(mnt, "big")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	full := used()
	if full-empty < size*9/10 {
		t.Fatalf("statfs: used grew by %d MiB for a %d MiB file", (full-empty)>>20, size>>20)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// The file shrinks in the background; used space stays low meanwhile.
	deadline := time.Now().Add(60 * time.Second)
	for {
		u := used()
		if u-empty > 16<<20 {
			t.Fatalf("statfs: %d MiB used after the delete (%d MiB when empty)", u>>20, empty>>20)
		}
		st, err := os.Stat(v.Path())
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() < 32<<20 {
			t.Logf("used %d MiB empty, %d MiB with the file, %d MiB after its delete; database file %d MiB",
				empty>>20, full>>20, u>>20, st.Size()>>20)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the database file is still %d MiB 60 s after the delete", st.Size()>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
