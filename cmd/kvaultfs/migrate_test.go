package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/migrate"
	"github.com/kohakuvault/kvaultfs/vault"
)

// TestMigrateCommand runs "kvaultfs migrate" forward and back on a
// KohakuVault fixture: exit 0, the summary alone on stdout, nothing on
// stderr (not a terminal: no progress line), the values readable through
// "kvaultfs get" and KohakuVault's own SELECT, SRC unchanged, and a second
// run that copies nothing.
func TestMigrateCommand(t *testing.T) {
	src := kohakutest.CopyFixture(t, "format-b.db")
	want := kohakutest.ReadAll(t, src, "kv")
	var total int64
	for _, v := range want {
		total += int64(len(v))
	}
	srcBefore, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dst := filepath.Join(dir, "native.db")

	r := kv(t, nil, "migrate", src, dst)
	mustOK(t, r, "migrate")
	wantOut := fmt.Sprintf("copied %d keys (%d bytes), 0 unchanged, verified\n", len(want), total)
	if string(r.stdout) != wantOut || len(r.stderr) != 0 {
		t.Errorf("stdout %q (want %q), stderr %q (want nothing)", r.stdout, wantOut, r.stderr)
	}
	r = kv(t, nil, "get", dst, "videos/clip.mp4")
	mustOK(t, r, "get")
	if !bytes.Equal(r.stdout, want["videos/clip.mp4"]) {
		t.Errorf("get videos/clip.mp4: %d bytes, want %d", len(r.stdout), len(want["videos/clip.mp4"]))
	}
	if after, _ := os.ReadFile(src); !bytes.Equal(after, srcBefore) {
		t.Error("migrate changed SRC")
	}

	r = kv(t, nil, "migrate", "--quiet", src, dst)
	mustOK(t, r, "second migrate")
	if want := fmt.Sprintf("copied 0 keys (0 bytes), %d unchanged, verified\n", len(want)); string(r.stdout) != want {
		t.Errorf("second run: stdout %q, want %q", r.stdout, want)
	}

	back := filepath.Join(dir, "back.db")
	// format-b.db holds a raw value starting 89 4B that is no valid
	// header, which a new (format C) file refuses; a format-A table takes
	// it raw.
	r = kv(t, nil, "migrate", "--to", "kohakuvault", dst, back)
	mustFail(t, r, 1, `"raw/magic.bin"`, "migrate --to kohakuvault into a new file")
	if strings.Contains(string(r.stderr), "enc/str") {
		t.Errorf("a header-encoded value was refused: %s", r.stderr)
	}
	mustNotExist(t, back, "a refused migrate --to kohakuvault")
	emptyA := kohakutest.CopyFixture(t, "format-a.db")
	for k := range kohakutest.ReadAll(t, emptyA, "kv") {
		kohakutest.DeleteLikeKohaku(t, emptyA, "kv", []byte(k))
	}
	r = kv(t, nil, "migrate", "--to", "kohakuvault", dst, emptyA)
	mustOK(t, r, "migrate --to kohakuvault into a format-A table")
	got := kohakutest.ReadAll(t, emptyA, "kv")
	if len(got) != len(want) {
		t.Errorf("format-A table holds %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Errorf("%q: %d bytes back in KohakuVault's table, want %d", k, len(got[k]), len(v))
		}
	}
}

// TestMigrateErrors checks the error contract of the command: one line
// naming what failed, exit 1 for a refused migration and 2 for a wrong
// command line, and nothing created.
func TestMigrateErrors(t *testing.T) {
	dir := t.TempDir()
	text := writeFile(t, filepath.Join(dir, "notes.txt"), []byte("not a database"))
	foreign := kohakutest.CopyFixture(t, "foreign.db")
	kohakuFile := kohakutest.CopyFixture(t, "format-c.db")
	dst := filepath.Join(dir, "dst.db")

	mustFail(t, kv(t, nil, "migrate", text, dst), 1, "not a SQLite database", "SRC a text file")
	mustFail(t, kv(t, nil, "migrate", foreign, dst), 1, "tables of another program: orders, sessions, users", "SRC foreign")
	mustFail(t, kv(t, nil, "migrate", kohakuFile, foreign), 1, "refusing", "DST foreign")
	mustFail(t, kv(t, nil, "migrate", "--to", "kohakuvault", kohakuFile, dst), 1, "not a kvaultfs vault", "--to kohakuvault from a KohakuVault file")
	mustFail(t, kv(t, nil, "migrate", "--to", "nowhere", kohakuFile, dst), 2, "--to", "bad --to")
	mustFail(t, kv(t, nil, "migrate", kohakuFile), 2, "SRC.db DST.db", "one argument")
	mustFail(t, kv(t, nil, "migrate", "--table", "no such", kohakuFile, dst), 2, "--table", "bad --table")
	mustNotExist(t, dst, "failed migrations")

	// The empty key, which KohakuVault allows, is copied like any other.
	r := kv(t, nil, "migrate", kohakuFile, dst)
	mustOK(t, r, "SRC with the empty key")
	if !strings.HasPrefix(string(r.stdout), "copied 14 keys") {
		t.Errorf("stdout %q, want the summary of what was copied", r.stdout)
	}

	// A value over KohakuVault's limit, as a sparse file in the vault.
	native := filepath.Join(dir, "native.db")
	v, err := vault.Open(native, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.OpenFile("huge.bin", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1_000_000_001); err != nil {
		t.Fatal(err)
	}
	f.Close()
	v.Close()
	back := filepath.Join(dir, "back.db")
	mustFail(t, kv(t, nil, "migrate", "--to", "kohakuvault", native, back), 1, `"huge.bin" (1000000001 bytes)`, "a value over the limit")
	mustNotExist(t, back, "a refused migrate --to kohakuvault")
}

// TestProgressLine checks the terminal test and the line's format.
func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	if isTerminal(&b) {
		t.Error("a buffer is a terminal")
	}
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a regular file is a terminal")
	}
	if pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0); err == nil {
		if !isTerminal(pty) {
			t.Error("a pseudo-terminal is not a terminal")
		}
		pty.Close()
	}
	p := &progressLine{w: &b}
	p.update(migrate.Progress{Keys: 1, TotalKeys: 4, Bytes: 3 << 20, TotalBytes: 12 << 20})
	p.update(migrate.Progress{Keys: 2, TotalKeys: 4, Bytes: 6 << 20, TotalBytes: 12 << 20}) // within 200 ms: skipped
	p.last = time.Time{}
	p.update(migrate.Progress{Keys: 4, TotalKeys: 4, Bytes: 12 << 20, TotalBytes: 12 << 20})
	p.clear()
	want := "\r\033[Kmigrate: 1/4 keys, 3.0 MiB/12.0 MiB (25%)" + "\r\033[Kmigrate: 4/4 keys, 12.0 MiB/12.0 MiB (100%)" + "\r\033[K"
	if b.String() != want {
		t.Errorf("progress output %q, want %q", b.String(), want)
	}
}

// TestMigrateInterrupt sends SIGINT to a migration of a 24 MiB value and
// checks the contract: exit 1, one line saying it was interrupted, the
// value in DST absent (the put rolled back) or whole, and a second run
// that completes the copy.
func TestMigrateInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 24 MiB")
	}
	dir := t.TempDir()
	native := filepath.Join(dir, "native.db")
	v, err := vault.Open(native, nil)
	if err != nil {
		t.Fatal(err)
	}
	value := randomBytes(24<<20, 7)
	if err := v.Put("big.bin", value); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "media.db")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "migrate", "--to", "kohakuvault", native, dst)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the copy to start: the new file exists once the checks
	// passed, and the value is streamed after that.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(dst + "-wal"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the migration never created its destination")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() // the exit status is checked below
	if cmd.ProcessState.ExitCode() == 0 {
		t.Skipf("the migration finished before the signal arrived (stdout %q)", stdout.Bytes())
	}
	r := result{stdout.Bytes(), stderr.Bytes(), cmd.ProcessState.ExitCode()}
	mustFail(t, r, 1, "interrupted", "migrate after SIGINT")
	if got, ok := kohakutest.GetLikeKohaku(t, dst, "kv", []byte("big.bin")); ok && !bytes.Equal(got, value) {
		t.Errorf("after SIGINT big.bin holds %d bytes that are not the value", len(got))
	}
	r = kv(t, nil, "migrate", "--to", "kohakuvault", native, dst)
	mustOK(t, r, "migrate after the interruption")
	if got, _ := kohakutest.GetLikeKohaku(t, dst, "kv", []byte("big.bin")); !bytes.Equal(got, value) {
		t.Errorf("after the second run big.bin holds %d bytes, want the value", len(got))
	}
}
