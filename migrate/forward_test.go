package migrate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/store"
	"github.com/kohakuvault/kvaultfs/vault"
)

// fixtureTables is every KohakuVault table of the fixtures: formats A, B,
// C, a table named like the native vault's prefix, and both tables of a
// file that holds two.
var fixtureTables = []struct{ file, table, format string }{
	{"format-a.db", "kv", kohakutest.FormatA},
	{"format-b.db", "kv", kohakutest.FormatBC},
	{"format-c.db", "kv", kohakutest.FormatBC},
	{"named.db", "kvault", kohakutest.FormatBC},
	{"several.db", "images", kohakutest.FormatA},
	{"several.db", "kv", kohakutest.FormatBC},
}

// TestForwardFixtures migrates every fixture table into a new native
// vault and checks: every key and value equal to what KohakuVault's own
// SELECT reads; the source's bytes and mtime unchanged; mode 0644 and the
// source's mtime on the copies; a second run copies nothing; after one
// value is changed with KohakuVault's upsert, a run copies exactly it.
func TestForwardFixtures(t *testing.T) {
	watchdog(t, 2*time.Minute)
	for _, fx := range fixtureTables {
		t.Run(fx.file+"/"+fx.table, func(t *testing.T) {
			src := kohakutest.CopyFixture(t, fx.file)
			setOld(t, src)
			want := kohakutest.ReadAll(t, src, fx.table)
			nkeys := int64(len(want))
			before := stateOf(t, src)
			dst := filepath.Join(t.TempDir(), "native.db")
			o := Options{Table: fx.table}

			res, err := Forward(context.Background(), src, dst, o)
			checkRun(t, err)
			unchangedFile(t, src, before)
			for _, suffix := range []string{"-wal", "-shm"} {
				if _, err := os.Stat(src + suffix); err == nil {
					t.Logf("note: the read-only open of the source left %s%s behind", filepath.Base(src), suffix)
				}
			}
			sameMaps(t, "native copy", readNative(t, dst), want)
			if res.Keys != nkeys || res.Copied != int64(len(want)) || res.Unchanged != 0 {
				t.Errorf("first run: %+v, want %d keys copied", res, len(want))
			}
			checkMeta(t, dst, want)

			res, err = Forward(context.Background(), src, dst, o)
			checkRun(t, err)
			if res.Copied != 0 || res.Unchanged != int64(len(want)) || res.CopiedBytes != 0 {
				t.Errorf("second run: %+v, want 0 copied, %d unchanged", res, len(want))
			}
			unchangedFile(t, src, before)

			// One value changed by KohakuVault, to the same length as before
			// where there is one, so that only the checksum can tell.
			var key string
			for k, v := range want {
				if len(v) > 0 && k != "" && (key == "" || k < key) {
					key = k
				}
			}
			changed := []byte(strings.Repeat("x", len(want[key])))
			kohakutest.PutLikeKohaku(t, src, fx.table, fx.format, []byte(key), changed)
			want[key] = changed
			res, err = Forward(context.Background(), src, dst, o)
			checkRun(t, err)
			if res.Copied != 1 || res.Unchanged != int64(len(want)-1) || res.CopiedBytes != int64(len(changed)) {
				t.Errorf("run after changing %q: %+v, want exactly 1 copied", key, res)
			}
			sameMaps(t, "native copy after the change", readNative(t, dst), want)
		})
	}
}

// checkRun checks a run's error: nil. The empty key, which KohakuVault
// allows, is a key like any other in the native vault too.
func checkRun(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkMeta checks the POSIX metadata of the copies: mode 0644, the
// source file's mtime.
func checkMeta(t *testing.T, dst string, want map[string][]byte) {
	t.Helper()
	o := vault.DefaultOptions()
	o.ReadOnly = true
	v, err := vault.Open(dst, o)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for k := range want {
		in, err := v.Stat(k)
		if err != nil {
			t.Fatalf("stat %q: %v", k, err)
		}
		if in.Mode != 0o644 || in.Kind != store.KindFile {
			t.Errorf("%q: kind %v mode %o, want a file with mode 644", k, in.Kind, in.Mode)
		}
		if !in.ModTime().Equal(oldTime) {
			t.Errorf("%q: mtime %v, want the source's %v", k, in.ModTime(), oldTime)
		}
	}
}

// TestForwardDelete checks that keys only in the destination are left
// alone and counted, and removed with Delete.
func TestForwardDelete(t *testing.T) {
	watchdog(t, time.Minute)
	src := kohakutest.CopyFixture(t, "named.db")
	dst := filepath.Join(t.TempDir(), "native.db")
	newNative(t, dst, map[string][]byte{"only/in/dst": []byte("mine"), "\x00bin": []byte("b")})
	want := kohakutest.ReadAll(t, src, "kvault")

	res, err := Forward(context.Background(), src, dst, Options{})
	checkRun(t, err)
	if res.Extra != 2 || res.Deleted != 0 {
		t.Errorf("without Delete: %+v, want 2 extra keys left alone", res)
	}
	got := readNative(t, dst)
	if string(got["only/in/dst"]) != "mine" || string(got["\x00bin"]) != "b" {
		t.Errorf("keys only in the destination were touched: %q %q", got["only/in/dst"], got["\x00bin"])
	}
	if !strings.Contains(res.Summary(), "2 keys only in the destination left alone") {
		t.Errorf("summary %q does not say what was left alone", res.Summary())
	}

	res, err = Forward(context.Background(), src, dst, Options{Delete: true})
	checkRun(t, err)
	if res.Deleted != 2 || res.Extra != 0 || res.Copied != 0 {
		t.Errorf("with Delete: %+v, want 2 deleted, nothing copied", res)
	}
	sameMaps(t, "after Delete", readNative(t, dst), want)
}

// TestForwardRefusals checks the one-line errors for sources that are not
// KohakuVault files and destinations that must not be written, and that
// none of those files changes.
func TestForwardRefusals(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("hello, not a database\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	native := filepath.Join(dir, "native.db")
	newNative(t, native, map[string][]byte{"a": []byte("1")})
	foreign := kohakutest.CopyFixture(t, "foreign.db")
	kohakuFile := kohakutest.CopyFixture(t, "format-b.db")
	several := kohakutest.CopyFixture(t, "several.db")
	fresh := func() string { return filepath.Join(t.TempDir(), "dst.db") }

	cases := []struct {
		name, src, dst string
		o              Options
		want           []string
	}{
		{"source not SQLite", text, fresh(), Options{}, []string{"not a SQLite database"}},
		{"source missing", filepath.Join(dir, "nope.db"), fresh(), Options{}, []string{"nope.db", "does not exist"}},
		{"source foreign", foreign, fresh(), Options{}, []string{"not a KohakuVault file", "tables of another program"}},
		{"source native", native, fresh(), Options{}, []string{"a kvaultfs vault", "--to kohakuvault"}},
		{"source several", several, fresh(), Options{}, []string{"images", "kv", "--table"}},
		{"source no such table", kohakuFile, fresh(), Options{Table: "nope"}, []string{"nope"}},
		{"destination foreign", kohakuFile, foreign, Options{}, []string{"tables of another program", "refusing"}},
		{"destination KohakuVault", several, kohakuFile, Options{Table: "kv"}, []string{"KohakuVault tables kv", "--to kohakuvault"}},
		{"destination not SQLite", kohakuFile, text, Options{}, []string{"not a SQLite database", "refusing"}},
		{"destination is the source", kohakuFile, kohakuFile, Options{}, []string{"same file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var states []fileState
			for _, p := range []string{c.src, c.dst} {
				if _, err := os.Stat(p); err == nil {
					states = append(states, stateOf(t, p))
				} else {
					states = append(states, fileState{})
				}
			}
			_, err := Forward(context.Background(), c.src, c.dst, c.o)
			if err == nil {
				t.Fatal("Forward succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for i, p := range []string{c.src, c.dst} {
				if states[i].data == nil {
					if _, err := os.Stat(p); err == nil {
						t.Errorf("%s was created", p)
					}
					continue
				}
				unchangedFile(t, p, states[i])
			}
		})
	}
}

// TestForwardKeyClash checks that a key the native vault cannot hold
// beside another ("a" is a file, so "a/b" cannot be) is skipped and
// named, and that every other key is still copied.
func TestForwardKeyClash(t *testing.T) {
	watchdog(t, time.Minute)
	src := kohakutest.CopyFixture(t, "format-b.db")
	kohakutest.PutLikeKohaku(t, src, "kv", kohakutest.FormatBC, []byte("top.txt/inner"), []byte("clash"))
	want := kohakutest.ReadAll(t, src, "kv")
	if _, ok := want["top.txt"]; !ok {
		t.Fatal("fixture format-b.db has no key top.txt")
	}
	dst := filepath.Join(t.TempDir(), "native.db")
	res, err := Forward(context.Background(), src, dst, Options{})
	if !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), `"top.txt/inner" (`) {
		t.Fatalf("error %v, want ErrSkipped naming the key top.txt/inner", err)
	}
	got := readNative(t, dst)
	delete(want, "top.txt/inner")
	sameMaps(t, "copy beside the clash", got, want)
	if res.Copied != int64(len(want)) {
		t.Errorf("%+v: want %d copied", res, len(want))
	}
}
