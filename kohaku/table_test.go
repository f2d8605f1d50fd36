package kohaku

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/store"
)

// keys and values KohakuVault allows: the empty key, a non-UTF-8 key, an
// empty value, a value over a page and over a MiB.
var roundTrip = []struct {
	key   string
	value []byte
}{
	{"", []byte("empty key")},
	{"\xff\x00bin\x89", []byte("binary key")},
	{"empty/value", []byte{}},
	{"clips/a.mp4", pattern(3<<20, 1)},
	{"page", pattern(40_000, 2)},
	{"header-ok-short", []byte{0x89, 0x4B, 1, 2, 3, 4, 5, 6, 7}}, // 9 bytes: never a header
}

func TestPutGetRoundTrip(t *testing.T) {
	watchdog(t, 2*time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			before := fileState(t, tb.Path())
			for _, c := range roundTrip {
				if err := tb.Put(c.key, c.value); err != nil {
					t.Fatalf("Put %q: %v", c.key, err)
				}
			}
			for _, c := range roundTrip {
				got, err := tb.Get(c.key)
				if err != nil {
					t.Fatalf("Get %q: %v", c.key, err)
				}
				mustEqual(t, "Get "+c.key, got, c.value)
				kv, ok := kohakuGet(t, tb.Path(), f, c.key)
				if !ok {
					t.Fatalf("KohakuVault's SELECT does not find %q", c.key)
				}
				mustEqual(t, "KohakuVault read of "+c.key, kv, c.value)
				if n, err := tb.Size(c.key); err != nil || n != int64(len(c.value)) {
					t.Fatalf("Size %q = %d, %v; want %d", c.key, n, err, len(c.value))
				}
				if ok, err := tb.Exists(c.key); !ok || err != nil {
					t.Fatalf("Exists %q = %v, %v", c.key, ok, err)
				}
			}
			// An empty value is a zero-length BLOB, not NULL.
			var typ string
			var n int
			if err := rawDB(t, tb.Path()).QueryRow(`SELECT typeof(value), length(value) FROM kv WHERE key = ?1`, []byte("empty/value")).Scan(&typ, &n); err != nil || typ != "blob" || n != 0 {
				t.Fatalf("empty value stored as %s of %d bytes (%v)", typ, n, err)
			}
			// Put nil is the empty value too.
			if err := tb.Put("nil", nil); err != nil {
				t.Fatal(err)
			}
			if v, ok := kohakuGet(t, tb.Path(), f, "nil"); !ok || len(v) != 0 {
				t.Fatalf("nil value: %v %v", v, ok)
			}
			if n, err := tb.Len(); err != nil || n != int64(len(roundTrip)+1) {
				t.Fatalf("Len = %d, %v", n, err)
			}
			// Overwrite keeps one row.
			if err := tb.Put("page", []byte("new")); err != nil {
				t.Fatal(err)
			}
			if v, _ := kohakuGet(t, tb.Path(), f, "page"); string(v) != "new" {
				t.Fatalf("after overwrite: %q", v)
			}
			if n, _ := tb.Len(); n != int64(len(roundTrip)+1) {
				t.Fatalf("Len after overwrite = %d", n)
			}
			// Absent keys.
			if _, err := tb.Get("nope"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Get absent: %v", err)
			}
			if _, err := tb.Size("nope"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Size absent: %v", err)
			}
			if ok, err := tb.Exists("nope"); ok || err != nil {
				t.Fatalf("Exists absent: %v %v", ok, err)
			}
			if err := tb.Delete("nope"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Delete absent: %v", err)
			}
			if err := tb.Delete(""); err != nil {
				t.Fatal(err)
			}
			if _, ok := kohakuGet(t, tb.Path(), f, ""); ok {
				t.Fatal("deleted key still there")
			}
			if after := fileState(t, tb.Path()); after != before {
				t.Fatalf("file changed:\n%s\nthen\n%s", before, after)
			}
		})
	}
}

// TestSizeColumnChecked: in format A a size column that disagrees with
// the value (KohakuVault would trust it) is ErrCorrupt, never a wrong size.
func TestSizeColumnChecked(t *testing.T) {
	tb := openTable(t, FormatA)
	if err := tb.Put("k", []byte("12345")); err != nil {
		t.Fatal(err)
	}
	if _, err := rawDB(t, tb.Path()).Exec(`UPDATE kv SET size = 9`); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Size("k"); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Size: %v, want ErrCorrupt", err)
	}
	if _, err := tb.GetTo("k", io.Discard); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("GetTo: %v, want ErrCorrupt", err)
	}
}

func TestReadAtGetTo(t *testing.T) {
	watchdog(t, 2*time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			val := pattern(5<<20+123, 3)
			if err := tb.Put("v", val); err != nil {
				t.Fatal(err)
			}
			for _, r := range [][2]int{{0, 1}, {1 << 20, 2 << 20}, {len(val) - 10, len(val)}, {0, len(val)}} {
				p := make([]byte, r[1]-r[0])
				n, err := tb.ReadAt("v", p, int64(r[0]))
				if err != nil || n != len(p) {
					t.Fatalf("ReadAt %v: %d, %v", r, n, err)
				}
				mustEqual(t, "ReadAt", p, val[r[0]:r[1]])
			}
			p := make([]byte, 100)
			if n, err := tb.ReadAt("v", p, int64(len(val)-40)); n != 40 || err != io.EOF {
				t.Fatalf("ReadAt over the end: %d, %v", n, err)
			}
			if n, err := tb.ReadAt("v", p, int64(len(val))+5); n != 0 || err != io.EOF {
				t.Fatalf("ReadAt past the end: %d, %v", n, err)
			}
			if _, err := tb.ReadAt("v", p, -1); !errors.Is(err, store.ErrInvalidArgument) {
				t.Fatalf("ReadAt -1: %v", err)
			}
			if _, err := tb.ReadAt("nope", p, 0); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("ReadAt absent: %v", err)
			}
			var buf bytes.Buffer
			if n, err := tb.GetTo("v", &buf); err != nil || n != int64(len(val)) {
				t.Fatalf("GetTo: %d, %v", n, err)
			}
			mustEqual(t, "GetTo", buf.Bytes(), val)
			if err := tb.Put("e", nil); err != nil {
				t.Fatal(err)
			}
			if n, err := tb.GetTo("e", &buf); n != 0 || err != nil {
				t.Fatalf("GetTo empty: %d, %v", n, err)
			}
			if _, err := tb.GetTo("nope", &buf); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("GetTo absent: %v", err)
			}
		})
	}
}

func TestHeaderPolicy(t *testing.T) {
	watchdog(t, time.Minute)
	magic := append([]byte{0x89, 0x4B}, pattern(20, 4)...)
	encoded := append([]byte{0x89, 0x4B, 1, 6, 0, 0, 0, 0, 0x56, 0x4B}, "héllo"...)
	t.Run("BC refuses", func(t *testing.T) {
		tb := openTable(t, FormatBC)
		var before string
		// A valid header (as KohakuVault stores a str) is KohakuVault's
		// own kind of value: it is stored, and read back as stored.
		if err := tb.Put("enc", encoded); err != nil {
			t.Fatalf("Put of a valid KohakuVault header: %v", err)
		}
		if v, _ := kohakuGet(t, tb.Path(), FormatBC, "enc"); !bytes.Equal(v, encoded) {
			t.Fatalf("a valid header read back as %x", v)
		}
		if err := tb.Delete("enc"); err != nil {
			t.Fatal(err)
		}
		before = fileState(t, tb.Path())
		badVersion := append([]byte{0x89, 0x4B, 2}, encoded[3:]...)
		reserved := append(append([]byte{}, encoded[:5]...), append([]byte{1}, encoded[6:]...)...)
		for _, v := range [][]byte{magic, magic[:10], badVersion, reserved} {
			if err := tb.Put("m", v); !errors.Is(err, store.ErrInvalidArgument) || !bytes.Contains([]byte(err.Error()), []byte("kvaultfs migrate")) {
				t.Fatalf("Put %x: %v, want ErrInvalidArgument pointing to migrate", v[:4], err)
			}
			if err := tb.PutReader("m", bytes.NewReader(v), int64(len(v))); !errors.Is(err, store.ErrInvalidArgument) {
				t.Fatalf("PutReader: %v", err)
			}
			if err := tb.PutReader("m", bytes.NewReader(v), -1); !errors.Is(err, store.ErrInvalidArgument) {
				t.Fatalf("PutReader unknown size: %v", err)
			}
			if err := tb.PutBatch([]Item{{Key: "ok", Value: []byte("x")}, {Key: "m", Value: v}}); !errors.Is(err, store.ErrInvalidArgument) {
				t.Fatalf("PutBatch: %v", err)
			}
		}
		// A big streamed value is refused before anything is written.
		big := &failing{r: io.MultiReader(bytes.NewReader(magic), &zeros{3 << 20}), err: errors.New("read too far")}
		if err := tb.PutReader("m", big, int64(len(magic))+3<<20); !errors.Is(err, store.ErrInvalidArgument) {
			t.Fatalf("PutReader big: %v", err)
		}
		if n, _ := tb.Len(); n != 0 {
			t.Fatalf("%d keys written by refused puts", n)
		}
		if after := fileState(t, tb.Path()); after != before {
			t.Fatal("file changed by refused puts")
		}
	})
	t.Run("A stores raw", func(t *testing.T) {
		tb := openTable(t, FormatA)
		if err := tb.Put("m", magic); err != nil {
			t.Fatal(err)
		}
		if err := tb.PutReader("e", bytes.NewReader(encoded), int64(len(encoded))); err != nil {
			t.Fatal(err)
		}
		v, _ := kohakuGet(t, tb.Path(), FormatA, "m")
		mustEqual(t, "A raw", v, magic)
		v, _ = kohakuGet(t, tb.Path(), FormatA, "e")
		mustEqual(t, "A raw", v, encoded)
	})
	t.Run("BC reads stored bytes verbatim", func(t *testing.T) {
		tb := openTable(t, FormatBC)
		// As KohakuVault 0.7+ stores the str "héllo".
		if _, err := rawDB(t, tb.Path()).Exec(`INSERT INTO kv(key, value) VALUES (?1, ?2)`, []byte("s"), encoded); err != nil {
			t.Fatal(err)
		}
		v, err := tb.Get("s")
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "header kept", v, encoded)
	})
}

func TestRename(t *testing.T) {
	watchdog(t, time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			before := fileState(t, tb.Path())
			a, b := pattern(2000, 5), pattern(30, 6)
			if err := tb.PutBatch([]Item{{Key: "a", Value: a}, {Key: "b", Value: b}}); err != nil {
				t.Fatal(err)
			}
			db := rawDB(t, tb.Path())
			var id0 int64
			if err := db.QueryRow(`SELECT rowid FROM kv WHERE key = ?1`, []byte("a")).Scan(&id0); err != nil {
				t.Fatal(err)
			}
			if err := tb.Rename("a", "b", false); !errors.Is(err, store.ErrExists) {
				t.Fatalf("onto existing: %v", err)
			}
			if err := tb.Rename("zz", "c", true); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("absent: %v", err)
			}
			if err := tb.Rename("a", "a", false); err != nil {
				t.Fatalf("to itself: %v", err)
			}
			if err := tb.Rename("a", "c", false); err != nil {
				t.Fatal(err)
			}
			var id1 int64
			if err := db.QueryRow(`SELECT rowid FROM kv WHERE key = ?1`, []byte("c")).Scan(&id1); err != nil || id1 != id0 {
				t.Fatalf("rowid %d -> %d (%v)", id0, id1, err)
			}
			if err := tb.Rename("c", "b", true); err != nil {
				t.Fatal(err)
			}
			v, ok := kohakuGet(t, tb.Path(), f, "b")
			if !ok {
				t.Fatal("b missing after replace")
			}
			mustEqual(t, "renamed", v, a)
			for _, k := range []string{"a", "c"} {
				if _, ok := kohakuGet(t, tb.Path(), f, k); ok {
					t.Fatalf("%s still present", k)
				}
			}
			if n, _ := tb.Len(); n != 1 {
				t.Fatalf("Len %d", n)
			}
			if after := fileState(t, tb.Path()); after != before {
				t.Fatal("file changed")
			}
		})
	}
}

func TestPutBatch(t *testing.T) {
	watchdog(t, time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			if err := tb.Put("old", []byte("x")); err != nil {
				t.Fatal(err)
			}
			items := []Item{{Key: "a", Value: []byte("1")}, {Key: "b", Value: nil}, {Key: "old", Delete: true}, {Key: "gone", Delete: true}, {Key: "a", Value: []byte("22")}}
			if err := tb.PutBatch(items); err != nil {
				t.Fatal(err)
			}
			if v, _ := kohakuGet(t, tb.Path(), f, "a"); string(v) != "22" {
				t.Fatalf("a = %q", v)
			}
			if v, ok := kohakuGet(t, tb.Path(), f, "b"); !ok || len(v) != 0 {
				t.Fatalf("b = %q %v", v, ok)
			}
			if _, ok := kohakuGet(t, tb.Path(), f, "old"); ok {
				t.Fatal("old not deleted")
			}
			if err := tb.PutBatch(nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReadOnlyOpen(t *testing.T) {
	path := newFile(t, FormatBC, true)
	tb, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if !tb.ReadOnly() {
		t.Fatal("ReadOnly() false")
	}
	for name, err := range map[string]error{
		"Put":       tb.Put("k", []byte("v")),
		"PutReader": tb.PutReader("k", bytes.NewReader(nil), 0),
		"PutBatch":  tb.PutBatch([]Item{{Key: "k"}}),
		"Delete":    tb.Delete("k"),
		"Rename":    tb.Rename("k", "l", true),
		"Optimize":  tb.Optimize(),
	} {
		if !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("%s: %v, want ErrReadOnly", name, err)
		}
	}
	if _, err := tb.Get("k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	path := newFile(t, FormatBC, true)
	if _, err := Open(path, Options{Table: "kohakuvault_meta"}); err == nil {
		t.Fatal("opened a table that is not KohakuVault-shaped")
	}
	tb, err := Open(path, Options{Table: "kv"})
	if err != nil {
		t.Fatal(err)
	}
	if tb.Name() != "kv" || tb.Format() != FormatBC {
		t.Fatalf("Name %q Format %v", tb.Name(), tb.Format())
	}
	tb.Close()
	if _, err := tb.Get("x"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, err := Open(path+".missing", Options{}); err == nil {
		t.Fatal("opened a missing file")
	}
}

// TestOptimizeKeepsFile: VACUUM keeps the schema, page size, journal mode
// and every value, in both journal modes.
func TestOptimizeKeepsFile(t *testing.T) {
	watchdog(t, time.Minute)
	for _, wal := range []bool{true, false} {
		path := newFile(t, FormatA, wal)
		tb, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		before := fileState(t, path)
		for i := range 20 {
			if err := tb.Put(string(rune('a'+i)), pattern(50_000, byte(i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 10 {
			if err := tb.Delete(string(rune('a' + i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := tb.Optimize(); err != nil {
			t.Fatal(err)
		}
		for i := 10; i < 20; i++ {
			v, _ := kohakuGet(t, path, FormatA, string(rune('a'+i)))
			mustEqual(t, "after VACUUM", v, pattern(50_000, byte(i)))
		}
		if after := fileState(t, path); after != before {
			t.Fatalf("VACUUM changed the file (wal=%v):\n%s\n%s", wal, before, after)
		}
		tb.Close()
	}
}

func TestDataVersion(t *testing.T) {
	path := newFile(t, FormatBC, true)
	a, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	v0, err := a.DataVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := a.DataVersion(); v != v0 {
		t.Fatalf("data_version moved without a change: %d -> %d", v0, v)
	}
	if _, err := rawDB(t, path).Exec(`INSERT INTO kv(key, value) VALUES (?1, ?2)`, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.DataVersion(); v == v0 {
		t.Fatal("data_version unchanged after another connection's commit")
	}
	v1, _ := a.DataVersion()
	if err := a.Put("k2", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.DataVersion(); v == v1 {
		t.Fatal("data_version unchanged after the table's own write")
	}
}

// TestReadOnlyOpenLeavesNoFiles: a read-only open of a WAL file that no
// other process has open (kvaultfs ls, get, migrate's source) leaves no
// -wal or -shm behind: before, the readers opened mode=ro, which cannot
// remove them at close.
func TestReadOnlyOpenLeavesNoFiles(t *testing.T) {
	watchdog(t, time.Minute)
	path := kohakutest.CopyFixture(t, "format-c.db")
	tb, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Get("top.txt"); err != nil {
		t.Fatal(err)
	}
	if err := tb.Put("x", []byte("y")); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Put on a read-only table: %v", err)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			t.Errorf("a read-only open left %s behind", filepath.Base(path+suffix))
		}
	}
}
