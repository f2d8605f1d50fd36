package vault

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Tests that need a second OS process (several processes on one vault, a
// process killed mid-write, a process running as another user) re-execute
// the test binary. The child runs only TestHelperProcess, which looks up
// the helper named by helperEnv and runs it with the arguments after "--".

const helperEnv = "KVAULT_TEST_HELPER"

// helperFuncs are the helpers a child process can run, registered by the
// test files' init functions. A helper returns an error to fail the child
// (exit status 1, the error on stderr).
var helperFuncs = map[string]func(args []string) error{}

func registerHelper(name string, fn func(args []string) error) {
	if helperFuncs[name] != nil {
		panic("helper registered twice: " + name)
	}
	helperFuncs[name] = fn
}

// TestHelperProcess is the entry point of re-executed children. In a
// normal test run (no helperEnv) it does nothing.
func TestHelperProcess(t *testing.T) {
	name := os.Getenv(helperEnv)
	if name == "" {
		return
	}
	fn := helperFuncs[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
		os.Exit(2)
	}
	if err := fn(flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// helperCmd returns a command that runs helper name with args in a child
// process of the test binary exe ("" for this one).
func helperCmd(t testing.TB, exe, name string, args ...string) *exec.Cmd {
	t.Helper()
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			t.Fatalf("os.Executable: %v", err)
		}
	}
	cmd := exec.Command(exe, append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	return cmd
}

// runHelper runs helper name to completion and fails the test if it
// fails, showing its output. It returns the child's stdout.
func runHelper(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper %v: %v\nstdout:\n%s\nstderr:\n%s", cmd.Args[3:], err, out, stderr.String())
	}
	return string(out)
}

// asNobody makes cmd run as uid/gid 65534. Root bypasses file permissions,
// so read-only cases can only be tested as another user.
func asNobody(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
}

// sharedExecutable copies the test binary into dir (which must be
// readable by everyone), so that a child running as another user can
// execute it: go test builds it in a private directory.
func sharedExecutable(t testing.TB, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "vault.test")
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
