package mount_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FUSE opcodes and header layout (linux/fuse.h).
const (
	fuseOpFsync = 20
	// A request starts with fuse_in_header {len u32, opcode u32, unique
	// u64, ...}; a reply with fuse_out_header {len u32, error i32,
	// unique u64}.
	inOpcodeOff, inUniqueOff  = 4, 8
	outErrorOff, outUniqueOff = 4, 8
	fuseHeaderMin             = 16
)

// traceCall is one system call from an strace -f log, put together from
// its "<unfinished ...>" and "<... resumed>" halves when it was split.
type traceCall struct {
	start, end int    // indexes of the lines where it entered and returned
	pid        int    // thread id
	stamp      string // -tt time of its return line
	name       string // read, writev, fsync, ...
	fd         int
	path       string // what the fd named (from -y), if shown
	args       string // the argument text, both halves joined
	ret        string // the return value text, after "= "
}

var (
	traceLineRE = regexp.MustCompile(`^(\d+)\s+(\d\d:\d\d:\d\d\.\d+)\s+(.*)$`)
	callStartRE = regexp.MustCompile(`^([a-z0-9_]+)\((\d+)(?:<([^>]*)>)?(.*)$`)
	resumedRE   = regexp.MustCompile(`^<\.\.\. ([a-z0-9_]+) resumed>(.*)$`)
	returnRE    = regexp.MustCompile(`\)\s+=\s+(-?\d+.*)$`)
)

// parseTrace reads an strace log written with -f -tt -y -xx. Every line
// has the thread id first (-f with -o); a call interrupted by another
// thread's event is split across two lines. Lines are in the order
// strace saw the events, which respects causality between threads: a
// thread stopped at a system call's return cannot hand its result to
// another thread before strace has logged that return.
func parseTrace(log string) []traceCall {
	var calls []traceCall
	pending := map[int]*traceCall{}
	for i, line := range strings.Split(log, "\n") {
		m := traceLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		stamp, rest := m[2], m[3]
		if r := resumedRE.FindStringSubmatch(rest); r != nil {
			c := pending[pid]
			delete(pending, pid)
			if c == nil || c.name != r[1] {
				continue // started before strace attached
			}
			c.args += r[2]
			c.end, c.stamp = i, stamp
			if rm := returnRE.FindStringSubmatch(r[2]); rm != nil {
				c.ret = rm[1]
			}
			calls = append(calls, *c)
			continue
		}
		s := callStartRE.FindStringSubmatch(rest)
		if s == nil {
			continue // signals, exits
		}
		fd, _ := strconv.Atoi(s[2])
		c := &traceCall{start: i, end: i, pid: pid, stamp: stamp, name: s[1], fd: fd, path: unescapeTrace(s[3]), args: s[4]}
		if strings.HasSuffix(rest, "<unfinished ...>") {
			c.args = strings.TrimSuffix(c.args, "<unfinished ...>")
			pending[pid] = c
			continue
		}
		if rm := returnRE.FindStringSubmatch(rest); rm != nil {
			c.ret = rm[1]
		}
		calls = append(calls, *c)
	}
	return calls
}

// unescapeTrace decodes strace's \xHH escapes (-xx applies them to the
// paths that -y prints as well).
func unescapeTrace(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	return string(firstBytes(`"` + s + `"`))
}

// firstBytes decodes the first quoted string (strace -xx: every byte as
// \xHH) in a call's argument text.
func firstBytes(args string) []byte {
	i := strings.IndexByte(args, '"')
	if i < 0 {
		return nil
	}
	var out []byte
	s := args[i+1:]
	for len(s) > 0 && s[0] != '"' {
		if len(s) >= 4 && s[0] == '\\' && s[1] == 'x' {
			if b, err := strconv.ParseUint(s[2:4], 16, 8); err == nil {
				out = append(out, byte(b))
				s = s[4:]
				continue
			}
		}
		if s[0] == '\\' && len(s) >= 2 { // other escapes, should -xx leave any
			out = append(out, s[1])
			s = s[2:]
			continue
		}
		out = append(out, s[0])
		s = s[1:]
	}
	return out
}

// fdPaths maps a process's descriptors to what they name.
func fdPaths(pid int) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil {
			out[fd] = p
		}
	}
	return out
}

// TestFsyncIsDurable proves that fsync(2) on a file in the mount returns
// only after the database is on disk: tracing the daemon, an fsync or
// fdatasync of the database's WAL (or main file) happens after the
// FUSE_FSYNC request is read from /dev/fuse and before its reply is
// written there.
func TestFsyncIsDurable(t *testing.T) {
	strace := needTool(t, "strace", "strace")
	m := mountFresh(t)
	f, err := os.Create(m.path("durable.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("warm up")); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	logPath, errPath := filepath.Join(dir, "trace.log"), filepath.Join(dir, "strace.err")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	cmd := exec.Command(strace, "-f", "-tt", "-y", "-xx", "-s", "64",
		"-e", "trace=fsync,fdatasync,writev,write,read", "-o", logPath, "-p", strconv.Itoa(m.pid))
	cmd.Stdout, cmd.Stderr = errFile, errFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGINT)
			cmd.Wait()
		}
	}
	defer stop()
	if err := eventually(15*time.Second, func() error {
		b, _ := os.ReadFile(errPath)
		if bytes.Contains(b, []byte("attached")) {
			return nil
		}
		if cmd.ProcessState != nil {
			return fmt.Errorf("strace exited: %s", b)
		}
		return fmt.Errorf("strace has not attached: %q", b)
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let every thread be attached

	data := genBytes(5, 1<<20)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	syncStart := time.Now()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	syncTook := time.Since(syncStart)
	fds := fdPaths(m.pid) // for calls that -y could not name
	time.Sleep(200 * time.Millisecond)
	stop()
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	calls := parseTrace(string(raw))
	pathOf := func(c traceCall) string {
		if c.path != "" {
			return c.path
		}
		return fds[c.fd]
	}
	isFuse := func(c traceCall) bool { return pathOf(c) == "/dev/fuse" }

	// The FSYNC request, and its unique id.
	var req *traceCall
	var unique uint64
	for i, c := range calls {
		if c.name != "read" || !isFuse(c) {
			continue
		}
		b := firstBytes(c.args)
		if len(b) >= fuseHeaderMin && binary.LittleEndian.Uint32(b[inOpcodeOff:]) == fuseOpFsync {
			if req != nil {
				t.Fatalf("two FUSE_FSYNC requests in the trace, for one fsync")
			}
			req, unique = &calls[i], binary.LittleEndian.Uint64(b[inUniqueOff:])
		}
	}
	if req == nil {
		t.Fatalf("no FUSE_FSYNC request read from /dev/fuse in the trace (%d calls traced):\n%s", len(calls), tail(string(raw), 40))
	}
	// Its reply.
	var reply *traceCall
	for i, c := range calls {
		if (c.name != "writev" && c.name != "write") || !isFuse(c) {
			continue
		}
		b := firstBytes(c.args)
		if len(b) >= fuseHeaderMin && binary.LittleEndian.Uint64(b[outUniqueOff:]) == unique {
			reply = &calls[i]
			if e := int32(binary.LittleEndian.Uint32(b[outErrorOff:])); e != 0 {
				t.Fatalf("the FSYNC reply carries error %d", e)
			}
			break
		}
	}
	if reply == nil {
		t.Fatalf("no reply to FUSE_FSYNC (unique %d) written to /dev/fuse in the trace:\n%s", unique, tail(string(raw), 40))
	}
	if reply.start <= req.end {
		t.Fatalf("the FSYNC reply (line %d) comes before the request was read (line %d)", reply.start, req.end)
	}
	// A sync of the database between them.
	abs, _ := filepath.Abs(m.db)
	var syncs []string
	var found *traceCall
	for i, c := range calls {
		if c.name != "fsync" && c.name != "fdatasync" {
			continue
		}
		p := pathOf(c)
		syncs = append(syncs, fmt.Sprintf("line %d-%d %s(%s) = %s", c.start, c.end, c.name, p, c.ret))
		if (p == abs || p == abs+"-wal") && c.start > req.end && c.end < reply.start && strings.HasPrefix(c.ret, "0") {
			found = &calls[i]
		}
	}
	if found == nil {
		t.Fatalf("no fsync/fdatasync of %s or its -wal between the FSYNC request (line %d, %s) and its reply (line %d, %s); syncs traced: %q",
			abs, req.end, req.stamp, reply.start, reply.stamp, syncs)
	}
	t.Logf("FSYNC request read at %s, %s(%s) returned at %s, reply written at %s (fsync(2) took %v under strace)",
		req.stamp, found.name, pathOf(*found), found.stamp, reply.stamp, syncTook.Round(time.Microsecond))
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestHandlesShareDirtyBytes writes through one descriptor and reads
// through another (and from another process) before anything is closed
// or synced: the bytes are there at once.
func TestHandlesShareDirtyBytes(t *testing.T) {
	m := mountFresh(t)
	name := m.path("shared.bin")
	base := genBytes(21, 600_000)
	writeFile(t, name, base, 0o644)

	w, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Read first, so the reader's pages are cached.
	buf := make([]byte, 600_000)
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	patch := []byte("dirty bytes, not yet committed")
	if _, err := w.WriteAt(patch, 262_130); err != nil { // across a chunk boundary
		t.Fatal(err)
	}
	tailData := genBytes(22, 100_000)
	if _, err := w.WriteAt(tailData, 650_000); err != nil { // past the end, leaving a hole
		t.Fatal(err)
	}
	want := append(bytes.Clone(base), make([]byte, 50_000)...)
	copy(want[262_130:], patch)
	want = append(want, tailData...)

	got := make([]byte, len(patch))
	if _, err := r.ReadAt(got, 262_130); err != nil || !bytes.Equal(got, patch) {
		t.Fatalf("the other descriptor reads %q (%v), want %q", got, err, patch)
	}
	if st, err := r.Stat(); err != nil || st.Size() != int64(len(want)) {
		t.Fatalf("the other descriptor's size: %v %v, want %d", st.Size(), err, len(want))
	}
	all := make([]byte, len(want)+10)
	n, _ := r.ReadAt(all, 0)
	if !bytes.Equal(all[:n], want) {
		t.Fatalf("the other descriptor reads %d bytes, want %d; first difference at %d", n, len(want), firstDiff(all[:n], want))
	}
	// Another process, with its own open, sees them too.
	out := run(t, "dd", "if="+name, "bs=1", "skip=262130", "count="+strconv.Itoa(len(patch)), "status=none")
	if out != string(patch) {
		t.Fatalf("another process reads %q, want %q", out, patch)
	}
	if h := hashFile(t, name); h != sha(want) {
		t.Fatalf("another open of the file reads different bytes")
	}
	// The writer writes again; the reader's cached pages follow.
	if _, err := w.WriteAt([]byte("SECOND"), 10); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, 6)
	if _, err := r.ReadAt(got, 10); err != nil || string(got) != "SECOND" {
		t.Fatalf("after a second write the reader sees %q (%v)", got, err)
	}
}

func sha(b []byte) [32]byte { return sha256.Sum256(b) }

// TestCopyMemoryBudget copies 2 GiB into a mount with default settings
// while sampling the daemon's anonymous memory: dirty chunks are
// written out early, so memory stays within the cache budget.
func TestCopyMemoryBudget(t *testing.T) {
	m := mountFresh(t)
	const size = 2 << 30
	const limit = 200 << 20
	src := filepath.Join(t.TempDir(), "src.bin")
	writeGenFile(t, src, size, 2)
	t.Cleanup(func() { os.Remove(src) })
	s := sampleRSS(m.pid, 50*time.Millisecond)
	start := time.Now()
	r := runCmd("", "cp", src, m.path("big.bin"))
	elapsed := time.Since(start)
	peak, serr := s.Stop()
	if r.err != nil {
		t.Fatalf("cp: %v: %s", r.err, r.stderr)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	t.Logf("cp of 2 GiB in %v (%.0f MiB/s); daemon RssAnon peak %d MiB over %d samples",
		elapsed.Round(time.Millisecond), float64(size>>20)/elapsed.Seconds(), peak>>20, s.samples)
	if peak > limit {
		t.Errorf("the daemon's RssAnon peaked at %d MiB during the copy, over %d MiB", peak>>20, limit>>20)
	}
	if st, err := os.Stat(m.path("big.bin")); err != nil || st.Size() != size {
		t.Fatalf("size after the copy: %v", err)
	}
	// Spot-check the data at a few offsets, without reading 2 GiB back.
	f, err := os.Open(m.path("big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, 1<<30 - 4096, 1 << 30, size - 65536} {
		got, exp := make([]byte, 65536), make([]byte, 65536)
		if _, err := f.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		fillGen(2, off, exp)
		if !bytes.Equal(got, exp) {
			t.Fatalf("bytes at %d differ from the source", off)
		}
	}
}
