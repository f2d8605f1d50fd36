package kohaku

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakufixtures"
	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/store"
)

// fileShape is what no operation may change, read as kohakutest reads it.
func fileShape(t testing.TB, path string) string {
	return fmt.Sprintf("%sjournal %s page %d", kohakutest.Schema(t, path), kohakutest.JournalMode(t, path), kohakutest.PageSize(t, path))
}

// TestFixturesReadBack: every key of every KV table of every fixture
// comes back through Get, GetTo, Size, ReadAt and Scan equal to the
// manifest (length and SHA-256), and opening and reading change nothing.
func TestFixturesReadBack(t *testing.T) {
	watchdog(t, 2*time.Minute)
	for _, mf := range kohakutest.Manifest(t).Files {
		for _, mt := range mf.KV {
			t.Run(mf.Name+"/"+mt.Name, func(t *testing.T) {
				path := kohakutest.CopyFixture(t, mf.Name)
				before := fileShape(t, path)
				tb, err := Open(path, Options{Table: mt.Name})
				if err != nil {
					t.Fatal(err)
				}
				defer tb.Close()
				if tb.Format().String() != mt.Format {
					t.Fatalf("format %v, manifest %s", tb.Format(), mt.Format)
				}
				var wantKeys []string
				for _, e := range mt.Entries {
					k, _ := hex.DecodeString(e.KeyHex)
					key := string(k)
					wantKeys = append(wantKeys, key)
					v, err := tb.Get(key)
					if err != nil {
						t.Fatalf("Get %q: %v", key, err)
					}
					if d := kohakufixtures.Describe(kohakufixtures.Entry{Key: k, Value: v}); d != e {
						t.Fatalf("Get %q: %+v, manifest %+v", key, d, e)
					}
					var buf bytes.Buffer
					if n, err := tb.GetTo(key, &buf); err != nil || n != int64(e.Len) || !bytes.Equal(buf.Bytes(), v) {
						t.Fatalf("GetTo %q: %d, %v", key, n, err)
					}
					if n, err := tb.Size(key); err != nil || n != int64(e.Len) {
						t.Fatalf("Size %q: %d, %v", key, n, err)
					}
					if e.Len > 0 {
						p := make([]byte, e.Len)
						if n, err := tb.ReadAt(key, p, 0); err != nil || n != e.Len || !bytes.Equal(p, v) {
							t.Fatalf("ReadAt %q: %d, %v", key, n, err)
						}
					}
				}
				slices.Sort(wantKeys)
				var got []string
				if err := tb.Scan("", "", 0, func(k string, size int64) error { got = append(got, k); return nil }); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, wantKeys) {
					t.Fatalf("Scan: %q, want %q", got, wantKeys)
				}
				if n, err := tb.Len(); err != nil || n != int64(len(wantKeys)) {
					t.Fatalf("Len %d, %v", n, err)
				}
				tb.Close()
				if after := fileShape(t, path); after != before {
					t.Fatalf("reading changed the file:\n%s\n%s", before, after)
				}
				kohakutest.CheckManifest(t, path, mf.Name, mt.Name)
			})
		}
	}
}

// TestFixturesWrite: writes of every kind on each fixture table read back
// byte-exact with KohakuVault's own SELECT and typeof checks (ReadAll),
// while KohakuVault's own upsert works beside them; the schema, page size
// and journal mode stay.
func TestFixturesWrite(t *testing.T) {
	watchdog(t, 2*time.Minute)
	for _, c := range []struct{ file, table string }{{"format-a.db", "kv"}, {"format-b.db", "kv"}, {"format-c.db", "kv"}, {"several.db", "images"}, {"named.db", "kvault"}} {
		t.Run(c.file+"/"+c.table, func(t *testing.T) {
			path := kohakutest.CopyFixture(t, c.file)
			before := fileShape(t, path)
			want := kohakutest.ReadAll(t, path, c.table)
			tb, err := Open(path, Options{Table: c.table})
			if err != nil {
				t.Fatal(err)
			}
			defer tb.Close()
			check := func(step string) {
				t.Helper()
				got := kohakutest.ReadAll(t, path, c.table)
				if !maps.EqualFunc(got, want, bytes.Equal) {
					t.Fatalf("after %s: KohakuVault reads %d keys, want %d (or values differ)", step, len(got), len(want))
				}
				if s := fileShape(t, path); s != before {
					t.Fatalf("after %s the file changed:\n%s\n%s", step, before, s)
				}
			}
			big := pattern(2<<20+3, 9)
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(tb.Put("new/put", []byte("put")))
			want["new/put"] = []byte("put")
			must(tb.Put("", []byte{}))
			want[""] = []byte{}
			must(tb.PutReader("new/big", bytes.NewReader(big), int64(len(big))))
			want["new/big"] = big
			must(tb.PutReader("new/unknown", bytes.NewReader(big[:5000]), -1))
			want["new/unknown"] = big[:5000]
			check("puts")
			must(tb.PutBatch([]Item{{Key: "b1", Value: []byte("1")}, {Key: "new/put", Delete: true}, {Key: "b2"}}))
			want["b1"], want["b2"] = []byte("1"), []byte{}
			delete(want, "new/put")
			check("PutBatch")
			must(tb.Rename("new/big", "renamed/big", false))
			want["renamed/big"] = big
			delete(want, "new/big")
			must(tb.Delete("b1"))
			delete(want, "b1")
			check("Rename and Delete")
			// KohakuVault writes beside the open table; the table sees it.
			kohakutest.PutLikeKohaku(t, path, c.table, tb.Format().String(), []byte("from/kohaku"), []byte("hi"))
			want["from/kohaku"] = []byte("hi")
			if v, err := tb.Get("from/kohaku"); err != nil || string(v) != "hi" {
				t.Fatalf("KohakuVault's write seen as %q, %v", v, err)
			}
			must(tb.Optimize())
			check("Optimize")
			if err := tb.Delete("missing"); !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
			tb.Close()
			check("Close")
		})
	}
}

// TestBesideKohakuLoop: KohakuVault's statements run in a loop by another
// process (the sqlite3 CLI) while this table writes and reads: neither
// side fails or loses a write.
func TestBesideKohakuLoop(t *testing.T) {
	watchdog(t, 3*time.Minute)
	for _, file := range []string{"format-a.db", "format-c.db"} {
		t.Run(file, func(t *testing.T) {
			path := kohakutest.CopyFixture(t, file)
			want := kohakutest.ReadAll(t, path, "kv")
			tb, err := Open(path, Options{Table: "kv"})
			if err != nil {
				t.Fatal(err)
			}
			defer tb.Close()
			loop := kohakutest.StartKohakuLoop(t, path, "kv", 20, "beside")
			for i := range 60 {
				k := fmt.Sprintf("ours/%d", i)
				v := pattern(1000+i*3000, byte(i))
				var err error
				switch i % 3 {
				case 0:
					err = tb.Put(k, v)
				case 1:
					err = tb.PutReader(k, bytes.NewReader(v), int64(len(v)))
				default:
					err = tb.PutBatch([]Item{{Key: k, Value: v}})
				}
				if err != nil {
					t.Fatalf("write %d beside the loop: %v", i, err)
				}
				want[k] = v
				if _, err := tb.Len(); err != nil {
					t.Fatal(err)
				}
			}
			if err := loop.Wait(2 * time.Minute); err != nil {
				t.Fatal(err)
			}
			got := kohakutest.ReadAll(t, path, "kv")
			if !maps.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("after the loop: %d keys, want %d (or values differ)", len(got), len(want))
			}
		})
	}
}
