// Command benchvault runs one benchmark job of scripts/bench-vault.sh
// against a vault or against its plain-files baseline, and prints the
// report of a run. Each job is one process, so that memory figures and
// Go heaps do not carry over from one job to the next.
//
//	benchvault [flags] JOB VARIANT   run a job, print result lines
//	benchvault report FILE           print the table of a run's results
//
// Result lines read "R rep job variant value unit". Durable means: the
// vault ends with Close (streams) or Sync, and plain files with fsync of
// the file (streams) or one syncfs(2) of the file system after the last
// file (many files), the closest plain-file analogue of one Sync.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kohakuvault/kvaultfs/vault"
)

var (
	dir       = flag.String("dir", os.TempDir(), "directory for the vaults and files")
	rep       = flag.Int("rep", 1, "repetition number, printed in result lines")
	streamMiB = flag.Int64("stream-mib", 1024, "size of the streamed value in MiB")
	cacheCap  = flag.Int64("cache-cap-mib", 256, "write-back cache capBytes in MiB for the cache jobs")
	cacheThr  = flag.Int64("cache-threshold-mib", 64, "write-back cache flushThreshold in MiB for the cache jobs")
	chunkKiB  = flag.Int("chunk-kib", 0, "ChunkSize of new vaults in KiB (0: the default)")
	pageKiB   = flag.Int("page-kib", 0, "PageSize of new vaults in KiB (0: the default)")
)

// options returns the vault options of the run.
func options() *vault.Options {
	o := vault.DefaultOptions()
	if *chunkKiB > 0 {
		o.ChunkSize = *chunkKiB << 10
	}
	o.PageSize = *pageKiB << 10
	return o
}

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: benchvault [flags] JOB VARIANT | benchvault report FILE\n\njobs and variants:\n%s\nflags:\n", jobHelp)
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) != 2 {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if args[0] == "report" {
		err = report(args[1])
	} else {
		err = runJob(args[0], args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchvault: %s %s: %v\n", args[0], args[1], err)
		os.Exit(1)
	}
}

const jobHelp = `  streamput file|wal|nowal   write one streamed value, timed to Close (vault) or fsync (file)
  streamget file|vault       read it back, cold (page cache dropped) and warm
  batch16k  file|vault       20,000 values of 16 KiB: put in one batch (vault: write-back cache), read in random order
  large1m   file|vault       1,000 values of 1 MiB: put one by one, read in random order
  cache1k   file|on|off      200,000 puts of 1 KiB: cache on, cache off (one transaction each), one file each
  cache16k  file|on|off      50,000 puts of 16 KiB, likewise
`

// result prints one figure.
func result(job, variant string, value float64, unit string) {
	fmt.Printf("R %d %s %s %.6g %s\n", *rep, job, variant, value, unit)
}

// note prints a remark that the report repeats under the table.
func note(format string, a ...any) { fmt.Printf("N %s\n", fmt.Sprintf(format, a...)) }

func runJob(job, variant string) error {
	switch job {
	case "streamput":
		return streamPut(variant)
	case "streamget":
		return streamGet(variant)
	case "batch16k":
		return manyValues(job, variant, 20000, 16<<10, true)
	case "large1m":
		return manyValues(job, variant, 1000, 1<<20, false)
	case "cache1k":
		return cachePuts(job, variant, 200000, 1<<10)
	case "cache16k":
		return cachePuts(job, variant, 50000, 16<<10)
	}
	return fmt.Errorf("unknown job %q", job)
}

// block is 1 MiB of pseudo-random bytes that all data is cut from
// (all-zero chunks would be stored as holes).
var block = sync.OnceValue(func() []byte {
	b := make([]byte, 1<<20)
	x := uint64(0x6b76)
	for i := 0; i < len(b); i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(b[i:], z^(z>>31))
	}
	return b
})

// blockReader yields n bytes by repeating block.
type blockReader struct {
	left int64
	off  int
}

func (r *blockReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	b := block()
	n := copy(p[:min(int64(len(p)), r.left)], b[r.off:])
	r.off = (r.off + n) % len(b)
	r.left -= int64(n)
	return n, nil
}

// value returns n bytes of block at a position picked by i.
func value(i, n int) []byte {
	b := block()
	start := (i * 4099) % (len(b) - n + 1)
	return b[start : start+n]
}

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / 1e6 / d.Seconds() }
func opsps(n int, d time.Duration) float64      { return float64(n) / d.Seconds() }

// dropCaches writes dirty pages out and empties the kernel's page cache,
// reporting false (with a note) when it cannot: then "cold" is warm.
func dropCaches() bool {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		note("cannot drop the page cache (%v): cold figures are warm", err)
		return false
	}
	return true
}

func coldName(dropped bool) string {
	if dropped {
		return "cold"
	}
	return "notcold"
}

// rssSampler records the peak RssAnon of this process and the peak size
// of a file (a -wal), every 5 ms.
type rssSampler struct {
	stop, done chan struct{}
	file       string
	peak       int64
	filePeak   int64
}

func sampleRSS(file string) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{}), file: file}
	s.take()
	go func() {
		defer close(s.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.take()
				return
			case <-t.C:
				s.take()
			}
		}
	}()
	return s
}

func (s *rssSampler) take() {
	s.peak = max(s.peak, rssAnon())
	if s.file != "" {
		if st, err := os.Stat(s.file); err == nil {
			s.filePeak = max(s.filePeak, st.Size())
		}
	}
}

// end stops the sampler and returns the peaks in MiB.
func (s *rssSampler) end() (rss, file float64) {
	close(s.stop)
	<-s.done
	return float64(s.peak) / (1 << 20), float64(s.filePeak) / (1 << 20)
}

// rssAnon is RssAnon from /proc/self/status in bytes: the process's
// anonymous memory, leaving out the mmap'd database.
func rssAnon() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte("RssAnon:")); ok {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func streamPaths() (file, wal, nowal string) {
	return filepath.Join(*dir, "stream.bin"), filepath.Join(*dir, "stream-wal.db"), filepath.Join(*dir, "stream-nowal.db")
}

// streamPut writes the streamed value: to a plain file with 1 MiB writes
// and fsync, or to a new vault with PutReader and Close (which
// checkpoints the WAL and syncs the database). The vault files are kept
// for streamget.
func streamPut(variant string) error {
	size := *streamMiB << 20
	file, walPath, nowalPath := streamPaths()
	block()
	var s *rssSampler
	var start time.Time
	switch variant {
	case "file":
		os.Remove(file)
		s, start = sampleRSS(""), time.Now()
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		if _, err := io.CopyBuffer(f, &blockReader{left: size}, buf); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	case "wal", "nowal":
		path := walPath
		opts := options()
		if variant == "nowal" {
			path, opts.EnableWAL = nowalPath, false
		}
		removeDB(path)
		s, start = sampleRSS(path+"-wal"), time.Now()
		v, err := vault.Open(path, opts)
		if err != nil {
			return err
		}
		if err := v.PutReader("videos/stream.mp4", &blockReader{left: size}, size); err != nil {
			v.Close()
			return err
		}
		if err := v.Close(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown variant %q", variant)
	}
	d := time.Since(start)
	rss, wal := s.end()
	result("streamput", variant, mbps(size, d), "MB/s")
	result("rss", "put-"+variant, rss, "MiB")
	if variant == "wal" {
		result("wal", "put-wal", wal, "MiB")
	}
	return nil
}

func removeDB(path string) {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		os.Remove(path + suffix)
	}
}

// streamGet reads the streamed value back, cold then warm: the plain file
// with 1 MiB reads, the vault (written by "streamput wal") with GetTo.
// Both write to a sink that discards the bytes.
func streamGet(variant string) error {
	size := *streamMiB << 20
	file, walPath, _ := streamPaths()
	read := func() (int64, error) {
		switch variant {
		case "file":
			f, err := os.Open(file)
			if err != nil {
				return 0, err
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			var n int64
			for {
				m, err := f.Read(buf)
				n += int64(m)
				if err == io.EOF {
					return n, nil
				}
				if err != nil {
					return n, err
				}
			}
		case "vault":
			v, err := vault.Open(walPath, options())
			if err != nil {
				return 0, err
			}
			defer v.Close()
			return v.GetTo("videos/stream.mp4", discard{})
		}
		return 0, fmt.Errorf("unknown variant %q", variant)
	}
	if variant == "vault" {
		// Opening writes nothing the read needs, but it may make the -shm;
		// do that before the caches are dropped.
		v, err := vault.Open(walPath, options())
		if err != nil {
			return err
		}
		v.Close()
	}
	dropped := dropCaches()
	s := sampleRSS("")
	for _, temp := range []string{coldName(dropped), "warm"} {
		start := time.Now()
		n, err := read()
		d := time.Since(start)
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("read %d bytes, want %d", n, size)
		}
		result("streamget", variant+"-"+temp, mbps(size, d), "MB/s")
	}
	rss, _ := s.end()
	result("rss", "get-"+variant, rss, "MiB")
	return nil
}

// discard is io.Discard without ReadFrom, so nobody chooses a buffer
// size for the reader.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// store is the common face of a vault and a directory of plain files.
type store interface {
	put(key string, val []byte) error
	get(key string, buf []byte) (int, error)
	flush() error // end of the batch: FlushCache / nothing
	sync() error  // durable: Sync / syncfs
	close() error
}

type fileStore struct{ dir string }

func (s fileStore) put(key string, val []byte) error {
	return os.WriteFile(filepath.Join(s.dir, key), val, 0o644)
}

func (s fileStore) get(key string, buf []byte) (int, error) {
	f, err := os.Open(filepath.Join(s.dir, key))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.ReadFull(f, buf)
}

func (s fileStore) flush() error { return nil }

func (s fileStore) sync() error {
	f, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

func (s fileStore) close() error { return nil }

type vaultStore struct{ v *vault.Vault }

func (s vaultStore) put(key string, val []byte) error { return s.v.Put(key, val) }

func (s vaultStore) get(key string, buf []byte) (int, error) {
	b, err := s.v.Get(key)
	return copy(buf, b), err
}

func (s vaultStore) flush() error { _, err := s.v.FlushCache(); return err }
func (s vaultStore) sync() error  { return s.v.Sync() }
func (s vaultStore) close() error { return s.v.Close() }

func keyOf(i int) string { return fmt.Sprintf("v/%07d", i) }

// openStore opens a new, empty store of the variant for job; cache > 0
// turns the write-back cache on with that cap and threshold.
func openStore(job, variant string, capBytes, threshold int64) (store, error) {
	if variant == "file" {
		d := filepath.Join(*dir, job+"-files")
		os.RemoveAll(d)
		if err := os.MkdirAll(filepath.Join(d, "v"), 0o755); err != nil {
			return nil, err
		}
		return fileStore{d}, nil
	}
	path := filepath.Join(*dir, job+".db")
	removeDB(path)
	v, err := vault.Open(path, options())
	if err != nil {
		return nil, err
	}
	if capBytes > 0 {
		if err := v.EnableCache(capBytes, threshold); err != nil {
			v.Close()
			return nil, err
		}
	}
	return vaultStore{v}, nil
}

func reopen(job string, s store) (store, error) {
	if _, ok := s.(fileStore); ok {
		return s, nil
	}
	v, err := vault.Open(filepath.Join(*dir, job+".db"), options())
	return vaultStore{v}, err
}

// cleanup removes what a job wrote.
func cleanup(job string) {
	os.RemoveAll(filepath.Join(*dir, job+"-files"))
	removeDB(filepath.Join(*dir, job+".db"))
}

// putAll puts n values of size bytes and reports the rate at the end of
// the batch (flush) and once durable (sync).
func putAll(job, variant string, s store, n, size int) error {
	start := time.Now()
	for i := range n {
		if err := s.put(keyOf(i), value(i, size)); err != nil {
			return err
		}
	}
	if err := s.flush(); err != nil {
		return err
	}
	flushed := time.Since(start)
	if err := s.sync(); err != nil {
		return err
	}
	synced := time.Since(start)
	result(job, variant+"-put", opsps(n, synced), "ops/s")
	result(job, variant+"-put-nosync", opsps(n, flushed), "ops/s")
	return nil
}

// manyValues puts n values of size bytes (in one batch through the
// write-back cache when batch is set) and reads them back in a random
// order, cold and warm.
func manyValues(job, variant string, n, size int, batch bool) error {
	if variant != "file" && variant != "vault" {
		return fmt.Errorf("unknown variant %q", variant)
	}
	defer cleanup(job)
	var capBytes int64
	if batch {
		capBytes = int64(n)*int64(size+64) + 1<<20 // one flush for the whole batch
	}
	s, err := openStore(job, variant, capBytes, capBytes)
	if err != nil {
		return err
	}
	if err := putAll(job, variant, s, n, size); err != nil {
		return err
	}
	if err := s.close(); err != nil {
		return err
	}
	order := rand.New(rand.NewPCG(uint64(*rep), 42)).Perm(n)
	buf := make([]byte, size)
	dropped := dropCaches()
	if s, err = reopen(job, s); err != nil {
		return err
	}
	defer s.close()
	for _, temp := range []string{coldName(dropped), "warm"} {
		start := time.Now()
		for _, i := range order {
			m, err := s.get(keyOf(i), buf)
			if err != nil {
				return err
			}
			if m != size || !bytes.Equal(buf[:64], value(i, size)[:64]) {
				return fmt.Errorf("value %d reads back wrong", i)
			}
		}
		result(job, variant+"-get-"+temp, opsps(n, time.Since(start)), "ops/s")
	}
	return nil
}

// cachePuts is issue 3's benchmark: n puts of size bytes with the cache
// on, with it off (one transaction each) and as one plain file each,
// timed to the end of the final flush and made durable (Sync / syncfs).
func cachePuts(job, variant string, n, size int) error {
	var capBytes, threshold int64
	switch variant {
	case "on":
		capBytes, threshold = *cacheCap<<20, *cacheThr<<20
	case "off", "file":
	default:
		return fmt.Errorf("unknown variant %q", variant)
	}
	defer cleanup(job)
	s, err := openStore(job, variant, capBytes, threshold)
	if err != nil {
		return err
	}
	if err := putAll(job, variant, s, n, size); err != nil {
		s.close()
		return err
	}
	return s.close()
}

// A comparison is one row of the report: the vault's figure beside its
// baseline, both from the same repetitions.
type comparison struct {
	label       string
	job         string
	vault, base string
	target      float64 // minimum ratio, 0 for none
	memory      bool    // a memory figure: no ratio; the target is under 64 MiB
	wal         bool    // the -wal file's peak: no ratio; the bound is 256 MiB
}

// comparisons lists the report's rows; "STREAM" in a label is replaced
// by the size of the streamed value.
var comparisons = []comparison{
	{label: "STREAM streamed put, WAL, to Close", job: "streamput", vault: "wal", base: "file", target: 0.4},
	{label: "STREAM streamed put, no WAL, to Close", job: "streamput", vault: "nowal", base: "file", target: 0.7},
	{label: "STREAM streamed get, cold", job: "streamget", vault: "vault-cold", base: "file-cold", target: 0.8},
	{label: "STREAM streamed get, warm", job: "streamget", vault: "vault-warm", base: "file-warm"},
	{label: "20k x 16 KiB put, one batch, durable", job: "batch16k", vault: "vault-put", base: "file-put"},
	{label: "20k x 16 KiB put, one batch, not synced", job: "batch16k", vault: "vault-put-nosync", base: "file-put-nosync"},
	{label: "20k x 16 KiB random get, cold", job: "batch16k", vault: "vault-get-cold", base: "file-get-cold", target: 1.0},
	{label: "20k x 16 KiB random get, warm", job: "batch16k", vault: "vault-get-warm", base: "file-get-warm"},
	{label: "1000 x 1 MiB put, durable", job: "large1m", vault: "vault-put", base: "file-put"},
	{label: "1000 x 1 MiB put, not synced", job: "large1m", vault: "vault-put-nosync", base: "file-put-nosync"},
	{label: "1000 x 1 MiB random get, cold", job: "large1m", vault: "vault-get-cold", base: "file-get-cold"},
	{label: "1000 x 1 MiB random get, warm", job: "large1m", vault: "vault-get-warm", base: "file-get-warm"},
	{label: "200k x 1 KiB puts, cache on vs off", job: "cache1k", vault: "on-put", base: "off-put", target: 5},
	{label: "200k x 1 KiB puts, cache on vs files", job: "cache1k", vault: "on-put", base: "file-put"},
	{label: "200k x 1 KiB puts, cache off vs files", job: "cache1k", vault: "off-put", base: "file-put"},
	{label: "50k x 16 KiB puts, cache on vs files", job: "cache16k", vault: "on-put", base: "file-put", target: 2.5},
	{label: "50k x 16 KiB puts, cache on vs off", job: "cache16k", vault: "on-put", base: "off-put"},
	{label: "50k x 16 KiB puts, cache off vs files", job: "cache16k", vault: "off-put", base: "file-put"},
	{label: "50k x 16 KiB puts, cache on vs files, not synced", job: "cache16k", vault: "on-put-nosync", base: "file-put-nosync"},
	{label: "peak RssAnon, STREAM put, WAL", job: "rss", vault: "put-wal", base: "put-file", memory: true},
	{label: "peak RssAnon, STREAM put, no WAL", job: "rss", vault: "put-nowal", base: "put-file", memory: true},
	{label: "peak RssAnon, STREAM get", job: "rss", vault: "get-vault", base: "get-file", memory: true},
	{label: "peak -wal size, STREAM put", job: "wal", vault: "put-wal", base: "-", wal: true},
}

// report prints the comparisons found in a results file: for each, the
// median and range over the repetitions of the vault's figure, of the
// baseline's and of their ratio (taken per repetition).
func report(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type key struct{ job, variant string }
	vals := map[key]map[int]float64{}
	units := map[key]string{}
	var notes []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "N "); ok {
			if !slices.Contains(notes, n) {
				notes = append(notes, n)
			}
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 6 || fs[0] != "R" {
			continue
		}
		r, err1 := strconv.Atoi(fs[1])
		x, err2 := strconv.ParseFloat(fs[4], 64)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("bad line %q: %v", line, err)
		}
		k := key{fs[2], fs[3]}
		if vals[k] == nil {
			vals[k] = map[int]float64{}
		}
		vals[k][r], units[k] = x, fs[5]
	}
	if err := sc.Err(); err != nil {
		return err
	}
	stat := func(xs []float64) string {
		if len(xs) == 0 {
			return "-"
		}
		med := median(xs)
		if len(xs) == 1 {
			return num(med)
		}
		return fmt.Sprintf("%s [%s-%s]", num(med), num(xs[0]), num(xs[len(xs)-1]))
	}
	fmt.Printf("%-48s %-8s %-26s %-26s %-22s %s\n", "figure", "unit", "vault median [min-max]", "baseline median [min-max]", "ratio median [min-max]", "target")
	for _, c := range comparisons {
		vk, bk := key{c.job, c.vault}, key{c.job, c.base}
		if vals[vk] == nil {
			continue // the job or variant was not run
		}
		var vs, bs, rs []float64
		for r, x := range vals[vk] {
			vs = append(vs, x)
			if y, ok := vals[bk][r]; ok && y > 0 {
				rs = append(rs, x/y)
			}
		}
		for _, y := range vals[bk] {
			bs = append(bs, y)
		}
		target, ratio := "", stat(rs)
		switch {
		case c.memory:
			ratio, target = "-", "vault < 64 MiB"
			if len(vs) > 0 && slices.Max(vs) >= 64 {
				target += " (missed)"
			}
		case c.wal:
			ratio, target = "-", "< 256 MiB"
			if len(vs) > 0 && slices.Max(vs) >= 256 {
				target += " (missed)"
			}
		case c.target > 0:
			target = fmt.Sprintf(">= %.1fx", c.target)
			if len(rs) > 0 && median(rs) < c.target {
				target += " (missed)"
			}
		}
		label := strings.ReplaceAll(c.label, "STREAM", streamLabel())
		fmt.Printf("%-48s %-8s %-26s %-26s %-22s %s\n", label, units[vk], stat(vs), stat(bs), ratio, target)
	}
	for _, n := range notes {
		fmt.Println("note:", n)
	}
	return nil
}

// streamLabel names the size of the streamed value.
func streamLabel() string {
	if *streamMiB%1024 == 0 {
		return fmt.Sprintf("%d GiB", *streamMiB/1024)
	}
	return fmt.Sprintf("%d MiB", *streamMiB)
}

// median sorts xs and returns its median.
func median(xs []float64) float64 {
	slices.Sort(xs)
	if len(xs)%2 == 0 {
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return xs[len(xs)/2]
}

// num prints a figure with three significant digits, or whole above 1000.
func num(x float64) string {
	if x >= 1000 {
		return strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strconv.FormatFloat(x, 'g', 3, 64)
}
