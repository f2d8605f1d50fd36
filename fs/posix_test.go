package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixExceptions are the posixtest cases left out of TestPosix, each
// with the reason (also in the README) and a test of what the mount does
// instead.
var posixExceptions = map[string]string{
	// The case expects a second descriptor of the same process to be
	// refused a conflicting fcntl lock. POSIX record locks belong to the
	// process, so they never conflict with the same process's other
	// descriptors; ext4 behaves the same way (the case passes only on a
	// loopback that turns them into open-file-description locks).
	// TestLocksSameProcess and TestLocksAcrossProcesses check the real
	// semantics.
	"FcntlFlockLocksFile": "fcntl locks are per process (POSIX); see TestLocksSameProcess",
}

// TestPosix runs go-fuse's POSIX conformance suite against the mount,
// every case on a fresh vault.
func TestPosix(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		if _, skip := posixExceptions[name]; !skip {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			mnt, _ := mountTest(t, nil)
			dir := filepath.Join(mnt, "work")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
}

// TestLocksSameProcess asserts the POSIX answer to the case left out of
// TestPosix: a process's second descriptor may take a read lock over its
// own write lock.
func TestLocksSameProcess(t *testing.T) {
	mnt, _ := mountTest(t, nil)
	name := filepath.Join(mnt, "locked")
	f1, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	if err := syscall.FcntlFlock(f1.Fd(), syscall.F_SETLK, &syscall.Flock_t{Type: syscall.F_WRLCK}); err != nil {
		t.Fatalf("write lock: %v", err)
	}
	f2, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := syscall.FcntlFlock(f2.Fd(), syscall.F_SETLK, &syscall.Flock_t{Type: syscall.F_RDLCK}); err != nil {
		t.Fatalf("read lock from the same process = %v, want success (POSIX locks are per process)", err)
	}
}

// TestLocksAcrossProcesses shows the kernel's local locks at work: while
// this process holds a write lock, another process is refused one.
func TestLocksAcrossProcesses(t *testing.T) {
	flock, err := exec.LookPath("flock")
	if err != nil {
		skipOrFail(t, "flock(1) not installed (apt-get install util-linux)")
	}
	mnt, _ := mountTest(t, nil)
	name := filepath.Join(mnt, "locked")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("flock: %v", err)
	}
	if err := exec.Command(flock, "-n", name, "true").Run(); err == nil {
		t.Fatal("another process got an exclusive flock on a locked file")
	}
	lk := &syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, lk); err != nil {
		t.Fatalf("fcntl lock: %v", err)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if err := exec.Command(flock, "-n", name, "true").Run(); err != nil {
		t.Fatalf("flock after unlock: %v", err)
	}
}
