package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
)

// kohakuFixtures are the fixtures with one KohakuVault table, the table's
// name and its format as the manifest spells it.
var kohakuFixtures = []struct{ file, table, format string }{
	{"format-a.db", "kv", "A"},
	{"format-b.db", "kv", "B/C"},
	{"format-c.db", "kv", "B/C"},
	{"named.db", "kvault", "B/C"},
}

// TestKohakuOpenReadsEveryKey: vault.Open on each KohakuVault fixture
// serves its table, and every key reads back equal to the stored bytes
// through Get, GetTo, Exists, Stat, Keys and Len, without the file's
// schema changing.
func TestKohakuOpenReadsEveryKey(t *testing.T) {
	for _, fx := range kohakuFixtures {
		t.Run(fx.file, func(t *testing.T) {
			path := kohakutest.CopyFixture(t, fx.file)
			schema := kohakutest.Schema(t, path)
			v, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if table, format, ok := v.Kohaku(); !ok || table != fx.table || format != fx.format {
				t.Fatalf("Kohaku() = %q, %q, %v; want %q, %q, true", table, format, ok, fx.table, fx.format)
			}
			want := kohakutest.ManifestTable(t, fx.file, fx.table)
			for _, e := range want.Entries {
				key := mustUnhex(t, e.KeyHex)
				got, err := v.Get(key)
				if err != nil {
					t.Fatalf("Get(%q): %v", key, err)
				}
				if d := describe(got); d != e.SHA256 || len(got) != e.Len {
					t.Errorf("Get(%q): %d bytes sha256 %s; stored %d bytes %s", key, len(got), d, e.Len, e.SHA256)
				}
				var buf bytes.Buffer
				if n, err := v.GetTo(key, &buf); err != nil || n != int64(e.Len) || !bytes.Equal(buf.Bytes(), got) {
					t.Errorf("GetTo(%q) = %d, %v; differs from Get", key, n, err)
				}
				if ok, err := v.Exists(key); !ok || err != nil {
					t.Errorf("Exists(%q) = %v, %v", key, ok, err)
				}
				if in, err := v.Stat(key); err != nil || in.Size != int64(e.Len) || in.Kind != KindFile {
					t.Errorf("Stat(%q) = %+v, %v", key, in, err)
				}
			}
			var keys []string
			for k, err := range v.Keys("") {
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k)
			}
			if len(keys) != len(want.Entries) {
				t.Errorf("Keys listed %d keys; the table holds %d", len(keys), len(want.Entries))
			}
			for i := 1; i < len(keys); i++ {
				if keys[i-1] >= keys[i] {
					t.Errorf("Keys out of KohakuVault's byte order: %q before %q", keys[i-1], keys[i])
				}
			}
			if n, err := v.Len(); err != nil || n != len(want.Entries) {
				t.Errorf("Len = %d, %v; want %d", n, err, len(want.Entries))
			}
			if _, err := v.Get("no such key"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get of a missing key: %v; want ErrNotFound", err)
			}
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			if got := kohakutest.Schema(t, path); got != schema {
				t.Errorf("schema changed by reading:\nbefore %s\nafter  %s", schema, got)
			}
		})
	}
}

// TestKohakuWritesReadByKohakuVault: values written through the vault API
// (Put, PutReader, the write-back cache, Delete, Rename) are what
// KohakuVault's own statements read back, as BLOBs, with format A's size
// column kept, and the schema, page size and journal mode unchanged.
func TestKohakuWritesReadByKohakuVault(t *testing.T) {
	for _, fx := range kohakuFixtures {
		t.Run(fx.file, func(t *testing.T) {
			path := kohakutest.CopyFixture(t, fx.file)
			schema := kohakutest.Schema(t, path)
			page, journal := kohakutest.PageSize(t, path), kohakutest.JournalMode(t, path)
			v, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := kohakutest.ReadAll(t, path, fx.table)
			big := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB
			puts := map[string][]byte{
				"new/file.bin":   []byte("written by kvaultfs"),
				"empty":          {},
				"bin\x00key\xff": []byte("binary key"),
				"top.txt":        []byte("replaced"),
			}
			for k, val := range puts {
				if err := v.Put(k, val); err != nil {
					t.Fatalf("Put(%q): %v", k, err)
				}
				want[k] = val
			}
			if err := v.PutReader("streamed/big", bytes.NewReader(big), int64(len(big))); err != nil {
				t.Fatal(err)
			}
			want["streamed/big"] = big
			stored := slices.Sorted(maps.Keys(kohakutest.ReadAll(t, path, fx.table)))
			gone, moved := stored[1], stored[2] // a key present in every fixture's table
			if err := v.Delete(gone); err != nil {
				t.Fatal(err)
			}
			delete(want, gone)
			if err := v.Rename(moved, "moved/a.jpg"); err != nil {
				t.Fatal(err)
			}
			want["moved/a.jpg"] = want[moved]
			delete(want, moved)
			if err := v.EnableCache(1<<20, 1<<19); err != nil {
				t.Fatal(err)
			}
			for i := range 50 {
				k := "cached/" + string(rune('a'+i%26)) + strings.Repeat("x", i)
				val := bytes.Repeat([]byte{byte(i)}, i*10)
				if err := v.Put(k, val); err != nil {
					t.Fatal(err)
				}
				want[k] = val
			}
			if got, err := v.Get("cached/a"); err != nil || len(got) != 0 {
				t.Errorf("a cached value read back %d bytes, %v; want the empty value", len(got), err)
			}
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			got := kohakutest.ReadAll(t, path, fx.table)
			if len(got) != len(want) {
				t.Errorf("KohakuVault reads %d keys; want %d", len(got), len(want))
			}
			for k, w := range want {
				if g, ok := got[k]; !ok || !bytes.Equal(g, w) {
					t.Errorf("KohakuVault reads key %q as %d bytes (present %v); want %d bytes", k, len(g), ok, len(w))
				}
			}
			if s := kohakutest.Schema(t, path); s != schema {
				t.Errorf("schema changed by writing:\nbefore %s\nafter  %s", schema, s)
			}
			if p, j := kohakutest.PageSize(t, path), kohakutest.JournalMode(t, path); p != page || j != journal {
				t.Errorf("page size and journal mode %d %s after writing; were %d %s", p, j, page, journal)
			}
		})
	}
}

// TestKohakuHeaderMagicRefused: in a B/C table a value that KohakuVault
// 0.7+ would take for a header is refused, directly and through the
// write-back cache, and nothing is written; format A stores it raw.
func TestKohakuHeaderMagicRefused(t *testing.T) {
	magic := append([]byte{0x89, 0x4B}, bytes.Repeat([]byte{1}, 20)...)
	for _, fx := range kohakuFixtures[:3] {
		t.Run(fx.file, func(t *testing.T) {
			path := kohakutest.CopyFixture(t, fx.file)
			v, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			err = v.Put("magic", magic)
			if fx.format == "A" {
				if err != nil {
					t.Fatalf("format A refused a raw value: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "89 4B") {
				t.Fatalf("Put of a value starting 89 4B: %v; want ErrInvalidArgument naming the magic", err)
			}
			if err := v.EnableCache(1<<20, 1<<19); err != nil {
				t.Fatal(err)
			}
			if err := v.Put("magic", magic); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("cached Put of a value starting 89 4B: %v; want ErrInvalidArgument", err)
			}
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			if _, ok := kohakutest.GetLikeKohaku(t, path, fx.table, []byte("magic")); ok {
				t.Error("the refused value was stored")
			}
		})
	}
}

// TestKohakuFileOperationsNotSupported: what a KohakuVault value cannot
// be is a clear error, not a crash.
func TestKohakuFileOperationsNotSupported(t *testing.T) {
	v, err := Open(kohakutest.CopyFixture(t, "format-c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.OpenFile("top.txt", os.O_RDWR, 0); err == nil || !strings.Contains(err.Error(), "KohakuVault") {
		t.Errorf("OpenFile on a KohakuVault file: %v; want an error naming why", err)
	}
	if _, err := v.GetInode(RootIno); err == nil {
		t.Error("GetInode on a KohakuVault file succeeded through the native path")
	}
}

// TestOpenRefusesForeignDatabase is item 1: a SQLite file with another
// program's tables is refused by Open, naming the tables and the way out,
// and is left byte for byte as it was; Init adds a vault beside them
// without touching them.
func TestOpenRefusesForeignDatabase(t *testing.T) {
	path := kohakutest.CopyFixture(t, "foreign.db")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		o := DefaultOptions()
		o.ReadOnly = ro
		_, err := Open(path, o)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "tables of another program: orders, sessions, users") {
			t.Fatalf("Open (read-only %v) of another program's database: %v", ro, err)
		}
		if !ro && !strings.Contains(err.Error(), "--init") {
			t.Errorf("the refusal does not say how to add a vault: %v", err)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("a refused open changed the file")
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		t.Error("a refused open left a -wal file")
	}
	schema := kohakutest.Schema(t, path)
	o := DefaultOptions()
	o.Init = true
	v, err := Open(path, o)
	if err != nil {
		t.Fatalf("Open with Init: %v", err)
	}
	if err := v.Put("a", []byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v, err = Open(path, nil) // the vault is there now: no Init needed
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v.Get("a"); err != nil || string(got) != "b" {
		t.Errorf("Get after Init: %q, %v", got, err)
	}
	v.Close()
	for _, line := range strings.Split(schema, "\n") {
		if !strings.Contains(kohakutest.Schema(t, path), line) {
			t.Errorf("Init changed the other program's schema: %q is gone", line)
		}
	}
}

// TestOpenSeveralKohakuTables: a file with several KohakuVault tables is
// refused with their names unless Table chooses one.
func TestOpenSeveralKohakuTables(t *testing.T) {
	path := kohakutest.CopyFixture(t, "several.db")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, nil)
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "images") || !strings.Contains(err.Error(), "kv") {
		t.Fatalf("Open of a file with two KohakuVault tables: %v; want a refusal naming both", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a refused open changed the file")
	}
	for _, table := range []string{"kv", "images"} {
		o := DefaultOptions()
		o.Table = table
		v, err := Open(path, o)
		if err != nil {
			t.Fatalf("Open with Table %q: %v", table, err)
		}
		if got, _, ok := v.Kohaku(); !ok || got != table {
			t.Errorf("Table %q served %q", table, got)
		}
		v.Close()
	}
	o := DefaultOptions()
	o.Table = "nosuch"
	if _, err := Open(path, o); err == nil || !strings.Contains(err.Error(), "images, kv") {
		t.Errorf("Open with a table that does not exist: %v; want the tables listed", err)
	}
}

// TestOpenEmptyFileIsNewVault: a 0-byte file becomes a native vault.
func TestOpenEmptyFileIsNewVault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, _, ok := v.Kohaku(); ok {
		t.Fatal("an empty file was served as a KohakuVault file")
	}
	if err := v.Put("x/y", []byte("z")); err != nil {
		t.Fatal(err)
	}
}

func mustUnhex(t *testing.T, s string) string {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func describe(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestKohakuBesideKohakuVault: KohakuVault's own statements, run in a loop
// by the sqlite3 CLI in another process, and this library write and read
// the same table at the same time: neither side sees an error, and every
// value either side wrote last is there, byte for byte.
func TestKohakuBesideKohakuVault(t *testing.T) {
	path := kohakutest.CopyFixture(t, "format-c.db")
	loop := kohakutest.StartKohakuLoop(t, path, "kv", 40, "beside")
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	hangWatchdog(t, 3*time.Minute)
	want := make(map[string][]byte)
	for i := range 300 {
		k := fmt.Sprintf("lib/%d", i%40)
		val := bytes.Repeat([]byte{byte(i)}, 1+i*37)
		if err := v.Put(k, val); err != nil {
			t.Fatalf("Put %d beside KohakuVault: %v", i, err)
		}
		want[k] = val
		got, err := v.Get(k)
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("Get %d beside KohakuVault: %d bytes, %v", i, len(got), err)
		}
	}
	if err := loop.Wait(2 * time.Minute); err != nil {
		t.Fatalf("KohakuVault's statements failed beside the library: %v\n%s", err, loop.Output())
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	got := kohakutest.ReadAll(t, path, "kv")
	for k, w := range want {
		if !bytes.Equal(got[k], w) {
			t.Errorf("%s: KohakuVault reads %d bytes; the library wrote %d last", k, len(got[k]), len(w))
		}
	}
}
