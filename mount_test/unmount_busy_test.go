package mount_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUnmountBusySaysWhy refuses to unmount a mount that a process has
// as its working directory, and the message says so and names the
// process, instead of blaming open files.
func TestUnmountBusySaysWhy(t *testing.T) {
	m := mountFresh(t)
	if err := os.Mkdir(m.path("sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	sleeper.Dir = m.path("sub")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	}()
	r := runLimited(time.Minute, "unmount", m.mnt)
	if r.err == nil {
		t.Fatal("unmount succeeded while a process has its working directory inside")
	}
	want := fmt.Sprintf("pid %d (sleep): working directory", sleeper.Process.Pid)
	if !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "files on it are open") {
		t.Fatalf("unmount refused with %q, want it to say %q", r.stderr, want)
	}
	if !isMounted(m.mnt) {
		t.Fatal("the refused unmount unmounted")
	}
	sleeper.Process.Signal(syscall.SIGKILL)
	sleeper.Wait()
	m.unmount(t)
}
