package vault

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// smallDisk mounts a tmpfs of size MiB for a test and unmounts it at the
// end, even if the test fails (lazily if something still holds it).
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "mounting a small tmpfs to fill needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%dm", size)); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot mount a tmpfs (%v): the full-disk test needs one", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v (detaching it)", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// fillDisk writes path until the disk is full, to the last byte but
// leave.
func fillDisk(t *testing.T, path string, leave int) {
	t.Helper()
	spare := path + ".spare"
	if err := os.WriteFile(spare, make([]byte, leave), 0o644); err != nil && !errors.Is(err, unix.ENOSPC) {
		t.Fatal(err)
	}
	defer os.Remove(spare)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return
		}
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

// patterned returns n bytes that differ for every seed and offset.
func patterned(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// TestFullDisk fills the disk under a vault with Puts until one fails,
// then checks what a user needs on a full disk: the failure is
// ErrNoSpace, every Put that succeeded reads back whole, a Delete works
// while the disk is still full, the vault reopens while it is full, and
// once space is freed the same Vault writes again, without a restart.
func TestFullDisk(t *testing.T) { fullDisk(t, smallDisk(t, 64)) }

// TestFullDiskExt4 is TestFullDisk on a loop-mounted ext4 file system,
// whose blocks reserved for root, extents and journal differ from tmpfs.
func TestFullDiskExt4(t *testing.T) { fullDisk(t, smallExt4(t, 80)) }

// smallExt4 makes an ext4 file system of size MiB in a file, mounts it
// with a loop device, and unmounts it (freeing the loop device) when the
// test ends, even if it fails.
func smallExt4(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "a loop mount needs root")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		skipOrFail(t, "mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(size)<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		skipOrFail(t, fmt.Sprintf("mount -o loop: %v: %s", err, out))
	}
	t.Cleanup(func() {
		// The loop device of mount -o loop is freed with the unmount.
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s (detaching it)", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

func fullDisk(t *testing.T, dir string) {
	db := filepath.Join(dir, "v.db")
	filler := filepath.Join(dir, "filler")
	// The ballast is what the user frees at the end.
	ballast := filepath.Join(dir, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := Open(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if v != nil {
			v.Close()
		}
	}()
	// A file of more chunks than one bounded delete transaction frees.
	big := patterned(1000, (freeBatchChunks+64)*DefaultChunkSize)
	if err := v.Put("big", big); err != nil {
		t.Fatal(err)
	}
	const size = 3 << 20
	var stored []string
	var putErr error
	for i := 0; i < 64 && putErr == nil; i++ {
		key := fmt.Sprintf("f%02d", i)
		if putErr = v.Put(key, patterned(i, size)); putErr == nil {
			stored = append(stored, key)
		}
	}
	if !errors.Is(putErr, ErrNoSpace) {
		t.Fatalf("Put on a filling disk: %v, want ErrNoSpace", putErr)
	}
	if len(stored) < 4 {
		t.Fatalf("only %d puts of 3 MiB fitted on a 64 MiB disk", len(stored))
	}
	free, err := diskFree(db)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for _, p := range []string{db, db + "-wal", db + "-shm"} {
		st, _ := os.Stat(p)
		if st != nil {
			sizes = append(sizes, st.Size()>>10)
		}
	}
	t.Logf("%d puts of 3 MiB fitted besides a big file and the ballast; the vault left %d KiB free; database, -wal and -shm: %v KiB", len(stored), free>>10, sizes)
	if free < shmRoom {
		t.Errorf("the vault's writes left %d bytes free, less than the %d its reopening needs", free, shmRoom)
	}
	check := func(when string, v *Vault, keys []string) {
		t.Helper()
		for _, key := range keys {
			var i int
			fmt.Sscanf(key, "f%d", &i)
			got, err := v.Get(key)
			if err != nil || !bytes.Equal(got, patterned(i, size)) {
				t.Fatalf("%s: %s: %d bytes, %v; want its %d bytes", when, key, len(got), err, size)
			}
		}
	}
	check("on the full disk", v, stored)

	// Deleting is how a user frees space: it must work while full.
	if err := v.Delete(stored[0]); err != nil {
		t.Fatalf("Delete on a full disk: %v", err)
	}
	stored = stored[1:]
	if err := v.Close(); err != nil {
		t.Fatalf("Close on a full disk: %v (everything committed is in the WAL)", err)
	}

	// The vault reopens on the disk its writes filled, reads and deletes.
	if v, err = Open(db, nil); err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	check("reopened on the full disk", v, stored)
	if err := v.Delete(stored[0]); err != nil {
		t.Fatalf("Delete after reopening on a full disk: %v", err)
	}
	stored = stored[1:]

	// Another program takes the last byte: deleting a big file still
	// works, in the room reserved past the log's end, and Close does not
	// fail for the checkpoint.
	fillDisk(t, filler, 0)
	if got, err := v.Get("big"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big on the full disk: %d bytes, %v", len(got), err)
	}
	if err := v.Delete("big"); err != nil {
		t.Fatalf("Delete of a big file on a disk full to the last byte: %v", err)
	}
	var left int64
	if err := v.r.QueryRow(v.sql(`SELECT count(*) FROM {t}_chunks`)).Scan(&left); err != nil || left != int64(len(stored))*size/DefaultChunkSize {
		t.Fatalf("%d chunk rows after deleting big (%v), want %d: its chunks were not all freed", left, err, int64(len(stored))*size/DefaultChunkSize)
	}
	if err := v.Put("more", []byte("x")); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put on a disk full to the last byte: %v, want ErrNoSpace", err)
	}
	check("on a disk full to the last byte", v, stored)
	if err := v.Close(); err != nil {
		t.Fatalf("Close on a disk full to the last byte: %v", err)
	}
	// Opening needs room for SQLite's index: the error says so.
	fillDisk(t, filler, 0) // what the checkpoint at Close gave back
	if o, err := Open(db, nil); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "shared-memory index") {
		if err == nil {
			o.Close()
		}
		t.Fatalf("Open on a disk full to the last byte: %v, want ErrNoSpace saying why", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	fillDisk(t, filler, shmRoom)
	if v, err = Open(db, nil); err != nil {
		t.Fatalf("Open with %d KiB free: %v", shmRoom>>10, err)
	}
	check("reopened with the room of the index", v, stored)

	// Space comes back: the same Vault writes again.
	for _, p := range []string{filler, ballast} { // space comes back
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Put("again", patterned(99, size)); err != nil {
		t.Fatalf("Put once space is free again: %v", err)
	}
	if got, err := v.Get("again"); err != nil || !bytes.Equal(got, patterned(99, size)) {
		t.Fatalf("read back after recovery: %d bytes, %v", len(got), err)
	}
	check("after recovery", v, stored)
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	v, err = Open(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("reopened after recovery", v, stored)
}
