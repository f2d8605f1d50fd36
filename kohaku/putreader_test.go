package kohaku

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/kohakuvault/kvaultfs/store"
)

func TestPutReader(t *testing.T) {
	watchdog(t, 2*time.Minute)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			before := fileState(t, tb.Path())
			for _, n := range []int{0, 5, 10, pieceSize, pieceSize + 1, 3*pieceSize + 17} {
				val := pattern(n, byte(n))
				for _, size := range []int64{int64(n), -1} {
					// HalfReader makes short reads, which
					// must not be taken for the end.
					for _, r := range []io.Reader{bytes.NewReader(val), iotest.HalfReader(bytes.NewReader(val))} {
						if err := tb.PutReader("k", r, size); err != nil {
							t.Fatalf("PutReader %d bytes, size %d: %v", n, size, err)
						}
						got, ok := kohakuGet(t, tb.Path(), f, "k")
						if !ok {
							t.Fatal("key missing")
						}
						mustEqual(t, "PutReader", got, val)
					}
				}
			}
			if after := fileState(t, tb.Path()); after != before {
				t.Fatal("file changed")
			}
		})
	}
}

// TestPutReaderFailureKeepsOld: a reader that fails midway, ends early or
// yields too much rolls back: the old value stays whole (and format A's
// size with it).
func TestPutReaderFailureKeepsOld(t *testing.T) {
	watchdog(t, 2*time.Minute)
	boom := errors.New("boom")
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			tb := openTable(t, f)
			old := pattern(1500, 7)
			if err := tb.Put("k", old); err != nil {
				t.Fatal(err)
			}
			const n = 3*pieceSize + 5
			val := pattern(n, 8)
			cases := map[string]struct {
				r    io.Reader
				size int64
				want error
			}{
				"error midway":         {&failing{bytes.NewReader(val[:2*pieceSize+3]), boom}, n, boom},
				"error in first piece": {&failing{bytes.NewReader(val[:100]), boom}, 100 + pieceSize, boom},
				"short":                {bytes.NewReader(val[:n-1]), n, store.ErrInvalidArgument},
				"short small":          {bytes.NewReader(val[:50]), 60, store.ErrInvalidArgument},
				"long":                 {bytes.NewReader(val), n - 1, store.ErrInvalidArgument},
				"long small":           {bytes.NewReader(val[:61]), 60, store.ErrInvalidArgument},
				"spool error":          {&failing{bytes.NewReader(val), boom}, -1, boom},
			}
			for name, c := range cases {
				err := tb.PutReader("k", c.r, c.size)
				if !errors.Is(err, c.want) {
					t.Fatalf("%s: %v, want %v", name, err, c.want)
				}
				got, _ := kohakuGet(t, tb.Path(), f, "k") // checks A's size too
				mustEqual(t, name+": old value", got, old)
			}
			// A failure on a new key leaves no key.
			if err := tb.PutReader("new", &failing{bytes.NewReader(val[:2*pieceSize]), boom}, n); !errors.Is(err, boom) {
				t.Fatal(err)
			}
			if _, ok := kohakuGet(t, tb.Path(), f, "new"); ok {
				t.Fatal("failed put left a key")
			}
		})
	}
}

// TestTooLarge: a value over 10^9 bytes is ErrTooLarge pointing to
// migrate and changes nothing; the reader (zeros, never allocated) is not
// read for a known size.
func TestTooLarge(t *testing.T) {
	watchdog(t, 2*time.Minute)
	tb := openTable(t, FormatBC)
	if err := tb.Put("k", []byte("old")); err != nil {
		t.Fatal(err)
	}
	before := fileState(t, tb.Path())
	z := &zeros{MaxValueSize + 1}
	err := tb.PutReader("k", z, MaxValueSize+1)
	if !errors.Is(err, store.ErrTooLarge) || !strings.Contains(err.Error(), "kvaultfs migrate") {
		t.Fatalf("PutReader 10^9+1: %v", err)
	}
	if z.n != MaxValueSize+1 {
		t.Fatalf("the reader was read (%d bytes) for a value known to be too large", MaxValueSize+1-z.n)
	}
	if v, _ := kohakuGet(t, tb.Path(), FormatBC, "k"); string(v) != "old" {
		t.Fatalf("value changed: %q", v)
	}
	if fileState(t, tb.Path()) != before {
		t.Fatal("file changed")
	}
	if testing.Short() {
		return
	}
	// Unknown size: spooled until the limit is crossed (10^9 bytes of disk).
	err = tb.PutReader("k", &zeros{MaxValueSize + 1}, -1)
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("PutReader unknown size 10^9+1: %v", err)
	}
	if v, _ := kohakuGet(t, tb.Path(), FormatBC, "k"); string(v) != "old" {
		t.Fatalf("value changed: %q", v)
	}
}
