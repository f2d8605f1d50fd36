// Command fsmix is a mixed metadata and data workload in the manner of
// fsstress (LTP, xfstests), which Debian does not package: PROCS workers,
// each in its own directory, run OPS random operations drawn with
// fsstress's default frequencies on its non-XFS operations (chown 3,
// creat 4, dread 4, dwrite 4, fdatasync 1, fsync 1, getdents 1, link 1,
// mkdir 2, mknod 2, read 1, readlink 1, rename 2, rmdir 1, stat 1,
// symlink 2, sync 1, truncate 2, unlink 1, write 4), with its sizes:
// writes and reads of up to 128 KiB at random offsets below the size plus
// 1 MiB, truncates to such offsets, symlink targets of up to 4 KiB.
// dread and dwrite are buffered here (O_DIRECT is not asked for).
// Failed operations (ENOENT after a rename, ENOTEMPTY) count, as in
// fsstress; only the time and the counts are reported.
//
// Usage:
//
//	fsmix [-p PROCS] [-n OPS] [-s SEED] [-sync=false] [-v] DIR
package main

import (
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type kind int

const (
	kDir kind = iota
	kFile
	kSym
	kDev
)

type entry struct {
	path string
	kind kind
}

type worker struct {
	rng     *rand.Rand
	top     string
	entries []entry // everything this worker made, by current path
	seq     int
	errs    int
	doSync  bool
	spent   [20]time.Duration // time in each operation of freqs
}

var freqs = []struct {
	name string
	n    int
	fn   func(w *worker)
}{
	{"chown", 3, (*worker).chown}, {"creat", 4, (*worker).creat}, {"dread", 4, (*worker).read},
	{"dwrite", 4, (*worker).write}, {"fdatasync", 1, (*worker).fsync}, {"fsync", 1, (*worker).fsync},
	{"getdents", 1, (*worker).getdents}, {"link", 1, (*worker).link}, {"mkdir", 2, (*worker).mkdir},
	{"mknod", 2, (*worker).mknod}, {"read", 1, (*worker).read}, {"readlink", 1, (*worker).readlink},
	{"rename", 2, (*worker).rename}, {"rmdir", 1, (*worker).rmdir}, {"stat", 1, (*worker).stat},
	{"symlink", 2, (*worker).symlink}, {"sync", 1, (*worker).sync}, {"truncate", 2, (*worker).truncate},
	{"unlink", 1, (*worker).unlink}, {"write", 4, (*worker).write},
}

func main() {
	procs := flag.Int("p", 8, "workers")
	ops := flag.Int("n", 20000, "operations per worker")
	seed := flag.Int64("s", 1, "random seed")
	doSync := flag.Bool("sync", true, "run sync(2) as fsstress does (it syncs every file system)")
	verbose := flag.Bool("v", false, "print the share of time each operation took")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: fsmix [-p PROCS] [-n OPS] [-s SEED] DIR")
		os.Exit(2)
	}
	var table []int // indexes into freqs, each as often as its frequency
	for i, f := range freqs {
		for j := 0; j < f.n; j++ {
			table = append(table, i)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	workers := make([]*worker, *procs)
	for p := 0; p < *procs; p++ {
		w := &worker{rng: rand.New(rand.NewSource(*seed + int64(p))), top: filepath.Join(flag.Arg(0), fmt.Sprintf("p%x", p)), doSync: *doSync}
		if err := os.MkdirAll(w.top, 0o777); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		workers[p] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < *ops; i++ {
				op := table[w.rng.Intn(len(table))]
				t0 := time.Now()
				freqs[op].fn(w)
				w.spent[op] += time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	errs := 0
	for _, w := range workers {
		errs += w.errs
	}
	fmt.Printf("fsmix: %d workers x %d ops in %.2f s (%.0f ops/s), %d operations failed\n",
		*procs, *ops, elapsed.Seconds(), float64(*procs**ops)/elapsed.Seconds(), errs)
	if *verbose {
		var total time.Duration
		spent := make([]time.Duration, len(freqs))
		for _, w := range workers {
			for i := range freqs {
				spent[i] += w.spent[i]
				total += w.spent[i]
			}
		}
		for i, f := range freqs {
			fmt.Printf("  %-10s %6.1f%% of the workers' time\n", f.name, 100*float64(spent[i])/float64(total))
		}
	}
}

func (w *worker) fail(err error) {
	if err != nil {
		w.errs++
	}
}

// pick returns a random entry of one of the kinds, or -1.
func (w *worker) pick(kinds ...kind) int {
	var idx []int
	for i, e := range w.entries {
		for _, k := range kinds {
			if e.kind == k {
				idx = append(idx, i)
				break
			}
		}
	}
	if len(idx) == 0 {
		return -1
	}
	return idx[w.rng.Intn(len(idx))]
}

// newName returns a fresh path in a random directory of the worker.
func (w *worker) newName(tag byte) string {
	dir := w.top
	if i := w.pick(kDir); i >= 0 {
		dir = w.entries[i].path
	}
	w.seq++
	return filepath.Join(dir, fmt.Sprintf("%c%x", tag, w.seq))
}

func (w *worker) remove(i int) {
	w.entries[i] = w.entries[len(w.entries)-1]
	w.entries = w.entries[:len(w.entries)-1]
}

func (w *worker) chown() {
	p := w.top
	if i := w.pick(kDir, kFile, kSym, kDev); i >= 0 {
		p = w.entries[i].path
	}
	w.fail(os.Lchown(p, int(w.rng.Uint32()&(1<<w.rng.Intn(32)-1)), -1))
}

func (w *worker) creat() {
	p := w.newName('f')
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666)
	if err != nil {
		w.fail(err)
		return
	}
	f.Close()
	w.entries = append(w.entries, entry{p, kFile})
}

func (w *worker) mkdir() {
	p := w.newName('d')
	if err := os.Mkdir(p, 0o777); err != nil {
		w.fail(err)
		return
	}
	w.entries = append(w.entries, entry{p, kDir})
}

func (w *worker) mknod() {
	p := w.newName('c')
	if err := syscall.Mknod(p, syscall.S_IFCHR|0o444, 0); err != nil {
		w.fail(err)
		return
	}
	w.entries = append(w.entries, entry{p, kDev})
}

func (w *worker) symlink() {
	p := w.newName('l')
	n := w.rng.Intn(4096)
	target := []byte(strings.Repeat("x", n))
	for i := 10; i < n-1; i += 10 {
		target[i] = '/'
	}
	if err := os.Symlink(string(target), p); err != nil {
		w.fail(err)
		return
	}
	w.entries = append(w.entries, entry{p, kSym})
}

func (w *worker) link() {
	i := w.pick(kFile, kSym, kDev)
	if i < 0 {
		return
	}
	e := w.entries[i]
	p := w.newName('f')
	if err := os.Link(e.path, p); err != nil {
		w.fail(err)
		return
	}
	w.entries = append(w.entries, entry{p, e.kind})
}

func (w *worker) unlink() {
	i := w.pick(kFile, kSym, kDev)
	if i < 0 {
		return
	}
	if err := os.Remove(w.entries[i].path); err != nil {
		w.fail(err)
		return
	}
	w.remove(i)
}

func (w *worker) rmdir() {
	i := w.pick(kDir)
	if i < 0 {
		return
	}
	if err := syscall.Rmdir(w.entries[i].path); err != nil {
		w.fail(err)
		return
	}
	w.remove(i)
}

func (w *worker) rename() {
	i := w.pick(kDir, kFile, kSym, kDev)
	if i < 0 {
		return
	}
	e := w.entries[i]
	p := w.newName(map[kind]byte{kDir: 'd', kFile: 'f', kSym: 'l', kDev: 'c'}[e.kind])
	if err := os.Rename(e.path, p); err != nil {
		w.fail(err)
		return
	}
	w.entries[i].path = p
	if e.kind == kDir {
		prefix := e.path + "/"
		for j := range w.entries {
			if strings.HasPrefix(w.entries[j].path, prefix) {
				w.entries[j].path = p + "/" + strings.TrimPrefix(w.entries[j].path, prefix)
			}
		}
	}
}

func (w *worker) stat() {
	if i := w.pick(kDir, kFile, kSym, kDev); i >= 0 {
		var st syscall.Stat_t
		w.fail(syscall.Lstat(w.entries[i].path, &st))
	}
}

func (w *worker) readlink() {
	if i := w.pick(kSym); i >= 0 {
		_, err := os.Readlink(w.entries[i].path)
		w.fail(err)
	}
}

func (w *worker) getdents() {
	p := w.top
	if i := w.pick(kDir); i >= 0 {
		p = w.entries[i].path
	}
	_, err := os.ReadDir(p)
	w.fail(err)
}

func (w *worker) sync() {
	if w.doSync {
		syscall.Sync()
	}
}

func (w *worker) fsync() {
	i := w.pick(kFile)
	if i < 0 {
		return
	}
	f, err := os.OpenFile(w.entries[i].path, os.O_WRONLY, 0)
	if err != nil {
		w.fail(err)
		return
	}
	w.fail(f.Sync())
	f.Close()
}

func (w *worker) truncate() {
	i := w.pick(kFile)
	if i < 0 {
		return
	}
	var st syscall.Stat_t
	if err := syscall.Stat(w.entries[i].path, &st); err != nil {
		w.fail(err)
		return
	}
	w.fail(os.Truncate(w.entries[i].path, w.rng.Int63n(st.Size+1<<20)))
}

func (w *worker) read() {
	i := w.pick(kFile)
	if i < 0 {
		return
	}
	f, err := os.Open(w.entries[i].path)
	if err != nil {
		w.fail(err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		w.fail(err)
		return
	}
	buf := make([]byte, w.rng.Intn(32*4096)+1)
	_, err = f.ReadAt(buf, w.rng.Int63n(st.Size()))
	if err != nil && err.Error() != "EOF" {
		w.fail(err)
	}
}

func (w *worker) write() {
	i := w.pick(kFile)
	if i < 0 {
		return
	}
	f, err := os.OpenFile(w.entries[i].path, os.O_WRONLY, 0)
	if err != nil {
		w.fail(err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		w.fail(err)
		return
	}
	buf := make([]byte, w.rng.Intn(32*4096)+1)
	for j := range buf {
		buf[j] = byte(w.seq)
	}
	_, err = f.WriteAt(buf, w.rng.Int63n(st.Size()+1<<20))
	w.fail(err)
}
