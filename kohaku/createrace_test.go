package kohaku

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

// TestCreateConcurrent: several Creates of one path at once. Exactly one
// succeeds, the others fail with store.ErrExists, and none removes or
// spoils the file another made: afterwards it opens as a KohakuVault table with page
// size 32768. The old code checked with Stat and then opened with mode
// rwc: a loser that failed removed the winner's file.
func TestCreateConcurrent(t *testing.T) {
	watchdog(t, 2*time.Minute)
	dir := t.TempDir()
	for round := range 15 {
		path := filepath.Join(dir, "race"+string(rune('a'+round))+".db")
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = Create(path, "")
			}()
		}
		wg.Wait()
		ok := 0 // exactly one: the others wait on its flock and find the file filled
		for _, err := range errs {
			if err == nil {
				ok++
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d Creates succeeded, want exactly 1: %v", round, ok, errs)
		}
		for _, err := range errs {
			if err != nil && !errors.Is(err, store.ErrExists) {
				t.Errorf("round %d: a losing Create: %v, want store.ErrExists", round, err)
			}
		}
		tb, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: the file after concurrent Creates (%v): %v", round, errs, err)
		}
		if tb.Name() != "kv" || tb.Format() != FormatBC {
			t.Errorf("round %d: table %s format %v", round, tb.Name(), tb.Format())
		}
		tb.Close()
		var ps int
		if err := rawDB(t, path).QueryRow(`PRAGMA page_size`).Scan(&ps); err != nil || ps != 32768 {
			t.Errorf("round %d: page size %d, %v", round, ps, err)
		}
	}
}

// TestCreateDanglingSymlink: a path that is a symlink to nothing exists
// as a name: Create refuses it (O_EXCL), creates nothing at the target and
// leaves the link alone.
func TestCreateDanglingSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target.db")
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	err := Create(link, "")
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("Create on a dangling symlink: %v, want store.ErrExists", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Create made the symlink's target: %v", err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink is gone or changed: %v", err)
	}
}
