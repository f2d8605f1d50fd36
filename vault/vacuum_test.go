package vault

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Deleting values gives their space back to the disk without an explicit
// VACUUM: the background releases free pages in steps, and a writer
// meanwhile is never held up for long. With a rollback journal too.
func TestDeletedSpaceIsReleased(t *testing.T) {
	for _, wal := range []bool{true, false} {
		t.Run(map[bool]string{true: "wal", false: "nowal"}[wal], func(t *testing.T) { testDeletedSpaceIsReleased(t, wal) })
	}
}

func testDeletedSpaceIsReleased(t *testing.T, wal bool) {
	hangWatchdog(t, 3*time.Minute)
	const (
		busy    = 2 * time.Second
		values  = 120
		valSize = 1 << 20
		small   = 16 << 20 // the file once the space is released
	)
	path := filepath.Join(t.TempDir(), "vac.db")
	o := DefaultOptions()
	o.BusyTimeout = busy
	o.EnableWAL = wal
	v, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	for i := 0; i < values; i++ {
		mustPut(t, v, fmt.Sprintf("big/%03d", i), genBytes(uint64(i+1), valSize))
	}
	// The pages reach the file at the background checkpoints.
	waitSize := func(what string, ok func(int64) bool) int64 {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			size := fileSize(path)
			if ok(size) {
				return size
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the file is still %s after 60 s", what, mib(size))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	full := waitSize("after the puts", func(n int64) bool { return n >= values*valSize })
	before, err := v.StatFS()
	if err != nil {
		t.Fatal(err)
	}

	for i := 0; i < values; i++ {
		if err := v.Delete(fmt.Sprintf("big/%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// A writer keeps going while the space is released.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var worst time.Duration
	var writes int
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			start := time.Now()
			if err := v.Put(fmt.Sprintf("w/%02d", i%20), genBytes(uint64(1000+i), 64<<10)); err != nil {
				werr = err
				return
			}
			worst = max(worst, time.Since(start))
			writes++
		}
	}()
	start := time.Now()
	shrunk := waitSize("after the deletes", func(n int64) bool { return n < small })
	took := time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("file %s with %d MiB stored, %s %v after deleting them; %d writes meanwhile, slowest %v",
		mib(full), values, mib(shrunk), took.Round(time.Millisecond), writes, worst.Round(time.Millisecond))
	if werr != nil {
		t.Fatalf("a write while the space was released: %v", werr)
	}
	if worst >= busy/2 {
		t.Errorf("a write took %v while the space was released, near the busy timeout %v", worst.Round(time.Millisecond), busy)
	}

	// statfs: what the data takes fell by the deleted bytes, and the free
	// space grew by as much, whether still inside the file or on the disk.
	after, err := v.StatFS()
	if err != nil {
		t.Fatal(err)
	}
	used := func(s FSStats) int64 { return s.DBBytes - (s.FreeBytes - s.DiskFree) }
	if drop := used(before) - used(after); drop < values*valSize*9/10 {
		t.Errorf("statfs: used space fell by %s after deleting %d MiB (before %+v, after %+v)", mib(drop), values, before, after)
	}
	if inside := after.FreeBytes - after.DiskFree; inside > small {
		t.Errorf("statfs: %s still free inside a file of %s after the release", mib(inside), mib(after.DBBytes))
	}
}

// A vault created without incremental auto-vacuum (auto_vacuum = NONE)
// keeps working and counts its free pages as free; Optimize converts it.
func TestVaultWithoutAutoVacuum(t *testing.T) {
	hangWatchdog(t, 2*time.Minute)
	path := filepath.Join(t.TempDir(), "none.db")
	raw := rawDB(t, path, false)
	for _, s := range []string{"PRAGMA auto_vacuum = NONE", "PRAGMA journal_mode = WAL", "CREATE TABLE x (a)", "DROP TABLE x"} {
		if _, err := raw.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	raw.Close()
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	autoVacuum := func() int {
		t.Helper()
		var n int
		db := rawDB(t, path, true) // a new connection reads the header afresh
		defer db.Close()
		if err := db.QueryRow("PRAGMA auto_vacuum").Scan(&n); err != nil {
			t.Fatal(err)
		}
		// The background's own check must see the same on a pooled
		// connection, which may have read the header before the change.
		sp, err := v.space(context.Background())
		if err != nil || sp.incremental != (n == 2) {
			t.Fatalf("auto_vacuum %d, but the background's check says %+v, %v", n, sp, err)
		}
		return n
	}
	if n := autoVacuum(); n != 0 {
		t.Fatalf("auto_vacuum = %d, the test needs a vault without it", n)
	}
	const values = 24
	for i := 0; i < values; i++ {
		mustPut(t, v, fmt.Sprintf("k/%02d", i), genBytes(uint64(i+1), 1<<20))
	}
	before, err := v.StatFS()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < values; i++ {
		if err := v.Delete(fmt.Sprintf("k/%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond) // a background check would have run
	after, err := v.StatFS()
	if err != nil {
		t.Fatal(err)
	}
	if inside := after.FreeBytes - after.DiskFree; inside < values<<20*9/10 {
		t.Errorf("statfs: %s free inside the file after deleting %d MiB (before %+v, after %+v)", mib(inside), values, before, after)
	}
	mustPut(t, v, "again", []byte("works"))
	if got := mustGet(t, v, "again"); string(got) != "works" {
		t.Fatalf("Get = %q", got)
	}
	if err := v.Optimize(); err != nil {
		t.Fatal(err)
	}
	if n := autoVacuum(); n != 2 {
		t.Fatalf("auto_vacuum = %d after Optimize, want 2 (INCREMENTAL)", n)
	}
	if got := mustGet(t, v, "again"); string(got) != "works" {
		t.Fatalf("Get after Optimize = %q", got)
	}
}
