package vault

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Benchmarks of the store. They are not timed tests: nothing here fails
// on a slow machine. Run them with
//
//	go test -run '^$' -bench . -benchmem ./vault
//
// The ChunkSize x PageSize matrix that chose DefaultChunkSize and
// DefaultPageSize takes about a minute per pair; its cold parts drop the
// kernel's page cache before every timed part, which needs root. On a
// shared machine run one pair at a time, alternating pairs over several
// rounds, and compare medians (the figures beside the defaults were made
// that way); cpu-ns/op varies far less with other load than ns/op:
//
//	go test -run '^$' -bench 'ChunkSize/chunk=64K/page=16K/' -benchmem ./vault
//
// scripts/bench-vault.sh measures the same kinds of work against plain
// files in the same run.

// benchStreamBytes is the size of one streamed put or get.
const benchStreamBytes = 64 << 20

// benchBlock is 1 MiB of pseudo-random bytes that benchmark values are
// cut from. Random, because all-zero chunks are stored as holes.
var benchBlock = sync.OnceValue(func() []byte { return genBytes(0xbe4c, 1<<20) })

// blockReader yields n bytes by repeating benchBlock, so a stream of any
// size touches no new memory and costs almost nothing to produce.
type blockReader struct {
	left int64
	off  int
}

func newBlockReader(n int64) *blockReader { return &blockReader{left: n} }

func (r *blockReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	blk := benchBlock()
	n := copy(p[:min(int64(len(p)), r.left)], blk[r.off:])
	r.off = (r.off + n) % len(blk)
	r.left -= int64(n)
	return n, nil
}

// benchValue returns n bytes of benchBlock starting at a position picked
// by i, so consecutive values differ.
func benchValue(i, n int) []byte {
	blk := benchBlock()
	start := (i * 4099) % (len(blk) - n)
	return blk[start : start+n]
}

// benchKeys returns n distinct path keys.
func benchKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

// cpuTime is the CPU time (user and system, all threads) this process
// has used. Benchmarks report it per op beside the wall time, because on
// a shared machine it varies much less with the load of others.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time used since start per op, as cpu-ns/op.
func reportCPU(b *testing.B, used time.Duration) {
	b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

func benchOptions(chunk, page int, wal bool) *Options {
	o := DefaultOptions()
	if chunk != 0 {
		o.ChunkSize = chunk
	}
	o.PageSize = page
	o.EnableWAL = wal
	return o
}

func mustOpenBench(b *testing.B, path string, opts *Options) *Vault {
	b.Helper()
	v, err := Open(path, opts)
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	return v
}

func mustPutReader(b *testing.B, v *Vault, key string, n int64) {
	b.Helper()
	if err := v.PutReader(key, newBlockReader(n), n); err != nil {
		b.Fatalf("PutReader(%q): %v", key, err)
	}
}

// BenchmarkStreamPut streams 64 MiB per op over the same key, so each op
// also frees the value it replaces, as a long-running writer would.
func BenchmarkStreamPut(b *testing.B) {
	for _, wal := range []bool{true, false} {
		b.Run(map[bool]string{true: "wal", false: "nowal"}[wal], func(b *testing.B) {
			v := openTest(b, benchOptions(0, 0, wal))
			b.SetBytes(benchStreamBytes)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for range b.N {
				mustPutReader(b, v, "stream.bin", benchStreamBytes)
			}
			reportCPU(b, cpuTime()-cpu)
		})
	}
}

// BenchmarkStreamGet streams a 64 MiB value to io.Discard per op, with
// the page cache warm.
func BenchmarkStreamGet(b *testing.B) {
	v := openTest(b, nil)
	mustPutReader(b, v, "stream.bin", benchStreamBytes)
	b.SetBytes(benchStreamBytes)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		if n, err := v.GetTo("stream.bin", io.Discard); err != nil || n != benchStreamBytes {
			b.Fatalf("GetTo = %d, %v", n, err)
		}
	}
	reportCPU(b, cpuTime()-cpu)
}

// BenchmarkReadAt4KiB reads 4 KiB at random aligned offsets of a 256 MiB
// value through a File, so the read cache (16 MiB) rarely helps.
func BenchmarkReadAt4KiB(b *testing.B) {
	const size = 256 << 20
	v := openTest(b, nil)
	mustPutReader(b, v, "big.bin", size)
	f, err := v.Open("big.bin")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	benchRandomReads(b, f, size)
}

func benchRandomReads(b *testing.B, f *File, size int64) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		off := rng.Int64N(size/4096) * 4096
		if n, err := f.ReadAt(buf, off); err != nil || n != len(buf) {
			b.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
	}
	reportCPU(b, cpuTime()-cpu)
}

// BenchmarkPut puts small values under new keys, one transaction each.
func BenchmarkPut(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			timedPuts(b, openTest(b, nil), "put/", size)
		})
	}
}

// BenchmarkGet gets small values in random order from 10,000 stored ones.
func BenchmarkGet(b *testing.B) {
	const stored = 10000
	for _, size := range []int{1 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			v := openTest(b, nil)
			keys := benchKeys("get/", stored)
			if err := v.EnableCache(1<<30, 1<<30); err != nil {
				b.Fatal(err)
			}
			for i, k := range keys {
				mustPut(b, v, k, benchValue(i, size))
			}
			if err := v.DisableCache(); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := cpuTime()
			for range b.N {
				if got, err := v.Get(keys[rng.IntN(stored)]); err != nil || len(got) != size {
					b.Fatalf("Get = %d bytes, %v", len(got), err)
				}
			}
			reportCPU(b, cpuTime()-cpu)
		})
	}
}

// timedPuts times b.N puts of size-byte values under new keys, ending
// with a FlushCache (nothing to do when the cache is off).
func timedPuts(b *testing.B, v *Vault, prefix string, size int) {
	keys := benchKeys(prefix, b.N)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for i := range b.N {
		if err := v.Put(keys[i], benchValue(i, size)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := v.FlushCache(); err != nil {
		b.Fatal(err)
	}
	reportCPU(b, cpuTime()-cpu)
}

// BenchmarkCachedPut compares puts through the write-back cache with
// puts that commit one transaction each (the default synchronous mode).
// The timed part ends with the final FlushCache. The cache holds up to
// 256 MiB and flushes past 64 MiB.
func BenchmarkCachedPut(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, cached := range []bool{true, false} {
			name := fmt.Sprintf("%dKiB/%s", size>>10, map[bool]string{true: "cache", false: "nocache"}[cached])
			b.Run(name, func(b *testing.B) {
				v := openTest(b, nil)
				if cached {
					if err := v.EnableCache(256<<20, 64<<20); err != nil {
						b.Fatal(err)
					}
				}
				timedPuts(b, v, "cached/", size)
			})
		}
	}
}

// BenchmarkChunkSize is the ChunkSize x PageSize matrix behind
// DefaultChunkSize and DefaultPageSize. For each pair:
//
//   - put: a 64 MiB streamed put per op (WAL, replacing the last one);
//   - get: a 64 MiB streamed get per op, page cache warm;
//   - read4k: 4 KiB random reads of a 256 MiB value through a File;
//   - cold/*: reads of a vault after churn (values of 0.5-8 MiB and
//     16 KiB written, half of them deleted and rewritten twice, so their
//     pages are scattered through the file), with the vault reopened and
//     the page cache dropped before each op: cold/get streams 16 values
//     (~70 MiB), cold/read4k makes 256 random 4 KiB reads through Files
//     (ns/read), cold/get16k gets 256 random 16 KiB values (ns/get).
func BenchmarkChunkSize(b *testing.B) {
	for _, chunk := range []int{64 << 10, 128 << 10, 256 << 10, 1 << 20} {
		for _, page := range []int{4 << 10, 16 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("chunk=%dK/page=%dK", chunk>>10, page>>10), func(b *testing.B) {
				benchChunkPage(b, chunk, page)
			})
		}
	}
}

func benchChunkPage(b *testing.B, chunk, page int) {
	dir := b.TempDir()
	opts := benchOptions(chunk, page, true)

	warm := mustOpenBench(b, filepath.Join(dir, "warm.db"), opts)
	defer warm.Close()
	b.Run("put", func(b *testing.B) {
		b.SetBytes(benchStreamBytes)
		b.ReportAllocs()
		cpu := cpuTime()
		for range b.N {
			mustPutReader(b, warm, "stream.bin", benchStreamBytes)
		}
		reportCPU(b, cpuTime()-cpu)
	})
	b.Run("get", func(b *testing.B) {
		if _, err := warm.Stat("stream.bin"); err != nil {
			mustPutReader(b, warm, "stream.bin", benchStreamBytes)
		}
		b.SetBytes(benchStreamBytes)
		b.ReportAllocs()
		b.ResetTimer()
		cpu := cpuTime()
		for range b.N {
			if _, err := warm.GetTo("stream.bin", io.Discard); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpuTime()-cpu)
	})
	b.Run("read4k", func(b *testing.B) {
		const size = 256 << 20
		if _, err := warm.Stat("big.bin"); err != nil {
			mustPutReader(b, warm, "big.bin", size)
		}
		f, err := warm.Open("big.bin")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		benchRandomReads(b, f, size)
	})
	if err := warm.Close(); err != nil {
		b.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "warm.db"))

	b.Run("cold", func(b *testing.B) {
		benchCold(b, buildChurn(b, filepath.Join(dir, "churn.db"), opts))
	})
}

// benchCold reads a churned vault with the page cache dropped.
func benchCold(b *testing.B, fx *churnFixture) {
	b.Run("get", func(b *testing.B) {
		keys := fx.big[:16]
		var total int64
		for _, k := range keys {
			total += fx.size[k]
		}
		b.SetBytes(total)
		b.ReportAllocs()
		fx.cold(b, func(v *Vault) {
			for _, k := range keys {
				if n, err := v.GetTo(k, io.Discard); err != nil || n != fx.size[k] {
					b.Fatalf("GetTo(%q) = %d, %v", k, n, err)
				}
			}
		})
	})
	b.Run("read4k", func(b *testing.B) {
		const reads = 256
		rng := rand.New(rand.NewPCG(5, 6))
		buf := make([]byte, 4096)
		var files []*File
		b.ReportAllocs()
		fx.coldWith(b, func(v *Vault) { // untimed: open every big value
			files = files[:0]
			for _, k := range fx.big {
				f, err := v.Open(k)
				if err != nil {
					b.Fatal(err)
				}
				files = append(files, f)
			}
		}, func(v *Vault) {
			for range reads {
				f := files[rng.IntN(len(files))]
				off := rng.Int64N(f.Size()/4096) * 4096
				if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*reads), "ns/read")
	})
	b.Run("get16k", func(b *testing.B) {
		const gets = 256
		rng := rand.New(rand.NewPCG(7, 8))
		b.ReportAllocs()
		fx.cold(b, func(v *Vault) {
			for range gets {
				if _, err := v.Get(fx.small[rng.IntN(len(fx.small))]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*gets), "ns/get")
	})
}

// churnFixture is a closed vault whose values were written, deleted and
// rewritten, so that the pages of each value are scattered.
type churnFixture struct {
	path  string
	opts  *Options
	big   []string // keys of the surviving big values, in random order
	small []string // keys of the surviving 16 KiB values
	size  map[string]int64
}

func buildChurn(b *testing.B, path string, opts *Options) *churnFixture {
	const (
		bigValues   = 80 // of 0.5-8 MiB: about 340 MiB
		smallPerBig = 8  // 16 KiB values written between big ones
		rounds      = 2  // each deletes and rewrites half of the values
	)
	v := mustOpenBench(b, path, opts)
	fx := &churnFixture{path: path, opts: opts, size: make(map[string]int64)}
	rng := rand.New(rand.NewPCG(9, 10))
	next := 0
	write := func(nBig int) {
		for range nBig {
			k := fmt.Sprintf("big/%05d.mp4", next)
			n := int64(512<<10 + rng.IntN(15<<19))
			mustPutReader(b, v, k, n)
			fx.big, fx.size[k] = append(fx.big, k), n
			for j := range smallPerBig {
				k := fmt.Sprintf("small/%05d-%d.jpg", next, j)
				mustPut(b, v, k, benchValue(next*smallPerBig+j, 16<<10))
				fx.small, fx.size[k] = append(fx.small, k), 16<<10
			}
			next++
		}
	}
	drop := func(keys []string) []string {
		rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		half := len(keys) / 2
		for _, k := range keys[:half] {
			if err := v.Delete(k); err != nil {
				b.Fatal(err)
			}
			delete(fx.size, k)
		}
		return append([]string(nil), keys[half:]...)
	}
	write(bigValues)
	for range rounds {
		fx.big, fx.small = drop(fx.big), drop(fx.small)
		write(bigValues / 2)
	}
	rng.Shuffle(len(fx.big), func(i, j int) { fx.big[i], fx.big[j] = fx.big[j], fx.big[i] })
	if err := v.Close(); err != nil {
		b.Fatal(err)
	}
	return fx
}

// cold runs op b.N times, timing only op, each time on a freshly opened
// vault with the page cache dropped.
func (fx *churnFixture) cold(b *testing.B, op func(v *Vault)) {
	fx.coldWith(b, nil, op)
}

// coldWith is cold with an untimed setup step after the vault is opened.
func (fx *churnFixture) coldWith(b *testing.B, setup, op func(v *Vault)) {
	b.StopTimer()
	b.ResetTimer()
	var cpu time.Duration
	for range b.N {
		dropPageCache(b)
		v := mustOpenBench(b, fx.path, fx.opts)
		if setup != nil {
			setup(v)
		}
		start := cpuTime()
		b.StartTimer()
		op(v)
		b.StopTimer()
		cpu += cpuTime() - start
		if err := v.Close(); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

var dropNote sync.Once

// dropPageCache writes dirty pages out and drops the kernel's page
// cache. Without root it does nothing and says once that "cold" figures
// are warm.
func dropPageCache(b *testing.B) {
	if os.Geteuid() == 0 {
		unix.Sync()
		err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
		if err == nil {
			return
		}
		dropNote.Do(func() { b.Logf("cannot drop the page cache (%v): cold figures are warm", err) })
		return
	}
	dropNote.Do(func() { b.Log("not root: the page cache is not dropped, so cold figures are warm") })
}

// BenchmarkStreamPutClose times opening a new vault, a 64 MiB streamed
// put and Close, which checkpoints the WAL into the database.
func BenchmarkStreamPutClose(b *testing.B) {
	dir := b.TempDir()
	b.SetBytes(benchStreamBytes)
	b.ReportAllocs()
	var cpu time.Duration
	for i := range b.N {
		start := cpuTime()
		path := filepath.Join(dir, fmt.Sprintf("%d.db", i))
		v := mustOpenBench(b, path, nil)
		mustPutReader(b, v, "stream.bin", benchStreamBytes)
		if err := v.Close(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime() - start
		os.Remove(path)
		b.StartTimer()
	}
	reportCPU(b, cpu)
}
