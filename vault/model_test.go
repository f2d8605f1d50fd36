package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A model-based test: random operations are applied to a vault and to a
// plain in-memory model of it, and every read is compared. The model is
// the specification: a map of keys to values (sparse, so that files with
// holes past 2^32 cost nothing), the set of directories the tree has, and
// open files that hold on to the value they opened (an inode) even when
// their key is deleted, replaced or renamed. The vault is closed and
// reopened now and then, with another ChunkSize.
//
// It is also a fuzz target: go test -fuzz=FuzzModel ./vault/ . The fuzzer's
// bytes choose the operations first; a generator seeded from both inputs
// takes over when they run out.

// modelSteps is the number of operations per run.
const modelSteps = 10000

func FuzzModel(f *testing.F) {
	f.Add(uint64(1), []byte(nil))
	if !testing.Short() && !raceEnabled {
		f.Add(uint64(2), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18})
		f.Add(uint64(3), bytes.Repeat([]byte{10, 11, 12, 13}, 64)) // file writes, reads, truncates
	}
	f.Fuzz(func(t *testing.T, seed uint64, ops []byte) {
		steps := modelSteps
		if s, err := strconv.Atoi(os.Getenv("KVAULT_MODEL_STEPS")); err == nil && s > 0 {
			steps = s
		}
		runModel(t, seed, ops, steps)
	})
}

// mPage is the page size of the model's sparse values.
const mPage = 4096

// mfile is a value in the model: size bytes, the pages that are not all
// zeros, and no non-zero byte at or past size.
type mfile struct {
	size  int64
	pages map[int64][]byte
}

func newMfile(b []byte) *mfile {
	m := &mfile{pages: map[int64][]byte{}}
	m.writeAt(b, 0)
	m.size = int64(len(b))
	return m
}

// readAt fills p from off and returns how many bytes lie before the end.
func (m *mfile) readAt(p []byte, off int64) int {
	n := int(max(0, min(int64(len(p)), m.size-off)))
	for i := 0; i < n; {
		o := off + int64(i)
		pg, within := o/mPage, int(o%mPage)
		c := min(n-i, mPage-within)
		if page := m.pages[pg]; page != nil {
			copy(p[i:i+c], page[within:])
		} else {
			clear(p[i : i+c])
		}
		i += c
	}
	return n
}

func (m *mfile) writeAt(p []byte, off int64) {
	for i := 0; i < len(p); {
		o := off + int64(i)
		pg, within := o/mPage, int(o%mPage)
		c := min(len(p)-i, mPage-within)
		page := m.pages[pg]
		if page == nil {
			if allZero(p[i : i+c]) {
				i += c
				continue
			}
			page = make([]byte, mPage)
			m.pages[pg] = page
		}
		copy(page[within:], p[i:i+c])
		i += c
	}
	m.size = max(m.size, off+int64(len(p)))
}

func (m *mfile) truncate(size int64) {
	if size < m.size {
		for pg := range m.pages {
			if pg*mPage >= size {
				delete(m.pages, pg)
			}
		}
		if page := m.pages[size/mPage]; page != nil {
			clear(page[size%mPage:])
		}
	}
	m.size = size
}

func (m *mfile) bytes() []byte {
	b := make([]byte, m.size)
	m.readAt(b, 0)
	return b
}

// model is the expected state of the vault.
type model struct {
	files map[string]*mfile // every key with a value, path or not
	dirs  map[string]bool   // every directory of the tree but the root
}

// modelParts splits a key that lives in the tree, as DESIGN.md defines
// such keys; ok is false for every other key.
func modelParts(key string) ([]string, bool) {
	if key == "" || strings.Contains(key, "\x00") {
		return nil, false
	}
	parts := strings.Split(key, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || len(p) > 255 {
			return nil, false
		}
	}
	return parts, parts[0] != ".kvault"
}

// parentsErr is the error of creating key's parents: ErrNotDir when one
// of them is a file.
func (m *model) parentsErr(key string) error {
	parts, ok := modelParts(key)
	if !ok {
		return nil
	}
	for i := 1; i < len(parts); i++ {
		if m.files[strings.Join(parts[:i], "/")] != nil {
			return ErrNotDir
		}
	}
	return nil
}

func (m *model) mkParents(key string) {
	parts, ok := modelParts(key)
	if !ok {
		return
	}
	for i := 1; i < len(parts); i++ {
		m.dirs[strings.Join(parts[:i], "/")] = true
	}
}

// putErr is the error of storing a value under key.
func (m *model) putErr(key string) error {
	if err := m.parentsErr(key); err != nil {
		return err
	}
	if m.dirs[key] {
		return ErrIsDir
	}
	return nil
}

func (m *model) put(key string, f *mfile) {
	m.mkParents(key)
	m.files[key] = f
}

// readErr is the error of reading key's value.
func (m *model) readErr(key string) error {
	switch {
	case m.files[key] != nil:
		return nil
	case m.dirs[key]:
		return ErrIsDir
	}
	return ErrNotFound
}

// below reports whether path key k lies below directory dir. Keys that
// are not paths are not in the tree, whatever their bytes.
func below(k, dir string) bool {
	_, ok := modelParts(k)
	return ok && strings.HasPrefix(k, dir+"/")
}

func (m *model) nonEmptyDir(dir string) bool {
	for k := range m.files {
		if below(k, dir) {
			return true
		}
	}
	for d := range m.dirs {
		if strings.HasPrefix(d, dir+"/") {
			return true
		}
	}
	return false
}

// renameErr is the error of Rename(src, dst), in the order the vault
// checks: the source, then the target's parents, then rename(2)'s rules.
func (m *model) renameErr(src, dst string) error {
	sf, sd := m.files[src], m.dirs[src]
	if sf == nil && !sd {
		return ErrNotFound
	}
	if _, ok := modelParts(dst); sd && !ok {
		return ErrInvalidArgument // a directory needs a path key
	}
	if err := m.parentsErr(dst); err != nil {
		return err
	}
	if sd && strings.HasPrefix(dst, src+"/") {
		return ErrInvalidArgument // into itself
	}
	if src == dst {
		return nil
	}
	df, dd := m.files[dst], m.dirs[dst]
	switch {
	case sd && df != nil:
		return ErrNotDir
	case sf != nil && dd:
		return ErrIsDir
	case sd && dd && m.nonEmptyDir(dst):
		return ErrNotEmpty
	}
	return nil
}

func (m *model) rename(src, dst string) {
	if src == dst {
		return
	}
	if f := m.files[src]; f != nil {
		delete(m.files, src)
		m.put(dst, f)
		return
	}
	delete(m.dirs, dst) // an empty directory is replaced
	files, dirs := map[string]*mfile{}, map[string]bool{}
	for k, f := range m.files {
		if below(k, src) {
			files[dst+k[len(src):]] = f
			delete(m.files, k)
		}
	}
	for d := range m.dirs {
		if d == src || strings.HasPrefix(d, src+"/") {
			dirs[dst+d[len(src):]] = true
			delete(m.dirs, d)
		}
	}
	m.mkParents(dst)
	for k, f := range files {
		m.files[k] = f
	}
	for d := range dirs {
		m.dirs[d] = true
	}
}

// handle is an open File and the model value it writes to.
type handle struct {
	f   *File
	m   *mfile
	key string // the key it was opened as
	cs  int64
}

// modelRun is one run of the model test.
type modelRun struct {
	t       *testing.T
	seed    uint64
	rng     *rand.Rand
	ops     []byte
	path    string
	v       *Vault
	cs      int
	m       model
	hs      []*handle
	bigLeft int
	step    int
	recent  []string
	scratch []byte
	counts  map[string]int
}

var modelChunkSizes = []int{4096, 8192, 12288, 16384, 20480}

func runModel(t *testing.T, seed uint64, ops []byte, steps int) {
	h := sha256.Sum256(ops)
	r := &modelRun{
		t:       t,
		seed:    seed,
		rng:     rand.New(rand.NewPCG(seed, binary.LittleEndian.Uint64(h[:]))),
		ops:     ops,
		path:    filepath.Join(t.TempDir(), "model.db"),
		m:       model{files: map[string]*mfile{}, dirs: map[string]bool{}},
		bigLeft: 3,
		counts:  map[string]int{},
	}
	r.cs = modelChunkSizes[r.rng.IntN(len(modelChunkSizes))]
	r.open()
	defer func() {
		if r.v != nil {
			r.v.Close()
		}
	}()
	type op struct {
		name   string
		weight int
		do     func()
	}
	table := []op{
		{"put", 14, r.opPut},
		{"putReader", 8, r.opPutReader},
		{"putReaderFails", 2, r.opPutReaderFails},
		{"get", 8, r.opGet},
		{"getTo", 5, r.opGetTo},
		{"exists", 3, r.opExists},
		{"stat", 3, r.opStat},
		{"delete", 6, r.opDelete},
		{"rename", 7, r.opRename},
		{"openFile", 5, r.opOpenFile},
		{"writeAt", 12, r.opWriteAt},
		{"readAt", 8, r.opReadAtHandle},
		{"truncate", 4, r.opTruncate},
		{"closeFile", 4, r.opCloseFile},
		{"readKey", 4, r.opReadKey},
		{"keys", 2, r.opKeys},
		{"len", 2, r.opLen},
	}
	total := 0
	for _, o := range table {
		total += o.weight
	}
	for r.step = 0; r.step < steps; r.step++ {
		if r.rng.IntN(400) == 0 {
			r.counts["reopen"]++
			r.reopen()
			continue
		}
		n := r.choose(total)
		for _, o := range table {
			if n < o.weight {
				r.counts[o.name]++
				o.do()
				break
			}
			n -= o.weight
		}
	}
	r.reopen()
	t.Logf("seed %d: %d steps, %d keys, %d directories at the end; ops %v", seed, steps, len(r.m.files), len(r.m.dirs), r.counts)
}

// choose picks an operation: from the fuzzer's bytes while they last.
func (r *modelRun) choose(n int) int {
	if len(r.ops) > 0 {
		b := r.ops[0]
		r.ops = r.ops[1:]
		return int(b) % n
	}
	return r.rng.IntN(n)
}

func (r *modelRun) note(format string, args ...any) {
	s := fmt.Sprintf("%d: ", r.step) + fmt.Sprintf(format, args...)
	if len(r.recent) == 40 {
		r.recent = r.recent[1:]
	}
	r.recent = append(r.recent, s)
}

func (r *modelRun) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("seed %d, step %d (chunk size %d): %s\nrecent operations:\n  %s", r.seed, r.step, r.cs,
		fmt.Sprintf(format, args...), strings.Join(r.recent, "\n  "))
}

// wantErr checks an operation's error against the model's.
func (r *modelRun) wantErr(what string, got, want error) {
	r.t.Helper()
	if want == nil && got != nil {
		r.fail("%s: unexpected error %v", what, got)
	}
	if want != nil && !errors.Is(got, want) {
		r.fail("%s: got error %v, want %v", what, got, want)
	}
}

func (r *modelRun) open() {
	o := DefaultOptions()
	o.ChunkSize = r.cs
	v, err := Open(r.path, o)
	if err != nil {
		r.fail("Open: %v", err)
	}
	r.v = v
}

// reopen closes every file and the vault, checks the file's consistency
// and everything in it, and opens it again with a random chunk size.
func (r *modelRun) reopen() {
	for len(r.hs) > 0 {
		r.closeHandle(0)
	}
	// With every file closed, nothing removed may still hold data.
	db := rawDB(r.t, r.path, true)
	if n := rawCount(r.t, db, `SELECT count(*) FROM {t}_inodes WHERE nlink = 0`); n != 0 {
		r.fail("%d unlinked inodes remain with every file closed", n)
	}
	db.Close()
	if err := r.v.Close(); err != nil {
		r.fail("Close: %v", err)
	}
	r.v = nil
	checkConsistent(r.t, r.path)
	r.cs = modelChunkSizes[r.rng.IntN(len(modelChunkSizes))]
	r.note("reopen with chunk size %d", r.cs)
	r.open()
	r.checkAll()
}

// checkAll compares the whole vault with the model: every value, the
// listing, the length and the directory tree.
func (r *modelRun) checkAll() {
	for k, f := range r.m.files {
		r.checkValue(k, f)
	}
	r.checkKeys("")
	r.checkLen()
	dirs := map[string]bool{}
	var walk func(ino int64, prefix string)
	walk = func(ino int64, prefix string) {
		var after int64
		for {
			ents, err := r.v.ReadDir(ino, after, 100)
			if err != nil {
				r.fail("ReadDir: %v", err)
			}
			if len(ents) == 0 {
				return
			}
			for _, e := range ents {
				after = e.Cookie
				if e.Inode.Kind == KindDir && !(ino == RootIno && e.Name == ReservedDir) {
					dirs[prefix+e.Name] = true
					walk(e.Inode.ID, prefix+e.Name+"/")
				}
			}
		}
	}
	walk(RootIno, "")
	var got, want []string
	for d := range dirs {
		got = append(got, d)
	}
	for d := range r.m.dirs {
		want = append(want, d)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		r.fail("directories %q, want %q", got, want)
	}
}

// maxWhole is the largest value read whole with Get; larger (sparse)
// values are checked in pieces.
const maxWhole = 16 << 20

// checkValue reads key through Get (or pieces through a File) and
// compares it with f.
func (r *modelRun) checkValue(key string, f *mfile) {
	if f.size <= maxWhole {
		got, err := r.v.Get(key)
		if err != nil {
			r.fail("Get(%q): %v", key, err)
		}
		if want := f.bytes(); !bytes.Equal(got, want) {
			r.fail("Get(%q) = %d bytes, want %d; first difference at %d", key, len(got), len(want), firstDiff(got, want))
		}
		return
	}
	file, err := r.v.Open(key)
	if err != nil {
		r.fail("Open(%q): %v", key, err)
	}
	defer file.Close()
	for _, off := range []int64{0, f.size - 5000, f.size / 2, r.rng.Int64N(f.size)} {
		r.compareRead(file, f, key, max(0, off), 8192)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// compareRead checks File.ReadAt(n bytes at off) against the model.
func (r *modelRun) compareRead(file *File, f *mfile, key string, off int64, n int) {
	r.t.Helper()
	if cap(r.scratch) < 2*n {
		r.scratch = make([]byte, 2*n)
	}
	got, want := r.scratch[:n], r.scratch[n:2*n]
	clear(got)
	wn := f.readAt(want, off)
	gn, err := file.ReadAt(got, off)
	switch {
	case gn != wn:
		r.fail("ReadAt(%q, %d, %d) = %d bytes (%v), want %d (size %d)", key, off, n, gn, err, wn, f.size)
	case wn < n && err != io.EOF:
		r.fail("ReadAt(%q, %d, %d) short without io.EOF: %v", key, off, n, err)
	case wn == n && err != nil:
		r.fail("ReadAt(%q, %d, %d): %v", key, off, n, err)
	case !bytes.Equal(got[:gn], want[:wn]):
		r.fail("ReadAt(%q, %d, %d): bytes differ from %d", key, off, n, off+int64(firstDiff(got[:gn], want[:wn])))
	}
}

func (r *modelRun) checkKeys(prefix string) {
	var got []string
	for k, err := range r.v.Keys(prefix) {
		if err != nil {
			r.fail("Keys(%q): %v", prefix, err)
		}
		got = append(got, k)
	}
	var want []string
	for k := range r.m.files {
		if strings.HasPrefix(k, prefix) {
			want = append(want, k)
		}
	}
	keyOrder(want)
	if !slices.Equal(got, want) {
		r.fail("Keys(%q) = %q, want %q", prefix, got, want)
	}
}

func (r *modelRun) checkLen() {
	n, err := r.v.Len()
	if err != nil || n != len(r.m.files) {
		r.fail("Len = %d, %v; want %d", n, err, len(r.m.files))
	}
}

// Keys are drawn from a small pool so that operations meet: path keys up
// to three deep over a few names (one not ASCII), and keys that are not
// paths.
var (
	modelNames   = []string{"a", "b", "c", "d.mp4", "é"}
	modelBinKeys = []string{"\x00k", "x//y", "/abs", "tail/", ".kvault/k", "..", "a/./b", "\xff\xfe"}
)

func (r *modelRun) randKey() string {
	if r.rng.IntN(6) == 0 {
		return modelBinKeys[r.rng.IntN(len(modelBinKeys))]
	}
	depth := 1 + r.rng.IntN(3)
	parts := make([]string, depth)
	for i := range parts {
		parts[i] = modelNames[r.rng.IntN(len(modelNames))]
	}
	return strings.Join(parts, "/")
}

// existingKey returns a key with a value, or a random key.
func (r *modelRun) existingKey() string {
	if len(r.m.files) > 0 && r.rng.IntN(4) != 0 {
		return r.pickMap(r.m.files)
	}
	return r.randKey()
}

func (r *modelRun) pickMap(m map[string]*mfile) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys[r.rng.IntN(len(keys))]
}

// randSize picks a value size, often near a chunk boundary.
func (r *modelRun) randSize() int {
	cs := r.cs
	switch r.rng.IntN(10) {
	case 0:
		return 0
	case 1, 2:
		return 1 + r.rng.IntN(64)
	case 3, 4, 5:
		return (1+r.rng.IntN(4))*cs + r.rng.IntN(3) - 1
	}
	return r.rng.IntN(64 << 10)
}

// randValue returns n bytes, sometimes with runs of zeros (whole zero
// chunks are stored as holes).
func (r *modelRun) randValue(n int) []byte {
	b := make([]byte, n)
	fillGen(b, r.rng.Uint64(), 0)
	if n > 0 && r.rng.IntN(4) == 0 {
		lo := r.rng.IntN(n)
		clear(b[lo:min(n, lo+r.rng.IntN(3*r.cs))])
	}
	return b
}

func (r *modelRun) opPut() {
	key := r.randKey()
	val := r.randValue(r.randSize())
	r.note("Put(%q, %d bytes)", key, len(val))
	want := r.m.putErr(key)
	r.wantErr("Put", r.v.Put(key, val), want)
	if want == nil {
		r.m.put(key, newMfile(val))
	}
}

// choppyReader yields its bytes in reads of random sizes.
type choppyReader struct {
	b   []byte
	rng *rand.Rand
}

func (c *choppyReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 1+c.rng.IntN(100<<10))], c.b)
	c.b = c.b[n:]
	return n, nil
}

func (r *modelRun) opPutReader() {
	key := r.randKey()
	n := r.randSize()
	if r.bigLeft > 0 && r.rng.IntN(150) == 0 {
		r.bigLeft--
		n = streamBatchBytes + r.rng.IntN(3*r.cs+1<<20) // several batches
	}
	val := r.randValue(n)
	size := int64(n)
	if r.rng.IntN(2) == 0 {
		size = -1
	}
	r.note("PutReader(%q, %d bytes, size %d)", key, n, size)
	want := r.m.putErr(key)
	r.wantErr("PutReader", r.v.PutReader(key, &choppyReader{val, r.rng}, size), want)
	if want == nil {
		r.m.put(key, newMfile(val))
	}
}

// opPutReaderFails streams a value that cannot be stored: the reader
// fails, ends early or yields too much. Nothing changes.
func (r *modelRun) opPutReaderFails() {
	key := r.existingKey()
	n := 1 + r.randSize()
	if r.bigLeft > 0 && r.rng.IntN(50) == 0 {
		r.bigLeft--
		n = streamBatchBytes + 1 + r.rng.IntN(2*r.cs+1<<20)
	}
	val := r.randValue(n)
	var rd io.Reader = &choppyReader{val, r.rng}
	size := int64(n)
	switch r.rng.IntN(3) {
	case 0:
		cut := r.rng.IntN(n)
		rd = &failingReader{g: genReader{seed: 5, size: int64(n)}, n: int64(cut), err: errReaderBroke}
		if r.rng.IntN(2) == 0 {
			size = -1
		}
	case 1:
		size = int64(n) + 1 + r.rng.Int64N(10) // ends early
	case 2:
		size = int64(n) - 1 - r.rng.Int64N(int64(n)) // yields too much
	}
	r.note("PutReader(%q, %d bytes, size %d) failing", key, n, size)
	if err := r.v.PutReader(key, rd, size); err == nil {
		r.fail("PutReader with a broken reader succeeded")
	}
}

func (r *modelRun) opGet() {
	key := r.existingKey()
	r.note("Get(%q)", key)
	want := r.m.readErr(key)
	if want == nil {
		if f := r.m.files[key]; f.size > maxWhole {
			return
		}
	}
	got, err := r.v.Get(key)
	r.wantErr("Get", err, want)
	if want == nil {
		if w := r.m.files[key].bytes(); !bytes.Equal(got, w) {
			r.fail("Get(%q) = %d bytes, want %d; first difference at %d", key, len(got), len(w), firstDiff(got, w))
		}
	}
}

// modelChecker compares a stream with a model value.
type modelChecker struct {
	f   *mfile
	off int64
	bad int64
	buf []byte
}

func (c *modelChecker) Write(p []byte) (int, error) {
	if cap(c.buf) < len(p) {
		c.buf = make([]byte, len(p))
	}
	want := c.buf[:len(p)]
	n := c.f.readAt(want, c.off)
	if c.bad < 0 && (n != len(p) || !bytes.Equal(want, p)) {
		c.bad = c.off + int64(firstDiff(want[:n], p))
	}
	c.off += int64(len(p))
	return len(p), nil
}

func (r *modelRun) opGetTo() {
	key := r.existingKey()
	r.note("GetTo(%q)", key)
	want := r.m.readErr(key)
	var f *mfile
	if want == nil {
		if f = r.m.files[key]; f.size > 4*maxWhole {
			return
		}
	}
	c := &modelChecker{f: f, bad: -1}
	if f == nil {
		c.f = newMfile(nil)
	}
	n, err := r.v.GetTo(key, c)
	r.wantErr("GetTo", err, want)
	if want == nil && (n != f.size || c.off != f.size || c.bad >= 0) {
		r.fail("GetTo(%q) = %d (wrote %d), want %d; first difference at %d", key, n, c.off, f.size, c.bad)
	}
}

func (r *modelRun) opExists() {
	key := r.existingKey()
	r.note("Exists(%q)", key)
	ok, err := r.v.Exists(key)
	if err != nil || ok != (r.m.files[key] != nil) {
		r.fail("Exists(%q) = %v, %v", key, ok, err)
	}
}

func (r *modelRun) opStat() {
	key := r.existingKey()
	if r.rng.IntN(3) == 0 && len(r.m.dirs) > 0 {
		key = r.pickDir()
	}
	r.note("Stat(%q)", key)
	st, err := r.v.Stat(key)
	switch {
	case r.m.files[key] != nil:
		if err != nil || st.Kind != KindFile || st.Size != r.m.files[key].size {
			r.fail("Stat(%q) = %+v, %v; want a file of %d bytes", key, st, err, r.m.files[key].size)
		}
	case r.m.dirs[key]:
		if err != nil || st.Kind != KindDir {
			r.fail("Stat(%q) = %+v, %v; want a directory", key, st, err)
		}
	default:
		r.wantErr("Stat", err, ErrNotFound)
	}
}

func (r *modelRun) pickDir() string {
	dirs := make([]string, 0, len(r.m.dirs))
	for d := range r.m.dirs {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	return dirs[r.rng.IntN(len(dirs))]
}

func (r *modelRun) opDelete() {
	key := r.existingKey()
	r.note("Delete(%q)", key)
	want := r.m.readErr(key)
	r.wantErr("Delete", r.v.Delete(key), want)
	if want == nil {
		delete(r.m.files, key)
	}
}

func (r *modelRun) opRename() {
	src := r.existingKey()
	if r.rng.IntN(3) == 0 && len(r.m.dirs) > 0 {
		src = r.pickDir()
	}
	dst := r.randKey()
	switch r.rng.IntN(8) {
	case 0:
		dst = src
	case 1:
		dst = src + "/" + modelNames[r.rng.IntN(len(modelNames))]
	case 2:
		if len(r.m.dirs) > 0 {
			dst = r.pickDir()
		}
	}
	r.note("Rename(%q, %q)", src, dst)
	want := r.m.renameErr(src, dst)
	r.wantErr("Rename", r.v.Rename(src, dst), want)
	if want == nil {
		r.m.rename(src, dst)
	}
}

func (r *modelRun) opOpenFile() {
	if len(r.hs) >= 3 {
		r.closeHandle(r.rng.IntN(len(r.hs)))
	}
	key := r.existingKey()
	flag := os.O_RDWR
	if r.rng.IntN(3) == 0 {
		flag |= os.O_CREATE
	}
	if r.rng.IntN(8) == 0 {
		flag |= os.O_TRUNC
	}
	r.note("OpenFile(%q, %#x)", key, flag)
	var want error
	f := r.m.files[key]
	switch {
	case f != nil:
	case r.m.dirs[key]:
		want = ErrIsDir
	case flag&os.O_CREATE == 0:
		want = ErrNotFound
	default:
		want = r.m.parentsErr(key)
	}
	file, err := r.v.OpenFile(key, flag, 0o644)
	r.wantErr("OpenFile", err, want)
	if want != nil {
		return
	}
	if f == nil {
		f = newMfile(nil)
		r.m.put(key, f)
	}
	if flag&os.O_TRUNC != 0 {
		f.truncate(0)
	}
	st, err := file.Stat()
	if err != nil {
		r.fail("File.Stat: %v", err)
	}
	if st.Size != f.size || file.Size() != f.size {
		r.fail("opened %q: Stat size %d, Size %d; want %d", key, st.Size, file.Size(), f.size)
	}
	r.hs = append(r.hs, &handle{f: file, m: f, key: key, cs: int64(st.ChunkSize)})
}

// someHandle returns an open file, opening one if there is none.
func (r *modelRun) someHandle() *handle {
	if len(r.hs) == 0 {
		for tries := 0; tries < 5 && len(r.hs) == 0; tries++ {
			r.opOpenFile()
		}
		if len(r.hs) == 0 {
			return nil
		}
	}
	return r.hs[r.rng.IntN(len(r.hs))]
}

// randOffset picks an offset in or just past h's file, often near a
// chunk boundary, now and then past 2^32.
func (r *modelRun) randOffset(h *handle) int64 {
	size := h.m.size
	switch r.rng.IntN(10) {
	case 0:
		return 1<<32 + r.rng.Int64N(3*h.cs)
	case 1, 2, 3, 4:
		k := r.rng.Int64N(size/h.cs + 3)
		return max(0, k*h.cs+r.rng.Int64N(41)-20)
	}
	return r.rng.Int64N(size + h.cs + 1)
}

func (r *modelRun) opWriteAt() {
	h := r.someHandle()
	if h == nil {
		return
	}
	off := r.randOffset(h)
	if off >= 1<<32 && r.rng.IntN(3) != 0 {
		off = r.rng.Int64N(h.m.size + 1) // keep most files small
	}
	p := r.randValue(1 + r.rng.IntN(3*int(h.cs)))
	if r.rng.IntN(8) == 0 {
		clear(p) // zeros over data
	}
	r.note("WriteAt(%q, %d bytes at %d)", h.key, len(p), off)
	n, err := h.f.WriteAt(p, off)
	if err != nil || n != len(p) {
		r.fail("WriteAt(%q, %d, %d) = %d, %v", h.key, len(p), off, n, err)
	}
	h.m.writeAt(p, off)
	if h.f.Size() != h.m.size {
		r.fail("after WriteAt, Size = %d, want %d", h.f.Size(), h.m.size)
	}
}

func (r *modelRun) opReadAtHandle() {
	h := r.someHandle()
	if h == nil {
		return
	}
	off := r.randOffset(h)
	if h.m.size > 1<<32 && r.rng.IntN(2) == 0 {
		off = h.m.size - r.rng.Int64N(3*h.cs)
	}
	n := 1 + r.rng.IntN(3*int(h.cs))
	r.note("ReadAt(%q, %d at %d)", h.key, n, off)
	r.compareRead(h.f, h.m, h.key, max(0, off), n)
}

func (r *modelRun) opTruncate() {
	h := r.someHandle()
	if h == nil {
		return
	}
	var size int64
	switch r.rng.IntN(10) {
	case 0:
		size = 1<<32 + r.rng.Int64N(h.cs)
	case 1, 2, 3, 4:
		size = h.m.size + r.rng.Int64N(3*h.cs) // extend
	default:
		size = r.rng.Int64N(h.m.size + 1) // cut
	}
	r.note("Truncate(%q, %d) from %d", h.key, size, h.m.size)
	if err := h.f.Truncate(size); err != nil {
		r.fail("Truncate(%q, %d): %v", h.key, size, err)
	}
	h.m.truncate(size)
	if h.f.Size() != size {
		r.fail("after Truncate, Size = %d", h.f.Size())
	}
}

func (r *modelRun) closeHandle(i int) {
	h := r.hs[i]
	r.hs = slices.Delete(r.hs, i, i+1)
	r.note("Close(%q)", h.key)
	if err := h.f.Close(); err != nil {
		r.fail("File.Close(%q): %v", h.key, err)
	}
}

func (r *modelRun) opCloseFile() {
	if len(r.hs) > 0 {
		r.closeHandle(r.rng.IntN(len(r.hs)))
	}
}

// opReadKey opens a key for reading and compares a few ranges.
func (r *modelRun) opReadKey() {
	key := r.existingKey()
	r.note("Open(%q) and read", key)
	want := r.m.readErr(key)
	file, err := r.v.Open(key)
	r.wantErr("Open", err, want)
	if want != nil {
		return
	}
	defer file.Close()
	f := r.m.files[key]
	h := &handle{f: file, m: f, key: key, cs: int64(r.cs)}
	for range 3 {
		r.compareRead(file, f, key, r.randOffset(h), 1+r.rng.IntN(2*r.cs))
	}
}

func (r *modelRun) opKeys() {
	prefix := ""
	if r.rng.IntN(4) != 0 {
		k := r.randKey()
		prefix = k[:r.rng.IntN(len(k)+1)]
	}
	r.note("Keys(%q)", prefix)
	r.checkKeys(prefix)
}

func (r *modelRun) opLen() {
	r.note("Len")
	r.checkLen()
}

// TestModelSelfCheck makes sure the model itself can tell values apart,
// so that a passing model test means something.
func TestModelSelfCheck(t *testing.T) {
	f := newMfile([]byte("hello world"))
	f.truncate(5)
	f.truncate(20)
	if got := f.bytes(); !bytes.Equal(got, append([]byte("hello"), make([]byte, 15)...)) {
		t.Fatalf("truncate: %q", got)
	}
	f.writeAt([]byte("x"), 1<<32)
	if f.size != 1<<32+1 || len(f.pages) != 2 {
		t.Fatalf("sparse write: size %d, %d pages", f.size, len(f.pages))
	}
	p := make([]byte, 4)
	if n := f.readAt(p, 1<<32-2); n != 3 || !bytes.Equal(p[:3], []byte{0, 0, 'x'}) {
		t.Fatalf("readAt = %d %q", n, p)
	}
	m := model{files: map[string]*mfile{}, dirs: map[string]bool{}}
	m.put("a/b/c", newMfile(nil))
	if m.putErr("a/b/c/d") != ErrNotDir || m.putErr("a/b") != ErrIsDir || m.putErr("x//y") != nil {
		t.Fatal("putErr")
	}
	if m.renameErr("a", "a/x") != ErrInvalidArgument || m.renameErr("a/b", "a") != ErrNotEmpty || m.renameErr("q", "r") != ErrNotFound {
		t.Fatal("renameErr")
	}
	m.rename("a", "z/y")
	if m.files["z/y/b/c"] == nil || !m.dirs["z"] || !m.dirs["z/y/b"] || m.dirs["a"] {
		t.Fatalf("rename: %v %v", m.files, m.dirs)
	}
}
