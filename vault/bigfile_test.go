package vault

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Files of any size: values far past SQLite's 1 GB blob limit stream in
// and out in constant memory with a bounded WAL, offsets past 2^32 work,
// and a streamed put that fails or crashes midway leaves the old value
// whole and no partial data behind.

func TestHugeValueStreamsInConstantMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("streams 4.5 GiB, too slow under the race detector; the CI stage without -race runs it")
	}
	if testing.Short() {
		t.Skip("streams 4.5 GiB (a minute or more); runs without -short")
	}
	const (
		size     = 4<<30 + 512<<20 // 4.5 GiB: past 2^32 and SQLite's 1 GB blob cap
		key      = "videos/huge.mp4"
		maxRSS   = 100 << 20
		maxWAL   = 256 << 20
		interval = 100 * time.Millisecond
	)
	path := filepath.Join(t.TempDir(), "huge.db")
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	before := rssAnon()
	s := startSampler(path+"-wal", interval)

	start := time.Now()
	in := sha256.New()
	if err := v.PutReader(key, io.TeeReader(&genReader{seed: 45, size: size}, in), size); err != nil {
		s.peaks()
		t.Fatalf("PutReader: %v", err)
	}
	putTime := time.Since(start)
	st, err := v.Stat(key)
	if err != nil || st.Size != size {
		s.peaks()
		t.Fatalf("Stat = size %d, %v; want %d", st.Size, err, size)
	}

	start = time.Now()
	out := sha256.New()
	n, err := v.GetTo(key, out)
	getTime := time.Since(start)
	rss, wal, samples := s.peaks()
	if err != nil || n != size {
		t.Fatalf("GetTo = %d bytes, %v; want %d", n, err, size)
	}
	if !bytes.Equal(in.Sum(nil), out.Sum(nil)) {
		t.Fatal("the value read back differs from the value streamed in")
	}
	start = time.Now()
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closeTime := time.Since(start)
	rate := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	t.Logf("4.5 GiB: put %v (%.0f MiB/s), get %v (%.0f MiB/s), close %v", putTime.Round(time.Millisecond), rate(putTime),
		getTime.Round(time.Millisecond), rate(getTime), closeTime.Round(time.Millisecond))
	t.Logf("RssAnon before %s, peak %s; peak -wal %s; %d samples", mib(before), mib(rss), mib(wal), samples)
	if min := int((putTime + getTime) / interval / 2); samples < min {
		t.Errorf("only %d samples taken, want at least %d", samples, min)
	}
	if rss <= 0 || rss >= maxRSS {
		t.Errorf("peak RssAnon %s, want under %s", mib(rss), mib(maxRSS))
	}
	if wal >= maxWAL {
		t.Errorf("peak -wal size %s, want under %s", mib(wal), mib(maxWAL))
	}
	if n := fileSize(path + "-wal"); n != 0 {
		t.Errorf("-wal is %d bytes after Close; Close must checkpoint with TRUNCATE", n)
	}
}

func TestOffsetsPast4GiBReadHolesAsZeros(t *testing.T) {
	for _, cs := range []int{4 << 10, DefaultChunkSize} {
		t.Run(fmt.Sprintf("chunk%dK", cs>>10), func(t *testing.T) {
			opts := DefaultOptions()
			opts.ChunkSize = cs
			path := filepath.Join(t.TempDir(), "sparse.db")
			v, err := Open(path, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { v.Close() }()
			const (
				far  = 1<<32 + 12345 // past 2^32, not chunk aligned
				far2 = 1<<33 - 3     // a write that crosses 2^33
			)
			head := []byte("head")
			mid := genBytes(1, 3*cs+17) // crosses chunk boundaries
			tail := genBytes(2, 10)
			f, err := v.OpenFile("sparse/big.bin", os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range []struct {
				off int64
				b   []byte
			}{{0, head}, {far, mid}, {far2, tail}} {
				if n, err := f.WriteAt(w.b, w.off); err != nil || n != len(w.b) {
					t.Fatalf("WriteAt(%d) = %d, %v", w.off, n, err)
				}
			}
			size := int64(far2 + len(tail))
			if f.Size() != size {
				t.Fatalf("Size = %d, want %d", f.Size(), size)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			// Reopen so that everything is read back from the file.
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			if v, err = Open(path, nil); err != nil {
				t.Fatal(err)
			}
			if st, err := v.Stat("sparse/big.bin"); err != nil || st.Size != size || st.ChunkSize != cs {
				t.Fatalf("Stat = %+v, %v; want size %d, chunk %d", st, err, size, cs)
			}
			// expect returns the bytes [off, off+n) should hold.
			expect := func(off int64, n int, sz int64) []byte {
				b := make([]byte, max(0, min(int64(n), sz-off)))
				for _, w := range []struct {
					off int64
					b   []byte
				}{{0, head}, {far, mid}, {far2, tail}} {
					for i := range w.b {
						if p := w.off + int64(i); p >= off && p < off+int64(len(b)) {
							b[p-off] = w.b[i]
						}
					}
				}
				return b
			}
			readCheck := func(f *File, sz int64) {
				t.Helper()
				for _, r := range []struct {
					off int64
					n   int
				}{
					{0, 100}, {4, cs}, {1 << 31, 1 << 16}, {1<<32 - 100, 200}, {far - 1000, 2000},
					{far, len(mid)}, {far + int64(cs) - 5, 10}, {far + int64(len(mid)) - 3, 3*cs + 8},
					{far2 - int64(cs), 2 * cs}, {size - 4, 100}, {size, 10}, {size + 1<<20, 10},
				} {
					want := expect(r.off, r.n, sz)
					got := make([]byte, r.n)
					n, err := f.ReadAt(got, r.off)
					if n != len(want) || !bytes.Equal(got[:n], want) {
						t.Fatalf("ReadAt(%d, %d) = %d bytes (%v), differing from the %d expected", r.off, r.n, n, err, len(want))
					}
					if n < r.n && err != io.EOF {
						t.Fatalf("ReadAt(%d, %d) short without io.EOF: %v", r.off, r.n, err)
					}
					if n == r.n && err != nil {
						t.Fatalf("ReadAt(%d, %d): %v", r.off, r.n, err)
					}
				}
			}
			f, err = v.OpenFile("sparse/big.bin", os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			readCheck(f, size)

			// Holes are not stored: only the chunks that hold data have rows.
			db := rawDB(t, path, true)
			ino := f.Ino()
			wantRows := int64(1) + (far+int64(len(mid))-1)/int64(cs) - far/int64(cs) + 1 + (far2+int64(len(tail))-1)/int64(cs) - far2/int64(cs) + 1
			if got := rawCount(t, db, `SELECT count(*) FROM {t}_chunks WHERE inode = ?`, ino); got != wantRows {
				t.Errorf("%d chunk rows stored, want %d (holes must not be stored)", got, wantRows)
			}

			// Truncate into the middle of mid, then extend: the cut bytes
			// read as zeros, not as the old data.
			cut := int64(far + cs + 100)
			if err := f.Truncate(cut); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4*cs)
			if _, err := f.ReadAt(got, far); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:cs+100], mid[:cs+100]) || !bytes.Equal(got[cs+100:], make([]byte, 3*cs-100)) {
				t.Fatal("after truncating down and extending, the bytes past the cut are not zeros")
			}
			tailGot := make([]byte, len(tail))
			if _, err := f.ReadAt(tailGot, far2); err != nil || !bytes.Equal(tailGot, make([]byte, len(tail))) {
				t.Fatalf("the tail past the cut reads %v, %v; want zeros", tailGot, err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			db.Close()
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			checkConsistent(t, path)
			if v, err = Open(path, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSparseValueStreamsPast4GiB streams a sparse value of 4 GiB and a
// bit with GetTo: the offsets past 2^32 and the holes come out right.
func TestSparseValueStreamsPast4GiB(t *testing.T) {
	if raceEnabled {
		t.Skip("streams 4 GiB, too slow under the race detector; the CI stage without -race runs it")
	}
	if testing.Short() {
		t.Skip("streams 4 GiB of holes (a few seconds); runs without -short")
	}
	v := openTest(t, nil)
	f, err := v.OpenFile("sparse", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := genBytes(3, 1000)
	const off = 1<<32 - 500 // straddles 2^32
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	w := &sparseChecker{data: data, at: off, bad: -1}
	n, err := v.GetTo("sparse", w)
	if err != nil || n != off+int64(len(data)) || w.off != n {
		t.Fatalf("GetTo = %d, %v (wrote %d); want %d", n, err, w.off, off+len(data))
	}
	if w.bad >= 0 {
		t.Fatalf("GetTo: wrong byte at offset %d", w.bad)
	}
}

// sparseChecker checks a stream of zeros with data at offset at.
type sparseChecker struct {
	data    []byte
	at, off int64
	bad     int64
}

func (s *sparseChecker) Write(p []byte) (int, error) {
	for i := 0; i < len(p); {
		o := s.off + int64(i)
		if o < s.at || o >= s.at+int64(len(s.data)) {
			end := len(p)
			if o < s.at {
				end = int(min(int64(len(p)), s.at-s.off))
			}
			if s.bad < 0 && !allZero(p[i:end]) {
				s.bad = o
			}
			i = end
			continue
		}
		if s.bad < 0 && p[i] != s.data[o-s.at] {
			s.bad = o
		}
		i++
	}
	s.off += int64(len(p))
	return len(p), nil
}

// failingReader yields stream seed and fails with err after n bytes.
// hook, if set, runs once just before the failure.
type failingReader struct {
	g    genReader
	n    int64
	err  error
	hook func()
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.g.off >= f.n {
		if f.hook != nil {
			f.hook()
			f.hook = nil
		}
		return 0, f.err
	}
	return f.g.Read(p[:min(int64(len(p)), f.n-f.g.off)])
}

var errReaderBroke = errors.New("reader broke")

func TestStreamedPutFailureKeepsOldValue(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64 // announced size, -1 for unknown
		fail int64 // bytes before the reader fails
	}{
		{"unknown size, several batches", -1, 20 << 20},
		{"known size, several batches", 30 << 20, 20 << 20},
		{"known size, first batch", 30 << 20, 3 << 20},
		{"reader ends early", 30 << 20, 20 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "v.db")
			v, err := Open(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { v.Close() }()
			old := genBytes(10, 3<<20+777)
			mustPut(t, v, "clips/a.mp4", old)
			db := rawDB(t, path, true)
			rowsBefore := rawCount(t, db, `SELECT count(*) FROM {t}_chunks`)
			var rowsDuring int64
			fr := &failingReader{g: genReader{seed: 11, size: 1 << 40}, n: tc.fail, err: errReaderBroke}
			wantErr := errReaderBroke
			if tc.name == "reader ends early" {
				fr.err, wantErr = io.EOF, io.ErrUnexpectedEOF
			}
			for _, key := range []string{"clips/a.mp4", "new/dir/b.mp4"} {
				// Count the chunk rows just before the reader fails: the
				// batches streamed so far are committed.
				fr.g.off, fr.hook = 0, func() { rowsDuring = rawCount(t, db, `SELECT count(*) FROM {t}_chunks`) }
				err := v.PutReader(key, fr, tc.size)
				if !errors.Is(err, wantErr) {
					t.Fatalf("PutReader(%s) = %v, want %v", key, err, wantErr)
				}
				var ve *Error
				if !errors.As(err, &ve) || ve.Op != "put" || ve.Key != key {
					t.Fatalf("error %v does not name the operation and key", err)
				}
				if tc.fail > streamBatchBytes && rowsDuring < rowsBefore+int64(streamBatchBytes/DefaultChunkSize) {
					t.Fatalf("only %d chunk rows (from %d) while streaming %d bytes: the test should see partial batches committed",
						rowsDuring, rowsBefore, tc.fail)
				}
			}
			if got := mustGet(t, v, "clips/a.mp4"); !bytes.Equal(got, old) {
				t.Fatal("the old value changed")
			}
			if _, err := v.Stat("new/dir/b.mp4"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the failed put of a new key left it behind: %v", err)
			}
			if _, err := v.Stat("new"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the failed put of a new key created its directory: %v", err)
			}
			if got := rawCount(t, db, `SELECT count(*) FROM {t}_chunks`); got != rowsBefore {
				t.Errorf("%d chunk rows after the failed puts, want %d", got, rowsBefore)
			}
			db.Close()
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
			checkConsistent(t, path)
			if v, err = Open(path, nil); err != nil {
				t.Fatal(err)
			}
			if got := mustGet(t, v, "clips/a.mp4"); !bytes.Equal(got, old) {
				t.Fatal("the old value changed after reopening")
			}
			if keys := allKeys(t, v, ""); len(keys) != 1 {
				t.Fatalf("keys after the failed puts: %q", keys)
			}
		})
	}
}

func init() {
	// crashput streams a value into args[1] of args[0] and, once 20 MiB
	// (more than two batches) have been read, prints "ready" and blocks
	// until it is killed.
	registerHelper("crashput", func(args []string) error {
		v, err := Open(args[0], nil)
		if err != nil {
			return err
		}
		fr := &failingReader{g: genReader{seed: 12, size: 1 << 40}, n: 20 << 20}
		fr.hook = func() {
			fmt.Println("ready")
			os.Stdout.Sync()
			select {} // wait for SIGKILL
		}
		err = v.PutReader(args[1], fr, -1)
		return fmt.Errorf("PutReader returned %v; it should have been killed", err)
	})
}

func TestStreamedPutCrashLeavesOldValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.db")
	v, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := genBytes(13, 1<<20+5)
	mustPut(t, v, "clips/a.mp4", old)
	mustPut(t, v, "other", []byte("other value"))
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := helperCmd(t, "", "crashput", path, "clips/a.mp4")
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child said %q; stderr:\n%s", line, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child never got 20 MiB into its put; stderr:\n%s", stderr.String())
	}
	// The child has committed its first batches under an unlinked inode.
	db := rawDB(t, path, true)
	partial := rawCount(t, db, `SELECT count(*) FROM {t}_chunks WHERE inode IN (SELECT id FROM {t}_inodes WHERE nlink = 0)`)
	if partial < 2*streamBatchBytes/DefaultChunkSize {
		t.Errorf("only %d chunk rows of the streamed put before the kill; expected two batches", partial)
	}
	db.Close()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the child exited cleanly; it should have been killed")
	}

	v, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, v, "clips/a.mp4"); !bytes.Equal(got, old) {
		t.Fatal("the old value is not whole after the crash")
	}
	if got := mustGet(t, v, "other"); string(got) != "other value" {
		t.Fatalf("other = %q", got)
	}
	// Open collected the dead session's partial data.
	db = rawDB(t, path, true)
	if n := rawCount(t, db, `SELECT count(*) FROM {t}_inodes WHERE nlink = 0`); n != 0 {
		t.Errorf("%d unlinked inodes remain after the next open", n)
	}
	if n := rawCount(t, db, `SELECT count(*) FROM {t}_chunks WHERE inode NOT IN (SELECT child FROM {t}_dentries)`); n != 0 {
		t.Errorf("%d orphan chunk rows remain after the next open", n)
	}
	db.Close()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, path)
}

// atoi64 parses a decimal argument of a helper.
func atoi64(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		panic(err)
	}
	return n
}

// TestRemovedDataIsFreedAtOnce: a value that is deleted, replaced or
// renamed over gives its chunks back in the same call, also when this
// process opened and closed it before (its record of the open file must
// not keep the data alive); a value open while removed is freed at its
// last close.
func TestRemovedDataIsFreedAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.db")
	v, err := Open(path, smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	db := rawDB(t, path, true)
	leftovers := func(when string) {
		t.Helper()
		if n := rawCount(t, db, `SELECT count(*) FROM {t}_inodes WHERE nlink = 0`); n != 0 {
			t.Errorf("%s: %d unlinked inodes left", when, n)
		}
		if n := rawCount(t, db, `SELECT count(*) FROM {t}_chunks WHERE inode NOT IN (SELECT child FROM {t}_dentries)`); n != 0 {
			t.Errorf("%s: %d chunk rows of unlinked inodes left", when, n)
		}
	}
	readOnce := func(key string) {
		t.Helper()
		f, err := v.Open(key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadAt(make([]byte, 10), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	val := genBytes(1, 3*4096+1)
	for _, op := range []struct {
		name string
		do   func(key string) error
	}{
		{"delete", func(key string) error { return v.Delete(key) }},
		{"replace", func(key string) error { return v.Put(key, []byte("new")) }},
		{"rename over", func(key string) error { mustPut(t, v, "src", []byte("src")); return v.Rename("src", key) }},
	} {
		key := "k/" + op.name
		mustPut(t, v, key, val)
		readOnce(key)
		if err := op.do(key); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		leftovers(op.name + " after open and close")
	}
	// Removed while open: kept for the open file, freed at its close.
	mustPut(t, v, "open", val)
	f, err := v.Open("open")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Delete("open"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(val))
	if n, err := f.ReadAt(got, 0); err != nil || n != len(val) || !bytes.Equal(got, val) {
		t.Fatalf("reading a deleted open file = %d, %v", n, err)
	}
	if n := rawCount(t, db, `SELECT count(*) FROM {t}_chunks c JOIN {t}_inodes i ON i.id = c.inode WHERE i.nlink = 0`); n != 4 {
		t.Errorf("%d chunk rows kept for the open, deleted file; want 4", n)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	leftovers("last close of a deleted file")
}

// TestStreamedPutWithOddChunkSize streams values of several batches with
// chunk sizes that do not divide the 8 MiB batch: every batch must end on
// a chunk boundary, or the next one overwrites the last chunk's tail.
func TestStreamedPutWithOddChunkSize(t *testing.T) {
	sizes := []int{12 << 10, 20 << 10, 3 << 20}
	if raceEnabled || testing.Short() {
		sizes = sizes[:1] // one is enough to catch a misaligned batch
	}
	for _, cs := range sizes {
		t.Run(fmt.Sprintf("chunk%dK", cs>>10), func(t *testing.T) {
			o := DefaultOptions()
			o.ChunkSize = cs
			v := openTest(t, o)
			for _, size := range []int64{streamBatchBytes + 1, 2*streamBatchBytes + int64(cs) + 7} {
				for _, known := range []int64{size, -1} {
					if err := v.PutReader("v", &genReader{seed: 9, size: size}, known); err != nil {
						t.Fatal(err)
					}
					c := newGenChecker(9)
					if n, err := v.GetTo("v", c); err != nil || n != size || c.bad >= 0 {
						t.Fatalf("size %d: GetTo = %d, %v; first wrong byte at %d", size, n, err, c.bad)
					}
				}
			}
			// Put takes the same path for a value over one batch.
			val := genBytes(10, 2*streamBatchBytes+cs+7)
			mustPut(t, v, "w", val)
			if got := mustGet(t, v, "w"); !bytes.Equal(got, val) {
				t.Fatal("Put/Get differ")
			}
		})
	}
}
