package vault

import (
	"bytes"
	"os"
	"testing"
)

// TestZeroRangeDeletesWholeChunks: punching a hole over many chunks
// deletes their rows in one statement and zeroes only the partly covered
// chunks at its edges; it used to write zeros 1 MiB at a time, a
// statement per chunk at the commit.
func TestZeroRangeDeletesWholeChunks(t *testing.T) {
	const cs, n = 4096, 2000
	v, c, f := seekFixture(t, n, func(int64) bool { return true })
	want := mustGet(t, v, "f")
	// A dirty chunk inside the range must not come back at the commit.
	if _, err := f.WriteAt([]byte("dirty"), 500*cs+3); err != nil {
		t.Fatal(err)
	}
	lo, hi := int64(cs/2), int64(1900*cs+100)
	c.reset()
	if err := f.ZeroRange(lo, hi); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := c.stmts.Load(); s > 10 { // a constant: the size, two edges, the DELETE, the inode
		t.Errorf("punching %d chunks ran %d statements; want a few (one DELETE for the whole chunks)", n, s)
	}
	var rows int
	if err := v.r.QueryRow(v.sql(`SELECT count(*) FROM {t}_chunks WHERE inode = ? AND idx BETWEEN 1 AND 1899`), f.Ino()).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Errorf("%d chunk rows left inside the punched range", rows)
	}
	clear(want[lo:hi])
	if f.Size() != n*cs {
		t.Errorf("size %d after the punch, want %d", f.Size(), n*cs)
	}
	got := make([]byte, n*cs)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("file contents after the punch differ from the model (open file)")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustGet(t, v, "f"), want) {
		t.Error("stored contents after the punch differ from the model")
	}
}

// TestZeroRangeEdges punches ranges inside one chunk, on chunk
// boundaries and past the end of file, against a model.
func TestZeroRangeEdges(t *testing.T) {
	const cs = 4096
	v := openTest(t, smallChunks())
	base := bytes.Repeat([]byte("0123456789abcdef"), 10*cs/16)
	for _, r := range [][2]int64{{10, 20}, {cs, 2 * cs}, {cs - 1, cs + 1}, {0, 10 * cs}, {3 * cs, 100 * cs}, {5, 5}} {
		mustPut(t, v, "e", base)
		f, err := v.OpenFile("e", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.ZeroRange(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		want := append([]byte(nil), base...)
		clear(want[r[0]:min(r[1], int64(len(want)))])
		if got := mustGet(t, v, "e"); !bytes.Equal(got, want) {
			t.Errorf("ZeroRange%v: contents differ from the model (len %d, want %d)", r, len(got), len(want))
		}
	}
	f, err := v.OpenFile("e", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.ZeroRange(10, 5); err == nil {
		t.Error("ZeroRange(10, 5) succeeded; want ErrInvalidArgument")
	}
}
