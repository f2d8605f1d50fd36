package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
)

// TestCLIOnKohakuFiles: every command works on a KohakuVault file in its
// own format: ls lists every key, get returns the stored bytes of each,
// put, rm and stat work, verify passes, and KohakuVault's own statements
// read what put wrote; the schema never changes.
func TestCLIOnKohakuFiles(t *testing.T) {
	for _, fx := range []struct{ file, table string }{{"format-a.db", "kv"}, {"format-b.db", "kv"}, {"format-c.db", "kv"}} {
		t.Run(fx.file, func(t *testing.T) {
			db := kohakutest.CopyFixture(t, fx.file)
			schema := kohakutest.Schema(t, db)
			want := kohakutest.ManifestTable(t, fx.file, fx.table)

			r := kv(t, nil, "ls", db)
			mustOK(t, r, "ls")
			listed := strings.Split(strings.TrimSuffix(string(r.stdout), "\n"), "\n")
			if len(listed) != len(want.Entries) {
				t.Errorf("ls listed %d keys, the table holds %d: %q", len(listed), len(want.Entries), listed)
			}
			for _, e := range want.Entries {
				raw, _ := hex.DecodeString(e.KeyHex)
				key := string(raw)
				if !slices.Contains(listed, displayKey(key)) {
					t.Errorf("ls does not list %q", key)
				}
				if strings.IndexByte(key, 0) >= 0 {
					continue // argv cannot carry it
				}
				var out bytes.Buffer
				mustOK(t, kvTo(t, nil, &out, "get", db, key), "get "+strconv.Quote(key))
				if sum := sha256.Sum256(out.Bytes()); hex.EncodeToString(sum[:]) != e.SHA256 || out.Len() != e.Len {
					t.Errorf("get %q: %d bytes, not the stored %d", key, out.Len(), e.Len)
				}
				r := kv(t, nil, "stat", db, key)
				mustOK(t, r, "stat "+strconv.Quote(key))
				if !strings.Contains(string(r.stdout), "size: "+strconv.Itoa(e.Len)+"\n") {
					t.Errorf("stat %q: %q does not give size %d", key, r.stdout, e.Len)
				}
			}
			value := randomBytes(300_000, 9)
			mustOK(t, kv(t, bytes.NewReader(value), "put", db, "cli/put.bin"), "put")
			mustOK(t, kv(t, nil, "rm", db, "top.txt"), "rm")
			mustFail(t, kv(t, nil, "get", db, "top.txt"), 1, "not found", "get after rm")
			mustOK(t, kv(t, nil, "verify", db), "verify")
			got := kohakutest.ReadAll(t, db, fx.table)
			if !bytes.Equal(got["cli/put.bin"], value) {
				t.Errorf("KohakuVault reads the put value as %d bytes, not the %d put", len(got["cli/put.bin"]), len(value))
			}
			if _, ok := got["top.txt"]; ok {
				t.Error("rm left the key for KohakuVault")
			}
			if s := kohakutest.Schema(t, db); s != schema {
				t.Errorf("the CLI changed the schema:\nbefore %s\nafter  %s", schema, s)
			}
		})
	}
}

// TestCLIRefusesForeignDatabase is item 1 through the CLI: every command
// refuses another program's SQLite file with one line naming its tables,
// and leaves it unchanged; put --init adds a vault beside them.
func TestCLIRefusesForeignDatabase(t *testing.T) {
	db := kohakutest.CopyFixture(t, "foreign.db")
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"ls", db}, {"get", db, "k"}, {"stat", db, "k"}, {"rm", db, "k"}, {"verify", db},
		{"put", db, "k"}, {"mount", db, mnt},
	} {
		code := 1
		if args[0] == "verify" {
			code = 2 // the check cannot run
		}
		mustFail(t, kv(t, strings.NewReader("v"), args...), code, "tables of another program: orders, sessions, users", args[0])
	}
	if after, _ := os.ReadFile(db); !bytes.Equal(before, after) {
		t.Fatal("a refused command changed the file")
	}
	mustOK(t, kv(t, strings.NewReader("v"), "put", "--init", db, "k"), "put --init")
	r := kv(t, nil, "get", db, "k")
	mustOK(t, r, "get after --init")
	if string(r.stdout) != "v" {
		t.Errorf("get after put --init: %q", r.stdout)
	}
}

// TestCLISeveralKohakuTables: a file with several KohakuVault tables is
// refused with their names until --table chooses one.
func TestCLISeveralKohakuTables(t *testing.T) {
	db := kohakutest.CopyFixture(t, "several.db")
	mustFail(t, kv(t, nil, "ls", db), 1, "images, kv", "ls without --table")
	for _, table := range []string{"kv", "images"} {
		r := kv(t, nil, "ls", "--table", table, db)
		mustOK(t, r, "ls --table "+table)
		if n := strings.Count(string(r.stdout), "\n"); n != len(kohakutest.ManifestTable(t, "several.db", table).Entries) {
			t.Errorf("ls --table %s listed %d keys", table, n)
		}
	}
}
