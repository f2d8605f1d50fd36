package vault

import (
	"errors"
	"math/rand"
	"os"
	"testing"
)

// seekFixture stores a file of n chunks of 4 KiB where the chunks for
// which data(idx) is true hold bytes and the others are holes.
func seekFixture(t *testing.T, n int64, data func(idx int64) bool) (*Vault, *sqlCounter, *File) {
	t.Helper()
	dir := t.TempDir()
	c := counting(t, dir)
	v, err := Open(dir+"/seek.db", smallChunks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	const cs = 4096
	buf := make([]byte, n*cs)
	for idx := int64(0); idx < n; idx++ {
		if data(idx) {
			for i := idx * cs; i < (idx+1)*cs; i++ {
				buf[i] = byte(idx) | 1
			}
		}
	}
	mustPut(t, v, "f", buf)
	f, err := v.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return v, c, f
}

// TestSeekDataCostIsBounded: SEEK_DATA and SEEK_HOLE on a file of many
// chunks read a bounded number of rows, not every chunk index past the
// offset (the old code listed them all: 5,100 rows for a seek from 0).
func TestSeekDataCostIsBounded(t *testing.T) {
	const cs, n = 4096, 5200
	_, c, f := seekFixture(t, n, func(idx int64) bool { return idx < 100 || idx >= 200 })
	cases := []struct {
		name string
		off  int64
		hole bool
		want int64
	}{
		{"hole from 0", 0, true, 100 * cs},
		{"data in the hole", 101 * cs, false, 200 * cs},
		{"data at data", 300*cs + 7, false, 300*cs + 7},
		{"hole in the dense tail", 200 * cs, true, n * cs},
		{"hole in the hole", 150*cs + 1, true, 150*cs + 1},
	}
	for _, tc := range cases {
		c.reset()
		got, err := f.SeekData(tc.off, tc.hole)
		if err != nil || got != tc.want {
			t.Fatalf("%s: SeekData(%d, %v) = %d, %v; want %d", tc.name, tc.off, tc.hole, got, err, tc.want)
		}
		if rows, stmts := c.rows.Load(), c.stmts.Load(); rows > 16 || stmts > 16 {
			t.Errorf("%s: %d statements returned %d rows; want a bounded few, not one per chunk", tc.name, stmts, rows)
		}
	}
	if _, err := f.SeekData(n*cs, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("SEEK_DATA at the end: %v, want ErrNotFound", err)
	}

	// Dirty chunks count as data.
	if _, err := f.WriteAt([]byte{1}, 150*cs+9); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1}, 100*cs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		off  int64
		hole bool
		want int64
	}{
		{0, true, 101 * cs},
		{101 * cs, false, 150 * cs},
		{150 * cs, true, 151 * cs},
		{151 * cs, true, 151 * cs},
		{151 * cs, false, 200 * cs},
	} {
		if got, err := f.SeekData(tc.off, tc.hole); err != nil || got != tc.want {
			t.Errorf("with dirty chunks: SeekData(%d, %v) = %d, %v; want %d", tc.off, tc.hole, got, err, tc.want)
		}
	}
}

// TestSeekDataMatchesModel compares SEEK_DATA and SEEK_HOLE at every
// chunk boundary and in between with a brute-force answer, on random
// patterns of stored, dirty and missing chunks.
func TestSeekDataMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	for round := 0; round < 6; round++ {
		t.Run("", func(t *testing.T) { seekModelRound(t, rng, round) })
	}
}

func seekModelRound(t *testing.T, rng *rand.Rand, round int) {
	const cs = 4096
	n := int64(1 + rng.Intn(40))
	stored := make([]bool, n)
	for i := range stored {
		stored[i] = rng.Intn(3) > 0
	}
	_, _, f := seekFixture(t, n, func(idx int64) bool { return stored[idx] })
	has := append([]bool(nil), stored...)
	for k := rng.Intn(4); k > 0; k-- {
		idx := rng.Int63n(n)
		if _, err := f.WriteAt([]byte{7}, idx*cs+rng.Int63n(cs)); err != nil {
			t.Fatal(err)
		}
		has[idx] = true
	}
	size := n * cs
	for off := int64(0); off <= size; off += cs / 2 {
		// The model: SEEK_DATA finds the first chunk at or after off's
		// chunk with data; SEEK_HOLE the first without, or the end.
		wantData, wantHole := int64(-1), size
		for idx := off / cs; idx < n; idx++ {
			if has[idx] && wantData < 0 {
				wantData = max(off, idx*cs)
			}
			if !has[idx] && wantHole == size {
				wantHole = max(off, idx*cs)
			}
		}
		got, err := f.SeekData(off, false)
		if wantData < 0 {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("round %d: SEEK_DATA(%d) = %d, %v; want ErrNotFound (pattern %v)", round, off, got, err, has)
			}
		} else if err != nil || got != wantData {
			t.Fatalf("round %d: SEEK_DATA(%d) = %d, %v; want %d (pattern %v)", round, off, got, err, wantData, has)
		}
		got, err = f.SeekData(off, true)
		if off == size {
			wantHole = size
		}
		if err != nil || got != wantHole {
			t.Fatalf("round %d: SEEK_HOLE(%d) = %d, %v; want %d (pattern %v)", round, off, got, err, wantHole, has)
		}
	}
}

// TestSeekHoleGivesUpAtTheEnd: past seekMaxWindows windows of data,
// SEEK_HOLE answers the end of the file (allowed: a hole may be reported
// as data), so its cost is bounded even on a dense file of any size.
func TestSeekHoleGivesUpAtTheEnd(t *testing.T) {
	const cs, n = 4096, 40
	oldWindow, oldMax := seekWindow, seekMaxWindows
	seekWindow, seekMaxWindows = 8, 2
	t.Cleanup(func() { seekWindow, seekMaxWindows = oldWindow, oldMax })
	_, c, f := seekFixture(t, n, func(idx int64) bool { return idx != 30 })
	c.reset()
	if got, err := f.SeekData(0, true); err != nil || got != n*cs {
		t.Errorf("SEEK_HOLE(0) past the window limit = %d, %v; want the end %d", got, err, n*cs)
	}
	if s := c.stmts.Load(); s > 2 {
		t.Errorf("SEEK_HOLE ran %d statements, want at most seekMaxWindows = 2", s)
	}
	if got, err := f.SeekData(20*cs, true); err != nil || got != 30*cs {
		t.Errorf("SEEK_HOLE(20 chunks) = %d, %v; want the hole at %d", got, err, 30*cs)
	}
}
