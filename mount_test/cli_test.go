package mount_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
	"golang.org/x/sys/unix"
)

// runLimited runs the binary with a time limit, so that a mount command
// that wrongly succeeds in the foreground cannot hang the test.
func runLimited(d time.Duration, args ...string) result {
	return runCmdLimit(d, "", kvaultfs, args...)
}

// daemonsServing counts kvaultfs processes serving mnt.
func daemonsServing(mnt string) int { return len(daemonPIDs(mnt)) }

// TestMountErrors gives kvaultfs mount bad mount points and databases:
// each is a one-line error and a non-zero exit, and nothing is mounted.
func TestMountErrors(t *testing.T) {
	needFUSE(t)
	cases := []struct {
		name  string
		setup func(t *testing.T, d vaultDir) (db, mnt string)
		want  string   // in the message
		flags []string // given to mount before DB
	}{
		{"missing mount point", func(t *testing.T, d vaultDir) (string, string) {
			return d.db, filepath.Join(d.dir, "nowhere")
		}, "no such file or directory", nil},
		{"mount point is a file", func(t *testing.T, d vaultDir) (string, string) {
			f := filepath.Join(d.dir, "file")
			writeFile(t, f, []byte("x"), 0o644)
			return d.db, f
		}, "not a directory", nil},
		{"busy mount point", func(t *testing.T, d vaultDir) (string, string) {
			m := mountDaemon(t, d)
			writeFile(t, m.path("first"), []byte("first mount"), 0o644)
			return filepath.Join(d.dir, "other.db"), d.mnt
		}, "busy", nil},
		{"not a database", func(t *testing.T, d vaultDir) (string, string) {
			writeFile(t, d.db, bytes.Repeat([]byte("this is not an SQLite database\n"), 300), 0o644)
			return d.db, d.mnt
		}, "database", nil},
		{"database in a missing directory", func(t *testing.T, d vaultDir) (string, string) {
			return filepath.Join(d.dir, "missing", "vault.db"), d.mnt
		}, "no such file or directory", nil},
		{"database inside the mount point", func(t *testing.T, d vaultDir) (string, string) {
			return filepath.Join(d.mnt, "vault.db"), d.mnt
		}, "inside the mount point", nil},
		{"database below the mount point", func(t *testing.T, d vaultDir) (string, string) {
			if err := os.Mkdir(filepath.Join(d.mnt, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(d.mnt, "sub", "vault.db"), d.mnt
		}, "inside the mount point", nil},
		{"bad vault option", func(t *testing.T, d vaultDir) (string, string) {
			return d.db, d.mnt
		}, "--page-size", []string{"--page-size", "3000"}},
		{"bad cache size", func(t *testing.T, d vaultDir) (string, string) {
			return d.db, d.mnt
		}, "--cache-size", []string{"--cache-size", "lots"}},
	}
	for _, c := range cases {
		for _, daemon := range []bool{false, true} {
			name := c.name
			if daemon {
				name += " --daemon"
			}
			t.Run(name, func(t *testing.T) {
				d := newVaultDir(t)
				db, mnt := c.setup(t, d)
				mountsBefore := len(mountEntries(mnt))
				daemonsBefore := daemonsServing(mnt)
				var dbBefore []byte
				if st, err := os.Stat(db); err == nil && st.Mode().IsRegular() {
					dbBefore = readFile(t, db)
				}
				register(mnt, 0)
				t.Cleanup(func() {
					defer unregister(mnt)
					// Should the command have mounted after all, undo it.
					if len(mountEntries(mnt)) > mountsBefore {
						detach(mnt)
					}
					for _, pid := range daemonPIDs(mnt) {
						if daemonsBefore == 0 {
							syscall.Kill(pid, syscall.SIGKILL)
						}
					}
				})
				args := append([]string{"mount"}, c.flags...)
				if daemon {
					args = append(args, "--daemon")
				}
				r := runLimited(30*time.Second, append(args, db, mnt)...)
				if r.err == nil || r.code <= 0 {
					t.Fatalf("kvaultfs %s %s %s: exit %d (%v), want a failure", strings.Join(args, " "), db, mnt, r.code, r.err)
				}
				msg := strings.TrimRight(r.stderr, "\n")
				if msg == "" || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "kvaultfs: ") {
					t.Errorf("stderr is not one line starting with \"kvaultfs: \": %q", r.stderr)
				}
				if !strings.Contains(strings.ToLower(msg), c.want) {
					t.Errorf("message %q does not say %q", msg, c.want)
				}
				if r.stdout != "" {
					t.Errorf("stdout: %q", r.stdout)
				}
				if n := len(mountEntries(mnt)); n != mountsBefore {
					t.Errorf("%d mounts at %s after the failed mount, want %d", n, mnt, mountsBefore)
				}
				if n := daemonsServing(mnt); n != daemonsBefore {
					t.Errorf("%d daemons serving %s after the failed mount, want %d", n, mnt, daemonsBefore)
				}
				if dbBefore != nil && !bytes.Equal(readFile(t, db), dbBefore) {
					t.Errorf("the failed mount changed %s", db)
				}
				if c.flags != nil {
					if _, err := os.Stat(db); !os.IsNotExist(err) {
						t.Errorf("the refused mount created %s", db)
					}
				}
				if c.name == "database in a missing directory" {
					if _, err := os.Stat(filepath.Dir(db)); !os.IsNotExist(err) {
						t.Errorf("the failed mount created %s", filepath.Dir(db))
					}
				}
				if strings.HasPrefix(c.name, "database inside") || strings.HasPrefix(c.name, "database below") {
					if _, err := os.Stat(db); !os.IsNotExist(err) {
						t.Errorf("the failed mount created %s", db)
					}
				}
				if c.name == "busy mount point" {
					// The first mount still serves.
					if got, err := os.ReadFile(filepath.Join(mnt, "first")); err != nil || string(got) != "first mount" {
						t.Errorf("the first mount after the failed second one: %q, %v", got, err)
					}
				}
			})
		}
	}
}

// TestDaemonReady mounts with --daemon several times: the mount is
// usable the moment the command returns, with no waiting.
func TestDaemonReady(t *testing.T) {
	d := newVaultDir(t)
	abs, _ := filepath.Abs(d.db)
	for i := range 5 {
		m := mountDaemon(t, d)
		entries := mountEntries(d.mnt)
		if len(entries) != 1 || !strings.Contains(entries[0], " - fuse.kvaultfs "+abs+" ") {
			t.Fatalf("mountinfo right after --daemon returned: %q", entries)
		}
		name := fmt.Sprintf("round%d", i)
		writeFile(t, m.path(name), []byte(name), 0o644)
		if got := string(readFile(t, m.path(name))); got != name {
			t.Fatalf("read back %q", got)
		}
		var st, parent unix.Stat_t
		if err := unix.Stat(d.mnt, &st); err != nil {
			t.Fatal(err)
		}
		if err := unix.Stat(d.dir, &parent); err != nil {
			t.Fatal(err)
		}
		if st.Dev == parent.Dev || st.Ino != 1 {
			t.Fatalf("the mount point is not the vault's root: dev %d (parent %d), ino %d", st.Dev, parent.Dev, st.Ino)
		}
		m.unmount(t)
	}
	// Everything written in the five mounts is in the database.
	v := openLibrary(t, d.db)
	for i := range 5 {
		name := fmt.Sprintf("round%d", i)
		if got, err := v.Get(name); err != nil || string(got) != name {
			t.Fatalf("Get(%q) = %q, %v", name, got, err)
		}
	}
}

// checkClosedDB opens a database that its mount has released and
// checks the keys in want, its integrity, and that the .db file alone
// (copied without -wal and -shm) holds everything.
func checkClosedDB(t testing.TB, db string, want map[string][]byte) {
	t.Helper()
	if st, err := os.Stat(db + "-wal"); err == nil && st.Size() > 0 {
		t.Errorf("%s-wal still holds %d bytes after the daemon exited", db, st.Size())
	}
	alone := filepath.Join(t.TempDir(), "alone.db")
	writeFile(t, alone, readFile(t, db), 0o644)
	integrityCheck(t, alone)
	opts := vault.DefaultOptions()
	opts.ReadOnly = true
	v, err := vault.Open(alone, opts)
	if err != nil {
		t.Fatalf("open a copy of the .db file alone: %v", err)
	}
	defer v.Close()
	for key, data := range want {
		got, err := v.Get(key)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s in the copied .db: %d bytes, %v; want %d bytes", key, len(got), err, len(data))
		}
	}
}

// writeSet writes files into a mount and returns them by key.
func writeSet(t testing.TB, mnt string, seed uint64) map[string][]byte {
	t.Helper()
	want := map[string][]byte{
		"docs/a.txt":        []byte("plain text\n"),
		"media/clip.bin":    genBytes(seed, 9<<20),
		"media/thumb.jpg":   genBytes(seed+1, 40_000),
		"deep/x/y/z/key":    genBytes(seed+2, 1),
		"media/partial.bin": genBytes(seed+3, 300_001),
	}
	for key, data := range want {
		p := filepath.Join(mnt, key)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p, data, 0o644)
	}
	return want
}

// TestSignals stops a foreground mount with SIGINT and SIGTERM: it
// commits everything, unmounts and exits cleanly; with a file still
// open, the mount is detached and the daemon exits after its last close.
func TestSignals(t *testing.T) {
	for _, c := range []struct {
		name     string
		sig      syscall.Signal
		openFile bool
	}{{"SIGINT", syscall.SIGINT, false}, {"SIGTERM", syscall.SIGTERM, false}, {"SIGTERM with a file open", syscall.SIGTERM, true}} {
		t.Run(c.name, func(t *testing.T) {
			d := newVaultDir(t)
			fg := mountForeground(t, d)
			want := writeSet(t, d.mnt, 60)
			var open *os.File
			if c.openFile {
				var err error
				if open, err = os.Create(filepath.Join(d.mnt, "open.bin")); err != nil {
					t.Fatal(err)
				}
				defer open.Close()
				want["open.bin"] = genBytes(61, 2<<20)
				if _, err := open.Write(want["open.bin"][:1<<20]); err != nil {
					t.Fatal(err)
				}
			}
			if err := fg.cmd.Process.Signal(c.sig); err != nil {
				t.Fatal(err)
			}
			if open != nil {
				// Detached, but the open file still works until closed.
				if err := eventually(10*time.Second, func() error {
					if isMounted(d.mnt) {
						return errors.New("still mounted")
					}
					return nil
				}); err != nil {
					t.Fatalf("after %s with a file open: %v", c.sig, err)
				}
				if _, err := open.Write(want["open.bin"][1<<20:]); err != nil {
					t.Fatalf("write to the open file after the mount was detached: %v", err)
				}
				select {
				case <-fg.done:
					t.Fatalf("the daemon exited while a file was still open: %v", fg.err)
				case <-time.After(300 * time.Millisecond):
				}
				if err := open.Close(); err != nil {
					t.Fatalf("close after detach: %v", err)
				}
			}
			if err := fg.wait(t, 60*time.Second); err != nil {
				t.Fatalf("kvaultfs mount after %s: %v; stderr: %s", c.sig, err, fg.stderr)
			}
			if isMounted(d.mnt) {
				t.Fatalf("still mounted after %s", c.sig)
			}
			checkClosedDB(t, d.db, want)
		})
	}
}

// TestUnmountCommand unmounts from another process: kvaultfs unmount
// returns only once the daemon has finished, so the .db file alone is
// complete; it refuses a busy mount, and --lazy waits for the last close.
func TestUnmountCommand(t *testing.T) {
	d := newVaultDir(t)
	m := mountDaemon(t, d)
	want := writeSet(t, d.mnt, 70)

	// Busy: a file is open.
	f, err := os.Create(m.path("held.bin"))
	if err != nil {
		t.Fatal(err)
	}
	want["held.bin"] = genBytes(71, 3<<20)
	if _, err := f.Write(want["held.bin"][:1<<20]); err != nil {
		t.Fatal(err)
	}
	r := runLimited(time.Minute, "unmount", d.mnt)
	if r.err == nil || !strings.Contains(r.stderr, "busy") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("kvaultfs unmount with a file open: exit %d, stderr %q; want a one-line busy error", r.code, r.stderr)
	}
	if !isMounted(d.mnt) {
		t.Fatal("a refused unmount unmounted anyway")
	}
	if _, err := f.Write(want["held.bin"][1<<20 : 2<<20]); err != nil {
		t.Fatal(err)
	}

	// --lazy detaches at once and returns when the daemon is done, which
	// is after the last file closes.
	closed := make(chan time.Time, 1)
	go func() {
		time.Sleep(700 * time.Millisecond)
		f.Write(want["held.bin"][2<<20:])
		f.Close()
		closed <- time.Now()
	}()
	start := time.Now()
	r = runLimited(time.Minute, "unmount", "--lazy", d.mnt)
	returned := time.Now()
	if r.err != nil {
		t.Fatalf("kvaultfs unmount --lazy: %v: %s", r.err, r.stderr)
	}
	closedAt := <-closed
	if returned.Before(closedAt) {
		t.Fatalf("kvaultfs unmount --lazy returned after %v, before the open file was closed", returned.Sub(start))
	}
	if processAlive(m.pid) {
		t.Fatal("kvaultfs unmount --lazy returned while the daemon still runs")
	}
	if isMounted(d.mnt) {
		t.Fatal("still mounted")
	}
	unregister(d.mnt)
	checkClosedDB(t, d.db, want)

	// A plain unmount from another process, and one of something not
	// mounted.
	m = mountDaemon(t, d)
	more := writeSet(t, filepath.Join(d.mnt, "second"), 80)
	out, err := exec.Command(kvaultfs, "unmount", d.mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("kvaultfs unmount: %v: %s", err, out)
	}
	if processAlive(m.pid) || isMounted(d.mnt) {
		t.Fatalf("after kvaultfs unmount: daemon alive %v, mounted %v", processAlive(m.pid), isMounted(d.mnt))
	}
	for k, v := range more {
		want["second/"+k] = v
	}
	checkClosedDB(t, d.db, want)
	r = runLimited(time.Minute, "unmount", d.mnt)
	if r.err == nil || !strings.Contains(r.stderr, "not mounted") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("kvaultfs unmount of a directory not mounted: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestReadOnly mounts with --read-only: every kind of write fails with
// EROFS, reads work, and the database file is not touched.
func TestReadOnly(t *testing.T) {
	needFUSE(t)
	d := newVaultDir(t)
	v, err := vault.Open(d.db, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, val := range map[string]string{"a.txt": "alpha", "dir/b.txt": "beta"} {
		if err := v.Put(k, []byte(val)); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, d.db)
	stBefore, _ := os.Stat(d.db)
	m := mountDaemon(t, d, "--read-only")
	if got := string(readFile(t, m.path("dir/b.txt"))); got != "beta" {
		t.Fatalf("read = %q", got)
	}
	p := m.path
	writes := map[string]func() error{
		"create": func() error { return os.WriteFile(p("new.txt"), []byte("x"), 0o644) },
		"open for write": func() error {
			f, err := os.OpenFile(p("a.txt"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		"append":   func() error { _, err := os.OpenFile(p("a.txt"), os.O_APPEND|os.O_WRONLY, 0); return err },
		"truncate": func() error { return os.Truncate(p("a.txt"), 0) },
		"mkdir":    func() error { return os.Mkdir(p("newdir"), 0o755) },
		"unlink":   func() error { return os.Remove(p("a.txt")) },
		"rmdir":    func() error { return syscall.Rmdir(p("dir")) },
		"rename":   func() error { return os.Rename(p("a.txt"), p("c.txt")) },
		"chmod":    func() error { return os.Chmod(p("a.txt"), 0o600) },
		"chown":    func() error { return os.Chown(p("a.txt"), 1, 1) },
		"utimes":   func() error { return os.Chtimes(p("a.txt"), time.Now(), time.Now()) },
		"symlink":  func() error { return os.Symlink("a.txt", p("link")) },
		"link":     func() error { return os.Link(p("a.txt"), p("hard")) },
		"setxattr": func() error { return unix.Setxattr(p("a.txt"), "user.x", []byte("y"), 0) },
		"mknod":    func() error { return unix.Mknod(p("fifo"), unix.S_IFIFO|0o644, 0) },
	}
	for name, fn := range writes {
		if err := fn(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", name, err)
		}
	}
	if r := runCmd("", "sh", "-c", "echo x > "+p("shell.txt")); r.err == nil || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("shell redirection on a read-only mount: %v %q", r.err, r.stderr)
	}
	m.unmount(t)
	stAfter, _ := os.Stat(d.db)
	if !bytes.Equal(readFile(t, d.db), before) || !stAfter.ModTime().Equal(stBefore.ModTime()) {
		t.Errorf("a read-only mount changed the database file")
	}
}

// TestFio runs fio's 4 KiB random writes with verification (and direct
// I/O reads) on the mount.
func TestFio(t *testing.T) {
	fio := needTool(t, "fio", "fio")
	m := mountFresh(t)
	out := run(t, fio, "--name=randwrite", "--filename="+m.path("fio.dat"), "--size=16m", "--bs=4k",
		"--rw=randwrite", "--ioengine=psync", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
		"--randrepeat=1", "--output-format=terse", "--minimal")
	if strings.Contains(out, "verify:") || strings.Contains(out, "bad") {
		t.Fatalf("fio reports verification errors: %s", out)
	}
	run(t, fio, "--name=randread", "--filename="+m.path("fio.dat"), "--size=16m", "--bs=4k",
		"--rw=randread", "--ioengine=psync", "--direct=1", "--runtime=2", "--time_based", "--minimal")
	if st, err := os.Stat(m.path("fio.dat")); err != nil || st.Size() != 16<<20 {
		t.Fatalf("fio.dat: %v", err)
	}
}
