package mount_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// Concurrency stress of the mount (issue 8, item 14). Goroutines of the
// test and separate processes (bash loops: echo >> f, ls -l, dd) mix
// appends, unaligned writes, truncates, listings, renames, unlinks of
// open files, reads and fsync on one mount, on two mounts of one database
// and on a mount beside a library user, under the watchdog of
// watch_test.go. Wherever the outcome is defined it is checked against a
// model: every appended line exists exactly once and nothing else (no NUL
// bytes), every byte range owned by one writer holds that writer's last
// bytes, a listing never fails except for an entry removed meanwhile.
//
// Each test runs for KVAULTFS_STRESS_DURATION (default 10s, 5s with
// -short; scripts/stress.sh runs them longer) and fails when one
// operation takes longer than KVAULTFS_STRESS_STALL (default 15s, 30s
// when a duration is given).

// stressDuration is how long each stress test keeps its workers busy.
func stressDuration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KVAULTFS_STRESS_DURATION")); err == nil && d > 0 {
		return d
	}
	if testing.Short() {
		return 5 * time.Second
	}
	return 10 * time.Second
}

// stressStall is how long one operation may take before the watchdog
// fires: orders of magnitude above a normal operation (milliseconds),
// below the busy timeout given to the daemons (60s), so that a commit
// stuck on a lock shows as a stall.
func stressStall() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("KVAULTFS_STRESS_STALL")); err == nil && d > 0 {
		return d
	}
	if os.Getenv("KVAULTFS_STRESS_DURATION") != "" {
		return 30 * time.Second
	}
	return 15 * time.Second
}

// stressBusyTimeout is the daemons' --busy-timeout: long, so that a
// request that waits on a lock held by another connection stalls past
// the watchdog's limit instead of failing quietly after 5s.
const stressBusyTimeout = "60s"

// stress is one stress test's shared state.
type stress struct {
	t        *testing.T
	watch    *stressWatch
	deadline atomic.Int64 // unix ns; moved by tests that run until their work is done
	stopFile string       // created when the workers must stop (read by shell loops)
	wg       sync.WaitGroup
	seed     uint64

	mu     sync.Mutex
	errs   int
	procs  []*exec.Cmd
	mounts []*mounted
}

func newStress(t *testing.T) *stress {
	s := &stress{
		t:        t,
		watch:    newStressWatch(t, stressStall()),
		stopFile: filepath.Join(t.TempDir(), "stop"),
		seed:     uint64(time.Now().UnixNano()),
	}
	s.deadline.Store(time.Now().Add(stressDuration()).UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("KVAULTFS_STRESS_SEED"), 10, 64); err == nil {
		s.seed = v
	}
	t.Logf("seed %d (KVAULTFS_STRESS_SEED), duration %v, stall limit %v", s.seed, stressDuration(), stressStall())
	s.watch.onFire(func() {
		s.mu.Lock()
		procs, mounts := slices.Clone(s.procs), slices.Clone(s.mounts)
		s.mu.Unlock()
		for _, p := range procs {
			p.Process.Signal(syscall.SIGQUIT)
		}
		for _, m := range mounts {
			syscall.Kill(m.pid, syscall.SIGKILL)
			detach(m.mnt)
		}
	})
	return s
}

// mount mounts d (a fresh vault dir or a second mount point of one) with
// a log file for the daemon, and watches the daemon.
func (s *stress) mount(d vaultDir, name string) *mounted {
	s.t.Helper()
	logFile := filepath.Join(d.dir, name+".log")
	m := mountDaemon(s.t, d, "--log", logFile, "--busy-timeout", stressBusyTimeout)
	s.watch.watchPID(m.pid, logFile)
	s.mu.Lock()
	s.mounts = append(s.mounts, m)
	s.mu.Unlock()
	return m
}

// running reports whether workers should go on.
func (s *stress) running() bool {
	return time.Now().UnixNano() < s.deadline.Load() && !s.watch.Fired() && !s.t.Failed()
}

// errorf reports a worker's unexpected error, unless the watchdog fired
// (then every request fails with ENOTCONN) or too many were reported.
func (s *stress) errorf(format string, args ...any) {
	if s.watch.Fired() {
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

// goLoop runs fn in a loop until the deadline, as a watched worker.
func (s *stress) goLoop(name string, fn func(wk *stressWorker, rng *rand.Rand, i int) error) {
	wk := s.watch.worker(name)
	rng := rand.New(rand.NewPCG(s.seed, uint64(len(name))*7919+uint64(name[len(name)-1])))
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

// shellLoop runs a bash loop as a separate process: body runs until the
// stop file exists and prints one line per completed operation, which
// the watchdog counts; lines go to onLine. Its stderr is returned by the
// function that wait returns.
func (s *stress) shellLoop(name, body string, onLine func(string)) {
	script := fmt.Sprintf("while [ ! -e %q ]; do\n%s\ndone", s.stopFile, body)
	cmd := exec.Command("bash", "-c", script)
	var stderr bytes.Buffer
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
	wk := s.watch.worker(name)
	s.watch.watchPID(cmd.Process.Pid, "")
	wk.begin(name)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			wk.end()
			if onLine != nil {
				onLine(sc.Text())
			}
			wk.begin(name)
		}
		err := cmd.Wait()
		wk.end()
		if err != nil && stderr.Len() > 0 {
			s.errorf("%s: %v: %s", name, err, lastBytes(stderr.String(), 2000))
		}
	}()
}

// wait stops the shell loops at the deadline, waits for every worker and
// fails the test with the dump if the watchdog fired.
func (s *stress) wait() {
	s.t.Helper()
	for time.Now().UnixNano() < s.deadline.Load() && !s.watch.Fired() && !s.t.Failed() {
		time.Sleep(50 * time.Millisecond)
	}
	os.WriteFile(s.stopFile, nil, 0o644)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stressStall() + 90*time.Second):
		// The watchdog kills the daemons when it fires, which ends every
		// request; workers still running now are a bug of the test.
		buf := make([]byte, 1<<20)
		s.t.Fatalf("stress workers did not stop:\n%s", buf[:runtime.Stack(buf, true)])
	}
	s.watch.check()
	s.t.Logf("%d operations in %v", s.watch.ops.Load(), stressDuration())
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// --- Worker kinds ---------------------------------------------------

// appendLog is the model of files written only by appends of whole lines:
// every line acknowledged (written and closed or fsynced) must be there
// exactly once, and nothing else.
type appendLog struct {
	mu    sync.Mutex
	lines map[string]map[string]int // file -> line -> times acknowledged
}

func newAppendLog() *appendLog { return &appendLog{lines: map[string]map[string]int{}} }

func (l *appendLog) add(file, line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lines[file] == nil {
		l.lines[file] = map[string]int{}
	}
	l.lines[file][line]++
}

// check compares each file's lines with the model.
func (l *appendLog) check(t *testing.T, read func(file string) ([]byte, error)) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for file, want := range l.lines {
		data, err := read(file)
		if err != nil {
			t.Errorf("read %s: %v", file, err)
			continue
		}
		if i := bytes.IndexByte(data, 0); i >= 0 {
			t.Errorf("%s: NUL byte at %d of %d (%d NUL bytes in all)", file, i, len(data), bytes.Count(data, []byte{0}))
		}
		got := map[string]int{}
		for _, line := range strings.SplitAfter(string(data), "\n") {
			if line != "" {
				got[line]++
			}
		}
		var lost, dup, extra []string
		for line, n := range want {
			switch g := got[line]; {
			case g == 0:
				lost = append(lost, strings.TrimSpace(line))
			case g > n:
				dup = append(dup, strings.TrimSpace(line))
			}
			total += n
		}
		for line := range got {
			if want[line] == 0 {
				extra = append(extra, strings.TrimSpace(line))
			}
		}
		if len(lost)+len(dup)+len(extra) > 0 {
			slices.Sort(lost)
			t.Errorf("%s: %d lines acknowledged, %d lines read; lost %d %q, duplicated %d %q, unexpected %d %q",
				file, len(want), len(got), len(lost), lost[:min(5, len(lost))], len(dup), dup[:min(5, len(dup))], len(extra), extra[:min(5, len(extra))])
		}
	}
	t.Logf("%d appended lines in %d files checked", total, len(l.lines))
}

// appendLine opens path with O_APPEND, writes line, fsyncs if asked and
// closes: echo line >> path.
func appendLine(path, line string, fsync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	if fsync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// goAppender appends "<name> line N" lines to files[N % len(files)].
func (s *stress) goAppender(name string, log appender, files []string) {
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
		file := files[i%len(files)]
		line := fmt.Sprintf("%s line %d\n", name, i)
		if err := wk.do("append", func() error { return appendLine(file, line, i%3 == 0) }); err != nil {
			return fmt.Errorf("append to %s: %w", file, err)
		}
		log.add(file, line)
		return nil
	})
}

// shellAppender is a bash loop: echo "<name> line N" >> file.
func (s *stress) shellAppender(name string, log appender, file string) {
	body := fmt.Sprintf(`echo "%s line $i" >> %q || exit 1; echo $i; i=$((i+1))`, name, file)
	s.shellLoop(name, "i=${i:-0}\n"+body, func(l string) { log.add(file, fmt.Sprintf("%s line %s\n", name, l)) })
}

// goLister lists dir and stats every entry (ls -l). An entry removed
// between the listing and its stat is the only error allowed.
func (s *stress) goLister(name, dir string) {
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
		var entries []os.DirEntry
		if err := wk.do("readdir", func() (err error) { entries, err = os.ReadDir(dir); return err }); err != nil {
			return fmt.Errorf("readdir %s: %w", dir, err)
		}
		for _, e := range entries {
			err := wk.do("lstat", func() error { _, err := os.Lstat(filepath.Join(dir, e.Name())); return err })
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("lstat %s after readdir: %w", e.Name(), err)
			}
		}
		return nil
	})
}

// shellLister is a bash loop running ls -l dir; a complaint other than an
// entry gone meanwhile is an error.
func (s *stress) shellLister(name, dir string) {
	errFile := filepath.Join(filepath.Dir(s.stopFile), name+".err")
	s.shellLoop(name, fmt.Sprintf(`ls -l %q >/dev/null 2>>%q; echo`, dir, errFile), nil)
	s.t.Cleanup(func() {
		raw, _ := os.ReadFile(errFile)
		for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			if l != "" && !strings.Contains(l, "No such file or directory") && !s.watch.Fired() {
				s.t.Errorf("%s: ls -l: %s", name, l)
				return
			}
		}
	})
}

// posByte is what every unaligned writer writes at absolute offset off:
// a function of the position alone, so any order of overlapping writes
// leaves a known byte at each written position.
func posByte(off int64) byte { return 'a' + byte(off%26) }

// goPwriter writes 2 bytes at odd offsets of its own file (created here
// with initial bytes), fsyncs now and then and checks the whole file
// against its model every 100 writes and at the end.
func (s *stress) goPwriter(name, path string, span int64) {
	model := make([]byte, span/2)
	for i := range model {
		model[i] = posByte(int64(i))
	}
	writeFile(s.t, path, model, 0o644)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { f.Close() })
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
		off := rng.Int64N(span-2) | 1
		p := []byte{posByte(off), posByte(off + 1)}
		if err := wk.do("pwrite", func() error { _, err := f.WriteAt(p, off); return err }); err != nil {
			return fmt.Errorf("pwrite at %d: %w", off, err)
		}
		if n := off + 2; n > int64(len(model)) {
			model = append(model, make([]byte, n-int64(len(model)))...)
		}
		copy(model[off:], p)
		if i%50 == 49 {
			if err := wk.do("fsync", f.Sync); err != nil {
				return fmt.Errorf("fsync: %w", err)
			}
		}
		if i%100 == 99 || !s.running() {
			got := make([]byte, len(model)+10)
			var n int
			err := wk.do("pread", func() (err error) { n, err = f.ReadAt(got, 0); return err })
			if err != nil && err != io.EOF {
				return fmt.Errorf("pread: %w", err)
			}
			if !bytes.Equal(got[:n], model) {
				return fmt.Errorf("reads %d bytes, model %d; first difference at %d", n, len(model), firstDiff(got[:n], model))
			}
		}
		return nil
	})
}

// shellPwriter is a bash loop of dd writing 2 bytes at an odd offset of
// an existing file (conv=notrunc); written positions are reported and
// checked at the end: each holds posByte, every other byte is posByte or 0.
func (s *stress) shellPwriter(name, path string, span int64) (check func()) {
	init := make([]byte, span/4)
	for i := range init {
		init[i] = posByte(int64(i))
	}
	writeFile(s.t, path, init, 0o644)
	body := fmt.Sprintf(`a=abcdefghijklmnopqrstuvwxyz; o=$(( ((RANDOM << 15 | RANDOM) %% %d) | 1 ))
printf '%%s%%s' "${a:$((o %% 26)):1}" "${a:$(((o+1) %% 26)):1}" | dd of=%q bs=2 count=1 seek=$o oflag=seek_bytes conv=notrunc status=none || exit 1
echo $o`, span-2, path)
	var mu sync.Mutex
	written := map[int64]bool{}
	s.shellLoop(name, body, func(l string) {
		o, _ := strconv.ParseInt(l, 10, 64)
		mu.Lock()
		written[o] = true
		mu.Unlock()
	})
	return func() {
		got, err := os.ReadFile(path)
		if err != nil {
			s.t.Errorf("%s: read %s: %v", name, path, err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for i, b := range got {
			if b != 0 && b != posByte(int64(i)) || i < len(init) && b != posByte(int64(i)) {
				s.t.Errorf("%s: byte %d of %s is %q, want %q", name, i, path, b, posByte(int64(i)))
				return
			}
		}
		for o := range written {
			if o+2 > int64(len(got)) || got[o] == 0 || got[o+1] == 0 {
				s.t.Errorf("%s: the 2 bytes written at %d are not in %s (%d bytes)", name, o, path, len(got))
				return
			}
		}
		s.t.Logf("%s: %d unaligned writes by dd checked", name, len(written))
	}
}

// goTruncater writes and truncates its own file through open handles and
// path truncates, checking it against a model after each step.
func (s *stress) goTruncater(name, path string) {
	var model []byte
	writeFile(s.t, path, nil, 0o644)
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		switch rng.IntN(3) {
		case 0:
			size := rng.Int64N(300_000)
			if err := wk.do("ftruncate", func() error { return f.Truncate(size) }); err != nil {
				return fmt.Errorf("ftruncate %d: %w", size, err)
			}
			model = resize(model, size)
		case 1:
			size := rng.Int64N(300_000)
			if err := wk.do("truncate", func() error { return os.Truncate(path, size) }); err != nil {
				return fmt.Errorf("truncate %d: %w", size, err)
			}
			model = resize(model, size)
		default:
			off, p := rng.Int64N(250_000), genBytes(rng.Uint64(), 1+rng.IntN(70_000))
			if err := wk.do("pwrite", func() error { _, err := f.WriteAt(p, off); return err }); err != nil {
				return fmt.Errorf("pwrite %d at %d: %w", len(p), off, err)
			}
			model = resize(model, max(int64(len(model)), off+int64(len(p))))
			copy(model[off:], p)
		}
		if i%4 == 3 {
			if err := wk.do("fsync", f.Sync); err != nil {
				return fmt.Errorf("fsync: %w", err)
			}
		}
		var got []byte
		if err := wk.do("read", func() (err error) { got, err = io.ReadAll(io.NewSectionReader(f, 0, 1<<30)); return err }); err != nil {
			return fmt.Errorf("read back: %w", err)
		}
		if !bytes.Equal(got, model) {
			return fmt.Errorf("reads %d bytes, model %d; first difference at %d", len(got), len(model), firstDiff(got, model))
		}
		return nil
	})
}

func resize(b []byte, n int64) []byte {
	if n <= int64(len(b)) {
		return b[:n]
	}
	return append(b, make([]byte, n-int64(len(b)))...)
}

// versioned is the content of version gen of a renamed file: a header
// with its seed and length, then that stream, so a reader can tell a
// whole version from a mix.
func versioned(seed uint64, n int) []byte {
	b := genBytes(seed, n+16)
	binary.LittleEndian.PutUint64(b, seed)
	binary.LittleEndian.PutUint64(b[8:], uint64(n))
	return b
}

// checkVersioned reports whether b is a whole version.
func checkVersioned(b []byte) error {
	if len(b) < 16 {
		return fmt.Errorf("%d bytes, shorter than the header", len(b))
	}
	seed, n := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
	if want := versioned(seed, int(min(n, 1<<24))); !bytes.Equal(b, want) {
		return fmt.Errorf("%d bytes, not version %d of %d bytes (first difference at %d)", len(b), seed, n+16, firstDiff(b, want))
	}
	return nil
}

// goRenamer writes a new version to a temporary name, closes it and
// renames it over target; goReader checks readers see whole versions.
func (s *stress) goRenamer(name, dir string) (target string) {
	target = filepath.Join(dir, name)
	var last []byte
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
		tmp := filepath.Join(dir, fmt.Sprintf("%s.tmp%d", name, i))
		b := versioned(rng.Uint64(), rng.IntN(150_000))
		if err := wk.do("write tmp", func() error { return os.WriteFile(tmp, b, 0o644) }); err != nil {
			return err
		}
		if err := wk.do("rename", func() error { return os.Rename(tmp, target) }); err != nil {
			return err
		}
		last = b
		return nil
	})
	s.t.Cleanup(func() {
		if s.watch.Fired() || last == nil {
			return
		}
		if got, err := os.ReadFile(target); err == nil && !bytes.Equal(got, last) {
			s.t.Errorf("%s: the last version renamed into place reads %d bytes, want %d", name, len(got), len(last))
		}
	})
	return target
}

// goVersionReader reads path again and again: each read is a whole
// version or ENOENT (before the first rename).
func (s *stress) goVersionReader(name, path string) {
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
		var b []byte
		err := wk.do("read", func() (err error) { b, err = os.ReadFile(path); return err })
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return fmt.Errorf("read %s: %w", path, err)
		}
		if err := checkVersioned(b); err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		return nil
	})
}

// goUnlinker creates a file, unlinks it while open, goes on writing and
// reading through the open descriptor, fsyncs and closes: the inode must
// live until the close and the name must be gone.
func (s *stress) goUnlinker(name, dir string) {
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
		path := filepath.Join(dir, fmt.Sprintf("%s-%d", name, i))
		var f *os.File
		if err := wk.do("create", func() (err error) { f, err = os.Create(path); return err }); err != nil {
			return err
		}
		defer f.Close()
		a, b := genBytes(rng.Uint64(), rng.IntN(100_000)), genBytes(rng.Uint64(), 1+rng.IntN(100_000))
		if err := wk.do("write", func() error { _, err := f.Write(a); return err }); err != nil {
			return err
		}
		if err := wk.do("unlink", func() error { return os.Remove(path) }); err != nil {
			return err
		}
		if err := wk.do("write unlinked", func() error { _, err := f.Write(b); return err }); err != nil {
			return err
		}
		if err := wk.do("fsync unlinked", f.Sync); err != nil {
			return err
		}
		got := make([]byte, len(a)+len(b)+1)
		var n int
		err := wk.do("read unlinked", func() (err error) { n, err = f.ReadAt(got, 0); return err })
		if err != nil && err != io.EOF {
			return fmt.Errorf("read the unlinked file: %w", err)
		}
		if want := append(a, b...); !bytes.Equal(got[:n], want) {
			return fmt.Errorf("the unlinked file reads %d bytes, want %d (first difference at %d)", n, len(want), firstDiff(got[:n], want))
		}
		if err := wk.do("close unlinked", f.Close); err != nil {
			return err
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("lstat of the unlinked %s: %v, want ENOENT", path, err)
		}
		return nil
	})
}

// goSyncer fsyncs the directory and random files in it; a file removed
// meanwhile is fine.
func (s *stress) goSyncer(name, dir string) {
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		target := dir
		if len(entries) > 0 && i%2 == 1 {
			target = filepath.Join(dir, entries[rng.IntN(len(entries))].Name())
		}
		err = wk.do("fsync", func() error {
			f, err := os.Open(target)
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Sync()
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("fsync %s: %w", target, err)
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		return nil
	})
}

// --- Defect 1: the mount deadlocks under ordinary use -----------------

// TestStressMountAppendWhileListing is the hang of issue 8, defect 1:
// four loops appending lines to files of one directory (two goroutines,
// two bash loops of echo >> f) while three loops list it with stat of
// every entry (two goroutines, one ls -l). On the code before the fix
// every request of the mount hung within seconds. Afterwards every line
// is in its file exactly once.
func TestStressMountAppendWhileListing(t *testing.T) {
	s := newStress(t)
	m := s.mount(newVaultDir(t), "daemon")
	dir := m.path("d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join(dir, "f0"), filepath.Join(dir, "f1"), filepath.Join(dir, "f2"), filepath.Join(dir, "f3")}
	log := newAppendLog()
	s.goAppender("go-append-0", log, files[:2])
	s.goAppender("go-append-1", log, files[1:3])
	s.shellAppender("sh-append-2", log, files[2])
	s.shellAppender("sh-append-3", log, files[3])
	s.goLister("go-ls-0", dir)
	s.goLister("go-ls-1", dir)
	s.shellLister("sh-ls-2", dir)
	s.wait()
	log.check(t, os.ReadFile)
}

// TestStressMountUnalignedWriteWhileListing is the second hang of
// defect 1: writes of 2 bytes at odd offsets (each reads the rest of its
// chunk first) while eight loops list the directory.
func TestStressMountUnalignedWriteWhileListing(t *testing.T) {
	s := newStress(t)
	m := s.mount(newVaultDir(t), "daemon")
	dir := m.path("d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 20 { // something to list
		writeFile(t, filepath.Join(dir, fmt.Sprintf("other-%d", i)), []byte("x"), 0o644)
	}
	s.goPwriter("go-pwrite", filepath.Join(dir, "pw-go"), 1<<20)
	check := s.shellPwriter("sh-dd", filepath.Join(dir, "pw-sh"), 1<<20)
	for i := range 7 {
		s.goLister(fmt.Sprintf("go-ls-%d", i), dir)
	}
	s.shellLister("sh-ls-7", dir)
	s.wait()
	check()
}

// TestStressMountMixed runs every kind of worker on one mount at once:
// appends, unaligned writes, truncates, renames with readers, unlinks of
// open files, fsyncs and listings, from goroutines and processes.
func TestStressMountMixed(t *testing.T) {
	s := newStress(t)
	m := s.mount(newVaultDir(t), "daemon")
	dir := m.path("mixed")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	log := newAppendLog()
	files := []string{filepath.Join(dir, "log0"), filepath.Join(dir, "log1")}
	s.goAppender("go-append-0", log, files)
	s.shellAppender("sh-append-1", log, files[1])
	s.goPwriter("go-pwrite", filepath.Join(dir, "pw"), 300_000)
	check := s.shellPwriter("sh-dd", filepath.Join(dir, "pw-sh"), 300_000)
	s.goTruncater("go-trunc-0", filepath.Join(dir, "tr0"))
	s.goTruncater("go-trunc-1", filepath.Join(dir, "tr1"))
	target := s.goRenamer("go-rename", dir)
	s.goVersionReader("go-read", target)
	s.goUnlinker("go-unlink", dir)
	s.goSyncer("go-sync", dir)
	s.goLister("go-ls-0", dir)
	s.shellLister("sh-ls-1", dir)
	s.wait()
	log.check(t, os.ReadFile)
	check()
}

// --- Defect 4: two writers of one file lose acknowledged data ---------

// TestStressTwoMountsAppend is defect 4 (a): two mounts of one database
// append lines to one file (echo >> f style, each write closed or
// fsynced). Every acknowledged line must be there exactly once, with no
// NUL bytes; the code before the fix kept about half of them.
func TestStressTwoMountsAppend(t *testing.T) {
	s := newStress(t)
	d := newVaultDir(t)
	a := s.mount(d, "a")
	d2 := d
	d2.mnt = filepath.Join(d.dir, "mnt2")
	if err := os.Mkdir(d2.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	b := s.mount(d2, "b")
	writeFile(t, a.path("shared.log"), nil, 0o644)
	log := newAppendLog()
	// Both mounts' names of the file go to one model entry.
	fa, fb := a.path("shared.log"), b.path("shared.log")
	for i := range 2 {
		name := fmt.Sprintf("a-go-%d", i)
		s.goAppender(name, &aliasLog{log, fa}, []string{fa})
		name = fmt.Sprintf("b-go-%d", i)
		s.goAppender(name, &aliasLog{log, fa}, []string{fb})
	}
	s.shellAppender("a-sh", log, fa)
	s.shellAppender("b-sh", &aliasLog{log, fa}, fb)
	s.wait()
	log.check(t, func(string) ([]byte, error) { return libraryRead(t, d.db, "shared.log") })
}

// aliasLog records appends to another name of the same file under one
// model entry.
type aliasLog struct {
	*appendLog
	as string
}

func (l *aliasLog) add(_, line string) { l.appendLog.add(l.as, line) }

// appender is what goAppender and shellAppender record into.
type appender interface{ add(file, line string) }

// TestStressTwoMountsDisjointRanges is defect 4 (b): writers on two
// mounts of one database write different byte ranges of one file, odd
// sizes, several inside each 64 KiB chunk, each write fsynced. At the
// end every range holds its writer's last bytes; the code before the fix
// rewrote whole chunks from stale copies.
func TestStressTwoMountsDisjointRanges(t *testing.T) {
	s := newStress(t)
	d := newVaultDir(t)
	a := s.mount(d, "a")
	d2 := d
	d2.mnt = filepath.Join(d.dir, "mnt2")
	if err := os.Mkdir(d2.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	b := s.mount(d2, "b")
	const size = 4 << 16 // four chunks
	writeFile(t, a.path("ranges.bin"), make([]byte, size), 0o644)
	paths := []string{a.path("ranges.bin"), b.path("ranges.bin")}
	ranges := newRangeModel(size, 8, 1+s.seed%997)
	for w := range 8 {
		path := paths[w%2]
		s.goRangeWriter(fmt.Sprintf("%s-w%d", "ab"[w%2:w%2+1], w), ranges, w, func() (rangeFile, error) { return os.OpenFile(path, os.O_RDWR, 0) })
	}
	s.wait()
	got, err := libraryRead(t, d.db, "ranges.bin")
	if err != nil {
		t.Fatal(err)
	}
	ranges.check(t, got)
}

// rangeModel splits a file into stripes of odd length dealt round-robin
// to writers, so several writers own bytes of every chunk.
type rangeModel struct {
	size   int
	stripe int
	owner  []int // stripe -> writer
	mu     sync.Mutex
	last   map[int]uint64 // stripe -> seed of the last acknowledged write
}

func newRangeModel(size, writers int, salt uint64) *rangeModel {
	stripe := 4099 + int(salt%64)*2 // odd, never aligned
	m := &rangeModel{size: size, stripe: stripe, last: map[int]uint64{}}
	for i := 0; i*stripe < size; i++ {
		m.owner = append(m.owner, i%writers)
	}
	return m
}

func (m *rangeModel) bounds(i int) (int, int) { return i * m.stripe, min((i+1)*m.stripe, m.size) }

// stripeBytes is what a write with seed puts in stripe i.
func (m *rangeModel) stripeBytes(i int, seed uint64) []byte {
	lo, hi := m.bounds(i)
	if seed == 0 {
		return make([]byte, hi-lo)
	}
	return genBytes(seed^uint64(i)<<48, hi-lo)
}

func (m *rangeModel) check(t *testing.T, got []byte) {
	t.Helper()
	if len(got) != m.size {
		t.Errorf("the file has %d bytes, want %d", len(got), m.size)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	bad := 0
	for i := range m.owner {
		lo, hi := m.bounds(i)
		want := m.stripeBytes(i, m.last[i])
		if hi > len(got) || !bytes.Equal(got[lo:hi], want) {
			bad++
			if bad <= 5 {
				g := got[min(lo, len(got)):min(hi, len(got))]
				t.Errorf("bytes %d-%d (chunk %d, writer %d): first difference at %d, %d zero bytes of %d; want the writer's last fsynced write",
					lo, hi, lo>>16, m.owner[i], firstDiff(g, want), len(g)-len(bytes.Trim(g, "\x00")), hi-lo)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d stripes lost their writer's last fsynced bytes", bad, len(m.owner))
	} else {
		t.Logf("%d stripes of %d bytes, each its writer's last fsynced bytes", len(m.owner), m.stripe)
	}
}

// rangeFile is what a range writer writes through: an *os.File of a
// mount or a vault File.
type rangeFile interface {
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Close() error
}

// goRangeWriter rewrites the stripes of writer w, one at a time, each
// write fsynced (and the file closed and reopened now and then).
func (s *stress) goRangeWriter(name string, m *rangeModel, w int, open func() (rangeFile, error)) {
	var mine []int
	for i, o := range m.owner {
		if o == w {
			mine = append(mine, i)
		}
	}
	var f rangeFile
	s.t.Cleanup(func() {
		if f != nil {
			f.Close()
		}
	})
	s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, n int) error {
		if f == nil {
			if err := wk.do("open", func() (err error) { f, err = open(); return err }); err != nil {
				return err
			}
		}
		i := mine[rng.IntN(len(mine))]
		seed := rng.Uint64() | 1
		lo, _ := m.bounds(i)
		p := m.stripeBytes(i, seed)
		if err := wk.do("pwrite", func() error { _, err := f.WriteAt(p, int64(lo)); return err }); err != nil {
			return fmt.Errorf("write stripe %d: %w", i, err)
		}
		if err := wk.do("fsync", f.Sync); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
		m.mu.Lock()
		m.last[i] = seed
		m.mu.Unlock()
		if n%10 == 9 || !s.running() {
			err := wk.do("close", f.Close)
			f = nil
			if err != nil {
				return fmt.Errorf("close: %w", err)
			}
		}
		return nil
	})
}

// --- Defect 2: commits stall beside a long reader ---------------------

// TestStressMountCommitsBesideLongReader is defect 2 through the mount:
// a separate connection holds a read transaction open (as sqlite3,
// kvaultfs verify or a backup does) while files are written through the
// mount, well past the 64 MiB after which the code before the fix made
// every commit wait for a checkpoint that the reader blocks. With the
// daemon's busy timeout at 60s, such a wait is a stall that the watchdog
// catches. Once the reader is gone the WAL must shrink back within
// bounds as writing goes on.
func TestStressMountCommitsBesideLongReader(t *testing.T) {
	s := newStress(t)
	m := s.mount(newVaultDir(t), "daemon")
	reader := holdReadSnapshot(t, m.db)
	s.watch.onFire(reader.release)
	var written sync.Map
	const total = 160 << 20 // past 64 MiB with room for a slow machine
	perWriter := total / 2
	for w := range 2 {
		name := fmt.Sprintf("writer-%d", w)
		s.goLoop(name, func(wk *stressWorker, rng *rand.Rand, i int) error {
			if i*(1<<20) >= perWriter {
				time.Sleep(10 * time.Millisecond)
				return nil
			}
			path := m.path(fmt.Sprintf("w%d-%d", w, i))
			b := genBytes(uint64(w<<32|i), 1<<20)
			if err := wk.do("write 1 MiB and close", func() error { return os.WriteFile(path, b, 0o644) }); err != nil {
				return err
			}
			written.Store(path, uint64(w<<32|i))
			return nil
		})
	}
	// Run until both writers are done (the deadline alone may be short).
	s.deadline.Store(time.Now().Add(max(stressDuration(), 10*time.Minute)).UnixNano())
	go func() {
		for s.running() {
			n := 0
			written.Range(func(any, any) bool { n++; return true })
			if n*(1<<20) >= total {
				s.deadline.Store(time.Now().UnixNano())
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	s.wait()
	walWhileHeld := fileSize(m.db + "-wal")
	reader.release()
	n := 0
	written.Range(func(k, v any) bool {
		n++
		if got := readFile(t, k.(string)); !bytes.Equal(got, genBytes(v.(uint64), 1<<20)) {
			t.Errorf("%s: wrong bytes", k)
		}
		return true
	})
	// With the reader gone the WAL is bounded again.
	const walBound = 96 << 20
	var wal int64
	err := eventually(30*time.Second, func() error {
		if err := os.WriteFile(m.path("after"), genBytes(7, 1<<20), 0o644); err != nil {
			return err
		}
		if wal = fileSize(m.db + "-wal"); wal > walBound {
			return fmt.Errorf("the WAL has %d bytes", wal)
		}
		return nil
	})
	t.Logf("%d MiB written beside a read snapshot; WAL %d MiB while it was held, %d MiB after", n, walWhileHeld>>20, wal>>20)
	if err != nil {
		t.Errorf("the reader is gone but the WAL is not back under %d MiB: %v", walBound>>20, err)
	}
}

// readSnapshot is a read transaction held open on another connection.
type readSnapshot struct {
	once    sync.Once
	release func()
}

// holdReadSnapshot opens db with the sqlite3 shell in another process and
// keeps a read transaction open until release (or the end of the test).
func holdReadSnapshot(t *testing.T, db string) *readSnapshot {
	t.Helper()
	cmd := exec.Command(needTool(t, "sqlite3", "sqlite3"), db)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(in, ".timeout 10000\nBEGIN;\nSELECT 'snapshot', count(*) FROM kvault_inodes;")
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "snapshot|") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("sqlite3 did not start a read transaction: %q %v", line, err)
	}
	r := &readSnapshot{}
	r.release = func() {
		r.once.Do(func() {
			fmt.Fprintln(in, "COMMIT;\n.quit")
			in.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(r.release)
	return r
}

// --- A mount and a library user on one database -----------------------

// TestStressMountAndLibrary has the test process, as a library user of
// the mounted database, append lines to a file that the mount's users
// append to as well, and write stripes of a file whose other stripes
// are written through the mount, while the mount lists the directory.
// This is defect 4 between a mount and another process.
func TestStressMountAndLibrary(t *testing.T) {
	s := newStress(t)
	m := s.mount(newVaultDir(t), "daemon")
	v := openLibrary(t, m.db)
	writeFile(t, m.path("shared.log"), nil, 0o644)
	const size = 3 << 16
	writeFile(t, m.path("ranges.bin"), make([]byte, size), 0o644)
	log := newAppendLog()
	s.goAppender("mount-go", log, []string{m.path("shared.log")})
	s.shellAppender("mount-sh", log, m.path("shared.log"))
	s.goLoop("library-append", func(wk *stressWorker, rng *rand.Rand, i int) error {
		line := fmt.Sprintf("library line %d\n", i)
		err := wk.do("append", func() error {
			f, err := v.OpenFile("shared.log", os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			if _, err := f.Write([]byte(line)); err != nil {
				f.Close()
				return err
			}
			if i%3 == 0 {
				if err := f.Sync(); err != nil {
					f.Close()
					return err
				}
			}
			return f.Close()
		})
		if err != nil {
			return err
		}
		log.add(m.path("shared.log"), line)
		return nil
	})
	ranges := newRangeModel(size, 4, 1+s.seed%991)
	for w := range 4 {
		name := fmt.Sprintf("mount-w%d", w)
		open := func() (rangeFile, error) { return os.OpenFile(m.path("ranges.bin"), os.O_RDWR, 0) }
		if w%2 == 1 {
			name = fmt.Sprintf("library-w%d", w)
			open = func() (rangeFile, error) { return v.OpenFile("ranges.bin", os.O_RDWR, 0) }
		}
		s.goRangeWriter(name, ranges, w, open)
	}
	s.goLister("mount-ls", m.mnt)
	s.wait()
	log.check(t, func(string) ([]byte, error) { return v.Get("shared.log") })
	got, err := v.Get("ranges.bin")
	if err != nil {
		t.Fatal(err)
	}
	ranges.check(t, got)
}

// libraryRead reads key from the database with the vault library after
// the test's mounts are unmounted... or while they are still mounted: a
// committed write is visible to every process.
func libraryRead(t *testing.T, db, key string) ([]byte, error) {
	t.Helper()
	v := openLibrary(t, db)
	return v.Get(key)
}
