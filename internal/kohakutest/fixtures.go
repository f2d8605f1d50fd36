package kohakutest

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/kohakuvault/kvaultfs/internal/kohakufixtures"
)

// TestdataDir returns the absolute path of kohaku/testdata, wherever the
// calling test runs.
func TestdataDir(tb testing.TB) string {
	tb.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("kohakutest: cannot locate its own source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "kohaku", "testdata")
}

// CopyFixture copies the fixture file name (e.g. "format-c.db") into a
// fresh tb.TempDir() and returns the copy's path, so a test may change it.
func CopyFixture(tb testing.TB, name string) string {
	tb.Helper()
	src, err := os.Open(filepath.Join(TestdataDir(tb), name))
	if err != nil {
		tb.Fatalf("kohakutest: fixture %s: %v", name, err)
	}
	defer src.Close()
	dst := filepath.Join(tb.TempDir(), name)
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		tb.Fatalf("kohakutest: copy fixture %s: %v", name, err)
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		tb.Fatalf("kohakutest: copy fixture %s: %v", name, err)
	}
	if err := out.Close(); err != nil {
		tb.Fatalf("kohakutest: copy fixture %s: %v", name, err)
	}
	return dst
}

// Manifest reads kohaku/testdata/manifest.json.
func Manifest(tb testing.TB) kohakufixtures.Manifest {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(TestdataDir(tb), "manifest.json"))
	if err != nil {
		tb.Fatalf("kohakutest: manifest: %v", err)
	}
	var m kohakufixtures.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		tb.Fatalf("kohakutest: manifest: %v", err)
	}
	return m
}

// ManifestTable returns the manifest's description of one KV table of a
// fixture file; it fails the test if there is none.
func ManifestTable(tb testing.TB, file, table string) kohakufixtures.ManifestTable {
	tb.Helper()
	for _, f := range Manifest(tb).Files {
		if f.Name != file {
			continue
		}
		for _, t := range f.KV {
			if t.Name == table {
				return t
			}
		}
	}
	tb.Fatalf("kohakutest: manifest has no table %s in %s", table, file)
	return kohakufixtures.ManifestTable{}
}

// CheckManifest reads table of the file at path with ReadAll and fails the
// test unless it holds exactly the keys of the manifest's table (fixture
// file, table), each value of the listed length and SHA-256.
func CheckManifest(tb testing.TB, path, file, table string) {
	tb.Helper()
	want := ManifestTable(tb, file, table)
	got := ReadAll(tb, path, table)
	if len(got) != len(want.Entries) {
		tb.Errorf("kohakutest: %s table %s holds %d keys, manifest %d", path, table, len(got), len(want.Entries))
	}
	for _, w := range want.Entries {
		key, err := hexDecode(w.KeyHex)
		if err != nil {
			tb.Fatalf("kohakutest: manifest key %q: %v", w.KeyHex, err)
		}
		v, ok := got[string(key)]
		if !ok {
			tb.Errorf("kohakutest: %s table %s: key %x missing", path, table, key)
			continue
		}
		if d := kohakufixtures.Describe(kohakufixtures.Entry{Key: key, Value: v}); d != w {
			tb.Errorf("kohakutest: %s table %s key %x: got len %d sha256 %s, manifest len %d sha256 %s",
				path, table, key, d.Len, d.SHA256, w.Len, w.SHA256)
		}
	}
}
