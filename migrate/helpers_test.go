package migrate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
)

// watchdog ends the test binary with every goroutine's stack if the test
// runs longer than d: a migration waiting on a pipe or a lock forever
// would otherwise hang CI until its global timeout, with no clue why.
func watchdog(t testing.TB, d time.Duration) {
	timer := time.AfterFunc(d, func() {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		fmt.Fprintf(os.Stderr, "%s: watchdog: still running after %v\n%s\n", t.Name(), d, buf[:n])
		os.Exit(2)
	})
	t.Cleanup(func() { timer.Stop() })
}

// fileState is a file's bytes and mtime, to show a file was not changed.
type fileState struct {
	data  []byte
	mtime time.Time
}

func stateOf(t testing.TB, path string) fileState {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{data, fi.ModTime()}
}

// unchangedFile fails the test if path's bytes or mtime differ from s.
func unchangedFile(t testing.TB, path string, s fileState) {
	t.Helper()
	now := stateOf(t, path)
	if !bytes.Equal(now.data, s.data) {
		t.Errorf("%s: bytes changed", filepath.Base(path))
	}
	if !now.mtime.Equal(s.mtime) {
		t.Errorf("%s: mtime changed from %v to %v", filepath.Base(path), s.mtime, now.mtime)
	}
}

// oldTime is set as a source file's mtime so that a copy's mtime can be
// told from "now".
var oldTime = time.Date(2025, 11, 9, 12, 0, 0, 0, time.UTC)

// setOld gives path an mtime in the past.
func setOld(t testing.TB, path string) {
	t.Helper()
	if err := os.Chtimes(path, oldTime, oldTime); err != nil {
		t.Fatal(err)
	}
}

// readNative reads every key and value of a native vault (read-only).
func readNative(t testing.TB, path string) map[string][]byte {
	t.Helper()
	o := vault.DefaultOptions()
	o.ReadOnly = true
	v, err := vault.Open(path, o)
	if err != nil {
		t.Fatalf("open native vault %s: %v", path, err)
	}
	defer v.Close()
	out := map[string][]byte{}
	for k, err := range v.Keys("") {
		if err != nil {
			t.Fatalf("keys of %s: %v", path, err)
		}
		val, err := v.Get(k)
		if err != nil {
			t.Fatalf("get %q from %s: %v", k, path, err)
		}
		out[k] = val
	}
	return out
}

// newNative makes a native vault at path holding kv.
func newNative(t testing.TB, path string, kv map[string][]byte) {
	t.Helper()
	v, err := vault.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, val := range kv {
		if err := v.Put(k, val); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}

// sameMaps fails the test unless got and want hold the same keys and
// values, naming the differences.
func sameMaps(t testing.TB, what string, got, want map[string][]byte) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%q missing", k))
		case !bytes.Equal(g, w):
			diffs = append(diffs, fmt.Sprintf("%q: %d bytes, want %d", k, len(g), len(w)))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%q extra", k))
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		t.Errorf("%s: %d differences: %s", what, len(diffs), strings.Join(diffs, "; "))
	}
}
