package kohakutest

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kohakuvault/kvaultfs/internal/kohakufixtures"
)

// TestFixturesMatchManifest reads every KV table of every fixture the way
// KohakuVault does and compares each key and value with the manifest, and
// the manifest with the fixture description it was written from.
func TestFixturesMatchManifest(t *testing.T) {
	m := Manifest(t)
	if len(m.Files) != len(kohakufixtures.Files()) {
		t.Fatalf("manifest lists %d files, fixtures %d", len(m.Files), len(kohakufixtures.Files()))
	}
	for _, f := range kohakufixtures.Files() {
		path := CopyFixture(t, f.Name)
		for _, tab := range f.KV {
			CheckManifest(t, path, f.Name, tab.Name)
			got := ReadAll(t, path, tab.Name)
			for _, e := range tab.Entries {
				if v, ok := got[string(e.Key)]; !ok || !bytes.Equal(v, e.Value) {
					t.Errorf("%s %s key %x: got %d bytes (present %v), want %d", f.Name, tab.Name, e.Key, len(v), ok, len(e.Value))
				}
			}
		}
		if f.Name != "foreign.db" {
			if ps := PageSize(t, path); ps != 32768 {
				t.Errorf("%s: page size %d, want 32768", f.Name, ps)
			}
			if jm := JournalMode(t, path); jm != "wal" {
				t.Errorf("%s: journal mode %s, want wal", f.Name, jm)
			}
		} else if jm := JournalMode(t, path); jm != "delete" {
			t.Errorf("foreign.db: journal mode %s, want delete", jm)
		}
	}
	// The fixtures on disk must not carry -wal or -shm files.
	for _, f := range kohakufixtures.Files() {
		for _, suffix := range []string{"-wal", "-shm", "-journal"} {
			if _, err := os.Stat(filepath.Join(TestdataDir(t), f.Name+suffix)); err == nil {
				t.Errorf("%s%s is committed", f.Name, suffix)
			}
		}
	}
}

// TestFixtureSpecials checks the entries the issue names: the empty key,
// a non-UTF-8 key, an empty value stored as a zero-length BLOB (not NULL),
// the 3 MB value and the header-encoded values in B/C.
func TestFixtureSpecials(t *testing.T) {
	path := CopyFixture(t, "format-c.db")
	got := ReadAll(t, path, "kv")
	checks := []struct {
		key  string
		want []byte
	}{
		{"", []byte("value of the empty key")},
		{"\xff\xfe\x00\x01", []byte("value of a key that is not UTF-8")},
		{"empty.bin", []byte{}},
		{"enc/str", append([]byte{0x89, 0x4B, 1, 6, 0, 0, 0, 0, 0x56, 0x4B}, "héllo wörld"...)},
		{"enc/int", []byte{0x89, 0x4B, 1, 2, 0, 0, 0, 0, 0x56, 0x4B, 42, 0, 0, 0, 0, 0, 0, 0}},
		{"enc/dict", []byte{0x89, 0x4B, 1, 4, 0, 0, 0, 0, 0x56, 0x4B, 0x81, 0xA1, 0x61, 0x01}},
	}
	for _, c := range checks {
		if v, ok := got[c.key]; !ok || !bytes.Equal(v, c.want) {
			t.Errorf("key %x: got %x (present %v), want %x", c.key, v, ok, c.want)
		}
	}
	if n := len(got["videos/clip.mp4"]); n != 3*1024*1024 {
		t.Errorf("large value is %d bytes, want 3 MiB", n)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var typ string
	var n int
	if err := db.QueryRow("SELECT typeof(value), length(value) FROM kv WHERE key = CAST('empty.bin' AS BLOB)").Scan(&typ, &n); err != nil {
		t.Fatal(err)
	}
	if typ != "blob" || n != 0 {
		t.Errorf("empty value is %s of length %d, want a zero-length blob", typ, n)
	}
	var features, version string
	if err := db.QueryRow("SELECT (SELECT value FROM kohakuvault_meta WHERE key = 'kv_features'), (SELECT value FROM kohakuvault_meta WHERE key = 'schema_version')").Scan(&features, &version); err != nil {
		t.Fatal(err)
	}
	if features != "headers_v1,auto_pack_v1" || version != "2" {
		t.Errorf("kohakuvault_meta: kv_features %q schema_version %q", features, version)
	}
}

// TestReadAllRejectsWhatKohakuCannotRead stores a TEXT key, a NULL-free
// TEXT value and a wrong size behind KohakuVault's back and expects
// ReadAll to fail the (fake) test for each.
func TestReadAllRejectsWhatKohakuCannotRead(t *testing.T) {
	cases := []struct {
		fixture, table, stmt string
	}{
		{"format-b.db", "kv", "INSERT INTO kv(key, value) VALUES ('text key', X'00')"},
		{"format-b.db", "kv", "INSERT INTO kv(key, value) VALUES (X'01', 'text value')"},
		{"format-a.db", "kv", "UPDATE kv SET size = size + 1 WHERE key = CAST('top.txt' AS BLOB)"},
		{"format-a.db", "kv", "INSERT INTO kv(key, value, size) VALUES (X'02', 123, 3)"},
	}
	for _, c := range cases {
		path := CopyFixture(t, c.fixture)
		db, err := sql.Open("sqlite3", "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(c.stmt); err != nil {
			t.Fatalf("%s: %v", c.stmt, err)
		}
		db.Close()
		if !fails(t, func(tb testing.TB) { ReadAll(tb, path, c.table) }) {
			t.Errorf("ReadAll accepted a table after %q", c.stmt)
		}
	}
	// And the untouched fixtures pass.
	path := CopyFixture(t, "format-a.db")
	if fails(t, func(tb testing.TB) { ReadAll(tb, path, "kv") }) {
		t.Errorf("ReadAll rejected the untouched format-A fixture")
	}
}

// TestCheckManifestDetectsChanges changes one value, adds a key and
// deletes one, and expects CheckManifest to fail each time.
func TestCheckManifestDetectsChanges(t *testing.T) {
	changes := []func(tb testing.TB, path string){
		func(tb testing.TB, path string) {
			PutLikeKohaku(tb, path, "kv", FormatBC, []byte("top.txt"), []byte("changed\n"))
		},
		func(tb testing.TB, path string) { PutLikeKohaku(tb, path, "kv", FormatBC, []byte("extra"), []byte{}) },
		func(tb testing.TB, path string) { DeleteLikeKohaku(tb, path, "kv", []byte{0xff, 0xfe, 0x00, 0x01}) },
	}
	for i, change := range changes {
		path := CopyFixture(t, "format-b.db")
		if fails(t, func(tb testing.TB) { CheckManifest(tb, path, "format-b.db", "kv") }) {
			t.Fatalf("change %d: untouched copy fails", i)
		}
		change(t, path)
		if !fails(t, func(tb testing.TB) { CheckManifest(tb, path, "format-b.db", "kv") }) {
			t.Errorf("change %d not detected", i)
		}
	}
}

// TestPutGetDeleteLikeKohaku round-trips through KohakuVault's statements
// in both formats, including an empty value and the empty key, and checks
// that the schema, page size and journal mode did not change.
func TestPutGetDeleteLikeKohaku(t *testing.T) {
	for _, c := range []struct{ fixture, format string }{{"format-a.db", FormatA}, {"format-c.db", FormatBC}} {
		path := CopyFixture(t, c.fixture)
		before := Schema(t, path)
		PutLikeKohaku(t, path, "kv", c.format, []byte("new/key"), []byte("v1"))
		PutLikeKohaku(t, path, "kv", c.format, []byte("new/key"), []byte("value two")) // the upsert's update path
		PutLikeKohaku(t, path, "kv", c.format, []byte{}, nil)                          // empty key, empty value
		if v, ok := GetLikeKohaku(t, path, "kv", []byte("new/key")); !ok || string(v) != "value two" {
			t.Errorf("%s: got %q %v", c.fixture, v, ok)
		}
		if v, ok := GetLikeKohaku(t, path, "kv", []byte{}); !ok || v == nil || len(v) != 0 {
			t.Errorf("%s: empty key: got %q %v", c.fixture, v, ok)
		}
		if !DeleteLikeKohaku(t, path, "kv", []byte("new/key")) || DeleteLikeKohaku(t, path, "kv", []byte("new/key")) {
			t.Errorf("%s: delete did not delete exactly once", c.fixture)
		}
		if _, ok := GetLikeKohaku(t, path, "kv", []byte("new/key")); ok {
			t.Errorf("%s: deleted key still found", c.fixture)
		}
		got := ReadAll(t, path, "kv") // types and size still right
		if v, ok := got[""]; !ok || len(v) != 0 {
			t.Errorf("%s: empty key after put: %q %v", c.fixture, v, ok)
		}
		if after := Schema(t, path); after != before {
			t.Errorf("%s: schema changed:\n%s\nvs\n%s", c.fixture, before, after)
		}
		if PageSize(t, path) != 32768 || JournalMode(t, path) != "wal" {
			t.Errorf("%s: page size %d journal %s", c.fixture, PageSize(t, path), JournalMode(t, path))
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(path + suffix); err == nil {
				t.Errorf("%s: %s left after the helpers closed", c.fixture, suffix)
			}
		}
	}
}

// fakeTB records failures instead of failing the real test.
type fakeTB struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.failed = true
	f.msg = format
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = format
	panic(fakeFatal{})
}

type fakeFatal struct{}

// fails runs f with a fakeTB and reports whether it failed (Errorf or Fatalf).
func fails(t *testing.T, f func(tb testing.TB)) (failed bool) {
	ft := &fakeTB{TB: t}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fakeFatal); !ok {
				panic(r)
			}
		}
		failed = ft.failed
	}()
	f(ft)
	return ft.failed
}

// TestManifestIsCurrent: the committed manifest.json is what the fixture
// description gives today, so a change to kohakufixtures without
// regenerating the files (go run ./scripts/mkkohaku -out kohaku/testdata)
// shows here.
func TestManifestIsCurrent(t *testing.T) {
	want, err := json.MarshalIndent(kohakufixtures.BuildManifest(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(TestdataDir(t), "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(want, '\n')) {
		t.Errorf("kohaku/testdata/manifest.json is stale: rerun go run ./scripts/mkkohaku -out kohaku/testdata")
	}
}

// TestFixtureStatementsVerbatim: SQLite keeps a CREATE statement's text
// (from the table name on, IF NOT EXISTS dropped) in sqlite_schema; the
// fixtures must hold KohakuVault's text with its whitespace.
func TestFixtureStatementsVerbatim(t *testing.T) {
	const (
		tableA = "'CREATE TABLE kv (\n" +
			"                id    INTEGER PRIMARY KEY,\n" +
			"                key   BLOB    NOT NULL UNIQUE,\n" +
			"                value BLOB    NOT NULL,\n" +
			"                size  INTEGER NOT NULL\n" +
			"            )'"
		indexA  = "'CREATE UNIQUE INDEX kv_key_idx\n            ON kv(key)'"
		tableBC = "'CREATE TABLE kv (\n" +
			"                key   BLOB PRIMARY KEY NOT NULL,\n" +
			"                value BLOB NOT NULL\n" +
			"            )'"
		meta = "'CREATE TABLE kohakuvault_meta (\n" +
			"                key TEXT PRIMARY KEY,\n" +
			"                value TEXT NOT NULL\n" +
			"            )'"
	)
	for _, c := range []struct {
		fixture string
		want    string
	}{
		{"format-a.db", "index|kv_key_idx|kv|" + indexA + "\n" +
			"index|sqlite_autoindex_kv_1|kv|NULL\n" +
			"table|kv|kv|" + tableA + "\n"},
		{"format-b.db", "index|sqlite_autoindex_kv_1|kv|NULL\n" +
			"table|kv|kv|" + tableBC + "\n"},
	} {
		if got := Schema(t, CopyFixture(t, c.fixture)); got != c.want {
			t.Errorf("%s schema:\n%s\nwant:\n%s", c.fixture, got, c.want)
		}
	}
	c := Schema(t, CopyFixture(t, "format-c.db"))
	for _, want := range []string{"table|kv|kv|" + tableBC + "\n", "table|kohakuvault_meta|kohakuvault_meta|" + meta + "\n",
		"table|sqlite_sequence|sqlite_sequence|", "table|text_vault|text_vault|'CREATE VIRTUAL TABLE text_vault USING fts5(content, value_ref UNINDEXED)'"} {
		if !strings.Contains(c, want) {
			t.Errorf("format-c.db schema lacks %q:\n%s", want, c)
		}
	}
}
