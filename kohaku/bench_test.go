package kohaku

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// bigTable holds one value of size bytes (a pattern) under "big".
func bigTable(b testing.TB, size int64) *Table {
	tb := openTable(b, FormatBC)
	r := io.LimitReader(&patternReader{}, size)
	if err := tb.PutReader("big", r, size); err != nil {
		b.Fatal(err)
	}
	return tb
}

// patternReader yields an endless non-zero pattern.
type patternReader struct{ off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.off) ^ byte(p.off>>10) | 1
		p.off++
	}
	return len(b), nil
}

// BenchmarkReadAt1MiB: random 1 MiB reads of a 256 MiB value through blob
// I/O (Table.ReadAt), against SELECT substr(value, ...) on the same file,
// which loads the whole value per call.
func BenchmarkReadAt1MiB(b *testing.B) {
	const size, piece = 256 << 20, 1 << 20
	tb := bigTable(b, size)
	p := make([]byte, piece)
	b.Run("blob", func(b *testing.B) {
		b.SetBytes(piece)
		for b.Loop() {
			if _, err := tb.ReadAt("big", p, rand.Int64N(size-piece)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("substr", func(b *testing.B) {
		b.SetBytes(piece)
		for b.Loop() {
			if err := tb.r.QueryRow(`SELECT substr(value, ?2, ?3) FROM kv WHERE key = ?1`, []byte("big"), rand.Int64N(size-piece)+1, piece).Scan(&p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetTo streams a 256 MiB value to io.Discard.
func BenchmarkGetTo(b *testing.B) {
	const size = 256 << 20
	tb := bigTable(b, size)
	b.SetBytes(size)
	for b.Loop() {
		if n, err := tb.GetTo("big", io.Discard); err != nil || n != size {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkPutReader streams a 256 MiB value in.
func BenchmarkPutReader(b *testing.B) {
	const size = 256 << 20
	tb := openTable(b, FormatBC)
	b.SetBytes(size)
	for b.Loop() {
		if err := tb.PutReader("big", io.LimitReader(&patternReader{}, size), size); err != nil {
			b.Fatal(err)
		}
	}
}

// procStatus returns a field of /proc/self/status in KiB.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// peakAnon samples the process's anonymous memory (heap, SQLite's page
// caches; not the mapped file) while fn runs and returns its peak in MiB.
func peakAnon(fn func()) int64 {
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if v := procStatus("RssAnon"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return peak.Load() >> 10
}

// TestStreamedMemoryFlat: a 900 MB PutReader and GetTo keep the process's
// anonymous memory flat: the peak with a 900 MB value stays within a small
// margin of the peak with a 10 MB one. Skipped with -short (it writes
// about 3 GB to disk).
func TestStreamedMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 3 GB; run without -short")
	}
	watchdog(t, 10*time.Minute)
	measure := func(size int64) (put, get int64) {
		tb := openTable(t, FormatBC)
		put = peakAnon(func() {
			if err := tb.PutReader("big", io.LimitReader(&patternReader{}, size), size); err != nil {
				t.Fatal(err)
			}
		})
		var sum countWriter
		get = peakAnon(func() {
			if n, err := tb.GetTo("big", &sum); err != nil || n != size {
				t.Fatal(n, err)
			}
		})
		// Spot-check the bytes streamed back.
		p := make([]byte, 4096)
		if _, err := tb.ReadAt("big", p, size-4096); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, 4096)
		(&patternReader{off: size - 4096}).Read(want)
		if !bytes.Equal(p, want) {
			t.Fatal("tail of the big value differs")
		}
		tb.Close()
		return put, get
	}
	smallPut, smallGet := measure(10 << 20)
	bigPut, bigGet := measure(900_000_000)
	t.Logf("peak RssAnon MiB: put 10 MB %d, 900 MB %d; get 10 MB %d, 900 MB %d", smallPut, bigPut, smallGet, bigGet)
	const margin = 64 // MiB: page caches filling, GC slack
	if bigPut > smallPut+margin || bigGet > smallGet+margin {
		t.Fatalf("memory grows with the value: put %d -> %d MiB, get %d -> %d MiB", smallPut, bigPut, smallGet, bigGet)
	}
}

// countWriter counts bytes and keeps none.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
