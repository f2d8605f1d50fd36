package kohaku

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/store"
)

// fsOn opens a copy of a fixture's table and its file-system view.
func fsOn(t *testing.T, fixture string) (*Table, *tableFS, string) {
	t.Helper()
	watchdog(t, 2*time.Minute)
	path := kohakutest.CopyFixture(t, fixture)
	tb, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fsys := tb.FS().(*tableFS)
	t.Cleanup(func() {
		if err := fsys.Close(); err != nil {
			t.Errorf("close view: %v", err)
		}
		tb.Close()
	})
	return tb, fsys, path
}

// walk lists the whole tree through ReadDir in small batches (so that
// listings resume after cookies) and returns every file's path and inode.
func walk(t *testing.T, fsys store.FS) map[string]store.Inode {
	t.Helper()
	out := map[string]store.Inode{}
	var visit func(dir int64, prefix string)
	visit = func(dir int64, prefix string) {
		var after int64
		seen := map[string]bool{}
		for {
			ents, err := fsys.ReadDir(dir, after, 3)
			if err != nil {
				t.Fatalf("readdir %q: %v", prefix, err)
			}
			for _, e := range ents {
				if seen[e.Name] {
					t.Errorf("readdir %q: %s listed twice", prefix, e.Name)
				}
				seen[e.Name] = true
				p := prefix + e.Name
				in, err := fsys.Lookup(dir, e.Name)
				if err != nil {
					t.Fatalf("lookup %q: %v", p, err)
				}
				if in.ID != e.Inode.ID || in.Kind != e.Inode.Kind || in.Size != e.Inode.Size {
					t.Errorf("%s: listed as %+v, looked up as %+v", p, e.Inode, in)
				}
				if in.IsDir() {
					visit(in.ID, p+"/")
				} else {
					out[p] = in
				}
				after = e.Cookie
			}
			if len(ents) < 3 {
				return
			}
		}
	}
	visit(store.RootIno, "")
	return out
}

// shownAt is where the mount shows key.
func shownAt(key string, keys map[string][]byte) string {
	if parts, ok := store.PathParts(key); ok {
		shadowed := false
		for i := 1; i < len(parts); i++ {
			if _, isKey := keys[strings.Join(parts[:i], "/")]; isKey {
				shadowed = true
			}
		}
		if !shadowed {
			return key
		}
	}
	return store.ReservedDir + "/" + store.KeysDir + "/" + store.BinaryName(key)
}

// readFile reads a whole file through OpenInode.
func readFile(t *testing.T, fsys store.FS, ino int64) []byte {
	t.Helper()
	f, err := fsys.OpenInode(ino, os.O_RDONLY)
	if err != nil {
		t.Fatalf("open inode %d: %v", ino, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	p := make([]byte, 100_000)
	for off := int64(0); ; {
		n, err := f.ReadAt(p, off)
		buf.Write(p[:n])
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read inode %d at %d: %v", ino, off, err)
		}
	}
	return buf.Bytes()
}

func TestFSShowsEveryFixtureKey(t *testing.T) {
	for _, fx := range []string{"format-a.db", "format-b.db", "format-c.db"} {
		t.Run(fx, func(t *testing.T) {
			_, fsys, path := fsOn(t, fx)
			want := kohakutest.ReadAll(t, path, "kv")
			got := walk(t, fsys)
			if len(got) != len(want) {
				t.Errorf("%d files shown, %d keys", len(got), len(want))
			}
			for k, v := range want {
				p := shownAt(k, want)
				in, ok := got[p]
				if !ok {
					t.Errorf("key %q not shown at %s (files: %v)", k, p, keysOf(got))
					continue
				}
				if in.Size != int64(len(v)) || in.Mode != 0o644 || in.Nlink != 1 {
					t.Errorf("%s: size %d mode %o nlink %d, want %d 644 1", p, in.Size, in.Mode, in.Nlink, len(v))
				}
				if data := readFile(t, fsys, in.ID); !bytes.Equal(data, v) {
					t.Errorf("%s: read %d bytes, stored %d (differ)", p, len(data), len(v))
				}
			}
			// Lookups give the same inode numbers again.
			for p, in := range got {
				if again := lookupPath(t, fsys, p); again.ID != in.ID {
					t.Errorf("%s: inode %d, then %d", p, in.ID, again.ID)
				}
			}
		})
	}
}

func keysOf(m map[string]store.Inode) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// lookupPath resolves a slash-separated path from the root.
func lookupPath(t *testing.T, fsys store.FS, p string) store.Inode {
	t.Helper()
	in, err := lookupPathErr(fsys, p)
	if err != nil {
		t.Fatalf("lookup %s: %v", p, err)
	}
	return in
}

func lookupPathErr(fsys store.FS, p string) (store.Inode, error) {
	in, err := fsys.GetInode(store.RootIno)
	if err != nil || p == "" {
		return in, err
	}
	for _, name := range strings.Split(p, "/") {
		if in, err = fsys.Lookup(in.ID, name); err != nil {
			return in, err
		}
	}
	return in, nil
}

// writeNew creates dir/name (directories made as needed) with data and
// closes it.
func writeNew(t *testing.T, fsys store.FS, p string, data []byte) store.Inode {
	t.Helper()
	dir, name := filepath.Split(p)
	parent := lookupPath(t, fsys, "")
	for _, d := range strings.Split(strings.Trim(dir, "/"), "/") {
		if d == "" {
			continue
		}
		in, err := fsys.Lookup(parent.ID, d)
		if errors.Is(err, store.ErrNotFound) {
			in, err = fsys.Mkdir(parent.ID, d, 0o755, 0, 0)
		}
		if err != nil {
			t.Fatalf("mkdir %s: %v", d, err)
		}
		parent = in
	}
	f, in, err := fsys.CreateFile(parent.ID, name, 0o640, 1000, 1000, os.O_WRONLY)
	if err != nil {
		t.Fatalf("create %s: %v", p, err)
	}
	for off := 0; off < len(data); off += 4096 {
		if _, err := f.WriteAt(data[off:min(off+4096, len(data))], int64(off)); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", p, err)
	}
	return in
}

func TestFSCreateWriteReadBack(t *testing.T) {
	for _, fx := range []string{"format-a.db", "format-c.db"} {
		t.Run(fx, func(t *testing.T) {
			tb, fsys, path := fsOn(t, fx)
			schema := kohakutest.Schema(t, path)
			before := kohakutest.ReadAll(t, path, "kv")
			big := pattern(3<<20+17, 7)
			writeNew(t, fsys, "new/deep/big.bin", big)
			writeNew(t, fsys, "new/empty.bin", nil)
			in := writeNew(t, fsys, "top2.txt", []byte("hello"))
			if in.Mode != 0o640 || in.UID != 1000 {
				t.Errorf("new file mode %o uid %d, want 640 1000", in.Mode, in.UID)
			}
			after := kohakutest.ReadAll(t, path, "kv") // typeof checks, format A size
			for k, v := range map[string][]byte{"new/deep/big.bin": big, "new/empty.bin": {}, "top2.txt": []byte("hello")} {
				if !bytes.Equal(after[k], v) {
					t.Errorf("%s: stored %d bytes, wrote %d", k, len(after[k]), len(v))
				}
				if g, ok := kohakutest.GetLikeKohaku(t, path, "kv", []byte(k)); !ok || !bytes.Equal(g, v) {
					t.Errorf("%s: KohakuVault's get returns %d bytes (found %v)", k, len(g), ok)
				}
			}
			for k, v := range before {
				if !bytes.Equal(after[k], v) {
					t.Errorf("%q changed", k)
				}
			}
			if len(after) != len(before)+3 {
				t.Errorf("%d keys after, %d before + 3", len(after), len(before))
			}
			// Rewrite in place: the old value is copied in, a range changed.
			f, err := fsys.OpenInode(lookupPath(t, fsys, "new/deep/big.bin").ID, os.O_RDWR)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("XYZ"), 1<<20); err != nil {
				t.Fatal(err)
			}
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
			copy(big[1<<20:], "XYZ")
			if got, _ := kohakutest.GetLikeKohaku(t, path, "kv", []byte("new/deep/big.bin")); !bytes.Equal(got, big) {
				t.Error("after flush the stored value is not the written one")
			}
			if err := f.Truncate(10); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if got, _ := tb.Get("new/deep/big.bin"); !bytes.Equal(got, big[:10]) {
				t.Errorf("after truncate: %q", got)
			}
			kohakutest.ReadAll(t, path, "kv")
			if s := kohakutest.Schema(t, path); s != schema {
				t.Errorf("schema changed:\n%s\nwas\n%s", s, schema)
			}
		})
	}
}

func TestFSCreateIsVisibleAtOnce(t *testing.T) {
	_, fsys, path := fsOn(t, "format-b.db")
	f, _, err := fsys.CreateFile(store.RootIno, "fresh.txt", 0o644, 0, 0, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := kohakutest.GetLikeKohaku(t, path, "kv", []byte("fresh.txt")); !ok || len(v) != 0 {
		t.Errorf("after create: found %v, %d bytes; want an empty value", ok, len(v))
	}
	if _, err := f.WriteAt([]byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	if in, _ := f.Stat(); in.Size != 4 {
		t.Errorf("stat of the open file: size %d, want 4", in.Size)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if v, _ := kohakutest.GetLikeKohaku(t, path, "kv", []byte("fresh.txt")); string(v) != "data" {
		t.Errorf("after close: %q", v)
	}
	if _, _, err := fsys.CreateFile(store.RootIno, "fresh.txt", 0o644, 0, 0, os.O_WRONLY); !errors.Is(err, store.ErrExists) {
		t.Errorf("create of an existing key: %v, want ErrExists", err)
	}
}

func TestFSRename(t *testing.T) {
	tb, fsys, path := fsOn(t, "format-a.db")
	want := kohakutest.ReadAll(t, path, "kv")
	top := lookupPath(t, fsys, "top.txt")
	if err := fsys.RenameEntry(store.RootIno, "top.txt", lookupPath(t, fsys, "photos").ID, "top.txt", 0); err != nil {
		t.Fatal(err)
	}
	if in := lookupPath(t, fsys, "photos/top.txt"); in.ID != top.ID {
		t.Errorf("renamed file has inode %d, was %d", in.ID, top.ID)
	}
	// A directory: every key under it moves.
	if err := fsys.RenameEntry(store.RootIno, "photos", store.RootIno, "pics", 0); err != nil {
		t.Fatal(err)
	}
	got := kohakutest.ReadAll(t, path, "kv")
	for _, k := range []string{"pics/2024/a.jpg", "pics/2024/b.jpg", "pics/top.txt"} {
		old := strings.Replace(strings.Replace(k, "pics/top.txt", "top.txt", 1), "pics/", "photos/", 1)
		if !bytes.Equal(got[k], want[old]) {
			t.Errorf("%s: %d bytes, want %s's %d", k, len(got[k]), old, len(want[old]))
		}
	}
	for _, k := range []string{"photos/2024/a.jpg", "top.txt"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s still there", k)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d keys, want %d", len(got), len(want))
	}
	if _, err := lookupPathErr(fsys, "photos"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old directory: %v", err)
	}
	// NOREPLACE, EXCHANGE, into itself, over a non-empty directory.
	pics := lookupPath(t, fsys, "pics")
	if err := fsys.RenameEntry(pics.ID, "top.txt", store.RootIno, "empty.bin", store.RenameNoReplace); !errors.Is(err, store.ErrExists) {
		t.Errorf("NOREPLACE over a file: %v", err)
	}
	if err := fsys.RenameEntry(pics.ID, "top.txt", store.RootIno, "empty.bin", store.RenameExchange); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("EXCHANGE: %v", err)
	}
	if err := fsys.RenameEntry(store.RootIno, "pics", pics.ID, "x", 0); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("into itself: %v", err)
	}
	if err := fsys.RenameEntry(store.RootIno, "videos", store.RootIno, "pics", 0); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("over a non-empty directory: %v", err)
	}
	if err := fsys.RenameEntry(store.RootIno, "pics", store.RootIno, "top2", 0); err != nil {
		t.Fatal(err)
	}
	// Replacing a file.
	if err := fsys.RenameEntry(lookupPath(t, fsys, "top2").ID, "top.txt", store.RootIno, "empty.bin", 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := tb.Get("empty.bin"); !bytes.Equal(v, want["top.txt"]) {
		t.Errorf("replaced file holds %q", v)
	}
	// A key that is no path moves out of /.kvault/keys to a path.
	keys := lookupPath(t, fsys, ".kvault/keys")
	if err := fsys.RenameEntry(keys.ID, store.BinaryName("a//b"), store.RootIno, "ab", 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := tb.Get("ab"); !bytes.Equal(v, want["a//b"]) {
		t.Errorf("moved binary key holds %q", v)
	}
	kohakutest.ReadAll(t, path, "kv")
}

func TestFSUnlinkOpenFile(t *testing.T) {
	tb, fsys, path := fsOn(t, "format-c.db")
	in := lookupPath(t, fsys, "top.txt")
	f, err := fsys.OpenInode(in.ID, os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("CHANGED"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Unlink(store.RootIno, "top.txt"); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 7)
	if _, err := f.ReadAt(p, 0); err != nil || string(p) != "CHANGED" {
		t.Errorf("read after unlink: %q, %v", p, err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := tb.Exists("top.txt"); ok {
		t.Error("the unlinked file came back at close")
	}
	if _, ok := kohakutest.GetLikeKohaku(t, path, "kv", []byte("top.txt")); ok {
		t.Error("KohakuVault still finds the key")
	}
	if _, err := fsys.Lookup(store.RootIno, "top.txt"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lookup after unlink: %v", err)
	}
	if err := fsys.Unlink(store.RootIno, "top.txt"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second unlink: %v", err)
	}
	if err := fsys.Unlink(store.RootIno, "photos"); !errors.Is(err, store.ErrIsDir) {
		t.Errorf("unlink of a directory: %v", err)
	}
	// A key that is no path is removed through /.kvault/keys.
	if err := fsys.Unlink(keysIno, store.BinaryName("")); err != nil {
		t.Fatal(err)
	}
	if ok, _ := tb.Exists(""); ok {
		t.Error("the empty key is still there")
	}
}

func TestFSRenameOpenFile(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-b.db")
	in := lookupPath(t, fsys, "photos/2024/a.jpg")
	f, err := fsys.OpenInode(in.ID, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("moved"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fsys.RenameEntry(store.RootIno, "photos", store.RootIno, "p2", 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if v, _ := tb.Get("p2/2024/a.jpg"); string(v) != "moved" {
		t.Errorf("committed under the new key: %q", v)
	}
	if ok, _ := tb.Exists("photos/2024/a.jpg"); ok {
		t.Error("the old key came back")
	}
}

func TestFSDirectories(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-b.db")
	if err := fsys.Rmdir(store.RootIno, "photos"); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("rmdir photos: %v", err)
	}
	d, err := fsys.Mkdir(store.RootIno, "made", 0o700, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Mode != 0o700 || !d.IsDir() {
		t.Errorf("mkdir: %+v", d)
	}
	if _, err := fsys.Mkdir(store.RootIno, "made", 0o700, 0, 0); !errors.Is(err, store.ErrExists) {
		t.Errorf("mkdir twice: %v", err)
	}
	if _, err := fsys.Mkdir(store.RootIno, "photos", 0o700, 0, 0); !errors.Is(err, store.ErrExists) {
		t.Errorf("mkdir over a directory of keys: %v", err)
	}
	if _, err := fsys.Mkdir(store.RootIno, "top.txt", 0o700, 0, 0); !errors.Is(err, store.ErrExists) {
		t.Errorf("mkdir over a file: %v", err)
	}
	sub, err := fsys.Mkdir(d.ID, "sub", 0o755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := walk(t, fsys); len(got) != 14 {
		t.Errorf("%d files after mkdir, want the 14 keys", len(got))
	}
	ents, err := fsys.ReadDir(store.RootIno, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "made") || names[0] != store.ReservedDir {
		t.Errorf("root lists %v", names)
	}
	if err := fsys.Rmdir(store.RootIno, "made"); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("rmdir of a directory with a made one: %v", err)
	}
	f, _, err := fsys.CreateFile(sub.ID, "f", 0o644, 0, 0, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if ok, _ := tb.Exists("made/sub/f"); !ok {
		t.Error("file in a made directory not stored")
	}
	if err := fsys.Unlink(sub.ID, "f"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Rmdir(d.ID, "sub"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Rmdir(store.RootIno, "made"); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Lookup(store.RootIno, "made"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after rmdir: %v", err)
	}
	// rm -r of a directory of keys: its last unlink leaves it gone, and its
	// rmdir still succeeds.
	v := lookupPath(t, fsys, "videos")
	if err := fsys.Unlink(v.ID, "clip.mp4"); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Rmdir(store.RootIno, "videos"); err != nil {
		t.Errorf("rmdir of an emptied directory: %v", err)
	}
	if err := fsys.Rmdir(store.RootIno, ".kvault"); !errors.Is(err, store.ErrPermission) {
		t.Errorf("rmdir .kvault: %v", err)
	}
}

func TestFSShadowedKey(t *testing.T) {
	tb, fsys, path := fsOn(t, "format-c.db")
	kohakutest.PutLikeKohaku(t, path, "kv", kohakutest.FormatBC, []byte("top.txt/inner"), []byte("inner"))
	in := lookupPath(t, fsys, "top.txt")
	if in.IsDir() {
		t.Fatal("top.txt is a directory; the file must win")
	}
	got := walk(t, fsys)
	p := ".kvault/keys/" + store.BinaryName("top.txt/inner")
	if _, ok := got[p]; !ok {
		t.Errorf("top.txt/inner is not shown at %s", p)
	}
	if data := readFile(t, fsys, lookupPath(t, fsys, p).ID); string(data) != "inner" {
		t.Errorf("read %q", data)
	}
	// Without the file, the key shows at its path.
	if err := tb.Delete("top.txt"); err != nil {
		t.Fatal(err)
	}
	if data := readFile(t, fsys, lookupPath(t, fsys, "top.txt/inner").ID); string(data) != "inner" {
		t.Errorf("read %q", data)
	}
}

func TestFSRefusals(t *testing.T) {
	_, fsys, _ := fsOn(t, "format-b.db")
	in := lookupPath(t, fsys, "top.txt")
	if _, err := fsys.Link(in.ID, store.RootIno, "l"); !errors.Is(err, store.ErrPermission) {
		t.Errorf("link: %v", err)
	}
	if _, err := fsys.Symlink(store.RootIno, "s", "top.txt", 0, 0); !errors.Is(err, store.ErrPermission) {
		t.Errorf("symlink: %v", err)
	}
	if _, err := fsys.Mknod(store.RootIno, "fifo", store.KindFIFO, 0o644, 0, 0, 0); !errors.Is(err, store.ErrPermission) {
		t.Errorf("mknod fifo: %v", err)
	}
	if err := fsys.SetXattr(in.ID, "user.x", []byte("1"), 0); !errors.Is(err, store.ErrNotSupported) {
		t.Errorf("setxattr: %v", err)
	}
	if err := fsys.RemoveXattr(in.ID, "user.x"); !errors.Is(err, store.ErrNotSupported) {
		t.Errorf("removexattr: %v", err)
	}
	if _, err := fsys.GetXattr(in.ID, "user.x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("getxattr: %v", err)
	}
	if names, err := fsys.ListXattr(in.ID); err != nil || len(names) != 0 {
		t.Errorf("listxattr: %v %v", names, err)
	}
	if _, _, err := fsys.CreateFile(keysIno, "x", 0o644, 0, 0, os.O_WRONLY); !errors.Is(err, store.ErrPermission) {
		t.Errorf("create in /.kvault/keys: %v", err)
	}
	f, err := fsys.OpenInode(in.ID, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("x"), MaxValueSize); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("write past the limit: %v", err)
	}
	if err := f.Truncate(MaxValueSize + 1); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("truncate past the limit: %v", err)
	}
	// The header policy of B/C refuses the commit.
	magic := append([]byte{0x89, 0x4B}, make([]byte, 20)...)
	if _, err := f.WriteAt(magic, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("flush of a header-magic value: %v", err)
	}
	st, err := fsys.StatFS()
	if err != nil || st.Inodes != 14 || st.PageSize == 0 || st.DBBytes == 0 {
		t.Errorf("statfs: %+v %v", st, err)
	}
}

func TestFSAttributesInMemory(t *testing.T) {
	_, fsys, path := fsOn(t, "format-a.db")
	fi, _ := os.Stat(path)
	in := lookupPath(t, fsys, "top.txt")
	if in.Mtime != fi.ModTime().UnixNano() {
		t.Errorf("mtime %d, want the file's %d", in.Mtime, fi.ModTime().UnixNano())
	}
	mode, uid, mt := uint32(0o600), uint32(42), int64(1_000_000_000_123)
	got, err := fsys.SetAttr(in.ID, store.SetAttr{Mode: &mode, UID: &uid, Mtime: &mt})
	if err != nil {
		t.Fatal(err)
	}
	if got.Mode != 0o600 || got.UID != 42 || got.Mtime != mt {
		t.Errorf("after setattr: %+v", got)
	}
	size := int64(3)
	if got, err = fsys.SetAttr(in.ID, store.SetAttr{Size: &size}); err != nil || got.Size != 3 {
		t.Fatalf("truncate: %+v %v", got, err)
	}
	if v, _ := kohakutest.GetLikeKohaku(t, path, "kv", []byte("top.txt")); len(v) != 3 {
		t.Errorf("stored %d bytes after truncate", len(v))
	}
	kohakutest.ReadAll(t, path, "kv") // format A size kept
}

func TestFSGenerationFollowsOtherWriters(t *testing.T) {
	_, fsys, path := fsOn(t, "format-b.db")
	in := lookupPath(t, fsys, "top.txt")
	gens, err := fsys.Generations([]int64{in.ID})
	if err != nil {
		t.Fatal(err)
	}
	kohakutest.PutLikeKohaku(t, path, "kv", kohakutest.FormatBC, []byte("top.txt"), []byte("from python"))
	again, err := fsys.Generations([]int64{in.ID})
	if err != nil {
		t.Fatal(err)
	}
	if again[in.ID] == gens[in.ID] {
		t.Errorf("generation %d unchanged after another process wrote", gens[in.ID])
	}
	if data := readFile(t, fsys, in.ID); string(data) != "from python" {
		t.Errorf("read %q", data)
	}
	writeNew(t, fsys, "g.txt", []byte("1"))
	g1 := lookupPath(t, fsys, "g.txt").Generation
	f, _ := fsys.OpenInode(lookupPath(t, fsys, "g.txt").ID, os.O_WRONLY)
	f.WriteAt([]byte("2"), 0)
	f.Close()
	if g2 := lookupPath(t, fsys, "g.txt").Generation; g2 == g1 {
		t.Error("generation unchanged after a write through the view")
	}
}

func TestFSReadOnly(t *testing.T) {
	watchdog(t, time.Minute)
	path := kohakutest.CopyFixture(t, "format-c.db")
	tb, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	fsys := tb.FS()
	if !fsys.ReadOnly() {
		t.Fatal("not read-only")
	}
	in := lookupPath(t, fsys, "top.txt")
	if _, err := fsys.OpenInode(in.ID, os.O_WRONLY); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("open for writing: %v", err)
	}
	if _, _, err := fsys.CreateFile(store.RootIno, "n", 0o644, 0, 0, os.O_WRONLY); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("create: %v", err)
	}
	if err := fsys.Unlink(store.RootIno, "top.txt"); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("unlink: %v", err)
	}
	if err := fsys.RenameEntry(store.RootIno, "top.txt", store.RootIno, "x", 0); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("rename: %v", err)
	}
	if _, err := fsys.Mkdir(store.RootIno, "d", 0o755, 0, 0); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("mkdir: %v", err)
	}
	m := uint32(0o600)
	if _, err := fsys.SetAttr(in.ID, store.SetAttr{Mode: &m}); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("chmod: %v", err)
	}
	if data := readFile(t, fsys, in.ID); len(data) == 0 {
		t.Error("cannot read")
	}
}

// TestFSConcurrentHandles runs handles of one file, renames of it and
// of its directory, stats and listings at once (for the race detector),
// then checks the last commit holds what the handles wrote.
func TestFSConcurrentHandles(t *testing.T) {
	tb, fsys, path := fsOn(t, "format-c.db")
	writeNew(t, fsys, "d/f.bin", bytes.Repeat([]byte{'a'}, 1000))
	ino := lookupPath(t, fsys, "d/f.bin").ID
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := fsys.OpenInode(ino, os.O_RDWR)
			if err != nil {
				errs <- err
				return
			}
			for i := 0; i < 50; i++ {
				if _, err := f.WriteAt([]byte{byte('0' + w)}, int64(w*100+i)); err != nil {
					errs <- err
				}
				p := make([]byte, 10)
				if _, err := f.ReadAt(p, int64(w*100)); err != nil && err != io.EOF {
					errs <- err
				}
				if i%10 == 0 {
					if err := f.Flush(); err != nil {
						errs <- err
					}
				}
			}
			if err := f.Close(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		names := []string{"d", "e"}
		for i := 0; i < 20; i++ {
			if err := fsys.RenameEntry(store.RootIno, names[i%2], store.RootIno, names[(i+1)%2], 0); err != nil {
				errs <- err
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			if _, err := fsys.GetInode(ino); err != nil && !errors.Is(err, store.ErrNotFound) {
				errs <- err
			}
			if _, err := fsys.ReadDir(store.RootIno, 0, 100); err != nil {
				errs <- err
			}
			if _, err := fsys.Generations([]int64{ino}); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := tb.Get("d/f.bin")
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{'a'}, 1000)
	for w := 0; w < 4; w++ {
		for i := 0; i < 50; i++ {
			want[w*100+i] = byte('0' + w)
		}
	}
	if !bytes.Equal(got, want) {
		t.Errorf("stored value differs from what the handles wrote:\n%q", got)
	}
	if ok, _ := tb.Exists("e/f.bin"); ok {
		t.Error("a commit wrote under the directory's other name")
	}
	kohakutest.ReadAll(t, path, "kv")
}

// TestFSRemovedEntriesBounded removes more files than the view remembers
// removed entries for, listing on after each batch as rm -r does: the
// listing never fails or skips, and the memory of removed entries stays
// bounded.
func TestFSRemovedEntriesBounded(t *testing.T) {
	tb, fsys, _ := fsOn(t, "format-b.db")
	const n = maxRemoved + 500
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{Key: fmt.Sprintf("many/%05d", i), Value: []byte("x")}
	}
	if err := tb.PutBatch(items); err != nil {
		t.Fatal(err)
	}
	dir := lookupPath(t, fsys, "many")
	removed := 0
	var after int64
	for {
		ents, err := fsys.ReadDir(dir.ID, after, 256)
		if err != nil {
			t.Fatalf("readdir after %d removals: %v", removed, err)
		}
		for _, e := range ents {
			if err := fsys.Unlink(dir.ID, e.Name); err != nil {
				t.Fatal(err)
			}
			removed++
			after = e.Cookie
		}
		if len(ents) < 256 {
			break
		}
	}
	if removed != n {
		t.Errorf("removed %d of %d", removed, n)
	}
	if got, _ := tb.Len(); got != 14 {
		t.Errorf("%d keys left, want the fixture's 14", got)
	}
	fsys.mu.Lock()
	known := len(fsys.byIno)
	fsys.mu.Unlock()
	if known > maxRemoved+100 {
		t.Errorf("%d entries remembered after removing %d files", known, n)
	}
}

// TestFSAppend: an append lands at the end and is committed at once.
func TestFSAppend(t *testing.T) {
	tb, fsys, path := fsOn(t, "format-a.db")
	in := lookupPath(t, fsys, "top.txt")
	old, _ := tb.Get("top.txt")
	f, err := fsys.OpenInode(in.ID, os.O_WRONLY|os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, s := range []string{"+one", "+two"} {
		n, off, err := f.Append([]byte(s))
		if err != nil || n != len(s) {
			t.Fatalf("append %q: %d, %v", s, n, err)
		}
		if want := int64(len(old) + 4*i); off != want {
			t.Errorf("append %q went to %d, want %d", s, off, want)
		}
		if v, _ := kohakutest.GetLikeKohaku(t, path, "kv", []byte("top.txt")); string(v) != string(old)+"+one+two"[:4*(i+1)] {
			t.Errorf("after append %d KohakuVault reads %q", i, v)
		}
	}
	kohakutest.ReadAll(t, path, "kv")
}
