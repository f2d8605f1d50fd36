package vault

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// openTest opens a fresh vault in a temp dir, closed at the end of the test.
func openTest(t testing.TB, opts *Options) *Vault {
	t.Helper()
	v, err := Open(filepath.Join(t.TempDir(), "test.db"), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// smallChunks returns options with a small chunk size, so tests cross
// chunk boundaries with little data.
func smallChunks() *Options {
	o := DefaultOptions()
	o.ChunkSize = 4096
	return o
}

func mustPut(t testing.TB, v *Vault, key string, val []byte) {
	t.Helper()
	if err := v.Put(key, val); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func mustGet(t testing.TB, v *Vault, key string) []byte {
	t.Helper()
	b, err := v.Get(key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return b
}

func allKeys(t testing.TB, v *Vault, prefix string) []string {
	t.Helper()
	var out []string
	for k, err := range v.Keys(prefix) {
		if err != nil {
			t.Fatalf("Keys(%q): %v", prefix, err)
		}
		out = append(out, k)
	}
	return out
}

// skipOrFail skips a test whose environment is missing, or fails it when
// KVAULTFS_REQUIRE_ALL=1 (set by CI, where every test must run).
func skipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("KVAULTFS_REQUIRE_ALL") == "1" {
		t.Fatalf("%s (KVAULTFS_REQUIRE_ALL=1: every test must run here)", why)
	}
	t.Skip(why)
}

// strconvQuoteKey is how an error message shows key: plain keys as they
// are, others quoted.
func strconvQuoteKey(k string) string {
	q := strconv.Quote(k)
	if q[1:len(q)-1] == k {
		return k
	}
	return q
}
