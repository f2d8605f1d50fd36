package vault

import (
	"bufio"
	"bytes"
	"cmp"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Concurrency stress of the library (issue 8, item 14): goroutines on
// several Vaults of one file and helper processes mix appends, unaligned
// writes, truncates, listings, renames, deletes of open files and Sync,
// checked against a model where the outcome is defined, under a
// watchdog. When one operation lasts longer than the stall limit the
// watchdog prints every goroutine of the test process (grouped, and in
// full to a file) and of the helper processes (SIGQUIT), and fails the
// test. Goroutines deadlocked inside a Vault cannot be freed: the test
// then leaves that Vault open rather than hang in Close.
//
// Each test runs for KVAULTFS_STRESS_DURATION (default 8s, 4s with
// -short; scripts/stress.sh runs them longer); the stall limit is
// KVAULTFS_STRESS_STALL (default 15s, 30s when a duration is given).

func stressDuration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KVAULTFS_STRESS_DURATION")); err == nil && d > 0 {
		return d
	}
	if testing.Short() {
		return 4 * time.Second
	}
	return 8 * time.Second
}

func stressStall() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KVAULTFS_STRESS_STALL")); err == nil && d > 0 {
		return d
	}
	if os.Getenv("KVAULTFS_STRESS_DURATION") != "" {
		return 30 * time.Second
	}
	return 15 * time.Second
}

// stressOptions are the options of every Vault of a stress test: a busy
// timeout far past the stall limit, so that a wait on another
// connection's lock shows as a stall rather than a quiet 5 s delay.
func stressOptions() *Options {
	o := DefaultOptions()
	o.BusyTimeout = 60 * time.Second
	return o
}

// lstress is one library stress test.
type lstress struct {
	t        *testing.T
	db       string
	stall    time.Duration
	deadline atomic.Int64 // unix ns; moved by tests that run until their work is done
	stopFile string
	seed     uint64
	wg       sync.WaitGroup

	mu      sync.Mutex
	workers []*lworker
	procs   []*exec.Cmd
	unblock []func()
	errs    int

	fired   atomic.Bool
	firedCh chan struct{}
	summary string
	stop    chan struct{}
	ops     atomic.Int64
}

type lworker struct {
	s     *lstress
	name  string
	since atomic.Int64
	op    atomic.Value
	ops   atomic.Int64
}

func (wk *lworker) begin(op string) { wk.op.Store(op); wk.since.Store(time.Now().UnixNano()) }
func (wk *lworker) end()            { wk.since.Store(0); wk.ops.Add(1); wk.s.ops.Add(1) }
func (wk *lworker) do(op string, fn func() error) error {
	wk.begin(op)
	defer wk.end()
	return fn()
}

func newLStress(t *testing.T) *lstress {
	dir := t.TempDir()
	s := &lstress{
		t: t, db: filepath.Join(dir, "stress.db"), stall: stressStall(),
		stopFile: filepath.Join(dir, "stop"),
		seed:     uint64(time.Now().UnixNano()), firedCh: make(chan struct{}), stop: make(chan struct{}),
	}
	s.deadline.Store(time.Now().Add(stressDuration()).UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("KVAULTFS_STRESS_SEED"), 10, 64); err == nil {
		s.seed = v
	}
	t.Logf("seed %d (KVAULTFS_STRESS_SEED), duration %v, stall limit %v", s.seed, stressDuration(), s.stall)
	done := make(chan struct{})
	go s.watch(done)
	t.Cleanup(func() { close(s.stop); <-done })
	return s
}

// vault opens a Vault on the test's file; it is closed at the end unless
// the watchdog fired (its goroutines may be deadlocked inside it).
func (s *lstress) vault() *Vault {
	s.t.Helper()
	v, err := Open(s.db, stressOptions())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if s.fired.Load() {
			return
		}
		if err := v.Close(); err != nil {
			s.t.Errorf("close: %v", err)
		}
	})
	return v
}

func (s *lstress) running() bool {
	return time.Now().UnixNano() < s.deadline.Load() && !s.fired.Load() && !s.t.Failed()
}

func (s *lstress) errorf(format string, args ...any) {
	if s.fired.Load() {
		return
	}
	s.mu.Lock()
	s.errs++
	n := s.errs
	s.mu.Unlock()
	if n <= 20 {
		s.t.Errorf(format, args...)
	}
}

func (s *lstress) worker(name string) *lworker {
	wk := &lworker{s: s, name: name}
	s.mu.Lock()
	s.workers = append(s.workers, wk)
	s.mu.Unlock()
	return wk
}

// goLoop runs fn until the deadline as a watched worker.
func (s *lstress) goLoop(name string, fn func(wk *lworker, rng *rand.Rand, i int) error) {
	wk := s.worker(name)
	h := uint64(0)
	for _, c := range name {
		h = h*131 + uint64(c)
	}
	rng := rand.New(rand.NewPCG(s.seed, h))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for i := 0; s.running(); i++ {
			if err := fn(wk, rng, i); err != nil {
				s.errorf("%s: %v", name, err)
				return
			}
		}
	}()
}

// helper starts helper process name with args; each line it prints is
// one completed operation, passed to onLine. It runs until the stop file
// exists.
func (s *lstress) helper(name string, onLine func(string), args ...string) {
	cmd := helperCmd(s.t, "", name, args...)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.procs = append(s.procs, cmd)
	s.mu.Unlock()
	wk := s.worker(fmt.Sprintf("%s[%d]", name, cmd.Process.Pid))
	wk.begin("start")
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			wk.end()
			onLine(sc.Text())
			wk.begin(name)
		}
		err := cmd.Wait()
		wk.end()
		if err != nil && !s.fired.Load() {
			s.errorf("helper %s: %v: %s", name, err, stderr.String())
		} else if s.fired.Load() {
			s.mu.Lock()
			s.summary += fmt.Sprintf("helper %s (pid %d) goroutines:\n%s", name, cmd.Process.Pid, summarizeGoroutines(stderr.String(), 10))
			s.mu.Unlock()
		}
	}()
}

// wait waits for the deadline and the workers, and fails the test with
// the watchdog's dump if it fired.
func (s *lstress) wait() {
	s.t.Helper()
	for s.running() {
		time.Sleep(50 * time.Millisecond)
	}
	os.WriteFile(s.stopFile, nil, 0o644)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-s.firedCh:
		// Goroutines stuck in a deadlock never return: wait only for the
		// helper processes, which the watchdog killed.
		s.mu.Lock()
		grace := time.Duration(len(s.procs)) * 5 * time.Second
		s.mu.Unlock()
		select {
		case <-done:
		case <-time.After(grace + 100*time.Millisecond):
		}
	}
	if s.fired.Load() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.t.Fatalf("no progress: %s", s.summary)
	}
	s.t.Logf("%d operations in %v", s.ops.Load(), stressDuration())
}

func (s *lstress) watch(done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		var stuck *lworker
		var age time.Duration
		for _, wk := range s.workers {
			if t := wk.since.Load(); t != 0 && time.Since(time.Unix(0, t)) > age {
				stuck, age = wk, time.Since(time.Unix(0, t))
			}
		}
		s.mu.Unlock()
		if stuck != nil && age > s.stall {
			s.fire(stuck, age)
			return
		}
	}
}

// fire dumps every goroutine, kills the helpers with SIGQUIT (they print
// theirs), runs the unblock functions and lets wait report.
func (s *lstress) fire(stuck *lworker, age time.Duration) {
	s.fired.Store(true)
	var sum strings.Builder
	op, _ := stuck.op.Load().(string)
	fmt.Fprintf(&sum, "watchdog: %s has been in %q for %v (stall limit %v); %d operations completed in all\n",
		stuck.name, op, age.Round(time.Millisecond), s.stall, s.ops.Load())
	s.mu.Lock()
	for _, wk := range s.workers {
		if t := wk.since.Load(); t != 0 {
			o, _ := wk.op.Load().(string)
			fmt.Fprintf(&sum, "  busy: %-22s %-16s for %v (%d ops done)\n", wk.name, o, time.Since(time.Unix(0, t)).Round(time.Millisecond), wk.ops.Load())
		}
	}
	procs, unblock := slices.Clone(s.procs), slices.Clone(s.unblock)
	s.mu.Unlock()
	buf := make([]byte, 32<<20)
	buf = buf[:runtime.Stack(buf, true)]
	fmt.Fprintf(&sum, "test process goroutines:\n%s", summarizeGoroutines(string(buf), 12))
	if f, err := os.CreateTemp("", "kvault-watchdog-*.txt"); err == nil {
		f.Write(buf)
		f.Close()
		fmt.Fprintf(&sum, "full dump of the test process: %s\n", f.Name())
	}
	for _, p := range procs {
		p.Process.Signal(syscall.SIGQUIT)
	}
	for _, fn := range unblock {
		fn()
	}
	s.mu.Lock()
	s.summary = sum.String() + s.summary
	s.mu.Unlock()
	close(s.firedCh)
}

// summarizeGoroutines groups a Go traceback by state and innermost frame
// of this module (else the innermost frame outside the runtime), most
// common first, leaving out the runtime's own goroutines.
func summarizeGoroutines(dump string, n int) string {
	counts := map[string]int{}
	for _, block := range strings.Split(dump, "\n\n") {
		state, frame, first := "", "", ""
		for _, l := range strings.Split(block, "\n") {
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
				fn = l[:i]
			}
			if first == "" || strings.HasPrefix(first, "runtime.") || strings.HasPrefix(first, "sync.") || strings.HasPrefix(first, "internal/") {
				first = fn
			}
			if frame == "" && strings.Contains(fn, "kohakuvault/kvaultfs/") && !strings.Contains(fn, "stress") {
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
			continue
		}
		counts["["+state+"] "+strings.TrimPrefix(frame, "github.com/kohakuvault/kvaultfs/")]++
	}
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

// --- Workers and models ---------------------------------------------

// lineLog is the model of a key written only by appends of whole lines.
type lineLog struct {
	mu    sync.Mutex
	lines map[string]int
}

func (l *lineLog) add(line string) {
	l.mu.Lock()
	if l.lines == nil {
		l.lines = map[string]int{}
	}
	l.lines[line]++
	l.mu.Unlock()
}

// check: every acknowledged line exactly once, nothing else, no NUL.
func (l *lineLog) check(t *testing.T, key string, data []byte) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := bytes.IndexByte(data, 0); i >= 0 {
		t.Errorf("%s: NUL byte at %d of %d (%d in all)", key, i, len(data), bytes.Count(data, []byte{0}))
	}
	got := map[string]int{}
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if line != "" {
			got[line]++
		}
	}
	var lost, dup, extra []string
	for line, n := range l.lines {
		if g := got[line]; g == 0 {
			lost = append(lost, strings.TrimSpace(line))
		} else if g > n {
			dup = append(dup, strings.TrimSpace(line))
		}
	}
	for line := range got {
		if l.lines[line] == 0 {
			extra = append(extra, strings.TrimSpace(line))
		}
	}
	for i, e := range extra {
		extra[i] = shortLine(e)
	}
	if len(lost)+len(dup)+len(extra) > 0 {
		slices.Sort(lost)
		t.Errorf("%s: %d lines acknowledged, %d read; lost %d %q, duplicated %d %q, unexpected %d %q", key, len(l.lines), len(got),
			len(lost), lost[:min(5, len(lost))], len(dup), dup[:min(5, len(dup))], len(extra), extra[:min(5, len(extra))])
	} else {
		t.Logf("%s: all %d acknowledged lines, once each", key, len(l.lines))
	}
}

// shortLine shows a line with its runs of NUL bytes counted, not spelt.
func shortLine(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		i := strings.IndexByte(s, 0)
		if i < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		j := i
		for j < len(s) && s[j] == 0 {
			j++
		}
		fmt.Fprintf(&b, "<%d NULs>", j-i)
		s = s[j:]
	}
	return b.String()
}

// appendLineTo is echo line >> key: open with O_APPEND, write, Sync if
// asked, close.
func appendLineTo(v *Vault, key, line string, sync bool) error {
	f, err := v.OpenFile(key, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(line)); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func (s *lstress) goAppender(name string, v *Vault, log *lineLog, key string) {
	s.goLoop(name, func(wk *lworker, rng *rand.Rand, i int) error {
		line := fmt.Sprintf("%s line %d\n", name, i)
		if err := wk.do("append", func() error { return appendLineTo(v, key, line, i%3 == 0) }); err != nil {
			return fmt.Errorf("append to %s: %w", key, err)
		}
		log.add(line)
		return nil
	})
}

// goTail keeps key open and reads it whole again and again: what it
// reads is whole lines, without NUL bytes.
func (s *lstress) goTail(name string, v *Vault, key string) {
	f, err := v.Open(key)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if !s.fired.Load() {
			f.Close()
		}
	})
	buf := make([]byte, 1<<20)
	s.goLoop(name, func(wk *lworker, rng *rand.Rand, i int) error {
		var n int
		err := wk.do("read", func() (err error) { n, err = f.ReadAt(buf, 0); return err })
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %w", key, err)
		}
		if b := buf[:n]; bytes.IndexByte(b, 0) >= 0 || n > 0 && b[n-1] != '\n' {
			return fmt.Errorf("read %s: %d bytes, not whole lines: ...%q", key, n, b[max(0, n-40):])
		}
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		return nil
	})
}

// goLister lists dir with ReadDir and looks up every entry (ls -l), and
// lists the keys under it; an entry removed meanwhile is fine.
func (s *lstress) goLister(name string, v *Vault, dir string) {
	s.goLoop(name, func(wk *lworker, rng *rand.Rand, i int) error {
		in, err := v.Stat(dir)
		if err != nil {
			return err
		}
		var entries []DirEntry
		if err := wk.do("readdir", func() (err error) { entries, err = v.ReadDir(in.ID, 0, 10000); return err }); err != nil {
			return fmt.Errorf("readdir %s: %w", dir, err)
		}
		for _, e := range entries {
			err := wk.do("lookup+getinode", func() error {
				c, err := v.Lookup(in.ID, e.Name)
				if err == nil {
					_, err = v.GetInode(c.ID)
				}
				return err
			})
			if err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("stat %s/%s after readdir: %w", dir, e.Name, err)
			}
		}
		if i%4 == 0 {
			err := wk.do("keys", func() error {
				for _, err := range v.Keys(dir + "/") {
					if err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("keys %s/: %w", dir, err)
			}
		}
		return nil
	})
}

func posByte(off int64) byte { return 'a' + byte(off%26) }

// goPwriter writes 2 bytes at odd offsets of its own key through one open
// File, Syncs now and then and checks the whole value against its model.
func (s *lstress) goPwriter(name string, v *Vault, key string, span int64) {
	model := make([]byte, span/2)
	for i := range model {
		model[i] = posByte(int64(i))
	}
	if err := v.Put(key, model); err != nil {
		s.t.Fatal(err)
	}
	f, err := v.OpenFile(key, os.O_RDWR, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if !s.fired.Load() {
			f.Close()
		}
	})
	s.goLoop(name, func(wk *lworker, rng *rand.Rand, i int) error {
		off := rng.Int64N(span-2) | 1
		p := []byte{posByte(off), posByte(off + 1)}
		if err := wk.do("pwrite", func() error { _, err := f.WriteAt(p, off); return err }); err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
		if n := off + 2; n > int64(len(model)) {
			model = append(model, make([]byte, n-int64(len(model)))...)
		}
		copy(model[off:], p)
		if i%50 == 49 {
			if err := wk.do("sync", f.Sync); err != nil {
				return err
			}
		}
		if i%100 == 99 {
			got := make([]byte, len(model))
			if err := wk.do("read", func() error { _, err := f.ReadAt(got, 0); return err }); err != nil {
				return err
			}
			if !bytes.Equal(got, model) {
				return fmt.Errorf("reads wrong bytes, first difference at %d", firstDiff(got, model))
			}
		}
		return nil
	})
}

// stripes is a file split into stripes of odd length dealt round-robin
// to writers, several in each chunk.
type stripes struct {
	size, stripe int
	owner        []int
	mu           sync.Mutex
	last         map[int]uint64
}

func newStripes(size, writers, stripe int) *stripes {
	m := &stripes{size: size, stripe: stripe, last: map[int]uint64{}}
	for i := 0; i*stripe < size; i++ {
		m.owner = append(m.owner, i%writers)
	}
	return m
}

func stripeBytes(size, stripe, i int, seed uint64) []byte {
	lo, hi := i*stripe, min((i+1)*stripe, size)
	if seed == 0 {
		return make([]byte, hi-lo)
	}
	return genBytes(seed^uint64(i)<<48, hi-lo)
}

func (m *stripes) set(i int, seed uint64) { m.mu.Lock(); m.last[i] = seed; m.mu.Unlock() }

func (m *stripes) check(t *testing.T, got []byte) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(got) != m.size {
		t.Errorf("the value has %d bytes, want %d", len(got), m.size)
	}
	bad := 0
	for i := range m.owner {
		lo, hi := i*m.stripe, min((i+1)*m.stripe, m.size)
		want := stripeBytes(m.size, m.stripe, i, m.last[i])
		if hi > len(got) || !bytes.Equal(got[lo:hi], want) {
			if bad++; bad <= 5 {
				g := got[min(lo, len(got)):min(hi, len(got))]
				t.Errorf("bytes %d-%d (chunk %d, writer %d): first difference at %d, %d zero bytes; want the writer's last synced write",
					lo, hi, lo/DefaultChunkSize, m.owner[i], firstDiff(g, want), bytes.Count(g, []byte{0}))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d stripes lost their writer's last synced bytes", bad, len(m.owner))
	} else {
		t.Logf("%d stripes of %d bytes, each its writer's last synced bytes", len(m.owner), m.stripe)
	}
}

// writeStripes is the loop of a stripe writer: rewrite one of its
// stripes, Sync, report; close and reopen now and then.
func writeStripes(v *Vault, key string, size, stripe, writers, w int, rng *rand.Rand, running func() bool, do func(string, func() error) error, done func(i int, seed uint64)) error {
	var f *File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var mine []int
	for i := 0; i*stripe < size; i++ {
		if i%writers == w {
			mine = append(mine, i)
		}
	}
	for n := 0; running(); n++ {
		if f == nil {
			if err := do("open", func() (err error) { f, err = v.OpenFile(key, os.O_RDWR, 0); return err }); err != nil {
				return err
			}
		}
		i, seed := mine[rng.IntN(len(mine))], rng.Uint64()|1
		p := stripeBytes(size, stripe, i, seed)
		if err := do("write", func() error { _, err := f.WriteAt(p, int64(i*stripe)); return err }); err != nil {
			return fmt.Errorf("write stripe %d: %w", i, err)
		}
		if err := do("sync", f.Sync); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		done(i, seed)
		if n%10 == 9 {
			err := do("close", f.Close)
			f = nil
			if err != nil {
				return fmt.Errorf("close: %w", err)
			}
		}
	}
	return nil
}

func init() {
	// stressAppend db key name stopfile: append "<name> line N" lines
	// until stopfile exists, printing N after each close.
	registerHelper("stressAppend", func(args []string) error {
		v, err := Open(args[0], stressOptions())
		if err != nil {
			return err
		}
		defer v.Close()
		for i := 0; ; i++ {
			if _, err := os.Stat(args[3]); err == nil {
				return nil
			}
			if err := appendLineTo(v, args[1], fmt.Sprintf("%s line %d\n", args[2], i), i%3 == 0); err != nil {
				return err
			}
			fmt.Println(i)
		}
	})
	// stressStripes db key size stripe writers w seed stopfile: rewrite
	// writer w's stripes, printing "stripe seed" after each Sync.
	registerHelper("stressStripes", func(args []string) error {
		v, err := Open(args[0], stressOptions())
		if err != nil {
			return err
		}
		defer v.Close()
		n := make([]int, 4)
		for i := range n {
			if n[i], err = strconv.Atoi(args[2+i]); err != nil {
				return err
			}
		}
		seed, _ := strconv.ParseUint(args[6], 10, 64)
		rng := rand.New(rand.NewPCG(seed, uint64(n[3])))
		running := func() bool { _, err := os.Stat(args[7]); return err != nil }
		do := func(_ string, fn func() error) error { return fn() }
		return writeStripes(v, args[1], n[0], n[1], n[2], n[3], rng, running, do, func(i int, seed uint64) {
			fmt.Println(i, seed)
		})
	})
}

// --- Defect 1: deadlock of listings with writes -----------------------

// TestStressLibraryAppendWhileListing is issue 8's defect 1 in the
// library: four goroutines append lines to keys of one directory (each
// kept open by a reader) while four list it and look up every entry. On the code before the fix the
// listings' open rows and the writers' inode locks deadlocked within
// seconds.
func TestStressLibraryAppendWhileListing(t *testing.T) {
	s := newLStress(t)
	v := s.vault()
	logs := make([]*lineLog, 4)
	for i := range logs {
		logs[i] = &lineLog{}
		key := fmt.Sprintf("d/f%d", i)
		mustPut(t, v, key, nil)
		s.goAppender(fmt.Sprintf("append-%d", i), v, logs[i], key)
		// A reader keeps each file open (as tail -f, or the mount's
		// handles do), so listings merge its open state.
		s.goTail(fmt.Sprintf("tail-%d", i), v, key)
	}
	// The mount hung with three listings because one of its four pooled
	// connections is held by its change poller; a library user has all
	// four, so it takes one listing more.
	for i := range 4 {
		s.goLister(fmt.Sprintf("list-%d", i), v, "d")
	}
	s.wait()
	for i, l := range logs {
		l.check(t, fmt.Sprintf("d/f%d", i), mustGet(t, v, fmt.Sprintf("d/f%d", i)))
	}
}

// TestStressLibraryUnalignedWriteWhileListing: writes of 2 bytes at odd
// offsets (each needs the rest of its chunk) while eight goroutines list
// the directory; the second hang of defect 1.
func TestStressLibraryUnalignedWriteWhileListing(t *testing.T) {
	s := newLStress(t)
	v := s.vault()
	for i := range 20 {
		mustPut(t, v, fmt.Sprintf("d/other-%d", i), []byte("x"))
	}
	s.goPwriter("pwrite", v, "d/pw", 1<<20)
	for i := range 8 {
		s.goLister(fmt.Sprintf("list-%d", i), v, "d")
	}
	s.wait()
}

// --- Defect 4: several writers of one key -----------------------------

// TestStressLibraryTwoVaultsAppend is defect 4 (a) in the library: two
// Vaults of one file in this process and two helper processes append
// lines to one key, each write closed (or synced, then closed). Every
// acknowledged line must be there exactly once, without NUL bytes.
func TestStressLibraryTwoVaultsAppend(t *testing.T) {
	s := newLStress(t)
	v1, v2 := s.vault(), s.vault()
	mustPut(t, v1, "shared.log", nil)
	log := &lineLog{}
	s.goAppender("v1-a", v1, log, "shared.log")
	s.goAppender("v1-b", v1, log, "shared.log")
	s.goAppender("v2-a", v2, log, "shared.log")
	for p := range 2 {
		name := fmt.Sprintf("proc%d", p)
		s.helper("stressAppend", func(l string) { log.add(fmt.Sprintf("%s line %s\n", name, l)) }, s.db, "shared.log", name, s.stopFile)
	}
	s.wait()
	log.check(t, "shared.log", mustGet(t, v1, "shared.log"))
}

// TestStressLibraryTwoVaultsDisjointRanges is defect 4 (b): writers on
// two Vaults in this process and in a helper process rewrite different
// byte ranges of one key, several inside each 64 KiB chunk, each write
// synced. Every range must end with its writer's last synced bytes.
func TestStressLibraryTwoVaultsDisjointRanges(t *testing.T) {
	s := newLStress(t)
	v1, v2 := s.vault(), s.vault()
	const size, writers = 4 * DefaultChunkSize, 6
	stripe := 4099 + 2*int(s.seed%64)
	mustPut(t, v1, "ranges.bin", make([]byte, size))
	m := newStripes(size, writers, stripe)
	for w := range writers - 2 {
		v := []*Vault{v1, v2}[w%2]
		name := fmt.Sprintf("v%d-w%d", w%2+1, w)
		s.goLoop(name, func(wk *lworker, rng *rand.Rand, i int) error {
			return writeStripes(v, "ranges.bin", size, stripe, writers, w, rng, s.running, wk.do, m.set)
		})
	}
	for w := writers - 2; w < writers; w++ {
		s.helper("stressStripes", func(l string) {
			var i int
			var seed uint64
			fmt.Sscan(l, &i, &seed)
			m.set(i, seed)
		}, s.db, "ranges.bin", strconv.Itoa(size), strconv.Itoa(stripe), strconv.Itoa(writers), strconv.Itoa(w), strconv.FormatUint(s.seed, 10), s.stopFile)
	}
	s.wait()
	m.check(t, mustGet(t, v1, "ranges.bin"))
}

// --- Defect 2: commits stall beside a long reader ---------------------

// TestStressLibraryCommitsBesideLongReader is defect 2 in the library: a
// separate connection keeps a read transaction open while two
// goroutines put 1 MiB values, 160 MiB in all: past the 64 MiB after
// which the code before the fix made each commit wait for a checkpoint
// that the reader blocks (for the busy timeout, here 60 s: a stall).
func TestStressLibraryCommitsBesideLongReader(t *testing.T) {
	s := newLStress(t)
	v := s.vault()
	mustPut(t, v, "first", []byte("x"))
	reader, err := sql.Open("sqlite3", "file:"+s.db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	tx, err := reader.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow("SELECT count(*) FROM kvault_inodes").Scan(&n); err != nil {
		t.Fatal(err)
	}
	var release sync.Once
	end := func() { release.Do(func() { tx.Rollback() }) }
	defer end()
	s.mu.Lock()
	s.unblock = append(s.unblock, end)
	s.mu.Unlock()
	const perWriter = 80
	var written atomic.Int64
	s.deadline.Store(time.Now().Add(10 * time.Minute).UnixNano()) // until the writers are done
	for w := range 2 {
		s.goLoop(fmt.Sprintf("put-%d", w), func(wk *lworker, rng *rand.Rand, i int) error {
			if i >= perWriter {
				if written.Load() >= 2*perWriter {
					s.deadline.Store(time.Now().UnixNano())
				}
				time.Sleep(10 * time.Millisecond)
				return nil
			}
			key := fmt.Sprintf("w%d/%d", w, i)
			if err := wk.do("put 1 MiB", func() error { return v.Put(key, genBytes(uint64(w<<20|i), 1<<20)) }); err != nil {
				return err
			}
			written.Add(1)
			return nil
		})
	}
	s.wait()
	wal := fileSizeOf(s.db + "-wal")
	end()
	for w := range 2 {
		for i := range perWriter {
			if got := mustGet(t, v, fmt.Sprintf("w%d/%d", w, i)); !bytes.Equal(got, genBytes(uint64(w<<20|i), 1<<20)) {
				t.Fatalf("w%d/%d: wrong bytes", w, i)
			}
		}
	}
	t.Logf("%d MiB put beside a read snapshot; WAL %d MiB while it was held", written.Load(), wal>>20)
}

func fileSizeOf(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// --- Everything at once -------------------------------------------------

// TestStressLibraryMixed runs every kind of worker on three Vaults of one
// file and a helper process: appends, unaligned writes, truncates,
// renames, deletes of open files, Sync and listings.
func TestStressLibraryMixed(t *testing.T) {
	s := newLStress(t)
	vs := []*Vault{s.vault(), s.vault(), s.vault()}
	mustPut(t, vs[0], "m/log", nil)
	log := &lineLog{}
	s.goAppender("append-0", vs[0], log, "m/log")
	s.helper("stressAppend", func(l string) { log.add(fmt.Sprintf("proc line %s\n", l)) }, s.db, "m/log", "proc", s.stopFile)
	s.goPwriter("pwrite", vs[1], "m/pw", 300_000)
	for w := range 2 {
		v, key := vs[w], fmt.Sprintf("m/tr%d", w)
		mustPut(t, v, key, nil)
		var model []byte
		s.goLoop(fmt.Sprintf("truncate-%d", w), func(wk *lworker, rng *rand.Rand, i int) error {
			f, err := v.OpenFile(key, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			if rng.IntN(2) == 0 {
				size := rng.Int64N(300_000)
				if err := wk.do("truncate", func() error { return f.Truncate(size) }); err != nil {
					return err
				}
				if size < int64(len(model)) {
					model = model[:size]
				} else {
					model = append(model, make([]byte, size-int64(len(model)))...)
				}
			} else {
				off, p := rng.Int64N(250_000), genBytes(rng.Uint64(), 1+rng.IntN(70_000))
				if err := wk.do("write", func() error { _, err := f.WriteAt(p, off); return err }); err != nil {
					return err
				}
				if end := off + int64(len(p)); end > int64(len(model)) {
					model = append(model, make([]byte, end-int64(len(model)))...)
				}
				copy(model[off:], p)
			}
			if i%3 == 0 {
				if err := wk.do("sync", f.Sync); err != nil {
					return err
				}
			}
			got := make([]byte, len(model)+1)
			n, _ := f.ReadAt(got, 0)
			if !bytes.Equal(got[:n], model) {
				return fmt.Errorf("reads %d bytes, model %d, first difference at %d", n, len(model), firstDiff(got[:n], model))
			}
			return nil
		})
	}
	var lastVersion atomic.Value
	s.goLoop("rename", func(wk *lworker, rng *rand.Rand, i int) error {
		tmp := fmt.Sprintf("m/tmp%d", i)
		b := genBytes(rng.Uint64(), rng.IntN(150_000))
		if err := wk.do("put", func() error { return vs[2].Put(tmp, b) }); err != nil {
			return err
		}
		if err := wk.do("rename", func() error { return vs[2].Rename(tmp, "m/current") }); err != nil {
			return err
		}
		lastVersion.Store(b)
		return nil
	})
	s.goLoop("delete-open", func(wk *lworker, rng *rand.Rand, i int) error {
		v := vs[i%3]
		key := fmt.Sprintf("m/gone%d", i)
		a := genBytes(rng.Uint64(), rng.IntN(100_000))
		if err := wk.do("put", func() error { return v.Put(key, a) }); err != nil {
			return err
		}
		f, err := vs[(i+1)%3].Open(key)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := wk.do("delete", func() error { return v.Delete(key) }); err != nil {
			return err
		}
		got := make([]byte, len(a)+1)
		n, _ := f.ReadAt(got, 0)
		if !bytes.Equal(got[:n], a) {
			return fmt.Errorf("a File of a deleted key reads %d bytes, want %d", n, len(a))
		}
		if ok, err := v.Exists(key); err != nil || ok {
			return fmt.Errorf("deleted key exists: %v %v", ok, err)
		}
		return nil
	})
	s.goLoop("sync", func(wk *lworker, rng *rand.Rand, i int) error {
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		return wk.do("vault sync", vs[i%3].Sync)
	})
	s.goLister("list-0", vs[0], "m")
	s.goLister("list-1", vs[2], "m")
	s.wait()
	log.check(t, "m/log", mustGet(t, vs[1], "m/log"))
	if b, ok := lastVersion.Load().([]byte); ok {
		if got := mustGet(t, vs[0], "m/current"); !bytes.Equal(got, b) {
			t.Errorf("m/current: %d bytes, want the last renamed version of %d", len(got), len(b))
		}
	}
}
