package vault

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// Hostile rows: inode rows whose size or chunk size no vault writes
// (edited by hand, damaged on disk, written by a buggy program). Every
// operation on such a file is ErrCorrupt naming it, never a panic, a hang
// or bytes; the rest of the vault works; the key can be deleted or
// replaced, which heals it. Before the checks, a chunk size of 0 made
// Get divide by zero and a negative size made it panic in make.

// hostileRows are edits of one file's inode row.
var hostileRows = []struct {
	name, set string
}{
	{"chunk size 0", "chunk_size = 0"},
	{"negative chunk size", "chunk_size = -4096"},
	{"huge chunk size", "chunk_size = 1 << 40"},
	{"chunk size past the maximum", fmt.Sprintf("chunk_size = %d", maxChunkSize+4096)},
	{"negative size", "size = -1"},
	{"most negative size", fmt.Sprintf("size = %d", math.MinInt64)},
	{"size MaxInt64", fmt.Sprintf("size = %d", math.MaxInt64)},
	{"size past the limit", fmt.Sprintf("size = %d", MaxFileSize+1)},
	{"unknown kind", "kind = 99"},
}

// noPanic runs fn, turning a panic into a test failure.
func noPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v\n%s", what, r, debug.Stack())
		}
	}()
	fn()
}

// wantCorrupt checks that err is ErrCorrupt.
func wantCorrupt(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("%s: %v; want ErrCorrupt", what, err)
	}
}

// hostileVault stores "bad" (the victim) and "good/one", edits bad's
// inode row with set, and reopens the vault.
func hostileVault(t *testing.T, set string) (*Vault, []byte, int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	good := genBytes(3, 3*4096+7)
	mustPut(t, v, "bad", genBytes(4, 2*4096+100))
	mustPut(t, v, "good/one", good)
	st, err := v.Stat("bad")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path, false)
	rawExec(t, db, `UPDATE kvault_inodes SET `+set+` WHERE id = ?`, st.ID)
	db.Close()
	v, err = Open(path, nil)
	if err != nil {
		t.Fatalf("Open after the edit: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v, good, st.ID
}

func TestHostileInodeRows(t *testing.T) {
	for _, h := range hostileRows {
		t.Run(h.name, func(t *testing.T) {
			v, good, ino := hostileVault(t, h.set)
			noPanic(t, "Get", func() {
				got, err := v.Get("bad")
				wantCorrupt(t, err, "Get")
				if got != nil {
					t.Errorf("Get returned %d bytes with %v", len(got), err)
				}
			})
			noPanic(t, "GetTo", func() {
				var buf bytes.Buffer
				n, err := v.GetTo("bad", &buf)
				wantCorrupt(t, err, "GetTo")
				if n != 0 || buf.Len() != 0 {
					t.Errorf("GetTo wrote %d (%d) bytes", buf.Len(), n)
				}
			})
			noPanic(t, "Stat", func() {
				_, err := v.Stat("bad")
				wantCorrupt(t, err, "Stat")
			})
			noPanic(t, "GetInode", func() {
				_, err := v.GetInode(ino)
				wantCorrupt(t, err, "GetInode")
			})
			noPanic(t, "Exists", func() {
				_, err := v.Exists("bad")
				wantCorrupt(t, err, "Exists")
			})
			for _, flag := range []int{os.O_RDONLY, os.O_RDWR, os.O_RDWR | os.O_TRUNC, os.O_WRONLY | os.O_APPEND} {
				noPanic(t, "OpenFile", func() {
					f, err := v.OpenFile("bad", flag, 0)
					wantCorrupt(t, err, fmt.Sprintf("OpenFile(%#x)", flag))
					if f != nil {
						f.Close()
					}
				})
				noPanic(t, "OpenInode", func() {
					f, err := v.OpenInode(ino, flag)
					wantCorrupt(t, err, fmt.Sprintf("OpenInode(%#x)", flag))
					if f != nil {
						f.Close()
					}
				})
			}
			noPanic(t, "SetAttr size", func() {
				size := int64(10)
				_, err := v.SetAttr(ino, SetAttr{Size: &size})
				wantCorrupt(t, err, "SetAttr size")
			})
			noPanic(t, "Keys", func() {
				// Listing names needs no inode: the key is listed, or the
				// listing fails with ErrCorrupt; either way no panic.
				for k, err := range v.Keys("") {
					if err != nil && !errors.Is(err, ErrCorrupt) {
						t.Errorf("Keys: %v", err)
					}
					_ = k
				}
			})
			noPanic(t, "Items", func() {
				for it, err := range v.Items("good/") {
					if err != nil || !bytes.Equal(it.Value, good) {
						t.Errorf("Items(good/) = %q, %v", it.Key, err)
					}
				}
			})
			noPanic(t, "ReadDir", func() {
				_, err := v.ReadDir(RootIno, 0, 100)
				if err != nil && !errors.Is(err, ErrCorrupt) {
					t.Errorf("ReadDir: %v", err)
				}
			})
			noPanic(t, "Verify", func() {
				var found []Damage
				_, err := v.Verify(func(d Damage) { found = append(found, d) })
				if err != nil {
					t.Fatalf("Verify could not finish: %v", err)
				}
				ok := false
				for _, d := range found {
					if d.Ino == ino && errors.Is(d.Err, ErrCorrupt) {
						ok = true
					}
				}
				if !ok {
					t.Errorf("Verify found %+v; want damage of inode %d", found, ino)
				}
			})
			// The rest of the vault is untouched.
			if got := mustGet(t, v, "good/one"); !bytes.Equal(got, good) {
				t.Fatal("good/one reads back wrong")
			}
			// Deleting the damaged key works (that is how a user heals
			// it), and so does putting a new value over it.
			noPanic(t, "Put over it", func() {
				if err := v.Put("bad", []byte("replaced")); err != nil {
					t.Fatalf("Put over the damaged key: %v", err)
				}
			})
			if got := mustGet(t, v, "bad"); string(got) != "replaced" {
				t.Fatalf("after replacing: %q", got)
			}
			if err := v.Delete("bad"); err != nil {
				t.Fatal(err)
			}
			var found []Damage
			if _, err := v.Verify(func(d Damage) { found = append(found, d) }); err != nil || len(found) != 0 {
				t.Fatalf("Verify after healing: %+v, %v", found, err)
			}
		})
	}
}

// TestHostileInodeDelete deletes the damaged key directly, without
// reading it first, and through the inode-level API.
func TestHostileInodeDelete(t *testing.T) {
	for _, h := range hostileRows {
		t.Run(h.name, func(t *testing.T) {
			v, _, _ := hostileVault(t, h.set)
			noPanic(t, "Delete", func() {
				if err := v.Delete("bad"); err != nil {
					t.Fatalf("Delete of the damaged key: %v", err)
				}
			})
			if _, err := v.Get("bad"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after Delete: %v", err)
			}
		})
	}
	t.Run("unlink", func(t *testing.T) {
		v, _, _ := hostileVault(t, "chunk_size = 0")
		noPanic(t, "Unlink", func() {
			if err := v.Unlink(RootIno, "bad"); err != nil {
				t.Fatalf("Unlink of the damaged file: %v", err)
			}
		})
	})
	t.Run("rename", func(t *testing.T) {
		v, _, _ := hostileVault(t, "size = -1")
		noPanic(t, "Rename", func() {
			if err := v.Rename("bad", "moved"); err != nil {
				t.Fatalf("Rename of the damaged file: %v", err)
			}
		})
		if _, err := v.Get("moved"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Get after Rename: %v", err)
		}
	})
}
