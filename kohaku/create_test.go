package kohaku

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kohakuvault/kvaultfs/internal/kohakutest"
	"github.com/kohakuvault/kvaultfs/store"
)

// TestCreateLikeKohakuVault checks that a created file is what KohakuVault
// v0.8 makes: the schema text of kohakuvault_meta and kv identical to the
// format-C fixture's (built from KohakuVault's statements), nothing else,
// page size 32768, WAL, and that KohakuVault's own statements read and
// write it with BLOB keys and values.
func TestCreateLikeKohakuVault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	if err := Create(path, ""); err != nil {
		t.Fatal(err)
	}
	got := kohakutest.Schema(t, path)
	want := kohakutest.SchemaOf(t, kohakutest.CopyFixture(t, "format-c.db"), "kohakuvault_meta", "kv")
	if got != want || !strings.Contains(got, "table|kv|kv|") {
		t.Errorf("schema of a created file:\n%s\nwant (format-c.db's rows for kohakuvault_meta and kv):\n%s", got, want)
	}
	if ps := kohakutest.PageSize(t, path); ps != 32768 {
		t.Errorf("page size %d, want 32768", ps)
	}
	if jm := kohakutest.JournalMode(t, path); jm != "wal" {
		t.Errorf("journal mode %s, want wal", jm)
	}
	if n := len(kohakutest.ReadAll(t, path, "kv")); n != 0 {
		t.Errorf("new table holds %d keys", n)
	}
	kohakutest.PutLikeKohaku(t, path, "kv", kohakutest.FormatBC, []byte("k"), []byte("v"))
	if v := kohakutest.ReadAll(t, path, "kv")["k"]; !bytes.Equal(v, []byte("v")) {
		t.Errorf("value written with KohakuVault's upsert reads back as %q", v)
	}
	s, err := SurveyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Choose(""); err != nil || info.Name != "kv" || info.Format != FormatBC {
		t.Errorf("survey of a created file chose %+v, %v; want kv B/C", info, err)
	}
}

// TestCreateNamedAndEmptyFile creates a named table in a 0-byte file.
func TestCreateNamedAndEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Create(path, "media"); err != nil {
		t.Fatal(err)
	}
	schema := kohakutest.Schema(t, path)
	if !strings.Contains(schema, "table|media|media|'CREATE TABLE media (\n") {
		t.Errorf("no table media in\n%s", schema)
	}
	if ps := kohakutest.PageSize(t, path); ps != 32768 {
		t.Errorf("page size %d, want 32768", ps)
	}
}

// TestCreateRefuses checks that bad names and existing files are refused
// and leave nothing behind or changed.
func TestCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"1kv", "kv; DROP", `k"v`, "sqlite_x", "kohakuvault_meta", strings.Repeat("a", 65)} {
		path := filepath.Join(dir, "bad.db")
		err := Create(path, name)
		if !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("Create with table %q: %v, want store.ErrInvalidArgument", name, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Create with table %q left a file: %v", name, err)
		}
	}
	existing := kohakutest.CopyFixture(t, "format-a.db")
	before, err := os.ReadFile(existing)
	if err != nil {
		t.Fatal(err)
	}
	if err := Create(existing, ""); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("Create on an existing file: %v, want store.ErrInvalidArgument", err)
	}
	if after, _ := os.ReadFile(existing); !bytes.Equal(before, after) {
		t.Error("Create changed an existing file")
	}
	if err := Create(filepath.Join(dir, "missing", "x.db"), ""); err == nil {
		t.Error("Create in a missing directory succeeded")
	}
}
