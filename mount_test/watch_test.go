package mount_test

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The stress tests' watchdog. Every worker (a goroutine of the test, or a
// process whose progress the test reads from a pipe) marks when an
// operation begins and ends. When one operation has been under way for
// longer than the stall limit, the watchdog dumps everything that could
// show why: the goroutines and kernel stacks of the test process, the
// kernel stacks of every daemon thread, then the daemon's goroutines
// (SIGQUIT makes the Go runtime print them into the daemon's --log file).
// Killing the daemon aborts the FUSE connection, so every request the
// test is stuck in returns ENOTCONN and the test can end and report,
// instead of hanging until the binary's -timeout.

// stressWatch watches the workers of one stress test.
type stressWatch struct {
	t     *testing.T
	stall time.Duration

	mu      sync.Mutex
	workers []*stressWorker
	pids    map[int]string // processes to dump: pid -> log file ("" if none)
	unblock []func()       // run after the dump, to make stuck calls return

	fired    atomic.Bool
	firedCh  chan struct{}
	summary  string
	stop     chan struct{}
	finished chan struct{}
	ops      atomic.Int64
}

// stressWorker is one loop watched by a stressWatch.
type stressWorker struct {
	w     *stressWatch
	name  string
	since atomic.Int64 // start of the current operation (ns), 0 when idle
	op    atomic.Value // name of the current operation
	ops   atomic.Int64
}

// newStressWatch starts a watchdog that fires when one operation lasts
// longer than stall. It stops at the end of the test.
func newStressWatch(t *testing.T, stall time.Duration) *stressWatch {
	w := &stressWatch{
		t: t, stall: stall, pids: map[int]string{},
		firedCh: make(chan struct{}), stop: make(chan struct{}), finished: make(chan struct{}),
	}
	go w.loop()
	t.Cleanup(w.close)
	return w
}

func (w *stressWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.finished
}

// worker registers a loop.
func (w *stressWatch) worker(name string) *stressWorker {
	wk := &stressWorker{w: w, name: name}
	w.mu.Lock()
	w.workers = append(w.workers, wk)
	w.mu.Unlock()
	return wk
}

// watchPID adds a process whose stacks the dump shows (and which it kills
// with SIGQUIT); logFile, if not "", is where its stderr goes.
func (w *stressWatch) watchPID(pid int, logFile string) {
	w.mu.Lock()
	w.pids[pid] = logFile
	w.mu.Unlock()
}

// onFire adds a function that the watchdog runs after its dump.
func (w *stressWatch) onFire(fn func()) {
	w.mu.Lock()
	w.unblock = append(w.unblock, fn)
	w.mu.Unlock()
}

// begin marks the start of an operation.
func (wk *stressWorker) begin(op string) {
	wk.op.Store(op)
	wk.since.Store(time.Now().UnixNano())
}

// end marks its completion.
func (wk *stressWorker) end() {
	wk.since.Store(0)
	wk.ops.Add(1)
	wk.w.ops.Add(1)
}

// do runs one operation under watch.
func (wk *stressWorker) do(op string, fn func() error) error {
	wk.begin(op)
	err := fn()
	wk.end()
	return err
}

// Fired reports whether the watchdog has fired: workers stop then, and
// errors they see afterwards (ENOTCONN) are expected.
func (w *stressWatch) Fired() bool { return w.fired.Load() }

func (w *stressWatch) loop() {
	defer close(w.finished)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		now := time.Now().UnixNano()
		w.mu.Lock()
		var stuck *stressWorker
		var age time.Duration
		for _, wk := range w.workers {
			if s := wk.since.Load(); s != 0 && time.Duration(now-s) > age {
				stuck, age = wk, time.Duration(now-s)
			}
		}
		w.mu.Unlock()
		if stuck != nil && age > w.stall {
			w.fire(stuck, age)
			return
		}
	}
}

// fire dumps the stacks, writes them to a file that outlives the test,
// keeps a summary for the test's failure message and unblocks the test.
func (w *stressWatch) fire(stuck *stressWorker, age time.Duration) {
	w.fired.Store(true)
	var full, sum strings.Builder
	op, _ := stuck.op.Load().(string)
	fmt.Fprintf(&sum, "watchdog: %s has been in %q for %v (stall limit %v); %d operations completed in all\n",
		stuck.name, op, age.Round(time.Millisecond), w.stall, w.ops.Load())
	w.mu.Lock()
	for _, wk := range w.workers {
		if s := wk.since.Load(); s != 0 {
			o, _ := wk.op.Load().(string)
			fmt.Fprintf(&sum, "  busy: %-16s %-22s for %v (%d ops done)\n", wk.name, o, time.Since(time.Unix(0, s)).Round(time.Millisecond), wk.ops.Load())
		}
	}
	pids := make(map[int]string, len(w.pids))
	for p, l := range w.pids {
		pids[p] = l
	}
	unblock := slices.Clone(w.unblock)
	w.mu.Unlock()

	buf := make([]byte, 32<<20)
	buf = buf[:runtime.Stack(buf, true)]
	fmt.Fprintf(&full, "=== goroutines of the test process (pid %d) ===\n%s\n", os.Getpid(), buf)
	fmt.Fprintf(&sum, "test process goroutines:\n%s", summarizeGoroutines(string(buf), 8))
	ks := kernelStacks(os.Getpid())
	fmt.Fprintf(&full, "=== kernel stacks of the test process ===\n%s\n", ks.full)
	fmt.Fprintf(&sum, "test process threads in the kernel:\n%s", ks.summary)
	for pid, logFile := range pids {
		ks := kernelStacks(pid)
		fmt.Fprintf(&full, "=== kernel stacks of pid %d ===\n%s\n", pid, ks.full)
		if ks.summary != "" {
			fmt.Fprintf(&sum, "pid %d threads in the kernel:\n%s", pid, ks.summary)
		}
		if logFile == "" {
			continue
		}
		before := fileSize(logFile)
		syscall.Kill(pid, syscall.SIGQUIT) // the Go runtime prints every goroutine, then exits
		waitGone(pid, 10*time.Second)
		syscall.Kill(pid, syscall.SIGKILL)
		dump := readFrom(logFile, before)
		fmt.Fprintf(&full, "=== goroutines of pid %d (SIGQUIT) ===\n%s\n", pid, dump)
		fmt.Fprintf(&sum, "pid %d goroutines:\n%s", pid, summarizeGoroutines(dump, 14))
	}
	for _, fn := range unblock {
		fn()
	}
	f, err := os.CreateTemp("", "kvaultfs-watchdog-*.txt")
	if err == nil {
		f.WriteString(sum.String() + "\n" + full.String())
		f.Close()
		fmt.Fprintf(&sum, "full dump: %s\n", f.Name())
	}
	w.summary = sum.String()
	close(w.firedCh)
}

// check fails the test if the watchdog fired; call it once the workers
// are done.
func (w *stressWatch) check() {
	w.t.Helper()
	if w.fired.Load() {
		<-w.firedCh
		w.t.Fatalf("no progress: %s", w.summary)
	}
}

type stacks struct{ full, summary string }

// kernelStacks reads /proc/<pid>/task/*/stack: where each thread waits in
// the kernel (request_wait_answer is a FUSE request waiting for the
// daemon), with a count of threads per innermost frames.
func kernelStacks(pid int) stacks {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	var full strings.Builder
	counts := map[string]int{}
	for _, task := range tasks {
		comm, _ := os.ReadFile(task + "/comm")
		st, err := os.ReadFile(task + "/stack")
		if err != nil {
			continue
		}
		fmt.Fprintf(&full, "-- %s (%s)\n%s", filepath.Base(task), bytes.TrimSpace(comm), st)
		var frames []string
		for _, l := range strings.Split(strings.TrimSpace(string(st)), "\n") {
			if f := strings.Fields(l); len(f) >= 2 {
				name, _, _ := strings.Cut(f[1], "+")
				frames = append(frames, name)
			}
		}
		key := "(running or user space)"
		if len(frames) > 0 {
			key = strings.Join(frames[:min(3, len(frames))], " < ")
		}
		counts[key]++
	}
	return stacks{full.String(), topCounts(counts, 6)}
}

// summarizeGoroutines groups a Go traceback by state and the innermost
// frame of this module (or the innermost frame if none), most common
// first.
func summarizeGoroutines(dump string, n int) string {
	counts := map[string]int{}
	for _, block := range strings.Split(dump, "\n\n") {
		sc := bufio.NewScanner(strings.NewReader(block))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		state, frame, first := "", "", ""
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "goroutine ") {
				if i, j := strings.IndexByte(l, '['), strings.IndexByte(l, ']'); i >= 0 && j > i {
					state, _, _ = strings.Cut(l[i+1:j], ",")
				}
				continue
			}
			if state == "" || strings.HasPrefix(l, "\t") || l == "" {
				continue
			}
			fn := l
			if i := strings.LastIndexByte(l, '('); i > 0 {
				fn = l[:i] // drop the arguments
			}
			if first == "" || strings.HasPrefix(first, "runtime.") || strings.HasPrefix(first, "sync.") || strings.HasPrefix(first, "internal/") {
				first = fn
			}
			if frame == "" && strings.Contains(fn, "kohakuvault/kvaultfs/") && !strings.Contains(fn, "_test.") {
				frame = fn
			}
		}
		if state == "" {
			continue
		}
		if frame == "" {
			frame = first
		}
		if strings.HasPrefix(frame, "runtime.") || strings.HasPrefix(frame, "created by") {
			continue // the runtime's own goroutines (GC, finalizers)
		}
		frame = strings.TrimPrefix(frame, "github.com/kohakuvault/kvaultfs/")
		counts["["+state+"] "+frame]++
	}
	return topCounts(counts, n)
}

func topCounts(counts map[string]int, n int) string {
	type kc struct {
		k string
		c int
	}
	var all []kc
	for k, c := range counts {
		all = append(all, kc{k, c})
	}
	slices.SortFunc(all, func(a, b kc) int { return cmp.Or(b.c-a.c, strings.Compare(a.k, b.k)) })
	var b strings.Builder
	for i, e := range all {
		if i == n {
			fmt.Fprintf(&b, "    ... %d more kinds\n", len(all)-n)
			break
		}
		fmt.Fprintf(&b, "    %4d  %s\n", e.c, e.k)
	}
	return b.String()
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns a file's contents from off (at most 32 MiB).
func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	b := make([]byte, 32<<20)
	n, _ := f.ReadAt(b, off)
	return string(b[:n])
}
