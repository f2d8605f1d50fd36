package migrate

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/kohaku"
	"github.com/kohakuvault/kvaultfs/vault"
)

// nativeSample is a native vault's content with what a KohakuVault table
// must keep exactly: path and binary keys, an empty value, a key with a
// NUL byte, a value of several MiB.
func nativeSample() map[string][]byte {
	return map[string][]byte{
		"photos/2024/a.jpg": []byte("\xff\xd8\xff\xe0 jpeg bytes"),
		"video:456":         []byte("not a path key"),
		"a//b":              []byte("binary key with an empty component"),
		"nul\x00key":        []byte("nul"),
		"empty.bin":         {},
		"big/clip.mp4":      bytes.Repeat([]byte("0123456789abcdef"), 3<<16),
	}
}

// TestBackNewFile migrates a native vault into a file that does not exist
// yet: the file is made as KohakuVault v0.8 makes it (the schema text of
// kohakuvault_meta and kv identical to the format-C fixture's, page size
// 32768, WAL), and KohakuVault's own SELECT reads every key and value as
// BLOBs. The source is unchanged and a second run copies nothing.
func TestBackNewFile(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	src := filepath.Join(dir, "native.db")
	want := nativeSample()
	newNative(t, src, want)
	before := stateOf(t, src)
	dst := filepath.Join(dir, "media.db")

	res, err := Back(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != int64(len(want)) || res.Keys != int64(len(want)) {
		t.Errorf("%+v, want %d copied", res, len(want))
	}
	sameMaps(t, "KohakuVault copy", kohakutest.ReadAll(t, dst, "kv"), want)
	if got, fx := kohakutest.SchemaOf(t, dst), kohakutest.SchemaOf(t, kohakutest.CopyFixture(t, "format-c.db"), "kohakuvault_meta", "kv"); got != fx {
		t.Errorf("schema of the new file:\n%s\nwant format-c.db's:\n%s", got, fx)
	}
	if ps := kohakutest.PageSize(t, dst); ps != 32768 {
		t.Errorf("page size %d, want 32768", ps)
	}
	if jm := kohakutest.JournalMode(t, dst); jm != "wal" {
		t.Errorf("journal mode %s, want wal", jm)
	}
	unchangedFile(t, src, before)

	res, err = Back(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 0 || res.Unchanged != int64(len(want)) {
		t.Errorf("second run: %+v, want everything unchanged", res)
	}

	// A value changed in the KohakuVault file to another of the same
	// length: only the checksum tells, and the run puts the vault's back.
	kohakutest.PutLikeKohaku(t, dst, "kv", kohakutest.FormatBC, []byte("video:456"), []byte("NOT A PATH KEY"))
	res, err = Back(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 1 || res.Unchanged != int64(len(want)-1) {
		t.Errorf("run after a same-length change: %+v, want exactly 1 copied", res)
	}
	sameMaps(t, "KohakuVault copy after the third run", kohakutest.ReadAll(t, dst, "kv"), want)
}

// TestBackNamedTable creates a new file with a table of another name.
func TestBackNamedTable(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	src := filepath.Join(dir, "native.db")
	want := map[string][]byte{"k": []byte("v")}
	newNative(t, src, want)
	dst := filepath.Join(dir, "media.db")
	if _, err := Back(context.Background(), src, dst, Options{Table: "media"}); err != nil {
		t.Fatal(err)
	}
	sameMaps(t, "table media", kohakutest.ReadAll(t, dst, "media"), want)
}

// TestBackExistingFormatA migrates into a copy of the format-A fixture:
// changed and new keys are written with the size column equal to the
// value's length (ReadAll checks it), keys only in the file are left
// alone, or deleted with Delete. A value starting 89 4B is stored raw
// there: format A has no headers.
func TestBackExistingFormatA(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	dst := kohakutest.CopyFixture(t, "format-a.db")
	orig := kohakutest.ReadAll(t, dst, "kv")
	src := filepath.Join(dir, "native.db")
	mine := map[string][]byte{
		"top.txt":       []byte("a new value for an existing key"),
		"new/key.bin":   []byte("new"),
		"magic.bin":     []byte("\x89\x4b\x00\x11\x22\x33\x44\x55\x66\x77\x88"),
		"videos/x.webm": bytes.Repeat([]byte{7}, 1<<20+3),
	}
	newNative(t, src, mine)
	schema := kohakutest.Schema(t, dst)

	res, err := Back(context.Background(), src, dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for k, v := range orig {
		want[k] = v
	}
	for k, v := range mine {
		want[k] = v
	}
	sameMaps(t, "format-A table", kohakutest.ReadAll(t, dst, "kv"), want)
	if res.Copied != int64(len(mine)) || res.Extra != int64(len(want)-len(mine)) {
		t.Errorf("%+v, want %d copied and %d left alone", res, len(mine), len(want)-len(mine))
	}
	if after := kohakutest.Schema(t, dst); after != schema {
		t.Errorf("schema changed:\n%s\nwas:\n%s", after, schema)
	}

	res, err = Back(context.Background(), src, dst, Options{Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != int64(len(want)-len(mine)) || res.Copied != 0 {
		t.Errorf("with Delete: %+v", res)
	}
	sameMaps(t, "format-A table after Delete", kohakutest.ReadAll(t, dst, "kv"), mine)
}

// TestBackRefusesTooLarge puts a sparse value of MaxValueSize+1 bytes in a
// native vault (no data is written: the native vault holds holes) and
// checks that Back refuses before writing anything, naming that key and
// no other: a new file is not created, an existing one keeps its bytes.
func TestBackRefusesTooLarge(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	src := filepath.Join(dir, "native.db")
	newNative(t, src, map[string][]byte{"small.txt": []byte("fits")})
	v, err := vault.Open(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.OpenFile("huge/movie.mkv", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1_000_000_001); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	newDst := filepath.Join(dir, "new.db")
	_, err = Back(context.Background(), src, newDst, Options{})
	checkRefused(t, err, `"huge/movie.mkv" (1000000001 bytes)`, "small.txt")
	if _, serr := os.Stat(newDst); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a refused run created the destination: %v", serr)
	}

	existing := kohakutest.CopyFixture(t, "format-a.db")
	before := stateOf(t, existing)
	_, err = Back(context.Background(), src, existing, Options{})
	checkRefused(t, err, `"huge/movie.mkv" (1000000001 bytes)`, "small.txt")
	unchangedFile(t, existing, before)
}

// checkRefused checks an ErrRefused error names key and not other.
func checkRefused(t *testing.T, err error, key, other string) {
	t.Helper()
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("error %v, want ErrRefused", err)
	}
	if !strings.Contains(err.Error(), key) || strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("error %q should name %s, not %s, and say nothing was written", err, key, other)
	}
}

// TestBackRefusesHeaderMagic checks the header policy: a B/C table gets no
// value starting 89 4B (KohakuVault 0.7+ would read it as a header), and
// the refusal names the key before anything is written.
func TestBackRefusesHeaderMagic(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	src := filepath.Join(dir, "native.db")
	newNative(t, src, map[string][]byte{
		"raw.bin":   []byte("\x89\x4bthis is no header at all"),
		"short.bin": []byte("\x89\x4bshort"), // under 10 bytes: never a header
		"plain.txt": []byte("plain"),
		"str.bin":   []byte("\x89\x4b\x01\x06\x00\x00\x00\x00\x56\x4bh\xc3\xa9llo"), // a valid header: stored
	})
	dst := kohakutest.CopyFixture(t, "format-b.db")
	before := stateOf(t, dst)
	_, err := Back(context.Background(), src, dst, Options{})
	checkRefused(t, err, `"raw.bin"`, "short.bin")
	if strings.Contains(err.Error(), "str.bin") {
		t.Errorf("a valid header was refused: %v", err)
	}
	unchangedFile(t, dst, before)
}

// TestHeaderCheckAgreesWithTable checks Back's header check against what
// kohaku.Table actually refuses in a B/C table, so that the check made
// before writing never disagrees with the writes.
func TestHeaderCheckAgreesWithTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	if err := kohaku.Create(path, ""); err != nil {
		t.Fatal(err)
	}
	tb, err := kohaku.Open(path, kohaku.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	valid := []byte("\x89\x4b\x01\x06\x00\x00\x00\x00\x56\x4b")
	values := [][]byte{
		[]byte("plain"), []byte("\x89\x4b"), []byte("\x89\x4b\x01\x06\x00\x00\x00\x00\x56"),
		valid, append(bytes.Clone(valid), "payload"...),
		[]byte("\x89\x4b\x02\x06\x00\x00\x00\x00\x56\x4bx"), // version 2
		[]byte("\x89\x4b\x01\x07\x00\x00\x00\x00\x56\x4bx"), // unknown encoding
		[]byte("\x89\x4b\x01\xff\x00\x00\x00\x00\x56\x4bx"), // reserved encoding
		[]byte("\x89\x4b\x01\x00\x01\x00\x00\x00\x56\x4bx"), // flags set: still decoded
		[]byte("\x89\x4b\x01\x00\x00\x01\x00\x00\x56\x4bx"), // reserved byte set
		[]byte("\x89\x4b\x01\x00\x00\x00\x00\x00\x56\x4cx"), // bad closing magic
		[]byte("\x89\x4bthis is no header at all"),
	}
	for i, v := range values {
		refused := len(v) >= headerLen && v[0] == 0x89 && v[1] == 0x4b && !validHeader(v[:headerLen])
		err := tb.Put(fmt.Sprintf("k%d", i), v)
		if refused != (err != nil) {
			t.Errorf("value %x: the check says refused=%v, the table's Put: %v", v, refused, err)
		}
	}
}

// TestRoundTrip copies fixtures forward into a native vault and back, and
// compares with the original as KohakuVault reads it.
func TestRoundTrip(t *testing.T) {
	watchdog(t, 2*time.Minute)
	t.Run("format A into an emptied format-A table", func(t *testing.T) {
		orig := kohakutest.CopyFixture(t, "format-a.db")
		want := kohakutest.ReadAll(t, orig, "kv")
		native := filepath.Join(t.TempDir(), "native.db")
		_, err := Forward(context.Background(), orig, native, Options{})
		checkRun(t, err)

		dst := kohakutest.CopyFixture(t, "format-a.db")
		for k := range kohakutest.ReadAll(t, dst, "kv") {
			kohakutest.DeleteLikeKohaku(t, dst, "kv", []byte(k))
		}
		if _, err := Back(context.Background(), native, dst, Options{}); err != nil {
			t.Fatal(err)
		}
		sameMaps(t, "round trip", kohakutest.ReadAll(t, dst, "kv"), want)
	})
	t.Run("format C back into itself", func(t *testing.T) {
		// KohakuVault's header-encoded values come back unchanged: they
		// are equal, so never written and never refused.
		orig := kohakutest.CopyFixture(t, "format-c.db")
		want := kohakutest.ReadAll(t, orig, "kv")
		native := filepath.Join(t.TempDir(), "native.db")
		_, err := Forward(context.Background(), orig, native, Options{})
		checkRun(t, err)
		res, err := Back(context.Background(), native, orig, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Copied != 0 || res.Unchanged != int64(len(want)) || res.Extra != 0 {
			t.Errorf("%+v, want everything unchanged", res)
		}
	})
	t.Run("format C into a new file", func(t *testing.T) {
		// A new file is format C. KohakuVault's header-encoded values go
		// in; a raw value starting 89 4B that is no valid header is
		// refused, and the refusal lists exactly those. Without it, the
		// round trip is equal to the original.
		orig := kohakutest.CopyFixture(t, "format-c.db")
		want := kohakutest.ReadAll(t, orig, "kv")
		native := filepath.Join(t.TempDir(), "native.db")
		_, err := Forward(context.Background(), orig, native, Options{})
		checkRun(t, err)
		dst := filepath.Join(t.TempDir(), "back.db")
		_, err = Back(context.Background(), native, dst, Options{})
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("error %v, want ErrRefused", err)
		}
		var refused []string
		for k, v := range want {
			bad := len(v) >= headerLen && v[0] == 0x89 && v[1] == 0x4b && !validHeader(v[:headerLen])
			if listed := strings.Contains(err.Error(), quoteKey(k)); listed != bad {
				t.Errorf("key %q (starts 89 4B, no valid header: %v) listed: %v in %q", k, bad, listed, err)
			}
			if bad {
				refused = append(refused, k)
			}
		}
		if len(refused) == 0 {
			t.Fatal("format-c.db has no value that starts 89 4B without a valid header")
		}
		v, err := vault.Open(native, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range refused {
			if err := v.Delete(k); err != nil {
				t.Fatal(err)
			}
			delete(want, k)
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := Back(context.Background(), native, dst, Options{}); err != nil {
			t.Fatal(err)
		}
		sameMaps(t, "round trip through a new file", kohakutest.ReadAll(t, dst, "kv"), want)
	})
}

// TestBackRefusals checks sources and destinations Back must not use.
func TestBackRefusals(t *testing.T) {
	watchdog(t, time.Minute)
	dir := t.TempDir()
	native := filepath.Join(dir, "native.db")
	newNative(t, native, map[string][]byte{"a": []byte("1")})
	kohakuFile := kohakutest.CopyFixture(t, "format-b.db")
	foreign := kohakutest.CopyFixture(t, "foreign.db")
	several := kohakutest.CopyFixture(t, "several.db")
	otherNative := filepath.Join(dir, "other.db")
	newNative(t, otherNative, map[string][]byte{"b": []byte("2")})
	cases := []struct {
		name, src, dst string
		want           []string
	}{
		{"source KohakuVault", kohakuFile, filepath.Join(dir, "x.db"), []string{"not a kvaultfs vault", "leave out --to"}},
		{"destination foreign", native, foreign, []string{"tables of another program", "refusing"}},
		{"destination native", native, otherNative, []string{"a kvaultfs vault", "not a KohakuVault table"}},
		{"destination several", native, several, []string{"images", "kv", "--table"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before fileState
			if _, err := os.Stat(c.dst); err == nil {
				before = stateOf(t, c.dst)
			}
			_, err := Back(context.Background(), c.src, c.dst, Options{})
			if err == nil {
				t.Fatal("Back succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if before.data != nil {
				unchangedFile(t, c.dst, before)
			} else if _, err := os.Stat(c.dst); err == nil {
				t.Errorf("%s was created", c.dst)
			}
		})
	}
}

// TestBackVaultBesideNamesakeTable checks a source whose kvaultfs vault
// shares the file with a KohakuVault table named like the vault's prefix:
// opening the file serves that table, so Back refuses rather than copy the
// wrong store.
func TestBackVaultBesideNamesakeTable(t *testing.T) {
	watchdog(t, time.Minute)
	src := filepath.Join(t.TempDir(), "both.db")
	newNative(t, src, map[string][]byte{"a": []byte("1")})
	db, err := sql.Open("sqlite3", src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`CREATE TABLE kvault (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL)`)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "media.db")
	_, err = Back(context.Background(), src, dst, Options{})
	if err == nil || !strings.Contains(err.Error(), "KohakuVault table kvault has the name of the vault prefix") {
		t.Fatalf("error %v, want a refusal naming the table kvault", err)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Error("the refused run created the destination")
	}
}
