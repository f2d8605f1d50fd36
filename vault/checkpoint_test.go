package vault

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// A read snapshot held by another connection (another process, a
// sqlite3 shell, a backup: here a raw connection in a read transaction,
// which pins the WAL just the same) must not make commits wait for the
// busy timeout: the log grows while the reader holds it, and is bounded
// again once the reader ends.
func TestLongReaderDoesNotStallCommits(t *testing.T) {
	hangWatchdog(t, 3*time.Minute)
	const (
		busy    = time.Second
		puts    = 150 // past walThrottleBytes: writers are not throttled while a reader pins the log
		valSize = 1 << 20
		// bounded is the -wal size the log must get back under once the
		// reader has ended: far below what the reader let it grow to.
		bounded = 32 << 20
	)
	path := filepath.Join(t.TempDir(), "reader.db")
	o := DefaultOptions()
	o.BusyTimeout = busy
	v, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	mustPut(t, v, "seed", []byte("seed"))

	// The snapshot holder: a read transaction that has read a page.
	raw := rawDB(t, path, true)
	ctx := context.Background()
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rtx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rtx.Rollback()
	var n int
	if err := rtx.QueryRow(v.sql(`SELECT count(*) FROM {t}_inodes`)).Scan(&n); err != nil {
		t.Fatal(err)
	}

	wal := path + "-wal"
	var worst time.Duration
	var peak int64
	stalls := 0
	for i := 0; i < puts && stalls < 3; i++ {
		val := genBytes(uint64(i+1), valSize)
		start := time.Now()
		mustPut(t, v, fmt.Sprintf("v/%03d", i), val)
		d := time.Since(start)
		worst = max(worst, d)
		if d >= busy/2 {
			stalls++ // a few are proof enough; the old code stalls at every later put
			t.Logf("put %d (%d MiB committed) took %v", i, i+1, d.Round(time.Millisecond))
		}
		peak = max(peak, fileSize(wal))
	}
	t.Logf("%d puts of 1 MiB beside a read snapshot: slowest %v, -wal peak %s", puts, worst.Round(time.Millisecond), mib(peak))
	if worst >= busy/2 {
		t.Fatalf("a put beside a read snapshot took %v, near the busy timeout %v: the commit waited on a checkpoint", worst.Round(time.Millisecond), busy)
	}
	if peak < walMaxBytes {
		t.Fatalf("the -wal peaked at %s with the reader holding it; the test expects it past %s", mib(peak), mib(walMaxBytes))
	}

	// The reader ends: a few more commits later, the log has started
	// afresh and the file is small again.
	if err := rtx.Rollback(); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	deadline := time.Now().Add(30 * time.Second)
	var after int64
	for i := 0; ; i++ {
		mustPut(t, v, fmt.Sprintf("w/%03d", i%50), genBytes(uint64(1000+i), 64<<10))
		if after = fileSize(wal); after < bounded {
			t.Logf("-wal at %s after %d more commits", mib(after), i+1)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the -wal is still %s 30 s after the reader ended, want under %s", mib(after), mib(bounded))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, i := range []int{0, puts / 2, puts - 1} {
		if got := mustGet(t, v, fmt.Sprintf("v/%03d", i)); !bytes.Equal(got, genBytes(uint64(i+1), valSize)) {
			t.Fatalf("v/%03d: wrong value", i)
		}
	}
}
