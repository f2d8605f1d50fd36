package vault

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"testing"
)

// The maximum file size: every size and offset past it is refused with
// an error and changes nothing; reads past it are the end of the file.
// Before the limit, truncate(2) to MaxInt64 overflowed the chunk count
// and deleted every chunk of the file.

// limitFile returns a vault with "f" holding 3 chunks and a half of known
// bytes, open for reading and writing.
func limitFile(t *testing.T) (*Vault, *File, []byte) {
	t.Helper()
	v := openTest(t, smallChunks())
	want := genBytes(7, 3*4096+2048)
	mustPut(t, v, "f", want)
	f, err := v.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return v, f, want
}

// checkIntact fails unless key holds want, through a fresh read.
func checkIntact(t *testing.T, v *Vault, f *File, want []byte, what string) {
	t.Helper()
	if sz := f.Size(); sz != int64(len(want)) {
		t.Fatalf("%s: size %d, want %d", what, sz, len(want))
	}
	p := make([]byte, len(want)+10)
	n, err := f.ReadAt(p, 0)
	if n != len(want) || err != io.EOF || !bytes.Equal(p[:n], want) {
		t.Fatalf("%s: ReadAt = %d, %v, or wrong bytes", what, n, err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, v, "f"); !bytes.Equal(got, want) {
		t.Fatalf("%s: Get returns %d bytes, not the %d written", what, len(got), len(want))
	}
}

// tooLarge checks that err refuses a size past the limit.
func tooLarge(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("%s: %v; want ErrTooLarge (an ErrInvalidArgument)", what, err)
	}
}

func TestTruncatePastLimit(t *testing.T) {
	v, f, want := limitFile(t)
	for _, size := range []int64{math.MaxInt64, math.MaxInt64 - 4095, MaxFileSize + 1, 1 << 62} {
		tooLarge(t, f.Truncate(size), "Truncate")
		checkIntact(t, v, f, want, "after Truncate")
		_, err := v.SetAttr(f.Ino(), SetAttr{Size: &size})
		tooLarge(t, err, "SetAttr size")
		checkIntact(t, v, f, want, "after SetAttr")
	}
	// SetAttr of a closed inode takes another path.
	ino := f.Ino()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	size := int64(math.MaxInt64)
	_, err := v.SetAttr(ino, SetAttr{Size: &size})
	tooLarge(t, err, "SetAttr size of a closed file")
	if got := mustGet(t, v, "f"); !bytes.Equal(got, want) {
		t.Fatalf("after SetAttr of the closed file: %d bytes", len(got))
	}
}

func TestTruncateToLimit(t *testing.T) {
	v, f, want := limitFile(t)
	// Exactly the limit is allowed: a sparse file, the data in front kept.
	if err := f.Truncate(MaxFileSize); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, len(want))
	if n, err := f.ReadAt(p, 0); n != len(p) || err != nil || !bytes.Equal(p, want) {
		t.Fatalf("ReadAt after growing to the limit = %d, %v", n, err)
	}
	if n, err := f.ReadAt(p[:10], MaxFileSize-10); n != 10 || err != nil || !allZero(p[:10]) {
		t.Fatalf("ReadAt at the limit - 10 = %d, %v, %x", n, err, p[:10])
	}
	st, err := v.Stat("f")
	if err != nil || st.Size != MaxFileSize {
		t.Fatalf("Stat = %d, %v", st.Size, err)
	}
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	checkIntact(t, v, f, want, "after growing and shrinking")
}

func TestWritePastLimit(t *testing.T) {
	v, f, want := limitFile(t)
	for _, off := range []int64{MaxFileSize, MaxFileSize - 5, math.MaxInt64 - 5, math.MaxInt64} {
		n, err := f.WriteAt([]byte("0123456789"), off)
		tooLarge(t, err, "WriteAt")
		if n != 0 {
			t.Fatalf("WriteAt(%d) wrote %d bytes with an error", off, n)
		}
		checkIntact(t, v, f, want, "after WriteAt")
	}
	// Writing up to the limit exactly works.
	if _, err := f.WriteAt([]byte("end"), MaxFileSize-3); err != nil {
		t.Fatal(err)
	}
	if f.Size() != MaxFileSize {
		t.Fatalf("size %d after writing up to the limit", f.Size())
	}
}

func TestAppendPastLimit(t *testing.T) {
	v, f, want := limitFile(t)
	if err := f.Truncate(MaxFileSize - 10); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tail"), MaxFileSize-14); err != nil {
		t.Fatal(err)
	}
	n, off, err := f.Append(make([]byte, 100))
	tooLarge(t, err, "Append")
	if n != 0 || f.Size() != MaxFileSize-10 {
		t.Fatalf("Append = %d at %d; size now %d, want %d", n, off, f.Size(), MaxFileSize-10)
	}
	p := make([]byte, 20)
	if n, err := f.ReadAt(p, MaxFileSize-20); n != 10 || err != io.EOF || string(p[6:10]) != "tail" {
		t.Fatalf("ReadAt of the end = %d, %v, %q", n, err, p[:n])
	}
	// Appending what fits works.
	if _, off, err := f.Append([]byte("0123456789")); err != nil || off != MaxFileSize-10 {
		t.Fatalf("Append up to the limit = %d, %v", off, err)
	}
	// An O_APPEND File refuses the same way through Write.
	af, err := v.OpenFile("f", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer af.Close()
	if n, err := af.Write([]byte("x")); n != 0 {
		t.Fatalf("Write past the limit = %d", n)
	} else {
		tooLarge(t, err, "O_APPEND Write")
	}
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	checkIntact(t, v, f, want, "after the appends")
}

func TestReadAtPastLimit(t *testing.T) {
	_, f, _ := limitFile(t)
	p := make([]byte, 100)
	for _, off := range []int64{math.MaxInt64 - 10, math.MaxInt64, MaxFileSize, MaxFileSize + 1} {
		if n, err := f.ReadAt(p, off); n != 0 || err != io.EOF {
			t.Fatalf("ReadAt(%d) = %d, %v; want 0, EOF", off, n, err)
		}
	}
}

func TestSeekPastLimit(t *testing.T) {
	_, f, _ := limitFile(t)
	if _, err := f.Seek(MaxFileSize+1, io.SeekStart); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Seek past the limit: %v", err)
	}
	if _, err := f.Seek(MaxFileSize, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(math.MaxInt64, io.SeekCurrent); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Seek that overflows: %v", err)
	}
	if off, err := f.Seek(0, io.SeekCurrent); err != nil || off != MaxFileSize {
		t.Fatalf("a refused Seek moved the offset to %d, %v", off, err)
	}
	if n, err := f.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read at the limit = %d, %v", n, err)
	}
}

func TestPutReaderPastLimit(t *testing.T) {
	v := openTest(t, smallChunks())
	mustPut(t, v, "k", []byte("old"))
	err := v.PutReader("k", bytes.NewReader(nil), MaxFileSize+1)
	tooLarge(t, err, "PutReader")
	if got := mustGet(t, v, "k"); string(got) != "old" {
		t.Fatalf("after a refused PutReader: %q", got)
	}
}

func TestCheckRange(t *testing.T) {
	for _, c := range []struct {
		off, n int64
		ok     bool
	}{
		{0, 0, true}, {0, MaxFileSize, true}, {MaxFileSize, 0, true}, {MaxFileSize - 1, 1, true},
		{MaxFileSize, 1, false}, {-1, 0, false}, {0, -1, false}, {math.MaxInt64, math.MaxInt64, false},
		{1, math.MaxInt64, false}, {math.MaxInt64, 1, false},
	} {
		err := CheckRange(c.off, c.n)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("CheckRange(%d, %d) = %v", c.off, c.n, err)
		}
	}
}
