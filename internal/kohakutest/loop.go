package kohakutest

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// LoopScript returns the absolute path of scripts/kohaku-loop.sh.
func LoopScript(tb testing.TB) string {
	tb.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("kohakutest: cannot locate its own source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", "kohaku-loop.sh")
}

// KohakuLoop is a running scripts/kohaku-loop.sh: a process issuing
// KohakuVault's statements through the sqlite3 CLI.
type KohakuLoop struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan error
}

// StartKohakuLoop starts kohaku-loop.sh on table of the file at path for n
// iterations, its keys tagged with tag (letters, digits, _ or -). It skips
// the test when the sqlite3 CLI is missing. Call Wait.
func StartKohakuLoop(tb testing.TB, path, table string, n int, tag string) *KohakuLoop {
	tb.Helper()
	if _, err := exec.LookPath("sqlite3"); err != nil {
		tb.Skip("kohakutest: the sqlite3 CLI is not installed")
	}
	l := &KohakuLoop{done: make(chan error, 1)}
	l.cmd = exec.Command("sh", LoopScript(tb), path, table, strconv.Itoa(n))
	l.cmd.Env = append(l.cmd.Environ(), "KOHAKU_LOOP_TAG="+tag)
	l.cmd.Stdout = &l.stdout
	l.cmd.Stderr = &l.stderr
	if err := l.cmd.Start(); err != nil {
		tb.Fatalf("kohakutest: start kohaku-loop.sh: %v", err)
	}
	go func() { l.done <- l.cmd.Wait() }()
	return l
}

// Wait waits for the loop to end, at most timeout (then it is killed), and
// returns nil when it exited 0, else an error holding its stderr.
func (l *KohakuLoop) Wait(timeout time.Duration) error {
	select {
	case err := <-l.done:
		if err != nil {
			return fmt.Errorf("kohaku-loop.sh: %v: %s", err, bytes.TrimSpace(l.stderr.Bytes()))
		}
		return nil
	case <-time.After(timeout):
		_ = l.cmd.Process.Kill()
		<-l.done
		return fmt.Errorf("kohaku-loop.sh still running after %v (killed); stderr: %s", timeout, bytes.TrimSpace(l.stderr.Bytes()))
	}
}

// Output returns what the loop printed on stdout (its summary line); call
// it after Wait.
func (l *KohakuLoop) Output() string { return l.stdout.String() }
