package kohaku

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// Regression tests of the file-system view's races between commits,
// truncates, renames and unlinks, and of the spill files' life.

// has returns key's value and whether it is in the table.
func has(t *testing.T, tb *Table, key string) ([]byte, bool) {
	t.Helper()
	v, err := tb.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

// allKeys lists every key of the table.
func allKeys(t *testing.T, tb *Table) []string {
	t.Helper()
	var out []string
	if err := tb.Scan("", "", 0, func(k string, _ int64) error { out = append(out, k); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// openFDsNamed counts this process's descriptors whose target contains s.
func openFDsNamed(s string) (int, string) {
	ents, _ := os.ReadDir("/proc/self/fd")
	n, last := 0, ""
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if strings.Contains(l, s) {
			n, last = n+1, l
		}
	}
	return n, last
}

// truncate(2) by path of a file not open here, racing a rename of its
// directory, must not bring the old key back: the truncate's write
// re-checks the file's key under its commit token, as commits do.
func TestFSTruncateRacesDirRename(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-c.db")
	big := pattern(24<<20, 7)
	for try := 0; try < 6; try++ {
		from, to := "r1", "r2"
		if try%2 == 1 {
			from, to = "r2", "r1"
		}
		if err := tb.Put(from+"/big", big); err != nil {
			t.Fatal(err)
		}
		in := lookupPath(t, fsys, from+"/big")
		done := make(chan error, 1)
		go func() {
			sz := int64(1)
			_, err := fsys.SetAttr(in.ID, store.SetAttr{Size: &sz})
			done <- err
		}()
		time.Sleep(time.Duration(2+5*try) * time.Millisecond)
		if err := fsys.RenameEntry(store.RootIno, from, store.RootIno, to, 0); err != nil {
			t.Fatal(err)
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			t.Fatal("truncate still running a minute after the rename")
		}
		if err != nil {
			t.Fatalf("try %d: truncate: %v", try, err)
		}
		if v, ok := has(t, tb, from+"/big"); ok {
			t.Fatalf("try %d: %s/big (%d bytes) is back after mv %s %s; keys %q", try, from, len(v), from, to, allKeys(t, tb))
		}
		v, ok := has(t, tb, to+"/big")
		if !ok || len(v) != 1 || v[0] != big[0] {
			t.Fatalf("try %d: %s/big holds %d bytes (present %v), want the truncated 1 byte", try, to, len(v), ok)
		}
		if err := tb.Delete(to + "/big"); err != nil {
			t.Fatal(err)
		}
	}
}

// A truncate of a file not open here keeps its first bytes and reads
// only those (Table.getTo with a limit).
func TestFSTruncateKeepsPrefix(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-c.db")
	v := pattern(3<<20, 3)
	if err := tb.Put("p/v", v); err != nil {
		t.Fatal(err)
	}
	in := lookupPath(t, fsys, "p/v")
	for _, size := range []int64{2 << 20, 5, 0} {
		if _, err := fsys.SetAttr(in.ID, store.SetAttr{Size: &size}); err != nil {
			t.Fatal(err)
		}
		got, ok := has(t, tb, "p/v")
		if !ok {
			t.Fatal("p/v gone after truncate")
		}
		mustEqual(t, "truncated value", got, v[:size])
	}
	if err := tb.Put("p/w", v); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{0, 10, 1<<20 + 1, 5 << 20} {
		var sink countWriter
		n, err := tb.getTo("p/w", &sink, limit)
		if want := min(limit, int64(len(v))); err != nil || n != want || sink.n != want {
			t.Fatalf("getTo with limit %d wrote %d (counted %d), %v; want %d", limit, n, sink.n, err, want)
		}
	}
	if _, err := tb.getTo("p/none", &countWriter{}, 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("getTo of a missing key with limit 0: %v, want ErrNotFound", err)
	}
}

// A commit of a value over 1 MiB reads the spill directly: PutReader
// copies no second spool of it.
func TestFSCommitReadsSpillDirectly(t *testing.T) {
	_, fsys, _ := fsOn(t, "format-c.db")
	root := lookupPath(t, fsys, "")
	h, _, err := fsys.CreateFile(root.ID, "big.bin", 0o644, 0, 0, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	buf := pattern(1<<20, 1)
	for i := 0; i < 64; i++ {
		if _, err := h.WriteAt(buf, int64(i)<<20); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	seen := make(chan string, 1)
	go func() {
		defer close(seen)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n, l := openFDsNamed(".kvaultfs-spool-"); n > 0 {
				seen <- l
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if l, ok := <-seen; ok {
		t.Errorf("committing a 64 MiB spill opened a second copy: %s", l)
	}
}

// PutReader takes a fileSection as it takes a regular file (no spool),
// and refuses one over a file shorter than the size announced.
func TestFSFileSectionPutReader(t *testing.T) {
	tb := openTable(t, FormatBC)
	spill, err := os.CreateTemp(t.TempDir(), "section")
	if err != nil {
		t.Fatal(err)
	}
	defer spill.Close()
	v := pattern(3<<20, 9)
	if _, err := spill.Write(v); err != nil {
		t.Fatal(err)
	}
	if !direct(&fileSection{f: spill, size: 1}) {
		t.Fatal("direct does not accept a fileSection of a regular file")
	}
	if err := tb.PutReader("s", &fileSection{f: spill, size: 2 << 20}, 2<<20); err != nil {
		t.Fatal(err)
	}
	got, _ := has(t, tb, "s")
	mustEqual(t, "value from a section", got, v[:2<<20])
	err = tb.PutReader("s", &fileSection{f: spill, size: 4 << 20}, 4<<20)
	if !errors.Is(err, store.ErrInvalidArgument) {
		t.Fatalf("a section past the file's end: %v, want ErrInvalidArgument", err)
	}
	got, _ = has(t, tb, "s")
	mustEqual(t, "value after a refused put", got, v[:2<<20])
}

// While one handle's close(2) commits, another handle of the same file
// truncates: the commit must not fail (the spill is held stable while it
// is read).
func TestFSFlushWhileOtherHandleTruncates(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-c.db")
	root := lookupPath(t, fsys, "")
	a, in, err := fsys.CreateFile(root.ID, "two.bin", 0o644, 0, 0, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fsys.OpenInode(in.ID, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	buf := pattern(1<<20, 2)
	for i := 0; i < 48; i++ {
		if _, err := a.WriteAt(buf, int64(i)<<20); err != nil {
			t.Fatal(err)
		}
	}
	for try := 0; try < 3; try++ {
		if try > 0 {
			if _, err := a.WriteAt(buf, 47<<20); err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan error, 1)
		go func() { done <- a.Flush() }()
		time.Sleep(time.Duration(5+10*try) * time.Millisecond)
		if err := b.Truncate(int64(try)); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("try %d: flush of handle a failed because handle b truncated meanwhile: %v", try, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if v, _ := has(t, tb, "two.bin"); len(v) != 2 {
		t.Errorf("two.bin holds %d bytes after the last truncate to 2", len(v))
	}
}

// tableFS.Close closes the spill files of the files it drops.
func TestFSCloseClosesSpills(t *testing.T) {
	_, fsys, _ := fsOn(t, "format-c.db")
	root := lookupPath(t, fsys, "")
	before, _ := openFDsNamed(".kvaultfs-spill-")
	h, _, err := fsys.CreateFile(root.ID, "leak.bin", 0o644, 0, 0, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := openFDsNamed(".kvaultfs-spill-"); n != before+1 {
		t.Fatalf("%d spill files open with one file open for writing, want %d", n, before+1)
	}
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if n, l := openFDsNamed(".kvaultfs-spill-"); n != before {
		t.Errorf("%d spill file(s) still open after the view's Close (%s)", n-before, l)
	}
}

// A file open through /.kvault/keys writes under the key its directory's
// rename gave it, never under the old one.
func TestFSKeysEntryFollowsDirRename(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-c.db")
	for k, v := range map[string]string{"d/a": "file", "d/a/b": "old"} {
		if err := tb.Put(k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	in := lookupPath(t, fsys, ".kvault/keys/"+store.BinaryName("d/a/b"))
	h, err := fsys.OpenInode(in.ID, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fsys.RenameEntry(store.RootIno, "d", store.RootIno, "e", 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if v, ok := has(t, tb, "d/a/b"); ok {
		t.Errorf("d/a/b came back after mv d e, holding %q; keys %q", v, allKeys(t, tb))
	}
	if v, _ := has(t, tb, "e/a/b"); string(v) != "new" {
		t.Errorf("e/a/b holds %q, want the handle's write %q", v, "new")
	}
	if v, _ := has(t, tb, "e/a"); string(v) != "file" {
		t.Errorf("e/a holds %q, want %q", v, "file")
	}
}

// One key, two inodes (its /.kvault/keys entry and, once the file that
// shadowed it is removed, its path): rm through the path ends the file
// open through the other inode too.
func TestFSKeysEntryAfterUnlinkOfPath(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-c.db")
	for k, v := range map[string]string{"s": "file", "s/b": "old"} {
		if err := tb.Put(k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	in := lookupPath(t, fsys, ".kvault/keys/"+store.BinaryName("s/b"))
	h, err := fsys.OpenInode(in.ID, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Unlink(store.RootIno, "s"); err != nil {
		t.Fatal(err)
	}
	dir := lookupPath(t, fsys, "s")
	if _, err := fsys.Lookup(dir.ID, "b"); err != nil {
		t.Fatal(err)
	}
	// The path's inode shares the open file's data.
	h2, err := fsys.OpenInode(lookupPath(t, fsys, "s/b").ID, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if n, _ := h2.ReadAt(buf, 0); string(buf[:n]) != "new" {
		t.Errorf("s/b opened by its path reads %q, want the other inode's write %q", buf[:n], "new")
	}
	if err := h2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Unlink(dir.ID, "b"); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if v, ok := has(t, tb, "s/b"); ok {
		t.Errorf("rm s/b succeeded, yet s/b holds %q after the other handle closed", v)
	}
}

// A directory rename moves the keys under it that are no path (hd//x);
// one that exists under the target fails the rename with ErrNotEmpty
// (ENOTEMPTY), not the key column's UNIQUE constraint (EIO), and changes
// nothing. Without a collision they move with the rest.
func TestFSDirRenameHiddenKeyCollision(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-c.db")
	for _, k := range []string{"hd/f", "hd//x", "he//x"} {
		if err := tb.Put(k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	lookupPath(t, fsys, "hd")
	if _, err := lookupPathErr(fsys, "he"); err == nil {
		t.Fatal("he is shown as a directory")
	}
	before := allKeys(t, tb)
	err := fsys.RenameEntry(store.RootIno, "hd", store.RootIno, "he", 0)
	if !errors.Is(err, store.ErrNotEmpty) {
		t.Fatalf("mv hd he with he//x present: %v, want ErrNotEmpty", err)
	}
	if after := allKeys(t, tb); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("a refused rename changed the keys: %q -> %q", before, after)
	}
	if err := tb.Delete("he//x"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.RenameEntry(store.RootIno, "hd", store.RootIno, "he", 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"he/f", "he//x"} {
		if v, ok := has(t, tb, k); !ok || string(v) != "hd"+k[2:] {
			t.Errorf("%s holds %q (present %v) after mv hd he", k, v, ok)
		}
	}
	for _, k := range []string{"hd/f", "hd//x"} {
		if _, ok := has(t, tb, k); ok {
			t.Errorf("%s still there after mv hd he", k)
		}
	}
}

// An append whose write fails gives back the room it reserved: the size
// stays what was written, and a commit stores no zeros.
func TestFSAppendFailureKeepsSize(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-c.db")
	root := lookupPath(t, fsys, "")
	h, _, err := fsys.CreateFile(root.ID, "app.log", 0o644, 0, 0, os.O_RDWR|os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Append([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	// The spill's writes fail from now on (as on a full disk): swap in a
	// descriptor open only for reading, holding the same bytes.
	st := h.(*fsFile).st
	ro, err := os.CreateTemp(t.TempDir(), "ro")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.WriteString("abc"); err != nil {
		t.Fatal(err)
	}
	ro.Close()
	ro, err = os.Open(ro.Name())
	if err != nil {
		t.Fatal(err)
	}
	st.spillMu.Lock()
	fsys.mu.Lock()
	good := st.spill
	st.spill = ro
	fsys.mu.Unlock()
	st.spillMu.Unlock()
	if _, _, err := h.Append([]byte("defgh")); err == nil {
		t.Fatal("an append to a spill that refuses writes succeeded")
	}
	if n := h.Size(); n != 3 {
		t.Errorf("size %d after a failed append of 5 bytes to 3, want 3", n)
	}
	st.spillMu.Lock()
	fsys.mu.Lock()
	st.spill = good
	fsys.mu.Unlock()
	st.spillMu.Unlock()
	ro.Close()
	if _, _, err := h.Append([]byte("de")); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	v, _ := has(t, tb, "app.log")
	mustEqual(t, "value after a failed append", v, []byte("abcde"))
}
