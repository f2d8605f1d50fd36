package vault

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"sync/atomic"
	"testing"
)

// One byte budget: cached values and the dirty chunks of open files
// share capBytes.

// watchBudget records, inside every flush of v, whether the bytes held
// in memory exceeded capBytes: a flush is where the budget is under the
// most pressure, with the new data already accepted.
func watchBudget(t *testing.T, v *Vault) *atomic.Int64 {
	var worst atomic.Int64
	setFlushHook(t, func(w *Vault) error {
		if w == v {
			vb, db, _ := cacheState(v)
			if used := vb + db; used > worst.Load() {
				worst.Store(used)
			}
		}
		return nil
	})
	return &worst
}

// checkBudget fails if the cache holds more than capBytes.
func checkBudget(t *testing.T, v *Vault, capBytes int64, when string) {
	t.Helper()
	vb, db, _ := cacheState(v)
	if vb+db > capBytes {
		t.Fatalf("%s: %d value bytes + %d dirty bytes = %d, over the budget of %d", when, vb, db, vb+db, capBytes)
	}
	if vb < 0 || db < 0 {
		t.Fatalf("%s: negative counts %d, %d", when, vb, db)
	}
}

// A file eight times the budget, written in odd-sized pieces with some
// rewrites of earlier parts, keeps memory within the budget after every
// write, reads back through the dirty chunks while open, and is
// byte-exact once closed. Small cached values stay cached meanwhile:
// the budget writes out whole file chunks first.
func TestCacheBudgetBigFile(t *testing.T) {
	const capBytes, threshold = 128 << 10, 64 << 10
	const size = 8 * capBytes
	v := openTest(t, smallChunks()) // 4 KiB chunks
	enableCache(t, v, capBytes, threshold)
	worst := watchBudget(t, v)
	other := openSecond(t, v)

	for i := range 10 {
		mustPut(t, v, fmt.Sprintf("small/%d", i), bytes.Repeat([]byte{byte(i)}, 1000))
	}
	valueBytes, _, _ := cacheState(v)

	f, err := v.OpenFile("big.bin", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := v.Open("big.bin") // a second handle of the same file
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()

	rng := rand.New(rand.NewSource(1))
	model := make([]byte, 0, size)
	piece := make([]byte, 12<<10)
	readCheck := func(h *File, when string) {
		t.Helper()
		if len(model) == 0 {
			return
		}
		off := rng.Int63n(int64(len(model)))
		n := 1 + rng.Intn(20<<10)
		buf := make([]byte, n)
		got, err := h.ReadAt(buf, off)
		want := model[off:min(off+int64(n), int64(len(model)))]
		if got != len(want) || !bytes.Equal(buf[:got], want) || (got < n && err != io.EOF) {
			t.Fatalf("%s: ReadAt(%d bytes at %d) = %d, %v; want %d bytes of the model", when, n, off, got, err, len(want))
		}
	}
	for writes := 0; len(model) < size; writes++ {
		n := 1 + rng.Intn(len(piece))
		rng.Read(piece[:n])
		var off int64
		if writes%7 == 3 && len(model) > 0 { // rewrite an earlier part
			off = rng.Int63n(int64(len(model)))
		} else {
			off = int64(len(model))
		}
		if _, err := f.WriteAt(piece[:n], off); err != nil {
			t.Fatalf("write %d: %v", writes, err)
		}
		if end := off + int64(n); end > int64(len(model)) {
			model = append(model, make([]byte, end-int64(len(model)))...)
		}
		copy(model[off:], piece[:n])
		checkBudget(t, v, capBytes, fmt.Sprintf("after write %d (%d bytes at %d)", writes, n, off))
		if f.Size() != int64(len(model)) {
			t.Fatalf("Size = %d, want %d", f.Size(), len(model))
		}
		if writes%5 == 0 {
			readCheck(f, fmt.Sprintf("write %d, same handle", writes))
			readCheck(g, fmt.Sprintf("write %d, other handle", writes))
		}
	}
	if w := worst.Load(); w > capBytes {
		t.Fatalf("a flush ran with %d bytes in memory, over the budget of %d", w, capBytes)
	}
	// The values were never needed to make room.
	if vb, _, _ := cacheState(v); vb != valueBytes {
		t.Fatalf("cached values went from %d to %d bytes: whole dirty chunks should be written out first", valueBytes, vb)
	}
	wantMissing(t, other, "small/0")

	// Get and GetTo of the open key see the dirty data too.
	if got := mustGet(t, v, "big.bin"); !bytes.Equal(got, model) {
		t.Fatalf("Get while open: %d bytes, differs from the model", len(got))
	}
	// Another vault sees only committed data, never more than written.
	if in, err := other.Stat("big.bin"); err != nil || in.Size > int64(len(model)) {
		t.Fatalf("other Stat = %+v, %v", in, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, other, "big.bin"); !bytes.Equal(got, model) {
		t.Fatalf("after close the other vault reads %d bytes, differing from the model", len(got))
	}
	g.Close()
	mustFlush(t, v)
	if got := mustGet(t, other, "small/9"); !bytes.Equal(got, bytes.Repeat([]byte{9}, 1000)) {
		t.Fatal("small/9 differs")
	}
	checkBudget(t, v, 0, "after close and flush")
}

// Cached values make room for dirty chunks: a write that needs the
// budget they hold gets it by flushing them.
func TestCacheBudgetValuesMakeRoomForChunks(t *testing.T) {
	const capBytes, threshold = 64 << 10, 48 << 10
	v := openTest(t, smallChunks())
	enableCache(t, v, capBytes, threshold)
	worst := watchBudget(t, v)
	other := openSecond(t, v)
	for i := range 10 {
		mustPut(t, v, fmt.Sprintf("v%d", i), make([]byte, 3000))
	}
	wantMissing(t, other, "v0")
	f, err := v.OpenFile("f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte("chunk"), 40<<10/5) // 40 KiB: 30 + 40 > 64
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	checkBudget(t, v, capBytes, "after the write")
	if ok, _ := other.Exists("v0"); !ok {
		t.Fatal("the cached values were not flushed to make room")
	}
	buf := make([]byte, len(data))
	if n, err := f.ReadAt(buf, 0); n != len(data) || !bytes.Equal(buf, data) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if w := worst.Load(); w > capBytes {
		t.Fatalf("a flush ran with %d bytes in memory, over the budget of %d", w, capBytes)
	}
}

// Dirty chunks make room for values: a put that would pass the budget
// while an open file holds most of it writes chunks out first instead of
// holding more than capBytes.
func TestCacheBudgetChunksMakeRoomForValues(t *testing.T) {
	const capBytes, threshold = 64 << 10, 64 << 10
	v := openTest(t, smallChunks())
	enableCache(t, v, capBytes, threshold)
	worst := watchBudget(t, v)
	other := openSecond(t, v)
	f, err := v.OpenFile("f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte("12345678"), 60<<10/8) // 60 KiB of whole chunks
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, db, _ := cacheState(v); db != 60<<10 {
		t.Fatalf("dirty bytes %d, want %d", db, 60<<10)
	}
	for i := range 8 { // 60 + 6 > 64 at once
		mustPut(t, v, fmt.Sprintf("v%d", i), make([]byte, 6<<10))
		checkBudget(t, v, capBytes, fmt.Sprintf("after put %d", i))
	}
	if w := worst.Load(); w > capBytes {
		t.Fatalf("a flush ran with %d bytes in memory, over the budget of %d", w, capBytes)
	}
	buf := make([]byte, len(data))
	if n, err := f.ReadAt(buf, 0); n != len(data) || !bytes.Equal(buf, data) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	for i := range 8 {
		if got := mustGet(t, v, fmt.Sprintf("v%d", i)); len(got) != 6<<10 {
			t.Fatalf("v%d: %d bytes", i, len(got))
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mustFlush(t, v)
	if got := mustGet(t, other, "f"); !bytes.Equal(got, data) {
		t.Fatalf("f in the file: %d bytes", len(got))
	}
	wantLen(t, other, 9)
}
