package vault

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The committed fixtures testdata/formatN.db are small vaults of each
// released format version. A build that can no longer read one has
// broken the file format. KVAULT_WRITE_FIXTURE=1 writes the fixture of
// the current format (FormatVersion) from fixtureValues; the fixtures of
// older formats are never rewritten.

const fixturePath = "testdata/format1.db"

// fixturePathOf is the fixture of format version n.
func fixturePathOf(n int) string { return fmt.Sprintf("testdata/format%d.db", n) }

// fixtureValues are the keys and values stored in the fixture.
var fixtureValues = map[string][]byte{
	"hello.txt":             []byte("hello, kvault\n"),
	"video:456":             []byte("frame 456"),
	"clips/2024/a.mp4":      genBytes(1, 3*4096+1000), // four chunks, the last partial
	"clips/2024/empty":      {},
	"photos/x/y/z.jpg":      genBytes(2, 5000),
	"\x00\xffbinary\x01key": []byte("binary key"),
	"a//b":                  []byte("not a path"),
	"sparse.bin":            fixtureSparse(),
}

// fixtureSparse is "head", a hole of four chunks, then "tail".
func fixtureSparse() []byte {
	b := make([]byte, 5*4096+4)
	copy(b, "head")
	copy(b[5*4096:], "tail")
	return b
}

func writeFixture(t *testing.T, path string) {
	os.Remove(path)
	o := DefaultOptions()
	o.ChunkSize, o.PageSize = 4096, 1024
	v, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	for k, val := range fixtureValues {
		if k == "sparse.bin" {
			f, err := v.OpenFile(k, os.O_RDWR|os.O_CREATE, 0o640)
			if err != nil {
				t.Fatal(err)
			}
			for _, off := range []int64{0, 5 * 4096} {
				if _, err := f.WriteAt(val[off:off+4], off); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mustPut(t, v, k, val)
	}
	if _, err := v.Mkdir(RootIno, "emptydir", 0o750, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Symlink(RootIno, "link", "hello.txt", 1000, 1000); err != nil {
		t.Fatal(err)
	}
	st, err := v.Stat("clips/2024/a.mp4")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetXattr(st.ID, "user.mime", []byte("video/mp4"), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			t.Fatalf("%s%s left after Close", path, suffix)
		}
	}
}

func TestFormat1Fixture(t *testing.T) { testFixture(t, 1) }

// TestFormat2Fixture: format 2 binds each chunk's checksum to its place.
func TestFormat2Fixture(t *testing.T) { testFixture(t, 2) }

func testFixture(t *testing.T, version int) {
	fixturePath := fixturePathOf(version)
	if os.Getenv("KVAULT_WRITE_FIXTURE") == "1" && version == FormatVersion {
		writeFixture(t, fixturePath)
		t.Logf("wrote %s: %d bytes", fixturePath, fileSize(fixturePath))
	}
	data, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatalf("the format %d fixture is missing (KVAULT_WRITE_FIXTURE=1 writes the current one): %v", version, err)
	}
	if len(data) > 100<<10 {
		t.Errorf("the fixture is %d bytes; keep it under 100 KiB", len(data))
	}
	// Work on a copy: opening writes to the file (and its -wal).
	path := filepath.Join(t.TempDir(), filepath.Base(fixturePath))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path, true)
	var got int
	if err := db.QueryRow(`SELECT value FROM kvault_meta WHERE key = 'format'`).Scan(&got); err != nil || got != version {
		t.Fatalf("fixture format = %d, %v; want %d", got, err, version)
	}
	db.Close()

	v, err := Open(path, nil) // default options: other chunk and page sizes
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := []string{"link"} // a symlink is listed, though it has no value
	for k := range fixtureValues {
		want = append(want, k)
	}
	keyOrder(want)
	if got := allKeys(t, v, ""); !slices.Equal(got, want) {
		t.Fatalf("keys %q, want %q", got, want)
	}
	if n, err := v.Len(); err != nil || n != len(fixtureValues)+1 { // the symlink is a key too
		t.Fatalf("Len = %d, %v; want %d", n, err, len(fixtureValues)+1)
	}
	for k, val := range fixtureValues {
		if got := mustGet(t, v, k); !bytes.Equal(got, val) {
			t.Fatalf("Get(%q) differs", k)
		}
		var buf bytes.Buffer
		if _, err := v.GetTo(k, &buf); err != nil || !bytes.Equal(buf.Bytes(), val) {
			t.Fatalf("GetTo(%q): %v", k, err)
		}
		f, err := v.Open(k)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, len(val)+10)
		if n, err := f.ReadAt(p, 0); n != len(val) || err != io.EOF || !bytes.Equal(p[:n], val) {
			t.Fatalf("ReadAt(%q) = %d, %v", k, n, err)
		}
		f.Close()
		if st, err := v.Stat(k); err != nil || st.Kind != KindFile || st.ChunkSize != 4096 || st.Size != int64(len(val)) {
			t.Fatalf("Stat(%q) = %+v, %v", k, st, err)
		}
	}
	if st, err := v.Stat("sparse.bin"); err != nil || st.Mode != 0o640 {
		t.Fatalf("sparse.bin mode %o, %v", st.Mode, err)
	}
	if st, err := v.Stat("emptydir"); err != nil || st.Kind != KindDir || st.Mode != 0o750 || st.UID != 1000 {
		t.Fatalf("emptydir = %+v, %v", st, err)
	}
	if st, err := v.Stat("link"); err != nil || st.Kind != KindSymlink || st.Target != "hello.txt" {
		t.Fatalf("link = %+v, %v", st, err)
	}
	st, _ := v.Stat("clips/2024/a.mp4")
	if x, err := v.GetXattr(st.ID, "user.mime"); err != nil || string(x) != "video/mp4" {
		t.Fatalf("xattr = %q, %v", x, err)
	}
	var damage []Damage
	checked, err := v.Verify(func(d Damage) { damage = append(damage, d) })
	if err != nil || len(damage) != 0 {
		t.Fatalf("Verify: %+v, %v", damage, err)
	}
	// hello 1, video 1, a.mp4 4, z.jpg 2, the binary key 1, a//b 1,
	// sparse.bin 2 (its middle is a hole), empty 0.
	if checked != 12 {
		t.Errorf("Verify checked %d chunks, want 12", checked)
	}

	// The old file takes new writes beside its old data.
	mustPut(t, v, "clips/2024/b.mp4", []byte("new"))
	if err := v.Rename("clips", "moved"); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, v, "moved/2024/a.mp4"); !bytes.Equal(got, fixtureValues["clips/2024/a.mp4"]) {
		t.Fatal("moved value differs")
	}
	if err := v.Delete("hello.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get("hello.txt"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, path)
}
