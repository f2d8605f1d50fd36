package mount_test

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
	"golang.org/x/sys/unix"
)

// bulkKeys creates n empty keys dir/<printf(format, i)> for i in [0, n)
// in a new vault at db. The first key is put with the vault library,
// which creates the directory and a template inode; the others are
// copies of the template's inode row with their own dentries, made in
// one SQL transaction. (The library's cached puts cost a few hundred
// microseconds of CPU per key here, minutes for a million keys.) The
// result is checked through the library before the test goes on.
func bulkKeys(t testing.TB, db, dir string, n int, format string) {
	t.Helper()
	start := time.Now()
	v, err := vault.Open(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := dir + "/" + fmt.Sprintf(format, 0)
	if err := v.Put(first, nil); err != nil {
		t.Fatal(err)
	}
	tmpl, err := v.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	conn, err := sql.Open("sqlite3", "file:"+db+"?_txlock=immediate&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tx, err := conn.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	table := vault.DefaultTable
	var cols []string
	rows, err := tx.Query(`SELECT name FROM pragma_table_info(?)`, table+"_inodes")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		if c != "id" {
			cols = append(cols, c)
		}
	}
	rows.Close()
	var parent, next int64
	if err := tx.QueryRow(`SELECT parent FROM `+table+`_dentries WHERE child = ?`, tmpl.ID).Scan(&parent); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(`SELECT max(id) + 1 FROM ` + table + `_inodes`).Scan(&next); err != nil {
		t.Fatal(err)
	}
	list := strings.Join(cols, ", ")
	series := `WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ?) `
	// The copies get consecutive ids from next on (one statement, in an
	// exclusive transaction).
	if _, err := tx.Exec(series+`INSERT INTO `+table+`_inodes (`+list+`) SELECT `+list+` FROM `+table+`_inodes, s WHERE id = ? ORDER BY x`, n-1, tmpl.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(series+`INSERT INTO `+table+`_dentries (parent, name, child) SELECT ?, printf(?, x), ? + x - 1 FROM s ORDER BY x`, n-1, parent, format, next); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	v, err = vault.Open(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, i := range []int{1, n / 2, n - 1} {
		st, err := v.Stat(dir + "/" + fmt.Sprintf(format, i))
		if err != nil || st.Kind != vault.KindFile || st.Size != 0 || st.Nlink != 1 {
			t.Fatalf("library Stat of bulk key %d: %+v, %v", i, st, err)
		}
	}
	t.Logf("created %d keys in %v", n, time.Since(start).Round(time.Millisecond))
}

// dirent is one entry decoded from getdents64.
type dirent struct {
	ino  uint64
	off  int64
	name string
}

// getdents reads one batch of entries from a directory descriptor with
// a buffer of bufSize bytes.
func getdents(t testing.TB, fd int, bufSize int) []dirent {
	t.Helper()
	buf := make([]byte, bufSize)
	n, err := syscall.Getdents(fd, buf)
	if err != nil {
		t.Fatalf("getdents: %v", err)
	}
	var out []dirent
	for p := buf[:n]; len(p) > 0; {
		reclen := int(binary.LittleEndian.Uint16(p[16:18]))
		name := p[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{
			ino:  binary.LittleEndian.Uint64(p[0:8]),
			off:  int64(binary.LittleEndian.Uint64(p[8:16])),
			name: string(name),
		})
		p = p[reclen:]
	}
	return out
}

// TestRmHugeDirectory removes a directory of 200,000 files with rm -r:
// the listing's cookies stay valid while entries vanish under it.
func TestRmHugeDirectory(t *testing.T) {
	needFUSE(t)
	const n = 200_000
	d := newVaultDir(t)
	bulkKeys(t, d.db, "many", n, "file-%06d")
	m := mountDaemon(t, d)
	if got := strings.TrimSpace(sh(t, "ls -f "+m.path("many")+" | wc -l")); got != strconv.Itoa(n+2) {
		t.Fatalf("ls -f lists %s entries, want %d", got, n+2)
	}
	start := time.Now()
	if r := runCmdLimit(20*time.Minute, "", "rm", "-r", m.path("many")); r.err != nil {
		t.Fatalf("rm -r of %d files: %v: %s", n, r.err, r.stderr)
	}
	t.Logf("rm -r of %d files: %v", n, time.Since(start).Round(time.Millisecond))
	if _, err := os.Lstat(m.path("many")); !os.IsNotExist(err) {
		t.Fatalf("many after rm -r: %v", err)
	}
	m.unmount(t)
	v, err := vault.Open(d.db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if n, err := v.Len(); err != nil || n != 0 {
		t.Fatalf("keys left in the vault after rm -r: %d, %v", n, err)
	}
}

// TestSeekdir reads a directory with a small getdents buffer, then
// seeks back to offsets that telldir (the entries' d_off) returned, and
// removes entries in the middle of a listing: nothing is skipped or
// repeated.
func TestSeekdir(t *testing.T) {
	m := mountFresh(t)
	const n = 1000
	dir := m.path("d")
	run(t, "mkdir", dir)
	want := map[string]bool{}
	for i := range n {
		name := fmt.Sprintf("entry-%04d-%s", i, strings.Repeat("x", i%40))
		want[name] = true
		writeFile(t, filepath.Join(dir, name), nil, 0o644)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	// A full listing, 300 bytes at a time (a few entries per call).
	var all []dirent
	for {
		batch := getdents(t, fd, 300)
		if len(batch) == 0 {
			break
		}
		all = append(all, batch...)
	}
	if len(all) != n+2 {
		t.Fatalf("listing has %d entries, want %d", len(all), n+2)
	}
	seen := map[string]bool{}
	for _, e := range all {
		if seen[e.name] {
			t.Fatalf("%q listed twice", e.name)
		}
		seen[e.name] = true
		if e.name != "." && e.name != ".." && !want[e.name] {
			t.Fatalf("unexpected entry %q", e.name)
		}
	}

	// seekdir to every 97th entry's offset resumes right after it.
	for i := 0; i < len(all)-1; i += 97 {
		if _, err := unix.Seek(fd, all[i].off, 0); err != nil {
			t.Fatalf("lseek to %d: %v", all[i].off, err)
		}
		batch := getdents(t, fd, 300)
		if len(batch) == 0 || batch[0].name != all[i+1].name || batch[0].ino != all[i+1].ino {
			t.Fatalf("after seeking to the offset of entry %d (%q), read %v, want %q", i, all[i].name, batch, all[i+1].name)
		}
	}
	// rewinddir gives the same listing again.
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		t.Fatal(err)
	}
	if batch := getdents(t, fd, 300); len(batch) == 0 || batch[0].name != all[0].name {
		t.Fatalf("after rewinding: %v", batch)
	}

	// Remove entries while listing: half is read, then every third
	// entry (read or not) is removed; the rest of the listing holds
	// every entry not yet read and not removed, once.
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		t.Fatal(err)
	}
	var first []dirent
	for len(first) < (n+2)/2 {
		batch := getdents(t, fd, 300)
		if len(batch) == 0 {
			t.Fatal("listing ended early")
		}
		first = append(first, batch...)
	}
	removed := map[string]bool{}
	for i, e := range all {
		if i%3 == 0 && e.name != "." && e.name != ".." {
			if err := os.Remove(filepath.Join(dir, e.name)); err != nil {
				t.Fatal(err)
			}
			removed[e.name] = true
		}
	}
	got := map[string]int{}
	for _, e := range first {
		got[e.name]++
	}
	for {
		batch := getdents(t, fd, 300)
		if len(batch) == 0 {
			break
		}
		for _, e := range batch {
			// POSIX leaves open whether an entry removed during the
			// listing still shows; it must not make others vanish.
			got[e.name]++
		}
	}
	for _, e := range all {
		if c := got[e.name]; c > 1 {
			t.Errorf("%q listed %d times", e.name, c)
		} else if c == 0 && !removed[e.name] {
			t.Errorf("%q skipped: it was never removed", e.name)
		}
	}
}

// TestMillionKeyDirectory lists a directory of 1,000,000 keys through
// the mount while watching the daemon's memory: listing is paginated,
// so memory stays flat.
func TestMillionKeyDirectory(t *testing.T) {
	needFUSE(t)
	const n = 1_000_000
	const limit = 150 << 20
	d := newVaultDir(t)
	bulkKeys(t, d.db, "huge", n, "k%07d")
	m := mountDaemon(t, d)
	before, err := rssAnon(m.pid)
	if err != nil {
		t.Fatal(err)
	}
	s := sampleRSS(m.pid, 20*time.Millisecond)
	start := time.Now()
	out := sh(t, "ls -f "+m.path("huge")+" | wc -l")
	elapsed := time.Since(start)
	peak, err := s.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != strconv.Itoa(n+2) {
		t.Fatalf("ls -f | wc -l = %s, want %d", got, n+2)
	}
	t.Logf("listed %d entries in %v; daemon RssAnon %d MiB before, peak %d MiB (%d samples)",
		n+2, elapsed.Round(time.Millisecond), before>>20, peak>>20, s.samples)
	if peak > limit {
		t.Fatalf("the daemon's RssAnon peaked at %d MiB while listing, over the %d MiB limit", peak>>20, limit>>20)
	}
	// A name near the end is found, and a missing one is not.
	if _, err := os.Stat(m.path("huge", fmt.Sprintf("k%07d", n-1))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.path("huge", fmt.Sprintf("k%07d", n))); !os.IsNotExist(err) {
		t.Fatalf("stat of a missing key: %v", err)
	}
}

// TestPathMax works through a chain of directories whose path inside
// the mount is about 4,000 bytes: create, write, read and stat, with
// *at calls relative to the mount, since the absolute path is longer
// than PATH_MAX.
func TestPathMax(t *testing.T) {
	m := mountFresh(t)
	root, err := unix.Open(m.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { unix.Close(root) }()
	var parts []string
	fd, err := unix.Dup(root)
	if err != nil {
		t.Fatal(err)
	}
	// Components of up to 255 bytes, the last one sized so that the
	// path of file.bin inside the mount is 4,080 bytes: under PATH_MAX
	// (4,096 with the NUL), while the absolute path is over it.
	const target = 4080
	for i := 0; ; i++ {
		used := len(strings.Join(append(parts, "file.bin"), "/"))
		if used >= target {
			break
		}
		name := fmt.Sprintf("%03d-%s", i, strings.Repeat("d", 251))
		if rest := target - used - 1; rest < len(name) {
			name = name[:rest]
		}
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatalf("mkdirat at depth %d: %v", i, err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatalf("openat at depth %d: %v", i, err)
		}
		unix.Close(fd)
		fd = next
		parts = append(parts, name)
	}
	defer func() { unix.Close(fd) }()
	rel := strings.Join(append(parts, "file.bin"), "/")
	t.Logf("%d directories; the path inside the mount is %d bytes, %d with the mount point", len(parts), len(rel), len(m.mnt)+1+len(rel))
	if len(rel) != target {
		t.Fatalf("relative path of %d bytes, want %d", len(rel), target)
	}
	data := genBytes(42, 300_000)
	f, err := unix.Openat(fd, "file.bin", unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Write(f, data); err != nil || n != len(data) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if err := unix.Close(f); err != nil {
		t.Fatal(err)
	}
	// The whole ~4000-byte path, resolved from the mount's root.
	f, err = unix.Openat(root, rel, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("openat with the %d-byte path: %v", len(rel), err)
	}
	got := make([]byte, len(data)+1)
	n, err := unix.Pread(f, got, 0)
	unix.Close(f)
	if err != nil || !bytes.Equal(got[:n], data) {
		t.Fatalf("read back %d bytes (%v), want the %d written", n, err, len(data))
	}
	var st unix.Stat_t
	if err := unix.Fstatat(root, rel, &st, 0); err != nil {
		t.Fatalf("fstatat: %v", err)
	}
	if st.Size != int64(len(data)) || st.Mode&0o7777 != 0o640 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Fatalf("fstatat: size %d mode %o", st.Size, st.Mode)
	}
	// The absolute path is too long for the kernel, not for the mount.
	if len(m.mnt)+1+len(rel) < unix.PathMax {
		t.Fatalf("the absolute path is only %d bytes", len(m.mnt)+1+len(rel))
	} else {
		if _, err := os.Stat(filepath.Join(m.mnt, rel)); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("stat of the %d-byte absolute path: %v, want ENAMETOOLONG", len(m.mnt)+1+len(rel), err)
		}
	}
	// A shell reaches it step by step with relative cd -P (without -P
	// the shell builds the long logical path and fails).
	script := "cd -P " + m.mnt
	for _, p := range parts {
		script += " && cd -P " + p
	}
	if got := sh(t, script+" && stat -c %s file.bin && cat file.bin | wc -c"); got != "300000\n300000\n" {
		t.Errorf("through the shell: %q", got)
	}
	// A name longer than 255 bytes is refused.
	if err := unix.Mkdirat(fd, strings.Repeat("n", 256), 0o755); err != unix.ENAMETOOLONG {
		t.Errorf("mkdir of a 256-byte name: %v, want ENAMETOOLONG", err)
	}
	// The library sees the same key, and rename of the top directory
	// moves the whole chain.
	if err := unix.Renameat(root, parts[0], root, "top"); err != nil {
		t.Fatal(err)
	}
	moved := strings.Join(append([]string{"top"}, append(parts[1:], "file.bin")...), "/")
	unix.Close(fd)
	unix.Close(root)
	fd, root = -1, -1
	m.unmount(t)
	opts := vault.DefaultOptions()
	opts.ReadOnly = true
	v, err := vault.Open(m.db, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	val, err := v.Get(moved)
	if err != nil || !bytes.Equal(val, data) {
		t.Fatalf("library Get of the %d-byte key: %d bytes, %v", len(moved), len(val), err)
	}
}
