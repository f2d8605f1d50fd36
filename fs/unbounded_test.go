package fs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/kohakuvault/kvaultfs/vault"
	"golang.org/x/sys/unix"
)

// mountFS is mountTest that also returns the mount's state.
func mountFS(t *testing.T) (string, *vault.Vault, *FS) { return mountWith(t, nil) }

// TestPollCostFollowsOpenFiles: a round of change polling after another
// commit asks for the generations of the files open now, not of every
// file the kernel remembers (it asked for all 300 closed files here).
func TestPollCostFollowsOpenFiles(t *testing.T) {
	mnt, v, fsys := mountFS(t)
	const n = 300
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(mnt, fmt.Sprintf("f%d", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	waitReleased(t, fsys)
	last := fsys.pollOnce(0)
	mustPut := func(key string) {
		if err := v.Put(key, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	mustPut("other") // another commit: data_version moves
	before := fsys.polledInodes.Load()
	last = fsys.pollOnce(last)
	if got := fsys.polledInodes.Load() - before; got != 0 {
		t.Errorf("a poll with %d closed files and none open asked for %d generations, want 0", n, got)
	}

	f, err := os.Open(filepath.Join(mnt, "f7"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mustPut("other2")
	before = fsys.polledInodes.Load()
	fsys.pollOnce(last)
	if got := fsys.polledInodes.Load() - before; got != 1 {
		t.Errorf("a poll with one open file asked for %d generations, want 1", got)
	}
}

// TestForgetFreesNodeState: the mount's per-inode state follows what
// the kernel holds now: after files are created, listed and closed no
// file is watched (it kept every file ever opened until the kernel
// forgot it), and after they are deleted the node tree is back to the
// root's few entries.
func TestForgetFreesNodeState(t *testing.T) {
	mnt, _, fsys := mountFS(t)
	const n = 500
	sub := filepath.Join(mnt, "d")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.ReadDir(sub); err != nil {
		t.Fatal(err)
	}
	waitReleased(t, fsys)
	watched := func() int {
		fsys.mu.Lock()
		defer fsys.mu.Unlock()
		return len(fsys.watched)
	}
	if got := treeSize(fsys.root.EmbeddedInode()); got < n {
		t.Fatalf("%d nodes in the tree after creating %d files: the count is broken", got, n)
	}
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	if got := treeSize(fsys.root.EmbeddedInode()); got > 5 {
		t.Errorf("%d nodes left in the tree after deleting the %d files", got, n)
	}
	if w := watched(); w != 0 {
		t.Errorf("%d files watched after deleting them all, want 0", w)
	}
}

// waitReleased waits until no file is watched: the kernel sends RELEASE
// after close(2) returns, so the last handles may still be open. It
// fails if some stay watched for 10 s (the old code kept every file
// ever opened).
func waitReleased(t *testing.T, fsys *FS) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fsys.mu.Lock()
		w := len(fsys.watched)
		fsys.mu.Unlock()
		if w == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d files still watched 10 s after their last close, want 0", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// treeSize counts the nodes reachable from in, in itself.
func treeSize(in *gofs.Inode) int {
	total := 1
	for _, c := range in.Children() {
		total += treeSize(c)
	}
	return total
}

// TestPunchHoleAndSeekThroughMount: fallocate PUNCH_HOLE and ZERO_RANGE
// through the mount zero their range and keep (or, for ZERO_RANGE
// without KEEP_SIZE, extend) the size; SEEK_HOLE and SEEK_DATA then see
// the hole.
func TestPunchHoleAndSeekThroughMount(t *testing.T) {
	mnt, _, _ := mountFS(t)
	const size = 4 << 20
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i%251) + 1
	}
	p := filepath.Join(mnt, "sparse")
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	lo, hi := int64(100), int64(3<<20+7)
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, lo, hi-lo); err != nil {
		t.Fatal(err)
	}
	clear(want[lo:hi])
	got := make([]byte, size+100)
	n, err := f.ReadAt(got, 0)
	if n != size || !bytes.Equal(got[:n], want) {
		t.Fatalf("after the punch read %d bytes (%v), contents equal the model: %v", n, err, bytes.Equal(got[:n], want))
	}
	const cs = 64 << 10 // the default chunk size: holes are whole chunks
	if off, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || off != cs {
		t.Errorf("SEEK_HOLE from 0 = %d, %v; want %d", off, err, cs)
	}
	if off, err := unix.Seek(fd, cs, unix.SEEK_DATA); err != nil || off != hi/cs*cs {
		t.Errorf("SEEK_DATA from %d = %d, %v; want %d", cs, off, err, hi/cs*cs)
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, size-10, 20); err != nil {
		t.Fatal(err)
	}
	want = append(want[:size-10], make([]byte, 20)...)
	n, _ = f.ReadAt(got, 0)
	if n != size+10 || !bytes.Equal(got[:n], want) {
		t.Errorf("after ZERO_RANGE past the end: %d bytes, want %d equal to the model", n, size+10)
	}
}
