package mount_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/fs"
	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/kohaku"
	"github.com/kohakuvault/kvaultfs/store"
	"golang.org/x/sys/unix"
)

// Mounts of KohakuVault files, served in-process through fs.Mount on
// kohaku.Table.FS, and driven with real tools and with KohakuVault's own
// statements on the same file.

// kohakuMount is a mounted copy of a fixture.
type kohakuMount struct {
	db, mnt string
	table   *kohaku.Table
}

func (m *kohakuMount) path(rel ...string) string {
	return filepath.Join(append([]string{m.mnt}, rel...)...)
}

// mountKohaku copies a fixture and mounts its table; the mount is
// unmounted (or detached) when the test ends, and the test fails if it
// runs past limit.
func mountKohaku(t *testing.T, fixture string, limit time.Duration) *kohakuMount {
	t.Helper()
	needFUSE(t)
	kohakuWatchdog(t, limit)
	db := kohakutest.CopyFixture(t, fixture)
	tb, err := kohaku.Open(db, kohaku.Options{})
	if err != nil {
		t.Fatal(err)
	}
	view := tb.FS()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := fs.Mount(view, mnt, fs.Options{FsName: db, AttrTimeout: 200 * time.Millisecond})
	if err != nil {
		tb.Close()
		t.Fatal(err)
	}
	register(mnt, 0)
	t.Cleanup(func() {
		var err error
		for i := 0; i < 50; i++ {
			if err = srv.Unmount(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			detach(mnt)
		}
		unregister(mnt)
		if c, ok := view.(io.Closer); ok {
			if err := c.Close(); err != nil {
				t.Errorf("close the view: %v", err)
			}
		}
		if err := tb.Close(); err != nil {
			t.Errorf("close the table: %v", err)
		}
	})
	return &kohakuMount{db: db, mnt: mnt, table: tb}
}

// kohakuWatchdog detaches the test's mounts and fails loudly if the test
// runs past d: a hung FUSE request would otherwise hang the suite.
func kohakuWatchdog(t *testing.T, d time.Duration) {
	name := t.Name()
	timer := time.AfterFunc(d, func() {
		cleanupAll()
		panic(fmt.Sprintf("%s: still running after %v (hung?)", name, d))
	})
	t.Cleanup(func() { timer.Stop() })
}

// shownPath is where the mount shows key (see kohaku's FS doc).
func shownPath(key string, keys map[string][]byte) string {
	if parts, ok := store.PathParts(key); ok {
		for i := 1; i < len(parts); i++ {
			if _, isKey := keys[strings.Join(parts[:i], "/")]; isKey {
				return filepath.Join(store.ReservedDir, store.KeysDir, store.BinaryName(key))
			}
		}
		return key
	}
	return filepath.Join(store.ReservedDir, store.KeysDir, store.BinaryName(key))
}

// TestKohakuMountShowsEveryKey reads every key of each fixture through
// the mount with cat and lists it with ls -l.
func TestKohakuMountShowsEveryKey(t *testing.T) {
	for _, fx := range []string{"format-a.db", "format-b.db", "format-c.db"} {
		t.Run(fx, func(t *testing.T) {
			m := mountKohaku(t, fx, 3*time.Minute)
			schema := kohakutest.Schema(t, m.db)
			want := kohakutest.ReadAll(t, m.db, "kv")
			for k, v := range want {
				p := m.path(shownPath(k, want))
				r := runCmd("", "cat", p)
				if r.err != nil {
					t.Errorf("cat %s (key %q): %v: %s", p, k, r.err, r.stderr)
					continue
				}
				if !bytes.Equal([]byte(r.stdout), v) {
					t.Errorf("cat %s: %d bytes, stored %d, first difference at %d", p, len(r.stdout), len(v), firstDiff([]byte(r.stdout), v))
				}
			}
			out := run(t, "ls", "-lnRA", "--time-style=+%s", m.mnt)
			fi, err := os.Stat(m.db)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{
				fmt.Sprintf("-rw-r--r-- 1 0 0 %d %d top.txt", len(want["top.txt"]), fi.ModTime().Unix()),
				fmt.Sprintf("-rw-r--r-- 1 0 0 %d %d a.jpg", len(want["photos/2024/a.jpg"]), fi.ModTime().Unix()),
				"drwxr-xr-x 2 0 0 0",
				store.BinaryName(""),
				store.BinaryName("a//b"),
			} {
				if !strings.Contains(out, want) {
					t.Errorf("ls -lnRA lacks %q:\n%s", want, out)
				}
			}
			if s := kohakutest.Schema(t, m.db); s != schema {
				t.Errorf("schema changed by reading:\n%s", s)
			}
		})
	}
}

// TestKohakuMountTools copies files in and out, renames and removes them
// with the usual tools, and checks what KohakuVault reads.
func TestKohakuMountTools(t *testing.T) {
	for _, fx := range []string{"format-a.db", "format-c.db"} {
		t.Run(fx, func(t *testing.T) {
			m := mountKohaku(t, fx, 3*time.Minute)
			schema := kohakutest.Schema(t, m.db)
			src := t.TempDir()
			data := make([]byte, 5<<20+123)
			rand.Read(data)
			if data[0] == 0x89 {
				data[0] = 0 // not the header magic, which a B/C table refuses
			}
			if err := os.WriteFile(filepath.Join(src, "in.bin"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			run(t, "mkdir", "-p", m.path("inbox", "2026"))
			run(t, "cp", filepath.Join(src, "in.bin"), m.path("inbox", "2026", "in.bin"))
			run(t, "cp", m.path("inbox", "2026", "in.bin"), filepath.Join(src, "out.bin"))
			if got := readFile(t, filepath.Join(src, "out.bin")); !bytes.Equal(got, data) {
				t.Fatalf("copied out %d bytes, differ at %d", len(got), firstDiff(got, data))
			}
			if v, ok := kohakutest.GetLikeKohaku(t, m.db, "kv", []byte("inbox/2026/in.bin")); !ok || !bytes.Equal(v, data) {
				t.Fatalf("KohakuVault reads %d bytes (found %v)", len(v), ok)
			}
			// cp -a keeps the mode and times while the mount runs.
			if err := os.Chmod(filepath.Join(src, "in.bin"), 0o600); err != nil {
				t.Fatal(err)
			}
			old := time.Unix(1_600_000_000, 0)
			if err := os.Chtimes(filepath.Join(src, "in.bin"), old, old); err != nil {
				t.Fatal(err)
			}
			run(t, "cp", "-a", filepath.Join(src, "in.bin"), m.path("kept.bin"))
			if fi, err := os.Stat(m.path("kept.bin")); err != nil || fi.Mode().Perm() != 0o600 || !fi.ModTime().Equal(old) {
				t.Errorf("cp -a: %v %v %v", fi.Mode(), fi.ModTime(), err)
			}
			// mv of a file and of a directory within the vault.
			run(t, "mv", m.path("kept.bin"), m.path("inbox", "kept.bin"))
			run(t, "mv", m.path("inbox"), m.path("archive"))
			got := kohakutest.ReadAll(t, m.db, "kv") // BLOB types; size = length in A
			for _, k := range []string{"archive/2026/in.bin", "archive/kept.bin"} {
				if !bytes.Equal(got[k], data) {
					t.Errorf("%s: %d bytes after mv", k, len(got[k]))
				}
			}
			for _, k := range []string{"inbox/2026/in.bin", "kept.bin", "inbox/kept.bin"} {
				if _, ok := got[k]; ok {
					t.Errorf("%s still there after mv", k)
				}
			}
			// Overwrite in place, append, rm.
			run(t, "sh", "-c", "printf 'new' > "+m.path("top.txt"))
			run(t, "sh", "-c", "printf '+more' >> "+m.path("top.txt"))
			if v, _ := kohakutest.GetLikeKohaku(t, m.db, "kv", []byte("top.txt")); string(v) != "new+more" {
				t.Errorf("top.txt holds %q", v)
			}
			run(t, "rm", "-r", m.path("archive"))
			if _, err := os.Stat(m.path("archive")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("archive after rm -r: %v", err)
			}
			got = kohakutest.ReadAll(t, m.db, "kv")
			for k := range got {
				if strings.HasPrefix(k, "archive/") {
					t.Errorf("%s left after rm -r", k)
				}
			}
			// What the format cannot keep.
			for _, c := range []struct {
				name string
				err  error
				want syscall.Errno
			}{
				{"link", os.Link(m.path("top.txt"), m.path("hard")), syscall.EPERM},
				{"symlink", os.Symlink("top.txt", m.path("soft")), syscall.EPERM},
				{"mkfifo", syscall.Mkfifo(m.path("fifo"), 0o644), syscall.EPERM},
				{"setxattr", syscall.Setxattr(m.path("top.txt"), "user.a", []byte("1"), 0), syscall.EOPNOTSUPP},
			} {
				if !errors.Is(c.err, c.want) {
					t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
				}
			}
			if _, err := syscall.Getxattr(m.path("top.txt"), "user.a", nil); !errors.Is(err, syscall.ENODATA) {
				t.Errorf("getxattr: %v, want ENODATA", err)
			}
			if err := unix.Renameat2(unix.AT_FDCWD, m.path("top.txt"), unix.AT_FDCWD, m.path("empty.bin"), unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
				t.Errorf("RENAME_NOREPLACE over a file: %v, want EEXIST", err)
			}
			if err := unix.Renameat2(unix.AT_FDCWD, m.path("top.txt"), unix.AT_FDCWD, m.path("empty.bin"), unix.RENAME_EXCHANGE); !errors.Is(err, syscall.EINVAL) {
				t.Errorf("RENAME_EXCHANGE: %v, want EINVAL", err)
			}
			if err := unix.Renameat2(unix.AT_FDCWD, m.path("top.txt"), unix.AT_FDCWD, m.path("top3.txt"), unix.RENAME_NOREPLACE); err != nil {
				t.Errorf("RENAME_NOREPLACE to a new name: %v", err)
			}
			var sfs syscall.Statfs_t
			if err := syscall.Statfs(m.mnt, &sfs); err != nil {
				t.Error(err)
			} else if n, _ := m.table.Len(); sfs.Files < uint64(n) || sfs.Blocks == 0 || sfs.Namelen != 255 {
				t.Errorf("statfs: files %d blocks %d namelen %d, with %d keys", sfs.Files, sfs.Blocks, sfs.Namelen, n)
			}
			if s := kohakutest.Schema(t, m.db); s != schema {
				t.Errorf("schema changed:\n%s\nwas\n%s", s, schema)
			}
		})
	}
}

// TestKohakuMountFFmpeg: ffprobe reads an MP4 copied in, and ffmpeg
// writes an MP4 straight into the mount (its muxer seeks back to write the
// moov atom), byte-exact with the same command's output in a plain
// directory and readable by KohakuVault.
func TestKohakuMountFFmpeg(t *testing.T) {
	ffmpeg := needTool(t, "ffmpeg", "ffmpeg")
	ffprobe := needTool(t, "ffprobe", "ffmpeg")
	m := mountKohaku(t, "format-c.db", 5*time.Minute)
	plain := t.TempDir()
	args := []string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc=duration=3:size=320x240:rate=25", "-c:v", "mpeg4",
		"-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1"}
	run(t, ffmpeg, append(append([]string{}, args...), filepath.Join(plain, "test.mp4"))...)
	run(t, "mkdir", "-p", m.path("videos", "in"))
	run(t, "cp", filepath.Join(plain, "test.mp4"), m.path("videos", "in", "copied.mp4"))
	run(t, ffmpeg, append(append([]string{}, args...), m.path("videos", "in", "direct.mp4"))...)
	// +faststart rewrites the file to move the moov atom to the front.
	fast := append(append([]string{}, args...), "-movflags", "+faststart")
	run(t, ffmpeg, append(append([]string{}, fast...), filepath.Join(plain, "fast.mp4"))...)
	run(t, ffmpeg, append(append([]string{}, fast...), m.path("videos", "in", "fast.mp4"))...)
	want := readFile(t, filepath.Join(plain, "test.mp4"))
	wantFast := readFile(t, filepath.Join(plain, "fast.mp4"))
	for _, name := range []string{"copied.mp4", "direct.mp4", "fast.mp4"} {
		want := want
		if name == "fast.mp4" {
			want = wantFast
		}
		p := m.path("videos", "in", name)
		if got := readFile(t, p); !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, want %d, differ at %d", name, len(got), len(want), firstDiff(got, want))
		}
		out := run(t, ffprobe, "-v", "error", "-show_entries", "format=duration,nb_streams", "-of", "default=noprint_wrappers=1", p)
		fields := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				fields[k] = v
			}
		}
		if d, err := strconv.ParseFloat(fields["duration"], 64); err != nil || math.Abs(d-3) > 0.1 || fields["nb_streams"] != "1" {
			t.Errorf("ffprobe %s: %q", name, out)
		}
		if v, ok := kohakutest.GetLikeKohaku(t, m.db, "kv", []byte("videos/in/"+name)); !ok || !bytes.Equal(v, want) {
			t.Errorf("KohakuVault reads %d bytes of %s (found %v)", len(v), name, ok)
		}
	}
	// Without +faststart the muxer wrote mdat first and seeked back to
	// patch its size; with it, the moov atom comes first.
	if moov, mdat := bytes.Index(want, []byte("moov")), bytes.Index(want, []byte("mdat")); moov < mdat {
		t.Errorf("plain MP4: moov at %d before mdat at %d", moov, mdat)
	}
	if moov, mdat := bytes.Index(wantFast, []byte("moov")), bytes.Index(wantFast, []byte("mdat")); moov > mdat {
		t.Errorf("faststart MP4: moov at %d after mdat at %d", moov, mdat)
	}
	kohakutest.ReadAll(t, m.db, "kv")
}

// TestKohakuMountBesideKohakuVault runs KohakuVault's statements in a
// loop (scripts/kohaku-loop.sh through the sqlite3 CLI) on the file while
// the mount writes and reads other keys: no error on either side, no
// write lost.
func TestKohakuMountBesideKohakuVault(t *testing.T) {
	needTool(t, "sqlite3", "sqlite3")
	for _, fx := range []string{"format-a.db", "format-c.db"} {
		t.Run(fx, func(t *testing.T) {
			m := mountKohaku(t, fx, 5*time.Minute)
			before := kohakutest.ReadAll(t, m.db, "kv")
			loops := []*kohakutest.KohakuLoop{
				kohakutest.StartKohakuLoop(t, m.db, "kv", 40, "one"),
				kohakutest.StartKohakuLoop(t, m.db, "kv", 40, "two"),
			}
			if err := os.MkdirAll(m.path("mounted"), 0o755); err != nil {
				t.Fatal(err)
			}
			written := map[string][]byte{}
			var mu sync.Mutex
			stop := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Paced and capped: the point is writes interleaved with
					// KohakuVault's, not starving its writer of the lock.
					for i := 0; i < 3000; i++ {
						select {
						case <-stop:
							return
						case <-time.After(5 * time.Millisecond):
						}
						name := fmt.Sprintf("w%d-%d.bin", w, i)
						data := bytes.Repeat([]byte(name+" "), 1+i%300)
						p := m.path("mounted", name)
						if err := os.WriteFile(p, data, 0o644); err != nil {
							errs <- fmt.Errorf("write %s: %w", name, err)
							return
						}
						got, err := os.ReadFile(p)
						if err != nil || !bytes.Equal(got, data) {
							errs <- fmt.Errorf("read back %s: %d bytes, %v", name, len(got), err)
							return
						}
						mu.Lock()
						written["mounted/"+name] = data
						mu.Unlock()
						if i%7 == 3 { // some removals too
							old := fmt.Sprintf("w%d-%d.bin", w, i-3)
							if err := os.Remove(m.path("mounted", old)); err != nil {
								errs <- fmt.Errorf("remove %s: %w", old, err)
								return
							}
							mu.Lock()
							delete(written, "mounted/"+old)
							mu.Unlock()
						}
					}
				}()
			}
			var loopErrs []error
			for _, l := range loops {
				if err := l.Wait(4 * time.Minute); err != nil {
					loopErrs = append(loopErrs, err)
				}
			}
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error("mount side:", err)
			}
			for _, err := range loopErrs {
				t.Error("KohakuVault side:", err)
			}
			after := kohakutest.ReadAll(t, m.db, "kv")
			if len(written) < 10 {
				t.Errorf("only %d files written through the mount while the loops ran", len(written))
			}
			for k, v := range written {
				if !bytes.Equal(after[k], v) {
					t.Errorf("%s: stored %d bytes, written %d (lost write)", k, len(after[k]), len(v))
				}
			}
			for k, v := range before {
				if !bytes.Equal(after[k], v) {
					t.Errorf("%q changed", k)
				}
			}
			for k := range after {
				if strings.HasPrefix(k, "kohaku-loop/") {
					t.Errorf("the loop's key %q was left", k)
				}
				if _, ok := before[k]; !ok && written[k] == nil {
					t.Errorf("unexpected key %q", k)
				}
			}
			t.Logf("%d files written through the mount beside 2 x 40 KohakuVault iterations", len(written))
		})
	}
}

// TestKohakuMountDaemon: `kvaultfs mount --daemon` on a KohakuVault file
// (the command, not the package) serves its table: every path key reads
// back as stored, a file written through it is what KohakuVault's own
// SELECT reads, and after the unmount the schema is unchanged and no
// kvaultfs table was added.
func TestKohakuMountDaemon(t *testing.T) {
	d := newVaultDir(t)
	d.db = kohakutest.CopyFixture(t, "format-c.db")
	schema := kohakutest.Schema(t, d.db)
	m := mountDaemon(t, d)
	for k, v := range kohakutest.ReadAll(t, d.db, "kv") {
		if !store.IsPathKey(k) {
			continue
		}
		got, err := os.ReadFile(m.path(k))
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("cat %s through the daemon: %d bytes, %v; stored %d bytes", k, len(got), err, len(v))
		}
	}
	written := bytes.Repeat([]byte("daemon "), 10_000)
	if err := os.Mkdir(m.path("new"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("new", "by-daemon.txt"), written, 0o644); err != nil {
		t.Fatal(err)
	}
	m.unmount(t)
	if got, ok := kohakutest.GetLikeKohaku(t, d.db, "kv", []byte("new/by-daemon.txt")); !ok || !bytes.Equal(got, written) {
		t.Errorf("KohakuVault reads the daemon's file as %d bytes (present %v), want %d", len(got), ok, len(written))
	}
	if s := kohakutest.Schema(t, d.db); s != schema {
		t.Errorf("the daemon changed the schema:\nbefore %s\nafter  %s", schema, s)
	}
}

// TestKohakuTwoMountsOneFile: two mounts (two daemons) of one KohakuVault
// file, each writing its own files and both rewriting one shared file,
// while each lists the other's directory. Every file either wrote is
// there byte for byte, and the shared file holds one writer's whole last
// value, never a mix: a value is committed whole, and between processes
// the last commit wins.
func TestKohakuTwoMountsOneFile(t *testing.T) {
	kohakuWatchdog(t, 3*time.Minute)
	d := newVaultDir(t)
	d.db = kohakutest.CopyFixture(t, "format-c.db")
	m1 := mountDaemon(t, d)
	d2 := d
	d2.mnt = filepath.Join(d.dir, "mnt2")
	if err := os.Mkdir(d2.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	m2 := mountDaemon(t, d2)
	for _, m := range []*mounted{m1, m2} {
		for _, dir := range []string{"from1", "from2"} {
			if err := os.MkdirAll(m.path(dir), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	const rounds = 40
	value := func(writer, round int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("writer %d round %03d|", writer, round)), 7000)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w, m := range []*mounted{m1, m2} {
		writer := w + 1
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if err := os.WriteFile(m.path(fmt.Sprintf("from%d", writer), fmt.Sprintf("f%03d", i)), value(writer, i), 0o644); err != nil {
					errs <- fmt.Errorf("writer %d file %d: %w", writer, i, err)
					return
				}
				if err := os.WriteFile(m.path("shared.bin"), value(writer, i), 0o644); err != nil {
					errs <- fmt.Errorf("writer %d shared %d: %w", writer, i, err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			other := fmt.Sprintf("from%d", 3-writer)
			for range rounds {
				if _, err := os.ReadDir(m.path(other)); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs <- fmt.Errorf("listing %s on mount %d: %w", other, writer, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	m1.unmount(t)
	m2.unmount(t)
	got := kohakutest.ReadAll(t, d.db, "kv")
	for writer := 1; writer <= 2; writer++ {
		for i := range rounds {
			key := fmt.Sprintf("from%d/f%03d", writer, i)
			if !bytes.Equal(got[key], value(writer, i)) {
				t.Errorf("%s: %d bytes, not the %d written", key, len(got[key]), len(value(writer, i)))
			}
		}
	}
	shared := got["shared.bin"]
	if !bytes.Equal(shared, value(1, rounds-1)) && !bytes.Equal(shared, value(2, rounds-1)) {
		head := shared[:min(len(shared), 40)]
		t.Errorf("shared.bin holds %d bytes starting %q: not one writer's whole last value", len(shared), head)
	}
}
