package migrate

import (
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
)

// BenchmarkLargeValue streams one large value back (native vault into a
// new KohakuVault file) and forward (into a new native vault), and reports
// the peak Go heap and the process's peak RSS during the two migrations:
// both must stay flat as the value grows (compare sizes), since neither
// direction ever holds a value whole. The size in MiB comes from
// KVAULTFS_MIGRATE_MB (default 256), e.g.
//
//	KVAULTFS_MIGRATE_MB=32  go test -run '^$' -bench LargeValue -benchtime 1x ./migrate/
//	KVAULTFS_MIGRATE_MB=512 go test -run '^$' -bench LargeValue -benchtime 1x ./migrate/
func BenchmarkLargeValue(b *testing.B) {
	mib := 256
	if s := os.Getenv("KVAULTFS_MIGRATE_MB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 950 {
			b.Fatalf("KVAULTFS_MIGRATE_MB=%q: want 1 to 950", s)
		}
		mib = n
	}
	size := int64(mib) << 20
	dir := b.TempDir()
	native := filepath.Join(dir, "native.db")
	writeLarge(b, native, "big.bin", size)
	runtime.GC()

	b.ResetTimer()
	for i := range b.N {
		back := filepath.Join(dir, "back"+strconv.Itoa(i)+".db")
		fwd := filepath.Join(dir, "fwd"+strconv.Itoa(i)+".db")
		resetPeakRSS()
		stop := sampleHeap()
		start := time.Now()
		if _, err := Back(context.Background(), native, back, Options{}); err != nil {
			b.Fatal(err)
		}
		if _, err := Forward(context.Background(), back, fwd, Options{}); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		heap := stop()
		b.ReportMetric(float64(heap.heap)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(heap.anon)/(1<<10), "peak-RssAnon-MiB")
		b.ReportMetric(float64(statusKB("VmHWM"))/(1<<10), "peak-RSS-MiB")
		b.ReportMetric(float64(2*size)/(1<<20)/elapsed.Seconds(), "MiB/s")
		b.ReportMetric(float64(mib), "value-MiB")
	}
}

// writeLarge stores size pseudo-random bytes under key, 1 MiB at a time.
func writeLarge(b *testing.B, path, key string, size int64) {
	v, err := vault.Open(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	f, err := v.OpenFile(key, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{1})
	for off := int64(0); off < size; off += int64(len(buf)) {
		r.Read(buf)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// peaks are the highest Go heap in use (bytes) and anonymous resident
// memory (KiB) seen. Peak RSS (VmHWM) also counts the database files'
// pages mapped by SQLite's mmap, which the kernel reclaims at will and
// which grow with the file, not with memory use; RssAnon does not.
type peaks struct {
	heap uint64
	anon int64
}

// sampleHeap samples the Go heap and RssAnon every 5 ms until the
// returned function is called, which returns the peaks.
func sampleHeap() func() peaks {
	var p peaks
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			p.heap = max(p.heap, ms.HeapInuse)
			p.anon = max(p.anon, statusKB("RssAnon"))
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() peaks {
		close(done)
		<-stopped
		return p
	}
}

// resetPeakRSS resets the kernel's peak RSS of this process (VmHWM), so
// that it measures from here.
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// statusKB returns a field of /proc/self/status in KiB, 0 if unknown.
func statusKB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
