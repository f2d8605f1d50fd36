package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
	_ "github.com/mattn/go-sqlite3"
)

// bin is the kvaultfs binary under test. The tests run it as a separate
// process, as scripts do, so that exit codes, stderr and the process's
// memory are what a user sees.
var bin string

// testVersion is stamped into the binary to check the -ldflags hook.
const testVersion = "v0.0.0-clitest"

func TestMain(m *testing.M) {
	if cmdline := os.Getenv(maxRSSEnv); cmdline != "" {
		os.Exit(maxRSSHelper(cmdline))
	}
	dir, err := os.MkdirTemp("", "kvaultfs-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "kvaultfs")
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building kvaultfs:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one run of the binary produced.
type result struct {
	stdout, stderr []byte
	code           int
}

// kv runs kvaultfs with args, stdin (nil for none) and captured output.
func kv(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	return kvTo(t, stdin, nil, args...)
}

// kvTo is kv with stdout sent to w (captured when w is nil).
func kvTo(t *testing.T, stdin io.Reader, w io.Writer, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if w != nil {
		cmd.Stdout = w
	}
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("kvaultfs %s: %v", quoteArgs(args), err)
	}
	code := cmd.ProcessState.ExitCode()
	if code < 0 {
		t.Fatalf("kvaultfs %s: killed (%v); stderr: %s", quoteArgs(args), cmd.ProcessState, stderr.Bytes())
	}
	return result{stdout.Bytes(), stderr.Bytes(), code}
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, " ")
}

// mustOK fails the test unless the run succeeded.
func mustOK(t *testing.T, r result, what string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d, stderr: %q", what, r.code, r.stderr)
	}
}

// mustFail checks the error contract: the given non-zero exit code, and
// exactly one line on stderr, "kvaultfs: ...", that contains want, with
// no stack trace and no help page on either stream.
func mustFail(t *testing.T, r result, code int, want, what string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: exit %d, want %d; stderr: %q", what, r.code, code, r.stderr)
	}
	msg := string(r.stderr)
	if strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") || !strings.HasPrefix(msg, "kvaultfs: ") {
		t.Errorf("%s: stderr is not one \"kvaultfs: \" line: %q", what, msg)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("%s: stderr %q does not mention %q", what, msg, want)
	}
	for _, s := range []string{"goroutine ", "panic:", "USAGE:", "Incorrect Usage"} {
		if strings.Contains(msg, s) || strings.Contains(string(r.stdout), s) {
			t.Errorf("%s: output contains %q: stdout %q, stderr %q", what, s, r.stdout, msg)
		}
	}
}

// randomBytes returns n reproducible bytes that do not compress and are
// never a whole zero chunk (which the vault would store as a hole).
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustNotExist(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil || !os.IsNotExist(err) {
		t.Errorf("%s: %s exists (or cannot be checked: %v)", what, path, err)
	}
}

// tempLeftovers lists files in dir that a get's temporary file would be.
func tempLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".kvaultfs-") {
			left = append(left, e.Name())
		}
	}
	return left
}

func TestPutGetThroughFiles(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	data := randomBytes(300<<10+123, 1) // more than one 256 KiB chunk, not a whole number of them
	src := writeFile(t, filepath.Join(dir, "src"), data)

	r := kv(t, nil, "put", db, "clips/a.bin", src)
	mustOK(t, r, "put")
	if len(r.stdout) != 0 || len(r.stderr) != 0 {
		t.Errorf("put printed %q / %q, want nothing", r.stdout, r.stderr)
	}
	out := filepath.Join(dir, "out")
	mustOK(t, kv(t, nil, "get", db, "clips/a.bin", out), "get")
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatalf("get wrote %d bytes that differ from the %d put", len(got), len(data))
	}

	// Replacing an existing file keeps its permissions, like writing into it.
	if err := os.Chmod(out, 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, kv(t, strings.NewReader("second"), "put", db, "b"), "put b")
	mustOK(t, kv(t, nil, "get", db, "b", out), "get b over out")
	if got, _ := os.ReadFile(out); string(got) != "second" {
		t.Errorf("out holds %q, want %q", got, "second")
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("out mode after get: %v (%v), want 0600", st.Mode(), err)
	}
	if left := tempLeftovers(t, dir); len(left) > 0 {
		t.Errorf("temporary files left behind: %q", left)
	}

	// A symlink is written through, as a shell redirection would, even
	// to a target that does not exist yet.
	link := filepath.Join(dir, "link")
	if err := os.Symlink("linked", link); err != nil {
		t.Fatal(err)
	}
	mustOK(t, kv(t, nil, "get", db, "b", link), "get through a symlink")
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("get replaced the symlink: %v %v", fi, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "linked")); string(got) != "second" {
		t.Errorf("symlink target holds %q, want %q", got, "second")
	}

	// A FILE in a missing directory is a plain error, naming FILE.
	nodirOut := filepath.Join(dir, "nodir", "out")
	mustFail(t, kv(t, nil, "get", db, "b", nodirOut), 1, "cannot create "+nodirOut+": no such file", "get into a missing directory")
	mustNotExist(t, filepath.Dir(nodirOut), "get into a missing directory")

	// A device is written to directly, not replaced through a temp file.
	mustOK(t, kv(t, nil, "get", db, "clips/a.bin", os.DevNull), "get to /dev/null")
	if st, err := os.Stat(os.DevNull); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("%s is no longer a device: %v %v", os.DevNull, st, err)
	}
}

func TestPutGetThroughStdio(t *testing.T) {
	db := filepath.Join(t.TempDir(), "v.db")
	data := randomBytes(100<<10, 2)
	mustOK(t, kv(t, bytes.NewReader(data), "put", db, "k1"), "put from stdin")
	mustOK(t, kv(t, bytes.NewReader(data), "put", db, "k2", "-"), "put from -")
	mustOK(t, kv(t, strings.NewReader(""), "put", db, "empty"), "put of nothing")

	for _, args := range [][]string{{"get", db, "k1"}, {"get", db, "k2", "-"}} {
		r := kv(t, nil, args...)
		mustOK(t, r, quoteArgs(args))
		if !bytes.Equal(r.stdout, data) {
			t.Errorf("%s: %d bytes on stdout differ from the %d put", quoteArgs(args), len(r.stdout), len(data))
		}
	}
	r := kv(t, nil, "get", db, "empty")
	mustOK(t, r, "get empty")
	if len(r.stdout) != 0 {
		t.Errorf("empty value came back as %d bytes", len(r.stdout))
	}
}

func TestRoundTrip64MiB(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	data := randomBytes(64<<20, 3)
	src := writeFile(t, filepath.Join(dir, "src"), data)

	// File in, stdout out.
	mustOK(t, kv(t, nil, "put", db, "video/a.mp4", src), "put file")
	outPath := filepath.Join(dir, "out-stdout")
	outFile, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	r := kvTo(t, nil, outFile, "get", db, "video/a.mp4")
	outFile.Close()
	mustOK(t, r, "get to stdout")
	if got, _ := os.ReadFile(outPath); !bytes.Equal(got, data) {
		t.Fatalf("get to stdout: %d bytes that differ from the %d put", len(got), len(data))
	}

	// Pipe in, file out.
	mustOK(t, kv(t, bytes.NewReader(data), "put", db, "video/b.mp4"), "put from a pipe")
	outPath = filepath.Join(dir, "out-file")
	mustOK(t, kv(t, nil, "get", db, "video/b.mp4", outPath), "get to file")
	if got, _ := os.ReadFile(outPath); !bytes.Equal(got, data) {
		t.Fatalf("get to file: %d bytes that differ from the %d put", len(got), len(data))
	}
}

func TestLs(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	cliKeys := []string{"a", "b/c", "b/d", "line\nbreak", "quote\"d", `back\slash`, "tab\tkey", "ünïcode", "/abs", "bin\xff"}
	for _, k := range cliKeys {
		mustOK(t, kv(t, strings.NewReader("v"), "put", db, k), "put "+strconv.Quote(k))
	}
	// A key with a NUL cannot be passed in argv; the library stores it.
	v, err := vault.Open(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Put("nul\x00key", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(cliKeys), "nul\x00key")

	// Plain: one line per key; odd keys quoted, and unquoting gives them back.
	r := kv(t, nil, "ls", db)
	mustOK(t, r, "ls")
	lines := strings.Split(strings.TrimSuffix(string(r.stdout), "\n"), "\n")
	var got []string
	for _, l := range lines {
		k := l
		if strings.HasPrefix(l, `"`) {
			if k, err = strconv.Unquote(l); err != nil {
				t.Errorf("ls line %q starts with a quote but does not unquote: %v", l, err)
			}
		} else if l != strconv.Quote(l)[1:len(strconv.Quote(l))-1] {
			t.Errorf("ls printed %q unquoted", l)
		}
		got = append(got, k)
	}
	if !sameSet(got, all) {
		t.Errorf("ls listed %q, want %q", got, all)
	}
	for _, want := range []string{"a", `"line\nbreak"`, `"quote\"d"`, `"back\\slash"`, `"nul\x00key"`, "ünïcode", `"bin\xff"`} {
		if !slices.Contains(lines, want) {
			t.Errorf("ls output has no line %s: %q", want, lines)
		}
	}
	if i, j := slices.Index(lines, "b/c"), slices.Index(lines, "b/d"); i < 0 || j != i+1 {
		t.Errorf("b/c and b/d not listed in order: %q", lines)
	}

	// Prefix.
	r = kv(t, nil, "ls", db, "b/")
	mustOK(t, r, "ls b/")
	if string(r.stdout) != "b/c\nb/d\n" {
		t.Errorf("ls b/ = %q", r.stdout)
	}
	r = kv(t, nil, "ls", "-0", db, "b/")
	mustOK(t, r, "ls -0 b/")
	if string(r.stdout) != "b/c\x00b/d\x00" {
		t.Errorf("ls -0 b/ = %q", r.stdout)
	}

	// -0: raw bytes; the key holding a NUL cannot be listed that way, so
	// ls lists the rest and fails.
	r = kv(t, nil, "ls", "--null", db)
	mustFail(t, r, 1, "NUL", "ls -0 with a NUL key")
	raw := strings.Split(strings.TrimSuffix(string(r.stdout), "\x00"), "\x00")
	if want := all[:len(all)-1]; !sameSet(raw, want) {
		t.Errorf("ls -0 listed %q, want %q", raw, want)
	}
	if !slices.Contains(raw, "line\nbreak") {
		t.Errorf("ls -0 did not print the newline key raw: %q", raw)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestRmThenGet(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	mustOK(t, kv(t, strings.NewReader("doomed"), "put", db, "x/doomed"), "put")
	mustOK(t, kv(t, nil, "rm", db, "x/doomed"), "rm")

	out := filepath.Join(dir, "out")
	mustFail(t, kv(t, nil, "get", db, "x/doomed", out), 1, "not found", "get after rm")
	mustNotExist(t, out, "get of a removed key")
	if left := tempLeftovers(t, dir); len(left) > 0 {
		t.Errorf("failed get left %q", left)
	}
	r := kv(t, nil, "get", db, "x/doomed")
	mustFail(t, r, 1, "not found", "get to stdout after rm")
	if len(r.stdout) != 0 {
		t.Errorf("failed get wrote %q", r.stdout)
	}
	mustFail(t, kv(t, nil, "rm", db, "x/doomed"), 1, "not found", "second rm")
	if r := kv(t, nil, "ls", db); r.code != 0 || len(r.stdout) != 0 {
		t.Errorf("ls after rm: exit %d, %q", r.code, r.stdout)
	}
}

func TestStat(t *testing.T) {
	db := filepath.Join(t.TempDir(), "v.db")
	mustOK(t, kv(t, bytes.NewReader(randomBytes(12345, 4)), "put", "--chunk-size", "64K", db, "s/f"), "put")
	r := kv(t, nil, "stat", db, "s/f")
	mustOK(t, r, "stat")
	fields := map[string]string{}
	line := regexp.MustCompile(`^([a-z_]+): (\S.*)$`)
	for _, l := range strings.Split(strings.TrimSuffix(string(r.stdout), "\n"), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("stat line %q is not \"name: value\"", l)
			continue
		}
		fields[m[1]] = m[2]
	}
	want := map[string]string{"key": "s/f", "kind": "file", "size": "12345", "mode": "0644", "nlink": "1", "chunk_size": "65536", "generation": "1"}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("stat %s: %q, want %q", k, fields[k], v)
		}
	}
	for _, k := range []string{"uid", "gid", "mtime", "ctime", "inode"} {
		if fields[k] == "" {
			t.Errorf("stat has no %s", k)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, fields["mtime"]); err != nil {
		t.Errorf("mtime %q: %v", fields["mtime"], err)
	}
	mustFail(t, kv(t, nil, "stat", db, "nope"), 1, "not found", "stat of a missing key")
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	// The victim is bigger than one streamed batch (8 MiB) and is damaged
	// in its last chunk, so a get has written data before it fails.
	good, victim := randomBytes(300<<10, 5), randomBytes(9<<20, 6)
	mustOK(t, kv(t, bytes.NewReader(good), "put", db, "good"), "put good")
	mustOK(t, kv(t, bytes.NewReader(victim), "put", db, "bad/victim"), "put victim")

	r := kv(t, nil, "verify", db)
	mustOK(t, r, "verify of a clean vault")
	if len(r.stdout) != 0 {
		t.Errorf("clean verify printed %q", r.stdout)
	}

	ino := statField(t, db, "bad/victim", "inode")
	sdb, err := sql.Open("sqlite3", db)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sdb.Exec(`UPDATE kvault_chunks SET data = zeroblob(length(data))
		WHERE inode = ?1 AND idx = (SELECT max(idx) FROM kvault_chunks WHERE inode = ?1)`, ino)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("corrupted %d chunk rows, want 1", n)
	}
	if err := sdb.Close(); err != nil {
		t.Fatal(err)
	}

	r = kv(t, nil, "verify", db)
	mustFail(t, r, 1, "1 problem", "verify of a damaged vault")
	report := string(r.stdout)
	if !strings.HasPrefix(report, "bad/victim\t") || strings.Count(report, "\n") != 1 {
		t.Errorf("verify stdout = %q, want one line for bad/victim", report)
	}
	if strings.Contains(report, "good") {
		t.Errorf("verify blames the undamaged key: %q", report)
	}
	mustFail(t, kv(t, nil, "get", db, "bad/victim"), 1, "corrupt", "get of the damaged key")
	// A get that fails midway leaves an existing FILE as it was.
	out := writeFile(t, filepath.Join(dir, "out"), []byte("old"))
	mustFail(t, kv(t, nil, "get", db, "bad/victim", out), 1, "corrupt", "get of the damaged key to a file")
	if got, _ := os.ReadFile(out); string(got) != "old" {
		t.Errorf("failed get left %d bytes in FILE, want it untouched", len(got))
	}
	if left := tempLeftovers(t, dir); len(left) > 0 {
		t.Errorf("failed get left %q", left)
	}
	r = kv(t, nil, "get", db, "good")
	mustOK(t, r, "get of the undamaged key")
	if !bytes.Equal(r.stdout, good) {
		t.Error("the undamaged key reads back wrong")
	}
}

// statField runs "kvaultfs stat" and returns one field's value.
func statField(t *testing.T, db, key, name string) string {
	t.Helper()
	r := kv(t, nil, "stat", db, key)
	mustOK(t, r, "stat")
	for _, l := range strings.Split(string(r.stdout), "\n") {
		if v, ok := strings.CutPrefix(l, name+": "); ok {
			return v
		}
	}
	t.Fatalf("stat has no %s: %q", name, r.stdout)
	return ""
}

func TestVerifyCannotRun(t *testing.T) {
	dir := t.TempDir()
	notDB := writeFile(t, filepath.Join(dir, "notes.txt"), []byte("these are not the bytes of a SQLite database, just text\n"))
	before, _ := os.ReadFile(notDB)
	mustFail(t, kv(t, nil, "verify", notDB), 2, "", "verify of a text file")
	if after, _ := os.ReadFile(notDB); !bytes.Equal(before, after) {
		t.Error("verify changed a file that is not a vault")
	}
	missing := filepath.Join(dir, "missing.db")
	mustFail(t, kv(t, nil, "verify", missing), 2, "no such file", "verify of a missing file")
	mustNotExist(t, missing, "verify of a missing file")
}

func TestVersion(t *testing.T) {
	r := kv(t, nil, "version")
	mustOK(t, r, "version")
	if !strings.HasPrefix(string(r.stdout), "kvaultfs "+testVersion+" ") {
		t.Errorf("version printed %q, want the -ldflags version %s", r.stdout, testVersion)
	}
	mustFail(t, kv(t, nil, "version", "extra"), 2, "no arguments", "version with an argument")
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "never.db")
	src := writeFile(t, filepath.Join(dir, "src"), []byte("data"))
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frob", db}, `unknown command "frob"`},
		{[]string{"put", db}, "kvaultfs put --help"},
		{[]string{"get", db, "k", "f", "extra"}, "kvaultfs get --help"},
		{[]string{"ls"}, "--help"},
		{[]string{"ls", db, "p", "extra"}, "--help"},
		{[]string{"rm", db}, "--help"},
		{[]string{"stat", db}, "--help"},
		{[]string{"verify"}, "--help"},
		{[]string{"put", "--chunk-size", "abc", db, "k", src}, "--chunk-size"},
		{[]string{"put", "--chunk-size", "", db, "k", src}, "--chunk-size"},
		{[]string{"put", "--chunk-size", "1000", db, "k", src}, "--chunk-size"},
		{[]string{"put", "--chunk-size", "1MB", db, "k", src}, "--chunk-size"},
		{[]string{"put", "--chunk-size", "128M", db, "k", src}, "--chunk-size"},
		{[]string{"put", "--chunk-size", "-4K", db, "k", src}, "--chunk-size"},
		{[]string{"put", "--table", "bad-name", db, "k", src}, "--table"},
		{[]string{"--table", "1x", "put", db, "k", src}, "--table"},
		{[]string{"ls", "--nope", db}, "nope"},
		{[]string{"--nope", "ls", db}, "nope"},
		{[]string{"put", "--chunk-size"}, "chunk-size"},
		{[]string{"put", "--page-size", "3000", db, "k", src}, "--page-size"},
		{[]string{"put", "--page-size", "128K", db, "k", src}, "--page-size"},
		{[]string{"put", "--mmap-size", "lots", db, "k", src}, "--mmap-size"},
		{[]string{"put", "--sqlite-cache", "0", db, "k", src}, "--sqlite-cache"},
		{[]string{"put", "--busy-timeout", "2h", db, "k", src}, "--busy-timeout"},
		{[]string{"put", "--retries", "31", db, "k", src}, "--retries"},
		{[]string{"put", "--backoff-base", "-1s", db, "k", src}, "--backoff-base"},
		{[]string{"put", "--wal=maybe", db, "k", src}, "wal"},
	} {
		what := "kvaultfs " + quoteArgs(c.args)
		r := kv(t, nil, c.args...)
		mustFail(t, r, 2, c.want, what)
		if len(r.stdout) != 0 {
			t.Errorf("%s: printed %q to stdout", what, r.stdout)
		}
		mustNotExist(t, db, what)
	}
}

func TestChunkSizeSpellings(t *testing.T) {
	db := filepath.Join(t.TempDir(), "v.db")
	for _, c := range []struct {
		flag string
		want string
	}{{"4096", "4096"}, {"256K", "262144"}, {"1M", "1048576"}, {"1MiB", "1048576"}, {"2mib", "2097152"}, {"64M", "67108864"}} {
		key := "k" + c.flag
		mustOK(t, kv(t, strings.NewReader("x"), "put", "--chunk-size", c.flag, db, key), "put --chunk-size "+c.flag)
		if got := statField(t, db, key, "chunk_size"); got != c.want {
			t.Errorf("--chunk-size %s: chunk_size %s, want %s", c.flag, got, c.want)
		}
	}
}

// The SQLite tuning flags reach the file: --page-size and --wal shape a
// new file, and an explicit page size that differs from an existing
// file's is refused, changing nothing.
func TestTuningFlags(t *testing.T) {
	db := filepath.Join(t.TempDir(), "v.db")
	mustOK(t, kv(t, strings.NewReader("x"), "put", "--page-size", "4K", "--wal=false", "--mmap-size", "0",
		"--sqlite-cache", "2M", "--busy-timeout", "1s", "--retries", "0", "--backoff-base", "5ms", db, "k"), "put with every tuning flag")
	pragma := func(name string) string {
		t.Helper()
		sdb, err := sql.Open("sqlite3", db)
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		var v string
		if err := sdb.QueryRow("PRAGMA " + name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := pragma("page_size"); got != "4096" {
		t.Errorf("--page-size 4K: page_size %s", got)
	}
	if got := pragma("journal_mode"); got != "delete" {
		t.Errorf("--wal=false: journal_mode %s", got)
	}
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	mustFail(t, kv(t, strings.NewReader("y"), "put", "--page-size", "8K", db, "k2"), 1, "PageSize", "put --page-size 8K on a 4K file")
	after, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("a refused --page-size changed the file")
	}
	// Without the flag the file's own page size is used.
	mustOK(t, kv(t, strings.NewReader("y"), "put", db, "k2"), "put without --page-size")
	if got := pragma("page_size"); got != "4096" {
		t.Errorf("page_size changed to %s", got)
	}
}

func TestTableFlag(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	mustOK(t, kv(t, strings.NewReader("x"), "put", "--table", "media", db, "k"), "put --table media")
	r := kv(t, nil, "--table", "media", "ls", db)
	mustOK(t, r, "global --table")
	if string(r.stdout) != "k\n" {
		t.Errorf("kvaultfs --table media ls = %q", r.stdout)
	}
	r = kv(t, nil, "--table", "other", "ls", "--table", "media", db)
	mustOK(t, r, "command --table over global")
	if string(r.stdout) != "k\n" {
		t.Errorf("the command's --table did not win: %q", r.stdout)
	}
	// The default table is not in the file: reading it fails, and a
	// read-only open must not create it.
	mustFail(t, kv(t, nil, "ls", db), 1, "kvault_meta", "ls of a table that is not there")
	sdb, err := sql.Open("sqlite3", db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	var n int
	if err := sdb.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name LIKE 'kvault\_%' ESCAPE '\'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("ls created %d kvault_ tables (%v)", n, err)
	}
}

func TestMissingDB(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "missing.db")
	out := filepath.Join(dir, "out")
	for _, args := range [][]string{
		{"get", db, "k"},
		{"get", db, "k", out},
		{"ls", db},
		{"ls", "-0", db, "p"},
		{"stat", db, "k"},
		{"rm", db, "k"},
	} {
		what := quoteArgs(args)
		mustFail(t, kv(t, nil, args...), 1, "no such file", what)
		for _, p := range []string{db, db + "-wal", db + "-shm", out} {
			mustNotExist(t, p, what)
		}
	}

	// put creates a missing file, but not a missing directory.
	src := writeFile(t, filepath.Join(dir, "src"), []byte("data"))
	nodir := filepath.Join(dir, "nodir")
	mustFail(t, kv(t, nil, "put", filepath.Join(nodir, "v.db"), "k", src), 1, "no such file", "put into a missing directory")
	mustNotExist(t, nodir, "put into a missing directory")
	mustFail(t, kv(t, nil, "put", db, "k", filepath.Join(dir, "nosrc")), 1, "no such file", "put of a missing file")
	mustNotExist(t, db, "put of a missing file")
	mustFail(t, kv(t, nil, "get", filepath.Join(nodir, "v.db"), "k"), 1, "no such file", "get from a missing directory")
}

func TestReadCommandsDoNotWrite(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	mustOK(t, kv(t, bytes.NewReader(randomBytes(1<<20, 7)), "put", db, "k"), "put")
	fingerprint := func() string {
		st, err := os.Stat(db)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x %v", sha256.Sum256(data), st.ModTime())
	}
	before := fingerprint()
	for _, args := range [][]string{{"get", db, "k"}, {"ls", db}, {"stat", db, "k"}, {"verify", db}, {"get", db, "nope"}} {
		kv(t, nil, args...)
		if after := fingerprint(); after != before {
			t.Fatalf("%s changed the database file", quoteArgs(args))
		}
	}
}

// maxRSSEnv, when set, makes the test binary run the command line it
// holds (a JSON array) and write that child's peak RSS in KiB to the
// file named by maxRSSOutEnv. The peak has to be taken this way: a
// process's ru_maxrss starts from the high-water mark of the process that
// exec'd it (os/exec forks with vfork, sharing the parent's memory), so
// measured directly from the test process it reports the test's own
// buffers. This helper is small when it starts kvaultfs.
const (
	maxRSSEnv    = "KVAULTFS_TEST_MAXRSS_CMD"
	maxRSSOutEnv = "KVAULTFS_TEST_MAXRSS_OUT"
)

func maxRSSHelper(cmdline string) int {
	var args []string
	if err := json.Unmarshal([]byte(cmdline), &args); err != nil || len(args) == 0 {
		fmt.Fprintln(os.Stderr, "maxrss helper: bad command line:", cmdline, err)
		return 125
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, maxRSSEnv+"=") || strings.HasPrefix(e, maxRSSOutEnv+"=")
	})
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "maxrss helper:", err)
		return 125
	}
	kib := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux
	if err := os.WriteFile(os.Getenv(maxRSSOutEnv), []byte(strconv.FormatInt(kib, 10)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "maxrss helper:", err)
		return 125
	}
	return cmd.ProcessState.ExitCode()
}

// TestPutStdinStreams pipes 512 MiB into "put" and checks that the
// process's peak resident memory stays far below the stream's size.
func TestPutStdinStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 512 MiB")
	}
	const size = 512 << 20
	const limit = 150 << 20
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	rssOut := filepath.Join(dir, "maxrss")
	cmdline, err := json.Marshal([]string{bin, "put", db, "huge"})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), maxRSSEnv+"="+string(cmdline), maxRSSOutEnv+"="+rssOut)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		block := randomBytes(1<<20, 8)
		var err error
		for i := 0; i < size>>20 && err == nil; i++ {
			block[0], block[1] = byte(i), byte(i>>8) // no two megabytes alike
			_, err = stdin.Write(block)
		}
		if cerr := stdin.Close(); err == nil {
			err = cerr
		}
		werr <- err
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("put: %v; stderr: %s", err, stderr.Bytes())
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing the stream: %v", err)
	}
	b, err := os.ReadFile(rssOut)
	if err != nil {
		t.Fatal(err)
	}
	kib, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || kib <= 0 {
		t.Fatalf("maxrss %q: %v", b, err)
	}
	peak := kib << 10
	t.Logf("put of %d MiB from a pipe: peak RSS %.1f MiB", size>>20, float64(peak)/(1<<20))
	if peak > limit {
		t.Errorf("peak RSS %d MiB, want under %d MiB: the stream is being held in memory", peak>>20, limit>>20)
	}
	if got := statField(t, db, "huge", "size"); got != strconv.Itoa(size) {
		t.Errorf("stored size %s, want %d", got, size)
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true}, {"256K", 256 << 10, true}, {"256k", 256 << 10, true}, {"1M", 1 << 20, true},
		{"1MiB", 1 << 20, true}, {"1 MiB", 1 << 20, true}, {"1G", 1 << 30, true}, {"1KB", 1000, true},
		{"1MB", 1000000, true}, {"", 0, false}, {"K", 0, false}, {"1.5M", 0, false}, {"-1K", 0, false},
		{"1X", 0, false}, {"99999999999999999999", 0, false}, {"9999999999999G", 0, false},
	} {
		got, err := parseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

// TestVerifyTruncated checks that a database file cut short is damage
// that verify found (exit 1), not a command that could not run (exit 2).
func TestVerifyTruncated(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "v.db")
	mustOK(t, kv(t, bytes.NewReader(randomBytes(1<<20, 7)), "put", db, "k"), "put")
	st, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(db, st.Size()/3); err != nil {
		t.Fatal(err)
	}
	mustFail(t, kv(t, nil, "verify", db), 1, "corrupt", "verify of a truncated vault")
}

// TestForeignMetaTable opens a database of another program that has a
// table named like the vault's meta table: every command says it is not
// a vault, and nothing is written.
func TestForeignMetaTable(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "other.db")
	sdb, err := sql.Open("sqlite3", db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdb.Exec(`CREATE TABLE kvault_meta(k TEXT, v TEXT); INSERT INTO kvault_meta VALUES ('a', 'b')`); err != nil {
		t.Fatal(err)
	}
	if err := sdb.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	mustFail(t, kv(t, nil, "ls", db), 1, "not a vault", "ls of another program's database")
	mustFail(t, kv(t, strings.NewReader("x"), "put", db, "k"), 1, "not a vault", "put into another program's database")
	mustFail(t, kv(t, nil, "verify", db), 2, "not a vault", "verify of another program's database")
	if after, _ := os.ReadFile(db); !bytes.Equal(before, after) {
		t.Error("commands changed another program's database")
	}
}
